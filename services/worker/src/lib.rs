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
use model::{Bundle, Scorer};

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
    reasons: jobs::Reasons,
}

impl ChunkJob {
    /// Scores a row in spec order, with reasons if the job asks for them for this decision.
    fn score(
        &self,
        scorer: &Scorer,
        raws: &[Raw<'_>],
        scratch: &mut model::Scratch,
    ) -> Result<model::Score, features::FeatureError> {
        let mut s = scorer.score_with(raws, false, scratch)?;
        if self.explains(s.decision) {
            s.reasons = scorer.reasons_of_last(raws, scratch);
        }
        Ok(s)
    }

    /// Whether a row with this decision gets reasons.
    fn explains(&self, decision: model::Decision) -> bool {
        match self.reasons {
            jobs::Reasons::All => true,
            jobs::Reasons::Adverse => decision != model::Decision::Approve,
            jobs::Reasons::None => false,
        }
    }

    /// The row's number in the uploaded file (1-based, header not counted).
    fn row(&self, index_in_chunk: usize) -> u64 {
        self.first_row + index_in_chunk as u64 + 1
    }
}

/// A chunk's result part and errors part, written under temporary names and moved into place
/// when complete, so a redelivered chunk rewrites them whole. Shared by both input formats.
struct Parts {
    out: csv::Writer<std::fs::File>,
    err: csv::Writer<std::fs::File>,
    files: [(std::path::PathBuf, std::path::PathBuf); 2],
    reasons: usize,
    scored: u64,
    rejected: u64,
    number: String,
}

impl Parts {
    fn create(
        result: &std::path::Path,
        errors: &std::path::Path,
        mut header: Vec<String>,
        reasons: usize,
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
        header.extend(["default_probability".to_string(), "decision".to_string()]);
        header.extend((1..=reasons).map(|i| format!("reason_{i}")));
        out.write_record(&header)?;
        err.write_record(["row", "error"])?;
        Ok(Parts {
            out,
            err,
            files,
            reasons,
            scored: 0,
            rejected: 0,
            number: String::new(),
        })
    }

    /// The carried-through values, then probability, decision and the top reasons.
    fn scored(&mut self, mut row: Vec<String>, s: &model::Score) -> anyhow::Result<()> {
        row.push(format!("{:.6}", s.default_probability));
        row.push(s.decision.as_str().to_string());
        row.extend((0..self.reasons).map(|r| {
            s.reasons
                .get(r)
                .map(|x| x.feature.clone())
                .unwrap_or_default()
        }));
        self.out.write_record(&row)?;
        self.scored += 1;
        Ok(())
    }

