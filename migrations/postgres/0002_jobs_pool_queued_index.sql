-- As migrations/sqlite/0002: one pool's queued demand is an index range.
CREATE INDEX jobs_pool_queued ON jobs (pool_id, status, queued_at);
