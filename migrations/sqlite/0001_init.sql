-- Hangar's schema. Append-only: never edit a migration that has shipped.
-- Times are Unix milliseconds (UTC). Sealed columns hold AES-256-GCM blobs
-- (version byte, 12-byte nonce, ciphertext+tag) made by hangar-store's Sealer.

CREATE TABLE controller (
    id            INTEGER PRIMARY KEY CHECK (id = 1),
    controller_id TEXT    NOT NULL,
    kdf_salt      BLOB    NOT NULL,
    key_check     BLOB    NOT NULL,  -- sealed constant: proves the passphrase
    jwt_secret    BLOB    NOT NULL,  -- sealed
    metadata_url  TEXT,              -- operator overrides; NULL = from public_url
    callback_url  TEXT,
    webhook_url   TEXT,
    created_at    INTEGER NOT NULL
);

CREATE TABLE users (
    id               TEXT    PRIMARY KEY,
    username         TEXT    NOT NULL UNIQUE COLLATE NOCASE,
    email            TEXT,
    full_name        TEXT,
    password_hash    TEXT    NOT NULL,   -- Argon2id PHC string
    is_admin         INTEGER NOT NULL,
    token_generation INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL
);

CREATE TABLE endpoints (
    name         TEXT    PRIMARY KEY,
    description  TEXT    NOT NULL DEFAULT '',
    base_url     TEXT    NOT NULL,
    api_base_url TEXT    NOT NULL,
    ca_bundle    TEXT,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL
);

CREATE TABLE credentials (
    name               TEXT    PRIMARY KEY,
    description        TEXT    NOT NULL DEFAULT '',
    endpoint_name      TEXT    NOT NULL REFERENCES endpoints (name) ON DELETE RESTRICT,
    auth_type          TEXT    NOT NULL CHECK (auth_type IN ('pat', 'app')),
    app_id             INTEGER,
    installation_id    INTEGER,
    secret             BLOB    NOT NULL,  -- sealed PAT or App private key
    app_webhook_secret BLOB,              -- sealed
    created_at         INTEGER NOT NULL,
    updated_at         INTEGER NOT NULL
);

CREATE TABLE entities (
    id               TEXT    PRIMARY KEY,
    kind             TEXT    NOT NULL CHECK (kind IN ('repository', 'organization', 'enterprise')),
    owner            TEXT    NOT NULL DEFAULT '' COLLATE NOCASE,
    name             TEXT    NOT NULL COLLATE NOCASE,
    credentials_name TEXT    NOT NULL REFERENCES credentials (name) ON DELETE RESTRICT,
    webhook_secret   BLOB    NOT NULL,  -- sealed
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    UNIQUE (kind, owner, name)
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
    min_idle_runners         INTEGER NOT NULL CHECK (min_idle_runners >= 0),
    max_runners              INTEGER NOT NULL CHECK (max_runners >= min_idle_runners),
    runner_prefix            TEXT    NOT NULL,
    runner_bootstrap_timeout INTEGER NOT NULL,
    extra_specs              TEXT    NOT NULL,  -- JSON object
    runner_group             TEXT,
    priority                 INTEGER NOT NULL DEFAULT 0,
    enabled                  INTEGER NOT NULL,
    created_at               INTEGER NOT NULL,
    updated_at               INTEGER NOT NULL
);
CREATE INDEX pools_entity ON pools (entity_id);

CREATE TABLE jobs (
    id              INTEGER NOT NULL,
    run_attempt     INTEGER NOT NULL,
    entity_id       TEXT    NOT NULL REFERENCES entities (id) ON DELETE CASCADE,
    status          TEXT    NOT NULL,
    status_rank     INTEGER NOT NULL,  -- waiting 0 < queued 1 < in_progress 2 < completed 3
    conclusion      TEXT,
    labels          TEXT    NOT NULL,  -- JSON array
    repository      TEXT    NOT NULL,
    workflow_run_id INTEGER,
    name            TEXT,
    runner_name     TEXT,
    pool_id         TEXT    REFERENCES pools (id) ON DELETE SET NULL,
    queued_at       INTEGER NOT NULL,
    checked_at      INTEGER,           -- last re-check against GitHub
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    PRIMARY KEY (id, run_attempt)
);
CREATE INDEX jobs_open ON jobs (status_rank, pool_id);
CREATE INDEX jobs_runner ON jobs (runner_name);

-- One row per (job, attempt, action) ever received: deduplicates deliveries.
CREATE TABLE job_events (
    job_id      INTEGER NOT NULL,
    run_attempt INTEGER NOT NULL,
    action      TEXT    NOT NULL,
    received_at INTEGER NOT NULL,
    PRIMARY KEY (job_id, run_attempt, action)
) WITHOUT ROWID;

CREATE TABLE instances (
    name            TEXT    PRIMARY KEY,
    pool_id         TEXT    NOT NULL REFERENCES pools (id) ON DELETE CASCADE,
    provider_name   TEXT    NOT NULL,
    provider_id     TEXT,
    status          TEXT    NOT NULL,
    runner_status   TEXT    NOT NULL,
    runner_id       INTEGER,
    job_id          INTEGER,
    token_hash      BLOB    UNIQUE,    -- SHA-256 of the instance token
    jit_config      BLOB,              -- sealed; NULL once handed out
    jit_fetched_at  INTEGER,
    addresses       TEXT    NOT NULL DEFAULT '[]',
    status_message  TEXT,
    create_attempts INTEGER NOT NULL DEFAULT 0,
    next_attempt_at INTEGER,           -- backoff: not before this time
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    deleted_at      INTEGER
);
CREATE INDEX instances_pool_status ON instances (pool_id, status);
CREATE INDEX instances_status ON instances (status);
