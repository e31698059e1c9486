//! Batch jobs from the API's side: the job store and the queue, connected in the background
//! (Redis may come up after the API), and the storage layout shared with the workers.
//!
//! Without `REDIS_URL` (embedded mode) the jobs run on an in-process apalis queue, consumed by
//! the job handlers `services/worker` runs, in this process, with the job records in memory.

use std::sync::Arc;
use std::time::Duration;

use jobs::queue::Queue;
use jobs::{Layout, Store};

pub struct Batch {
    pub store: Store,
    pub queue: Queue,
    pub train_queue: Queue<jobs::TrainModel>,
    pub layout: Layout,
    /// Whether the jobs run in this process (no Redis).
    pub embedded: bool,
}

/// Connects to Redis with backoff and publishes the connection; single-application scoring never
/// waits for it. With no Redis configured, starts the in-process queue and worker instead.
pub fn connect_in_background(
    settings: &crate::Settings,
    slot: Arc<arc_swap::ArcSwapOption<Batch>>,
) {
    let retention = Duration::from_secs(settings.jobs.job_retention_seconds);
    let layout = Layout::new(&settings.jobs.jobs_root);
    spawn_sweeper(layout.clone(), retention);
    let Some(url) = settings.redis_url.clone().filter(|u| !u.is_empty()) else {
        start_embedded(settings, &slot, layout, retention);
        return;
    };
    let (queue_name, train_queue_name, prefix) = (
        settings.jobs.job_queue.clone(),
        settings.jobs.train_queue.clone(),
        settings.jobs.job_key_prefix.clone(),
    );
    tokio::spawn(async move {
        let mut backoff = Duration::from_millis(250);
        loop {
            let attempt = async {
                let store = Store::redis(&url, &prefix, retention)
                    .await
                    .map_err(|e| e.to_string())?;
                let queue = jobs::queue::queue(&url, &queue_name)
                    .await
                    .map_err(|e| e.to_string())?;
                let train_queue = jobs::queue::queue(&url, &train_queue_name)
                    .await
                    .map_err(|e| e.to_string())?;
                Ok::<_, String>((store, queue, train_queue))
            };
            match attempt.await {
                Ok((store, queue, train_queue)) => {
                    spawn_reaper(store.clone());
                    slot.store(Some(Arc::new(Batch {
                        store,
                        queue: Queue::redis(queue),
                        train_queue: Queue::redis(train_queue),
                        layout: layout.clone(),
                        embedded: false,
                    })));
                    tracing::info!("batch jobs available");
                    return;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "Redis not reachable yet; batch jobs unavailable");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                }
            }
        }
    });
}

/// The in-process queues, the in-memory job store and the job handlers `services/worker` runs
/// (from the `job-handlers` library).
fn start_embedded(
    settings: &crate::Settings,
    slot: &arc_swap::ArcSwapOption<Batch>,
    layout: Layout,
    retention: Duration,
) {
    let store = Store::memory(retention);
    let registry = settings.registry.client().ok();
    let mut state = job_handlers::WorkerState::new(
        store.clone(),
        layout.clone(),
        registry,
        settings.model_cache_dir.join("batch"),
    );
    state.tracking_uri = Some(settings.registry.tracking_uri.clone());
    state.audit = job_handlers::JobAudit::new(&settings.audit);
    let concurrency = settings.jobs.worker_concurrency.max(1);
    let (queue, train_queue) = job_handlers::in_process(Arc::new(state), concurrency);
    slot.store(Some(Arc::new(Batch {
        store,
        queue,
        train_queue,
        layout,
        embedded: true,
    })));
    tracing::info!(
        concurrency,
        "batch jobs run in process (no REDIS_URL); job records are kept in memory"
    );
}

/// Job files go when their records expire (hourly check).
fn spawn_sweeper(layout: Layout, retention: Duration) {
    let sweeper = layout;
    tokio::spawn(async move {
        loop {
            let l = sweeper.clone();
            match tokio::task::spawn_blocking(move || l.sweep(retention)).await {
                Ok(Ok(n)) if n > 0 => {
                    tracing::info!(removed = n, "expired batch job files removed")
                }
                Ok(Err(e)) => tracing::warn!(error = %e, "sweeping expired batch job files failed"),
                _ => {}
            }
            tokio::time::sleep(Duration::from_secs(3600)).await;
        }
    });
}

/// How long a recorded job may wait for its tasks to be queued before it is failed.
const ENQUEUE_GRACE: Duration = Duration::from_secs(300);

/// Every minute, fails the jobs whose tasks were never queued (an API stopped between recording
/// a job and queueing it), so that none stays `queued` for ever. Any API replica may do it: the
/// check and the change are one script.
fn spawn_reaper(store: Store) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_secs(60)).await;
            match store.reap_unqueued(ENQUEUE_GRACE).await {
                Ok(ids) => {
                    for id in ids {
                        tracing::warn!(job.id = %id, "job failed: its tasks were never queued");
                    }
                }
                Err(e) => tracing::debug!(error = %e, "cannot look for unqueued jobs"),
            }
        }
    });
}
