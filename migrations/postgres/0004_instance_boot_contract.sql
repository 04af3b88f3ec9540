-- As migrations/sqlite/0004: garm's boot contract (issue 14).
-- jit_files_taken: bits .runner 1, .credentials 2, .credentials_rsaparams 4.
ALTER TABLE instances ADD COLUMN jit_files_taken BIGINT NOT NULL DEFAULT 0;
ALTER TABLE instances ADD COLUMN registration_token_at BIGINT;
ALTER TABLE instances ADD COLUMN os_name TEXT;
ALTER TABLE instances ADD COLUMN os_version TEXT;
