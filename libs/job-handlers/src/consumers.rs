//! The apalis workers that take tasks: one for score chunks (`concurrency` at once) and one for
//! training (one at a time: a training uses every core). Built in one place for both backends:
//! in-process queues (the API's embedded mode) and Redis queues (the worker binary).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::*;
use jobs::queue::Queue;
use jobs::{ScoreChunk, TrainModel};

use crate::WorkerState;

/// The score-chunk and training workers on two backends, run until `stop` resolves.
macro_rules! run_pair {
    ($name:expr, $chunks:expr, $training:expr, $concurrency:expr, $state:expr, $stop:expr) => {{
        let name: String = $name;
        let state: Arc<WorkerState> = $state;
        let stop = $stop;
        let chunk_worker = WorkerBuilder::new(name.clone())
            .backend($chunks)
            .concurrency($concurrency.max(1))
            .retry(chunk_retries(&state))
            .data(state.clone())
            .build(crate::chunk::handle);
        let training_worker = WorkerBuilder::new(format!("{name}-train"))
            .backend($training)
            .concurrency(1)
            .data(state)
            .build(crate::train::handle);
        // Stops on `stop`, or when the other worker has failed (so that the caller can
        // reconnect both; the one still running finishes its tasks in hand first).
        let (failed_tx, failed_rx) = tokio::sync::watch::channel(false);
        let signal = || {
            let stop = stop.clone();
            let mut failed = failed_rx.clone();
            async move {
                tokio::select! {
                    () = stop => {}
                    _ = failed.wait_for(|f| *f) => {}
                }
                Ok::<(), std::io::Error>(())
            }
        };
        let failing = |r: Result<(), WorkerError>| {
            if r.is_err() {
                let _ = failed_tx.send(true);
            }
            r
        };
        let (a, b) = tokio::join!(
            async { failing(chunk_worker.run_until(signal()).await) },
            async { failing(training_worker.run_until(signal()).await) }
        );
        a.and(b)
    }};
}

/// The chunk retry policy: `attempts - 1` retries, the first after `retry_base_ms`, each next
/// one twice as late.
fn chunk_retries(
    state: &WorkerState,
) -> apalis::layers::retry::BackoffRetryPolicy<
    apalis::layers::retry::backoff::ExponentialBackoff<apalis::layers::retry::HasherRng>,
> {
    use apalis::layers::retry::backoff::{ExponentialBackoffMaker, MakeBackoff as _};
    use apalis::layers::retry::{HasherRng, RetryPolicy};
    let base = Duration::from_millis(state.retry_base_ms.max(1));
    let retries = state.attempts.saturating_sub(1) as usize;
    let max = base * 2u32.saturating_pow(retries as u32);
    let backoff = ExponentialBackoffMaker::new(base, max, 0.0, HasherRng::default())
        .expect("base below max, no jitter")
        .make_backoff();
    RetryPolicy::retries(retries).with_backoff(backoff)
}

/// In-process queues and their consumers, spawned on the current runtime (embedded mode: no
/// Redis). Returns the queues to push score chunks and training jobs to.
pub fn in_process(
    state: Arc<WorkerState>,
    concurrency: usize,
) -> (Queue<ScoreChunk>, Queue<TrainModel>) {
    let (chunks, chunk_backend) = Queue::in_process();
    let (training, training_backend) = Queue::in_process();
    tokio::spawn(async move {
        let never = futures_never();
        let outcome = run_pair!(
            "in-process".to_string(),
            chunk_backend,
            training_backend,
            concurrency,
            state,
            never
        );
        if let Err(e) = outcome {
            tracing::error!(error = %e, "the in-process job workers stopped");
        }
    });
    (chunks, training)
}

/// A future that never resolves, shared by both workers.
fn futures_never() -> futures_util::future::Shared<std::future::Pending<()>> {
    use futures_util::FutureExt as _;
    std::future::pending::<()>().shared()
}

/// The Redis queues a worker process consumes.
pub struct RedisQueues {
    pub chunks: apalis_redis::RedisStorage<ScoreChunk>,
    pub training: apalis_redis::RedisStorage<TrainModel>,
    /// How often an idle worker looks for new tasks (else only at its heartbeat).
    pub poll: Duration,
}

/// Consumes both Redis queues until `stop` resolves (returns `Ok`) or the connection is lost
/// (returns the error; the caller reconnects).
pub async fn run_on_redis<S>(
    name: String,
    queues: RedisQueues,
    concurrency: usize,
    state: Arc<WorkerState>,
    stop: S,
) -> Result<(), WorkerError>
where
    S: Future<Output = ()> + Send + 'static,
{
    use futures_util::FutureExt as _;
    let stop = stop.shared();
    // Beats on their own tasks, so that nothing the consumers do can hold them up; they end
    // with this future.
    let every = queues.chunks.get_config().heartbeat_interval;
    let _beats = AbortOnDrop([
        tokio::spawn(jobs::queue::keep_alive(
            queues.chunks.clone(),
            name.clone(),
            every,
        )),
        tokio::spawn(jobs::queue::keep_alive(
            queues.training.clone(),
            format!("{name}-train"),
            every,
        )),
    ]);
    run_pair!(
        name,
        queues
            .chunks
            .poll_with_strategy(jobs::queue::EveryInterval::new(queues.poll)),
        queues
            .training
            .poll_with_strategy(jobs::queue::EveryInterval::new(queues.poll)),
        concurrency,
        state,
        stop
    )
}

/// Aborts its tasks when dropped.
struct AbortOnDrop<const N: usize>([tokio::task::JoinHandle<()>; N]);

impl<const N: usize> Drop for AbortOnDrop<N> {
    fn drop(&mut self) {
        for task in &self.0 {
            task.abort();
        }
    }
}
