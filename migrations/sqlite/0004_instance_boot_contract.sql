-- garm's boot contract (issue 14): what a booting instance has fetched and
-- what it reported about itself.
--
-- - jit_files_taken: the JIT config's files handed out one by one through
--   /api/v1/metadata/credentials/{file}; bits .runner 1, .credentials 2,
--   .credentials_rsaparams 4. Once all three are out, jit_config is
--   forgotten and jit_fetched_at set, as when the whole config is taken.
-- - registration_token_at: when a non-JIT instance got its one
--   registration token; a new create attempt clears it.
-- - os_name, os_version: from /api/v1/callbacks/system-info.

ALTER TABLE instances ADD COLUMN jit_files_taken INTEGER NOT NULL DEFAULT 0;
ALTER TABLE instances ADD COLUMN registration_token_at INTEGER;
ALTER TABLE instances ADD COLUMN os_name TEXT;
ALTER TABLE instances ADD COLUMN os_version TEXT;
