//! Batch jobs from the API's side: the job store and the queue, connected in the background
//! (Redis may come up after the API), and the storage layout shared with the workers.

use std::sync::Arc;
use std::time::Duration;

use jobs::{Layout, ScoreChunk, Store};

pub struct Batch {
    pub store: Store,
    pub queue: tokio::sync::Mutex<apalis_redis::RedisStorage<ScoreChunk>>,
    pub layout: Layout,
}

/// Connects to Redis with backoff and publishes the connection; single-application scoring never
/// waits for it.
pub fn connect_in_background(
    settings: &crate::Settings,
    slot: Arc<arc_swap::ArcSwapOption<Batch>>,
) {
    let Some(url) = settings.redis_url.clone().filter(|u| !u.is_empty()) else {
        return;
    };
    let (queue_name, prefix, retention) = (
        settings.job_queue.clone(),
        settings.job_key_prefix.clone(),
        Duration::from_secs(settings.job_retention_seconds),
    );
    let layout = Layout::new(&settings.artifact_root);
    // Job files go when their records expire (hourly check).
    let sweeper = layout.clone();
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
                Ok::<_, String>((store, queue))
            };
            match attempt.await {
                Ok((store, queue)) => {
                    slot.store(Some(Arc::new(Batch {
                        store,
                        queue: tokio::sync::Mutex::new(queue),
                        layout: layout.clone(),
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
