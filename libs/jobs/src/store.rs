//! The job status store: Redis in production (shared by the API and every worker), in memory for
//! embedded mode. Chunk completion is recorded in a set, so a redelivered chunk is never counted
//! twice; state changes happen atomically in Redis (Lua scripts).

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use redis::AsyncCommands;

use crate::{now, JobRecord, JobState};

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("job store unavailable: {0}")]
    Unavailable(String),
    #[error("job '{0}' not found")]
    NotFound(String),
    #[error("corrupt job record: {0}")]
    Corrupt(String),
}

impl From<redis::RedisError> for StoreError {
    fn from(e: redis::RedisError) -> Self {
        StoreError::Unavailable(e.to_string())
    }
}

pub type Result<T> = std::result::Result<T, StoreError>;

/// Where job records live. Cheap to clone: clones share the same records.
#[derive(Clone)]
pub enum Store {
    Redis(RedisStore),
    Memory(std::sync::Arc<MemoryStore>),
}

#[derive(Clone)]
pub struct RedisStore {
    conn: redis::aio::ConnectionManager,
    prefix: String,
    retention: Duration,
}

/// A job in memory: its record, the chunks done, and when it expires.
type MemJob = (JobRecord, HashSet<u32>, Instant);

#[derive(Default)]
pub struct MemoryStore {
    jobs: Mutex<HashMap<String, MemJob>>,
    idempotency: Mutex<HashMap<String, (String, Instant)>>,
    retention: Duration,
}

impl MemoryStore {
    /// Runs `f` on a job's record and its set of done chunks, under the lock.
    fn update<T>(
        &self,
        id: &str,
        f: impl FnOnce(&mut JobRecord, &mut HashSet<u32>) -> T,
    ) -> Result<T> {
        let mut jobs = self.jobs.lock().expect("lock");
        let (rec, done, _) = jobs
            .get_mut(id)
            .ok_or_else(|| StoreError::NotFound(id.to_string()))?;
        Ok(f(rec, done))
    }
}

/// Marks a chunk done; finishes the job when all chunks are. Returns {chunks done, state}.
const COMPLETE_CHUNK: &str = r"
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return {-1, ''} end
if redis.call('SADD', KEYS[2], ARGV[1]) == 1 then
  redis.call('HINCRBY', KEYS[1], 'rows_scored', ARGV[2])
  redis.call('HINCRBY', KEYS[1], 'rows_rejected', ARGV[3])
end
redis.call('EXPIRE', KEYS[2], ARGV[6])
local done = redis.call('SCARD', KEYS[2])
if state == 'queued' or state == 'running' then
  if done >= tonumber(ARGV[4]) then
    state = 'succeeded'
    redis.call('HSET', KEYS[1], 'state', state, 'finished_at', ARGV[5], 'updated_at', ARGV[5])
  else
    state = 'running'
    redis.call('HSET', KEYS[1], 'state', state, 'updated_at', ARGV[5])
  end
end
return {done, state}
";

/// Queued -> running; other states stay.
const MARK_RUNNING: &str = r"
if redis.call('HGET', KEYS[1], 'state') == 'queued' then
  redis.call('HSET', KEYS[1], 'state', 'running', 'updated_at', ARGV[1])
  return 1
end
return 0
";

/// Moves a job that is not finished to a final state (failed or cancelled), keeping the reason.
const FINISH: &str = r"
local state = redis.call('HGET', KEYS[1], 'state')
if not state then return '' end
if state == 'queued' or state == 'running' then
  redis.call('HSET', KEYS[1], 'state', ARGV[1], 'error', ARGV[2], 'finished_at', ARGV[3], 'updated_at', ARGV[3])
  return ARGV[1]
end
return state
";

impl Store {
    /// Redis at `url`; every key starts with `prefix` (tests give each run its own).
    pub async fn redis(url: &str, prefix: &str, retention: Duration) -> Result<Store> {
        let client =
            redis::Client::open(url).map_err(|e| StoreError::Unavailable(e.to_string()))?;
        let conn =
            redis::aio::ConnectionManager::new_with_config(client, crate::queue::fail_fast())
                .await?;
        Ok(Store::Redis(RedisStore {
            conn,
            prefix: prefix.to_string(),
            retention,
        }))
    }

    pub fn memory(retention: Duration) -> Store {
        Store::Memory(std::sync::Arc::new(MemoryStore {
            retention,
            ..MemoryStore::default()
        }))
    }

