-- Circuit breakers and crash-safe creates (issue 13).
--
-- - pool_breakers: one row per pool whose creates failed since the last
--   success. consecutive_failures counts failed create steps (a failed JIT
--   registration included); next_attempt_at (Unix ms) is set while the
--   breaker is open: no create of the pool starts before it, and the one
--   probe that starts after it pushes it forward (a lease) so the next
--   waits for the probe's outcome. A successful create or a pool update
--   deletes the row. last_error is the latest failure's message.
-- - instances.create_pid / create_pid_start: the process group of an
--   external provider's create call under way (pid = pgid) and its start
--   time (clock ticks since boot, /proc/<pid>/stat field 22), so after a
--   crash hangard can tell whether that very process still runs and stop it
--   before it decides anything about the instance.

CREATE TABLE pool_breakers (
    pool_id              TEXT    PRIMARY KEY REFERENCES pools (id) ON DELETE CASCADE,
    consecutive_failures INTEGER NOT NULL DEFAULT 0,
    last_error           TEXT,
    last_failure_at      INTEGER,
    next_attempt_at      INTEGER,
    updated_at           INTEGER NOT NULL
);

ALTER TABLE instances ADD COLUMN create_pid INTEGER;
ALTER TABLE instances ADD COLUMN create_pid_start INTEGER;
