//! The border: a web page cannot start jobs or reload the model, and another Host is refused.

use reqwest::StatusCode;

use crate::helpers::{shared_bundle, spawn_api};

#[tokio::test]
async fn cross_site_writes_and_foreign_hosts_are_refused() {
    let api = spawn_api(&["--model-uri", shared_bundle().to_str().unwrap()]).await;
    api.ready().await;
    let url = |p: &str| format!("{}{p}", api.address);
    for (path, ct) in [
        ("/v1/model/reload", "text/plain"),
        ("/v1/batch-jobs", "text/plain"),
        ("/v1/training-jobs", "text/plain"),
    ] {
        let r = api
            .client
            .post(url(path))
            .header("content-type", ct)
            .header("origin", "https://evil.example")
            .header("sec-fetch-site", "cross-site")
            .body("a=b")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::FORBIDDEN, "{path}");
        assert_eq!(
            r.headers()["content-type"].to_str().unwrap(),
            "application/problem+json"
        );
        let no_origin = api
            .client
            .delete(url("/v1/batch-jobs/0123456789abcdef0123456789abcdef"))
            .header("sec-fetch-site", "same-site")
            .send()
            .await
            .unwrap();
        assert_eq!(no_origin.status(), StatusCode::FORBIDDEN, "{path}");
    }
    let rebound = api
        .client
        .get(url("/v1/model"))
        .header("host", "attacker.example:8000")
        .send()
        .await
        .unwrap();
    assert_eq!(rebound.status(), StatusCode::FORBIDDEN);
    for probe in ["/healthz", "/metrics"] {
        let r = api
            .client
            .get(url(probe))
            .header("host", "10.0.0.9:8000")
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), StatusCode::OK, "{probe}");
    }
    // Same-origin and non-browser clients keep working.
    let same = api
        .client
        .post(url("/v1/model/reload"))
        .header("origin", &api.address)
        .send()
        .await
        .unwrap();
    assert_eq!(same.status(), StatusCode::OK);
    let client = api
        .client
        .post(url("/v1/model/reload"))
        .send()
        .await
        .unwrap();
    assert_eq!(client.status(), StatusCode::OK);
}

#[tokio::test]
async fn configured_hosts_replace_the_defaults() {
    let api = spawn_api(&[
        "--model-uri",
        shared_bundle().to_str().unwrap(),
        "--allowed-hosts",
        "scoring.example.com",
    ])
    .await;
    api.ready().await;
    let get = |host: &'static str| {
        api.client
            .get(format!("{}/v1/model", api.address))
            .header("host", host)
            .send()
    };
    assert_eq!(
        get("scoring.example.com").await.unwrap().status(),
        StatusCode::OK
    );
    assert_eq!(
        get("127.0.0.1").await.unwrap().status(),
        StatusCode::FORBIDDEN
    );
}
