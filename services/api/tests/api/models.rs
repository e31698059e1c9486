use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use crate::helpers::{
    german, register, set_alias, shared_bundle, spawn_api, spawn_registry, spawn_registry_with,
    train_bundle, Db,
};
use crate::on_both_backends;

async fn starts_unready_without_a_model_then_follows_the_alias(db: Db) {
    let (registry, _handle) = spawn_registry(db).await;
    let api = spawn_api(&["--tracking-uri", &registry, "--poll-seconds", "3600"]).await;
    let (s, v) = api.get("/readyz").await;
    assert_eq!(s, 503, "{v}");
    assert_eq!(api.get("/healthz").await.0, 200);
    let (s, _) = api.post("/v1/predict", &german()[0].1).await;
    assert_eq!(s, 503);
    let v1 = register(&registry, shared_bundle(), "champion").await;
    let (s, v) = api.post("/v1/model/reload", &serde_json::json!({})).await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["model"]["version"], v1);
    assert!(api.wait_for_version(&v1, 30).await);
    let (s, v) = api.post("/v1/predict", &german()[0].1).await;
    assert_eq!(
        (s, v["model"]["version"].as_str()),
        (200, Some(v1.as_str()))
    );
}
on_both_backends!(starts_unready_without_a_model_then_follows_the_alias);

