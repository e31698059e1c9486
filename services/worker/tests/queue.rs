//! A job split into chunks, queued in real Redis, scored by the worker: every row exactly once,
//! results equal to the Scorer's.

use std::sync::Arc;
use std::time::Duration;

use apalis::prelude::*;
use jobs::{Format, JobRecord, JobState, Layout, PinnedModel, ScoreChunk, Store};

mod common;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_queued_job_is_scored_once_per_row_by_the_worker() {
    telemetry::init_for_tests();
    let dir = test_support::tmp("worker-test");
    let (bundle, input) = (
        common::train_bundle(&dir, 10),
        common::write_input(&dir, 1000),
    );
    let prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
    let store = Store::redis("redis://127.0.0.1:6379", &prefix, Duration::from_secs(3600))
        .await
        .expect("Redis on 127.0.0.1:6379 must be running (scripts/services.sh starts it)");
    let layout = Layout::new(dir.join("storage"));
    let id = jobs::new_job_id();
    let spec = model::Bundle::load(&bundle).unwrap().spec;
    let split = jobs::split::split_file(&input, Format::Csv, 400, &spec, |n| {
        layout.chunk(&id, n, Format::Csv).unwrap()
    })
    .unwrap();
    assert_eq!((split.rows, split.chunks), (1000, 3));
    let pinned = PinnedModel {
        name: "local".into(),
        version: "1".into(),
        local_uri: Some(bundle.display().to_string()),
    };
    let record = JobRecord::scoring(
        id.clone(),
        Format::Csv,
        split.rows,
        split.chunks,
        pinned.clone(),
        Default::default(),
    );
    store.create(&record).await.unwrap();
    let mut queue = jobs::queue::queue("redis://127.0.0.1:6379", &format!("{prefix}score-batch"))
        .await
        .unwrap();
    for chunk in 0..split.chunks {
        queue
            .push(ScoreChunk {
                job_id: id.clone(),
                chunk,
                format: Format::Csv,
                model: pinned.clone(),
                trace_context: Default::default(),
                first_row: 0,
                reasons: Default::default(),
            })
            .await
            .unwrap();
    }
    let state = Arc::new(job_handlers::WorkerState::new(
        store,
        layout.clone(),
        None,
        dir.join("models"),
    ));
    let watch = state.clone();
    let job = id.clone();
    let finished = async move {
        for _ in 0..600 {
            if watch
                .store
                .get(&job)
                .await
                .map(|r| r.state.is_final())
                .unwrap_or(false)
            {
                return Ok::<(), std::io::Error>(());
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        Err(std::io::Error::other("the job did not finish within 60 s"))
    };
    WorkerBuilder::new("test-worker")
        .backend(queue)
        .concurrency(2)
        .data(state.clone())
        .build(job_handlers::chunk::handle)
        .run_until(finished)
        .await
        .unwrap();
    let rec = state.store.get(&id).await.unwrap();
    assert_eq!(
        (
            rec.state,
            rec.rows_scored,
            rec.rows_rejected,
            rec.chunks_done
        ),
        (JobState::Succeeded, 1000, 0, 3),
        "{rec:?}"
    );
    // Every row exactly once, in order, with the Scorer's probability.
    let scorer = model::Scorer::new(model::Bundle::load(&bundle).unwrap()).unwrap();
    let mut rdr = csv::Reader::from_path(&input).unwrap();
    let headers = rdr.headers().unwrap().clone();
    let inputs: Vec<csv::StringRecord> = rdr.records().map(Result::unwrap).collect();
    let mut ids = Vec::new();
    for chunk in 0..3 {
        let mut r = csv::Reader::from_path(layout.result(&id, chunk).unwrap()).unwrap();
        let h = r.headers().unwrap().clone();
        assert_eq!(&h[0], "application_id");
        assert!(
            !h.iter().any(|c| c == "creditability"),
            "the label is not copied"
        );
        let p_col = h.iter().position(|c| c == "default_probability").unwrap();
        for rec in r.records() {
            let rec = rec.unwrap();
            let n = ids.len();
            let raws: Vec<features::Raw> = scorer
                .bundle()
                .spec
                .features
                .iter()
                .map(|f| {
                    features::Raw::from_cell(
                        &inputs[n][headers.iter().position(|x| x == f.name).unwrap()],
                    )
                })
                .collect();
            let want = scorer.score(&raws, false).unwrap().default_probability;
            assert!((rec[p_col].parse::<f64>().unwrap() - want).abs() < 1e-6);
            ids.push(rec[0].to_string());
        }
    }
    assert_eq!(
        ids,
        (0..1000).map(|i| format!("APP-{i:06}")).collect::<Vec<_>>()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_chunk_that_keeps_failing_fails_its_job_with_the_reason_after_retries() {
    let dir = test_support::tmp("worker-fail");
    let prefix = format!("test:{}:", uuid::Uuid::new_v4().simple());
    let store = Store::redis("redis://127.0.0.1:6379", &prefix, Duration::from_secs(3600))
        .await
        .expect("Redis on 127.0.0.1:6379");
    let layout = Layout::new(dir.join("storage"));
    let id = jobs::new_job_id();
    // Pinned to a bundle that does not exist: loading fails every time.
    let pinned = PinnedModel {
        name: "local".into(),
        version: "1".into(),
        local_uri: Some(dir.join("missing").display().to_string()),
    };
    let record = JobRecord::scoring(
        id.clone(),
        Format::Csv,
        1,
        1,
        pinned.clone(),
        Default::default(),
    );
    store.create(&record).await.unwrap();
    let mut state = job_handlers::WorkerState::new(store, layout, None, dir.join("models"));
    state.attempts = 3;
    state.retry_base_ms = 50;
    let state = Arc::new(state);
    let task = ScoreChunk {
        job_id: id.clone(),
        chunk: 0,
        format: Format::Csv,
        model: pinned,
        trace_context: Default::default(),
        first_row: 0,
        reasons: Default::default(),
    };
    // Through apalis' retry layer, on the in-process queue the API's embedded mode uses.
    let (queue, _training) = job_handlers::in_process(state.clone(), 1);
    let started = std::time::Instant::now();
    queue.push_all(vec![task]).await.unwrap();
    let deadline = started + Duration::from_secs(20);
    while state.store.get(&id).await.unwrap().state != JobState::Failed {
        assert!(std::time::Instant::now() < deadline, "the job never failed");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert!(
        started.elapsed() >= Duration::from_millis(150),
        "retried with backoff (50 + 100 ms)"
    );
    let r = state.store.get(&id).await.unwrap();
    assert_eq!(r.state, JobState::Failed);
    assert!(
        r.error
            .as_deref()
            .is_some_and(|e| e.contains("chunk 0") && e.contains("missing")),
        "{r:?}"
    );
}
