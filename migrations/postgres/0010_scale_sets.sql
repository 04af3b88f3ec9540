-- As migrations/sqlite/0010: runner scale sets (issue 16). A scale set
-- drives exactly one pools row (pools.scale_set = TRUE); scale_set_jobs
-- holds one row per runner request (status_rank: available 0 < acquired 1
-- < assigned 2 < started 3 < completed 4).

ALTER TABLE pools ADD COLUMN scale_set BOOLEAN NOT NULL DEFAULT FALSE;

CREATE TABLE scale_sets (
    id               TEXT    PRIMARY KEY,
    entity_id        TEXT    NOT NULL REFERENCES entities (id) ON DELETE RESTRICT,
    pool_id          TEXT    NOT NULL UNIQUE REFERENCES pools (id) ON DELETE RESTRICT,
    name             TEXT    NOT NULL,
    runner_group     TEXT,
    github_id        BIGINT,
    runner_group_id  BIGINT,
    state            TEXT    NOT NULL DEFAULT 'active',
    last_error       TEXT,
    last_message_id  BIGINT  NOT NULL DEFAULT 0,
    statistics       TEXT,
    desired_runners  BIGINT  NOT NULL DEFAULT 0,
    created_at       BIGINT  NOT NULL,
    updated_at       BIGINT  NOT NULL,
    UNIQUE (entity_id, name)
);

CREATE TABLE scale_set_jobs (
    scale_set_id      TEXT    NOT NULL REFERENCES scale_sets (id) ON DELETE CASCADE,
    runner_request_id BIGINT  NOT NULL,
    job_id            TEXT    NOT NULL,
    repository        TEXT    NOT NULL,
    name              TEXT,
    workflow_run_id   BIGINT,
    labels            TEXT    NOT NULL,  -- JSON array
    status            TEXT    NOT NULL,
    status_rank       BIGINT  NOT NULL,
    result            TEXT,
    runner_name       TEXT,
    runner_id         BIGINT,
    queued_at         BIGINT,            -- the service's queueTime
    seen_at           BIGINT  NOT NULL,  -- when Hangar first applied a message about it
    created_at        BIGINT  NOT NULL,
    updated_at        BIGINT  NOT NULL,
    PRIMARY KEY (scale_set_id, runner_request_id)
);
CREATE INDEX scale_set_jobs_open ON scale_set_jobs (scale_set_id, status_rank);
CREATE INDEX scale_set_jobs_runner ON scale_set_jobs (runner_name);
