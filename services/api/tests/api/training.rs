//! Retraining as a job (`POST /v1/training-jobs`): the in-process worker trains with the serving
//! model's spec, logs the run and registers a new version in a real registry; the alias stays.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{register, spawn_api, spawn_registry, train_bundle, Db};
use test_support::REPO;

async fn wait_done(api: &crate::helpers::TestApi, location: &str) -> Value {
    let mut v = Value::Null;
    for _ in 0..1200 {
        let (s, body) = api.get(location).await;
        assert_eq!(s, 200, "{body}");
        v = body;
        if v["state"] != "queued" && v["state"] != "running" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    v
}

async fn submit(
    api: &crate::helpers::TestApi,
    query: &str,
    content_type: &str,
    body: Vec<u8>,
) -> (u16, Value, String) {
    let r = api
        .client
        .post(format!("{}/v1/training-jobs{query}", api.address))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    let location = r
        .headers()
        .get("location")
        .map(|v| v.to_str().unwrap().to_string())
        .unwrap_or_default();
    (status, r.json().await.unwrap_or(Value::Null), location)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_training_job_registers_a_new_version_without_moving_the_alias() {
    let (registry, _h) = spawn_registry(Db::Sqlite).await;
    register(&registry, &train_bundle(10, 1), "champion").await;
    let storage = std::env::temp_dir().join(format!("api-train-{}", uuid::Uuid::new_v4().simple()));
    let api = spawn_api(&[
        "--tracking-uri",
        &registry,
        "--jobs-root",
        storage.to_str().unwrap(),
    ])
    .await;
    assert!(api.wait_for_version("1", 30).await);
    let data = std::fs::read(format!("{REPO}/data/german_credit.csv")).unwrap();

    // Uploaded dataset.
    let (s, job, location) = submit(&api, "?trees=20&seed=7", "text/csv", data.clone()).await;
    assert_eq!(s, 202, "{job}");
    assert_eq!(job["settings"]["trees"], 20);
    assert_eq!(job["settings"]["register_as"], "loan-default");
    assert_eq!(job["settings"]["engine"], "hist", "the default engine");
    let done = wait_done(&api, &location).await;
    assert_eq!(done["state"], "succeeded", "{done}");
    let reg = &done["result"]["registered"];
    assert_eq!(reg["version"], "2", "{done}");
    assert!(done["result"]["metrics"]["test_roc_auc"].as_f64().unwrap() > 0.6);

    // The run is in the registry with its metrics and the bundle; the alias did not move.
    let http = reqwest::Client::new();
    let run: Value = http
        .get(format!("{registry}/api/2.0/mlflow/runs/get"))
        .query(&[("run_id", reg["run_id"].as_str().unwrap())])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let metrics = run["run"]["data"]["metrics"].as_array().unwrap();
    assert!(metrics.iter().any(|m| m["key"] == "test_roc_auc"), "{run}");
    let alias: Value = http
        .get(format!("{registry}/api/2.0/mlflow/registered-models/alias"))
        .query(&[("name", "loan-default"), ("alias", "champion")])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(alias["model_version"]["version"], "1", "{alias}");

    // A dataset already on the shared storage, by path.
    std::fs::create_dir_all(storage.join("datasets")).unwrap();
    std::fs::write(storage.join("datasets/g.csv"), &data).unwrap();
    let (s, job, location) = submit(
        &api,
        "?trees=10&smote=false&engine=gbdt",
        "application/json",
        json!({"dataset_path": "datasets/g.csv"})
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_eq!(s, 202, "{job}");
    let done = wait_done(&api, &location).await;
    assert_eq!(done["result"]["registered"]["version"], "3", "{done}");
    // The job trained with the engine it asked for: the run's logged settings say so.
    let run: Value = http
        .get(format!("{registry}/api/2.0/mlflow/runs/get"))
        .query(&[(
            "run_id",
            done["result"]["registered"]["run_id"].as_str().unwrap(),
        )])
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let params = run["run"]["data"]["params"].as_array().unwrap();
    assert!(
        params
            .iter()
            .any(|p| p["key"] == "booster.engine" && p["value"] == "gbdt"),
        "{run}"
    );

    // Bad requests, each with a reason, and nothing queued.
    let (s, _, _) = submit(&api, "", "application/pdf", b"x".to_vec()).await;
    assert_eq!(s, 415);
    let (s, v, _) = submit(&api, "?trees=0", "text/csv", data.clone()).await;
    assert_eq!(s, 422);
    assert!(v["detail"].as_str().unwrap().contains("trees"), "{v}");
    let (s, v, _) = submit(&api, "?engine=lightgbm", "text/csv", data.clone()).await;
    assert_eq!(s, 422);
    assert!(v["detail"].as_str().unwrap().contains("engine"), "{v}");
    for path in ["../etc/passwd", "/etc/passwd", "datasets/missing.csv"] {
        let (s, v, _) = submit(
            &api,
            "",
            "application/json",
            json!({ "dataset_path": path }).to_string().into_bytes(),
        )
        .await;
        assert_eq!(s, 422, "{path}: {v}");
    }
    let text = String::from_utf8(data).unwrap();
    let no_label: String = text
        .lines()
        .map(|l| {
            let mut cells: Vec<&str> = l.split(',').collect();
            cells.pop();
            cells.join(",") + "\n"
        })
        .collect();
    assert!(text.lines().next().unwrap().ends_with("creditability"));
    let (s, v, _) = submit(&api, "", "text/csv", no_label.into_bytes()).await;
    assert_eq!(s, 422);
    assert!(
        v["detail"].as_str().unwrap().contains("creditability"),
        "{v}"
    );
    let (s, _) = api.get("/v1/training-jobs/19700101000000-nope").await;
    assert_eq!(s, 404);
    // A training job is not a batch job.
    let (s, _) = api
        .get(&location.replace("/v1/training-jobs/", "/v1/batch-jobs/"))
        .await;
    assert_eq!(s, 404);
}

/// Training holds its table in memory, so its dataset is capped at submission (TRAIN_MAX_BYTES),
/// both uploaded and named by path, with the limit in the answer. Before, a training upload could
/// be as large as a batch upload (2 GiB) and took down the worker that trained it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_training_dataset_over_the_limit_is_refused_at_submission() {
    let storage = test_support::tmp("api-train-cap");
    let bundle = crate::helpers::shared_bundle();
    let api = spawn_api(&[
        "--model-uri",
        bundle.to_str().unwrap(),
        "--jobs-root",
        storage.to_str().unwrap(),
        "--train-max-bytes",
        "10000",
    ])
    .await;
    let uuid = model::Bundle::load(bundle).unwrap().model_uuid;
    assert!(api.wait_for_version(&uuid, 10).await);
    let data = std::fs::read(format!("{REPO}/data/german_credit.csv")).unwrap();
    assert!(data.len() > 10_000);
    let (s, v, _) = submit(&api, "", "text/csv", data.clone()).await;
    assert_eq!(s, 413, "{v}");
    assert!(v["detail"].as_str().unwrap().contains("10000"), "{v}");
    std::fs::create_dir_all(storage.join("datasets")).unwrap();
    std::fs::write(storage.join("datasets/g.csv"), &data).unwrap();
    let (s, v, _) = submit(
        &api,
        "",
        "application/json",
        json!({"dataset_path": "datasets/g.csv"})
            .to_string()
            .into_bytes(),
    )
    .await;
    assert_eq!(s, 422, "{v}");
    let detail = v["detail"].as_str().unwrap();
    assert!(
        detail.contains("TRAIN_MAX_BYTES") && detail.contains("10000"),
        "{v}"
    );
    // Nothing was left behind for either.
    let jobs: Vec<_> = std::fs::read_dir(storage.join("jobs"))
        .map(|d| d.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    assert!(jobs.is_empty(), "{jobs:?}");
}
