-- As migrations/sqlite/0012: when a job's runner took it.
ALTER TABLE jobs ADD COLUMN started_at BIGINT;

CREATE INDEX jobs_started ON jobs (started_at) WHERE started_at IS NOT NULL;
