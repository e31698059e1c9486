//! The batch worker: takes `ScoreChunk` tasks from Redis (apalis), scores the chunk's rows with
//! the same `Scorer` the API uses, writes one result part per chunk (atomically, so a redelivered
//! chunk rewrites the same file) and records completion in the job store.

pub mod config;
pub mod metrics;
pub mod run;

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use features::Raw;
use jobs::{Format, JobState, Layout, PinnedModel, ScoreChunk, Store};
use model::batch::{result_header, Row};
use model::{BlockScorer, Bundle, Columns, ReasonPolicy, Scorer};

/// What every task handler shares.
pub struct WorkerState {
    /// Tries per chunk before its job is failed.
    pub attempts: u32,
    /// First retry delay, doubled each time.
    pub retry_base_ms: u64,
    pub store: Store,
    pub layout: Layout,
    pub registry: Option<mlflow_client::Client>,
    /// The registry's URL, for training jobs (they log a run and register a version).
    pub tracking_uri: Option<String>,
    pub model_cache_dir: PathBuf,
    models: Mutex<HashMap<(String, String), Arc<Scorer>>>,
}

impl WorkerState {
    pub fn new(
        store: Store,
        layout: Layout,
        registry: Option<mlflow_client::Client>,
        model_cache_dir: PathBuf,
    ) -> WorkerState {
        WorkerState {
            attempts: 4,
            retry_base_ms: 500,
            store,
            layout,
            tracking_uri: None,
            registry,
            model_cache_dir,
            models: Mutex::default(),
        }
    }

    /// The scorer of the job's pinned model version, loaded once per process.
    async fn scorer(&self, m: &PinnedModel) -> anyhow::Result<Arc<Scorer>> {
        let key = (m.name.clone(), m.version.clone());
        if let Some(s) = self.models.lock().expect("lock").get(&key) {
            return Ok(s.clone());
        }
        let dir = match (&m.local_uri, &self.registry) {
            (Some(dir), _) => PathBuf::from(dir),
            (None, Some(client)) => {
                let uri = client.get_download_uri(&m.name, &m.version).await?;
                let dest = self
                    .model_cache_dir
                    .join(format!("{}-{}", m.name, m.version))
                    .join(uuid::Uuid::new_v4().simple().to_string());
                client.download_artifacts(&uri, &dest).await?;
                dest
            }
            (None, None) => anyhow::bail!(
                "job pinned to {} version {} but no registry is configured",
                m.name,
                m.version
            ),
        };
        let scorer = tokio::task::spawn_blocking(move || -> anyhow::Result<Scorer> {
            Ok(Scorer::new(Bundle::load(&dir)?)?)
        })
        .await??;
        let scorer = Arc::new(scorer);
        self.models
            .lock()
            .expect("lock")
            .insert(key, scorer.clone());
        Ok(scorer)
    }
}

/// Scores one chunk; returns (scored, rejected).
pub async fn process(task: &ScoreChunk, state: &WorkerState) -> anyhow::Result<(u64, u64)> {
    let scorer = state.scorer(&task.model).await?;
    let input = state
        .layout
        .chunk(&task.job_id, task.chunk, task.format)
        .context("invalid job id")?;
    let result = state
        .layout
        .result(&task.job_id, task.chunk)
        .context("invalid job id")?;
    let errors = state
        .layout
        .errors(&task.job_id, task.chunk)
        .context("invalid job id")?;
    let job = ChunkJob {
        format: task.format,
        first_row: task.first_row,
        reasons: task.reasons,
    };
    tokio::task::spawn_blocking(move || score_file(&scorer, &input, job, &result, &errors)).await?
}

/// How a chunk is read and explained.
#[derive(Clone, Copy)]
struct ChunkJob {
    format: Format,
    first_row: u64,
    reasons: ReasonPolicy,
}

impl ChunkJob {
    /// The row's number in the uploaded file (1-based, header not counted).
    fn row(&self, index_in_chunk: usize) -> u64 {
        self.first_row + index_in_chunk as u64 + 1
    }
}

/// Rows scored together.
const BLOCK: usize = 2048;

