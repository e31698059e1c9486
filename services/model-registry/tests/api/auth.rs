use reqwest::StatusCode;

use crate::helpers::{spawn_app_with_auth, Db};
use crate::on_both_backends;

async fn with_auth_on_only_valid_credentials_get_in(db: Db) {
    let app = spawn_app_with_auth(db).await;
    let url = app.url("/api/2.0/mlflow/experiments/search");
    let resp = app
        .client
        .post(&url)
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    assert!(resp.headers().get("www-authenticate").is_some());
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error_code"], "UNAUTHENTICATED");
    let resp = app
        .client
        .post(&url)
        .basic_auth("alice", Some("wrong"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = app
        .client
        .post(&url)
        .basic_auth("alice", Some("wonderland"))
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    let resp = app
        .client
        .post(&url)
        .bearer_auth("tok-abc")
        .json(&serde_json::json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    // Artifacts are protected too; the health probe is not.
    let resp = app
        .client
        .get(app.url("/api/2.0/mlflow-artifacts/artifacts?path="))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), StatusCode::UNAUTHORIZED);
    let resp = app.client.get(app.url("/health")).send().await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
}
on_both_backends!(
    with_auth_on_only_valid_credentials_get_in,
    with_auth_on_only_valid_credentials_get_in
);
