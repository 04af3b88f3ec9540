-- The controller id of the garm installation this database was imported from
-- (`hangard import-garm`): hooks made by garm point at /webhooks/<that id>, and
-- garm's runners carry the label runner-controller-id:<that id>.
ALTER TABLE controller ADD COLUMN garm_controller_id TEXT;
