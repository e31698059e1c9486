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

/// An `Idempotency-Key` (already scoped to the caller) and a fingerprint of the request it came
/// with (a hash of what was asked: the same key with another request is a conflict).
#[derive(Debug, Clone, Copy)]
pub struct Idempotency<'a> {
    pub key: &'a str,
    /// No spaces (a hex digest).
    pub fingerprint: &'a str,
}

/// What [`Store::create_once`] did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Created {
    /// The job was recorded.
    New,
    /// The key was seen with the same request: that job stands, nothing was created.
    Repeat(String),
    /// The key was seen with another request (that job's id): nothing was created.
    Conflict(String),
}

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

/// Creates a job record and, when a second key is given, its idempotency key, atomically.
/// KEYS: job, [idempotency]. ARGV: id, fingerprint, ttl, meta, state, updated_at, the unix
/// time the job was recorded (`unqueued_since`, cleared once its tasks are queued).
/// Returns {'new'|'repeat'|'conflict', job id}.
const CREATE: &str = r"
if #KEYS == 2 then
  local seen = redis.call('GET', KEYS[2])
  if seen then
    local id, fp = string.match(seen, '^(%S+) (.*)$')
    if not id then return {'repeat', seen} end
    if fp ~= ARGV[2] then return {'conflict', id} end
    return {'repeat', id}
  end
  redis.call('SET', KEYS[2], ARGV[1] .. ' ' .. ARGV[2], 'EX', ARGV[3])
end
redis.call('HSET', KEYS[1], 'meta', ARGV[4], 'state', ARGV[5], 'rows_scored', '0',
  'rows_rejected', '0', 'updated_at', ARGV[6], 'unqueued_since', ARGV[7])
redis.call('EXPIRE', KEYS[1], ARGV[3])
return {'new', ARGV[1]}
";

/// One more delivery of a job's task; -1 when the job does not exist.
const COUNT_DELIVERY: &str = r"
if redis.call('EXISTS', KEYS[1]) == 0 then return -1 end
return redis.call('HINCRBY', KEYS[1], 'deliveries', 1)
";

/// Fails a job still `queued` whose tasks were never queued (`unqueued_since` older than
/// ARGV[1]). ARGV: cutoff (unix seconds), reason, now. Returns 1 when it failed the job.
const REAP_UNQUEUED: &str = r"
local since = redis.call('HGET', KEYS[1], 'unqueued_since')
if not since or tonumber(since) > tonumber(ARGV[1]) then return 0 end
if redis.call('HGET', KEYS[1], 'state') ~= 'queued' then return 0 end
redis.call('HSET', KEYS[1], 'state', 'failed', 'error', ARGV[2], 'finished_at', ARGV[3],
  'updated_at', ARGV[3])
