-- As migrations/sqlite/0013. Several hangard replicas on one database (issue #17): each running
-- replica has a row it keeps fresh, and each pool has at most one holder at
-- a time. `token` grows by one every time the holder changes (the fencing
-- token: a write made on a pool's behalf carries the token it acted under
-- and is refused once the pool has moved on). Times are milliseconds since
-- the epoch; on PostgreSQL they come from the database's clock.
CREATE TABLE replicas (
    id            TEXT    PRIMARY KEY,
    started_at    BIGINT  NOT NULL,
    heartbeat_at  BIGINT  NOT NULL,
    expires_at    BIGINT  NOT NULL
);

CREATE TABLE pool_leases (
    pool_id     TEXT    PRIMARY KEY REFERENCES pools (id) ON DELETE CASCADE,
    holder      TEXT,
    token       BIGINT  NOT NULL,
    expires_at  BIGINT  NOT NULL
);

CREATE INDEX pool_leases_holder ON pool_leases (holder);
