//! Champion/challenger: the shadow model scores after the answer, never changes it, and its
//! agreement reaches `/metrics` and its result the audit record.

use std::time::Duration;

use serde_json::Value;

use crate::helpers::{german, shared_bundle, spawn_api, train_bundle, TestApi};

/// The challenger's version as served from a local folder: its bundle's uuid.
fn version_of(bundle: &std::path::Path) -> String {
    let doc: Value =
        serde_json::from_str(&std::fs::read_to_string(bundle.join("model.json")).unwrap()).unwrap();
    doc["model_uuid"].as_str().unwrap().to_string()
}

/// The value of `name` for the line labelled with this shadow version (metrics are
/// process-wide, and other tests run shadows too).
fn metric(metrics: &str, name: &str, shadow_version: &str) -> Option<f64> {
    metrics
        .lines()
        .find(|l| {
            l.starts_with(name)
                && l[name.len()..].starts_with('{')
                && l.contains(&format!("shadow_version=\"{shadow_version}\""))
        })
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
}

/// The champion with the challenger in its shadow and an audit log, and the challenger alone.
async fn spawn_shadowed_and_alone(
    champion: &str,
    challenger: &std::path::Path,
    audit_url: &str,
) -> (TestApi, TestApi) {
    let challenger = challenger.to_str().unwrap();
    let shadowed = spawn_api(&[
        "--model-uri",
        champion,
        "--shadow-model-uri",
        challenger,
        "--audit-url",
        audit_url,
    ])
    .await;
    (shadowed, spawn_api(&["--model-uri", challenger]).await)
}