redis.call('HDEL', KEYS[1], 'unqueued_since')
return 1
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

    /// Records a new job.
    pub async fn create(&self, record: &JobRecord) -> Result<String> {
        match self.create_inner(record, None).await? {
            Created::New => Ok(record.id.clone()),
            Created::Repeat(id) | Created::Conflict(id) => Ok(id),
        }
    }

    /// Records a new job under an idempotency key, in one step: the key and the record are
    /// written together or not at all, so a key never names a job that does not exist. A key
    /// seen before creates nothing: the answer is the first job when the request is the same,
    /// a conflict when it is not.
    pub async fn create_once(&self, record: &JobRecord, once: &Idempotency<'_>) -> Result<Created> {
        self.create_inner(record, Some(once)).await
    }

    /// What an idempotency key names now, if anything (a cheap check before the work of
    /// creating a job; [`Store::create_once`] decides).
    pub async fn idempotent(&self, once: &Idempotency<'_>) -> Result<Option<Created>> {
        let seen = match self {
            Store::Redis(r) => {
                let mut c = r.conn.clone();
                let v: Option<String> = c.get(r.idempotency_key(once.key)).await?;
                v
            }
            Store::Memory(m) => {
                let mut idem = m.idempotency.lock().expect("lock");
                idem.retain(|_, (_, until)| *until > Instant::now());
                idem.get(once.key).map(|(v, _)| v.clone())
            }
        };
        Ok(seen.map(|v| seen_as(&v, once.fingerprint)))
    }

    async fn create_inner(
        &self,
        record: &JobRecord,
        once: Option<&Idempotency<'_>>,
    ) -> Result<Created> {
        match self {
            Store::Redis(r) => {
                let mut c = r.conn.clone();
                let ttl = r.retention.as_secs().max(1);
                let meta = serde_json::to_string(record)
                    .map_err(|e| StoreError::Corrupt(e.to_string()))?;
                let create = redis::Script::new(CREATE);
                let mut script = create.prepare_invoke();
                script.key(r.job_key(&record.id));
                if let Some(once) = once {
                    script.key(r.idempotency_key(once.key));
                }
                let (what, id): (String, String) = script
                    .arg(&record.id)
                    .arg(once.map_or("", |o| o.fingerprint))
                    .arg(ttl)
                    .arg(&meta)
                    .arg(record.state.as_str())
                    .arg(&record.updated_at)
                    .arg(unix_now())
                    .invoke_async(&mut c)
                    .await?;
                Ok(match what.as_str() {
                    "new" => Created::New,
                    "conflict" => Created::Conflict(id),
                    _ => Created::Repeat(id),
                })
            }
            Store::Memory(m) => {
                let deadline = Instant::now() + m.retention;
                // Both locks, in this order everywhere: key and record appear together.
                let mut idem = m.idempotency.lock().expect("lock");
                let mut jobs = m.jobs.lock().expect("lock");
                if let Some(once) = once {
                    idem.retain(|_, (_, until)| *until > Instant::now());
                    if let Some((seen, _)) = idem.get(once.key) {
                        return Ok(seen_as(seen, once.fingerprint));
                    }
                    idem.insert(
                        once.key.to_string(),
                        (format!("{} {}", record.id, once.fingerprint), deadline),
                    );
                }
                jobs.insert(
                    record.id.clone(),
                    (record.clone(), HashSet::new(), deadline),
                );
                Ok(Created::New)
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
                rec.deliveries = h
                    .get("deliveries")
                    .and_then(|v| v.parse().ok())
                    .unwrap_or(0);
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

    /// Records that a job's tasks are on the queue. Until then the job counts as unqueued: if
    /// the API stops between recording a job and queueing its tasks, [`Store::reap_unqueued`]
    /// fails the job instead of leaving it `queued` for ever.
    pub async fn mark_queued(&self, id: &str) -> Result<()> {
        match self {
            Store::Redis(r) => {
                let mut c = r.conn.clone();
                let _: i64 = c.hdel(r.job_key(id), "unqueued_since").await?;
                Ok(())
            }
            // In memory the records die with the process that would queue their tasks.
            Store::Memory(_) => Ok(()),
        }
    }

    /// Fails the jobs recorded more than `grace` ago whose tasks were never queued (their API
    /// stopped in between), with a reason that says to submit again. Returns their ids.
    pub async fn reap_unqueued(&self, grace: Duration) -> Result<Vec<String>> {
        let Store::Redis(r) = self else {
            return Ok(Vec::new());
        };
        let mut c = r.conn.clone();
        let cutoff = unix_now().saturating_sub(grace.as_secs());
        let pattern = format!("{}job:*", r.prefix);
        let keys: Vec<String> = {
            let mut iter: redis::AsyncIter<String> = c.scan_match(&pattern).await?;
            let mut keys = Vec::new();
            while let Some(k) = futures_util::StreamExt::next(&mut iter).await {
                keys.push(k?);
            }
            keys
        };
        let reap = redis::Script::new(REAP_UNQUEUED);
        let mut reaped = Vec::new();
        for key in keys.iter().filter(|k| !k.ends_with(":done")) {
            let failed: i64 = reap
                .key(key)
                .arg(cutoff)
                .arg(UNQUEUED_REASON)
                .arg(now())
                .invoke_async(&mut c)
                .await?;
            if failed == 1 {
                reaped.push(key[r.prefix.len() + "job:".len()..].to_string());
            }
        }
        Ok(reaped)
    }

    /// Moves a queued job to `running` (for jobs that are one long step, like training).
    /// Counts one more start of a job's task and returns the count (atomic in Redis).
    pub async fn count_delivery(&self, id: &str) -> Result<u32> {
        match self {
            Store::Redis(r) => {
                let mut c = r.conn.clone();
                let n: i64 = redis::Script::new(COUNT_DELIVERY)
                    .key(r.job_key(id))
                    .invoke_async(&mut c)
                    .await?;
                u32::try_from(n).map_err(|_| StoreError::NotFound(id.to_string()))
            }
            Store::Memory(m) => m.update(id, |rec, _| {
                rec.deliveries += 1;
                rec.deliveries
            }),
        }
    }

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

    fn idempotency_key(&self, key: &str) -> String {
        format!("{}idem:{key}", self.prefix)
    }
}

/// Why a job whose tasks were never queued failed.
pub const UNQUEUED_REASON: &str = "the API stopped after recording this job and before queueing \
its tasks; nothing was scored. Submit the file again (with a new Idempotency-Key)";

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs())
}

