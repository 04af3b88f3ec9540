-- As migrations/sqlite/0009: lost-delivery recovery and re-checks spaced
-- by age. source is 'entity:<entity id>' or 'app:<credentials name>'.
CREATE TABLE delivery_cursors (
    source     TEXT    PRIMARY KEY,
    hook_id    BIGINT,
    last_seen  BIGINT  NOT NULL DEFAULT 0,
    updated_at BIGINT  NOT NULL
);

ALTER TABLE jobs ADD COLUMN recheck_at BIGINT;
