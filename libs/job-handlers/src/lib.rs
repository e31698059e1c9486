//! The batch-job handlers and their consumers, as a library: the worker binary runs them on
//! Redis queues, the API's embedded mode on in-process queues. Same code either way.
//!
//! - [`chunk`]: score one chunk of a batch job with the block scorer, write its result part.
//! - [`train`]: train a model on a job's dataset, log the run, register the version.
//! - [`consumers`]: the apalis workers that take both kinds of task.

pub mod chunk;
pub mod consumers;
pub mod metrics;
pub mod train;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use jobs::{Layout, PinnedModel, Store};
use model::{Bundle, Scorer};

pub use consumers::{in_process, run_on_redis, RedisQueues};

/// Why a task failed. apalis sees it as the handler's error.
#[derive(Debug, thiserror::Error)]
pub enum JobError {
    /// The job store (Redis) could not be read or written.
    #[error(transparent)]
    Store(#[from] jobs::StoreError),
    /// The task failed for good; the job record says why.
    #[error("{0}")]
    Failed(String),
    /// The task failed and will be tried again.
    #[error("{0} (will be retried)")]
    Retry(String),
    #[error(transparent)]
    Other(#[from] anyhow::Error),
}

/// What every task handler shares.
pub struct WorkerState {
    /// Tries per chunk before its job is failed (apalis' retry layer retries the rest).
    pub attempts: u32,
    /// First retry delay, doubled each time.
    pub retry_base_ms: u64,
    pub store: Store,
    pub layout: Layout,
    pub registry: Option<mlflow_client::Client>,
    /// The registry's URL, for training jobs (they log a run and register a version).
    pub tracking_uri: Option<String>,
    pub model_cache_dir: PathBuf,
    /// The decision audit log: each scored row is written before its chunk counts as done.
    pub audit: Option<JobAudit>,
    /// Rows in each model version's drift window (`DRIFT_WINDOW`; 0: not watched).
    pub drift_window: usize,
    models: Mutex<HashMap<(String, String), Arc<JobModel>>>,
}

/// Where batch jobs record their decisions, and what to do when it is unreachable. The store
/// is reached at the first chunk (a failure fails that attempt, to be retried).
pub struct JobAudit {
    url: String,
    pub mode: audit::Mode,
    store: tokio::sync::OnceCell<audit::Store>,
}

impl JobAudit {
    /// From the audit settings; `None` when `AUDIT_URL` is not set.
    pub fn new(settings: &audit::Settings) -> Option<JobAudit> {
        let url = settings.url()?.to_string();
        Some(JobAudit {
            url,
            mode: settings.mode,
            store: tokio::sync::OnceCell::new(),
        })
    }

    pub async fn store(&self) -> anyhow::Result<&audit::Store> {
        self.store
            .get_or_try_init(|| audit::Store::connect(&self.url))
            .await
    }
}

/// A pinned model version, loaded: its scorer and what the audit log records of it.
pub struct JobModel {
    pub scorer: Scorer,
    pub bundle_sha256: String,
    pub thresholds_json: String,
    /// Its drift watch over the batch rows this worker scored with it.
    pub drift: Option<model::drift::Monitor>,
}

impl WorkerState {
    pub fn new(
        store: Store,
        layout: Layout,
        registry: Option<mlflow_client::Client>,
        model_cache_dir: PathBuf,
    ) -> WorkerState {
        WorkerState {
            attempts: 4,
            retry_base_ms: 500,
            store,
            layout,
            tracking_uri: None,
            registry,
            model_cache_dir,
            audit: None,
            drift_window: 0,
            models: Mutex::default(),
        }
    }

    /// The scorer of the job's pinned model version, loaded once per process.
    async fn scorer(&self, m: &PinnedModel) -> anyhow::Result<Arc<JobModel>> {
        let key = (m.name.clone(), m.version.clone());
        if let Some(s) = self.models.lock().expect("lock").get(&key) {
            return Ok(s.clone());
        }
        let dir = match (&m.local_uri, &self.registry) {
            (Some(dir), _) => PathBuf::from(dir),
            (None, Some(client)) => {
                let uri = client.get_download_uri(&m.name, &m.version).await?;
                let dest = self
                    .model_cache_dir
                    .join(format!("{}-{}", m.name, m.version))
                    .join(uuid::Uuid::new_v4().simple().to_string());
                client.download_artifacts(&uri, &dest).await?;
                dest
            }
            (None, None) => anyhow::bail!(
                "job pinned to {} version {} but no registry is configured",
                m.name,
                m.version
            ),
        };
        let window = self.drift_window;
        let scorer = tokio::task::spawn_blocking(move || -> anyhow::Result<JobModel> {
            let (bundle, bundle_sha256) = Bundle::load_with_digest(&dir)?;
            let thresholds_json = serde_json::to_string(&bundle.thresholds)?;
            let drift = bundle
                .drift_baseline
                .as_ref()
                .filter(|_| window > 0)
                .map(|b| model::drift::Monitor::new(b, window));
            Ok(JobModel {
                drift,
                scorer: Scorer::new(bundle)?,
                bundle_sha256,
                thresholds_json,
            })
        })
        .await??;
        let scorer = Arc::new(scorer);
        self.models
            .lock()
            .expect("lock")
            .insert(key, scorer.clone());
        Ok(scorer)
    }
}
