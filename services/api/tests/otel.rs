//! Traces: an incoming `traceparent` is honoured and the request's span is exported over OTLP.
//! Its own test binary, because the tracing subscriber is global to a process.

use clap::Parser;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incoming_traceparent_is_continued_and_exported() {
    let (receiver, received) = test_support::otlp_receiver();
    let guard = telemetry::init_with("api-test", Some(&receiver));
    // A tiny model is enough here.
    let bundle = test_support::train_german_bundle(&test_support::tmp("otel-bundle"), 5, 42);
    let settings = api::Settings::try_parse_from([
        "api",
        "--port",
        "0",
        "--model-uri",
        bundle.to_str().unwrap(),
    ])
    .unwrap();
    let app = api::Application::build(settings).await.unwrap();
    let url = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    let client = reqwest::Client::new();
    for _ in 0..50 {
        if client
            .get(format!("{url}/readyz"))
            .send()
            .await
            .unwrap()
            .status()
            == 200
        {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
    let trace_id = "4bf92f3577b34da6a3ce929d0e0e4736";
    let r = client
        .get(format!("{url}/v1/model"))
        .header("traceparent", format!("00-{trace_id}-00f067aa0ba902b7-01"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    tokio::task::spawn_blocking(move || guard.flush())
        .await
        .unwrap();
    let wanted: Vec<u8> = (0..16)
        .map(|i| u8::from_str_radix(&trace_id[2 * i..2 * i + 2], 16).unwrap())
        .collect();
    let bodies = received.lock().unwrap().clone();
    assert!(!bodies.is_empty(), "nothing was exported");
    assert!(
        bodies
            .iter()
            .any(|b| b.windows(16).any(|w| w == wanted.as_slice())),
        "the exported spans do not carry the incoming trace id"
    );
    assert!(
        bodies
            .iter()
            .any(|b| b.windows(8).any(|w| w == b"api-test")),
        "service name missing"
    );
}
