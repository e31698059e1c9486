//! Drift over the last decisions: `GET /v1/monitoring/drift` and the `feature_psi` and
//! `score_psi` gauges. Applicants like the training data read as stable; when the window fills
//! with applicants asking for four times the amount, `credit_amount` is flagged and features
//! that did not move keep their figures.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{german, shared_bundle, spawn_api, TestApi};

const WINDOW: usize = 300;

/// Sends `apps`: every other one alone, the rest as one batch.
async fn decide(api: &TestApi, apps: &[Value]) {
    let mut batch = Vec::new();
    for (i, app) in apps.iter().enumerate() {
        if i % 2 == 0 {
            assert_eq!(api.post("/v1/predict?explain=false", app).await.0, 200);
        } else {
            batch.push(app.clone());
        }
    }
    let (s, v) = api
        .post(
            "/v1/predict/batch?explain=false",
            &json!({"applications": batch}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["rejected"], 0, "{v}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn drift_is_watched_over_the_last_decisions_and_a_moved_population_is_flagged() {
    let api = spawn_api(&[
        "--model-uri",
        shared_bundle().to_str().unwrap(),
        "--drift-window",
        &WINDOW.to_string(),
    ])
    .await;
    api.ready().await;
    let (s, v) = api.get("/v1/monitoring/drift").await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["window"], 0);

    let apps: Vec<Value> = german()
        .iter()
        .take(WINDOW)
        .map(|(_, a)| a.clone())
        .collect();
    decide(&api, &apps).await;
    let (s, same) = api.get("/v1/monitoring/drift").await;
    assert_eq!(s, 200, "{same}");
    assert_eq!(same["window"], WINDOW);
    assert_eq!(same["capacity"], WINDOW);
    assert!(same["model"]["version"].is_string(), "{same}");
    let features = same["features"].as_object().unwrap();
    assert!(features.contains_key("credit_amount") && !features.contains_key("foreign_worker"));
    for (name, p) in features {
        assert!(p["psi"].as_f64().unwrap() < 0.25, "{name}: {p}");
    }
    assert!(
        same["score"]["psi"].as_f64().unwrap() < 0.1,
        "{}",
        same["score"]
    );

    // The window fills with applicants asking for four times the amount.
    let moved: Vec<Value> = apps
        .iter()
        .map(|a| {
            let mut a = a.clone();
            a["credit_amount"] = json!(a["credit_amount"].as_f64().unwrap() * 4.0);
            a
        })
        .collect();
    decide(&api, &moved).await;
    let (_, shifted) = api.get("/v1/monitoring/drift").await;
    assert_eq!(
        shifted["window"], WINDOW,
        "the oldest decisions are forgotten"
    );
    let amount = &shifted["features"]["credit_amount"];
    assert!(amount["psi"].as_f64().unwrap() > 0.25, "{amount}");
    assert_eq!(amount["level"], "act");
    for name in ["age_in_years", "purpose", "duration_in_month"] {
        assert_eq!(
            shifted["features"][name]["psi"], same["features"][name]["psi"],
            "{name} did not move"
        );
    }

    // The same figures as gauges (metrics are process-wide: other tests' APIs publish too, so
    // read until this one's figure is there).
    let want = amount["psi"].as_f64().unwrap();
    let mut seen = None;
    for _ in 0..20 {
        let text = api
            .client
            .get(format!("{}/metrics", api.address))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        seen = crate::helpers::metric(&text, "feature_psi{feature=\"credit_amount\"}");
        if seen == Some(want)
            && crate::helpers::metric(&text, "drift_window_decisions") == Some(WINDOW as f64)
        {
            assert!(
                crate::helpers::metric(&text, "score_psi ").is_some(),
                "score_psi in /metrics"
            );
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("feature_psi for credit_amount: {seen:?}, want {want}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_a_window_drift_is_not_watched_and_says_so() {
    let api = spawn_api(&[
        "--model-uri",
        shared_bundle().to_str().unwrap(),
        "--drift-window",
        "0",
    ])
    .await;
    api.ready().await;
    let (s, v) = api.get("/v1/monitoring/drift").await;
    assert_eq!(s, 404, "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("DRIFT_WINDOW=0"),
        "{v}"
    );
}
