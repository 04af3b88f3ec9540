-- Reconcile asks for one pool's queued demand on every wake: make that an
-- index range (pool, status, queued_at) instead of a scan of every job ever
-- recorded, so its cost follows the pool's queue, not the history.
CREATE INDEX jobs_pool_queued ON jobs (pool_id, status, queued_at);
