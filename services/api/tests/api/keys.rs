//! API keys with scopes, jobs kept to the key that made them, and applicants' files out of the
//! registry's reach.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::{german, shared_bundle, spawn_api, TestApi};

/// The first rows of the German data as a CSV upload.
fn applications_csv(rows: usize) -> Vec<u8> {
    let spec = test_support::german_spec();
    let mut w = csv::Writer::from_writer(Vec::new());
    w.write_record(spec.features.iter().map(|f| f.name.as_str()))
        .unwrap();
    for (cells, _) in german().iter().take(rows) {
        w.write_record(cells).unwrap();
    }
    w.into_inner().unwrap()
}

async fn send(
    api: &TestApi,
    method: reqwest::Method,
    path: &str,
    key: &str,
    body: Option<(&str, Vec<u8>)>,
) -> (StatusCode, Value) {
    let mut rb = api
        .client
        .request(method, format!("{}{path}", api.address))
        .header("x-api-key", key);
    if let Some((ct, b)) = body {
        rb = rb.header("content-type", ct).body(b);
    }
    let r = rb.send().await.unwrap();
    let s = r.status();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// An API with batch jobs in process, keys `k-a` (lender-a: score, batch), `k-b` (lender-b:
/// score, batch), `k-score` (score only) and `k-ops` (admin).
async fn api_with_keys(jobs_root: &std::path::Path) -> TestApi {
    let keys = jobs_root.with_extension("keys");
    std::fs::write(
        &keys,
        "lender-a:k-a:score,batch\nlender-b:k-b:score,batch\nscorer:k-score:score\nops:k-ops:admin\n",
    )
    .unwrap();
    let api = spawn_api(&[
        "--model-uri",
        shared_bundle().to_str().unwrap(),
        "--api-keys-file",
        keys.to_str().unwrap(),
        "--jobs-root",
        jobs_root.to_str().unwrap(),
    ])
    .await;
    for _ in 0..100 {
        let (s, _) = send(
            &api,
            reqwest::Method::GET,
            "/v1/batch-jobs/19700101000000-x",
            "k-a",
            None,
        )
        .await;
        let (ready, _) = api.get("/readyz").await;
        if s == StatusCode::NOT_FOUND && ready == 200 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    api
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_key_does_what_its_scopes_allow_and_sees_only_its_jobs() {
    let root = test_support::tmp("api-keys").join("jobs");
    let api = api_with_keys(&root).await;
    let one = serde_json::to_vec(&german()[0].1).unwrap();
    use reqwest::Method as M;
    // Scoring: score keys yes.
    let (s, _) = send(
        &api,
        M::POST,
        "/v1/predict",
        "k-score",
        Some(("application/json", one.clone())),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    // A scoring key cannot start training or batch jobs, or reload the model.
    let (s, v) = send(
        &api,
        M::POST,
        "/v1/training-jobs",
        "k-score",
        Some(("text/csv", b"a\n1\n".to_vec())),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN, "{v}");
    assert!(
        v["detail"].as_str().unwrap().contains("'train' scope"),
        "{v}"
    );
    let (s, _) = send(
        &api,
        M::POST,
        "/v1/batch-jobs",
        "k-score",
        Some(("text/csv", applications_csv(3))),
    )
    .await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = send(&api, M::POST, "/v1/model/reload", "k-a", None).await;
    assert_eq!(s, StatusCode::FORBIDDEN);
    let (s, _) = send(&api, M::POST, "/v1/model/reload", "k-ops", None).await;
    assert_eq!(s, StatusCode::OK);

    // lender-a's job: lender-b cannot read, fetch results of, or cancel it; ops can.
    let (s, job) = send(
        &api,
        M::POST,
        "/v1/batch-jobs",
        "k-a",
        Some(("text/csv", applications_csv(20))),
    )
    .await;
    assert_eq!(s, StatusCode::ACCEPTED, "{job}");
    assert!(
        job.get("owner").is_none(),
        "the key id is not echoed: {job}"
    );
    let path = format!("/v1/batch-jobs/{}", job["id"].as_str().unwrap());
    for (m, p) in [
        (M::GET, path.clone()),
        (M::GET, format!("{path}/results")),
        (M::GET, format!("{path}/errors")),
        (M::DELETE, path.clone()),
    ] {
        let (s, _) = send(&api, m.clone(), &p, "k-b", None).await;
        assert_eq!(s, StatusCode::NOT_FOUND, "{m} {p}");
    }
    let (s, _) = send(&api, M::GET, &path, "k-a", None).await;
    assert_eq!(s, StatusCode::OK);
    let (s, _) = send(&api, M::GET, &path, "k-ops", None).await;
    assert_eq!(s, StatusCode::OK);
    // The same Idempotency-Key from another key is another job, not a view of lender-a's.
    let idem = |key: &'static str| {
        api.client
            .post(format!("{}/v1/batch-jobs", api.address))
            .header("x-api-key", key)
            .header("idempotency-key", "same-key")
            .header("content-type", "text/csv")
            .body(applications_csv(5))
            .send()
    };
    let a: Value = idem("k-a").await.unwrap().json().await.unwrap();
    let b = idem("k-b").await.unwrap();
    assert_eq!(b.status(), StatusCode::ACCEPTED);
    let b: Value = b.json().await.unwrap();
    assert_ne!(a["id"], b["id"]);
}

/// Batch uploads stay in JOBS_ROOT, beside (or even inside) the registry's artifact root, and no
/// registry endpoint reaches them.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn applicants_files_are_not_reachable_through_the_registry() {
    for nested in [false, true] {
        let base = test_support::tmp("api-jobs-apart");
        let artifacts = base.join("artifacts");
        let jobs = if nested {
            artifacts.join("jobs")
        } else {
            base.join("jobs")
        };
        let (registry, _h) = crate::helpers::spawn_registry_with(
            crate::helpers::Db::Sqlite,
            &[
                "--artifacts-destination",
                artifacts.to_str().unwrap(),
                "--jobs-root",
                jobs.to_str().unwrap(),
            ],
        )
        .await;
        let api = api_with_keys(&jobs).await;
        let (s, job) = send(
            &api,
            reqwest::Method::POST,
            "/v1/batch-jobs",
            "k-a",
            Some(("text/csv", applications_csv(10))),
        )
        .await;
        assert_eq!(s, StatusCode::ACCEPTED, "{job}");
        let id = job["id"].as_str().unwrap().to_string();
        let upload = jobs.join("jobs").join(&id).join("input.csv");
        assert!(
            upload.is_file(),
            "the upload is under JOBS_ROOT: {}",
            upload.display()
        );
        let rel = if nested {
            format!("jobs/jobs/{id}/input.csv")
        } else {
            format!("../jobs/jobs/{id}/input.csv")
        };
        let client = reqwest::Client::new();
        for path in [
            format!("/api/2.0/mlflow-artifacts/artifacts/{rel}"),
            format!("/ajax-api/2.0/mlflow-artifacts/artifacts/{rel}"),
            format!(
                "/api/2.0/mlflow-artifacts/artifacts?path={}",
                rel.trim_end_matches("/input.csv")
            ),
            format!("/api/2.0/mlflow-artifacts/artifacts/jobs%2Fjobs%2F{id}%2Finput.csv"),
        ] {
            let r = client
                .get(format!("{registry}{path}"))
                .send()
                .await
                .unwrap();
            let s = r.status();
            let body = r.text().await.unwrap();
            assert!(s.is_client_error(), "{path}: {s} {body}");
            assert!(!body.contains("checking_account"), "{path}: {body}");
        }
        // The root listing does not show the jobs folder.
        let listing = client
            .get(format!(
                "{registry}/api/2.0/mlflow-artifacts/artifacts?path="
            ))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        assert!(!listing.contains("\"jobs\""), "{listing}");
        // Nor does an experiment whose artifact location points into it.
        let c = mlflow_client::Client::new(&registry, None).unwrap();
        let exp = c.get_or_create_experiment("probe").await.unwrap();
        let run = c.create_run(&exp, "probe", &[]).await.unwrap();
        let listed = client
            .get(format!("{registry}/api/2.0/mlflow/artifacts/list"))
            .query(&[
                ("run_id", run.run_id.as_str()),
                ("path", &format!("../../{rel}")),
            ])
            .send()
            .await
            .unwrap();
        assert!(listed.status().is_client_error());
    }
}
