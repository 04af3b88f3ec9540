-- Lost-delivery recovery and re-checks spaced by age.
--
-- delivery_cursors: per source of webhook deliveries (an entity's hook
-- pointing at this Hangar, or a GitHub App's hook), the hook's id once
-- found by its URL, and the newest delivery id already looked at. GitHub
-- lists deliveries newest first, so a pass reads only what is newer.
-- source is 'entity:<entity id>' or 'app:<credentials name>'.
CREATE TABLE delivery_cursors (
    source     TEXT    PRIMARY KEY,
    hook_id    INTEGER,
    last_seen  INTEGER NOT NULL DEFAULT 0,
    updated_at INTEGER NOT NULL
) WITHOUT ROWID;

-- When a queued job is next re-checked against GitHub (unix ms); NULL
-- until its first re-check, which is due job_recheck_after_secs after it
-- was queued. The spacing then grows with the job's age up to a cap.
ALTER TABLE jobs ADD COLUMN recheck_at INTEGER;
