//! Settings from flags and environment; every default runs locally.

use std::path::PathBuf;

/// Batch scoring worker. A variable the API also reads has the same flag there.
#[derive(clap::Parser, Debug, Clone)]
#[command(name = "worker", version, about)]
pub struct Settings {
    /// Address of the health and metrics server (0.0.0.0 in a container).
    #[arg(long, env = "WORKER_HOST", default_value = "127.0.0.1")]
    pub host: String,
    /// Port of the health and metrics server.
    #[arg(long, env = "WORKER_PORT", default_value_t = 9000)]
    pub port: u16,
    /// Redis holding the queue and the job records.
    #[arg(long, env = "REDIS_URL", default_value = "redis://127.0.0.1:6379")]
    pub redis_url: String,
    #[command(flatten)]
    pub jobs: jobs::Settings,
    /// The decision audit log (AUDIT_URL, AUDIT_MODE): each scored row of a batch job is
    /// recorded before its chunk counts as done.
    #[command(flatten)]
    pub audit: audit::Settings,
    /// Rows in each model version's drift window: `feature_psi` and `score_psi` in this
    /// worker's `/metrics` compare its last batch rows with the training data (0 turns it off).
    #[arg(long = "drift-window", env = "DRIFT_WINDOW", default_value_t = 10_000)]
    pub drift_window: usize,
    /// The model registry, for jobs pinned to a registered model version and for training:
    /// MLFLOW_TRACKING_URI and REGISTRY_TIMEOUT_SECONDS.
    #[command(flatten)]
    pub registry: mlflow_client::Settings,
    /// Where downloaded bundles are kept.
    #[arg(
        long,
        env = "MODEL_CACHE_DIR",
        default_value = "loanctl-data/worker-models"
    )]
    pub model_cache_dir: PathBuf,
    /// Milliseconds between looks at an empty queue (how soon an idle worker picks up work).
    #[arg(long, env = "WORKER_POLL_MS", default_value_t = 100)]
    pub poll_ms: u64,
    /// Seconds between heartbeats; a worker that misses a few has its chunks re-enqueued.
    #[arg(long, env = "WORKER_HEARTBEAT_SECONDS", default_value_t = 5)]
    pub heartbeat_seconds: u64,
    /// Seconds between sweeps that remove finished tasks (payload, metadata, id) from the Redis
    /// queues once they are older than `JOB_RETENTION_SECONDS`.
    #[arg(long, env = "WORKER_VACUUM_SECONDS", default_value_t = 600)]
    pub vacuum_seconds: u64,
    /// Seconds to finish the chunk in hand after SIGTERM; keep it below the pod's grace period
    /// (Kubernetes' default is 30 s; `k8s/base/worker.yaml` sets 60 s with a 90 s grace period).
    #[arg(long, env = "WORKER_SHUTDOWN_TIMEOUT", default_value_t = 25)]
    pub shutdown_timeout: u64,
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