async fn hot_swap_under_load_loses_no_request_and_rolls_back(db: Db) {
    let (registry, handle) = spawn_registry(db).await;
    let v1 = register(&registry, shared_bundle(), "champion").await;
    let api = Arc::new(spawn_api(&["--tracking-uri", &registry, "--poll-seconds", "1"]).await);
    assert!(api.wait_for_version(&v1, 60).await);
    let second = train_bundle(12, 7);
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let (ok, failed) = (Arc::new(AtomicUsize::new(0)), Arc::new(AtomicUsize::new(0)));
    let seen = Arc::new(std::sync::Mutex::new(std::collections::BTreeSet::new()));
    let mut load = Vec::new();
    for w in 0..4 {
        let (api, stop, ok, failed, seen) = (
            api.clone(),
            stop.clone(),
            ok.clone(),
            failed.clone(),
            seen.clone(),
        );
        load.push(tokio::spawn(async move {
            let mut i = w;
            while !stop.load(Ordering::Relaxed) {
                let (s, v) = api.post("/v1/predict", &german()[i % 100].1).await;
                if s == 200 {
                    ok.fetch_add(1, Ordering::Relaxed);
                    seen.lock()
                        .unwrap()
                        .insert(v["model"]["version"].as_str().unwrap_or("").to_string());
                } else {
                    failed.fetch_add(1, Ordering::Relaxed);
                }
                i += 4;
                // Steady load, short of starving the registry and database on a 2-core machine.
                tokio::time::sleep(std::time::Duration::from_millis(2)).await;
            }
        }));
    }
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // Version 2 arrives by alias; the poller (1 s) picks it up without an operator.
    let v2 = register(&registry, &second, "champion").await;
    assert!(
        api.wait_for_version(&v2, 60).await,
        "switched to {v2} by polling (1 s interval; generous deadline for a loaded CI machine)"
    );
    tokio::time::sleep(std::time::Duration::from_millis(300)).await;
    // Rollback: the alias moves back.
    set_alias(&registry, "champion", &v1).await;
    assert!(api.wait_for_version(&v1, 60).await, "rolled back to {v1}");
    // A broken version never replaces the serving one.
    let broken = std::env::temp_dir().join(format!("broken-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&broken).unwrap();
    std::fs::write(
        broken.join("model.json"),
        b"{\"format_version\": 1, \"garbage\": true}",
    )
    .unwrap();
    register(&registry, &broken, "champion").await;
    let (s, _) = api.post("/v1/model/reload", &serde_json::json!({})).await;
    assert_eq!(s, 502);
    assert!(api.wait_for_version(&v1, 2).await, "still serving {v1}");
    // The registry goes away: scoring and readiness carry on.
    handle.stop(false).await;
    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    stop.store(true, Ordering::Relaxed);
    for t in load {
        t.await.unwrap();
    }
    assert_eq!(
        failed.load(Ordering::Relaxed),
        0,
        "no request failed during swaps"
    );
    assert!(ok.load(Ordering::Relaxed) > 50);
    let seen = seen.lock().unwrap().clone();
    assert!(seen.contains(&v1) && seen.contains(&v2), "{seen:?}");
    assert_eq!(api.get("/readyz").await.0, 200);
    let (s, _) = api.post("/v1/predict", &german()[0].1).await;
    assert_eq!(s, 200);
    let text = api
        .client
        .get(format!("{}/metrics", api.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        text.lines()
            .any(|l| l.starts_with("model_load_failures_total") && !l.ends_with(" 0")),
        "{text}"
    );
}
on_both_backends!(hot_swap_under_load_loses_no_request_and_rolls_back);

/// `MODEL_URI` may name a `loanctl train --out` folder (its bundle is in `model/`), the folder
/// `loanctl score --model` takes; before, the API looked only for `model.json` in it and never
/// served.
#[tokio::test]
async fn a_training_output_folder_as_model_uri_serves_its_bundle() {
    let out = test_support::tmp("api-train-out");
    test_support::train_german_bundle(&out.join("model"), 20, 3);
    let uuid = model::Bundle::load(&out.join("model")).unwrap().model_uuid;
    let api = spawn_api(&["--model-uri", out.to_str().unwrap()]).await;
    assert!(api.wait_for_version(&uuid, 10).await, "never served");
    let (s, v) = api.post("/v1/predict", &german()[0].1).await;
    assert_eq!(s, 200, "{v}");
}

/// A registry that accepts connections and never answers: a reload fails (502) within the
/// registry timeout instead of hanging while it holds the poller's lock. Before, registry calls
/// had a connect timeout only, and this request never came back.
#[tokio::test]
async fn a_stalled_registry_fails_a_reload_instead_of_hanging() {
    let registry = test_support::stalled_server();
    let api = spawn_api(&[
        "--tracking-uri",
        &registry,
        "--registry-timeout-seconds",
        "1",
        "--poll-seconds",
        "3600",
    ])
    .await;
    let empty = serde_json::json!({});
    let reload = api.post("/v1/model/reload", &empty);
    let (s, v) = tokio::time::timeout(std::time::Duration::from_secs(30), reload)
        .await
        .expect("the reload answered");
    assert_eq!(s, 502, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("registry"), "{v}");
}

/// A download that fails halfway (here: the registry lists a file name the client refuses, in a
/// folder fetched after the bundle's own files) leaves nothing in the model cache. Before, every
/// failed poll left a directory with the files fetched so far.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_download_leaves_nothing_in_the_model_cache() {
    let artifacts = test_support::tmp("api-artifacts");
    let (registry, _handle) = spawn_registry_with(
        Db::Sqlite,
        &["--artifacts-destination", artifacts.to_str().unwrap()],
    )
    .await;
    register(&registry, shared_bundle(), "champion").await;
    let model_json = walkdir(&artifacts)
        .into_iter()
        .find(|p| p.file_name().is_some_and(|n| n == "model.json"))
        .expect("the registered bundle on the registry's disk");
    let bad = model_json.parent().unwrap().join("zz");
    std::fs::create_dir_all(&bad).unwrap();
    std::fs::write(bad.join("a..b"), b"refused").unwrap();
    let cache = test_support::tmp("api-cache");
    let api = spawn_api(&[
        "--tracking-uri",
        &registry,
        "--poll-seconds",
        "3600",
        "--model-cache-dir",
        cache.to_str().unwrap(),
    ])
    .await;
    let (s, v) = api.post("/v1/model/reload", &serde_json::json!({})).await;
    assert_eq!(s, 502, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("a..b"), "{v}");
    let left: Vec<_> = std::fs::read_dir(&cache)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert!(left.is_empty(), "left in the cache: {left:?}");
}

fn walkdir(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            out.extend(walkdir(&p));
        } else {
            out.push(p);
        }
    }
    out
}
