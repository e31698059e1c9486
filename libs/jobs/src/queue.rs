//! The apalis queue of `ScoreChunk` tasks: in Redis (the API pushes, workers pull), or in
//! process for embedded mode (the API pushes to a worker it runs itself; same handler).

use std::time::Duration;

use apalis::prelude::TaskSink as _;
use apalis::prelude::{MemorySink, MemoryStorage, MemoryStorageError, Task, TaskId};
use futures_util::SinkExt as _;

use crate::ScoreChunk;

/// The queue's storage with the default heartbeat (5 s).
pub async fn queue<T>(
    redis_url: &str,
    queue: &str,
) -> Result<apalis_redis::RedisStorage<T>, redis::RedisError> {
    queue_with(redis_url, queue, Duration::from_secs(5)).await
}

/// Like [`queue`], with the heartbeat that decides when a dead worker's chunks are re-enqueued
/// (after three missed beats).
pub async fn queue_with<T>(
    redis_url: &str,
    queue: &str,
    heartbeat: Duration,
) -> Result<apalis_redis::RedisStorage<T>, redis::RedisError> {
    let client = redis::Client::open(redis_url)?;
    let conn = redis::aio::ConnectionManager::new_with_config(
        client,
        fail_fast().set_response_timeout(None),
    )
    .await?;
    let config = apalis_redis::Config::default()
        .queue(queue)
        .heartbeat_interval(heartbeat)
        .missed_heartbeats(3);
    Ok(apalis_redis::RedisStorage::new(conn).with_config(config))
}

/// Keeps worker `name` alive in the queue's workers set every `every` (its heartbeat
/// interval), whatever the worker is doing; never returns.
///
/// apalis beats only when a worker asks for its next task. A worker whose slots were all busy
/// for longer than the missed-heartbeat limit (long chunks, a training) was taken for dead by
/// its peers: its tasks were re-enqueued and run again, and its own next beat failed ("worker
/// not registered"), which stopped its consumer for good. This beat runs beside the worker.
/// `XX`: a name already taken for dead is not brought back (the consumer restarts under a new
/// name instead).
pub async fn keep_alive<T>(
    mut storage: apalis_redis::RedisStorage<T>,
    name: String,
    every: Duration,
) {
    let set = storage.get_config().workers_set();
    let mut tick = tokio::time::interval(every.max(Duration::from_millis(100)));
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
    loop {
        tick.tick().await;
        let now = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default()
            .as_secs();
        // A beat that fails (Redis away) is not retried here: the consumer sees the same
        // error and reconnects under a new name.
        let _: redis::RedisResult<i64> = redis::cmd("ZADD")
            .arg(&set)
            .arg("XX")
            .arg(now)
            .arg(&name)
            .query_async(storage.get_connection())
            .await;
    }
}

/// Removes what a Redis queue keeps of tasks that finished (done or dead) more than
/// `older_than` ago: apalis keeps every task's payload, metadata and id after it ran, so with
/// Redis capped and `noeviction` the queue would fill it. Returns how many tasks went.
pub async fn vacuum<T>(
    storage: &mut apalis_redis::RedisStorage<T>,
    older_than: Duration,
) -> Result<usize, String>
where
    T: Unpin + Send + Sync + 'static,
{
    use apalis_core::backend::Vacuum as _;
    let removed = storage
        .vacuum_before(older_than)
        .await
        .map_err(|e| e.to_string())?;
    // apalis' vacuum leaves the ids in the done and dead sets; drop those whose data is gone.
    let config = storage.get_config().clone();
    redis::Script::new(PRUNE_IDS)
        .key(config.job_data_hash())
        .key(config.done_jobs_set())
        .key(config.dead_jobs_set())
        .invoke_async::<i64>(storage.get_connection())
        .await
        .map_err(|e| e.to_string())?;
    Ok(removed)
}

/// KEYS: the task data hash, then sets of task ids; removes the ids without data.
const PRUNE_IDS: &str = r"
local removed = 0
for i = 2, #KEYS do
  for _, id in ipairs(redis.call('SMEMBERS', KEYS[i])) do
    if redis.call('HEXISTS', KEYS[1], id) == 0 then
      redis.call('SREM', KEYS[i], id)
      removed = removed + 1
    end
  end
end
return removed
";

/// Connections that give up within seconds while Redis is away (so callers answer 503 quickly
/// instead of hanging) and reconnect by themselves when it is back.
pub fn fail_fast() -> redis::aio::ConnectionManagerConfig {
    redis::aio::ConnectionManagerConfig::new()
        .set_number_of_retries(1)
        .set_max_delay(Duration::from_millis(500))
        .set_connection_timeout(Some(Duration::from_secs(1)))
        .set_response_timeout(Some(Duration::from_secs(2)))
}

/// Where the API puts tasks (score chunks, training jobs).
pub enum Queue<T = ScoreChunk> {
    Redis(Box<tokio::sync::Mutex<apalis_redis::RedisStorage<T>>>),
    /// apalis' in-memory backend, consumed by a worker in the same process.
    InProcess(futures_channel::mpsc::UnboundedSender<Task<T>>),
}