/// A chunk's result part and errors part, written under temporary names and moved into place
/// when complete, so a redelivered chunk rewrites them whole. Shared by both input formats.
struct Parts {
    out: csv::Writer<std::fs::File>,
    err: csv::Writer<std::fs::File>,
    files: [(std::path::PathBuf, std::path::PathBuf); 2],
    scored: u64,
    rejected: u64,
}

impl Parts {
    /// `header`: the carried-through columns' names.
    fn create(
        result: &std::path::Path,
        errors: &std::path::Path,
        scorer: &Scorer,
        header: Vec<String>,
    ) -> anyhow::Result<Parts> {
        std::fs::create_dir_all(result.parent().context("result path")?)?;
        std::fs::create_dir_all(errors.parent().context("errors path")?)?;
        let files = [
            (result.with_extension("partial"), result.to_path_buf()),
            (errors.with_extension("partial"), errors.to_path_buf()),
        ];
        let mut out = csv::WriterBuilder::new()
            .buffer_capacity(1 << 20)
            .from_path(&files[0].0)?;
        let mut err = csv::Writer::from_path(&files[1].0)?;
        out.write_record(result_header(scorer, header))?;
        err.write_record(["row", "error"])?;
        Ok(Parts {
            out,
            err,
            files,
            scored: 0,
            rejected: 0,
        })
    }

    /// Row `i` of the scored block: the carried-through values, then probability, decision and
    /// the top reasons; or its number in the file and why it was rejected.
    fn write<'c>(
        &mut self,
        block: &mut BlockScorer<'_>,
        i: usize,
        row: u64,
        carried: impl IntoIterator<Item = &'c str>,
    ) -> anyhow::Result<()> {
        if let Row::Rejected(e) = block.row(i) {
            return self.rejected(row, &e.to_string());
        }
        for value in carried {
            self.out.write_field(value)?;
        }
        block.write_fields(i, &mut self.out)?;
        self.out.write_record(None::<&[u8]>)?;
        self.scored += 1;
        Ok(())
    }

    fn rejected(&mut self, row: u64, reason: &str) -> anyhow::Result<()> {
        self.err
            .write_record([row.to_string(), reason.to_string()])?;
        self.rejected += 1;
        Ok(())
    }

    fn finish(mut self) -> anyhow::Result<(u64, u64)> {
        self.out.flush()?;
        self.err.flush()?;
        for (tmp, done) in &self.files {
            std::fs::rename(tmp, done)?;
        }
        Ok((self.scored, self.rejected))
    }
}

/// Reads a chunk file and writes its result part and errors part.
fn score_file(
    scorer: &Scorer,
    input: &std::path::Path,
    job: ChunkJob,
    result: &std::path::Path,
    errors: &std::path::Path,
) -> anyhow::Result<(u64, u64)> {
    if job.format == Format::Ndjson {
        return score_ndjson(scorer, input, job, result, errors);
    }
    let spec = &scorer.bundle().spec;
    let mut rdr = csv::ReaderBuilder::new()
        .buffer_capacity(1 << 20)
        .from_path(input)
        .with_context(|| format!("cannot read {}", input.display()))?;
    let headers = rdr.headers()?.clone();
    let columns = Columns::new(spec, headers.iter());
    let header = columns
        .passthrough
        .iter()
        .map(|&c| headers[c].to_string())
        .collect();
    let mut parts = Parts::create(result, errors, scorer, header)?;
    let mut block = BlockScorer::new(scorer, job.reasons);
    let mut recs: Vec<csv::StringRecord> = vec![csv::StringRecord::new(); BLOCK];
    let mut index = 0usize;
    loop {
        let mut n = 0;
        while n < BLOCK && rdr.read_record(&mut recs[n])? {
            n += 1;
        }
        if n == 0 {
            break;
        }
        block.score_records(&columns, &recs[..n]);
        for (i, rec) in recs[..n].iter().enumerate() {
            let carried = columns
                .passthrough
                .iter()
                .map(|&c| rec.get(c).unwrap_or(""));
            parts.write(&mut block, i, job.row(index + i), carried)?;
        }
        index += n;
    }
    parts.finish()
}

