//! A batch job's worker spans join the submitting request's trace (trace context in the job).
//! Its own test binary: the tracing subscriber is global to a process.

mod common;

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use apalis::prelude::*;
use clap::Parser;
use jobs::{Layout, Store};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_spans_continue_the_submitters_trace() {
    let received: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let sink = received.clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let otlp = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let server = HttpServer::new(move || {
        let sink = sink.clone();
        App::new().route(
            "/v1/traces",
            web::post().to(move |b: web::Bytes| {
                sink.lock().unwrap().push(b.to_vec());
                async { HttpResponse::Ok().finish() }
            }),
        )
    })
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    let guard = telemetry::init_with("batch-trace-test", Some(&otlp));

    let dir = common::tmp("trace");
    let bundle = common::train_bundle(&dir, 5);
    let input = common::write_input(&dir, 50);
    let prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
    let queue_name = format!("{prefix}score-batch");
    let storage = dir.join("storage");
    let settings = api::Settings::try_parse_from([
        "api",
        "--port",
        "0",
        "--model-uri",
        bundle.to_str().unwrap(),
        "--redis-url",
        "redis://127.0.0.1:6379",
        "--artifact-root",
        storage.to_str().unwrap(),
        "--job-queue",
        &queue_name,
        "--job-key-prefix",
        &prefix,
    ])
    .unwrap();
    let app = api::Application::build(settings).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    let store = Store::redis("redis://127.0.0.1:6379", &prefix, Duration::from_secs(3600))
        .await
        .expect("Redis");
    let state = Arc::new(worker::WorkerState::new(
        store,
        Layout::new(&storage),
        None,
        dir.join("models"),
    ));
    let queue = worker::queue("redis://127.0.0.1:6379", &queue_name)
        .await
        .unwrap();
    let (stop_tx, stop_rx) = tokio::sync::oneshot::channel::<()>();
    let w = tokio::spawn(
        WorkerBuilder::new("trace-test")
            .backend(queue)
            .data(state)
            .build(worker::handle)
            .run_until(async move { stop_rx.await.map_err(std::io::Error::other) }),
    );

    let trace_id = "0af7651916cd43dd8448eb211c80319c";
    let client = reqwest::Client::new();
    let body = std::fs::read(&input).unwrap();
    let mut location = String::new();
    for _ in 0..100 {
        let r = client
            .post(format!("{base}/v1/batch-jobs"))
            .header("content-type", "text/csv")
            .header("traceparent", format!("00-{trace_id}-b7ad6b7169203331-01"))
            .body(body.clone())
            .send()
            .await
            .unwrap();
        if r.status() == 202 {
            location = r
                .headers()
                .get("location")
                .unwrap()
                .to_str()
                .unwrap()
                .to_string();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(!location.is_empty(), "the job was accepted");
    for _ in 0..300 {
        let s: serde_json::Value = client
            .get(format!("{base}{location}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if s["state"] == "succeeded" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let _ = stop_tx.send(());
    let _ = w.await;
    tokio::task::spawn_blocking(move || guard.flush())
        .await
        .unwrap();
    let wanted: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&trace_id[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let bodies = received.lock().unwrap().clone();
    assert!(
        bodies
            .iter()
            .any(|b| b.windows(11).any(|w| w == b"score_chunk")),
        "the worker's span was exported"
    );
    // The API's request span carries the trace id once; only a propagated context puts it on the
    // worker's span as well (otherwise that span starts a trace of its own).
    let occurrences: usize = bodies
        .iter()
        .map(|b| b.windows(16).filter(|w| *w == wanted.as_slice()).count())
        .sum();
    assert!(occurrences >= 2, "the trace id appears on {occurrences} span(s); the worker's span is not in the submitter's trace");
}