    /// Like [`Parts::scored`] for a CSV record, writing fields in place: the carried-through
    /// columns, probability, decision and the top reasons (spec feature indices).
    fn scored_fields(
        &mut self,
        rec: &csv::StringRecord,
        passthrough: &[usize],
        p: f64,
        decision: model::Decision,
        top: &[(usize, f64)],
        spec: &features::Spec,
    ) -> anyhow::Result<()> {
        use std::fmt::Write as _;
        for &c in passthrough {
            self.out.write_field(rec.get(c).unwrap_or(""))?;
        }
        self.number.clear();
        let _ = write!(self.number, "{p:.6}");
        self.out.write_field(&self.number)?;
        self.out.write_field(decision.as_str())?;
        for r in 0..self.reasons {
            self.out.write_field(
                top.get(r)
                    .map_or("", |(j, _)| spec.features[*j].name.as_str()),
            )?;
        }
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
    let cols: Vec<Option<usize>> = spec
        .features
        .iter()
        .map(|f| headers.iter().position(|h| h.trim() == f.name))
        .collect();
    let model_cols: Vec<usize> = spec
        .features
        .iter()
        .zip(&cols)
        .filter(|(f, _)| f.is_model_input())
        .filter_map(|(_, c)| *c)
        .collect();
    let target = headers.iter().position(|h| h == spec.target.name);
    let passthrough: Vec<usize> = (0..headers.len())
        .filter(|c| Some(*c) != target && !model_cols.contains(c))
        .collect();
    let header = passthrough
        .iter()
        .map(|&c| headers[c].to_string())
        .collect();
    let mut parts = Parts::create(result, errors, header, scorer.bundle().max_reasons)?;
    // Blocks of rows: encode them all, predict the block at once, then explain and write.
    const BLOCK: usize = 2048;
    let pre = scorer.preprocessor();
    let w = pre.width();
    let (calibration, thresholds) = (scorer.calibration(), scorer.thresholds());
    let mut recs: Vec<csv::StringRecord> = vec![csv::StringRecord::new(); BLOCK];
    let mut encoded = vec![0.0f32; BLOCK * w];
    let mut margins = vec![0.0f32; BLOCK];
    let mut failed: Vec<Option<String>> = vec![None; BLOCK];
    let mut scratch = scorer.scratch();
    let mut top = Vec::with_capacity(scorer.bundle().max_reasons + 1);
    let mut index = 0usize;
    loop {
        let mut n = 0;
        while n < BLOCK && rdr.read_record(&mut recs[n])? {
            n += 1;
        }
        if n == 0 {
            break;
        }
        let mut raws: Vec<Raw<'_>> = Vec::with_capacity(cols.len());
        for i in 0..n {
            raws.clear();
            raws.extend(cols.iter().map(|c| {
                c.and_then(|c| recs[i].get(c))
                    .map_or(Raw::Missing, Raw::from_cell)
            }));
            failed[i] = pre
                .transform(&raws, &mut encoded[i * w..(i + 1) * w])
                .err()
                .map(|e| e.to_string());
        }
        scorer
            .predictor()
            .margins(&encoded[..n * w], &mut margins[..n]);
        for i in 0..n {
            if let Some(e) = &failed[i] {
                parts.rejected(job.row(index + i), e)?;
                continue;
            }
            let p = calibration.apply(f64::from(margins[i]));
            let decision = thresholds.decide(p);
            top.clear();
            if job.explains(decision) {
                scorer.top_reasons(&encoded[i * w..(i + 1) * w], &mut scratch, &mut top);
            }
            parts.scored_fields(&recs[i], &passthrough, p, decision, &top, spec)?;
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
    let spec = &scorer.bundle().spec;
    let lines: Vec<String> = std::io::BufReader::new(std::fs::File::open(input)?)
        .lines()
        .collect::<Result<_, _>>()?;
    let first: serde_json::Map<String, serde_json::Value> = lines
        .first()
        .and_then(|l| serde_json::from_str(l).ok())
        .unwrap_or_default();
    let passthrough: Vec<String> = first
        .keys()
        .filter(|key| {
            *key != &spec.target.name
                && spec
                    .position(key)
                    .is_none_or(|j| !spec.features[j].is_model_input())
        })
        .cloned()
        .collect();
    let mut parts = Parts::create(
        result,
        errors,
        passthrough.clone(),
        scorer.bundle().max_reasons,
    )?;
    let mut scratch = scorer.scratch();
    for (i, line) in lines.iter().enumerate() {
        let Ok(serde_json::Value::Object(obj)) = serde_json::from_str::<serde_json::Value>(line)
        else {
            parts.rejected(job.row(i), "not a JSON object")?;
            continue;
        };
        let raws: Vec<Raw> = spec
            .features
            .iter()
            .map(|f| obj.get(&f.name).map_or(Raw::Missing, Raw::from_json))
            .collect();
        match job.score(scorer, &raws, &mut scratch) {
            Ok(s) => {
                let carried = passthrough
                    .iter()
                    .map(|key| match obj.get(key) {
                        Some(serde_json::Value::String(v)) => v.clone(),
                        Some(serde_json::Value::Null) | None => String::new(),
                        Some(v) => v.to_string(),
                    })
                    .collect();
                parts.scored(carried, &s)?;
            }
            Err(e) => parts.rejected(job.row(i), &e.to_string())?,
        }
    }
    parts.finish()
}
