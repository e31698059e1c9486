//! The audit tables in PostgreSQL or SQLite (through sqlx's `Any` driver; one schema, migrated
//! at connect).

use sqlx::any::AnyPoolOptions;
use sqlx::AnyPool;

use crate::Record;

static PG_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/postgres");
static SQLITE_MIGRATIONS: sqlx::migrate::Migrator = sqlx::migrate!("./migrations/sqlite");

const COLUMNS: &str = "decision_id, request_id, row_index, recorded_at_ms, source, key_id, \
     model_name, model_version, bundle_sha256, features, probability, decision, thresholds, \
     reason_policy, reasons, shadow";
const N_COLUMNS: usize = 16;
/// Rows per INSERT statement (16 parameters each; well under SQLite's 32,766).
const ROWS_PER_STATEMENT: usize = 500;

/// A range of records to read, oldest first.
#[derive(Debug, Clone, Default)]
pub struct Page {
    /// Recorded at or after (ms since the epoch).
    pub since_ms: Option<i64>,
    /// Recorded before.
    pub until_ms: Option<i64>,
    /// Only this request's records.
    pub request_id: Option<String>,
    /// Records after this one (`recorded_at_ms`, `decision_id`): the last of the previous page.
    pub after: Option<(i64, String)>,
    pub limit: usize,
}

/// The audit store.
#[derive(Clone)]
pub struct Store {
    pool: AnyPool,
    /// PostgreSQL's own pool, for `COPY` (the API's records: several times cheaper for the
    /// database than `INSERT`s with parameters).
    pg: Option<sqlx::PgPool>,
}

impl Store {
    /// Connects to `postgres://…` or `sqlite:path` (the file and its folder are created) and
    /// migrates.
    pub async fn connect(url: &str) -> anyhow::Result<Store> {
        sqlx::any::install_default_drivers();
        let postgres = url.starts_with("postgres://") || url.starts_with("postgresql://");
        let url = if postgres {
            url.to_string()
        } else {
            sqlite_url(url)?
        };
        let pool = AnyPoolOptions::new()
            // SQLite takes one writer at a time.
            .max_connections(if postgres { 4 } else { 1 })
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect(&url)
            .await?;
        let pg = if postgres {
            PG_MIGRATIONS.run(&pool).await?;
            Some(
                sqlx::postgres::PgPoolOptions::new()
                    .max_connections(2)
                    .acquire_timeout(std::time::Duration::from_secs(5))
                    .connect(&url)
                    .await?,
            )
        } else {
            sqlx::query("PRAGMA journal_mode = WAL")
                .execute(&pool)
                .await?;
            SQLITE_MIGRATIONS.run(&pool).await?;
            None
        };
        Ok(Store { pool, pg })
    }

    /// Writes records whose ids are new (the API's: a fresh id each). In PostgreSQL one `COPY`;
    /// should an id exist after all, the batch is written by [`Store::insert`] instead, which
    /// skips it. Returns the rows written.
    pub async fn insert_new(&self, records: &[Record]) -> anyhow::Result<u64> {
        let Some(pg) = &self.pg else {
            return self.insert(records).await;
        };
        let mut rows = Vec::with_capacity(records.len() * 2048 + 32);
        rows.extend_from_slice(COPY_BINARY_HEADER);
        for r in records {
            copy_row(&mut rows, r);
        }
        rows.extend_from_slice(COPY_BINARY_TRAILER);
        let mut copy = sqlx::postgres::PgPoolCopyExt::copy_in_raw(
            pg,
            &format!("COPY decisions ({COLUMNS}) FROM STDIN (FORMAT binary)"),
        )
        .await?;
        let sent = copy.send(rows).await;
        let done = match sent {
            Ok(_) => copy.finish().await,
            Err(e) => {
                let _ = copy.abort("cannot send the rows").await;
                Err(e)
            }
        };
        match done {
            Ok(n) => Ok(n),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => self.insert(records).await,
            Err(e) => Err(e.into()),
        }
    }

