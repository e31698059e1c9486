//! A training job in the production topology: submitted to the API with Redis, trained by a
//! separate worker process, logged and registered in a real registry; the alias stays put.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use clap::Parser;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_process_trains_and_registers_a_new_version() {
    let dir = test_support::tmp("worker-train");
    // The registry, with version 1 as champion.
    let reg_settings = model_registry::Settings::try_parse_from([
        "model-registry",
        "--port",
        "0",
        "--data-dir",
        dir.join("registry").to_str().unwrap(),
        "--backend-store-uri",
        &model_registry::store::sqlite_url(&dir.join("registry/r.db")),
        "--artifacts-destination",
        dir.join("registry/artifacts").to_str().unwrap(),
    ])
    .unwrap();
    std::fs::create_dir_all(dir.join("registry")).unwrap();
    let registry_app = model_registry::Application::build(reg_settings)
        .await
        .unwrap();
    let registry = format!("http://127.0.0.1:{}", registry_app.port());
    tokio::spawn(registry_app.run_until_stopped());
    let bundle = common::train_bundle(&dir, 5);
    let v1 = test_support::register(&registry, "loan-default", &bundle, "champion").await;

    // The API on Redis (private queues and keys) and one worker process.
    let prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
    let storage = dir.join("storage");
    let (score_q, train_q) = (format!("{prefix}score"), format!("{prefix}train"));
    let settings = api::Settings::try_parse_from([
        "api",
        "--port",
        "0",
        "--tracking-uri",
        &registry,
        "--model-cache-dir",
        dir.join("api-models").to_str().unwrap(),
        "--redis-url",
        "redis://127.0.0.1:6379",
        "--jobs-root",
        storage.to_str().unwrap(),
        "--job-queue",
        &score_q,
        "--train-queue",
        &train_q,
        "--job-key-prefix",
        &prefix,
    ])
    .unwrap();
    let app = api::Application::build(settings).await.unwrap();
    let base = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let mut worker = Command::new(env!("CARGO_BIN_EXE_worker"))
        .env("REDIS_URL", "redis://127.0.0.1:6379")
        .env("JOB_QUEUE", &score_q)
        .env("TRAIN_QUEUE", &train_q)
        .env("JOB_KEY_PREFIX", &prefix)
        .env("JOBS_ROOT", &storage)
        .env("WORKER_PORT", port.to_string())
        .env("MLFLOW_TRACKING_URI", &registry)
        .env("MODEL_CACHE_DIR", dir.join("worker-models"))
        .stdout(Stdio::null())
        .spawn()
        .unwrap();
    let http = reqwest::Client::new();
    let mut ready = false;
    for _ in 0..300 {
        let api_ready = http
            .get(format!("{base}/readyz"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 200);
        let batch_ready = http
            .get(format!("{base}/v1/training-jobs/19700101000000-x"))
            .send()
            .await
            .is_ok_and(|r| r.status() == 404);
        if api_ready && batch_ready {
            ready = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(ready, "API ready with Redis");

    let data = std::fs::read(format!("{}/data/german_credit.csv", test_support::REPO)).unwrap();
    let r = http
        .post(format!(
            "{base}/v1/training-jobs?trees=15&experiment=retraining"
        ))
        .header("content-type", "text/csv")
        .body(data)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let location = r.headers()["location"].to_str().unwrap().to_string();
    let job = common::wait_for_job(&http, &format!("{base}{location}")).await;
    let _ = worker.kill();
    let _ = worker.wait();
    assert_eq!(job["state"], "succeeded", "{job}");
    let version = job["result"]["registered"]["version"].as_str().unwrap();
    assert_eq!(version, "2", "{job}");
    // Registered from the worker's run, in the asked-for experiment; champion unchanged.
    let c = mlflow_client::Client::new(&registry, None).unwrap();
    let mv = c.get_model_version("loan-default", version).await.unwrap();
    assert_eq!(
        mv.run_id,
        job["result"]["registered"]["run_id"].as_str().unwrap()
    );
    let exp2 = c.get_or_create_experiment("retraining").await.unwrap();
    assert_eq!(
        job["result"]["registered"]["experiment_id"]
            .as_str()
            .unwrap(),
        exp2
    );
    let champion = c
        .resolve(&mlflow_client::ModelRef::Alias {
            name: "loan-default".into(),
            alias: "champion".into(),
        })
        .await
        .unwrap();
    assert_eq!(champion.version, v1);
}
