//! MLflow 3's webhooks: CRUD as the client expects it, and alias moves delivered to a real
//! receiver, signed as MLflow signs them.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use reqwest::StatusCode;
use serde_json::{json, Value};

use crate::helpers::{spawn_app, Db, TestApp};
use crate::on_both_backends;

/// What a receiver got: headers of interest and the raw body.
#[derive(Clone, Debug)]
struct Delivery {
    id: String,
    timestamp: String,
    signature: Option<String>,
    body: String,
}

/// A webhook receiver on a free loopback port; answers 503 to the first delivery when `flaky`.
fn receiver(flaky: bool) -> (String, Arc<Mutex<Vec<Delivery>>>) {
    let got: Arc<Mutex<Vec<Delivery>>> = Arc::default();
    let seen = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!(
        "http://127.0.0.1:{}/hook",
        listener.local_addr().unwrap().port()
    );
    let store = got.clone();
    let server = HttpServer::new(move || {
        let store = store.clone();
        let seen = seen.clone();
        App::new().route(
            "/hook",
            web::post().to(move |req: HttpRequest, body: web::Bytes| {
                let store = store.clone();
                let n = seen.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                async move {
                    if flaky && n == 0 {
                        return HttpResponse::ServiceUnavailable().finish();
                    }
                    let h = |k: &str| {
                        req.headers()
                            .get(k)
                            .and_then(|v| v.to_str().ok())
                            .map(String::from)
                    };
                    store.lock().unwrap().push(Delivery {
                        id: h("x-mlflow-delivery-id").unwrap_or_default(),
                        timestamp: h("x-mlflow-timestamp").unwrap_or_default(),
                        signature: h("x-mlflow-signature"),
                        body: String::from_utf8(body.to_vec()).unwrap(),
                    });
                    HttpResponse::Ok().body("thanks")
                }
            }),
        )
    })
    .workers(1)
    .listen(listener)
    .unwrap()
    .run();
    tokio::spawn(server);
    (url, got)
}

async fn send(
    app: &TestApp,
    method: reqwest::Method,
    path: &str,
    body: Value,
) -> (StatusCode, Value) {
    let r = app
        .client
        .request(method, app.url(&format!("/api/2.0/mlflow{path}")))
        .json(&body)
        .send()
        .await
        .unwrap();
    let s = r.status();
    (s, r.json().await.unwrap_or(Value::Null))
}

/// HMAC-SHA256 over "{id}.{timestamp}.{body}", base64, as MLflow's receivers check it.
fn expected_signature(secret: &str, d: &Delivery) -> String {
    use base64::Engine;
    use hmac::Mac;
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).unwrap();
    mac.update(format!("{}.{}.{}", d.id, d.timestamp, d.body).as_bytes());
    format!(
        "v1,{}",
        base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
    )
}

