//! Shared by the worker's test binaries: a small model trained on the German data and a CSV of
//! German-credit applications with ids (`APP-000000`, …).

#![allow(dead_code, reason = "each test binary uses a different subset")]

use std::path::{Path, PathBuf};

/// Trains `trees` trees on the German data and saves the bundle in `dir/bundle`.
pub fn train_bundle(dir: &Path, trees: usize) -> PathBuf {
    test_support::train_german_bundle(&dir.join("bundle"), trees, 42)
}

/// Writes `rows` applications (the German rows, repeated) with an `application_id` column.
pub fn write_input(dir: &Path, rows: usize) -> PathBuf {
    let (headers, records) = test_support::german_csv();
    let input = dir.join("input.csv");
    let mut w = csv::Writer::from_path(&input).unwrap();
    let mut h = vec!["application_id".to_string()];
    h.extend(headers.iter().map(String::from));
    w.write_record(&h).unwrap();
    for i in 0..rows {
        let mut row = vec![format!("APP-{i:06}")];
        row.extend(records[i % records.len()].iter().map(String::from));
        w.write_record(&row).unwrap();
    }
    w.flush().unwrap();
    input
}

/// The ids `APP-000000` … for `n` rows.
pub fn ids(n: u64) -> Vec<String> {
    (0..n).map(|i| format!("APP-{i:06}")).collect()
}

/// The API (serving `bundle`) and one in-process worker on a private Redis queue and key prefix.
pub struct Running {
    pub base: String,
    /// The private Redis key prefix of this stack's jobs.
    pub prefix: String,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    worker: tokio::task::JoinHandle<Result<(), apalis::prelude::WorkerError>>,
}

/// Starts the stack; `extra` are further API flags (e.g. `--batch-chunk-rows 300`).
pub async fn spawn_stack(dir: &Path, bundle: &Path, extra: &[&str]) -> Running {
    use apalis::prelude::*;
    use clap::Parser;
    let prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
    let queue_name = format!("{prefix}score-batch");
    let storage = dir.join("storage");
    let args = [
        "api",
        "--port",
        "0",
        "--model-uri",
        bundle.to_str().unwrap(),
        "--redis-url",
        "redis://127.0.0.1:6379",
        "--jobs-root",
        storage.to_str().unwrap(),
        "--job-queue",
        &queue_name,
        "--job-key-prefix",
        &prefix,
    ];
    let settings = api::Settings::try_parse_from(args.iter().chain(extra)).unwrap();
    let app = api::Application::build(settings).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    let store = jobs::Store::redis(
        "redis://127.0.0.1:6379",
        &prefix,
        std::time::Duration::from_secs(3600),
    )
    .await
    .expect("Redis on 127.0.0.1:6379 must be running (scripts/services.sh starts it)");
    let state = std::sync::Arc::new(job_handlers::WorkerState::new(
        store,
        jobs::Layout::new(&storage),
        None,
        dir.join("models"),
    ));
    let queue = jobs::queue::queue("redis://127.0.0.1:6379", &queue_name)
        .await
        .unwrap();
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let worker = tokio::spawn(
        WorkerBuilder::new(format!("test-{}", uuid::Uuid::new_v4().simple()))
            .backend(queue)
            .concurrency(2)
            .data(state)
            .build(job_handlers::chunk::handle)
            .run_until(async move { stopped.await.map_err(std::io::Error::other) }),
    );
    Running {
        base,
        prefix,
        stop: Some(stop),
        worker,
    }
}

impl Running {
    pub async fn stop(mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = self.worker.await;
    }
}

/// Polls a job's status URL until the job is no longer queued or running (at most 60 s); returns
/// the last status.
pub async fn wait_for_job(client: &reqwest::Client, url: &str) -> serde_json::Value {
    let mut status = serde_json::Value::Null;
    for _ in 0..600 {
        status = client.get(url).send().await.unwrap().json().await.unwrap();
        if status["state"] != "queued" && status["state"] != "running" {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    status
}

/// A real registry (SQLite, artifacts on disk) under `dir/registry`; returns its URL.
pub async fn spawn_registry(dir: &Path) -> String {
    use clap::Parser;
    let settings = model_registry::Settings::try_parse_from([
        "model-registry",
        "--port",
        "0",
        "--data-dir",
        dir.join("registry").to_str().unwrap(),
        "--backend-store-uri",
        &model_registry::store::sqlite_url(&dir.join("registry/r.db")),
        "--artifacts-destination",
        dir.join("registry/artifacts").to_str().unwrap(),
    ])
    .unwrap();
    std::fs::create_dir_all(dir.join("registry")).unwrap();
    let app = model_registry::Application::build(settings).await.unwrap();
    let url = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    url
}
