-- Indexes for searches the database answers (filters and order_by pushed into SQL): a metric,
-- param or tag looked up by key and compared by value, covering the run id so that the
-- search starts from the most selective clause without reading the table; and runs of an
-- experiment in a lifecycle stage by start time (the default order).
CREATE INDEX latest_metrics_key_value ON latest_metrics(key, value, is_nan, run_id);
CREATE INDEX params_key_value ON params(key, value, run_id);
CREATE INDEX tags_key_value ON tags(key, value, run_id);
CREATE INDEX runs_experiment_stage_start ON runs(experiment_id, lifecycle_stage, start_time);
-- A metric point is looked up before it is inserted (an identical point is kept once): by run,
-- key, step and timestamp, not by scanning the whole history of the key.
CREATE INDEX metrics_point ON metrics(run_id, key, step, timestamp);
