-- One row per decision. decision_id is unique: a fresh id per API decision, `<job>:<row>` for
-- batch jobs, so a redelivered chunk cannot write a row twice.
CREATE TABLE IF NOT EXISTS decisions (
    decision_id TEXT PRIMARY KEY,
    request_id TEXT NOT NULL,
    row_index BIGINT NOT NULL,
    recorded_at_ms BIGINT NOT NULL,
    source TEXT NOT NULL,
    key_id TEXT,
    model_name TEXT NOT NULL,
    model_version TEXT NOT NULL,
    bundle_sha256 TEXT NOT NULL,
    features TEXT NOT NULL,
    probability DOUBLE PRECISION NOT NULL,
    decision TEXT NOT NULL,
    thresholds TEXT NOT NULL,
    reason_policy TEXT NOT NULL,
    reasons TEXT NOT NULL,
    shadow TEXT
);
CREATE INDEX IF NOT EXISTS decisions_recorded_at ON decisions (recorded_at_ms, decision_id);
CREATE INDEX IF NOT EXISTS decisions_request_id ON decisions (request_id);
