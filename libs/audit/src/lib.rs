//! The decision audit log: every decision the platform makes, with the exact model that made
//! it (name, version and the SHA-256 of its bundle), the applicant's features as scored (after
//! validation, before encoding), the probability, decision, thresholds and reasons, so that it
//! can be read back months later and replayed bit for bit (`loanctl replay`).
//!
//! - [`Store`]: the records in PostgreSQL (production) or SQLite (embedded mode), one table set
//!   with its own migrations.
//! - [`Auditor`]: the API's writer. Decisions go through a bounded in-memory queue to one task
//!   that inserts them in batches, so the hot path only builds a record, encodes it as its row
//!   of binary `COPY` (one allocation) and queues it.
//!   [`Mode::FailClosed`] refuses to decide while the store is unreachable or the queue is full;
//!   [`Mode::FailOpen`] decides and counts `audit_dropped_total`.
//! - Batch jobs write their rows from the worker with [`Store::insert`] before a chunk counts as
//!   done; a row's id is `<job>:<row>`, so a redelivered chunk never writes a row twice.

mod record;
mod store;
mod writer;

pub use record::{features_json, new_decision_id, raws_from_json, Context, Record, Source};
pub use store::{Encoded, Page, Store, Unfinished};
pub use writer::{dropped, sweep_forever, written, Auditor, Refused};

/// Records dropped so far in this process (`audit_dropped_total`).
pub fn dropped_total() -> u64 {
    writer::dropped().get()
}

/// What happens to decisions when the audit store cannot take their records.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Mode {
    /// No decision without a record: answer 503 while the store is unreachable.
    FailClosed,
    /// Decide anyway and count the records lost (`audit_dropped_total`).
    FailOpen,
}

/// The audit settings, shared by the API and the worker (`#[command(flatten)]`).
#[derive(Debug, Clone, clap::Args)]
// Its own argument-group id: the services flatten several `Settings`, and clap refuses two
// groups of one name (a panic at start in debug builds).
#[group(id = "audit-settings")]
pub struct Settings {
    /// Where decisions are recorded: `postgres://…` or `sqlite:path/to/audit.db`. Unset: no
    /// audit log (a warning at start).
    #[arg(long = "audit-url", env = "AUDIT_URL")]
    pub url: Option<String>,
    /// `fail-closed` (no decision without a record) or `fail-open`.
    #[arg(
        long = "audit-mode",
        env = "AUDIT_MODE",
        value_enum,
        default_value = "fail-closed"
    )]
    pub mode: Mode,
    /// Records older than this many days are deleted (0: kept for ever).
    #[arg(
        long = "audit-retention-days",
        env = "AUDIT_RETENTION_DAYS",
        default_value_t = 0
    )]
    pub retention_days: u64,
    /// Records waiting to be written; when full, fail-closed answers 503 and fail-open drops.
    #[arg(long = "audit-queue", env = "AUDIT_QUEUE", default_value_t = 100_000)]
    pub queue: usize,
}

impl Settings {
    /// `AUDIT_URL`, unless unset or empty (auditing off).
    pub fn url(&self) -> Option<&str> {
        self.url.as_deref().filter(|u| !u.trim().is_empty())
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}
