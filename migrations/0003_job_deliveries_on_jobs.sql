-- Deduplicate deliveries on the job row itself instead of a table with one
-- row per (job, attempt, action): recording a delivery is then one upsert of
-- one row (one B-tree fewer written per webhook), and a batch of deliveries
-- is one statement.
--
-- actions_seen: a bit per action received, waiting 1, queued 2,
-- in_progress 4, completed 8. last_action: the action of the last new
-- delivery; last_action_moved: whether it moved the status forward (1) or
-- arrived after a later one (0, "stale").
ALTER TABLE jobs ADD COLUMN actions_seen INTEGER NOT NULL DEFAULT 0;
ALTER TABLE jobs ADD COLUMN last_action TEXT;
ALTER TABLE jobs ADD COLUMN last_action_moved INTEGER;

-- (job, attempt, action) is job_events' key, so a sum of bits is their OR.
UPDATE jobs SET actions_seen = (
    SELECT coalesce(sum(CASE e.action
        WHEN 'waiting' THEN 1 WHEN 'queued' THEN 2
        WHEN 'in_progress' THEN 4 WHEN 'completed' THEN 8 ELSE 0 END), 0)
      FROM job_events e
     WHERE e.job_id = jobs.id AND e.run_attempt = jobs.run_attempt
);
DROP TABLE job_events;

-- Queued jobs have no runner yet: index only the jobs that have one (the
-- lookups by runner name all compare it to a value, so they still use it).
DROP INDEX jobs_runner;
CREATE INDEX jobs_runner ON jobs (runner_name) WHERE runner_name IS NOT NULL;