    /// Records a new job. With an idempotency key that was seen before, nothing is created and
    /// the earlier job's id is returned instead.
    pub async fn create(
        &self,
        record: &JobRecord,
        idempotency_key: Option<&str>,
    ) -> Result<String> {
        match self {
            Store::Redis(r) => {
                let mut c = r.conn.clone();
                let ttl = r.retention.as_secs().max(1);
                if let Some(key) = idempotency_key {
                    let k = format!("{}idem:{key}", r.prefix);
                    let set: bool = redis::cmd("SET")
                        .arg(&k)
                        .arg(&record.id)
                        .arg("NX")
                        .arg("EX")
                        .arg(ttl)
                        .query_async::<Option<String>>(&mut c)
                        .await?
                        .is_some();
                    if !set {
                        let existing: Option<String> = c.get(&k).await?;
                        if let Some(id) = existing {
                            return Ok(id);
                        }
                    }
                }
                let key = r.job_key(&record.id);
                let meta = serde_json::to_string(record)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                redis::pipe()
                    .atomic()
                    .hset_multiple(
                        &key,
                        &[
                            ("meta", meta.as_str()),
                            ("state", record.state.as_str()),
                            ("rows_scored", "0"),
                            ("rows_rejected", "0"),
                            ("updated_at", record.updated_at.as_str()),
                        ],
                    )
                    .expire(&key, ttl as i64)
                    .query_async::<()>(&mut c)
                    .await?;
                Ok(record.id.clone())
            }
            Store::Memory(m) => {
                let deadline = Instant::now() + m.retention;
                if let Some(key) = idempotency_key {
                    let mut idem = m.idempotency.lock().expect("lock");
                    idem.retain(|_, (_, until)| *until > Instant::now());
                    if let Some((id, _)) = idem.get(key) {
                        return Ok(id.clone());
                    }
                    idem.insert(key.to_string(), (record.id.clone(), deadline));
                }
                m.jobs.lock().expect("lock").insert(
                    record.id.clone(),
                    (record.clone(), HashSet::new(), deadline),
                );
                Ok(record.id.clone())
            }
        }
    }

    pub async fn get(&self, id: &str) -> Result<JobRecord> {
        match self {
            Store::Redis(r) => {
                let mut c = r.conn.clone();
                let h: HashMap<String, String> = c.hgetall(r.job_key(id)).await?;
                if h.is_empty() {
                    return Err(StoreError::NotFound(id.to_string()));
                }
                let done: u32 = c.scard(r.done_key(id)).await?;
                let mut rec: JobRecord =
                    serde_json::from_str(h.get("meta").map_or("", String::as_str))
                        .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                rec.state = h
                    .get("state")
                    .and_then(|s| JobState::parse(s))
                    .ok_or_else(|| StoreError::Corrupt("state".into()))?;
                rec.rows_scored = h
                    .get("rows_scored")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                rec.rows_rejected = h
                    .get("rows_rejected")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
                rec.chunks_done = done;
                rec.updated_at = h.get("updated_at").cloned().unwrap_or_default();
                rec.finished_at = h.get("finished_at").cloned().filter(|s| !s.is_empty());
                rec.error = h.get("error").cloned().filter(|s| !s.is_empty());
                rec.output = h.get("output").and_then(|o| serde_json::from_str(o).ok());
                Ok(rec)
            }
            Store::Memory(m) => {
                let mut jobs = m.jobs.lock().expect("lock");
                jobs.retain(|_, (_, _, until)| *until > Instant::now());
                jobs.get(id)
                    .map(|(r, _, _)| r.clone())
                    .ok_or_else(|| StoreError::NotFound(id.to_string()))
            }
        }
    }

    /// Records a finished chunk (once, however often it is delivered); returns the job's state.
    pub async fn complete_chunk(
        &self,
        id: &str,
        chunk: u32,
        scored: u64,
        rejected: u64,
    ) -> Result<JobState> {
        match self {
            Store::Redis(r) => {
                let mut c = r.conn.clone();
                let total = self.get(id).await?.chunks_total;
                let (done, state): (i64, String) = redis::Script::new(COMPLETE_CHUNK)
                    .key(r.job_key(id))
                    .key(r.done_key(id))
                    .arg(chunk)
                    .arg(scored)
                    .arg(rejected)
                    .arg(total)
                    .arg(now())
                    .arg(r.retention.as_secs().max(1))
                    .invoke_async(&mut c)
                    .await?;
                if done < 0 {
                    return Err(StoreError::NotFound(id.to_string()));
                }
                JobState::parse(&state).ok_or(StoreError::Corrupt(state))
            }
            Store::Memory(m) => m.update(id, |rec, done| {
                if done.insert(chunk) {
                    rec.rows_scored += scored;
                    rec.rows_rejected += rejected;
                }
                rec.chunks_done = done.len() as u32;
                rec.updated_at = now();
                if !rec.state.is_final() {
                    if rec.chunks_done >= rec.chunks_total {
                        rec.state = JobState::Succeeded;
                        rec.finished_at = Some(rec.updated_at.clone());
                    } else {
                        rec.state = JobState::Running;
                    }
                }
                rec.state
            }),
        }
    }