    /// Writes the records in one transaction; a record whose `decision_id` is already stored is
    /// skipped (a redelivered batch-job chunk). Returns the rows written.
    pub async fn insert(&self, records: &[Record]) -> anyhow::Result<u64> {
        let mut tx = self.pool.begin().await?;
        let mut written = 0;
        // SQLite: statements of 64 rows, prepared once and cached (a new statement of thousands of
        // parameters for every batch cost SQLite 100 µs a row); PostgreSQL: 500 rows each.
        let per_statement = if self.pg.is_some() {
            ROWS_PER_STATEMENT
        } else {
            64
        };
        for part in records.chunks(per_statement) {
            let mut sql = format!("INSERT INTO decisions ({COLUMNS}) VALUES ");
            for i in 0..part.len() {
                if i > 0 {
                    sql.push(',');
                }
                sql.push('(');
                for c in 0..N_COLUMNS {
                    if c > 0 {
                        sql.push(',');
                    }
                    sql.push_str(&format!("${}", i * N_COLUMNS + c + 1));
                }
                sql.push(')');
            }
            sql.push_str(" ON CONFLICT (request_id, row_index, decision_id) DO NOTHING");
            let mut q = sqlx::query(&sql);
            for r in part {
                q = q
                    .bind(&r.decision_id)
                    .bind(&r.request_id)
                    .bind(r.row_index)
                    .bind(r.recorded_at_ms)
                    .bind(&r.source)
                    .bind(&r.key_id)
                    .bind(&r.model_name)
                    .bind(&r.model_version)
                    .bind(&r.bundle_sha256)
                    .bind(&r.features)
                    .bind(r.probability)
                    .bind(&r.decision)
                    .bind(&r.thresholds)
                    .bind(&r.reason_policy)
                    .bind(&r.reasons)
                    .bind(&r.shadow);
            }
            written += q.execute(&mut *tx).await?.rows_affected();
        }
        tx.commit().await?;
        Ok(written)
    }

    /// A request's records, in row order.
    pub async fn by_request(&self, request_id: &str) -> anyhow::Result<Vec<Record>> {
        Ok(sqlx::query_as(&format!(
            "SELECT {COLUMNS} FROM decisions WHERE request_id = $1 ORDER BY row_index, decision_id"
        ))
        .bind(request_id)
        .fetch_all(&self.pool)
        .await?)
    }

    /// One page of records, oldest first.
    pub async fn page(&self, page: &Page) -> anyhow::Result<Vec<Record>> {
        let mut sql = format!("SELECT {COLUMNS} FROM decisions WHERE 1 = 1");
        let mut n = 0;
        let mut next = || {
            n += 1;
            format!("${n}")
        };
        if page.since_ms.is_some() {
            sql.push_str(&format!(" AND recorded_at_ms >= {}", next()));
        }
        if page.until_ms.is_some() {
            sql.push_str(&format!(" AND recorded_at_ms < {}", next()));
        }
        if page.request_id.is_some() {
            sql.push_str(&format!(" AND request_id = {}", next()));
        }
        if page.after.is_some() {
            let (a, b, c) = (next(), next(), next());
            sql.push_str(&format!(
                " AND (recorded_at_ms > {a} OR (recorded_at_ms = {b} AND decision_id > {c}))"
            ));
        }
        sql.push_str(&format!(
            " ORDER BY recorded_at_ms, decision_id LIMIT {}",
            next()
        ));
        let mut q = sqlx::query_as(&sql);
        if let Some(t) = page.since_ms {
            q = q.bind(t);
        }
        if let Some(t) = page.until_ms {
            q = q.bind(t);
        }
        if let Some(id) = &page.request_id {
            q = q.bind(id.clone());
        }
        if let Some((t, id)) = &page.after {
            q = q.bind(*t).bind(*t).bind(id.clone());
        }
        q = q.bind(i64::try_from(page.limit.max(1)).unwrap_or(i64::MAX));
        Ok(q.fetch_all(&self.pool).await?)
    }

