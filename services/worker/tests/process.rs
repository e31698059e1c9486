//! The worker binary under SIGKILL and SIGTERM, against real Redis.

use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use apalis::prelude::*;
use jobs::{Format, JobRecord, JobState, Layout, PinnedModel, ScoreChunk, Store};

mod common;

struct Job {
    dir: std::path::PathBuf,
    prefix: String,
    queue: String,
    id: String,
    rows: u64,
    chunks: u32,
    model: PinnedModel,
}

/// A 12,000-row job in chunks of 400, queued, with a small local model.
async fn queued_job() -> Job {
    let job = recorded_job().await;
    enqueue(&job).await;
    job
}

/// The same job, split and recorded but not yet on the queue.
async fn recorded_job() -> Job {
    let dir = test_support::tmp("worker-proc");
    let bundle = common::train_bundle(&dir, 20);
    // Enough chunks (150) that one worker cannot drain the queue between two polls of the other.
    let input = common::write_input(&dir, 60_000);
    let spec = model::Bundle::load(&bundle).unwrap().spec;
    let prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
    let queue_name = format!("{prefix}score-batch");
    let store = Store::redis("redis://127.0.0.1:6379", &prefix, Duration::from_secs(3600))
        .await
        .expect("Redis on 127.0.0.1:6379");
    let layout = Layout::new(dir.join("storage"));
    let id = jobs::new_job_id();
    let split = jobs::split::split_file(&input, Format::Csv, 400, &spec, |n| {
        layout.chunk(&id, n, Format::Csv).unwrap()
    })
    .unwrap();
    let pinned = PinnedModel {
        name: "local".into(),
        version: "1".into(),
        local_uri: Some(bundle.display().to_string()),
    };
    let record = JobRecord::scoring(
        id.clone(),
        Format::Csv,
        split.rows,
        split.chunks,
        pinned.clone(),
        Default::default(),
    );
    store.create(&record).await.unwrap();
    Job {
        dir,
        prefix,
        queue: queue_name,
        id,
        rows: split.rows,
        chunks: split.chunks,
        model: pinned,
    }
}

async fn enqueue(job: &Job) {
    let mut queue = jobs::queue::queue("redis://127.0.0.1:6379", &job.queue)
        .await
        .unwrap();
    for chunk in 0..job.chunks {
        queue
            .push(ScoreChunk {
                job_id: job.id.clone(),
                chunk,
                format: Format::Csv,
                model: job.model.clone(),
                trace_context: Default::default(),
                first_row: 0,
                reasons: Default::default(),
            })
            .await
            .unwrap();
    }
}

/// A worker process on a port of its choosing (port 0), and that port, read from the line it
/// prints at start. Its stderr is drained in the background so that it never blocks.
fn spawn_worker(job: &Job) -> (Child, u16) {
    spawn_worker_with(job, &[])
}

/// [`spawn_worker`] with more environment variables.
fn spawn_worker_with(job: &Job, env: &[(&str, String)]) -> (Child, u16) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_worker"))
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("REDIS_URL", "redis://127.0.0.1:6379")
        .env("JOB_QUEUE", &job.queue)
        .env("JOB_KEY_PREFIX", &job.prefix)
        .env("JOBS_ROOT", job.dir.join("storage"))
        .env("WORKER_PORT", "0")
        .env("WORKER_CONCURRENCY", "1")
        .env("WORKER_HEARTBEAT_SECONDS", "1")
        .env("WORKER_SHUTDOWN_TIMEOUT", "20")
        .env("MODEL_CACHE_DIR", job.dir.join("models"))
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        use std::io::BufRead;
        for line in std::io::BufReader::new(stderr).lines() {
            let Ok(line) = line else { return };
            if let Some(port) = line.strip_prefix("worker: health and metrics on port ") {
                let _ = tx.send(port.trim().parse::<u16>().unwrap());
            }
        }
    });
    let port = rx
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("the worker announces its port");
    (child, port)
}

async fn record(job: &Job) -> JobRecord {
    Store::redis(
        "redis://127.0.0.1:6379",
        &job.prefix,
        Duration::from_secs(3600),
    )
    .await
    .unwrap()
    .get(&job.id)
    .await
    .unwrap()
}

