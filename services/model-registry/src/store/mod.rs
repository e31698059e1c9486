//! The database: one schema for Postgres and SQLite (migrations per backend), queries checked
//! at run time through sqlx's `Any` driver, one module per resource.

pub mod experiments;
pub mod logged_models;
pub mod registry;
pub mod runs;

use serde_json::{json, Value};
use sqlx::any::{AnyPoolOptions, AnyRow};
use sqlx::Row;

use crate::error::{RegistryError, Result};

pub type Pool = sqlx::AnyPool;

/// Which lifecycle stages a search sees: MLflow's `ViewType`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum View {
    ActiveOnly,
    DeletedOnly,
    All,
}

impl View {
    /// Parses `ViewType` by name or number, as MLflow's protobuf parser does; absent means
    /// `ACTIVE_ONLY`. Anything else is a 400, not silently the default view.
    pub fn parse(value: Option<&str>, field: &str) -> Result<View> {
        match value {
            None | Some("ACTIVE_ONLY" | "1") => Ok(View::ActiveOnly),
            Some("DELETED_ONLY" | "2") => Ok(View::DeletedOnly),
            Some("ALL" | "3") => Ok(View::All),
            Some(other) => crate::error::invalid(format!(
                "Invalid value {other:?} for parameter '{field}': use ACTIVE_ONLY, DELETED_ONLY or ALL"
            )),
        }
    }

    /// The one lifecycle stage this view keeps, or `None` for both.
    pub fn stage(self) -> Option<&'static str> {
        match self {
            View::ActiveOnly => Some("active"),
            View::DeletedOnly => Some("deleted"),
            View::All => None,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Postgres,
    Sqlite,
}

static PG_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

/// Connects and applies migrations.
pub async fn connect(url: &str) -> anyhow::Result<(Pool, Backend)> {
    sqlx::any::install_default_drivers();
    let backend = if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Backend::Postgres
    } else if url.starts_with("sqlite:") {
        Backend::Sqlite
    } else {
        anyhow::bail!("unsupported database URL (use postgres://… or sqlite:…)");
    };
    if backend == Backend::Sqlite {
        if let Some(path) = url
            .strip_prefix("sqlite://")
            .and_then(|p| p.split('?').next())
        {
            if let Some(dir) = std::path::Path::new(path)
                .parent()
                .filter(|d| !d.as_os_str().is_empty())
            {
                std::fs::create_dir_all(dir)?;
            }
        }
    }
    // SQLite allows one writer: a single connection serialises writes instead of failing them
    // with SQLITE_BUSY under concurrent clients.
    let max = if backend == Backend::Sqlite { 1 } else { 10 };
    let pool = AnyPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(std::time::Duration::from_secs(30))
        .connect(url)
        .await?;
    match backend {
        Backend::Postgres => PG_MIGRATIONS.run(&pool).await?,
        Backend::Sqlite => {
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
            sqlx::query("PRAGMA foreign_keys = ON")
                .execute(&pool)
                .await?;
            SQLITE_MIGRATIONS.run(&pool).await?
        }
    }
    experiments::ensure_default(&pool).await?;
    Ok((pool, backend))
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `$from, $from+1, …` for `n` values.
pub fn placeholders(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
}

pub fn get_str(row: &AnyRow, col: &str) -> Result<String> {
    row.try_get::<String, _>(col).map_err(RegistryError::from)
}

pub fn get_opt_str(row: &AnyRow, col: &str) -> Result<Option<String>> {
    row.try_get::<Option<String>, _>(col)
        .map_err(RegistryError::from)
}

pub fn get_i64(row: &AnyRow, col: &str) -> Result<i64> {
    row.try_get::<i64, _>(col).map_err(RegistryError::from)
}

pub fn get_opt_i64(row: &AnyRow, col: &str) -> Result<Option<i64>> {
    row.try_get::<Option<i64>, _>(col)
        .map_err(RegistryError::from)
}

pub fn get_f64(row: &AnyRow, col: &str) -> Result<f64> {
    row.try_get::<f64, _>(col).map_err(RegistryError::from)
}

/// `[{key, value}]`.
pub fn kv_json(kv: &[(String, String)]) -> Value {
    Value::Array(
        kv.iter()
            .map(|(k, v)| json!({"key": k, "value": v}))
            .collect(),
    )
}

/// Maps a unique-constraint violation to `AlreadyExists(message)`, anything else to a database
/// error: for `.map_err(already_exists(…))` right at the query.
pub fn already_exists(message: String) -> impl FnOnce(sqlx::Error) -> RegistryError {
    move |e| {
        if is_unique_violation(&e) {
            RegistryError::AlreadyExists(message)
        } else {
            e.into()
        }
    }
}

/// Whether a database error is a unique-constraint violation.
pub fn is_unique_violation(e: &sqlx::Error) -> bool {
    e.as_database_error()
        .is_some_and(|d| d.is_unique_violation())
}

/// A metric value as JSON: NaN and infinities as MLflow writes them.
pub fn metric_value_json(value: f64, is_nan: bool) -> Value {
    if is_nan || value.is_nan() {
        json!("NaN")
    } else if value == f64::INFINITY {
        json!("Infinity")
    } else if value == f64::NEG_INFINITY {
        json!("-Infinity")
    } else {
        json!(value)
    }
}
