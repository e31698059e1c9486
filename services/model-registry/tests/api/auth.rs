use reqwest::StatusCode;
use serde_json::json;

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

/// A model `m` with versions 1 and 2 and `champion` on 1, made by the MANAGE user.
async fn model_with_two_versions(app: &crate::helpers::TestApp) {
    let post = |path: &str, body: serde_json::Value| {
        app.client
            .post(app.url(&format!("/api/2.0/mlflow{path}")))
            .basic_auth("alice", Some("wonderland"))
            .json(&body)
            .send()
    };
    let ok = |r: reqwest::Response| assert_eq!(r.status(), StatusCode::OK);
    ok(post("/registered-models/create", json!({"name": "m"}))
        .await
        .unwrap());
    for _ in 0..2 {
        ok(post(
            "/model-versions/create",
            json!({"name": "m", "source": "mlflow-artifacts:/x"}),
        )
        .await
        .unwrap());
    }
    ok(post(
        "/registered-models/alias",
        json!({"name": "m", "alias": "champion", "version": "1"}),
    )
    .await
    .unwrap());
}

async fn champion_of(app: &crate::helpers::TestApp) -> String {
    let v: serde_json::Value = app
        .client
        .get(app.url("/api/2.0/mlflow/registered-models/alias?name=m&alias=champion"))
        .bearer_auth("tok-read")
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    v["model_version"]["version"].as_str().unwrap().to_string()
}

