//! Alias moves pushed by the registry's webhooks: a promotion serves within a second even with an
//! hourly poll; forged events are refused.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{register, shared_bundle, spawn_api, spawn_registry, train_bundle, Db};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_promotion_reaches_the_api_through_the_webhook_not_the_poll() {
    let (registry, _h) = spawn_registry(Db::Sqlite).await;
    let v1 = register(&registry, shared_bundle(), "champion").await;
    let api = spawn_api(&[
        "--tracking-uri",
        &registry,
        "--poll-seconds",
        "3600",
        "--model-webhook-url",
        "http://127.0.0.1:{port}/v1/model/events",
        "--model-webhook-secret",
        "s3cret",
    ])
    .await;
    assert!(api.wait_for_version(&v1, 30).await);
    // The API subscribes in the background.
    let mut subscribed = false;
    for _ in 0..100 {
        let hooks: Value = api
            .client
            .get(format!("{registry}/api/2.0/mlflow/webhooks"))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        if hooks["webhooks"].as_array().is_some_and(|h| !h.is_empty()) {
            subscribed = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(subscribed, "the API never subscribed");

    let v2 = register(&registry, &train_bundle(20, 7), "champion").await;
    assert!(
        api.wait_for_version(&v2, 3).await,
        "with an hourly poll, only the webhook can have brought {v2}"
    );

    // Forged or unsigned events are refused.
    let event = json!({"entity": "model_version_alias", "action": "created",
                       "data": {"name": "loan-default", "alias": "champion", "version": "1"}});
    let now = chrono::Utc::now().timestamp().to_string();
    for headers in [
        vec![],
        vec![
            ("x-mlflow-delivery-id", "d1".to_string()),
            ("x-mlflow-timestamp", now.clone()),
            ("x-mlflow-signature", "v1,AAAA".to_string()),
        ],
    ] {
        let mut r = api
            .client
            .post(format!("{}/v1/model/events", api.address))
            .json(&event);
        for (k, v) in headers {
            r = r.header(k, v);
        }
        let r = r.send().await.unwrap();
        assert_eq!(r.status(), 403);
    }
    // A correctly signed one is taken (and wakes the champion's poller).
    let body = event.to_string();
    let sig = {
        use base64::Engine;
        use hmac::Mac;
        let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(b"s3cret").unwrap();
        mac.update(format!("d2.{now}.{body}").as_bytes());
        format!(
            "v1,{}",
            base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
        )
    };
    let r = api
        .client
        .post(format!("{}/v1/model/events", api.address))
        .header("content-type", "application/json")
        .header("x-mlflow-delivery-id", "d2")
        .header("x-mlflow-timestamp", &now)
        .header("x-mlflow-signature", sig)
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["woken"], json!(["champion"]));
}
