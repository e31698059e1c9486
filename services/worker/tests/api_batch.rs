//! A batch file through the API: accepted (202 + Location), chunked, queued in real Redis,
//! scored by a worker, results streamed back in order; idempotent resubmission; clear errors.

mod common;

use std::time::Duration;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_csv_file_is_accepted_scored_in_chunks_and_returned_in_order() {
    telemetry::init_for_tests();
    let dir = test_support::tmp("api-batch");
    let bundle = common::train_bundle(&dir, 10);
    let input = common::write_input(&dir, 1000);
    let stack = common::spawn_stack(&dir, &bundle, &["--batch-chunk-rows", "300"]).await;
    let base = stack.base.clone();

    let client = reqwest::Client::new();
    for _ in 0..100 {
        let ready = client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        let batch = client
            .get(format!("{base}/v1/batch-jobs/19700101000000-x"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 404);
        if ready && batch {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let body = std::fs::read(&input).unwrap();
    let r = client
        .post(format!("{base}/v1/batch-jobs"))
        .header("content-type", "text/csv")
        .header("idempotency-key", "batch-1")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let location = r
        .headers()
        .get("location")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let job: serde_json::Value = r.json().await.unwrap();
    assert_eq!(
        (job["rows_total"].as_u64(), job["chunks_total"].as_u64()),
        (Some(1000), Some(4))
    );
    assert_eq!(job["model"]["name"], "local");
    // The API recorded that the chunks are queued: the reaper of jobs that never got their
    // tasks (an API stopped in between) leaves this one alone even with no grace period.
    let store = jobs::Store::redis(
        "redis://127.0.0.1:6379",
        &stack.prefix,
        Duration::from_secs(60),
    )
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(
        store.reap_unqueued(Duration::ZERO).await.unwrap(),
        Vec::<String>::new()
    );
    // The same submission again: the same job, not a second one.
    let again = client
        .post(format!("{base}/v1/batch-jobs"))
        .header("content-type", "text/csv")
        .header("idempotency-key", "batch-1")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(
        again.json::<serde_json::Value>().await.unwrap()["id"],
        job["id"]
    );
    // The same key with another file is refused (IETF Idempotency-Key draft), not taken for the
    // first job; before, the key alone decided and the first job was returned.
    let other = std::fs::read_to_string(&input)
        .unwrap()
        .replacen('\n', "\n\n", 1);
    let clash = client
        .post(format!("{base}/v1/batch-jobs"))
        .header("content-type", "text/csv")
        .header("idempotency-key", "batch-1")
        .body(other)
        .send()
        .await
        .unwrap();
    assert_eq!(clash.status(), 422);
    let problem: serde_json::Value = clash.json().await.unwrap();
    let detail = problem["detail"].as_str().unwrap();
    assert!(
        detail.contains("'batch-1'") && detail.contains(job["id"].as_str().unwrap()),
        "{problem}"
    );

    let status = common::wait_for_job(&client, &format!("{base}{location}")).await;
    assert_eq!(status["state"], "succeeded", "{status}");
    assert_eq!(
        (
            status["rows_scored"].as_u64(),
            status["chunks_done"].as_u64()
        ),
        (Some(1000), Some(4))
    );

    let text = client
        .get(format!("{base}{location}/results"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut rdr = csv::Reader::from_reader(text.as_bytes());
    let headers = rdr.headers().unwrap().clone();
    assert_eq!(&headers[0], "application_id");
    let rows: Vec<csv::StringRecord> = rdr.records().map(Result::unwrap).collect();
    assert_eq!(
        rows.iter().map(|r| r[0].to_string()).collect::<Vec<_>>(),
        common::ids(1000),
        "every row once, in order"
    );
    // Same probability as single scoring of the same application.
    let p_col = headers
        .iter()
        .position(|h| h == "default_probability")
        .unwrap();
    let mut one = csv::Reader::from_path(&input).unwrap();
    let h = one.headers().unwrap().clone();
    let first = one.records().next().unwrap().unwrap();
    let spec = model::Bundle::load(&bundle).unwrap().spec;
    let mut app_json = serde_json::Map::new();
    for f in &spec.features {
        let v = &first[h.iter().position(|x| x == f.name).unwrap()];
        app_json.insert(
            f.name.clone(),
            match f.kind {
                features::FeatureKind::Numeric => serde_json::json!(v.parse::<f64>().unwrap()),
                _ => serde_json::json!(v),
            },
        );
    }
    let single: serde_json::Value = client
        .post(format!("{base}/v1/predict"))
        .json(&app_json)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let batch_p: f64 = rows[0][p_col].parse().unwrap();
    assert!((batch_p - single["default_probability"].as_f64().unwrap()).abs() < 1e-6);
    let errors = client
        .get(format!("{base}{location}/errors"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert_eq!(errors.trim(), "row,error", "no rejected rows");

    // Clear errors.
    let r = client
        .post(format!("{base}/v1/batch-jobs"))
        .header("content-type", "application/pdf")
        .body("x")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 415);
    let r = client
        .post(format!("{base}/v1/batch-jobs"))
        .header("content-type", "text/csv")
        .body("application_id,age_in_years\nA,30\n")
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422);
    assert!(r.text().await.unwrap().contains("required column"));
    let r = client
        .get(format!("{base}/v1/batch-jobs/../../etc"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 404);
    let r = client
        .delete(format!("{base}{location}"))
        .send()
        .await
        .unwrap();
    assert_eq!(
        r.json::<serde_json::Value>().await.unwrap()["state"],
        "succeeded",
        "a finished job stays finished"
    );

    stack.stop().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ndjson_files_are_scored_and_bad_lines_reported() {
    let dir = test_support::tmp("api-ndjson");
    let bundle = common::train_bundle(&dir, 5);
    let spec = model::Bundle::load(&bundle).unwrap().spec;
    let stack = common::spawn_stack(&dir, &bundle, &[]).await;
    let base = stack.base.clone();
    // Three applications as JSON lines; the second has a bad value.
    let mut rdr = csv::Reader::from_path(common::write_input(&dir, 3)).unwrap();
    let h = rdr.headers().unwrap().clone();
    let mut body = String::new();
    for (i, rec) in rdr.records().enumerate() {
        let rec = rec.unwrap();
        let mut o = serde_json::Map::new();
        o.insert(
            "application_id".into(),
            serde_json::json!(rec[0].to_string()),
        );
        for f in &spec.features {
            let v = &rec[h.iter().position(|x| x == f.name).unwrap()];
            let v = match f.kind {
                features::FeatureKind::Numeric if i == 1 && f.name == "credit_amount" => {
                    serde_json::json!("lots")
                }
                features::FeatureKind::Numeric => serde_json::json!(v.parse::<f64>().unwrap()),
                _ => serde_json::json!(v),
            };
            o.insert(f.name.clone(), v);
        }
        body.push_str(&serde_json::Value::Object(o).to_string());
        body.push('\n');
    }
    let client = reqwest::Client::new();
    let mut r = None;
    for _ in 0..100 {
        let resp = client
            .post(format!("{base}/v1/batch-jobs"))
            .header("content-type", "application/x-ndjson")
            .body(body.clone())
            .send()
            .await
            .unwrap();
        if resp.status() != 503 {
            r = Some(resp);
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let r = r.unwrap();
    assert_eq!(r.status(), 202);
    let location = r
        .headers()
        .get("location")
        .unwrap()
        .to_str()
        .unwrap()
        .to_string();
    let status = common::wait_for_job(&client, &format!("{base}{location}")).await;
    assert_eq!(
        (
            status["state"].as_str(),
            status["rows_scored"].as_u64(),
            status["rows_rejected"].as_u64()
        ),
        (Some("succeeded"), Some(2), Some(1)),
        "{status}"
    );
    let results = client
        .get(format!("{base}{location}/results"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let header = results.lines().next().unwrap();
    assert!(
        header.starts_with("application_id,")
            && header.contains(",default_probability,decision,reason_1"),
        "{results}"
    );
    assert!(
        !header.contains("credit_amount"),
        "model features are not copied"
    );
    assert!(
        results.contains("APP-000000")
            && results.contains("APP-000002")
            && !results.contains("APP-000001")
    );
    let errors = client
        .get(format!("{base}{location}/errors"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(errors.contains("credit_amount"), "{errors}");
    stack.stop().await;
}