impl<T> Queue<T>
where
    T: serde::Serialize + serde::de::DeserializeOwned + Send + Sync + Unpin + 'static,
{
    pub fn redis(storage: apalis_redis::RedisStorage<T>) -> Queue<T> {
        Queue::Redis(Box::new(tokio::sync::Mutex::new(storage)))
    }

    /// An in-process queue and the apalis backend a worker consumes it with.
    pub fn in_process() -> (Queue<T>, MemoryStorage<T>) {
        let (tx, rx) = futures_channel::mpsc::unbounded::<Task<T>>();
        // The backend's own sink (polled by the worker) is a separate handle on the same
        // channel, so pushes never contend for its lock.
        let sink: Box<
            dyn futures_util::Sink<Task<T>, Error = MemoryStorageError> + Send + Sync + Unpin,
        > = Box::new(tx.clone().sink_map_err(MemoryStorageError::from));
        let sink = MemorySink::new(std::sync::Arc::new(futures_util::lock::Mutex::new(sink)));
        let storage = MemoryStorage::new_with(sink, Box::pin(rx));
        (Queue::InProcess(tx), storage)
    }

    /// Queues every task in order; stops at the first failure.
    pub async fn push_all(&self, tasks: Vec<T>) -> Result<(), String> {
        match self {
            Queue::Redis(storage) => {
                let mut q = storage.lock().await;
                for task in tasks {
                    q.push(task).await.map_err(|e| e.to_string())?;
                }
                Ok(())
            }
            Queue::InProcess(tx) => {
                for task in tasks {
                    let task = Task::new(task)
                        .into_builder()
                        .task_id(TaskId::from_string(
                            uuid::Uuid::new_v4().simple().to_string(),
                        ))
                        .build();
                    tx.unbounded_send(task)
                        .map_err(|_| "the in-process worker has stopped".to_string())?;
                }
                Ok(())
            }
        }
    }
}

/// Wakes an idle consumer every `interval` to look at its queue (`poll_with_strategy`).
/// apalis-core 1.0's `IntervalStrategy` replaces a timer that fired with a new one without
/// polling it, so nothing wakes the consumer at the next tick: an idle worker then looked at its
/// queue only at its heartbeat. Measured: a job queued 1.4 s or 4 s after a worker started waited
/// for the worker's first heartbeat in 4 of 16 runs (none of 28 with this strategy). This one
/// keeps one tokio timer, which keeps the consumer's waker when it is reset.
#[derive(Debug)]
pub struct EveryInterval {
    interval: Duration,
    /// Created at the first poll, inside the runtime.
    sleep: Option<std::pin::Pin<Box<tokio::time::Sleep>>>,
}

impl EveryInterval {
    pub fn new(interval: Duration) -> EveryInterval {
        EveryInterval {
            interval,
            sleep: None,
        }
    }
}

impl Clone for EveryInterval {
    fn clone(&self) -> EveryInterval {
        EveryInterval::new(self.interval)
    }
}

impl apalis_core::backend::ext::poll_strategy::PollStrategy for EveryInterval {
    fn poll_drive(
        &mut self,
        cx: &mut std::task::Context<'_>,
        _: &apalis_core::backend::ext::poll_strategy::PollSnapshot,
    ) -> std::task::Poll<Option<()>> {
        use std::future::Future as _;
        let interval = self.interval;
        let sleep = self
            .sleep
            .get_or_insert_with(|| Box::pin(tokio::time::sleep(interval)));
        if sleep.as_mut().poll(cx).is_pending() {
            return std::task::Poll::Pending;
        }
        sleep.as_mut().reset(tokio::time::Instant::now() + interval);
        // Poll the next tick now, so it holds this waker whoever polls next.
        let _ = sleep.as_mut().poll(cx);
        std::task::Poll::Ready(Some(()))
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::task::Context;
    use std::time::Duration;

    use apalis_core::backend::ext::poll_strategy::{PollSnapshot, PollStrategy};

    use super::EveryInterval;

    struct Count(AtomicUsize);

    impl futures_util::task::ArcWake for Count {
        fn wake_by_ref(this: &Arc<Self>) {
            this.0.fetch_add(1, Ordering::SeqCst);
        }
    }

    /// Waits up to a second for `count` to reach `n`.
    async fn woken(count: &Count, n: usize) -> bool {
        for _ in 0..100 {
            if count.0.load(Ordering::SeqCst) >= n {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        false
    }

    /// A consumer polls its strategy only when something woke it: after a tick it has taken,
    /// the strategy must wake it again at the next tick by itself. apalis' `IntervalStrategy`
    /// fails this at the second tick (checked by swapping it in), which is how jobs waited for
    /// a worker's heartbeat.
    async fn wakes_at_each_tick(mut strategy: impl PollStrategy) {
        let count = Arc::new(Count(AtomicUsize::new(0)));
        let waker = futures_util::task::waker(count.clone());
        let mut cx = Context::from_waker(&waker);
        let snapshot = PollSnapshot::default();
        assert!(strategy.poll_drive(&mut cx, &snapshot).is_pending());
        for tick in 1..5 {
            assert!(
                woken(&count, tick).await,
                "tick {tick} did not wake the consumer"
            );
            assert!(strategy.poll_drive(&mut cx, &snapshot).is_ready());
        }
    }

    #[tokio::test]
    async fn every_interval_wakes_the_consumer_at_each_tick_without_being_asked() {
        wakes_at_each_tick(EveryInterval::new(Duration::from_millis(50))).await;
    }
}
