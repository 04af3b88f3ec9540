-- As migrations/sqlite/0014: when a scale set job's runner took it.
ALTER TABLE scale_set_jobs ADD COLUMN started_at BIGINT;

CREATE INDEX scale_set_jobs_started ON scale_set_jobs (started_at) WHERE started_at IS NOT NULL;
