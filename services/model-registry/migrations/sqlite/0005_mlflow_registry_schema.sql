-- The registry's tables in MLflow's own shape, so that MLflow's SQLAlchemy registry store can open
-- this database and read and write models and versions beside the server (MLflow's own suites do:
-- `MlflowClient("sqlite:///…")` on the server's file). MLflow's column names and its `workspace`
-- column (always 'default' here); a NULL that MLflow writes for an unset text field becomes the
-- column's default (`ON CONFLICT REPLACE`), so what the server reads is never NULL.
CREATE TABLE registered_models_new (
    name TEXT PRIMARY KEY,
    workspace TEXT NOT NULL DEFAULT 'default',
    creation_time BIGINT NOT NULL,
    last_updated_time BIGINT NOT NULL,
    description TEXT NOT NULL ON CONFLICT REPLACE DEFAULT '',
    -- Highest version number ever given out: versions are never reused, even after deletes.
    last_version BIGINT NOT NULL DEFAULT 0
);
INSERT INTO registered_models_new (name, creation_time, last_updated_time, description, last_version)
    SELECT name, creation_timestamp, last_updated_timestamp, description, last_version FROM registered_models;
DROP TABLE registered_models;
ALTER TABLE registered_models_new RENAME TO registered_models;

CREATE TABLE model_versions_new (
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    workspace TEXT NOT NULL DEFAULT 'default',
    creation_time BIGINT NOT NULL,
    last_updated_time BIGINT NOT NULL,
    description TEXT NOT NULL ON CONFLICT REPLACE DEFAULT '',
    user_id TEXT NOT NULL ON CONFLICT REPLACE DEFAULT '',
    current_stage TEXT NOT NULL ON CONFLICT REPLACE DEFAULT 'None',
    source TEXT NOT NULL ON CONFLICT REPLACE DEFAULT '',
    storage_location TEXT,
    run_id TEXT NOT NULL ON CONFLICT REPLACE DEFAULT '',
    run_link TEXT NOT NULL ON CONFLICT REPLACE DEFAULT '',
    status TEXT NOT NULL ON CONFLICT REPLACE DEFAULT 'READY',
    status_message TEXT,
    model_id TEXT,
    PRIMARY KEY (name, version)
);
INSERT INTO model_versions_new (name, version, creation_time, last_updated_time, description, user_id,
        current_stage, source, storage_location, run_id, run_link, status, model_id)
    SELECT name, version, creation_timestamp, last_updated_timestamp, description, user_id,
        current_stage, source, source, run_id, run_link, status, model_id FROM model_versions;
DROP TABLE model_versions;
ALTER TABLE model_versions_new RENAME TO model_versions;
CREATE INDEX model_versions_run ON model_versions(run_id);

-- MLflow's tracking store, which MlflowClient opens first, reads experiments by workspace.
ALTER TABLE experiments ADD COLUMN workspace TEXT NOT NULL DEFAULT 'default';
ALTER TABLE registered_model_tags ADD COLUMN workspace TEXT NOT NULL DEFAULT 'default';
ALTER TABLE model_version_tags ADD COLUMN workspace TEXT NOT NULL DEFAULT 'default';
ALTER TABLE registered_model_aliases ADD COLUMN workspace TEXT NOT NULL DEFAULT 'default';
ALTER TABLE webhooks ADD COLUMN workspace TEXT NOT NULL DEFAULT 'default';

-- A version MLflow's store inserts does not go through the server's numbering: keep the model's
-- highest version given out up to date, so that the server never hands the same number out twice.
CREATE TRIGGER model_versions_last_version AFTER INSERT ON model_versions
BEGIN
    UPDATE registered_models SET last_version = NEW.version
        WHERE name = NEW.name AND last_version < NEW.version;
END;

-- MLflow's store refuses a database without this table (the server keeps a webhook's events in
-- `webhooks.events`); it stays empty.
CREATE TABLE webhook_events (
    webhook_id TEXT NOT NULL,
    entity TEXT NOT NULL,
    action TEXT NOT NULL,
    PRIMARY KEY (webhook_id, entity, action)
);

-- The schema revision MLflow's store finds here: its latest (MLflow 3.17's), so that it does not
-- replay its own migrations over the server's tables. MLflow's tracking store can open the
-- database (MlflowClient opens it first), but only the registry's tables are MLflow's shape.
CREATE TABLE alembic_version (
    version_num VARCHAR(32) NOT NULL PRIMARY KEY
);
INSERT INTO alembic_version (version_num) VALUES ('dc11669786a5');
