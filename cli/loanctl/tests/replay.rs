//! `loanctl replay` against what the platform really recorded: the API (in process, serving the
//! registry's champion, auditing to PostgreSQL) makes 2,000 single decisions and runs a batch
//! job; replay finds every decision identical, then reports the one stored value changed.

mod common;

use std::time::Duration;

use assert_cmd::Command;
use clap::Parser;
use serde_json::Value;

fn repo() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// German-credit rows as JSON applications (the model's features only).
fn applications() -> Vec<Value> {
    let spec = test_support::german_spec();
    let (headers, records) = test_support::german_csv();
    records
        .iter()
        .map(|r| {
            let mut obj = serde_json::Map::new();
            for f in &spec.features {
                let c = &r[headers.iter().position(|h| h == f.name).unwrap()];
                let v = match f.kind {
                    features::FeatureKind::Numeric => serde_json::json!(c.parse::<f64>().unwrap()),
                    _ => serde_json::json!(c),
                };
                obj.insert(f.name.clone(), v);
            }
            Value::Object(obj)
        })
        .collect()
}

fn replay(audit_url: &str, registry: &str) -> (bool, Value) {
    let out = Command::cargo_bin("loanctl")
        .unwrap()
        .args([
            "replay",
            "--audit-url",
            audit_url,
            "--registry",
            registry,
            "--json",
        ])
        .output()
        .unwrap();
    let summary: Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "replay printed no JSON ({e}): {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.success(), summary)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replay_finds_every_recorded_decision_identical_and_reports_a_changed_one() {
    let dir = tempfile::tempdir().unwrap();
    let registry = common::registry(dir.path()).await;
    common::train(&registry, &dir.path().join("trained"), 30, Some("champion")).await;
    let audit_url = test_support::fresh_postgres("replay").await;
    let settings = api::Settings::try_parse_from([
        "api",
        "--port",
        "0",
        "--tracking-uri",
        &registry,
        "--audit-url",
        &audit_url,
        "--jobs-root",
        dir.path().join("jobs").to_str().unwrap(),
        "--model-cache-dir",
        dir.path().join("cache").to_str().unwrap(),
    ])
    .unwrap();
    let app = api::Application::build(settings).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    let http = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..200 {
        if http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(ready, "the API never served the champion");

    // 2,000 single decisions, with and without reasons, 8 at a time.
    let apps = std::sync::Arc::new(applications());
    let mut clients = Vec::new();
    for c in 0..8usize {
        let (http, base, apps) = (http.clone(), base.clone(), apps.clone());
        clients.push(tokio::spawn(async move {
            for i in (c..2_000).step_by(8) {
                let explain = if i % 3 == 0 { "false" } else { "true" };
                let r = http
                    .post(format!("{base}/v1/predict?explain={explain}"))
                    .json(&apps[i % apps.len()])
                    .send()
                    .await
                    .unwrap();
                assert_eq!(r.status(), 200);
            }
        }));
    }
    for c in clients {
        c.await.unwrap();
    }
    // And a batch job over the whole file, reasons for adverse decisions only.
    let job: Value = http
        .post(format!("{base}/v1/batch-jobs?reasons=adverse"))
        .header("content-type", "text/csv")
        .body(std::fs::read(repo().join("data/german_credit.csv")).unwrap())
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let id = job["id"].as_str().expect("a job id").to_string();
    let mut state = Value::Null;
    for _ in 0..600 {
        let v: Value = http
            .get(format!("{base}/v1/batch-jobs/{id}"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        state = v["state"].clone();
        if state == "succeeded" || state == "failed" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(state, "succeeded");

    // Every decision reaches the store (written off the hot path).
    let store = audit::Store::connect(&audit_url).await.unwrap();
    let all = audit::Page {
        limit: 100_000,
        ..audit::Page::default()
    };
    let mut n = 0;
    for _ in 0..100 {
        n = store.page(&all).await.unwrap().len();
        if n == 3_000 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(n, 3_000, "2,000 single decisions and 1,000 batch rows");

    let (ok, summary) = tokio::task::spawn_blocking({
        let (a, r) = (audit_url.clone(), registry.clone());
        move || replay(&a, &r)
    })
    .await
    .unwrap();
    assert_eq!(summary["replayed"], 3_000, "{summary}");
    assert_eq!(summary["identical"], 3_000, "{summary}");
    assert!(ok, "exit code 0 when all are identical");

    // Change one stored probability by the smallest step: replay reports that record alone.
    let victim = store
        .by_request(&id)
        .await
        .unwrap()
        .into_iter()
        .nth(17)
        .unwrap();
    let nudged = f64::from_bits(victim.probability.to_bits() + 1);
    {
        use sqlx::Connection;
        let mut db = sqlx::PgConnection::connect(&audit_url).await.unwrap();
        sqlx::query("UPDATE decisions SET probability = $1 WHERE decision_id = $2")
            .bind(nudged)
            .bind(&victim.decision_id)
            .execute(&mut db)
            .await
            .unwrap();
    }
    let (ok, summary) = tokio::task::spawn_blocking(move || replay(&audit_url, &registry))
        .await
        .unwrap();
    assert!(!ok, "a difference fails the command");
    assert_eq!(summary["identical"], 2_999, "{summary}");
    let different = summary["different"].as_array().unwrap();
    assert_eq!(different.len(), 1, "{summary}");
    assert_eq!(different[0]["decision_id"], victim.decision_id);
    assert_eq!(different[0]["what"], serde_json::json!(["probability"]));
}