    /// Deletes the records made before `before_ms` (retention). Returns how many.
    pub async fn sweep(&self, before_ms: i64) -> anyhow::Result<u64> {
        Ok(
            sqlx::query("DELETE FROM decisions WHERE recorded_at_ms < $1")
                .bind(before_ms)
                .execute(&self.pool)
                .await?
                .rows_affected(),
        )
    }

    /// Erases a request's records (an applicant's request for erasure). Returns how many.
    pub async fn erase(&self, request_id: &str) -> anyhow::Result<u64> {
        Ok(sqlx::query("DELETE FROM decisions WHERE request_id = $1")
            .bind(request_id)
            .execute(&self.pool)
            .await?
            .rows_affected())
    }

    /// A round trip to the database.
    pub async fn ping(&self) -> anyhow::Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }
}

/// `sqlite:path`, `sqlite://path` or `sqlite:///path` (relative unless the path starts with
/// `/`) as sqlx opens it, creating the file and its folder.
fn sqlite_url(url: &str) -> anyhow::Result<String> {
    let rest = url
        .strip_prefix("sqlite:")
        .ok_or_else(|| anyhow::anyhow!("AUDIT_URL must be postgres://… or sqlite:path"))?;
    let (target, query) = rest.split_once('?').unwrap_or((rest, ""));
    let path = target
        .strip_prefix("///")
        .or_else(|| target.strip_prefix("//"))
        .unwrap_or(target);
    if path.is_empty() || path == ":memory:" {
        return Ok("sqlite::memory:".into());
    }
    if let Some(dir) = std::path::Path::new(path)
        .parent()
        .filter(|d| !d.as_os_str().is_empty())
    {
        std::fs::create_dir_all(dir)?;
    }
    let mut params: Vec<&str> = query.split('&').filter(|q| !q.is_empty()).collect();
    if !params.iter().any(|q| q.starts_with("mode=")) {
        params.push("mode=rwc");
    }
    Ok(format!("sqlite://{path}?{}", params.join("&")))
}

/// The header of `COPY … FROM STDIN (FORMAT binary)`: signature, flags, no extension.
const COPY_BINARY_HEADER: &[u8] = b"PGCOPY\n\xff\r\n\0\0\0\0\0\0\0\0\0";
/// The end of a binary `COPY`.
const COPY_BINARY_TRAILER: &[u8] = &(-1i16).to_be_bytes();

/// One record as a tuple of binary `COPY`: each field its length and its bytes, numbers
/// big-endian (the probability's exact bits), text as is; PostgreSQL parses nothing.
fn copy_row(out: &mut Vec<u8>, r: &Record) {
    fn text(out: &mut Vec<u8>, v: &str) {
        // A field longer than 2 GiB cannot be a record of ours (bodies are bounded far below).
        out.extend_from_slice(&i32::try_from(v.len()).unwrap_or(i32::MAX).to_be_bytes());
        out.extend_from_slice(v.as_bytes());
    }
    fn opt(out: &mut Vec<u8>, v: Option<&str>) {
        match v {
            Some(v) => text(out, v),
            None => out.extend_from_slice(&(-1i32).to_be_bytes()),
        }
    }
    fn eight(out: &mut Vec<u8>, v: [u8; 8]) {
        out.extend_from_slice(&8i32.to_be_bytes());
        out.extend_from_slice(&v);
    }
    out.extend_from_slice(&(N_COLUMNS as i16).to_be_bytes());
    text(out, &r.decision_id);
    text(out, &r.request_id);
    eight(out, r.row_index.to_be_bytes());
    eight(out, r.recorded_at_ms.to_be_bytes());
    text(out, &r.source);
    opt(out, r.key_id.as_deref());
    text(out, &r.model_name);
    text(out, &r.model_version);
    text(out, &r.bundle_sha256);
    text(out, &r.features);
    eight(out, r.probability.to_bits().to_be_bytes());
    text(out, &r.decision);
    text(out, &r.thresholds);
    text(out, &r.reason_policy);
    text(out, &r.reasons);
    opt(out, r.shadow.as_deref());
}
