-- As migrations/sqlite/0003: deliveries are deduplicated on the job row
-- (actions_seen: a bit per action received — waiting 1, queued 2,
-- in_progress 4, completed 8; last_action and whether it moved the status
-- on), one partial index over open jobs serves the queue queries, runner
-- names are indexed only where set. SQLite rebuilt the table; here it is
-- altered in place.

ALTER TABLE jobs ADD COLUMN actions_seen BIGINT NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN last_action TEXT;
ALTER TABLE jobs ADD COLUMN last_action_moved BOOLEAN;

-- (job, attempt, action) is job_events' key, so a sum of bits is their OR.
UPDATE jobs j SET actions_seen = (
    SELECT COALESCE(SUM(CASE e.action
        WHEN 'waiting' THEN 1 WHEN 'queued' THEN 2
        WHEN 'in_progress' THEN 4 WHEN 'completed' THEN 8 ELSE 0 END), 0)
      FROM job_events e
     WHERE e.job_id = j.id AND e.run_attempt = j.run_attempt);

DROP TABLE job_events;

-- The rebuilt SQLite table lost every index of the old one.
DROP INDEX jobs_open;
DROP INDEX jobs_pool_queued;
DROP INDEX jobs_runner;

CREATE INDEX jobs_queue ON jobs (pool_id, status, queued_at) WHERE status_rank <= 1;
CREATE INDEX jobs_runner ON jobs (runner_name) WHERE runner_name IS NOT NULL;
