-- As migrations/sqlite/0008: circuit breakers and crash-safe creates
-- (issue 13).
CREATE TABLE pool_breakers (
    pool_id              TEXT    PRIMARY KEY REFERENCES pools (id) ON DELETE CASCADE,
    consecutive_failures BIGINT  NOT NULL DEFAULT 0,
    last_error           TEXT,
    last_failure_at      BIGINT,
    next_attempt_at      BIGINT,
    updated_at           BIGINT  NOT NULL
);

ALTER TABLE instances ADD COLUMN create_pid BIGINT;
ALTER TABLE instances ADD COLUMN create_pid_start BIGINT;