/// The apalis handler: skips chunks of finished (cancelled, failed) jobs, scores, records.
pub async fn handle(
    task: ScoreChunk,
    state: apalis::prelude::Data<Arc<WorkerState>>,
) -> Result<(), apalis::prelude::BoxDynError> {
    // Continue the submitting request's trace.
    let span = tracing::info_span!("score_chunk", job.id = %task.job_id, chunk = task.chunk);
    telemetry::continue_trace(&span, &task.trace_context);
    tracing::Instrument::instrument(handle_chunk(task, state), span).await
}

async fn handle_chunk(
    task: ScoreChunk,
    state: apalis::prelude::Data<Arc<WorkerState>>,
) -> Result<(), apalis::prelude::BoxDynError> {
    let job = state.store.get(&task.job_id).await?;
    if job.state.is_final() {
        return Ok(());
    }
    let started = std::time::Instant::now();
    // Transient failures (registry briefly down, storage hiccup) are retried with exponential
    // backoff; a chunk that keeps failing fails its job with the reason.
    let mut outcome = process(&task, &state).await;
    let mut delay = std::time::Duration::from_millis(state.retry_base_ms);
    for _ in 1..state.attempts {
        if outcome.is_ok() {
            break;
        }
        tracing::warn!(job.id = %task.job_id, chunk = task.chunk, retry_in_ms = delay.as_millis() as u64, "chunk failed; retrying");
        tokio::time::sleep(delay).await;
        delay *= 2;
        outcome = process(&task, &state).await;
    }
    metrics::chunk_seconds().observe(started.elapsed().as_secs_f64());
    match outcome {
        Ok((scored, rejected)) => {
            metrics::chunks().with_label_values(&["scored"]).inc();
            metrics::rows_scored().inc_by(scored);
            metrics::rows_rejected().inc_by(rejected);
            state
                .store
                .complete_chunk(&task.job_id, task.chunk, scored, rejected)
                .await?;
            tracing::info!(job.id = %task.job_id, chunk = task.chunk, scored, rejected, "chunk scored");
            Ok(())
        }
        Err(e) => {
            metrics::chunks().with_label_values(&["failed"]).inc();
            let reason = format!("chunk {}: {e:#}", task.chunk);
            tracing::warn!(job.id = %task.job_id, error = %reason, "chunk failed");
            state
                .store
                .finish(&task.job_id, JobState::Failed, &reason)
                .await?;
            Err(reason.into())
        }
    }
}

pub use jobs::queue::{queue, queue_with};

/// The apalis handler of training jobs: trains on the job's dataset with the training library
/// (the same code as `loanctl train`), logs the run and registers a new version. No alias moves.
pub async fn handle_training(
    task: jobs::TrainModel,
    state: apalis::prelude::Data<Arc<WorkerState>>,
) -> Result<(), apalis::prelude::BoxDynError> {
    let span = tracing::info_span!("train_model", job.id = %task.job_id);
    telemetry::continue_trace(&span, &task.trace_context);
    tracing::Instrument::instrument(train_job(task, state), span).await
}

