//! Training jobs: train on the job's dataset with the training library (the same code as
//! `loanctl train`), log the run and register a new version. No alias moves.

use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use jobs::{JobState, Layout};

use crate::{metrics, JobError, WorkerState};

/// The apalis handler of training jobs: trains on the job's dataset with the training library
/// (the same code as `loanctl train`), logs the run and registers a new version. No alias moves.
pub async fn handle(
    task: jobs::TrainModel,
    state: apalis::prelude::Data<Arc<WorkerState>>,
) -> Result<(), JobError> {
    let span = tracing::info_span!("train_model", job.id = %task.job_id);
    telemetry::continue_trace(&span, &task.trace_context);
    tracing::Instrument::instrument(train_job(task, state), span).await
}

async fn train_job(
    task: jobs::TrainModel,
    state: apalis::prelude::Data<Arc<WorkerState>>,
) -> Result<(), JobError> {
    let job = state.store.get(&task.job_id).await?;
    if job.state.is_final() {
        return Ok(());
    }
    // Counted before anything else: a worker killed while training (out of memory) has the
    // task delivered again without apalis counting an attempt, and the next worker would die
    // the same way, with every batch chunk it was scoring.
    let deliveries = state.store.count_delivery(&task.job_id).await?;
    if deliveries > jobs::MAX_TRAINING_DELIVERIES {
        let reason = format!(
            "training was started {} times and its worker stopped each time before it finished \
             (most likely out of memory: the dataset may be too large for the worker's memory \
             limit); not trying again",
            deliveries - 1
        );
        tracing::warn!(job.id = %task.job_id, deliveries, "training job failed: its worker kept stopping");
        metrics::training_jobs()
            .with_label_values(&["failed"])
            .inc();
        state
            .store
            .finish(&task.job_id, JobState::Failed, &reason)
            .await?;
        return Ok(());
    }
    state.store.mark_running(&task.job_id).await?;
    if let Some(done) = already_registered(&task, &state).await? {
        // Delivered again after it registered (its worker died before recording that): the
        // job is done; training again would register a second version.
        let output = serde_json::json!({ "registered": done });
        state.store.set_output(&task.job_id, &output).await?;
        state.store.complete_chunk(&task.job_id, 0, 0, 0).await?;
        tracing::info!(
            job.id = %task.job_id,
            version = %done.version,
            "training job had already registered its version"
        );
        return Ok(());
    }
    let started = std::time::Instant::now();
    let outcome = match &state.tracking_uri {
        None => Err(anyhow::anyhow!(
            "training jobs need the model registry (MLFLOW_TRACKING_URI) to register the new version"
        )),
        Some(url) => {
            match training_config(&task, &state.layout, url) {
                // Notes carry counts and file names, never row values.
                Ok(cfg) => tokio::task::spawn_blocking(move || {
                    training::train::run(&cfg, &mut |event| {
                        if let training::Event::Note(text) = event {
                            tracing::debug!(note = text, "training");
                        }
                    })
                })
                .await
                .map_err(anyhow::Error::from)
                .and_then(|r| r),
                Err(e) => Err(e),
            }
        }
    };
    metrics::training_seconds().observe(started.elapsed().as_secs_f64());
    match outcome {
        Ok(trained) => {
            metrics::training_jobs()
                .with_label_values(&["succeeded"])
                .inc();
            let output = serde_json::to_value(&trained).map_err(anyhow::Error::from)?;
            state.store.set_output(&task.job_id, &output).await?;
            let rows = trained.metrics["test_rows"].as_u64().unwrap_or(0)
                + trained.metrics["train_rows"].as_u64().unwrap_or(0);
            state.store.complete_chunk(&task.job_id, 0, rows, 0).await?;
            tracing::info!(
                job.id = %task.job_id,
                version = trained.registered.as_ref().map(|r| r.version.as_str()).unwrap_or(""),
                "model trained and registered"
            );
            Ok(())
        }
        Err(e) => {
            metrics::training_jobs()
                .with_label_values(&["failed"])
                .inc();
            let reason = format!("{e:#}");
            // Not the reason itself: it can quote rows of the dataset (applicant data). The job
            // record, readable by whoever submitted the job, has it.
            tracing::warn!(job.id = %task.job_id, "training failed; the reason is in the job record");
            state
                .store
                .finish(&task.job_id, JobState::Failed, &reason)
                .await?;
            Ok(())
        }
    }
}

/// The version this job registered in an earlier delivery, if any. A registry that cannot be
/// asked is an error (the task is retried) rather than a reason to register twice.
async fn already_registered(
    task: &jobs::TrainModel,
    state: &WorkerState,
) -> Result<Option<training::register::Registered>, JobError> {
    let Some(url) = &state.tracking_uri else {
        return Ok(None);
    };
    let client = mlflow_client::Client::from_env(url).map_err(anyhow::Error::from)?;
    let found =
        training::register::registered_by_job(&client, &task.settings.register_as, &task.job_id)
            .await?;
    Ok(found)
}

/// The training a job asks for: its files inside the shared storage, its output folder in the
/// job's directory, the registry; everything else at the training defaults.
fn training_config(
    task: &jobs::TrainModel,
    layout: &Layout,
    tracking_uri: &str,
) -> anyhow::Result<training::Config> {
    let dir = layout.job_dir(&task.job_id).context("invalid job id")?;
    let inside = |rel: &str| -> anyhow::Result<PathBuf> {
        let p = std::path::Path::new(rel);
        anyhow::ensure!(
            p.components()
                .all(|c| matches!(c, std::path::Component::Normal(_))),
            "dataset and spec must be paths inside the shared storage"
        );
        Ok(layout.root().join(p))
    };
    let s = &task.settings;
    let mut cfg = training::Config::new(
        inside(&task.dataset)?,
        inside(&task.spec)?,
        dir.join("training"),
    );
    cfg.seed = s.seed;
    cfg.test_fraction = s.test_fraction;
    let booster = &mut cfg.model.booster;
    booster.engine = s
        .engine
        .parse()
        .map_err(|e| anyhow::anyhow!("invalid training settings: {e}"))?;
    booster.trees = s.trees;
    booster.max_depth = s.max_depth;
    booster.learning_rate = s.learning_rate;
    booster.seed = s.seed;
    cfg.model.smote = if s.smote {
        cfg.model.smote.map(|smote| model::smote::SmoteParams {
            seed: s.seed,
            ..smote
        })
    } else {
        None
    };
    cfg.registry = Some(training::Registry {
        url: tracking_uri.to_string(),
        experiment: s.experiment.clone(),
        register_as: s.register_as.clone(),
        alias: None,
        source: "training job".into(),
        job_id: Some(task.job_id.clone()),
    });
    Ok(cfg)
}
