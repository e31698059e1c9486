//! Settings from flags and environment; every default runs locally.

use std::path::PathBuf;

/// Loan-default scoring API.
#[derive(clap::Parser, Clone)]
#[command(name = "api", version, about)]
pub struct Settings {
    /// Address to bind (0.0.0.0 in a container).
    #[arg(long, env = "API_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Port to listen on; tests pass 0 to get a free one.
    #[arg(long, env = "API_PORT", default_value_t = 8000)]
    pub port: u16,
    /// The model registry: MLFLOW_TRACKING_URI and REGISTRY_TIMEOUT_SECONDS.
    #[command(flatten)]
    pub registry: mlflow_client::Settings,
    /// Registered model to serve.
    #[arg(long, env = "MODEL_NAME", default_value = "loan-default")]
    pub model_name: String,
    /// Alias of the version to serve; the API follows it as it moves.
    #[arg(long, env = "MODEL_ALIAS", default_value = "champion")]
    pub model_alias: String,
    /// A local bundle directory or a `models:/` URI; overrides name and alias.
    #[arg(long, env = "MODEL_URI")]
    pub model_uri: Option<String>,
    /// Seconds between checks of the alias.
    #[arg(long, env = "MODEL_POLL_SECONDS", default_value_t = 30)]
    pub poll_seconds: u64,
    /// Where downloaded bundles are kept.
    #[arg(
        long,
        env = "MODEL_CACHE_DIR",
        default_value = "loanctl-data/api-models"
    )]
    pub model_cache_dir: PathBuf,
    /// Largest accepted body of `POST /v1/predict`, in bytes (`/v1/predict/batch` takes 16 times it).
    #[arg(long, env = "API_MAX_BODY_BYTES", default_value_t = 1 << 20)]
    pub max_body_bytes: usize,
    /// Most applications in one synchronous batch.
    #[arg(long, env = "API_MAX_BATCH", default_value_t = 1000)]
    pub max_batch: usize,
    /// Comma-separated API keys; when set (or a keys file is), scoring needs `X-API-Key` or
    /// `Authorization: Bearer`. /healthz, /readyz, /metrics, /openapi.json and /docs stay open.
    #[arg(long, env = "API_KEYS", hide_env_values = true)]
    pub api_keys: Option<String>,
    /// File with one API key per line.
    #[arg(long, env = "API_KEYS_FILE")]
    pub api_keys_file: Option<PathBuf>,
    /// Comma-separated origins allowed by CORS (none by default); only these, and the API's
    /// own origin, may submit jobs or reload the model from a browser.
    #[arg(long, env = "CORS_ALLOWED_ORIGINS", default_value = "")]
    pub cors_allowed_origins: String,
    /// Comma-separated `Host` values the API answers to (DNS-rebinding protection): names,
    /// `*.example.com`, `10.*`, `name:port`, or `*` for any. Default: localhost names, private
    /// IPv4 ranges and the bind address. `/healthz`, `/readyz` and `/metrics` answer any Host.
    #[arg(long, env = "API_ALLOWED_HOSTS", default_value = "")]
    pub allowed_hosts: String,
    /// Redis for batch jobs (queue and job records), shared with the workers. Without it
    /// (embedded mode) the API runs batch jobs itself on an in-process queue, records in memory.
    #[arg(long, env = "REDIS_URL")]
    pub redis_url: Option<String>,
    #[command(flatten)]
    pub jobs: jobs::Settings,
    /// The decision audit log: AUDIT_URL, AUDIT_MODE, AUDIT_RETENTION_DAYS, AUDIT_QUEUE.
    #[command(flatten)]
    pub audit: audit::Settings,
    /// Rows per chunk (one queued task each).
    #[arg(long, env = "BATCH_CHUNK_ROWS", default_value_t = 50_000)]
    pub batch_chunk_rows: u64,
    /// Largest accepted batch upload, in bytes.
    #[arg(long, env = "BATCH_MAX_BYTES", default_value_t = 2 << 30)]
    pub batch_max_bytes: u64,
    /// Largest training dataset (upload or `dataset_path`), in bytes. Training holds the table
    /// in memory, about 6 times the CSV's size at its peak (docs/operations.md): the default
    /// keeps a job well inside the worker's 2 GiB memory limit.
    #[arg(long, env = "TRAIN_MAX_BYTES", default_value_t = 256 << 20)]
    pub train_max_bytes: u64,
    /// Seconds to finish in-flight requests on shutdown (keep below the pod's grace period).
    #[arg(long, env = "API_SHUTDOWN_TIMEOUT", default_value_t = 30)]
    pub shutdown_timeout: u64,
    /// Alias of a challenger version (of MODEL_NAME) that scores every request in the shadow,
    /// after the answer, never changing it; followed as it moves, like MODEL_ALIAS.
    #[arg(long = "shadow-alias", env = "MODEL_SHADOW_ALIAS")]
    pub shadow_alias: Option<String>,
    /// The shadow model as a local bundle or a `models:/` URI instead of an alias.
    #[arg(long = "shadow-model-uri", env = "SHADOW_MODEL_URI")]
    pub shadow_model_uri: Option<String>,
    /// Decisions in the drift window: `feature_psi`, `score_psi` and `GET /v1/monitoring/drift`
    /// compare the last this many with the model's training data (0 turns it off).
    #[arg(long = "drift-window", env = "DRIFT_WINDOW", default_value_t = 10_000)]
    pub drift_window: usize,
    /// Share of requests the shadow model scores, 0 to 1.
    #[arg(long = "shadow-sample", env = "SHADOW_SAMPLE", default_value_t = 1.0)]
    pub shadow_sample: f64,
    /// Where the registry reaches this API's `/v1/model/events` (`{port}` becomes the bound
    /// port): at start the API subscribes to alias moves (MLflow 3 webhooks), so a promotion
    /// takes effect within a second; the poll stays as the fallback.
    #[arg(long = "model-webhook-url", env = "MODEL_WEBHOOK_URL")]
    pub webhook_url: Option<String>,
    /// The secret the registry signs those events with (required with MODEL_WEBHOOK_URL).
    #[arg(long = "model-webhook-secret", env = "MODEL_WEBHOOK_SECRET")]
    pub webhook_secret: Option<String>,
}

impl std::fmt::Debug for Settings {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Keys stay out of logs.
        f.debug_struct("Settings")
            .field("host", &self.host)
            .field("port", &self.port)
            .field("registry", &self.registry)
            .field("model_name", &self.model_name)
            .field("model_alias", &self.model_alias)
            .field("model_uri", &self.model_uri)
            .field("poll_seconds", &self.poll_seconds)
            .field("api_keys", &self.api_keys.as_ref().map(|_| "***"))
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    /// The flattened `Settings` of the libraries do not clash (a debug build would panic).
    #[test]
    fn the_argument_groups_have_distinct_ids() {
        use clap::CommandFactory;
        test_support::assert_distinct_arg_groups(&super::Settings::command());
    }
}
