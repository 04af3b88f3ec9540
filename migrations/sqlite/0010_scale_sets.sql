-- Runner scale sets (issue 16).
--
-- A scale set is another way jobs reach the one scheduling engine. Each
-- scale_sets row drives exactly one pools row (pool_id), which holds the
-- provider settings (provider, image, flavor, OS/arch, min idle, max,
-- extra specs, enabled, tags = [the scale set's name]) and which the engine
-- reconciles like any pool. Such a pool has pools.scale_set = 1: it is not
-- listed under /pools and never matched to a webhook's job, since its jobs
-- come only through the scale set's message queue.
--
-- - scale_sets.github_id: the Actions service's scale set id, once created
--   there; runner_group_id the group it was created in.
-- - state: 'active', 'deleted_on_github' (the service answered 404 for it:
--   reported, its listener stopped) or 'error' (last_error says why).
-- - last_message_id: the newest queue message applied (the listener polls
--   with it); statistics: the JSON counters of that message.
-- - desired_runners: min(max_runners, min_idle_runners + assigned jobs), as
--   of the last message applied; the engine's demand for the pool.
-- - scale_set_jobs: one row per runner request the queue told us about,
--   keyed by the service's runner request id; status only moves forward
--   (available 0 < acquired 1 < assigned 2 < started 3 < completed 4).

ALTER TABLE pools ADD COLUMN scale_set INTEGER NOT NULL DEFAULT 0;

CREATE TABLE scale_sets (
    id               TEXT    PRIMARY KEY,
    entity_id        TEXT    NOT NULL REFERENCES entities (id) ON DELETE RESTRICT,
    pool_id          TEXT    NOT NULL UNIQUE REFERENCES pools (id) ON DELETE RESTRICT,
    name             TEXT    NOT NULL,
    runner_group     TEXT,
    github_id        INTEGER,
    runner_group_id  INTEGER,
    state            TEXT    NOT NULL DEFAULT 'active',
    last_error       TEXT,
    last_message_id  INTEGER NOT NULL DEFAULT 0,
    statistics       TEXT,
    desired_runners  INTEGER NOT NULL DEFAULT 0,
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    UNIQUE (entity_id, name)
);

CREATE TABLE scale_set_jobs (
    scale_set_id      TEXT    NOT NULL REFERENCES scale_sets (id) ON DELETE CASCADE,
    runner_request_id INTEGER NOT NULL,
    job_id            TEXT    NOT NULL,
    repository        TEXT    NOT NULL,
    name              TEXT,
    workflow_run_id   INTEGER,
    labels            TEXT    NOT NULL,  -- JSON array
    status            TEXT    NOT NULL,
    status_rank       INTEGER NOT NULL,
    result            TEXT,
    runner_name       TEXT,
    runner_id         INTEGER,
    queued_at         INTEGER,           -- the service's queueTime
    seen_at           INTEGER NOT NULL,  -- when Hangar first applied a message about it
    created_at        INTEGER NOT NULL,
    updated_at        INTEGER NOT NULL,
    PRIMARY KEY (scale_set_id, runner_request_id)
);
CREATE INDEX scale_set_jobs_open ON scale_set_jobs (scale_set_id, status_rank);
CREATE INDEX scale_set_jobs_runner ON scale_set_jobs (runner_name);
