use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{spawn_app, Db};
use crate::on_both_backends;

async fn experiments_create_get_duplicate_and_search(db: Db) {
    let app = spawn_app(db).await;
    let id = app.create_experiment("loan-default-a").await;
    app.create_experiment("loan-default-b").await;
    app.create_experiment("other").await;
    let (s, v) = app.get("/experiments/get", &[("experiment_id", &id)]).await;
    assert_eq!(s, StatusCode::OK);
    assert_eq!(
        v["experiment"]["artifact_location"],
        format!("mlflow-artifacts:/{id}")
    );
    let (s, v) = app
        .post("/experiments/create", json!({"name": "other"}))
        .await;
    assert_eq!(
        (s, v["error_code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("RESOURCE_ALREADY_EXISTS"))
    );
    let (s, v) = app
        .get("/experiments/get-by-name", &[("experiment_name", "nope")])
        .await;
    assert_eq!(
        (s, v["error_code"].as_str()),
        (StatusCode::NOT_FOUND, Some("RESOURCE_DOES_NOT_EXIST"))
    );
    let (s, v) = app.post("/experiments/search", json!({"filter": "name LIKE 'loan-default-%'", "order_by": ["name ASC"], "max_results": 1})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["experiments"][0]["name"], "loan-default-a");
    let token = v["next_page_token"].as_str().unwrap().to_string();
    let (_, v) = app.post("/experiments/search", json!({"filter": "name LIKE 'loan-default-%'", "order_by": ["name ASC"], "max_results": 1, "page_token": token})).await;
    assert_eq!(v["experiments"][0]["name"], "loan-default-b");
    assert!(v.get("next_page_token").is_none());
    let (s, v) = app
        .post("/experiments/search", json!({"page_token": "garbage!"}))
        .await;
    assert_eq!(
        (s, v["error_code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_PARAMETER_VALUE"))
    );
}
on_both_backends!(
    experiments_create_get_duplicate_and_search,
    experiments_create_get_duplicate_and_search
);

/// Locations are recorded as MLflow records them (URIs as given, relative paths made absolute
/// from the working directory), but the server only reads and writes under its own root: a location
/// on its own store that escapes the root is refused, and a run elsewhere is not served.
async fn artifact_locations_outside_the_root_are_refused(db: Db) {
    let app = spawn_app(db).await;
    for loc in [
        "mlflow-artifacts:/../../x",
        "mlflow-artifacts://evil-host/x",
        "mlflow-artifacts:/a#b",
        "mlflow-artifacts:/a?b=1",
        "http://127.0.0.1:1/api/2.0/mlflow-artifacts/artifacts/../../x",
    ] {
        let (s, v) = app
            .post(
                "/experiments/create",
                json!({"name": format!("x-{}", loc.len()), "artifact_location": loc}),
            )
            .await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{loc}: {v}");
    }
    let cwd = std::env::current_dir().unwrap();
    for (i, (loc, recorded)) in [
        (
            "mlflow-artifacts:/team/risk",
            "mlflow-artifacts:/team/risk".to_string(),
        ),
        ("s3://bucket/x", "s3://bucket/x".into()),
        // Not this server's store, whatever its path says.
        (
            "s3://bucket/mlflow-artifacts/../x",
            "s3://bucket/mlflow-artifacts/../x".into(),
        ),
        ("file:///etc", "file:///etc".into()),
        ("/etc", "/etc".into()),
        ("my_location", format!("{}/my_location", cwd.display())),
    ]
    .into_iter()
    .enumerate()
    {
        let (s, v) = app
            .post(
                "/experiments/create",
                json!({"name": format!("ok-{i}"), "artifact_location": loc}),
            )
            .await;
        assert_eq!(s, StatusCode::OK, "{loc}: {v}");
        let id = v["experiment_id"].as_str().unwrap().to_string();
        let (_, v) = app.get("/experiments/get", &[("experiment_id", &id)]).await;
        assert_eq!(v["experiment"]["artifact_location"], recorded.as_str());
        if loc.ends_with("etc") {
            // Recorded, never served: the server does not read /etc for a run there.
            let run = app.create_run(&id).await;
            let (s, v) = app.get("/artifacts/list", &[("run_id", &run)]).await;
            assert_eq!(s, StatusCode::BAD_REQUEST, "{loc}: {v}");
            let r = app
                .client
                .get(app.url("/get-artifact"))
                .query(&[("run_id", run.as_str()), ("path", "passwd")])
                .send()
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::BAD_REQUEST, "{loc}");
        }
    }
}
on_both_backends!(
    artifact_locations_outside_the_root_are_refused,
    artifact_locations_outside_the_root_are_refused
);

async fn metrics_from_many_runs_at_once_lose_nothing(db: Db) {
    let app = std::sync::Arc::new(spawn_app(db).await);
    let exp = app.create_experiment("concurrent-metrics").await;
    let mut runs = Vec::new();
    for _ in 0..6 {
        runs.push(app.create_run(&exp).await);
    }
    let mut tasks = Vec::new();
    for run in runs.clone() {
        for chunk in 0..4 {
            let app = app.clone();
            let run = run.clone();
            tasks.push(tokio::spawn(async move {
                for step in 0..10 {
                    let (s, v) = app
                        .post("/runs/log-metric", json!({"run_id": run, "key": "loss", "value": 1.0 / (1.0 + step as f64), "timestamp": 1000 + step, "step": chunk * 10 + step}))
                        .await;
                    assert_eq!(s, StatusCode::OK, "{v}");
                }
            }));
        }
    }
    for t in tasks {
        t.await.unwrap();
    }
    for run in &runs {
        let (_, v) = app
            .get(
                "/metrics/get-history",
                &[("run_id", run), ("metric_key", "loss")],
            )
            .await;
        assert_eq!(v["metrics"].as_array().unwrap().len(), 40, "run {run}");
        let (_, v) = app.get("/runs/get", &[("run_id", run)]).await;
        assert_eq!(
            v["run"]["data"]["metrics"][0]["step"], 39,
            "latest value is the highest step"
        );
    }
}
on_both_backends!(
    metrics_from_many_runs_at_once_lose_nothing,
    metrics_from_many_runs_at_once_lose_nothing
);

async fn runs_params_search_and_deleted_experiments(db: Db) {
    let app = spawn_app(db).await;
    let exp = app.create_experiment("runs").await;
    let run = app.create_run(&exp).await;
    let (s, _) = app.post("/runs/log-batch", json!({"run_id": run, "params": [{"key": "depth", "value": "4"}], "metrics": [{"key": "auc", "value": 0.81, "timestamp": 1, "step": 0}], "tags": [{"key": "owner", "value": "alice"}]})).await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = app
        .post(
            "/runs/log-parameter",
            json!({"run_id": run, "key": "depth", "value": "5"}),
        )
        .await;
    assert_eq!(
        (s, v["error_code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_PARAMETER_VALUE"))
    );
    let (_, v) = app.post("/runs/search", json!({"experiment_ids": [exp], "filter": "metrics.auc > 0.8 and params.depth = '4' and tags.owner = 'alice'"})).await;
    assert_eq!(v["runs"].as_array().unwrap().len(), 1);
    let (_, v) = app
        .post(
            "/runs/search",
            json!({"experiment_ids": [exp], "filter": "metrics.auc > 0.9"}),
        )
        .await;
    assert!(v
        .get("runs")
        .is_none_or(|r| r.as_array().unwrap().is_empty()));
    let (s, _) = app
        .post("/experiments/delete", json!({"experiment_id": exp}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let (s, v) = app
        .post(
            "/runs/log-metric",
            json!({"run_id": run, "key": "x", "value": 1, "timestamp": 1}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = app
        .post("/runs/create", json!({"experiment_id": exp}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
}
on_both_backends!(
    runs_params_search_and_deleted_experiments,
    runs_params_search_and_deleted_experiments
);

async fn view_types_choose_active_deleted_or_all(db: Db) {
    let app = spawn_app(db).await;
    let kept = app.create_experiment("kept").await;
    let gone = app.create_experiment("gone").await;
    let (s, _) = app
        .post("/experiments/delete", json!({"experiment_id": gone}))
        .await;
    assert_eq!(s, StatusCode::OK);
    let live = app.create_run(&kept).await;
    let dead = app.create_run(&kept).await;
    let (s, _) = app.post("/runs/delete", json!({"run_id": dead})).await;
    assert_eq!(s, StatusCode::OK);

    let names = |v: &serde_json::Value| -> Vec<String> {
        let mut n: Vec<String> = v["experiments"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|e| e["name"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default();
        n.retain(|n| n != "Default");
        n.sort();
        n
    };
    for (view, want) in [
        (None, vec!["kept"]),
        (Some("ACTIVE_ONLY"), vec!["kept"]),
        (Some("DELETED_ONLY"), vec!["gone"]),
        (Some("2"), vec!["gone"]),
        (Some("ALL"), vec!["gone", "kept"]),
    ] {
        let mut body = json!({"max_results": 100});
        if let Some(view) = view {
            body["view_type"] = json!(view);
        }
        let (s, v) = app.post("/experiments/search", body).await;
        assert_eq!(s, StatusCode::OK, "{view:?}: {v}");
        assert_eq!(names(&v), want, "{view:?}");
    }
    let run_ids = |v: &serde_json::Value| -> Vec<String> {
        let mut ids: Vec<String> = v["runs"]
            .as_array()
            .map(|a| {
                a.iter()
                    .map(|r| r["info"]["run_id"].as_str().unwrap().to_string())
                    .collect()
            })
            .unwrap_or_default();
        ids.sort();
        ids
    };
    let mut both = vec![live.clone(), dead.clone()];
    both.sort();
    for (view, want) in [
        (None, vec![live.clone()]),
        (Some("DELETED_ONLY"), vec![dead.clone()]),
        (Some("ALL"), both),
    ] {
        let mut body = json!({"experiment_ids": [kept]});
        if let Some(view) = view {
            body["run_view_type"] = json!(view);
        }
        let (s, v) = app.post("/runs/search", body).await;
        assert_eq!(s, StatusCode::OK, "{view:?}: {v}");
        assert_eq!(run_ids(&v), want, "{view:?}");
    }
    // An unknown view is refused, not read as ACTIVE_ONLY.
    let (s, v) = app
        .post("/experiments/search", json!({"view_type": "EVERYTHING"}))
        .await;
    assert_eq!(
        (s, v["error_code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_PARAMETER_VALUE")),
        "{v}"
    );
    assert!(v["message"].as_str().unwrap().contains("view_type"), "{v}");
    let (s, v) = app.get("/experiments/search", &[("view_type", "0")]).await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    let (s, v) = app
        .post(
            "/runs/search",
            json!({"experiment_ids": [kept], "run_view_type": "deleted"}),
        )
        .await;
    assert_eq!(
        (s, v["error_code"].as_str()),
        (StatusCode::BAD_REQUEST, Some("INVALID_PARAMETER_VALUE")),
        "{v}"
    );
}
on_both_backends!(
    view_types_choose_active_deleted_or_all,
    view_types_choose_active_deleted_or_all
);

async fn metrics_count_requests_by_route_pattern(db: Db) {
    let app = spawn_app(db).await;
    app.create_experiment("metrics").await;
    app.get("/experiments/get", &[("experiment_id", "424242")])
        .await;
    let text = app
        .client
        .get(app.url("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains(r#"http_requests_total{method="POST",route="/api/2.0/mlflow/experiments/create",status="200"}"#), "{text}");
    assert!(
        text.contains(r#"route="/api/2.0/mlflow/experiments/get",status="404""#),
        "{text}"
    );
    assert!(text.contains("http_request_duration_seconds_bucket"));
    assert!(!text.contains("424242"), "raw values never become labels");
}
on_both_backends!(
    metrics_count_requests_by_route_pattern,
    metrics_count_requests_by_route_pattern
);

async fn unknown_routes_are_json_404_and_wrong_methods_405(db: Db) {
    let app = spawn_app(db).await;
    let r = app
        .client
        .get(app.url("/api/2.0/mlflow/runs/create"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
    let r = app
        .client
        .get(app.url("/api/2.0/mlflow/does-not-exist"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::NOT_FOUND);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["error_code"], "ENDPOINT_NOT_FOUND");
    let r = app
        .client
        .get(app.url("/ajax-api/2.0/mlflow/experiments/get-by-name?experiment_name=Default"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), StatusCode::OK, "the ajax-api twins answer too");
}
on_both_backends!(
    unknown_routes_are_json_404_and_wrong_methods_405,
    unknown_routes_are_json_404_and_wrong_methods_405
);

/// A metric point logged twice (same key, value, step and timestamp; xgboost's autolog sends
/// its first point twice) is kept once, as MLflow's store keeps it; a point that differs in any
/// of them is kept.
async fn identical_metric_points_are_kept_once(db: Db) {
    let app = spawn_app(db).await;
    let exp = app.create_experiment("dup-points").await;
    let run = app.create_run(&exp).await;
    for (value, step, ts) in [
        (0.5, 0, 10),
        (0.5, 0, 10),
        (0.5, 0, 11),
        (0.6, 0, 10),
        (0.5, 1, 10),
    ] {
        let (s, _) = app
            .post(
                "/runs/log-metric",
                json!({"run_id": run, "key": "auc", "value": value, "timestamp": ts, "step": step}),
            )
            .await;
        assert_eq!(s, StatusCode::OK);
    }
    let (s, v) = app
        .post(
            "/runs/log-batch",
            json!({"run_id": run, "metrics": [{"key": "auc", "value": 0.5, "timestamp": 10, "step": 0}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let (_, v) = app
        .get(
            "/metrics/get-history",
            &[("run_id", &run), ("metric_key", "auc")],
        )
        .await;
    assert_eq!(v["metrics"].as_array().unwrap().len(), 4, "{v}");
}

on_both_backends!(
    identical_metric_points_are_kept_once,
    identical_metric_points_are_kept_once
);

/// The UI's bulk histories: one metric over several runs, by run then time, step and value,
/// cut at `max_results`; the interval variant samples steps; bad requests get MLflow's words.
async fn bulk_metric_histories(db: Db) {
    let app = spawn_app(db).await;
    let exp = app.create_experiment("bulk").await;
    let mut runs = [app.create_run(&exp).await, app.create_run(&exp).await];
    runs.sort();
    for (i, run) in runs.iter().enumerate() {
        for (ts, step, value) in [(8, 0, 1.0), (7, -2, -100.0), (8, 0, 0.0), (9, 1, 12.0)] {
            let (s, _) = app
                .post(
                    "/runs/log-metric",
                    json!({"run_id": run, "key": "b", "value": value + i as f64, "timestamp": ts, "step": step}),
                )
                .await;
            assert_eq!(s, StatusCode::OK);
        }
    }
    let ids = [
        ("run_id", runs[1].as_str()),
        ("run_id", runs[0].as_str()),
        ("metric_key", "b"),
    ];
    let (s, v) = app.get("/metrics/get-history-bulk", &ids).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let got: Vec<(String, i64, f64)> = v["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            (
                m["run_id"].as_str().unwrap().to_string(),
                m["timestamp"].as_i64().unwrap(),
                m["value"].as_f64().unwrap(),
            )
        })
        .collect();
    let mut expected = Vec::new();
    for (i, run) in runs.iter().enumerate() {
        for (ts, value) in [(7, -100.0), (8, 0.0), (8, 1.0), (9, 12.0)] {
            expected.push((run.clone(), ts, value + i as f64));
        }
    }
    assert_eq!(got, expected);
    let (_, v) = app
        .get(
            "/metrics/get-history-bulk",
            &[
                ("run_id", runs[0].as_str()),
                ("metric_key", "b"),
                ("max_results", "2"),
            ],
        )
        .await;
    assert_eq!(v["metrics"].as_array().unwrap().len(), 2);
    let (s, v) = app
        .get("/metrics/get-history-bulk", &[("metric_key", "b")])
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        v["message"],
        "GetMetricHistoryBulk request must specify at least one run_id."
    );
    let (s, v) = app
        .get(
            "/metrics/get-history-bulk-interval",
            &[
                ("run_ids", runs[0].as_str()),
                ("metric_key", "b"),
                ("start_step", "1"),
            ],
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST);
    assert_eq!(
        v["message"],
        "If either start step or end step are specified, both must be specified."
    );
    let (s, v) = app
        .get(
            "/metrics/get-history-bulk-interval",
            &[
                ("run_ids", runs[0].as_str()),
                ("metric_key", "b"),
                ("start_step", "-5"),
                ("end_step", "0"),
            ],
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let steps: Vec<i64> = v["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["step"].as_i64().unwrap())
        .collect();
    assert_eq!(steps, [-2, 0, 0]);
}
on_both_backends!(bulk_metric_histories, bulk_metric_histories);
