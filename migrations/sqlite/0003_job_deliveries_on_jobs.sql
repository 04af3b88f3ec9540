-- Webhook intake writes one row per delivery, and as few B-trees as
-- possible: every B-tree a commit touches is another WAL frame (two write
-- calls) per commit.
--
-- - Deliveries are deduplicated on the job row itself instead of a table
--   with one row per (job, attempt, action). actions_seen holds a bit per
--   action received (waiting 1, queued 2, in_progress 4, completed 8);
--   last_action is the action of the last new delivery and
--   last_action_moved whether it moved the status forward (1) or arrived
--   after a later one (0, "stale").
-- - jobs is keyed by (id, run_attempt) WITHOUT ROWID: the table is its key's
--   index, instead of a rowid table plus a unique index.
-- - One partial index over open jobs (waiting, queued) serves the queue
--   queries (per pool, unmatched, stale), instead of two indexes over every
--   job ever recorded; queries name `status_rank <= 1` to use it.
-- - Runner names are indexed only where set (queued jobs have none).

CREATE TABLE jobs_new (
    id                INTEGER NOT NULL,
    run_attempt       INTEGER NOT NULL,
    entity_id         TEXT    NOT NULL REFERENCES entities (id) ON DELETE CASCADE,
    status            TEXT    NOT NULL,
    status_rank       INTEGER NOT NULL,  -- waiting 0 < queued 1 < in_progress 2 < completed 3
    conclusion        TEXT,
    labels            TEXT    NOT NULL,  -- JSON array
    repository        TEXT    NOT NULL,
    workflow_run_id   INTEGER,
    name              TEXT,
    runner_name       TEXT,
    pool_id           TEXT    REFERENCES pools (id) ON DELETE SET NULL,
    queued_at         INTEGER NOT NULL,
    checked_at        INTEGER,           -- last re-check against GitHub
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    actions_seen      INTEGER NOT NULL DEFAULT 0,
    last_action       TEXT,
    last_action_moved INTEGER,
    PRIMARY KEY (id, run_attempt)
) WITHOUT ROWID;

-- (job, attempt, action) is job_events' key, so a sum of bits is their OR.
INSERT INTO jobs_new (id, run_attempt, entity_id, status, status_rank, conclusion, labels,
    repository, workflow_run_id, name, runner_name, pool_id, queued_at, checked_at,
    created_at, updated_at, actions_seen)
SELECT j.id, j.run_attempt, j.entity_id, j.status, j.status_rank, j.conclusion, j.labels,
    j.repository, j.workflow_run_id, j.name, j.runner_name, j.pool_id, j.queued_at,
    j.checked_at, j.created_at, j.updated_at,
    (SELECT coalesce(sum(CASE e.action
        WHEN 'waiting' THEN 1 WHEN 'queued' THEN 2
        WHEN 'in_progress' THEN 4 WHEN 'completed' THEN 8 ELSE 0 END), 0)
       FROM job_events e
      WHERE e.job_id = j.id AND e.run_attempt = j.run_attempt)
  FROM jobs j;

DROP TABLE job_events;
DROP TABLE jobs;
ALTER TABLE jobs_new RENAME TO jobs;

CREATE INDEX jobs_queue ON jobs (pool_id, status, queued_at) WHERE status_rank <= 1;
CREATE INDEX jobs_runner ON jobs (runner_name) WHERE runner_name IS NOT NULL;
