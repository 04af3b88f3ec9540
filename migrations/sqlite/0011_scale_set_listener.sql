-- The scale set listener's bookkeeping (issue 16).
--
-- - scale_sets.session_id: the message session the listener last opened,
--   so that after a restart it can close that session before opening a new
--   one (the service refuses a second session while one lives: 409).
-- - scale_set_jobs.served_at: when a create of the scale set's pool was
--   started for this runner request (oldest waiting request first); the
--   time from seen_at to served_at is the JobAvailable → provider create
--   latency.

ALTER TABLE scale_sets ADD COLUMN session_id TEXT;
ALTER TABLE scale_set_jobs ADD COLUMN served_at INTEGER;