async fn wait_for(job: &Job, what: impl Fn(&JobRecord) -> bool, secs: u64) -> JobRecord {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let r = record(job).await;
        if what(&r) || Instant::now() > deadline {
            return r;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Every row of the input appears exactly once across the result parts.
fn assert_every_row_once(job: &Job) {
    let layout = Layout::new(job.dir.join("storage"));
    let mut ids = Vec::new();
    for chunk in 0..job.chunks {
        let mut r = csv::Reader::from_path(layout.result(&job.id, chunk).unwrap()).unwrap();
        ids.extend(r.records().map(|rec| rec.unwrap()[0].to_string()));
    }
    assert_eq!(ids.len() as u64, job.rows);
    assert_eq!(
        ids,
        (0..job.rows)
            .map(|i| format!("APP-{i:06}"))
            .collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_killed_mid_job_loses_nothing_and_counts_nothing_twice() {
    let job = queued_job().await;
    let (mut first, _) = spawn_worker(&job);
    let r = wait_for(&job, |r| r.chunks_done >= 3, 60).await;
    assert!(r.chunks_done >= 3, "the first worker made progress: {r:?}");
    first.kill().unwrap(); // SIGKILL: no chance to clean up
    first.wait().unwrap();
    let mid = record(&job).await;
    assert!(
        mid.chunks_done < job.chunks,
        "killed before the end ({} of {})",
        mid.chunks_done,
        job.chunks
    );
    let (mut second, _) = spawn_worker(&job);
    let done = wait_for(&job, |r| r.state.is_final(), 120).await;
    let _ = second.kill();
    let _ = second.wait();
    assert_eq!(done.state, JobState::Succeeded, "{done:?}");
    assert_eq!(
        (done.rows_scored, done.chunks_done),
        (job.rows, job.chunks),
        "counted once each"
    );
    assert_every_row_once(&job);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_finishes_the_chunk_in_hand_and_exits() {
    let job = queued_job().await;
    let (mut w, _) = spawn_worker(&job);
    let r = wait_for(&job, |r| r.chunks_done >= 1, 60).await;
    assert!(r.chunks_done >= 1);
    let status = Command::new("kill")
        .args(["-TERM", &w.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = Instant::now() + Duration::from_secs(25);
    let code = loop {
        if let Some(c) = w.try_wait().unwrap() {
            break c;
        }
        assert!(
            Instant::now() < deadline,
            "the worker did not exit within its grace period"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(code.success(), "exit status {code}");
    // Nothing half-written: every finished chunk has its complete result part.
    let stopped = record(&job).await;
    assert!(stopped.chunks_done < job.chunks, "stopped taking chunks");
    let layout = Layout::new(job.dir.join("storage"));
    let parts = (0..job.chunks)
        .filter(|c| layout.result(&job.id, *c).unwrap().exists())
        .count() as u32;
    assert_eq!(
        parts, stopped.chunks_done,
        "a result part exists exactly for each chunk recorded done"
    );
    // Another worker finishes the job.
    let (mut next, _) = spawn_worker(&job);
    let done = wait_for(&job, |r| r.state.is_final(), 120).await;
    let _ = next.kill();
    let _ = next.wait();
    assert_eq!(done.state, JobState::Succeeded, "{done:?}");
    assert_every_row_once(&job);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_workers_share_one_job_and_report_health_and_metrics() {
    // Queued only once both are ready, so that neither can take every chunk before the other
    // starts.
    let job = recorded_job().await;
    let (mut workers, ports): (Vec<Child>, Vec<u16>) = (0..2).map(|_| spawn_worker(&job)).unzip();
    let client = reqwest::Client::new();
    for p in &ports {
        let mut ok = false;
        for _ in 0..100 {
            if client
                .get(format!("http://127.0.0.1:{p}/readyz"))
                .send()
                .await
                .is_ok_and(|r| r.status() == 200)
            {
                ok = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        assert!(ok, "worker on {p} became ready");
    }
    enqueue(&job).await;
    let done = wait_for(&job, |r| r.state.is_final(), 120).await;
    assert_eq!(done.state, JobState::Succeeded);
    assert_every_row_once(&job);
    // Both took a share of the chunks, and say so in their metrics, with the drift of the rows
    // they scored (the last DRIFT_WINDOW, 10,000 by default).
    let mut shares = Vec::new();
    let mut windows = Vec::new();
    for p in &ports {
        let text = client
            .get(format!("http://127.0.0.1:{p}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(text.contains("batch_queue_depth"), "{text}");
        let n: u64 = text
            .lines()
            .find(|l| l.starts_with("batch_chunks_total{outcome=\"scored\"}"))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok())
            .unwrap_or(0);
        shares.push(n);
        let window: Option<u64> = text
            .lines()
            .find(|l| l.starts_with("drift_window_decisions "))
            .and_then(|l| l.split_whitespace().last())
            .and_then(|v| v.parse().ok());
        windows.push(window);
        assert!(
            text.contains("feature_psi{feature=\"credit_amount\"}"),
            "{text}"
        );
    }
    for w in &mut workers {
        let _ = w.kill();
        let _ = w.wait();
    }
    assert_eq!(
        shares.iter().sum::<u64>(),
        u64::from(job.chunks),
        "{shares:?}"
    );
    assert!(
        shares.iter().all(|n| *n > 0),
        "both workers scored chunks: {shares:?}"
    );
    let rows_per_chunk = job.rows / u64::from(job.chunks);
    let want: Vec<Option<u64>> = shares
        .iter()
        .map(|n| Some((n * rows_per_chunk).min(10_000)))
        .collect();
    assert_eq!(windows, want, "rows in each worker's drift window");
}

/// The poison training task of issue 18: a worker killed while it trains (as the kernel kills
/// one out of memory) has the task delivered again without apalis counting an attempt. Killed
/// three times, the task is not started a fourth time: its job fails with the reason, and a
/// batch job queued after it is scored by the same worker. Before, every worker that took the
/// task died, and batch scoring stalled with them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_training_task_that_kills_its_workers_fails_and_batch_jobs_go_on() {
    let job = recorded_job().await;
    let registry = common::spawn_registry(&job.dir).await;
    let store = Store::redis(
        "redis://127.0.0.1:6379",
        &job.prefix,
        Duration::from_secs(3600),
    )
    .await
    .unwrap();
    // A training job long enough (30,000 rows, 5,000 trees) that it is always killed mid-way.
    let train_id = jobs::new_job_id();
    let job_dir = Layout::new(job.dir.join("storage"))
        .job_dir(&train_id)
        .unwrap();
    std::fs::create_dir_all(&job_dir).unwrap();
    let german =
        std::fs::read_to_string(format!("{}/data/german_credit.csv", test_support::REPO)).unwrap();
    let (header, rows) = german.split_once('\n').unwrap();
    let mut data = format!("{header}\n");
    for _ in 0..30 {
        data.push_str(rows);
    }
    std::fs::write(job_dir.join("input.csv"), data).unwrap();
    std::fs::copy(
        format!("{}/data/german_credit.spec.json", test_support::REPO),
        job_dir.join("spec.json"),
    )
    .unwrap();
    let settings = jobs::TrainSettings {
        register_as: "loan-default".into(),
        experiment: "poison".into(),
        trees: 5000,
        max_depth: 6,
        learning_rate: 0.01,
        seed: 1,
        test_fraction: 0.2,
        smote: false,
        engine: "hist".into(),
    };
    let record = JobRecord::training(
        train_id.clone(),
        "loan-default".into(),
        serde_json::json!({}),
    );
    store.create(&record).await.unwrap();
    let train_queue = format!("{}train", job.prefix);
    let mut q = jobs::queue::queue("redis://127.0.0.1:6379", &train_queue)
        .await
        .unwrap();
    q.push(jobs::TrainModel {
        job_id: train_id.clone(),
        dataset: format!("jobs/{train_id}/input.csv"),
        spec: format!("jobs/{train_id}/spec.json"),
        settings,
        trace_context: Default::default(),
    })
    .await
    .unwrap();
    let env = [
        ("TRAIN_QUEUE", train_queue.clone()),
        ("MLFLOW_TRACKING_URI", registry.clone()),
    ];
    let training = |store: Store, id: String| async move { store.get(&id).await.unwrap() };
    for start in 1..=jobs::MAX_TRAINING_DELIVERIES {
        let (mut w, _) = spawn_worker_with(&job, &env);
        let deadline = Instant::now() + Duration::from_secs(90);
        loop {
            let r = training(store.clone(), train_id.clone()).await;
            if r.deliveries >= start && r.state == JobState::Running {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "start {start} never began training: {r:?}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        w.kill().unwrap(); // SIGKILL, as the OOM killer does
        w.wait().unwrap();
    }
    // The next worker takes the task a fourth time and fails its job instead of training.
    let (mut w, _) = spawn_worker_with(&job, &env);
    let deadline = Instant::now() + Duration::from_secs(90);
    let failed = loop {
        let r = training(store.clone(), train_id.clone()).await;
        if r.state.is_final() {
            break r;
        }
        assert!(Instant::now() < deadline, "never failed: {r:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(failed.state, JobState::Failed, "{failed:?}");
    assert!(
        failed
            .error
            .as_deref()
            .unwrap_or("")
            .contains("started 3 times"),
        "{failed:?}"
    );
    // A batch job queued after it is scored by the same worker.
    enqueue(&job).await;
    let done = wait_for(&job, |r| r.state.is_final(), 120).await;
    let _ = w.kill();
    let _ = w.wait();
    assert_eq!(done.state, JobState::Succeeded, "{done:?}");
    assert_every_row_once(&job);
}

/// Finished tasks leave Redis once they are older than the retention: apalis keeps each task's
/// payload, metadata and id after it ran, and Redis runs `noeviction` with a memory cap, so
/// before the worker swept them they stayed until Redis was full.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn finished_tasks_are_removed_from_redis_after_the_retention() {
    let job = queued_job().await;
    let env = [
        ("JOB_RETENTION_SECONDS", "1".to_string()),
        ("WORKER_VACUUM_SECONDS", "1".to_string()),
    ];
    let (mut w, _) = spawn_worker_with(&job, &env);
    let done = wait_for(&job, |r| r.state.is_final(), 120).await;
    assert_eq!(done.state, JobState::Succeeded, "{done:?}");
    let storage = jobs::queue::queue::<ScoreChunk>("redis://127.0.0.1:6379", &job.queue)
        .await
        .unwrap();
    let config = storage.get_config().clone();
    let mut redis = redis::Client::open("redis://127.0.0.1:6379")
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let mut left = (0, 0, 0);
    let deadline = Instant::now() + Duration::from_secs(20);
    while Instant::now() < deadline {
        let data: usize = redis::cmd("HLEN")
            .arg(config.job_data_hash())
            .query_async(&mut redis)
            .await
            .unwrap();
        let done_ids: usize = redis::cmd("SCARD")
            .arg(config.done_jobs_set())
            .query_async(&mut redis)
            .await
            .unwrap();
        let meta: Vec<String> = redis::cmd("KEYS")
            .arg(format!("{}:*", config.job_meta_hash()))
            .query_async(&mut redis)
            .await
            .unwrap();
        left = (data, done_ids, meta.len());
        if left == (0, 0, 0) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let _ = w.kill();
    let _ = w.wait();
    assert_eq!(
        left,
        (0, 0, 0),
        "task data, done ids and task metadata left after the retention"
    );
}

/// A registry that accepts connections and never answers: a chunk pinned to a registered
/// version fails within REGISTRY_TIMEOUT_SECONDS per try, so its job fails in seconds. Before,
/// the worker ignored the setting and each try waited the client's fixed 30 s.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_stalled_registry_fails_a_job_within_the_registry_timeout() {
    let registry = test_support::stalled_server();
    let mut job = recorded_job().await;
    job.model = PinnedModel {
        name: "loan-default".into(),
        version: "1".into(),
        local_uri: None,
    };
    let env = [
        ("MLFLOW_TRACKING_URI", registry),
        ("REGISTRY_TIMEOUT_SECONDS", "1".to_string()),
    ];
    let (mut w, _) = spawn_worker_with(&job, &env);
    let started = Instant::now();
    enqueue(&job).await;
    let done = wait_for(&job, |r| r.state.is_final(), 60).await;
    let took = started.elapsed();
    let _ = w.kill();
    let _ = w.wait();
    assert_eq!(done.state, JobState::Failed, "{done:?}");
    // Four tries of 1 s plus 3.5 s of backoff; 30 s per try before.
    assert!(took < Duration::from_secs(25), "took {took:?}");
}

/// The members of a queue's workers set, with their last beat (seconds since the epoch).
async fn workers_of(queue: &str) -> Vec<(String, u64)> {
    let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let mut members: Vec<(String, u64)> = redis::cmd("ZRANGE")
        .arg(format!("{queue}:workers"))
        .arg(0)
        .arg(-1)
        .arg("WITHSCORES")
        .query_async(&mut conn)
        .await
        .unwrap();
    members.sort();
    members
}

/// A worker that its peers took for dead (a peer's heartbeat removes it from the queue's
/// workers set and re-enqueues its chunks, as after a pause longer than three beats) fails its
/// own next beat ("worker not registered"). Its chunk consumer stopped for good then, while the
/// training consumer kept the process looking healthy: no chunk was taken again. It now
/// reconnects under a new name and goes on.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_taken_for_dead_by_its_peers_comes_back_and_takes_chunks() {
    let job = recorded_job().await;
    let (mut w, _) = spawn_worker(&job);
    let deadline = Instant::now() + Duration::from_secs(30);
    let first = loop {
        let members = workers_of(&job.queue).await;
        if !members.is_empty() || Instant::now() > deadline {
            break members;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(first.len(), 1, "the worker registered: {first:?}");
    let client = redis::Client::open("redis://127.0.0.1:6379").unwrap();
    let mut conn = client.get_multiplexed_async_connection().await.unwrap();
    let _: i64 = redis::cmd("ZREM")
        .arg(format!("{}:workers", job.queue))
        .arg(&first[0].0)
        .query_async(&mut conn)
        .await
        .unwrap();
    // Its next beat (within a second) finds it unregistered.
    tokio::time::sleep(Duration::from_secs(2)).await;
    enqueue(&job).await;
    let done = wait_for(&job, |r| r.state.is_final(), 60).await;
    let after = workers_of(&job.queue).await;
    let _ = w.kill();
    let _ = w.wait();
    assert_eq!(done.state, JobState::Succeeded, "{done:?}");
    assert_every_row_once(&job);
    assert_eq!(after.len(), 1, "{after:?}");
    assert_ne!(after[0].0, first[0].0, "registered again under a new name");
}
