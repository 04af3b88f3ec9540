-- As migrations/sqlite/0006: garm habits (issue 14).
CREATE TABLE garm_controller_ids (
    controller_id TEXT    PRIMARY KEY COLLATE nocase,
    created_at    BIGINT  NOT NULL
);

ALTER TABLE instances ADD COLUMN force_delete BOOLEAN NOT NULL DEFAULT FALSE;
ALTER TABLE instances ADD COLUMN delete_attempts BIGINT NOT NULL DEFAULT 0;
