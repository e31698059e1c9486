//! The batch-job contract shared by the API and the worker: job payloads, the job status store
//! (Redis, or in memory for embedded mode), the storage layout of batch files, and streaming
//! chunking of uploaded CSV/NDJSON files.

pub mod layout;
pub mod queue;
pub mod split;
pub mod store;

use serde::{Deserialize, Serialize};

pub use layout::Layout;
pub use store::{Store, StoreError};

/// Input and output file formats.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    Csv,
    Ndjson,
}

impl Format {
    pub fn extension(self) -> &'static str {
        match self {
            Format::Csv => "csv",
            Format::Ndjson => "ndjson",
        }
    }

    /// From a request's `Content-Type`.
    pub fn from_content_type(ct: &str) -> Option<Format> {
        match ct
            .split(';')
            .next()
            .unwrap_or("")
            .trim()
            .to_ascii_lowercase()
            .as_str()
        {
            "text/csv" | "application/csv" => Some(Format::Csv),
            "application/x-ndjson" | "application/ndjson" | "application/jsonl" => {
                Some(Format::Ndjson)
            }
            _ => None,
        }
    }
}

/// Lifecycle of a job.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobState {
    Queued,
    Running,
    Succeeded,
    Failed,
    Cancelled,
}

impl JobState {
    pub fn as_str(self) -> &'static str {
        match self {
            JobState::Queued => "queued",
            JobState::Running => "running",
            JobState::Succeeded => "succeeded",
            JobState::Failed => "failed",
            JobState::Cancelled => "cancelled",
        }
    }

    pub fn parse(s: &str) -> Option<JobState> {
        [
            JobState::Queued,
            JobState::Running,
            JobState::Succeeded,
            JobState::Failed,
            JobState::Cancelled,
        ]
        .into_iter()
        .find(|j| j.as_str() == s)
    }

    /// Whether nothing more will happen to the job.
    pub fn is_final(self) -> bool {
        matches!(
            self,
            JobState::Succeeded | JobState::Failed | JobState::Cancelled
        )
    }
}

/// The model version a job is pinned to when it is accepted.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PinnedModel {
    pub name: String,
    pub version: String,
    /// A local bundle directory when the API serves one (`MODEL_URI`), else `None`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub local_uri: Option<String>,
}

/// The queued unit of work: score one chunk of one job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreChunk {
    pub job_id: String,
    pub chunk: u32,
    pub format: Format,
    pub model: PinnedModel,
    /// W3C trace context of the submitting request, so the worker's spans join its trace.
    #[serde(default)]
    pub trace_context: std::collections::HashMap<String, String>,
    /// Row number (0-based, header not counted) of the chunk's first row in the uploaded file,
    /// so rejected rows are reported by their place in the file.
    #[serde(default)]
    pub first_row: u64,
    /// Which rows get reason codes.
    #[serde(default)]
    pub reasons: model::ReasonPolicy,
}

/// A training job: train on a labelled CSV with the serving model's feature spec, log the run
/// and register the new version (no alias moves; promotion stays a human decision).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TrainModel {
    pub job_id: String,
    /// The labelled CSV, inside the shared storage.
    pub dataset: String,
    /// The feature spec (JSON file) inside the shared storage.
    pub spec: String,
    pub settings: TrainSettings,
    #[serde(default)]
    pub trace_context: std::collections::HashMap<String, String>,
}

/// The training settings a job may set; the rest are the training defaults.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TrainSettings {
    pub register_as: String,
    pub experiment: String,
    pub trees: usize,
    pub max_depth: u32,
    pub learning_rate: f32,
    pub seed: u64,
    pub test_fraction: f64,
    pub smote: bool,
    /// Tree learner, `hist` or `gbdt`. Jobs queued before engines existed trained with `gbdt`.
    #[serde(default = "legacy_engine")]
    pub engine: String,
}

fn legacy_engine() -> String {
    "gbdt".into()
}

/// Which kind of work a job record describes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum JobKind {
    #[default]
    Score,
    Train,
}

/// What a status request shows.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct JobRecord {
    pub id: String,
    #[serde(default)]
    pub kind: JobKind,
    pub state: JobState,
    pub format: Format,
    pub rows_total: u64,
    pub rows_scored: u64,
    pub rows_rejected: u64,
    pub chunks_total: u32,
    pub chunks_done: u32,
    pub model: PinnedModel,
    #[serde(default)]
    pub reasons: model::ReasonPolicy,
    pub created_at: String,
    pub updated_at: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub finished_at: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// What the job was asked to do beyond the file (training settings).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub params: Option<serde_json::Value>,
    /// What the job produced beyond result files (the training run and registered version).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub output: Option<serde_json::Value>,
    /// The id of the API key that created the job (never the key); only it, or an admin key,
    /// may see the job. `None` when the API runs without keys.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub owner: Option<String>,
    /// Training jobs: how many times a worker has started the task. A worker killed while
    /// training (out of memory) has its task delivered again without apalis counting an
    /// attempt; this count stops the task after [`MAX_TRAINING_DELIVERIES`].
    #[serde(default, skip_serializing_if = "is_zero")]
    pub deliveries: u32,
}

