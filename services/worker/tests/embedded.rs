//! Embedded mode (no REDIS_URL): the API runs batch jobs on an in-process apalis queue with the
//! worker's own handler. Also: results as NDJSON by `Accept`, rejected rows numbered by their
//! place in the uploaded file, and reasons only for adverse decisions when asked.

mod common;

use std::time::Duration;

use clap::Parser;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn without_redis_the_api_runs_batch_jobs_in_process() {
    telemetry::init_for_tests();
    let dir = test_support::tmp("api-embedded");
    let bundle = common::train_bundle(&dir, 10);
    let input = common::write_input(&dir, 1000);
    // Row 651 of the file (in the third chunk) gets a value that cannot be scored.
    let text = std::fs::read_to_string(&input).unwrap();
    let header: Vec<&str> = text.lines().next().unwrap().split(',').collect();
    let amount = header.iter().position(|h| *h == "credit_amount").unwrap();
    let body: String = text
        .lines()
        .enumerate()
        .map(|(i, line)| {
            if i == 651 {
                let mut cells: Vec<String> = line.split(',').map(String::from).collect();
                cells[amount] = "lots".into();
                cells.join(",") + "\n"
            } else {
                format!("{line}\n")
            }
        })
        .collect();
    let storage = dir.join("storage");
    let settings = api::Settings::try_parse_from([
        "api",
        "--port",
        "0",
        "--model-uri",
        bundle.to_str().unwrap(),
        "--jobs-root",
        storage.to_str().unwrap(),
        "--batch-chunk-rows",
        "300",
    ])
    .unwrap();
    assert!(settings.redis_url.is_none());
    let app = api::Application::build(settings).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    let client = reqwest::Client::new();
    for _ in 0..100 {
        if client
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    let bad = client
        .post(format!("{base}/v1/batch-jobs?reasons=some"))
        .header("content-type", "text/csv")
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(bad.status(), 422);
    assert!(bad.text().await.unwrap().contains("adverse"));

    let r = client
        .post(format!("{base}/v1/batch-jobs?reasons=adverse"))
        .header("content-type", "text/csv")
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let status = common::wait_for_job(&client, &format!("{base}{location}")).await;
    assert_eq!(
        (
            status["state"].as_str(),
            status["rows_scored"].as_u64(),
            status["rows_rejected"].as_u64(),
            status["chunks_done"].as_u64(),
            status["reasons"].as_str()
        ),
        (
            Some("succeeded"),
            Some(999),
            Some(1),
            Some(4),
            Some("adverse")
        ),
        "{status}"
    );

    // CSV by default: every good row once, in order; reasons only where the decision is adverse.
    let csv_text = client
        .get(format!("{base}{location}/results"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let mut rdr = csv::Reader::from_reader(csv_text.as_bytes());
    let h = rdr.headers().unwrap().clone();
    let col = |name: &str| h.iter().position(|x| x == name).unwrap();
    let (decision, reason_1) = (col("decision"), col("reason_1"));
    let rows: Vec<csv::StringRecord> = rdr.records().map(Result::unwrap).collect();
    let mut expected = common::ids(1000);
    expected.remove(650);
    assert_eq!(
        rows.iter().map(|r| r[0].to_string()).collect::<Vec<_>>(),
        expected
    );
    let adverse = rows.iter().filter(|r| &r[decision] != "approve").count();
    assert!(adverse > 0 && adverse < rows.len(), "{adverse}");
    for r in &rows {
        if &r[decision] == "approve" {
            assert_eq!(&r[reason_1], "", "no reasons for approvals: {r:?}");
        }
    }
    assert!(rows
        .iter()
        .any(|r| &r[decision] != "approve" && !r[reason_1].is_empty()));

    // NDJSON when asked for: the same rows, typed.
    let nd = client
        .get(format!("{base}{location}/results"))
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap();
    assert_eq!(nd.headers()["content-type"], "application/x-ndjson");
    let nd = nd.text().await.unwrap();
    let objs: Vec<serde_json::Value> = nd
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(objs.len(), rows.len());
    for (o, r) in objs.iter().zip(&rows) {
        assert_eq!(o["application_id"], r[0]);
        let p: f64 = r[col("default_probability")].parse().unwrap();
        assert_eq!(o["default_probability"].as_f64(), Some(p));
        assert_eq!(o["decision"], r[decision]);
        let reasons = o["reasons"].as_array().unwrap();
        assert_eq!(
            reasons.first().and_then(|v| v.as_str()).unwrap_or(""),
            &r[reason_1]
        );
    }

    // The rejected row, numbered as in the file (1-based, header not counted).
    let errors = client
        .get(format!("{base}{location}/errors"))
        .header("accept", "application/x-ndjson")
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    let errs: Vec<serde_json::Value> = errors
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(errs.len(), 1, "{errors}");
    assert_eq!(errs[0]["row"], 651);
    assert!(errs[0]["error"].as_str().unwrap().contains("credit_amount"));
}
