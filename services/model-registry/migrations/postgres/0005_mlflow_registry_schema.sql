-- The registry's tables in MLflow's own shape, so that MLflow's SQLAlchemy registry store can open
-- this database and read and write models and versions beside the server. MLflow's column names
-- and its `workspace` column (always 'default' here); a NULL that MLflow writes for an unset text
-- field becomes the column's default (the trigger below), so what the server reads is never NULL.
-- The SQLite schema is the same (its 0005 rebuilds the two tables to get there).
ALTER TABLE registered_models RENAME COLUMN creation_timestamp TO creation_time;
ALTER TABLE registered_models RENAME COLUMN last_updated_timestamp TO last_updated_time;
ALTER TABLE registered_models ADD COLUMN workspace TEXT NOT NULL DEFAULT 'default';

ALTER TABLE model_versions RENAME COLUMN creation_timestamp TO creation_time;
ALTER TABLE model_versions RENAME COLUMN last_updated_timestamp TO last_updated_time;
ALTER TABLE model_versions ALTER COLUMN source SET DEFAULT '';
ALTER TABLE model_versions ADD COLUMN workspace TEXT NOT NULL DEFAULT 'default';
ALTER TABLE model_versions ADD COLUMN storage_location TEXT;
ALTER TABLE model_versions ADD COLUMN status_message TEXT;
UPDATE model_versions SET storage_location = source;

-- MLflow's tracking store, which MlflowClient opens first, reads experiments by workspace.
ALTER TABLE experiments ADD COLUMN workspace TEXT NOT NULL DEFAULT 'default';
ALTER TABLE registered_model_tags ADD COLUMN workspace TEXT NOT NULL DEFAULT 'default';
ALTER TABLE model_version_tags ADD COLUMN workspace TEXT NOT NULL DEFAULT 'default';
ALTER TABLE registered_model_aliases ADD COLUMN workspace TEXT NOT NULL DEFAULT 'default';
ALTER TABLE webhooks ADD COLUMN workspace TEXT NOT NULL DEFAULT 'default';

CREATE FUNCTION registered_models_mlflow_nulls() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.description := COALESCE(NEW.description, '');
    RETURN NEW;
END $$;
CREATE TRIGGER registered_models_mlflow_nulls BEFORE INSERT OR UPDATE ON registered_models
    FOR EACH ROW EXECUTE FUNCTION registered_models_mlflow_nulls();

CREATE FUNCTION model_versions_mlflow_nulls() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    NEW.description := COALESCE(NEW.description, '');
    NEW.user_id := COALESCE(NEW.user_id, '');
    NEW.current_stage := COALESCE(NEW.current_stage, 'None');
    NEW.source := COALESCE(NEW.source, '');
    NEW.run_id := COALESCE(NEW.run_id, '');
    NEW.run_link := COALESCE(NEW.run_link, '');
    NEW.status := COALESCE(NEW.status, 'READY');
    RETURN NEW;
END $$;
CREATE TRIGGER model_versions_mlflow_nulls BEFORE INSERT OR UPDATE ON model_versions
    FOR EACH ROW EXECUTE FUNCTION model_versions_mlflow_nulls();

-- A version MLflow's store inserts does not go through the server's numbering: keep the model's
-- highest version given out up to date, so that the server never hands the same number out twice.
CREATE FUNCTION model_versions_last_version() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    UPDATE registered_models SET last_version = NEW.version
        WHERE name = NEW.name AND last_version < NEW.version;
    RETURN NULL;
END $$;
CREATE TRIGGER model_versions_last_version AFTER INSERT ON model_versions
    FOR EACH ROW EXECUTE FUNCTION model_versions_last_version();

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
