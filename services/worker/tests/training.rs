//! A training job in the production topology: submitted to the API with Redis, trained by a
//! separate worker process, logged and registered in a real registry; the alias stays put.

mod common;

use std::process::{Command, Stdio};
use std::time::Duration;

use std::sync::Arc;

use clap::Parser;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_worker_process_trains_and_registers_a_new_version() {
    let dir = test_support::tmp("worker-train");
    // The registry, with version 1 as champion.
    let registry = common::spawn_registry(&dir).await;
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

/// A training task delivered a second time after it registered its version (its worker died
/// before recording that, so the job record is not finished) registers no second version: the
/// job ends with the version the first delivery registered. Before, every delivery trained and
/// registered again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_training_task_delivered_again_registers_no_second_version() {
    let dir = test_support::tmp("worker-train-again");
    let registry = common::spawn_registry(&dir).await;
    let storage = dir.join("storage");
    let (id, task) = training_task(&storage);
    let mut registered = Vec::new();
    for _delivery in 0..2 {
        // Each delivery finds the job record unfinished.
        let store = jobs::Store::memory(Duration::from_secs(600));
        let record =
            jobs::JobRecord::training(id.clone(), "loan-default".into(), serde_json::json!({}));
        store.create(&record).await.unwrap();
        deliver(task.clone(), &store, &storage, &dir, &registry).await;
        let job = store.get(&id).await.unwrap();
        assert_eq!(job.state, jobs::JobState::Succeeded, "{job:?}");
        let output = job.output.unwrap();
        registered.push(output["registered"].clone());
    }
    assert_eq!(registered[0]["version"], "1", "{registered:?}");
    assert_eq!(registered[1], registered[0]);
    let c = mlflow_client::Client::new(&registry, None).unwrap();
    let versions = c
        .search_model_versions("name = 'loan-default'")
        .await
        .unwrap();
    assert_eq!(versions.len(), 1, "{versions:?}");
    let mv = &versions[0];
    assert_eq!(mv.run_id, registered[0]["run_id"].as_str().unwrap());
}

/// A labelled German-credit job in `storage` and its task (8 small trees, no SMOTE).
fn training_task(storage: &std::path::Path) -> (String, jobs::TrainModel) {
    let id = jobs::new_job_id();
    let job_dir = storage.join("jobs").join(&id);
    std::fs::create_dir_all(&job_dir).unwrap();
    for (from, to) in [
        ("german_credit.csv", "input.csv"),
        ("german_credit.spec.json", "spec.json"),
    ] {
        std::fs::copy(
            format!("{}/data/{from}", test_support::REPO),
            job_dir.join(to),
        )
        .unwrap();
    }
    let task = jobs::TrainModel {
        job_id: id.clone(),
        dataset: format!("jobs/{id}/input.csv"),
        spec: format!("jobs/{id}/spec.json"),
        settings: jobs::TrainSettings {
            register_as: "loan-default".into(),
            experiment: "redelivery".into(),
            trees: 8,
            max_depth: 3,
            learning_rate: 0.1,
            seed: 5,
            test_fraction: 0.2,
            smote: false,
            engine: "hist".into(),
        },
        trace_context: Default::default(),
    };
    (id, task)
}

/// A training task whose worker was killed three times (each start is counted in the job
/// record before training) is not started a fourth time: the job fails with the reason and
/// nothing is trained or registered. Before, the task went back to the queue for ever and took
/// down each worker that picked it up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_training_task_whose_worker_keeps_dying_fails_its_job() {
    let dir = test_support::tmp("worker-train-poison");
    let registry = common::spawn_registry(&dir).await;
    let storage = dir.join("storage");
    let (id, task) = training_task(&storage);
    let store = jobs::Store::memory(Duration::from_secs(600));
    let record =
        jobs::JobRecord::training(id.clone(), "loan-default".into(), serde_json::json!({}));
    store.create(&record).await.unwrap();
    // Three starts whose workers died (as the handler counts them on entry).
    for _ in 0..jobs::MAX_TRAINING_DELIVERIES {
        store.count_delivery(&id).await.unwrap();
    }
    deliver(task, &store, &storage, &dir, &registry).await;
    let job = store.get(&id).await.unwrap();
    assert_eq!(job.state, jobs::JobState::Failed, "{job:?}");
    assert!(
        job.error.as_deref().unwrap().contains("started 3 times"),
        "{job:?}"
    );
    let c = mlflow_client::Client::new(&registry, None).unwrap();
    assert!(c
        .search_model_versions("name = 'loan-default'")
        .await
        .unwrap()
        .is_empty());
}

/// Runs the training handler once on `task`, as a worker on `store` and `registry` would.
async fn deliver(
    task: jobs::TrainModel,
    store: &jobs::Store,
    storage: &std::path::Path,
    dir: &std::path::Path,
    registry: &str,
) {
    let mut state = job_handlers::WorkerState::new(
        store.clone(),
        jobs::Layout::new(storage),
        None,
        dir.join("models"),
    );
    state.tracking_uri = Some(registry.to_string());
    job_handlers::train::handle(task, apalis::prelude::Data::new(Arc::new(state)))
        .await
        .unwrap();
}
