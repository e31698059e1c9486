//! The database: one schema for Postgres and SQLite (migrations per backend), queries checked
//! at run time through sqlx's `Any` driver, one module per resource.

pub mod experiments;
pub mod logged_models;
pub mod registry;
pub mod runs;

use serde_json::{json, Value};
use sqlx::any::AnyPoolOptions;

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

/// The URL, in SQLAlchemy's form as MLflow writes it, of a SQLite file at `path`:
/// `sqlite:///relative/path.db` or `sqlite:////absolute/path.db`.
pub fn sqlite_url(path: &std::path::Path) -> String {
    format!("sqlite:///{}", path.display())
}

/// A database URL as `mlflow server` takes it, in the form sqlx connects to, with the backend
/// and, for SQLite, the file. SQLite URIs are read as SQLAlchemy reads them: after `sqlite:///`
/// comes the path, relative to the working directory unless it starts with `/` (so
/// `sqlite:////abs.db` is absolute); `sqlite://` alone or `sqlite:///:memory:` is in memory; a
/// missing file is created. (`sqlite://rel/path.db` and `sqlite:rel/path.db`, sqlx's forms, are
/// relative paths too.) `postgresql://`, `postgresql+psycopg2://` and `postgres://` are
/// PostgreSQL.
pub fn normalise_url(url: &str) -> anyhow::Result<(String, Backend, Option<std::path::PathBuf>)> {
    if let Some((scheme, rest)) = url.split_once("://") {
        let driver = scheme.split('+').next().unwrap_or(scheme);
        if matches!(driver, "postgres" | "postgresql") {
            return Ok((format!("postgres://{rest}"), Backend::Postgres, None));
        }
    }
    let Some(rest) = url.strip_prefix("sqlite:") else {
        anyhow::bail!("unsupported database URL (use postgresql://… or sqlite:///path/to/file.db)");
    };
    let (target, query) = rest.split_once('?').unwrap_or((rest, ""));
    let path = match target.strip_prefix("///") {
        Some(p) => p,
        None => target.strip_prefix("//").unwrap_or(target),
    };
    if path.is_empty() || path == ":memory:" {
        return Ok(("sqlite::memory:".into(), Backend::Sqlite, None));
    }
    let mut params: Vec<&str> = query.split('&').filter(|q| !q.is_empty()).collect();
    if !params.iter().any(|q| q.starts_with("mode=")) {
        params.push("mode=rwc");
    }
    let file = std::path::PathBuf::from(path);
    Ok((
        format!("sqlite://{path}?{}", params.join("&")),
        Backend::Sqlite,
        Some(file),
    ))
}

/// Connects and applies migrations.
pub async fn connect(url: &str) -> anyhow::Result<(Pool, Backend)> {
    sqlx::any::install_default_drivers();
    let (url, backend, file) = normalise_url(url)?;
    let url = url.as_str();
    if let Some(dir) = file
        .as_deref()
        .and_then(std::path::Path::parent)
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir)?;
    }
    // SQLite allows one writer: a single connection serialises writes instead of failing them
    // with SQLITE_BUSY under concurrent clients. An SQLite connection lives in this process and
    // cannot drop, so it is not pinged before each use (a round trip through its thread);
    // PostgreSQL's connections are.
    let max = if backend == Backend::Sqlite { 1 } else { 10 };
    let pool = AnyPoolOptions::new()
        .max_connections(max)
        .acquire_timeout(std::time::Duration::from_secs(30))
        .test_before_acquire(backend != Backend::Sqlite)
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

    Ok((pool, backend))
}

/// A pool for searches. SQLite allows one writer but, in WAL mode, readers beside it: a file
/// database gets a second connection that only reads, so a long search does not hold writes
/// back (and writes do not queue searches). Runs searches read on a third one, [`Held`]. One
/// each is enough: two connections taking the same searches in turn doubled the memory a
/// 100,000-run search leaves behind (+14 MiB against +5; BENCHMARKS.md). PostgreSQL and
/// in-memory SQLite share `pool`.
pub async fn reader(url: &str, backend: Backend, pool: &Pool) -> anyhow::Result<Pool> {
    let (url, _, file) = normalise_url(url)?;
    if backend != Backend::Sqlite || file.is_none() {
        return Ok(pool.clone());
    }
    Ok(AnyPoolOptions::new()
        .max_connections(1)
        .acquire_timeout(std::time::Duration::from_secs(30))
        .test_before_acquire(false)
        .after_connect(|conn, _| {
            Box::pin(async move {
                // Reading only: a write through this pool is refused, not raced.
                sqlx::query("PRAGMA query_only = ON").execute(conn).await?;
                Ok(())
            })
        })
        .connect(&url)
        .await?)
}

