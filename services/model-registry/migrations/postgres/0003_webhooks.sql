-- MLflow 3's webhooks: where to POST registry events, signed with the webhook's secret.
CREATE TABLE webhooks (
    webhook_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    description TEXT NOT NULL DEFAULT '',
    url TEXT NOT NULL,
    -- JSON array of {"entity": "model_version_alias", "action": "created"}
    events TEXT NOT NULL,
    secret TEXT,
    status TEXT NOT NULL,
    creation_timestamp BIGINT NOT NULL,
    last_updated_timestamp BIGINT NOT NULL
);
