-- Hangar's schema on PostgreSQL: the same shape as migrations/sqlite/0001
-- (the schema-shape test in hangar-store holds the two folders to each
-- other). Append-only. Every integer is BIGINT (Rust i64), flags are
-- BOOLEAN, sealed blobs BYTEA; times are Unix milliseconds (UTC).
--
-- SQLite's COLLATE NOCASE (case-insensitive equality and uniqueness) is
-- the ICU collation `nocase` below: nondeterministic, so `=` and UNIQUE
-- ignore case as they do on SQLite.

CREATE COLLATION nocase (provider = icu, locale = 'und-u-ks-level2', deterministic = false);

CREATE TABLE controller (
    id            BIGINT  PRIMARY KEY CHECK (id = 1),
    controller_id TEXT    NOT NULL,
    kdf_salt      BYTEA   NOT NULL,
    key_check     BYTEA   NOT NULL,  -- sealed constant: proves the passphrase
    jwt_secret    BYTEA   NOT NULL,  -- sealed
    metadata_url  TEXT,              -- operator overrides; NULL = from public_url
    callback_url  TEXT,
    webhook_url   TEXT,
    created_at    BIGINT  NOT NULL
);

CREATE TABLE users (
    id               TEXT    PRIMARY KEY,
    username         TEXT    NOT NULL UNIQUE COLLATE nocase,
    email            TEXT,
    full_name        TEXT,
    password_hash    TEXT    NOT NULL,   -- Argon2id PHC string
    is_admin         BOOLEAN NOT NULL,
    token_generation BIGINT  NOT NULL DEFAULT 0,
    created_at       BIGINT  NOT NULL,
    updated_at       BIGINT  NOT NULL
);

CREATE TABLE endpoints (
    name         TEXT    PRIMARY KEY,
    description  TEXT    NOT NULL DEFAULT '',
    base_url     TEXT    NOT NULL,
    api_base_url TEXT    NOT NULL,
    ca_bundle    TEXT,
    created_at   BIGINT  NOT NULL,
    updated_at   BIGINT  NOT NULL
);

CREATE TABLE credentials (
    name               TEXT    PRIMARY KEY,
    description        TEXT    NOT NULL DEFAULT '',
    endpoint_name      TEXT    NOT NULL REFERENCES endpoints (name) ON DELETE RESTRICT,
    auth_type          TEXT    NOT NULL CHECK (auth_type IN ('pat', 'app')),
    app_id             BIGINT,
    installation_id    BIGINT,
    secret             BYTEA   NOT NULL,  -- sealed PAT or App private key
    app_webhook_secret BYTEA,             -- sealed
    created_at         BIGINT  NOT NULL,
    updated_at         BIGINT  NOT NULL
);

CREATE TABLE entities (
    id               TEXT    PRIMARY KEY,
    kind             TEXT    NOT NULL CHECK (kind IN ('repository', 'organization', 'enterprise')),
    owner            TEXT    NOT NULL DEFAULT '' COLLATE nocase,
    name             TEXT    NOT NULL COLLATE nocase,
    credentials_name TEXT    NOT NULL REFERENCES credentials (name) ON DELETE RESTRICT,
    webhook_secret   BYTEA   NOT NULL,  -- sealed
    created_at       BIGINT  NOT NULL,
    updated_at       BIGINT  NOT NULL,
    CONSTRAINT entities_kind_owner_name_key UNIQUE (kind, owner, name)
);

CREATE TABLE pools (
    id                       TEXT    PRIMARY KEY,
    entity_id                TEXT    NOT NULL REFERENCES entities (id) ON DELETE RESTRICT,
    provider_name            TEXT    NOT NULL,
    image                    TEXT    NOT NULL,
    flavor                   TEXT    NOT NULL,
    tags                     TEXT    NOT NULL,  -- JSON array
    os_type                  TEXT    NOT NULL,
    os_arch                  TEXT    NOT NULL,
    min_idle_runners         BIGINT  NOT NULL CHECK (min_idle_runners >= 0),
    max_runners              BIGINT  NOT NULL CHECK (max_runners >= min_idle_runners),
    runner_prefix            TEXT    NOT NULL,
    runner_bootstrap_timeout BIGINT  NOT NULL,
    extra_specs              TEXT    NOT NULL,  -- JSON object
    runner_group             TEXT,
    priority                 BIGINT  NOT NULL DEFAULT 0,
    enabled                  BOOLEAN NOT NULL,
    created_at               BIGINT  NOT NULL,
    updated_at               BIGINT  NOT NULL
);
CREATE INDEX pools_entity ON pools (entity_id);

CREATE TABLE jobs (
    id              BIGINT  NOT NULL,
    run_attempt     BIGINT  NOT NULL,
    entity_id       TEXT    NOT NULL REFERENCES entities (id) ON DELETE CASCADE,
    status          TEXT    NOT NULL,
    status_rank     BIGINT  NOT NULL,  -- waiting 0 < queued 1 < in_progress 2 < completed 3
    conclusion      TEXT,
    labels          TEXT    NOT NULL,  -- JSON array
    repository      TEXT    NOT NULL,
    workflow_run_id BIGINT,
    name            TEXT,
    runner_name     TEXT,
    pool_id         TEXT    REFERENCES pools (id) ON DELETE SET NULL,
    queued_at       BIGINT  NOT NULL,
    checked_at      BIGINT,            -- last re-check against GitHub
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL,
    PRIMARY KEY (id, run_attempt)
);
CREATE INDEX jobs_open ON jobs (status_rank, pool_id);
CREATE INDEX jobs_runner ON jobs (runner_name);

-- One row per (job, attempt, action) ever received: deduplicates deliveries.
CREATE TABLE job_events (
    job_id      BIGINT  NOT NULL,
    run_attempt BIGINT  NOT NULL,
    action      TEXT    NOT NULL,
    received_at BIGINT  NOT NULL,
    PRIMARY KEY (job_id, run_attempt, action)
);

CREATE TABLE instances (
    name            TEXT    PRIMARY KEY,
    pool_id         TEXT    NOT NULL REFERENCES pools (id) ON DELETE CASCADE,
    provider_name   TEXT    NOT NULL,
    provider_id     TEXT,
    status          TEXT    NOT NULL,
    runner_status   TEXT    NOT NULL,
    runner_id       BIGINT,
    job_id          BIGINT,
    token_hash      BYTEA   UNIQUE,    -- SHA-256 of the instance token
    jit_config      BYTEA,             -- sealed; NULL once handed out
    jit_fetched_at  BIGINT,
    addresses       TEXT    NOT NULL DEFAULT '[]',
    status_message  TEXT,
    create_attempts BIGINT  NOT NULL DEFAULT 0,
    next_attempt_at BIGINT,            -- backoff: not before this time
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL,
    deleted_at      BIGINT
);
CREATE INDEX instances_pool_status ON instances (pool_id, status);
CREATE INDEX instances_status ON instances (status);
