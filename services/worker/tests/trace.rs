//! A batch job's worker spans join the submitting request's trace (trace context in the job).
//! Its own test binary: the tracing subscriber is global to a process.

mod common;

use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn worker_spans_continue_the_submitters_trace() {
    let (otlp, received) = test_support::otlp_receiver();
    let guard = telemetry::init_with("batch-trace-test", Some(&otlp));

    let dir = test_support::tmp("trace");
    let bundle = common::train_bundle(&dir, 5);
    let input = common::write_input(&dir, 50);
    let stack = common::spawn_stack(&dir, &bundle, &[]).await;
    let base = stack.base.clone();

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
    stack.stop().await;
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
