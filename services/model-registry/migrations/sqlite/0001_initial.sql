-- Tracking and registry schema (SQLite). Timestamps are milliseconds since the epoch.
CREATE TABLE experiments (
    experiment_id INTEGER PRIMARY KEY AUTOINCREMENT,
    name TEXT NOT NULL UNIQUE,
    artifact_location TEXT NOT NULL,
    lifecycle_stage TEXT NOT NULL DEFAULT 'active',
    creation_time BIGINT NOT NULL,
    last_update_time BIGINT NOT NULL
);
CREATE TABLE experiment_tags (
    experiment_id BIGINT NOT NULL REFERENCES experiments(experiment_id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (experiment_id, key)
);
CREATE TABLE runs (
    run_id TEXT PRIMARY KEY,
    experiment_id BIGINT NOT NULL REFERENCES experiments(experiment_id),
    run_name TEXT NOT NULL,
    user_id TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL,
    start_time BIGINT NOT NULL,
    end_time BIGINT,
    artifact_uri TEXT NOT NULL,
    lifecycle_stage TEXT NOT NULL DEFAULT 'active'
);
CREATE INDEX runs_experiment ON runs(experiment_id);
CREATE TABLE params (
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
);
CREATE TABLE tags (
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (run_id, key)
);
-- NaN cannot be stored in SQLite REAL (it becomes NULL), hence is_nan.
CREATE TABLE metrics (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    is_nan BIGINT NOT NULL DEFAULT 0,
    timestamp BIGINT NOT NULL,
    step BIGINT NOT NULL,
    model_id TEXT,
    dataset_name TEXT,
    dataset_digest TEXT
);
CREATE INDEX metrics_run_key ON metrics(run_id, key);
CREATE INDEX metrics_model ON metrics(model_id);
-- The latest value per run and key (largest step, then timestamp, then value), kept up to date
-- on insert so that searches and runs/get do not scan metric histories.
CREATE TABLE latest_metrics (
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value DOUBLE PRECISION NOT NULL,
    is_nan BIGINT NOT NULL DEFAULT 0,
    timestamp BIGINT NOT NULL,
    step BIGINT NOT NULL,
    PRIMARY KEY (run_id, key)
);
CREATE TABLE run_inputs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL
);
CREATE TABLE run_outputs (
    run_id TEXT NOT NULL REFERENCES runs(run_id) ON DELETE CASCADE,
    model_id TEXT NOT NULL,
    step BIGINT NOT NULL,
    PRIMARY KEY (run_id, model_id)
);
CREATE TABLE logged_models (
    model_id TEXT PRIMARY KEY,
    experiment_id BIGINT NOT NULL REFERENCES experiments(experiment_id),
    name TEXT NOT NULL,
    artifact_uri TEXT NOT NULL,
    creation_timestamp_ms BIGINT NOT NULL,
    last_updated_timestamp_ms BIGINT NOT NULL,
    status TEXT NOT NULL,
    model_type TEXT,
    source_run_id TEXT,
    lifecycle_stage TEXT NOT NULL DEFAULT 'active'
);
CREATE INDEX logged_models_experiment ON logged_models(experiment_id);
CREATE TABLE logged_model_params (
    model_id TEXT NOT NULL REFERENCES logged_models(model_id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (model_id, key)
);
CREATE TABLE logged_model_tags (
    model_id TEXT NOT NULL REFERENCES logged_models(model_id) ON DELETE CASCADE,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (model_id, key)
);
CREATE TABLE registered_models (
    name TEXT PRIMARY KEY,
    creation_timestamp BIGINT NOT NULL,
    last_updated_timestamp BIGINT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    -- Highest version number ever given out: versions are never reused, even after deletes.
    last_version BIGINT NOT NULL DEFAULT 0
);
CREATE TABLE registered_model_tags (
    name TEXT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (name, key)
);
CREATE TABLE model_versions (
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    creation_timestamp BIGINT NOT NULL,
    last_updated_timestamp BIGINT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    user_id TEXT NOT NULL DEFAULT '',
    current_stage TEXT NOT NULL DEFAULT 'None',
    source TEXT NOT NULL,
    run_id TEXT NOT NULL DEFAULT '',
    run_link TEXT NOT NULL DEFAULT '',
    status TEXT NOT NULL DEFAULT 'READY',
    model_id TEXT,
    PRIMARY KEY (name, version)
);
CREATE TABLE model_version_tags (
    name TEXT NOT NULL,
    version BIGINT NOT NULL,
    key TEXT NOT NULL,
    value TEXT NOT NULL,
    PRIMARY KEY (name, version, key)
);
CREATE TABLE registered_model_aliases (
    name TEXT NOT NULL,
    alias TEXT NOT NULL,
    version BIGINT NOT NULL,
    PRIMARY KEY (name, alias)
);
