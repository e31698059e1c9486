//! The decision audit log: every decision recorded with the exact model, read back by its key,
//! erased by an admin, refused when it cannot be recorded (fail-closed), and drained at SIGTERM.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{german, shared_bundle, spawn_api, spawn_binary};

fn sha256_of_bundle() -> String {
    use sha2::Digest;
    let text = std::fs::read(shared_bundle().join("model.json")).unwrap();
    hex::encode(sha2::Sha256::digest(text))
}

async fn send(
    api: &crate::helpers::TestApi,
    method: reqwest::Method,
    path: &str,
    key: &str,
    rid: Option<&str>,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut r = api
        .client
        .request(method, format!("{}{path}", api.address))
        .header("x-api-key", key);
    if let Some(rid) = rid {
        r = r.header("x-request-id", rid);
    }
    if let Some(b) = body {
        r = r.json(b);
    }
    let r = r.send().await.unwrap();
    let s = r.status().as_u16();
    (s, r.json().await.unwrap_or(Value::Null))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_decision_is_recorded_with_its_model_and_read_back_only_by_its_key() {
    let url = test_support::fresh_postgres("api_audit").await;
    let keys = test_support::tmp("api-audit").join("keys");
    std::fs::write(
        &keys,
        "lender-a:k-a:score\nlender-b:k-b:score\nops:k-ops:admin\n",
    )
    .unwrap();
    let api = spawn_api(&[
        "--model-uri",
        shared_bundle().to_str().unwrap(),
        "--api-keys-file",
        keys.to_str().unwrap(),
        "--audit-url",
        &url,
    ])
    .await;
    let mut ready = false;
    for _ in 0..100 {
        if api.get("/readyz").await.0 == 200 {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "the API with an audit store never became ready");

    let app = &german()[3].1;
    let (s, answer) = send(
        &api,
        reqwest::Method::POST,
        "/v1/predict",
        "k-a",
        Some("req-one"),
        Some(app),
    )
    .await;
    assert_eq!(s, 200, "{answer}");
    let batch = json!({"applications": [german()[5].1, {"nope": 1}, german()[6].1]});
    let (s, batch_answer) = send(
        &api,
        reqwest::Method::POST,
        "/v1/predict/batch",
        "k-a",
        Some("req-batch"),
        Some(&batch),
    )
    .await;
    assert_eq!(s, 200, "{batch_answer}");

    // Written off the hot path: wait for the writer.
    let mut got = Value::Null;
    for _ in 0..50 {
        let (s, v) = send(
            &api,
            reqwest::Method::GET,
            "/v1/decisions/req-one",
            "k-a",
            None,
            None,
        )
        .await;
        if s == 200 {
            got = v;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let records = got["records"].as_array().expect("the decision is recorded");
    assert_eq!(records.len(), 1);
    let r = &records[0];
    assert_eq!(r["model"]["bundle_sha256"], sha256_of_bundle());
    assert_eq!(r["model"]["version"], answer["model"]["version"]);
    assert_eq!(r["key_id"], "lender-a");
    assert_eq!(r["source"], "predict");
    assert_eq!(
        r["probability"].as_f64().unwrap().to_bits(),
        answer["default_probability"].as_f64().unwrap().to_bits()
    );
    assert_eq!(r["decision"], answer["decision"]);
    assert_eq!(r["reasons"], answer["reasons"]);
    assert_eq!(r["reason_policy"], "all");
    for (name, value) in app.as_object().unwrap() {
        assert_eq!(&r["features"][name], value, "feature {name} as scored");
    }
    assert!(r["thresholds"]["approve"].is_number());

    // The batch: the two scored applications, by index; the rejected one is not a decision.
    let mut batch_records = Value::Null;
    for _ in 0..50 {
        let (s, v) = send(
            &api,
            reqwest::Method::GET,
            "/v1/decisions/req-batch",
            "k-a",
            None,
            None,
        )
        .await;
        if s == 200 && v["records"].as_array().is_some_and(|a| a.len() == 2) {
            batch_records = v;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let rows: Vec<i64> = batch_records["records"]
        .as_array()
        .expect("the batch is recorded")
        .iter()
        .map(|r| r["row_index"].as_i64().unwrap())
        .collect();
    assert_eq!(rows, [0, 2]);
    assert_eq!(
        batch_records["records"][1]["probability"],
        batch_answer["results"][2]["default_probability"]
    );

    // Another key does not see it; an admin does, and erases it.
    let (s, _) = send(
        &api,
        reqwest::Method::GET,
        "/v1/decisions/req-one",
        "k-b",
        None,
        None,
    )
    .await;
    assert_eq!(s, 404);
    let (s, _) = send(
        &api,
        reqwest::Method::DELETE,
        "/v1/decisions/req-one",
        "k-a",
        None,
        None,
    )
    .await;
    assert_eq!(s, 403, "erasure takes an admin key");
    let (s, v) = send(
        &api,
        reqwest::Method::GET,
        "/v1/decisions/req-one",
        "k-ops",
        None,
        None,
    )
    .await;
    assert_eq!((s, v["records"].as_array().map(Vec::len)), (200, Some(1)));
    let (s, v) = send(
        &api,
        reqwest::Method::DELETE,
        "/v1/decisions/req-one",
        "k-ops",
        None,
        None,
    )
    .await;
    assert_eq!((s, &v["erased"]), (200, &json!(1)));
    let (s, _) = send(
        &api,
        reqwest::Method::GET,
        "/v1/decisions/req-one",
        "k-ops",
        None,
        None,
    )
    .await;
    assert_eq!(s, 404);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fail_closed_refuses_decisions_it_cannot_record_and_fail_open_answers() {
    // Nothing listens on port 9.
    let down = "postgres://postgres@127.0.0.1:9/none";
    let closed = spawn_api(&[
        "--model-uri",
        shared_bundle().to_str().unwrap(),
        "--audit-url",
        down,
    ])
    .await;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (s, v) = closed.post("/v1/predict", &german()[0].1).await;
    assert_eq!(s, 503, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("recorded"), "{v}");
    let (s, _) = closed.get("/readyz").await;
    assert_eq!(s, 503, "not ready while decisions cannot be recorded");

    let open = spawn_api(&[
        "--model-uri",
        shared_bundle().to_str().unwrap(),
        "--audit-url",
        down,
        "--audit-mode",
        "fail-open",
    ])
    .await;
    let mut s = 0;
    for _ in 0..50 {
        s = open.post("/v1/predict", &german()[0].1).await.0;
        if s == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(s, 200, "fail-open decides without the store");
}

/// SIGTERM while requests are in flight, with records held back by a locked table: the API
/// exits cleanly. Returns the decisions answered and the records stored afterwards.
async fn answered_and_recorded_across_sigterm(
    db: &str,
    extra: &[&str],
) -> (usize, Vec<audit::Record>) {
    let url = test_support::fresh_postgres(db).await;
    let mut args = vec!["--audit-url", url.as_str()];
    args.extend_from_slice(extra);
    let (mut child, port) = spawn_binary(&args).await;
    // A shadow model loads on its own poller, just after the champion.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let client = reqwest::Client::new();
    let answered = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let mut load = Vec::new();
    for c in 0..16 {
        let client = client.clone();
        let answered = answered.clone();
        load.push(tokio::spawn(async move {
            for i in 0.. {
                let app = &german()[(c * 37 + i) % german().len()].1;
                match client
                    .post(format!("http://127.0.0.1:{port}/v1/predict"))
                    .json(app)
                    .send()
                    .await
                {
                    Ok(r) if r.status() == 200 => {
                        // Counted only once the whole answer is read.
                        if r.bytes().await.is_ok() {
                            answered.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                    }
                    _ => break,
                }
            }
        }));
    }
    while answered.load(std::sync::atomic::Ordering::SeqCst) < 2_000 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    // Hold the table so that writes wait and records pile up in the queue, then stop the API
    // while they are there; the lock goes a second after SIGTERM.
    use sqlx::Connection;
    let mut lock = sqlx::PgConnection::connect(&url).await.unwrap();
    sqlx::Executor::execute(&mut lock, "BEGIN").await.unwrap();
    sqlx::Executor::execute(&mut lock, "LOCK TABLE decisions IN ACCESS EXCLUSIVE MODE")
        .await
        .unwrap();
    let held = answered.load(std::sync::atomic::Ordering::SeqCst);
    while answered.load(std::sync::atomic::Ordering::SeqCst) < held + 1_000 {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let pid = child.0.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    for l in load {
        l.await.unwrap();
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    sqlx::Executor::execute(&mut lock, "COMMIT").await.unwrap();
    let status = tokio::task::spawn_blocking(move || child.0.wait().unwrap())
        .await
        .unwrap();
    assert!(status.success(), "the API exits cleanly: {status}");
    let store = audit::Store::connect(&url).await.unwrap();
    let recorded = store
        .page(&audit::Page {
            limit: 1_000_000,
            ..audit::Page::default()
        })
        .await
        .unwrap();
    let answered = answered.load(std::sync::atomic::Ordering::SeqCst);
    assert!(answered >= 2_000);
    (answered, recorded)
}

/// SIGTERM while requests are in flight: every answered decision is in the store afterwards.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_writes_every_answered_decision_before_exit() {
    let (answered, recorded) = answered_and_recorded_across_sigterm("api_audit_drain", &[]).await;
    assert!(
        recorded.len() >= answered,
        "{answered} decisions answered, {} recorded",
        recorded.len()
    );
}

/// The same with a shadow model: the records waiting for the shadow's results are written too,
/// each with the shadow's result or the note that the shadow was behind.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_with_a_shadow_writes_every_answered_decision_with_its_shadow_result() {
    let challenger = crate::helpers::train_bundle(20, 7);
    let (answered, recorded) = answered_and_recorded_across_sigterm(
        "api_audit_drain_shadow",
        &["--shadow-model-uri", challenger.to_str().unwrap()],
    )
    .await;
    assert!(
        recorded.len() >= answered,
        "{answered} decisions answered, {} recorded",
        recorded.len()
    );
    let mut scored = 0;
    for r in &recorded {
        let shadow: Value =
            serde_json::from_str(r.shadow.as_deref().expect("a shadow result")).unwrap();
        if shadow["probability"].is_number() {
            scored += 1;
        } else {
            assert!(shadow["skipped"].is_string(), "{shadow}");
        }
    }
    assert!(scored > 0, "the shadow scored none of {answered}");
}
