//! The border: a web page cannot change the registry (the cross-site `<form>` POST that moved
//! the champion), and a request for another Host (DNS rebinding) is refused.

use reqwest::{Method, StatusCode};
use serde_json::json;

use crate::helpers::{spawn_app, spawn_app_with, Db, TestApp};
use crate::on_both_backends;

/// A model `m` with versions 1 and 2 and `champion` on version 2.
async fn model_with_champion_on_2(app: &TestApp) {
    app.model_with_versions("m", 2).await;
    let (s, _) = app
        .post(
            "/registered-models/alias",
            json!({"name": "m", "alias": "champion", "version": "2"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
}

async fn champion(app: &TestApp) -> String {
    let (_, v) = app
        .get(
            "/registered-models/alias",
            &[("name", "m"), ("alias", "champion")],
        )
        .await;
    v["model_version"]["version"].as_str().unwrap().to_string()
}

async fn cross_site_writes_are_refused(db: Db) {
    let app = spawn_app(db).await;
    model_with_champion_on_2(&app).await;
    let attack = app.url("/api/2.0/mlflow/registered-models/alias?name=m&alias=champion&version=1");
    // What a `<form enctype="text/plain" method="post">` on another site sends.
    let form = app
        .client
        .post(&attack)
        .header("content-type", "text/plain")
        .header("origin", "https://evil.example")
        .header("sec-fetch-site", "cross-site")
        .body("x=y")
        .send()
        .await
        .unwrap();
    assert_eq!(form.status(), StatusCode::FORBIDDEN);
    let body: serde_json::Value = form.json().await.unwrap();
    assert_eq!(body["error_code"], "PERMISSION_DENIED");
    // The same without the browser's headers: not JSON, so still refused.
    let plain = app
        .client
        .post(&attack)
        .header("content-type", "text/plain")
        .send()
        .await
        .unwrap();
    assert_eq!(plain.status(), StatusCode::UNSUPPORTED_MEDIA_TYPE);
    // A no-cors fetch() sends no body and no type, but says where it comes from.
    let fetch = app
        .client
        .request(
            Method::DELETE,
            app.url("/api/2.0/mlflow/registered-models/alias?name=m&alias=champion"),
        )
        .header("sec-fetch-site", "cross-site")
        .send()
        .await
        .unwrap();
    assert_eq!(fetch.status(), StatusCode::FORBIDDEN);
    // Even JSON is refused from a foreign origin.
    let json_from_page = app
        .client
        .post(app.url("/api/2.0/mlflow/registered-models/alias"))
        .header("origin", "http://localhost:8080")
        .json(&json!({"name": "m", "alias": "champion", "version": "1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(json_from_page.status(), StatusCode::FORBIDDEN);
    // Artifact uploads keep their own type but not a foreign origin.
    let upload = app
        .client
        .put(app.url("/api/2.0/mlflow-artifacts/artifacts/x.txt"))
        .header("origin", "https://evil.example")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(upload.status(), StatusCode::FORBIDDEN);
    assert_eq!(champion(&app).await, "2", "the alias did not move");
    // The same request from this origin (the UI) or from a client without Origin works.
    let same_origin = app
        .client
        .post(app.url("/api/2.0/mlflow/registered-models/alias"))
        .header("origin", &app.address)
        .json(&json!({"name": "m", "alias": "champion", "version": "1"}))
        .send()
        .await
        .unwrap();
    assert_eq!(same_origin.status(), StatusCode::OK);
    assert_eq!(champion(&app).await, "1");
}

on_both_backends!(cross_site_writes_are_refused, cross_site_writes_are_refused);

async fn only_allowed_hosts_and_origins_get_in(db: Db) {
    let app = spawn_app(db).await;
    // DNS rebinding: the browser sends the attacker's name as Host.
    let rebound = app
        .client
        .get(app.url("/api/2.0/mlflow/experiments/search?max_results=1"))
        .header("host", "attacker.example:5000")
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), StatusCode::FORBIDDEN);
    for path in ["/", "/api/2.0/mlflow-artifacts/artifacts"] {
        let s = app
            .client
            .get(app.url(path))
            .header("host", "attacker.example")
            .send()
            .await
            .unwrap()
            .status();
        assert_eq!(s, StatusCode::FORBIDDEN, "{path}");
    }
    // Probes reach pods by IP or any name.
    let health = app
        .client
        .get(app.url("/health"))
        .header("host", "10.1.2.3:5000")
        .send()
        .await
        .unwrap();
    assert_eq!(health.status(), StatusCode::OK);
    let (s, _) = app
        .get("/experiments/search", &[("max_results", "1")])
        .await;
    assert_eq!(s, StatusCode::OK, "127.0.0.1 is allowed by default");

    let app = spawn_app_with(
        db,
        &[
            "--allowed-hosts",
            "registry.example.com",
            "--cors-allowed-origins",
            "https://notebook.example.com",
        ],
    )
    .await;
    let named = |host: &'static str| {
        app.client
            .get(app.url("/api/2.0/mlflow/experiments/search?max_results=1"))
            .header("host", host)
            .send()
    };
    assert_eq!(
        named("registry.example.com").await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        named("localhost").await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
    let listed = app
        .client
        .post(app.url("/api/2.0/mlflow/experiments/create"))
        .header("host", "registry.example.com")
        .header("origin", "https://notebook.example.com")
        .json(&json!({"name": "from-notebook"}))
        .send()
        .await
        .unwrap();
    assert_eq!(listed.status(), StatusCode::OK);
    assert_eq!(
        listed
            .headers()
            .get("access-control-allow-origin")
            .and_then(|v| v.to_str().ok()),
        Some("https://notebook.example.com")
    );
}

on_both_backends!(
    only_allowed_hosts_and_origins_get_in,
    only_allowed_hosts_and_origins_get_in
);