async fn each_permission_allows_what_it_names(db: Db) {
    let app = spawn_app_with_auth(db).await;
    model_with_two_versions(&app).await;
    let move_alias = |user: &'static str, pw: &'static str| {
        app.client
            .post(app.url("/api/2.0/mlflow/registered-models/alias"))
            .basic_auth(user, Some(pw))
            .json(&json!({"name": "m", "alias": "champion", "version": "2"}))
            .send()
    };
    // READ: looks, but cannot move the alias, register, or delete.
    let r = move_alias("reader", "rd-pass").await.unwrap();
    assert_eq!(r.status(), StatusCode::FORBIDDEN);
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["error_code"], "PERMISSION_DENIED");
    let by_token = app
        .client
        .post(app.url("/api/2.0/mlflow/registered-models/alias"))
        .bearer_auth("tok-read")
        .json(&json!({"name": "m", "alias": "champion", "version": "2"}))
        .send()
        .await
        .unwrap();
    assert_eq!(by_token.status(), StatusCode::FORBIDDEN);
    let create = app
        .client
        .post(app.url("/api/2.0/mlflow/model-versions/create"))
        .basic_auth("reader", Some("rd-pass"))
        .json(&json!({"name": "m", "source": "mlflow-artifacts:/y"}))
        .send()
        .await
        .unwrap();
    assert_eq!(create.status(), StatusCode::FORBIDDEN);
    let search = app
        .client
        .post(app.url("/api/2.0/mlflow/experiments/search"))
        .basic_auth("reader", Some("rd-pass"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(search.status(), StatusCode::OK, "searching is reading");
    // EDIT: registers versions, but cannot move the alias or delete.
    let create = app
        .client
        .post(app.url("/api/2.0/mlflow/model-versions/create"))
        .basic_auth("editor", Some("ed-pass"))
        .json(&json!({"name": "m", "source": "mlflow-artifacts:/y"}))
        .send()
        .await
        .unwrap();
    assert_eq!(create.status(), StatusCode::OK);
    assert_eq!(
        move_alias("editor", "ed-pass").await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    let delete = app
        .client
        .delete(app.url("/api/2.0/mlflow/registered-models/delete"))
        .basic_auth("editor", Some("ed-pass"))
        .json(&json!({"name": "m"}))
        .send()
        .await
        .unwrap();
    assert_eq!(delete.status(), StatusCode::FORBIDDEN);
    // The UI's change page is a MANAGE action too.
    let ui = app
        .client
        .get(app.url("/models"))
        .basic_auth("reader", Some("rd-pass"))
        .send()
        .await
        .unwrap();
    assert_eq!(ui.status(), StatusCode::OK);
    assert_eq!(champion_of(&app).await, "1", "nothing moved");
    // MANAGE moves it.
    assert_eq!(
        move_alias("alice", "wonderland").await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(champion_of(&app).await, "2");
}
on_both_backends!(
    each_permission_allows_what_it_names,
    each_permission_allows_what_it_names
);

#[tokio::test]
async fn repeated_failures_from_one_address_are_slowed_down() {
    let app = spawn_app_with_auth(Db::Sqlite).await;
    let url = app.url("/api/2.0/mlflow/experiments/search");
    let mut last = std::time::Duration::ZERO;
    for i in 0..6 {
        let start = std::time::Instant::now();
        let r = app
            .client
            .post(&url)
            .basic_auth("alice", Some(format!("guess-{i}")))
            .json(&json!({}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::UNAUTHORIZED);
        last = start.elapsed();
    }
    // The sixth failure in a row waits at least a second (250 ms doubling from the fourth).
    assert!(last >= std::time::Duration::from_secs(1), "{last:?}");
    let good = app
        .client
        .post(&url)
        .basic_auth("alice", Some("wonderland"))
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(good.status(), StatusCode::OK);
}

/// Alias and stage moves are logged with the user and both versions (the binary's JSON log).
#[test]
fn alias_and_stage_moves_are_logged_with_user_and_versions() {
    use std::io::{BufRead, BufReader};
    let dir =
        std::env::temp_dir().join(format!("registry-moves-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir).unwrap();
    let phc = model_registry::auth::hash_password("pw").unwrap();
    std::fs::write(dir.join("users"), format!("ops:{phc}\n")).unwrap();
    std::fs::write(dir.join("perms"), "ops:MANAGE\n").unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut child = std::process::Command::new(env!("CARGO_BIN_EXE_model-registry"))
        .args([
            "--port",
            &port.to_string(),
            "--data-dir",
            dir.to_str().unwrap(),
        ])
        .args(["--auth-users-file", dir.join("users").to_str().unwrap()])
        .args([
            "--auth-permissions-file",
            dir.join("perms").to_str().unwrap(),
        ])
        .env("RUST_LOG", "info")
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let lines = std::thread::spawn(move || {
        BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
            .collect::<Vec<String>>()
    });
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let base = format!("http://127.0.0.1:{port}");
        let client = reqwest::Client::new();
        for _ in 0..100 {
            if client.get(format!("{base}/health")).send().await.is_ok() {
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(100)).await;
        }
        let post = |path: &str, body: serde_json::Value| {
            client
                .post(format!("{base}/api/2.0/mlflow{path}"))
                .basic_auth("ops", Some("pw"))
                .json(&body)
                .send()
        };
        post("/registered-models/create", json!({"name": "m"})).await.unwrap();
        for _ in 0..2 {
            post("/model-versions/create", json!({"name": "m", "source": "mlflow-artifacts:/x"}))
                .await
                .unwrap();
        }
        for v in ["1", "2"] {
            let r = post("/registered-models/alias", json!({"name": "m", "alias": "champion", "version": v}))
                .await
                .unwrap();
            assert_eq!(r.status(), StatusCode::OK);
        }
        let r = post(
            "/model-versions/transition-stage",
            json!({"name": "m", "version": "2", "stage": "Production", "archive_existing_versions": false}),
        )
        .await
        .unwrap();
        assert_eq!(r.status(), StatusCode::OK);
    });
    let _ = child.kill();
    let _ = child.wait();
    let events: Vec<serde_json::Value> = lines
        .join()
        .unwrap()
        .iter()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .filter(|v| v["target"] == "registry::moves")
        .collect();
    let field = |e: &serde_json::Value, k: &str| e["fields"][k].clone();
    let moved: Vec<_> = events
        .iter()
        .filter(|e| field(e, "event") == "alias_set")
        .collect();
    assert_eq!(moved.len(), 2, "{events:?}");
    assert_eq!(field(moved[1], "user"), "ops");
    assert_eq!(field(moved[1], "old_version"), 1);
    assert_eq!(field(moved[1], "new_version"), 2);
    assert_eq!(field(moved[1], "alias"), "champion");
    assert_eq!(field(moved[0], "old_version"), serde_json::Value::Null);
    let staged = events
        .iter()
        .find(|e| field(e, "event") == "stage_changed")
        .expect("a stage_changed line");
    assert_eq!(field(staged, "old_stage"), "None");
    assert_eq!(field(staged, "new_stage"), "Production");
    assert_eq!(field(staged, "user"), "ops");
    let _ = std::fs::remove_dir_all(&dir);
}