async fn train_job(
    task: jobs::TrainModel,
    state: apalis::prelude::Data<Arc<WorkerState>>,
) -> Result<(), apalis::prelude::BoxDynError> {
    let job = state.store.get(&task.job_id).await?;
    if job.state.is_final() {
        return Ok(());
    }
    state.store.mark_running(&task.job_id).await?;
    let started = std::time::Instant::now();
    let outcome = match &state.tracking_uri {
        None => Err(anyhow::anyhow!(
            "training jobs need the model registry (MLFLOW_TRACKING_URI) to register the new version"
        )),
        Some(url) => {
            let args = training_args(&task, &state.layout, url);
            match args {
                Ok(args) => tokio::task::spawn_blocking(move || training::train::run(args))
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
            let output = serde_json::to_value(&trained)?;
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

/// The training library's settings for a job: its files inside the shared storage, its output
/// folder in the job's directory, the registry; everything else at the training defaults.
fn training_args(
    task: &jobs::TrainModel,
    layout: &Layout,
    tracking_uri: &str,
) -> anyhow::Result<training::Args> {
    use clap::Parser;
    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: training::Args,
    }
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
    let mut argv: Vec<String> = vec!["train".into()];
    for (flag, value) in [
        ("--data", inside(&task.dataset)?.display().to_string()),
        ("--spec", inside(&task.spec)?.display().to_string()),
        ("--out", dir.join("training").display().to_string()),
        ("--registry", tracking_uri.to_string()),
        ("--register-as", s.register_as.clone()),
        ("--experiment", s.experiment.clone()),
        ("--trees", s.trees.to_string()),
        ("--max-depth", s.max_depth.to_string()),
        ("--learning-rate", s.learning_rate.to_string()),
        ("--seed", s.seed.to_string()),
        ("--test-fraction", s.test_fraction.to_string()),
        ("--engine", s.engine.clone()),
    ] {
        argv.push(flag.into());
        argv.push(value);
    }
    if !s.smote {
        argv.push("--no-smote".into());
    }
    let mut args = Cli::try_parse_from(argv)
        .map_err(|e| anyhow::anyhow!("invalid training settings: {e}"))?
        .args;
    args.quiet = true;
    args.source = "training job".into();
    Ok(args)
}

/// NDJSON chunks: each line an application object. Keys that are not model features (an id,
/// say; the label is dropped) are carried through as columns, taken from the chunk's first line.
fn score_ndjson(
    scorer: &Scorer,
    input: &std::path::Path,
    job: ChunkJob,
    result: &std::path::Path,
    errors: &std::path::Path,
) -> anyhow::Result<(u64, u64)> {
    use std::io::BufRead;
    type Object = serde_json::Map<String, serde_json::Value>;
    let spec = &scorer.bundle().spec;
    let mut lines = std::io::BufReader::new(std::fs::File::open(input)?).lines();
    let mut block_lines: Vec<String> = Vec::with_capacity(BLOCK);
    let mut parts: Option<Parts> = None;
    let mut passthrough: Vec<String> = Vec::new();
    let mut block = BlockScorer::new(scorer, job.reasons);
    let mut index = 0usize;
    loop {
        block_lines.clear();
        for line in lines.by_ref().take(BLOCK) {
            block_lines.push(line?);
        }
        let objects: Vec<Option<Object>> = block_lines
            .iter()
            .map(|l| match serde_json::from_str(l) {
                Ok(serde_json::Value::Object(obj)) => Some(obj),
                _ => None,
            })
            .collect();
        if parts.is_none() {
            let first = objects.first().cloned().flatten().unwrap_or_default();
            passthrough = first
                .keys()
                .filter(|key| {
                    *key != &spec.target.name
                        && spec
                            .position(key)
                            .is_none_or(|j| !spec.features[j].is_model_input())
                })
                .cloned()
                .collect();
            parts = Some(Parts::create(result, errors, scorer, passthrough.clone())?);
        }
        let parts = parts.as_mut().expect("created above");
        if objects.is_empty() {
            break;
        }
        block.score(objects.len(), |i, raws| {
            if let Some(obj) = &objects[i] {
                raws.extend(
                    spec.features
                        .iter()
                        .map(|f| obj.get(&f.name).map_or(Raw::Missing, Raw::from_json)),
                );
            }
            Ok(())
        });
        for (i, obj) in objects.iter().enumerate() {
            let Some(obj) = obj else {
                parts.rejected(job.row(index + i), "not a JSON object")?;
                continue;
            };
            let carried: Vec<String> = passthrough
                .iter()
                .map(|key| match obj.get(key) {
                    Some(serde_json::Value::String(v)) => v.clone(),
                    Some(serde_json::Value::Null) | None => String::new(),
                    Some(v) => v.to_string(),
                })
                .collect();
            parts.write(
                &mut block,
                i,
                job.row(index + i),
                carried.iter().map(String::as_str),
            )?;
        }
        index += objects.len();
    }
    parts.expect("created on the first pass").finish()
}
