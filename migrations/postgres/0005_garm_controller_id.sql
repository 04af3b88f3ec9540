-- As migrations/sqlite/0005: the garm installation this one was imported from.
ALTER TABLE controller ADD COLUMN garm_controller_id TEXT;