/// The connection a runs search reads on. A pool pings every connection it takes back (sqlx
/// 0.8.6 does it unconditionally): one more round trip through an SQLite connection's thread per
/// search, for a connection that lives in this process and cannot drop. So on an SQLite file,
/// runs searches (the registry's hottest read: clients and the UI poll them) read on one
/// connection of their own, taken in turn behind a lock and never handed back; PostgreSQL's
/// connections come from the pool, pinged as usual.
pub enum Held {
    Pool(Pool),
    Conn(tokio::sync::Mutex<sqlx::pool::PoolConnection<sqlx::Any>>),
}

/// A connection from [`Held`], for as long as the guard lives.
pub enum HeldConn<'a> {
    Pooled(sqlx::pool::PoolConnection<sqlx::Any>),
    Locked(tokio::sync::MutexGuard<'a, sqlx::pool::PoolConnection<sqlx::Any>>),
}

impl std::ops::Deref for HeldConn<'_> {
    type Target = sqlx::AnyConnection;
    fn deref(&self) -> &sqlx::AnyConnection {
        match self {
            HeldConn::Pooled(c) => c,
            HeldConn::Locked(c) => c,
        }
    }
}

impl std::ops::DerefMut for HeldConn<'_> {
    fn deref_mut(&mut self) -> &mut sqlx::AnyConnection {
        match self {
            HeldConn::Pooled(c) => c,
            HeldConn::Locked(c) => c,
        }
    }
}

impl Held {
    /// A reading connection of its own on an SQLite file (see [`reader`]); `pool` otherwise.
    pub async fn open(url: &str, backend: Backend, pool: &Pool) -> anyhow::Result<Held> {
        let (_, _, file) = normalise_url(url)?;
        if backend != Backend::Sqlite || file.is_none() {
            return Ok(Held::Pool(pool.clone()));
        }
        let own = reader(url, backend, pool).await?;
        Ok(Held::Conn(tokio::sync::Mutex::new(own.acquire().await?)))
    }

    pub async fn acquire(&self) -> std::result::Result<HeldConn<'_>, sqlx::Error> {
        Ok(match self {
            Held::Pool(pool) => HeldConn::Pooled(pool.acquire().await?),
            Held::Conn(conn) => HeldConn::Locked(conn.lock().await),
        })
    }
}

/// Milliseconds since the epoch.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `$from, $from+1, …` for `n` values.
/// Most values bound in one statement when loading by key: SQLite allows 32,766, so a page or
/// a list is loaded in chunks of this many.
pub const MAX_BOUND: usize = 10_000;

/// Puts `items` in the order of `keys` (a search's page, loaded by key in any order).
pub fn in_key_order<T, K, F>(items: &mut [T], keys: &[K], key: F)
where
    K: std::hash::Hash + Eq + Clone,
    F: Fn(&T) -> K,
{
    let position: std::collections::HashMap<K, usize> = keys
        .iter()
        .enumerate()
        .map(|(i, k)| (k.clone(), i))
        .collect();
    items.sort_by_key(|t| position.get(&key(t)).copied());
}

pub fn placeholders(from: usize, n: usize) -> String {
    (from..from + n)
        .map(|i| format!("${i}"))
        .collect::<Vec<_>>()
        .join(", ")
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

#[cfg(test)]
mod url_tests {
    use super::*;

    #[test]
    fn database_urls_are_read_as_mlflow_reads_them() {
        let n = |u: &str| normalise_url(u).unwrap();
        assert_eq!(
            n("sqlite:///mlflow.db"),
            (
                "sqlite://mlflow.db?mode=rwc".into(),
                Backend::Sqlite,
                Some("mlflow.db".into())
            )
        );
        assert_eq!(
            n("sqlite:////srv/m/mlflow.db").0,
            "sqlite:///srv/m/mlflow.db?mode=rwc"
        );
        assert_eq!(n("sqlite:///a/b.db?mode=ro").0, "sqlite://a/b.db?mode=ro");
        assert_eq!(
            n("sqlite://loanctl-data/r.db?mode=rwc").0,
            "sqlite://loanctl-data/r.db?mode=rwc"
        );
        assert_eq!(n("sqlite://").0, "sqlite::memory:");
        assert_eq!(n("sqlite:///:memory:").0, "sqlite::memory:");
        for pg in [
            "postgresql://u@h/db",
            "postgresql+psycopg2://u@h/db",
            "postgres://u@h/db",
        ] {
            assert_eq!(n(pg), ("postgres://u@h/db".into(), Backend::Postgres, None));
        }
        assert!(normalise_url("mysql://x").is_err());
        assert_eq!(
            sqlite_url(std::path::Path::new("/a/b.db")),
            "sqlite:////a/b.db"
        );
        assert_eq!(
            n(&sqlite_url(std::path::Path::new("/a/b.db"))).2,
            Some("/a/b.db".into())
        );
    }
}
