//! Traces: an incoming `traceparent` is honoured and the request's span is exported over OTLP.
//! Its own test binary, because the tracing subscriber is global to a process.

use std::sync::{Arc, Mutex};

use actix_web::{web, App, HttpResponse, HttpServer};
use clap::Parser;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn incoming_traceparent_is_continued_and_exported() {
    // A minimal OTLP/HTTP receiver that keeps what it is sent.
    let received: Arc<Mutex<Vec<Vec<u8>>>> = Arc::default();
    let store = received.clone();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let receiver = format!("http://127.0.0.1:{}", listener.local_addr().unwrap().port());
    let server = HttpServer::new(move || {
        let store = store.clone();
        App::new().route(
            "/v1/traces",
            web::post().to(move |body: web::Bytes| {
                store.lock().unwrap().push(body.to_vec());
                async { HttpResponse::Ok().finish() }
            }),
        )
    })
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);

    let guard = telemetry::init_with("api-test", Some(&receiver));
    let bundle =
        std::env::temp_dir().join(format!("otel-bundle-{}", uuid::Uuid::new_v4().simple()));
    {
        // A tiny model is enough here.
        let repo = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
        let spec = features::Spec::from_json(
            &std::fs::read_to_string(format!("{repo}/data/german_credit.spec.json")).unwrap(),
        )
        .unwrap();
        let mut rdr = csv::Reader::from_path(format!("{repo}/data/german_credit.csv")).unwrap();
        let headers = rdr.headers().unwrap().clone();
        let records: Vec<csv::StringRecord> = rdr.records().map(Result::unwrap).collect();
        let cols: Vec<usize> = spec
            .features
            .iter()
            .map(|f| headers.iter().position(|h| h == f.name).unwrap())
            .collect();
        let t = headers.iter().position(|h| h == "creditability").unwrap();
        let raws: Vec<Vec<features::Raw>> = records
            .iter()
            .map(|r| {
                cols.iter()
                    .map(|&c| features::Raw::from_cell(&r[c]))
                    .collect()
            })
            .collect();
        let y: Vec<bool> = records.iter().map(|r| &r[t] == "bad").collect();
        let cfg = model::pipeline::TrainConfig {
            booster: model::train::TrainParams {
                trees: 5,
                ..Default::default()
            },
            ..Default::default()
        };
        let fitted = model::pipeline::fit(
            &spec,
            &raws,
            &y,
            &cfg,
            model::pipeline::provenance_now(),
            &mut |_| {},
        )
        .unwrap();
        fitted.bundle.save(&bundle).unwrap();
    }
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