    /// Ends an unfinished job as `failed` or `cancelled` with a reason; returns the state it
    /// has afterwards (a job that already finished keeps its state).
    pub async fn finish(&self, id: &str, state: JobState, reason: &str) -> Result<JobState> {
        assert!(
            matches!(state, JobState::Failed | JobState::Cancelled),
            "finish() is for failed or cancelled"
        );
        match self {
            Store::Redis(r) => {
                let mut c = r.conn.clone();
                let s: String = redis::Script::new(FINISH)
                    .key(r.job_key(id))
                    .arg(state.as_str())
                    .arg(reason)
                    .arg(now())
                    .invoke_async(&mut c)
                    .await?;
                JobState::parse(&s).ok_or_else(|| StoreError::NotFound(id.to_string()))
            }
            Store::Memory(m) => m.update(id, |rec, _| {
                if !rec.state.is_final() {
                    rec.state = state;
                    rec.error = Some(reason.to_string());
                    rec.finished_at = Some(now());
                    rec.updated_at = now();
                }
                rec.state
            }),
        }
    }

    /// Moves a queued job to `running` (for jobs that are one long step, like training).
    pub async fn mark_running(&self, id: &str) -> Result<()> {
        match self {
            Store::Redis(r) => {
                let mut c = r.conn.clone();
                let _: i64 = redis::Script::new(MARK_RUNNING)
                    .key(r.job_key(id))
                    .arg(now())
                    .invoke_async(&mut c)
                    .await?;
                Ok(())
            }
            Store::Memory(m) => m.update(id, |rec, _| {
                if rec.state == JobState::Queued {
                    rec.state = JobState::Running;
                    rec.updated_at = now();
                }
            }),
        }
    }

    /// Records what a job produced (shown in its status as `output`).
    pub async fn set_output(&self, id: &str, output: &serde_json::Value) -> Result<()> {
        match self {
            Store::Redis(r) => {
                let mut c = r.conn.clone();
                let _: () = c.hset(r.job_key(id), "output", output.to_string()).await?;
                Ok(())
            }
            Store::Memory(m) => m.update(id, |rec, _| rec.output = Some(output.clone())),
        }
    }

    /// Whether the store answers (for readiness of batch submission).
    pub async fn ping(&self) -> Result<()> {
        match self {
            Store::Redis(r) => {
                let mut c = r.conn.clone();
                let _: String = redis::cmd("PING").query_async(&mut c).await?;
                Ok(())
            }
            Store::Memory(_) => Ok(()),
        }
    }

    /// Seconds until a job's record expires (`None` for none or no expiry).
    pub async fn ttl(&self, id: &str) -> Result<Option<u64>> {
        match self {
            Store::Redis(r) => {
                let mut c = r.conn.clone();
                let t: i64 = c.ttl(r.job_key(id)).await?;
                Ok((t > 0).then_some(t as u64))
            }
            Store::Memory(m) => Ok(m
                .jobs
                .lock()
                .expect("lock")
                .get(id)
                .map(|(_, _, until)| until.saturating_duration_since(Instant::now()).as_secs())),
        }
    }
}

impl RedisStore {
    fn job_key(&self, id: &str) -> String {
        format!("{}job:{id}", self.prefix)
    }

    fn done_key(&self, id: &str) -> String {
        format!("{}job:{id}:done", self.prefix)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Format, PinnedModel};

    fn record(chunks: u32) -> JobRecord {
        JobRecord::scoring(
            crate::new_job_id(),
            Format::Csv,
            100,
            chunks,
            PinnedModel {
                name: "loan-default".into(),
                version: "3".into(),
                local_uri: None,
            },
            Default::default(),
        )
    }

    async fn redis() -> Store {
        let prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
        Store::redis("redis://127.0.0.1:6379", &prefix, Duration::from_secs(3600))
            .await
            .expect("Redis on 127.0.0.1:6379 must be running (scripts/services.sh starts it)")
    }