/// Starts of one training task before its job is failed (see [`JobRecord::deliveries`]).
pub const MAX_TRAINING_DELIVERIES: u32 = 3;

fn is_zero(n: &u32) -> bool {
    *n == 0
}

impl JobRecord {
    /// A queued scoring job of `rows` rows in `chunks` chunks, created now.
    pub fn scoring(
        id: String,
        format: Format,
        rows: u64,
        chunks: u32,
        model: PinnedModel,
        reasons: model::ReasonPolicy,
    ) -> JobRecord {
        let now = now();
        JobRecord {
            id,
            kind: JobKind::Score,
            state: JobState::Queued,
            format,
            rows_total: rows,
            rows_scored: 0,
            rows_rejected: 0,
            chunks_total: chunks,
            chunks_done: 0,
            model,
            reasons,
            created_at: now.clone(),
            updated_at: now,
            finished_at: None,
            error: None,
            params: None,
            output: None,
            owner: None,
            deliveries: 0,
        }
    }

    /// A queued training job registering a new version of `register_as`, created now.
    pub fn training(id: String, register_as: String, params: serde_json::Value) -> JobRecord {
        JobRecord {
            kind: JobKind::Train,
            params: Some(params),
            ..JobRecord::scoring(
                id,
                Format::Csv,
                0,
                1,
                PinnedModel {
                    name: register_as,
                    version: String::new(),
                    local_uri: None,
                },
                model::ReasonPolicy::None,
            )
        }
    }
}

/// The job settings the API and the worker both read: one flag and one variable each.
/// Flattened into both services' settings (`#[command(flatten)]`).
#[derive(clap::Args, Debug, Clone)]
// Its own argument-group id: the services flatten several `Settings`, and clap refuses two
// groups of one name (a panic at start in debug builds).
#[group(id = "jobs-settings")]
pub struct Settings {
    /// Storage for batch files and training datasets, shared by the API and the workers (the
    /// jobs volume in Kubernetes). Applicants' data: keep it out of the registry's ARTIFACT_ROOT.
    #[arg(long, env = "JOBS_ROOT", default_value = "loanctl-data/jobs")]
    pub jobs_root: std::path::PathBuf,
    /// The apalis queue of score chunks.
    #[arg(
        long = "job-queue",
        alias = "queue",
        env = "JOB_QUEUE",
        default_value = "loan-scoring:score-batch"
    )]
    pub job_queue: String,
    /// The apalis queue of training jobs.
    #[arg(long, env = "TRAIN_QUEUE", default_value = "loan-scoring:train")]
    pub train_queue: String,
    /// Prefix of the job-record keys in Redis.
    #[arg(
        long = "job-key-prefix",
        alias = "key-prefix",
        env = "JOB_KEY_PREFIX",
        default_value = "loan-scoring:"
    )]
    pub job_key_prefix: String,
    /// How long job records (and their files) are kept.
    #[arg(
        long = "job-retention-seconds",
        alias = "retention-seconds",
        env = "JOB_RETENTION_SECONDS",
        default_value_t = 7 * 24 * 3600
    )]
    pub job_retention_seconds: u64,
    /// Chunks scored at once by a worker (the API's in-process one in embedded mode).
    #[arg(
        long = "worker-concurrency",
        aliases = ["concurrency", "embedded-workers"],
        env = "WORKER_CONCURRENCY",
        default_value_t = 2
    )]
    pub worker_concurrency: usize,
}

/// A new job id: sortable by creation time, safe in paths and keys.
pub fn new_job_id() -> String {
    format!(
        "{}-{}",
        chrono::Utc::now().format("%Y%m%d%H%M%S"),
        uuid::Uuid::new_v4().simple()
    )
}

/// Whether a string is a job id this crate would make (checked before it reaches a path or key).
pub fn is_valid_job_id(id: &str) -> bool {
    !id.is_empty() && id.len() <= 64 && id.chars().all(|c| c.is_ascii_alphanumeric() || c == '-')
}

pub fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_formats_and_states() {
        let id = new_job_id();
        assert!(is_valid_job_id(&id));
        for bad in ["", "../x", "a/b", "a b", &"x".repeat(65)] {
            assert!(!is_valid_job_id(bad), "{bad}");
        }
        assert_eq!(
            Format::from_content_type("text/csv; charset=utf-8"),
            Some(Format::Csv)
        );
        assert_eq!(
            Format::from_content_type("application/x-ndjson"),
            Some(Format::Ndjson)
        );
        assert_eq!(Format::from_content_type("application/json"), None);
        assert_eq!(JobState::parse("failed"), Some(JobState::Failed));
        assert!(JobState::Cancelled.is_final() && !JobState::Running.is_final());
    }
}
