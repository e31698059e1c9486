use features::Raw;
use serde_json::{json, Value};

use crate::helpers::{german, metric, shared_bundle, spawn_api, spawn_binary};

fn local() -> Vec<&'static str> {
    vec!["--model-uri", shared_bundle().to_str().unwrap()]
}

#[tokio::test]
async fn a_local_bundle_serves_at_once_and_matches_the_scorer() {
    let api = spawn_api(&local()).await;
    assert!(
        api.wait_for_version(&model::Bundle::load(shared_bundle()).unwrap().model_uuid, 5)
            .await
    );
    let scorer = model::Scorer::new(model::Bundle::load(shared_bundle()).unwrap()).unwrap();
    for (cells, app) in german().iter().take(25) {
        let (s, v) = api.post("/v1/predict", app).await;
        assert_eq!(s, 200, "{v}");
        let raws: Vec<Raw> = cells.iter().map(|c| Raw::from_cell(c)).collect();
        let want = scorer.score(&raws, true).unwrap();
        assert!(
            (v["default_probability"].as_f64().unwrap() - want.default_probability).abs() < 1e-12
        );
        assert_eq!(v["decision"], json!(want.decision));
        let got: Vec<&str> = v["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["feature"].as_str().unwrap())
            .collect();
        let exp: Vec<&str> = want.reasons.iter().map(|r| r.feature.as_str()).collect();
        assert_eq!(got, exp);
        assert!(v["reasons"]
            .as_array()
            .unwrap()
            .iter()
            .all(|r| r["contribution"].as_f64().unwrap() > 0.0 && r["text"].as_str().is_some()));
        assert!(v["request_id"].as_str().is_some_and(|r| !r.is_empty()));
    }
    let (_, v) = api.post("/v1/predict?explain=false", &german()[0].1).await;
    assert_eq!(v["reasons"], json!([]));
    let (s, v) = api.get("/v1/model").await;
    assert_eq!(s, 200);
    assert_eq!(v["spec"]["target"]["name"], "creditability");
    assert!(v["thresholds"]["decline"].as_f64().is_some());
}

async fn problem(
    api: &crate::helpers::TestApi,
    path: &str,
    body: Vec<u8>,
    content_type: &str,
) -> (u16, Value) {
    let r = api
        .client
        .post(format!("{}{path}", api.address))
        .header("content-type", content_type)
        .body(body)
        .send()
        .await
        .unwrap();
    let status = r.status().as_u16();
    assert_eq!(
        r.headers().get("content-type").unwrap(),
        "application/problem+json",
        "status {status}"
    );
    (status, r.json().await.unwrap())
}

#[tokio::test]
async fn every_error_class_is_a_problem_document_never_a_5xx() {
    let mut args = local();
    args.extend(["--max-body-bytes", "4096", "--max-batch", "3"]);
    let api = spawn_api(&args).await;
    api.wait_for_version(&model::Bundle::load(shared_bundle()).unwrap().model_uuid, 5)
        .await;
    let good = german()[0].1.clone();
    let (s, v) = problem(
        &api,
        "/v1/predict",
        b"{not json".to_vec(),
        "application/json",
    )
    .await;
    assert_eq!(s, 400, "{v}");
    let (s, _) = problem(
        &api,
        "/v1/predict",
        br#"{"credit_amount": NaN}"#.to_vec(),
        "application/json",
    )
    .await;
    assert_eq!(s, 400);
    let (s, _) = problem(
        &api,
        "/v1/predict",
        serde_json::to_vec(&good).unwrap(),
        "text/plain",
    )
    .await;
    assert_eq!(s, 415);
    let (s, _) = problem(&api, "/v1/predict", vec![b' '; 5000], "application/json").await;
    assert_eq!(s, 413);
    let (s, v) = problem(
        &api,
        "/v1/predict?explain=yes",
        serde_json::to_vec(&good).unwrap(),
        "application/json",
    )
    .await;
    assert_eq!(
        s, 400,
        "found by schemathesis: a bad query string was text/plain"
    );
    // Another method on a known path is a 405, an unknown path a 404: problem documents too.
    for (path, status) in [("/v1/predict", 405), ("/v1/nothing-here", 404)] {
        let r = api
            .client
            .get(format!("{}{path}", api.address))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), status, "{path}");
        assert_eq!(r.headers()["content-type"], "application/problem+json");
    }
    assert!(
        v["detail"]
            .as_str()
            .unwrap()
            .contains("invalid query string"),
        "{v}"
    );
    let (s, _) = problem(&api, "/v1/predict", b"[1,2,3]".to_vec(), "application/json").await;
    assert_eq!(s, 422);
    let mut bad = good.clone();
    bad["duration_in_month"] = json!("twelve");
    bad["credit_amount"] = json!(-5);
    bad["purpose"] = json!("yacht");
    bad["unknown_thing"] = json!(1);
    // Protected attributes are not scored, but a value that is sent must still fit the schema.
    bad["foreign_worker"] = json!({"nested": true});
    bad["personal_status_and_sex"] = json!("unknown");
    bad.as_object_mut().unwrap().remove("housing");
    let (s, v) = problem(
        &api,
        "/v1/predict",
        serde_json::to_vec(&bad).unwrap(),
        "application/json",
    )
    .await;
    assert_eq!(s, 422);
    let mut codes: Vec<(String, String)> = v["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["field"].as_str().unwrap().to_string(),
                e["code"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    codes.sort();
    assert_eq!(
        codes,
        [
            ("credit_amount", "out_of_range"),
            ("duration_in_month", "wrong_type"),
            ("foreign_worker", "wrong_type"),
            ("housing", "missing"),
            ("personal_status_and_sex", "unknown_category"),
            ("purpose", "unknown_category"),
            ("unknown_thing", "unknown_field"),
        ]
        .map(|(a, b)| (a.to_string(), b.to_string()))
    );
    let huge = "x".repeat(3000);
    let mut long = good.clone();
    long["purpose"] = json!(huge);
    let (s, v) = problem(
        &api,
        "/v1/predict",
        serde_json::to_vec(&long).unwrap(),
        "application/json",
    )
    .await;
    assert_eq!(s, 422);
    assert!(
        v.to_string().len() < 2000,
        "hostile input is not echoed back whole"
    );
}

#[tokio::test]
async fn batch_reports_bad_rows_by_index_and_scores_the_rest() {
    let mut args = local();
    args.extend(["--max-batch", "3"]);
    let api = spawn_api(&args).await;
    api.wait_for_version(&model::Bundle::load(shared_bundle()).unwrap().model_uuid, 5)
        .await;
    let mut bad = german()[1].1.clone();
    bad["age_in_years"] = json!("old");
    let (s, v) = api
        .post(
            "/v1/predict/batch",
            &json!({"applications": [german()[0].1, bad, german()[2].1]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(
        (v["scored"].as_u64(), v["rejected"].as_u64()),
        (Some(2), Some(1))
    );
    assert_eq!(v["results"][1]["index"], 1);
    assert_eq!(v["results"][1]["errors"][0]["field"], "age_in_years");
    assert!(v["results"][2]["default_probability"].as_f64().is_some());
    assert!(!v["results"][2]["reasons"].as_array().unwrap().is_empty());
    // Without explanations the reasons are an empty list, as on /v1/predict.
    let (s, v) = api
        .post(
            "/v1/predict/batch?explain=false",
            &json!({"applications": [german()[0].1]}),
        )
        .await;
    assert_eq!(s, 200, "{v}");
    assert_eq!(v["results"][0]["reasons"], json!([]), "{v}");
    let (s, _) = api
        .post(
            "/v1/predict/batch",
            &json!({"applications": [german()[0].1, german()[0].1, german()[0].1, german()[0].1]}),
        )
        .await;
    assert_eq!(s, 422);
    let (s, _) = api.post("/v1/predict/batch", &json!([1])).await;
    assert_eq!(s, 422);
}

#[tokio::test]
async fn api_keys_guard_scoring_but_not_the_probes() {
    let mut args = local();
    args.extend(["--api-keys", "k-one,k-two"]);
    let api = spawn_api(&args).await;
    let url = format!("{}/v1/predict", api.address);
    let r = api
        .client
        .post(&url)
        .json(&german()[0].1)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    let r = api
        .client
        .post(&url)
        .header("x-api-key", "nope")
        .json(&german()[0].1)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    api.wait_for_version(&model::Bundle::load(shared_bundle()).unwrap().model_uuid, 5)
        .await;
    let r = api
        .client
        .post(&url)
        .header("x-api-key", "k-two")
        .json(&german()[0].1)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    let r = api
        .client
        .post(&url)
        .bearer_auth("k-one")
        .json(&german()[0].1)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    for open in ["/healthz", "/readyz", "/metrics", "/openapi.json"] {
        let r = api
            .client
            .get(format!("{}{open}", api.address))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200, "{open}");
    }
}

#[tokio::test]
async fn openapi_describes_the_serving_model() {
    let api = spawn_api(&local()).await;
    assert!(
        api.wait_for_version(&model::Bundle::load(shared_bundle()).unwrap().model_uuid, 5)
            .await
    );
    let (_, doc) = api.get("/openapi.json").await;
    let props = doc["components"]["schemas"]["Application"]["properties"]
        .as_object()
        .unwrap();
    assert_eq!(props.len(), 20);
    assert_eq!(props["purpose"]["type"], "string");
    assert!(props["purpose"]["enum"].as_array().unwrap().len() > 5);
    assert_eq!(props["duration_in_month"]["maximum"], 120.0);
    assert!(doc["paths"]["/v1/predict"]["post"]["responses"]["422"].is_object());
    // Batch items are validated per row: the document must not promise a 4xx for a bad item
    // (the server answers 200 with that row rejected), and it states the count limit.
    let apps = &doc["paths"]["/v1/predict/batch"]["post"]["requestBody"]["content"]
        ["application/json"]["schema"]["properties"]["applications"];
    assert_eq!(apps["maxItems"], 1000, "{apps}");
    assert!(
        apps["items"].get("$ref").is_none() && apps["items"].get("type").is_none(),
        "{apps}"
    );
    let (s, v) = api
        .post(
            "/v1/predict/batch",
            &json!({"applications": [7, {"purpose": 3}]}),
        )
        .await;
    assert_eq!((s, v["rejected"].as_u64()), (200, Some(2)), "{v}");
    // The document allows what the server answers: the serving model's source is in its enum.
    let (_, served) = api.get("/v1/model").await;
    let sources = doc["components"]["schemas"]["ServingModel"]["properties"]["model_source"]
        ["enum"]
        .as_array()
        .unwrap();
    assert!(
        sources.contains(&served["model_source"]),
        "{} not in {sources:?}",
        served["model_source"]
    );
    let html = api
        .client
        .get(format!("{}/docs", api.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(html.contains("/openapi.json"));
}

#[tokio::test]
async fn imported_xgboost_bundles_serve_the_same_way() {
    let fixtures = format!("{}/libs/model/tests/fixtures/xgboost", test_support::REPO);
    let spec = features::Spec::from_json(
        &std::fs::read_to_string(format!("{fixtures}/spec.json")).unwrap(),
    )
    .unwrap();
    let names: Vec<String> = spec
        .features
        .iter()
        .filter(|f| f.is_model_input())
        .map(|f| f.name.clone())
        .collect();
    let ensemble = model::xgboost::import(
        &std::fs::read_to_string(format!("{fixtures}/model.json")).unwrap(),
        &names,
    )
    .unwrap();
    let t = model::Thresholds {
        approve: 0.2,
        decline: 0.5,
        rule: model::ThresholdRule::F1,
        review_recall: 0.9,
    };
    let bundle =
        model::pipeline::bundle_imported(&spec, ensemble, t, 4, model::pipeline::provenance_now())
            .unwrap();
    let dir = std::env::temp_dir().join(format!("xgb-bundle-{}", uuid::Uuid::new_v4().simple()));
    bundle.save(&dir).unwrap();
    let api = spawn_api(&["--model-uri", dir.to_str().unwrap()]).await;
    assert!(api.wait_for_version(&bundle.model_uuid, 5).await);
    let cases: Value =
        serde_json::from_str(&std::fs::read_to_string(format!("{fixtures}/cases.json")).unwrap())
            .unwrap();
    for c in cases["cases"].as_array().unwrap() {
        let mut app = serde_json::Map::new();
        for (name, v) in names.iter().zip(c["features"].as_array().unwrap()) {
            app.insert(name.clone(), v.clone());
        }
        app.insert("application_id".into(), json!("A-1"));
        let (s, v) = api.post("/v1/predict", &Value::Object(app)).await;
        assert_eq!(s, 200, "{v}");
        let want = c["probability"].as_f64().unwrap();
        assert!((v["default_probability"].as_f64().unwrap() - want).abs() < 1e-5);
    }
}

#[tokio::test]
async fn sigterm_stops_the_server_cleanly() {
    let (mut child, _port) = spawn_binary(&["--shutdown-timeout", "5"]).await;
    let status = std::process::Command::new("kill")
        .args(["-TERM", &child.0.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        if let Some(code) = child.0.try_wait().unwrap() {
            assert!(code.success(), "exit status {code}");
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "did not stop within the shutdown timeout"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}

/// Applications that arrive together are explained in one block (`explained_together_rows`
/// counts fewer blocks than rows), and each gets the very probability and reasons it gets
/// alone, to the bit.
#[tokio::test]
async fn concurrent_applications_are_explained_together_with_the_reasons_each_gets_alone() {
    // Its own process, so that the metric counts only this test's requests.
    let (_child, port) = spawn_binary(&[]).await;
    let scorer = model::Scorer::new(model::Bundle::load(shared_bundle()).unwrap()).unwrap();
    let client = reqwest::Client::new();
    let url = format!("http://127.0.0.1:{port}/v1/predict");
    let apps: Vec<_> = german().iter().take(64).collect();
    let mut blocks = (0.0, 0.0);
    for _ in 0..20 {
        let replies = futures_util::future::join_all(apps.iter().map(|(_, app)| async {
            let r = client.post(&url).json(app).send().await.unwrap();
            assert_eq!(r.status(), 200);
            r.json::<Value>().await.unwrap()
        }))
        .await;
        for ((cells, _), v) in apps.iter().zip(&replies) {
            let raws: Vec<Raw> = cells.iter().map(|c| Raw::from_cell(c)).collect();
            let want = scorer.score(&raws, true).unwrap();
            assert!(!want.reasons.is_empty());
            assert_eq!(v["reasons"], serde_json::to_value(&want.reasons).unwrap());
            assert_eq!(v["default_probability"], json!(want.default_probability));
        }
        let page = client
            .get(format!("http://127.0.0.1:{port}/metrics"))
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap();
        blocks = (
            metric(&page, "explained_together_rows_sum ").unwrap_or(0.0),
            metric(&page, "explained_together_rows_count ").unwrap_or(0.0),
        );
        if blocks.0 > blocks.1 {
            break;
        }
    }
    let (rows, count) = blocks;
    assert!(
        rows > count && (rows as usize).is_multiple_of(apps.len()),
        "{rows} rows explained in {count} blocks: none were explained together"
    );
}