/// What a stored idempotency value (`<job id> <fingerprint>`) says about a request with
/// `fingerprint`. Values from before fingerprints (a bare id) count as the same request.
fn seen_as(value: &str, fingerprint: &str) -> Created {
    match value.split_once(' ') {
        Some((id, fp)) if fp != fingerprint => Created::Conflict(id.to_string()),
        Some((id, _)) => Created::Repeat(id.to_string()),
        None => Created::Repeat(value.to_string()),
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
        let id = store.create(&rec).await.unwrap();
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
        let once = |fingerprint| Idempotency {
            key: "key-1",
            fingerprint,
        };
        assert_eq!(store.idempotent(&once("aa")).await.unwrap(), None);
        let first = record(1);
        assert_eq!(
            store.create_once(&first, &once("aa")).await.unwrap(),
            Created::New
        );
        // Key and record exist together.
        assert_eq!(store.get(&first.id).await.unwrap().id, first.id);
        let second = record(1);
        assert_eq!(
            store.create_once(&second, &once("aa")).await.unwrap(),
            Created::Repeat(first.id.clone())
        );
        assert_eq!(
            store.create_once(&second, &once("bb")).await.unwrap(),
            Created::Conflict(first.id.clone())
        );
        assert_eq!(
            store.idempotent(&once("aa")).await.unwrap(),
            Some(Created::Repeat(first.id.clone()))
        );
        assert_eq!(
            store.idempotent(&once("bb")).await.unwrap(),
            Some(Created::Conflict(first.id.clone()))
        );
        assert!(matches!(
            store.get(&second.id).await,
            Err(StoreError::NotFound(_))
        ));
        let other = Idempotency {
            key: "key-2",
            fingerprint: "aa",
        };
        assert_eq!(
            store.create_once(&record(1), &other).await.unwrap(),
            Created::New
        );
    }

    /// Concurrent submissions with one key: exactly one creates, every other one is told that
    /// job, and that job's record can be read at once (before, the key was set first and the
    /// record a step later, so a concurrent duplicate could be sent to a job not there yet).
    async fn concurrent_submissions_with_one_key_see_one_readable_job(store: Store) {
        let store = std::sync::Arc::new(store);
        let tasks: Vec<_> = (0..16)
            .map(|_| {
                let store = store.clone();
                tokio::spawn(async move {
                    let rec = record(1);
                    let once = Idempotency {
                        key: "same",
                        fingerprint: "ff",
                    };
                    let id = match store.create_once(&rec, &once).await.unwrap() {
                        Created::New => rec.id.clone(),
                        Created::Repeat(id) => id,
                        Created::Conflict(id) => panic!("conflict with {id}"),
                    };
                    // Read at once, as the API answers with it.
                    store.get(&id).await.unwrap().id
                })
            })
            .collect();
        let mut ids = std::collections::BTreeSet::new();
        for t in tasks {
            ids.insert(t.await.unwrap());
        }
        assert_eq!(ids.len(), 1, "{ids:?}");
    }

    async fn deliveries_are_counted_in_the_record(store: Store) {
        let id = store.create(&record(1)).await.unwrap();
        assert_eq!(store.get(&id).await.unwrap().deliveries, 0);
        assert_eq!(store.count_delivery(&id).await.unwrap(), 1);
        assert_eq!(store.count_delivery(&id).await.unwrap(), 2);
        assert_eq!(store.get(&id).await.unwrap().deliveries, 2);
        assert!(matches!(
            store.count_delivery("19700101000000-gone").await,
            Err(StoreError::NotFound(_))
        ));
    }

    async fn failing_and_cancelling_keep_the_reason(store: Store) {
        let id = store.create(&record(2)).await.unwrap();
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
        let id = store.create(&record(2)).await.unwrap();
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
    /// A job recorded but never queued (the API stopped in between) is failed with the reason
    /// once the grace period is over; queued jobs, and records from before the marker, stay.
    /// Before, such a job stayed `queued` until it expired.
    #[tokio::test]
    async fn jobs_recorded_but_never_queued_are_failed_after_the_grace_period() {
        let store = redis().await;
        let stuck = store.create(&record(2)).await.unwrap();
        let queued = store.create(&record(2)).await.unwrap();
        store.mark_queued(&queued).await.unwrap();
        // Within the grace period nothing happens.
        assert!(store
            .reap_unqueued(Duration::from_secs(3600))
            .await
            .unwrap()
            .is_empty());
        tokio::time::sleep(Duration::from_millis(1100)).await;
        let reaped = store.reap_unqueued(Duration::ZERO).await.unwrap();
        assert_eq!(reaped, vec![stuck.clone()]);
        let r = store.get(&stuck).await.unwrap();
        assert_eq!(r.state, JobState::Failed);
        assert!(r.error.unwrap().contains("Submit the file again"));
        assert_eq!(store.get(&queued).await.unwrap().state, JobState::Queued);
        // Reaping again finds nothing.
        assert!(store
            .reap_unqueued(Duration::ZERO)
            .await
            .unwrap()
            .is_empty());
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn redis_concurrent_idempotent_submissions() {
        concurrent_submissions_with_one_key_see_one_readable_job(redis().await).await;
    }
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn memory_concurrent_idempotent_submissions() {
        concurrent_submissions_with_one_key_see_one_readable_job(Store::memory(
            Duration::from_secs(3600),
        ))
        .await;
    }
    #[tokio::test]
    async fn redis_deliveries() {
        deliveries_are_counted_in_the_record(redis().await).await;
    }
    #[tokio::test]
    async fn memory_deliveries() {
        deliveries_are_counted_in_the_record(Store::memory(Duration::from_secs(3600))).await;
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
        let id = store.create(&record(64)).await.unwrap();
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
