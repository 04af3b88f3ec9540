-- As migrations/sqlite/0011: the scale set listener's bookkeeping (issue 16).
ALTER TABLE scale_sets ADD COLUMN session_id TEXT;
ALTER TABLE scale_set_jobs ADD COLUMN served_at BIGINT;