    async fn redelivered_chunks_count_once_and_the_job_succeeds(store: Store) {
        let rec = record(3);
        let id = store.create(&rec, None).await.unwrap();
        assert_eq!(store.get(&id).await.unwrap().state, JobState::Queued);
        assert_eq!(
            store.complete_chunk(&id, 0, 40, 0).await.unwrap(),
            JobState::Running
        );
        // The same chunk again (a redelivery after a worker died): not counted twice.
        assert_eq!(
            store.complete_chunk(&id, 0, 40, 0).await.unwrap(),
            JobState::Running
        );
        store.complete_chunk(&id, 2, 19, 1).await.unwrap();
        let mid = store.get(&id).await.unwrap();
        assert_eq!(
            (mid.chunks_done, mid.rows_scored, mid.rows_rejected),
            (2, 59, 1)
        );
        assert_eq!(
            store.complete_chunk(&id, 1, 40, 0).await.unwrap(),
            JobState::Succeeded
        );
        let done = store.get(&id).await.unwrap();
        assert_eq!(
            (
                done.state,
                done.rows_scored,
                done.rows_rejected,
                done.chunks_done
            ),
            (JobState::Succeeded, 99, 1, 3)
        );
        assert!(done.finished_at.is_some());
        // A finished job cannot be failed or cancelled afterwards.
        assert_eq!(
            store
                .finish(&id, JobState::Cancelled, "late")
                .await
                .unwrap(),
            JobState::Succeeded
        );
        assert!(
            store.ttl(&id).await.unwrap().is_some_and(|t| t > 3000),
            "records expire after the retention"
        );
        assert!(matches!(
            store.get("nope").await,
            Err(StoreError::NotFound(_))
        ));
    }

    async fn idempotency_keys_return_the_first_job(store: Store) {
        let first = record(1);
        let id = store.create(&first, Some("key-1")).await.unwrap();
        let second = record(1);
        assert_eq!(store.create(&second, Some("key-1")).await.unwrap(), id);
        assert!(matches!(
            store.get(&second.id).await,
            Err(StoreError::NotFound(_))
        ));
        assert_ne!(store.create(&record(1), Some("key-2")).await.unwrap(), id);
    }

    async fn failing_and_cancelling_keep_the_reason(store: Store) {
        let id = store.create(&record(2), None).await.unwrap();
        assert_eq!(
            store
                .finish(&id, JobState::Failed, "chunk 1: storage error")
                .await
                .unwrap(),
            JobState::Failed
        );
        let r = store.get(&id).await.unwrap();
        assert_eq!(
            (r.state, r.error.as_deref()),
            (JobState::Failed, Some("chunk 1: storage error"))
        );
        // Late chunk completions do not resurrect it.
        assert_eq!(
            store.complete_chunk(&id, 0, 1, 0).await.unwrap(),
            JobState::Failed
        );
        let id = store.create(&record(2), None).await.unwrap();
        assert_eq!(
            store
                .finish(&id, JobState::Cancelled, "cancelled by the client")
                .await
                .unwrap(),
            JobState::Cancelled
        );
    }

    #[tokio::test]
    async fn redis_redelivered_chunks_count_once() {
        redelivered_chunks_count_once_and_the_job_succeeds(redis().await).await;
    }
    #[tokio::test]
    async fn memory_redelivered_chunks_count_once() {
        redelivered_chunks_count_once_and_the_job_succeeds(Store::memory(Duration::from_secs(
            3600,
        )))
        .await;
    }
    #[tokio::test]
    async fn redis_idempotency() {
        idempotency_keys_return_the_first_job(redis().await).await;
    }
    #[tokio::test]
    async fn memory_idempotency() {
        idempotency_keys_return_the_first_job(Store::memory(Duration::from_secs(3600))).await;
    }
    #[tokio::test]
    async fn redis_fail_and_cancel() {
        failing_and_cancelling_keep_the_reason(redis().await).await;
    }
    #[tokio::test]
    async fn memory_fail_and_cancel() {
        failing_and_cancelling_keep_the_reason(Store::memory(Duration::from_secs(3600))).await;
    }
    #[tokio::test]
    async fn concurrent_completions_from_many_workers_are_all_counted() {
        let store = std::sync::Arc::new(redis().await);
        let id = store.create(&record(64), None).await.unwrap();
        let tasks: Vec<_> = (0..64u32)
            .map(|chunk| {
                let (store, id) = (store.clone(), id.clone());
                tokio::spawn(async move {
                    // Every chunk delivered twice, concurrently.
                    for _ in 0..2 {
                        store.complete_chunk(&id, chunk, 10, 0).await.unwrap();
                    }
                })
            })
            .collect();
        for t in tasks {
            t.await.unwrap();
        }
        let r = store.get(&id).await.unwrap();
        assert_eq!(
            (r.state, r.chunks_done, r.rows_scored),
            (JobState::Succeeded, 64, 640)
        );
    }
}
