-- no-transaction
-- The same repository, organization or enterprise may be registered once
-- per endpoint (github.com and a GHES, as garm allows), so entities carry
-- their credentials' endpoint and are unique on (kind, owner, name,
-- endpoint_name).
--
-- SQLite cannot change a table's UNIQUE constraint, so the table is
-- rebuilt (https://sqlite.org/lang_altertable.html#otheralter). pools and
-- jobs reference entities: with foreign keys on, DROP TABLE entities would
-- delete their rows (ON DELETE CASCADE) or be refused (RESTRICT), and
-- PRAGMA foreign_keys is a no-op inside a transaction. Hence this
-- migration runs outside sqlx's transaction (the first line above), turns
-- foreign keys off, does its work in its own transaction, and turns them
-- back on. Ids, sealed secrets (sealed with the id as purpose) and the
-- rows that reference entities are untouched.

PRAGMA foreign_keys = OFF;

BEGIN IMMEDIATE;

CREATE TABLE entities_new (
    id               TEXT    PRIMARY KEY,
    kind             TEXT    NOT NULL CHECK (kind IN ('repository', 'organization', 'enterprise')),
    owner            TEXT    NOT NULL DEFAULT '' COLLATE NOCASE,
    name             TEXT    NOT NULL COLLATE NOCASE,
    endpoint_name    TEXT    NOT NULL REFERENCES endpoints (name) ON DELETE RESTRICT,
    credentials_name TEXT    NOT NULL REFERENCES credentials (name) ON DELETE RESTRICT,
    webhook_secret   BLOB    NOT NULL,  -- sealed
    created_at       INTEGER NOT NULL,
    updated_at       INTEGER NOT NULL,
    UNIQUE (kind, owner, name, endpoint_name)
);

-- A LEFT JOIN, so a row without credentials (foreign keys forbid it) fails
-- the NOT NULL above instead of disappearing.
INSERT INTO entities_new (id, kind, owner, name, endpoint_name, credentials_name,
    webhook_secret, created_at, updated_at)
SELECT e.id, e.kind, e.owner, e.name, c.endpoint_name, e.credentials_name,
    e.webhook_secret, e.created_at, e.updated_at
  FROM entities e
  LEFT JOIN credentials c ON c.name = e.credentials_name;

DROP TABLE entities;
ALTER TABLE entities_new RENAME TO entities;

CREATE INDEX entities_credentials ON entities (credentials_name);

COMMIT;

PRAGMA foreign_keys = ON;
