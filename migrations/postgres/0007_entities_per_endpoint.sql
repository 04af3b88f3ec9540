-- As migrations/sqlite/0007: an entity may be registered once per endpoint,
-- so entities carry their credentials' endpoint and are unique on (kind,
-- owner, name, endpoint_name). SQLite rebuilt the table; PostgreSQL alters
-- it in place, in sqlx's transaction.

ALTER TABLE entities ADD COLUMN endpoint_name TEXT REFERENCES endpoints (name) ON DELETE RESTRICT;

UPDATE entities e SET endpoint_name = c.endpoint_name
  FROM credentials c WHERE c.name = e.credentials_name;

-- A row without credentials (foreign keys forbid it) fails here instead of
-- keeping a NULL endpoint.
ALTER TABLE entities ALTER COLUMN endpoint_name SET NOT NULL;

ALTER TABLE entities DROP CONSTRAINT entities_kind_owner_name_key;
ALTER TABLE entities ADD CONSTRAINT entities_kind_owner_name_endpoint_name_key
    UNIQUE (kind, owner, name, endpoint_name);

CREATE INDEX entities_credentials ON entities (credentials_name);
