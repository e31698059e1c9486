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
    store.create(&record, None).await.unwrap();
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
    let mut child = Command::new(env!("CARGO_BIN_EXE_worker"))
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
    // Both took a share of the chunks, and say so in their metrics.
    let mut shares = Vec::new();
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
}
