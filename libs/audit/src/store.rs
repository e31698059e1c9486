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
        let rows: Vec<Vec<u8>> = records.iter().map(encode).collect();
        self.insert_encoded(&rows, &mut Vec::new()).await
    }

    /// As [`Store::insert_new`], for records already encoded by [`encode`] (the API's writer
    /// queues them so). `buf` is the `COPY`'s buffer, kept by the caller from batch to batch.
    pub(crate) async fn insert_encoded(
        &self,
        rows: &[Vec<u8>],
        buf: &mut Vec<u8>,
    ) -> anyhow::Result<u64> {
        let Some(pg) = &self.pg else {
            return self.insert(&decode_all(rows)?).await;
        };
        buf.clear();
        buf.extend_from_slice(COPY_BINARY_HEADER);
        for row in rows {
            buf.extend_from_slice(row);
        }
        buf.extend_from_slice(COPY_BINARY_TRAILER);
        let mut copy = sqlx::postgres::PgPoolCopyExt::copy_in_raw(
            pg,
            &format!("COPY decisions ({COLUMNS}) FROM STDIN (FORMAT binary)"),
        )
        .await?;
        let sent = copy.send(&buf[..]).await;
        let done = match sent {
            Ok(_) => copy.finish().await,
            Err(e) => {
                let _ = copy.abort("cannot send the rows").await;
                Err(e)
            }
        };
        match done {
            Ok(n) => Ok(n),
            Err(sqlx::Error::Database(e)) if e.is_unique_violation() => {
                self.insert(&decode_all(rows)?).await
            }
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
///
/// The API's writer queues records in this form: one allocation per record, made and filled on
/// the request's thread, instead of a dozen strings freed later by the writer's thread.
pub(crate) fn encode(r: &Record) -> Vec<u8> {
    let shadow = r.shadow.as_deref();
    let mut row = encode_but_shadow(r, shadow.map_or(0, str::len));
    opt(&mut row, shadow);
    row
}

/// A record encoded on the request's thread but for its last field, the shadow model's note,
/// which the shadow adds once it has scored (so that what crosses threads is one buffer, as
/// for a record without a shadow, not a dozen strings).
pub struct Unfinished(Vec<u8>);

/// A record encoded whole, ready for [`crate::Auditor::record_encoded`].
pub struct Encoded(pub(crate) Vec<u8>);

/// Room kept at the end of an [`Unfinished`] record for the shadow's note (about 150 bytes).
const SHADOW_NOTE: usize = 256;

impl Unfinished {
    /// `r` encoded but for `r.shadow` (which [`Unfinished::finish`] supplies).
    pub fn new(r: &Record) -> Unfinished {
        Unfinished(encode_but_shadow(r, SHADOW_NOTE))
    }

    /// The record with `shadow` (JSON) as its shadow note: the same bytes as [`encode`] of the
    /// record with `shadow: Some(shadow.to_string())`.
    pub fn finish(self, shadow: &serde_json::Value) -> Encoded {
        let mut row = self.0;
        let at = row.len();
        row.extend_from_slice(&[0; 4]);
        serde_json::to_writer(&mut row, shadow).expect("a JSON value serialises into a Vec");
        let n = i32::try_from(row.len() - at - 4).unwrap_or(i32::MAX);
        row[at..at + 4].copy_from_slice(&n.to_be_bytes());
        Encoded(row)
    }
}

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

/// Every field of `r`'s tuple but the last (`shadow`), with room for the last's length and
/// `spare` bytes of it.
fn encode_but_shadow(r: &Record, spare: usize) -> Vec<u8> {
    let texts = [
        r.decision_id.len(),
        r.request_id.len(),
        r.source.len(),
        r.key_id.as_ref().map_or(0, String::len),
        r.model_name.len(),
        r.model_version.len(),
        r.bundle_sha256.len(),
        r.features.len(),
        r.decision.len(),
        r.thresholds.len(),
        r.reason_policy.len(),
        r.reasons.len(),
    ];
    let mut row =
        Vec::with_capacity(2 + 4 * N_COLUMNS + 3 * 8 + texts.iter().sum::<usize>() + spare);
    fn eight(out: &mut Vec<u8>, v: [u8; 8]) {
        out.extend_from_slice(&8i32.to_be_bytes());
        out.extend_from_slice(&v);
    }
    let out = &mut row;
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
    row
}

/// The records of tuples made by [`encode`] (for SQLite, and for a `COPY` that met an id
/// already stored).
fn decode_all(rows: &[Vec<u8>]) -> anyhow::Result<Vec<Record>> {
    rows.iter().map(|row| decode(row)).collect()
}

/// The record of a tuple made by [`encode`].
pub(crate) fn decode(row: &[u8]) -> anyhow::Result<Record> {
    struct Fields<'a>(&'a [u8]);
    impl<'a> Fields<'a> {
        fn take(&mut self, n: usize) -> anyhow::Result<&'a [u8]> {
            anyhow::ensure!(self.0.len() >= n, "a queued audit record is cut short");
            let (head, rest) = self.0.split_at(n);
            self.0 = rest;
            Ok(head)
        }
        fn field(&mut self) -> anyhow::Result<Option<&'a [u8]>> {
            let len = i32::from_be_bytes(self.take(4)?.try_into()?);
            Ok(match usize::try_from(len) {
                Ok(n) => Some(self.take(n)?),
                Err(_) => None,
            })
        }
        fn opt(&mut self) -> anyhow::Result<Option<String>> {
            self.field()?
                .map(|b| Ok(String::from_utf8(b.to_vec())?))
                .transpose()
        }
        fn text(&mut self) -> anyhow::Result<String> {
            self.opt()?
                .ok_or_else(|| anyhow::anyhow!("a queued audit record lacks a field"))
        }
        fn eight(&mut self) -> anyhow::Result<[u8; 8]> {
            let b = self
                .field()?
                .ok_or_else(|| anyhow::anyhow!("a queued audit record lacks a number"))?;
            Ok(b.try_into()?)
        }
    }
    let mut f = Fields(row);
    let columns = i16::from_be_bytes(f.take(2)?.try_into()?);
    anyhow::ensure!(
        usize::try_from(columns) == Ok(N_COLUMNS),
        "a queued audit record has {columns} columns"
    );
    let record = Record {
        decision_id: f.text()?,
        request_id: f.text()?,
        row_index: i64::from_be_bytes(f.eight()?),
        recorded_at_ms: i64::from_be_bytes(f.eight()?),
        source: f.text()?,
        key_id: f.opt()?,
        model_name: f.text()?,
        model_version: f.text()?,
        bundle_sha256: f.text()?,
        features: f.text()?,
        probability: f64::from_bits(u64::from_be_bytes(f.eight()?)),
        decision: f.text()?,
        thresholds: f.text()?,
        reason_policy: f.text()?,
        reasons: f.text()?,
        shadow: f.opt()?,
    };
    anyhow::ensure!(f.0.is_empty(), "a queued audit record runs on");
    Ok(record)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(key_id: Option<&str>, shadow: Option<&str>) -> Record {
        Record {
            decision_id: "d-1".into(),
            request_id: "r\u{e9}q".into(),
            row_index: -3,
            recorded_at_ms: 1_796_504_222_181,
            source: "predict".into(),
            key_id: key_id.map(String::from),
            model_name: "credit".into(),
            model_version: "7".into(),
            bundle_sha256: "ab".repeat(32),
            features: r#"{"amount":1169.0,"purpose":"car"}"#.into(),
            probability: 0.1 + 0.2,
            decision: "approve".into(),
            thresholds: r#"{"approve":0.1}"#.into(),
            reason_policy: "all".into(),
            reasons: String::new(),
            shadow: shadow.map(String::from),
        }
    }

    #[test]
    fn an_encoded_record_decodes_to_itself_bit_for_bit() {
        for (key, shadow) in [
            (None, None),
            (Some("k1"), Some(r#"{"p":1}"#)),
            (Some(""), None),
        ] {
            let r = record(key, shadow);
            let row = encode(&r);
            assert_eq!(row.len(), row.capacity(), "sized exactly, no reallocation");
            let back = decode(&row).expect("decodes");
            assert_eq!(back, r);
            assert_eq!(back.probability.to_bits(), r.probability.to_bits());
        }
    }

    #[test]
    fn a_record_finished_by_the_shadow_is_the_record_with_its_note() {
        let note = serde_json::json!({
            "model": {"name": "m", "version": "2"},
            "probability": 0.125,
            "decision": "approve \"quoted\"",
        });
        for key in [None, Some("k1")] {
            let unfinished = Unfinished::new(&record(key, None));
            let Encoded(row) = unfinished.finish(&note);
            let whole = record(key, Some(&note.to_string()));
            assert_eq!(
                row,
                encode(&whole),
                "the same bytes as a record encoded whole"
            );
            assert_eq!(decode(&row).expect("decodes"), whole);
        }
    }

    #[test]
    fn a_damaged_tuple_is_an_error_not_a_record() {
        let row = encode(&record(Some("k"), None));
        assert!(decode(&row[..row.len() - 1]).is_err());
        let mut longer = row.clone();
        longer.push(0);
        assert!(decode(&longer).is_err());
        assert!(decode(&row[..1]).is_err());
    }
}
