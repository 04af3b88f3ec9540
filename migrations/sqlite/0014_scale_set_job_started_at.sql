-- When a scale set job's runner took it: the moment Hangar applied the
-- queue message saying it started (the first one; a redelivery keeps it).
-- With `queued_at` (else `seen_at`) it gives the job's wait, queued →
-- runner, which the dashboard's overview charts per scale set as it does
-- per pool from jobs.started_at. NULL for jobs not started yet, for jobs
-- whose start Hangar never heard of, and for jobs from before this
-- migration.
ALTER TABLE scale_set_jobs ADD COLUMN started_at INTEGER;

CREATE INDEX scale_set_jobs_started ON scale_set_jobs (started_at) WHERE started_at IS NOT NULL;
