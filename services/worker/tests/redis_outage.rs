//! Redis goes away and comes back (a private redis-server on its own port, not the shared one):
//! single scoring never fails, batch calls answer 503 with a clear message meanwhile, and the
//! API and a worker process recover by themselves.

mod common;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use clap::Parser;

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Redis(Child);

impl Redis {
    fn start(port: u16) -> Redis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server must be installed (scripts/services.sh needs it too)");
        for _ in 0..100 {
            if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
                break;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Redis(child)
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

async fn predict_ok(client: &reqwest::Client, base: &str, app: &serde_json::Value) {
    let r = client
        .post(format!("{base}/v1/predict"))
        .json(app)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "single scoring must not depend on Redis");
}

async fn submit(client: &reqwest::Client, base: &str, body: &[u8]) -> reqwest::Response {
    client
        .post(format!("{base}/v1/batch-jobs"))
        .header("content-type", "text/csv")
        .body(body.to_vec())
        .send()
        .await
        .unwrap()
}

/// Submits until accepted (checking single scoring each time); returns the job's location.
async fn submit_when_back(
    client: &reqwest::Client,
    base: &str,
    body: &[u8],
    app: &serde_json::Value,
) -> String {
    for _ in 0..300 {
        predict_ok(client, base, app).await;
        let r = submit(client, base, body).await;
        if r.status() == 202 {
            return r.headers()["location"].to_str().unwrap().to_string();
        }
        assert_eq!(r.status(), 503);
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("batch submission did not recover within 30 s");
}

async fn wait_succeeded(client: &reqwest::Client, url: &str) -> serde_json::Value {
    let mut status = serde_json::Value::Null;
    for _ in 0..600 {
        let r = client.get(url).send().await.unwrap();
        if r.status() == 200 {
            status = r.json().await.unwrap();
            if status["state"] == "succeeded" || status["state"] == "failed" {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    status
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_outages_leave_single_scoring_alone_and_batch_recovers() {
    let dir = test_support::tmp("redis-outage");
    let bundle = common::train_bundle(&dir, 5);
    let input = common::write_input(&dir, 50);
    let body = std::fs::read(&input).unwrap();
    let app = {
        let mut rdr = csv::Reader::from_path(&input).unwrap();
        let h = rdr.headers().unwrap().clone();
        let rec = rdr.records().next().unwrap().unwrap();
        let spec = model::Bundle::load(&bundle).unwrap().spec;
        let mut o = serde_json::Map::new();
        for f in &spec.features {
            let v = &rec[h.iter().position(|x| x == f.name).unwrap()];
            o.insert(
                f.name.clone(),
                match f.kind {
                    features::FeatureKind::Numeric => serde_json::json!(v.parse::<f64>().unwrap()),
                    _ => serde_json::json!(v),
                },
            );
        }
        serde_json::Value::Object(o)
    };
    let port = free_port();
    let url = format!("redis://127.0.0.1:{port}");
    let storage = dir.join("storage");
    let settings = api::Settings::try_parse_from([
        "api",
        "--port",
        "0",
        "--model-uri",
        bundle.to_str().unwrap(),
        "--redis-url",
        &url,
        "--jobs-root",
        storage.to_str().unwrap(),
    ])
    .unwrap();
    let api_app = api::Application::build(settings).await.unwrap();
    let base = format!("http://127.0.0.1:{}", api_app.port());
    tokio::spawn(api_app.run_until_stopped());
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap();
    for _ in 0..100 {
        if client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let mut worker = Command::new(env!("CARGO_BIN_EXE_worker"))
        .env("REDIS_URL", &url)
        .env("JOBS_ROOT", &storage)
        // Port 0: any free port (the health server is not used here).
        .env("WORKER_PORT", "0")
        .env("WORKER_HEARTBEAT_SECONDS", "1")
        .env("MODEL_CACHE_DIR", dir.join("models"))
        .env("OTEL_EXPORTER_OTLP_ENDPOINT", "")
        .stdout(Stdio::null())
        .spawn()
        .unwrap();

    // 1. Redis not there yet: 503 with a reason, single scoring fine.
    predict_ok(&client, &base, &app).await;
    let r = submit(&client, &base, &body).await;
    assert_eq!(r.status(), 503);
    let text = r.text().await.unwrap();
    assert!(text.contains("Redis cannot be reached"), "{text}");

    // 2. Redis comes up: a job goes through the worker.
    let redis = Redis::start(port);
    let location = submit_when_back(&client, &base, &body, &app).await;
    let status = wait_succeeded(&client, &format!("{base}{location}")).await;
    assert_eq!(status["rows_scored"], 50, "{status}");

    // 3. Redis goes away: batch calls are 503, single scoring is not affected.
    drop(redis);
    for _ in 0..20 {
        predict_ok(&client, &base, &app).await;
        let r = submit(&client, &base, &body).await;
        assert_eq!(r.status(), 503);
        assert!(r.text().await.unwrap().contains("unavailable"));
    }
    let r = client
        .get(format!("{base}{location}"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 503);

    // 4. Redis returns (empty): the API and the same worker process pick up again by themselves.
    let _redis = Redis::start(port);
    let location = submit_when_back(&client, &base, &body, &app).await;
    let status = wait_succeeded(&client, &format!("{base}{location}")).await;
    assert_eq!(
        (status["state"].as_str(), status["rows_scored"].as_u64()),
        (Some("succeeded"), Some(50)),
        "{status}"
    );
    assert!(
        worker.try_wait().unwrap().is_none(),
        "the worker process stays up through the outage"
    );
    let _ = worker.kill();
    let _ = worker.wait();
}
