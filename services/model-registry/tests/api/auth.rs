use reqwest::StatusCode;

use crate::helpers::{spawn_app_with, Db};
use crate::on_both_backends;

async fn with_auth_on_only_valid_credentials_get_in(db: Db) {
    let dir = std::env::temp_dir().join(format!("auth-files-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("users"), "alice:wonderland\n").unwrap();
    std::fs::write(dir.join("tokens"), "tok-abc\n").unwrap();
    let users = dir.join("users").display().to_string();
    let tokens = dir.join("tokens").display().to_string();
    let app = spawn_app_with(
        db,
        &["--auth-users-file", &users, "--auth-tokens-file", &tokens],
    )
    .await;
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
