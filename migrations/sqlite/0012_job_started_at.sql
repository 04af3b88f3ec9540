-- When a job's runner took it: the moment its `in_progress` delivery moved
-- it on. With `queued_at` it gives the wait (queued → runner) and, with
-- the completed delivery's `updated_at`, the run time; the dashboard's
-- latency chart and job list read it. NULL for jobs first seen in
-- progress (no queue time to measure) and for jobs from before this
-- migration.
ALTER TABLE jobs ADD COLUMN started_at INTEGER;

CREATE INDEX jobs_started ON jobs (started_at) WHERE started_at IS NOT NULL;
