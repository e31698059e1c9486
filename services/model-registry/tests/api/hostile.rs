//! Inputs schemathesis found answering 500, now answered 4xx or accepted, on both backends.

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::{spawn_app, Db};
use crate::on_both_backends;

async fn repeated_tag_keys_keep_the_last_value(db: Db) {
    let app = spawn_app(db).await;
    let tags = json!([{"key": "team", "value": "risk"}, {"key": "team", "value": "ops"}]);
    let (s, v) = app
        .post("/experiments/create", json!({"name": "dup", "tags": tags}))
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let id = v["experiment_id"].as_str().unwrap().to_string();
    let (_, v) = app.get("/experiments/get", &[("experiment_id", &id)]).await;
    assert_eq!(
        v["experiment"]["tags"],
        json!([{"key": "team", "value": "ops"}])
    );

    let (s, v) = app
        .post(
            "/registered-models/create",
            json!({"name": "m", "tags": tags}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["registered_model"]["tags"],
        json!([{"key": "team", "value": "ops"}])
    );
    let run = app.create_run(&id).await;
    let (s, v) = app
        .post(
            "/model-versions/create",
            json!({"name": "m", "source": format!("runs:/{run}/model"), "run_id": run, "tags": tags}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(
        v["model_version"]["tags"],
        json!([{"key": "team", "value": "ops"}])
    );
}
on_both_backends!(repeated_tags, repeated_tag_keys_keep_the_last_value);

async fn nul_characters_are_refused_with_400(db: Db) {
    let app = spawn_app(db).await;
    let (s, v) = app
        .post("/experiments/create", json!({"name": "a\u{0}b"}))
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    assert_eq!(v["error_code"], "INVALID_PARAMETER_VALUE");
    let (s, v) = app
        .post(
            "/experiments/create",
            json!({"name": "ok", "tags": [{"key": "k", "value": "x\u{0}"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::BAD_REQUEST, "{v}");
    for path in [
        "/api/2.0/mlflow/runs/get?run_id=a%00b",
        "/api/2.0/mlflow/logged-models/m-a%00b",
        "/runs/a%00b",
        "/model?name=a%00b",
    ] {
        let (s, body) = app.raw(reqwest::Method::GET, path, Vec::new()).await;
        assert_eq!(
            s,
            StatusCode::BAD_REQUEST,
            "{path}: {}",
            String::from_utf8_lossy(&body)
        );
    }
    // Nothing was created along the way.
    let (_, v) = app
        .get("/experiments/get-by-name", &[("experiment_name", "ok")])
        .await;
    assert_eq!(v["error_code"], "RESOURCE_DOES_NOT_EXIST", "{v}");
}
on_both_backends!(nul, nul_characters_are_refused_with_400);

/// A value of the wrong JSON type is refused with MLflow's message before anything is looked
/// up (a number where a string belongs is not a run id), and a batch metric needs a timestamp.
async fn wrong_types_get_mlflows_message(db: Db) {
    let app = spawn_app(db).await;
    let exp = app.create_experiment("types").await;
    let run = app.create_run(&exp).await;
    for (path, body, message) in [
        (
            "/runs/log-metric",
            json!({"run_id": 31, "key": "m", "value": 1, "timestamp": 1, "step": 0}),
            "Invalid value 31 for parameter 'run_id' supplied",
        ),
        (
            "/runs/log-metric",
            json!({"run_id": run, "key": "m", "value": 1, "timestamp": 1, "step": "foo"}),
            "Invalid value \"foo\" for parameter 'step' supplied",
        ),
        (
            "/experiments/create",
            json!({"name": 123}),
            "Invalid value 123 for parameter 'name' supplied",
        ),
        (
            "/experiments/create",
            json!({"name": "x", "tags": "5"}),
            "Invalid value \"5\" for parameter 'tags' supplied",
        ),
        (
            "/runs/log-batch",
            json!({"run_id": run, "metrics": "foo"}),
            "Invalid value \"foo\" for parameter 'metrics' supplied",
        ),
        (
            "/runs/log-batch",
            json!({"run_id": run, "metrics": [{"key": "mae", "value": 2.5}]}),
            "Missing value for required parameter 'metrics[0].timestamp'",
        ),
    ] {
        let (s, v) = app.post(path, body.clone()).await;
        assert_eq!(s, StatusCode::BAD_REQUEST, "{body}: {v}");
        assert_eq!(v["message"], message, "{body}");
    }
}
on_both_backends!(
    wrong_types_get_mlflows_message,
    wrong_types_get_mlflows_message
);