async fn deliveries(got: &Arc<Mutex<Vec<Delivery>>>, n: usize) -> Vec<Delivery> {
    for _ in 0..100 {
        if got.lock().unwrap().len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    got.lock().unwrap().clone()
}

async fn alias_moves_reach_subscribers_signed(db: Db) {
    let app = spawn_app(db).await;
    let (url, got) = receiver(true);
    let (s, v) = app
        .post(
            "/webhooks",
            json!({"name": "api", "url": url, "secret": "s3cret",
                   "events": [{"entity": "MODEL_VERSION_ALIAS", "action": "CREATED"},
                              {"entity": "MODEL_VERSION_ALIAS", "action": "DELETED"}]}),
        )
        .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    let id = v["webhook"]["webhook_id"].as_str().unwrap().to_string();
    assert_eq!(v["webhook"]["status"], "ACTIVE");
    assert!(
        v["webhook"].get("secret").is_none(),
        "the secret is never answered"
    );
    // A second webhook, disabled: nothing reaches it.
    let (other_url, other) = receiver(false);
    app.post(
        "/webhooks",
        json!({"name": "off", "url": other_url, "status": "DISABLED",
               "events": [{"entity": "MODEL_VERSION_ALIAS", "action": "CREATED"}]}),
    )
    .await;

    app.model_with_versions("loan-default", 2).await;
    let (s, _) = app
        .post(
            "/registered-models/alias",
            json!({"name": "loan-default", "alias": "champion", "version": "2"}),
        )
        .await;
    assert_eq!(s, StatusCode::OK);
    // Delivered after one refused try (503 is retried).
    let d = deliveries(&got, 1).await;
    assert_eq!(d.len(), 1, "{d:?}");
    let body: Value = serde_json::from_str(&d[0].body).unwrap();
    assert_eq!(body["entity"], "model_version_alias");
    assert_eq!(body["action"], "created");
    assert_eq!(
        body["data"],
        json!({"name": "loan-default", "alias": "champion", "version": "2"})
    );
    assert_eq!(
        d[0].signature.as_deref(),
        Some(expected_signature("s3cret", &d[0]).as_str())
    );
    let age = (chrono::Utc::now().timestamp() - d[0].timestamp.parse::<i64>().unwrap()).abs();
    assert!(age < 60);

    let (s, _) = send(
        &app,
        reqwest::Method::DELETE,
        "/registered-models/alias",
        json!({"name": "loan-default", "alias": "champion"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    let d = deliveries(&got, 2).await;
    let body: Value = serde_json::from_str(&d[1].body).unwrap();
    assert_eq!(
        (body["action"].as_str(), &body["data"]["alias"]),
        (Some("deleted"), &json!("champion"))
    );
    assert!(
        other.lock().unwrap().is_empty(),
        "a disabled webhook gets nothing"
    );

    // The test endpoint sends one example event and reports the answer.
    let (s, v) = app.post(&format!("/webhooks/{id}/test"), json!({})).await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["result"]["success"], true, "{v}");
    assert_eq!(v["result"]["response_status"], 200);
}
on_both_backends!(
    alias_moves_reach_subscribers_signed,
    alias_moves_reach_subscribers_signed
);

async fn webhooks_are_managed_as_mlflow_does(db: Db) {
    let app = spawn_app(db).await;
    let event = json!([{"entity": "MODEL_VERSION", "action": "CREATED"}]);
    let mut ids = Vec::new();
    for i in 0..5 {
        let (s, v) = app
            .post("/webhooks", json!({"name": format!("w{i}"), "url": format!("https://example.com/{i}"), "events": event}))
            .await;
        assert_eq!(s, StatusCode::OK, "{v}");
        ids.push(v["webhook"]["webhook_id"].as_str().unwrap().to_string());
    }
    let (_, page) = app.get("/webhooks", &[("max_results", "2")]).await;
    assert_eq!(page["webhooks"].as_array().unwrap().len(), 2);
    let token = page["next_page_token"]
        .as_str()
        .expect("a next page")
        .to_string();
    let (_, next) = app
        .get("/webhooks", &[("max_results", "2"), ("page_token", &token)])
        .await;
    let first: Vec<&Value> = page["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| &w["webhook_id"])
        .collect();
    let second: Vec<&Value> = next["webhooks"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| &w["webhook_id"])
        .collect();
    assert!(first.iter().all(|id| !second.contains(id)));

    let (s, v) = send(
        &app,
        reqwest::Method::PATCH,
        &format!("/webhooks/{}", ids[0]),
        json!({"name": "renamed", "status": "DISABLED"}),
    )
    .await;
    assert_eq!(s, StatusCode::OK, "{v}");
    assert_eq!(v["webhook"]["name"], "renamed");
    assert_eq!(v["webhook"]["status"], "DISABLED");
    assert_eq!(
        v["webhook"]["url"], "https://example.com/0",
        "a partial update keeps the rest"
    );
    assert_eq!(v["webhook"]["events"], event);

    for (url, message) in [
        ("   ", "Webhook URL cannot be empty or just whitespace"),
        ("ftp://example.com", "Invalid webhook URL scheme"),
        ("http://[invalid", "Invalid webhook URL"),
    ] {
        let (s, v) = send(
            &app,
            reqwest::Method::PATCH,
            &format!("/webhooks/{}", ids[1]),
            json!({"url": url}),
        )
        .await;
        assert_eq!(s, StatusCode::BAD_REQUEST);
        assert!(
            v["message"].as_str().unwrap().contains(message),
            "{url}: {v}"
        );
    }
    let (s, v) = app
        .post("/webhooks", json!({"name": "x", "url": "https://example.com", "events": [{"entity": "PROMPT_ALIAS", "action": "CREATED"}]}))
        .await;
    assert_eq!(
        s,
        StatusCode::BAD_REQUEST,
        "an event this server never sends: {v}"
    );

    let (s, _) = send(
        &app,
        reqwest::Method::DELETE,
        &format!("/webhooks/{}", ids[2]),
        json!({}),
    )
    .await;
    assert_eq!(s, StatusCode::OK);
    for (method, path) in [
        (reqwest::Method::GET, format!("/webhooks/{}", ids[2])),
        (reqwest::Method::DELETE, format!("/webhooks/{}", ids[2])),
        (reqwest::Method::PATCH, "/webhooks/nonexistent".to_string()),
    ] {
        let (s, v) = send(&app, method, &path, json!({"name": "n"})).await;
        assert_eq!(s, StatusCode::NOT_FOUND);
        assert_eq!(v["error_code"], "RESOURCE_DOES_NOT_EXIST");
        assert!(
            v["message"]
                .as_str()
                .unwrap()
                .starts_with("Webhook with ID "),
            "{v}"
        );
    }
}
on_both_backends!(
    webhooks_are_managed_as_mlflow_does,
    webhooks_are_managed_as_mlflow_does
);
