-- Indexes for the searches of experiments, registered models, model versions and logged models
-- the database answers (0002 has the runs'): a tag or param looked up by key and compared by
-- value, covering the entity's key, and model versions by run (clients look a run's versions up).
CREATE INDEX experiment_tags_key_value ON experiment_tags(key, value, experiment_id);
CREATE INDEX registered_model_tags_key_value ON registered_model_tags(key, value, name);
CREATE INDEX model_version_tags_key_value ON model_version_tags(key, value, name, version);
CREATE INDEX model_versions_run ON model_versions(run_id);
CREATE INDEX logged_model_params_key_value ON logged_model_params(key, value, model_id);
CREATE INDEX logged_model_tags_key_value ON logged_model_tags(key, value, model_id);