async fn raw_post(api: &TestApi, path: &str, rid: &str, body: &Value) -> Vec<u8> {
    let r = api
        .client
        .post(format!("{}{path}", api.address))
        .header("x-request-id", rid)
        .json(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    r.bytes().await.unwrap().to_vec()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shadow_never_changes_answers_and_its_results_reach_metrics_and_the_audit_log() {
    let challenger = train_bundle(20, 7);
    let champion = shared_bundle().to_str().unwrap();
    let plain = spawn_api(&["--model-uri", champion]).await;
    let audit_url = test_support::fresh_postgres("api_shadow").await;
    let (shadowed, alone) = spawn_shadowed_and_alone(champion, &challenger, &audit_url).await;
    for api in [&plain, &shadowed, &alone] {
        api.ready().await;
    }
    // Both models loaded before the load starts (the shadow has its own poller).
    tokio::time::sleep(Duration::from_millis(300)).await;

    let n = 60;
    for (i, (_, app)) in german().iter().take(n).enumerate() {
        let rid = format!("shadow-{i}");
        assert_eq!(
            raw_post(&plain, "/v1/predict", &rid, app).await,
            raw_post(&shadowed, "/v1/predict", &rid, app).await,
            "the answer with a shadow is byte for byte the answer without"
        );
    }
    // A batch: five applications and one refused; the five are shadow-scored too.
    let batch = serde_json::json!({"applications": [
        german()[10].1, german()[11].1, {"nope": 1}, german()[12].1, german()[13].1, german()[14].1
    ]});
    assert_eq!(
        raw_post(&plain, "/v1/predict/batch", "shadow-batch", &batch).await,
        raw_post(&shadowed, "/v1/predict/batch", "shadow-batch", &batch).await
    );
    let n = n + 5;

    // Every request was shadow-scored; agreement is a ratio.
    let v = version_of(&challenger);
    let mut metrics = String::new();
    for _ in 0..50 {
        metrics = shadowed
            .client
            .get(format!("{}/metrics", shadowed.address))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        if metric(&metrics, "shadow_scored_total", &v) == Some(n as f64) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(
        metric(&metrics, "shadow_scored_total", &v),
        Some(n as f64),
        "{metrics}"
    );
    let ratio = metric(&metrics, "shadow_decision_agreement_ratio", &v).expect("agreement ratio");
    assert!((0.0..=1.0).contains(&ratio));
    assert_eq!(
        metric(&metrics, "shadow_probability_abs_diff_count", &v),
        Some(n as f64)
    );

    // The audit record carries the shadow's result: the challenger's own answer, to the bit.
    let (_, alone_answer) = alone.post("/v1/predict", &german()[7].1).await;
    let mut record = Value::Null;
    for _ in 0..50 {
        let (s, v) = shadowed.get("/v1/decisions/shadow-7").await;
        if s == 200 {
            record = v["records"][0].clone();
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let shadow = &record["shadow"];
    assert_eq!(
        shadow["model"]["version"], alone_answer["model"]["version"],
        "{record}"
    );
    assert_eq!(
        shadow["probability"].as_f64().unwrap().to_bits(),
        alone_answer["default_probability"]
            .as_f64()
            .unwrap()
            .to_bits()
    );
    assert_eq!(shadow["decision"], alone_answer["decision"]);
    assert_ne!(
        record["probability"], shadow["probability"],
        "two different models"
    );
    let mut v = Value::Null;
    for _ in 0..50 {
        let (s, got) = shadowed.get("/v1/decisions/shadow-batch").await;
        if s == 200 && got["records"].as_array().is_some_and(|r| r.len() == 5) {
            v = got;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rows = v["records"].as_array().expect("the batch's records");
    assert_eq!(rows.len(), 5);
    assert!(
        rows.iter().all(|r| r["shadow"]["probability"].is_number()),
        "{v}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sample_of_requests_is_shadow_scored() {
    let challenger = train_bundle(10, 3);
    let api = spawn_api(&[
        "--model-uri",
        shared_bundle().to_str().unwrap(),
        "--shadow-model-uri",
        challenger.to_str().unwrap(),
        "--shadow-sample",
        "0.25",
    ])
    .await;
    api.ready().await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    for (_, app) in german().iter().take(200) {
        assert_eq!(api.post("/v1/predict", app).await.0, 200);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let metrics = api
        .client
        .get(format!("{}/metrics", api.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let scored = metric(&metrics, "shadow_scored_total", &version_of(&challenger)).unwrap_or(0.0);
    assert!(
        (40.0..=60.0).contains(&scored),
        "about a quarter of 200 requests, got {scored}"
    );
    let bad = spawn_api_err(&["--shadow-sample", "1.5"]).await;
    assert!(bad.contains("SHADOW_SAMPLE"), "{bad}");
}

async fn spawn_api_err(args: &[&str]) -> String {
    use clap::Parser;
    let mut all = vec![
        "api",
        "--port",
        "0",
        "--model-uri",
        "x",
        "--shadow-model-uri",
        "y",
    ];
    all.extend_from_slice(args);
    let settings = api::Settings::try_parse_from(all).unwrap();
    match api::Application::build(settings).await {
        Ok(_) => String::from("started"),
        Err(e) => e.to_string(),
    }
}

/// Both aliases followed on their own: moving `challenger` changes only the shadow; moving
/// `champion` to the challenger's version is the promotion.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn champion_and_challenger_aliases_swap_independently() {
    use crate::helpers::{register, set_alias, spawn_registry, Db};
    let (registry, _h) = spawn_registry(Db::Sqlite).await;
    let v1 = register(&registry, shared_bundle(), "champion").await;
    let v2 = register(&registry, &train_bundle(20, 7), "challenger").await;
    let api = spawn_api(&[
        "--tracking-uri",
        &registry,
        "--shadow-alias",
        "challenger",
        "--poll-seconds",
        "1",
    ])
    .await;
    assert!(api.wait_for_version(&v1, 30).await);
    let scored_by = |metrics: &str, champion: &str, shadow: &str| -> f64 {
        metrics
            .lines()
            .filter(|l| l.starts_with("shadow_scored_total{"))
            .find(|l| {
                l.contains(&format!("champion_version=\"{champion}\""))
                    && l.contains(&format!("shadow_version=\"{shadow}\""))
            })
            .and_then(|l| l.rsplit(' ').next()?.parse().ok())
            .unwrap_or(0.0)
    };
    let metrics = || async {
        api.client
            .get(format!("{}/metrics", api.address))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    // Wait for the shadow to load, then score: champion v1, shadow v2.
    let mut seen = false;
    for _ in 0..100 {
        assert_eq!(api.post("/v1/predict", &german()[0].1).await.0, 200);
        tokio::time::sleep(Duration::from_millis(50)).await;
        if scored_by(&metrics().await, &v1, &v2) > 0.0 {
            seen = true;
            break;
        }
    }
    assert!(seen, "the challenger never scored in the shadow");

    // A third version as challenger: the shadow moves, the champion stays.
    let v3 = register(&registry, &train_bundle(15, 9), "challenger").await;
    let mut moved = false;
    for _ in 0..100 {
        let (_, answer) = api.post("/v1/predict", &german()[1].1).await;
        assert_eq!(
            answer["model"]["version"], v1,
            "the answer still comes from the champion"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
        if scored_by(&metrics().await, &v1, &v3) > 0.0 {
            moved = true;
            break;
        }
    }
    assert!(
        moved,
        "the shadow never followed the challenger alias to {v3}"
    );

    // Promotion: champion moves to the challenger's version.
    set_alias(&registry, "champion", &v3).await;
    assert!(
        api.wait_for_version(&v3, 30).await,
        "promotion never took effect"
    );
}

/// The shadow scores on CPU time the requests leave: its thread runs at the lowest priority of
/// the normal policy (nice 19; the field after the policy's in `/proc/<pid>/task/<tid>/stat`).
#[cfg(target_os = "linux")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_shadow_thread_runs_at_the_lowest_cpu_priority() {
    let challenger = train_bundle(10, 5);
    let api = spawn_api(&[
        "--model-uri",
        shared_bundle().to_str().unwrap(),
        "--shadow-model-uri",
        challenger.to_str().unwrap(),
    ])
    .await;
    api.ready().await;
    // Every thread named "shadow" in this process (other tests start shadows too).
    let mut nices = Vec::new();
    for _ in 0..50 {
        nices.clear();
        for task in std::fs::read_dir("/proc/self/task").unwrap() {
            let dir = task.unwrap().path();
            if std::fs::read_to_string(dir.join("comm")).is_ok_and(|c| c.trim() == "shadow") {
                let stat = std::fs::read_to_string(dir.join("stat")).unwrap();
                // Fields after the command's closing parenthesis: state is field 3, nice 19.
                let after = &stat[stat.rfind(')').unwrap() + 2..];
                let nice: i32 = after.split(' ').nth(16).unwrap().parse().unwrap();
                nices.push(nice);
            }
        }
        // The thread sets its own priority as it starts.
        if !nices.is_empty() && nices.iter().all(|&n| n == 19) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert!(!nices.is_empty(), "no shadow thread found");
    assert!(
        nices.iter().all(|&n| n == 19),
        "nice of the shadow threads: {nices:?}"
    );
}

/// A challenger trained on the champion's data with other settings encodes applications as the
/// champion does, so the shadow scores the row the champion encoded instead of parsing the
/// request again: what it records is still the challenger's own answer, to the bit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_challenger_that_encodes_alike_records_its_own_answers_bit_for_bit() {
    // Fitted on the champion's rows: the same fitted preprocessor.
    let challenger = train_bundle(12, 42);
    challenger_records_its_own_answers(&challenger, "api_shadow_alike").await;
}

/// A challenger fitted on another split reads applications as the champion does (the same spec)
/// but encodes them otherwise: the request's thread encodes the champion's validated values
/// with the challenger's preprocessor, and what the shadow records is still the challenger's own
/// answer, to the bit.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_challenger_that_reads_alike_records_its_own_answers_bit_for_bit() {
    // Fitted on the first 500 rows: another fitted preprocessor.
    let challenger =
        test_support::train_german_bundle_on(&test_support::tmp("api-bundle"), 12, 42, 500);
    challenger_records_its_own_answers(&challenger, "api_shadow_reads_alike").await;
}

async fn challenger_records_its_own_answers(challenger: &std::path::Path, db: &str) {
    let champion = shared_bundle().to_str().unwrap();
    let audit_url = test_support::fresh_postgres(db).await;
    let (shadowed, alone) = spawn_shadowed_and_alone(champion, challenger, &audit_url).await;
    for api in [&shadowed, &alone] {
        api.ready().await;
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let mut differ = 0;
    for (i, (_, app)) in german().iter().take(20).enumerate() {
        let rid = format!("alike-{i}");
        let served: Value =
            serde_json::from_slice(&raw_post(&shadowed, "/v1/predict", &rid, app).await).unwrap();
        let (_, own) = alone.post("/v1/predict", app).await;
        let mut record = Value::Null;
        for _ in 0..50 {
            let (s, v) = shadowed.get(&format!("/v1/decisions/{rid}")).await;
            if s == 200 && v["records"][0]["shadow"].is_object() {
                record = v["records"][0].clone();
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let shadow = &record["shadow"];
        assert_eq!(
            shadow["model"]["version"], own["model"]["version"],
            "{record}"
        );
        assert_eq!(
            shadow["probability"].as_f64().map(f64::to_bits),
            own["default_probability"].as_f64().map(f64::to_bits),
            "{record}"
        );
        assert_eq!(shadow["decision"], own["decision"]);
        differ += usize::from(shadow["probability"] != served["default_probability"]);
    }
    assert!(
        differ > 0,
        "the challenger is a different model from the champion"
    );
}
