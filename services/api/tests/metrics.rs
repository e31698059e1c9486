//! `/metrics` names the model being served.
//! Its own test binary, because the metrics registry is global to a process: in the `api` binary
//! other tests' servers set the serving-model gauge at the same time.

#[path = "api/helpers.rs"]
#[expect(dead_code, reason = "this binary uses only the local-bundle helpers")]
mod helpers;

use helpers::{german, shared_bundle, spawn_api};

#[tokio::test]
async fn metrics_describe_the_serving_model_and_its_predictions() {
    let api = spawn_api(&["--model-uri", shared_bundle().to_str().unwrap()]).await;
    let uuid = model::Bundle::load(shared_bundle()).unwrap().model_uuid;
    assert!(api.wait_for_version(&uuid, 5).await);
    let (s, _) = api.post("/v1/predict", &german()[0].1).await;
    assert_eq!(s, 200);
    let text = api
        .client
        .get(format!("{}/metrics", api.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(text.contains("predictions_total{decision="), "{text}");
    assert!(
        text.contains(&format!(
            "serving_model_info{{name=\"local\",version=\"{uuid}\"}} 1"
        )),
        "{text}"
    );
    assert!(
        text.contains(r#"http_requests_total{method="POST",route="/v1/predict",status="200"} 1"#),
        "{text}"
    );
}
