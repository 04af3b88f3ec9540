-- garm habits (issue 14).
--
-- - garm_controller_ids: controller ids of garm deployments moved over by
--   `hangard import-garm`. Hooks garm made point at /webhooks/<garm id>;
--   deliveries there are routed like /webhooks. Matched case-insensitively.
-- - instances.force_delete: `hangar runner rm --force-remove-runner`: the
--   delete step gives up on the provider after a few failed deletes and
--   marks the instance deleted anyway.
-- - instances.delete_attempts: failed provider deletes so far.

CREATE TABLE garm_controller_ids (
    controller_id TEXT    PRIMARY KEY COLLATE NOCASE,
    created_at    INTEGER NOT NULL
);

ALTER TABLE instances ADD COLUMN force_delete INTEGER NOT NULL DEFAULT 0;
ALTER TABLE instances ADD COLUMN delete_attempts INTEGER NOT NULL DEFAULT 0;
