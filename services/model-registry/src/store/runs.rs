//! Runs with their params, tags, metrics, inputs and outputs.

use serde_json::{json, Value};

use super::{kv_json, metric_value_json, now_ms, placeholders, Backend, Pool, View};
use crate::error::{invalid, RegistryError, Result};
use crate::search::{self, Clause, Field, OrderBy, Searchable};
use crate::search_sql::{self, arguments, Arg, Kind, Shape};

#[derive(Debug, Clone, PartialEq)]
pub struct Metric {
    pub key: String,
    pub value: f64,
    pub is_nan: bool,
    pub timestamp: i64,
    pub step: i64,
}

impl Metric {
    pub fn json(&self) -> Value {
        json!({"key": self.key, "value": metric_value_json(self.value, self.is_nan), "timestamp": self.timestamp, "step": self.step})
    }
}

/// A metric as stored: `is_nan` is an integer column on both backends (SQLite has no boolean),
/// so it is read as `i64` and turned into [`Metric::is_nan`].
#[derive(sqlx::FromRow)]
struct MetricRow {
    key: String,
    value: f64,
    is_nan: i64,
    timestamp: i64,
    step: i64,
}

impl From<MetricRow> for Metric {
    fn from(r: MetricRow) -> Metric {
        Metric {
            key: r.key,
            value: r.value,
            is_nan: r.is_nan != 0,
            timestamp: r.timestamp,
            step: r.step,
        }
    }
}

/// A point logged against a logged model, with its run and dataset.
#[derive(sqlx::FromRow)]
struct ModelMetricRow {
    model_id: String,
    run_id: String,
    #[sqlx(flatten)]
    metric: MetricRow,
    dataset_name: Option<String>,
    dataset_digest: Option<String>,
}

/// A metric as logged (3.x clients may tie it to a logged model and a dataset).
#[derive(Debug, Clone)]
pub struct MetricIn {
    pub key: String,
    pub value: f64,
    pub timestamp: i64,
    pub step: i64,
    pub model_id: Option<String>,
    pub dataset_name: Option<String>,
    pub dataset_digest: Option<String>,
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Run {
    pub run_id: String,
    pub experiment_id: i64,
    pub run_name: String,
    pub user_id: String,
    pub status: String,
    pub start_time: i64,
    pub end_time: Option<i64>,
    pub artifact_uri: String,
    pub lifecycle_stage: String,
    #[sqlx(skip)]
    pub params: Vec<(String, String)>,
    #[sqlx(skip)]
    pub tags: Vec<(String, String)>,
    #[sqlx(skip)]
    pub metrics: Vec<Metric>,
    #[sqlx(skip)]
    pub dataset_inputs: Vec<Value>,
    /// `{"model_id": …}` for each logged model the run took as input.
    #[sqlx(skip)]
    pub model_inputs: Vec<Value>,
    #[sqlx(skip)]
    pub model_outputs: Vec<(String, i64)>,
}

impl Run {
    pub fn info_json(&self) -> Value {
        let mut info = json!({
            "run_id": self.run_id,
            "run_uuid": self.run_id,
            "experiment_id": self.experiment_id.to_string(),
            "run_name": self.run_name,
            "user_id": self.user_id,
            "status": self.status,
            "start_time": self.start_time,
            "artifact_uri": self.artifact_uri,
            "lifecycle_stage": self.lifecycle_stage,
        });
        if let Some(end) = self.end_time {
            info["end_time"] = json!(end);
        }
        info
    }

    pub fn json(&self) -> Value {
        json!({
            "info": self.info_json(),
            "data": {
                "metrics": self.metrics.iter().map(Metric::json).collect::<Vec<_>>(),
                "params": kv_json(&self.params),
                "tags": kv_json(&self.tags),
            },
            "inputs": {"dataset_inputs": self.dataset_inputs, "model_inputs": self.model_inputs},
            "outputs": {"model_outputs": self.model_outputs.iter().map(|(m, s)| json!({"model_id": m, "step": s})).collect::<Vec<_>>()},
        })
    }
}

impl Searchable for Run {
    fn field(&self, f: &Field) -> Option<search::Value> {
        use search::Value as V;
        match f {
            Field::Metric(k) => self
                .metrics
                .iter()
                .find(|m| &m.key == k)
                .map(|m| V::Num(if m.is_nan { f64::NAN } else { m.value })),
            Field::Param(k) => self
                .params
                .iter()
                .find(|(p, _)| p == k)
                .map(|(_, v)| V::Str(v.clone())),
            Field::Tag(k) => self
                .tags
                .iter()
                .find(|(p, _)| p == k)
                .map(|(_, v)| V::Str(v.clone())),
            Field::Attribute(a) => match a.as_str() {
                "run_id" => Some(V::Str(self.run_id.clone())),
                "run_name" => Some(V::Str(self.run_name.clone())),
                "status" => Some(V::Str(self.status.clone())),
                "user_id" => Some(V::Str(self.user_id.clone())),
                "artifact_uri" => Some(V::Str(self.artifact_uri.clone())),
                "lifecycle_stage" => Some(V::Str(self.lifecycle_stage.clone())),
                "start_time" => Some(V::Num(self.start_time as f64)),
                "end_time" => self.end_time.map(|t| V::Num(t as f64)),
                _ => None,
            },
            Field::Dataset(k) => self.dataset_inputs.iter().find_map(|d| {
                let field = match k.as_str() {
                    "context" => {
                        return d["tags"]
                            .as_array()?
                            .iter()
                            .find(|t| t["key"] == "mlflow.data.context")
                            .map(|t| V::Str(t["value"].as_str().unwrap_or("").into()))
                    }
                    other => other,
                };
                d["dataset"][field].as_str().map(|s| V::Str(s.to_string()))
            }),
        }
    }
}

pub const STATUSES: [&str; 5] = ["RUNNING", "SCHEDULED", "FINISHED", "FAILED", "KILLED"];

/// A readable default run name, as MLflow gives one ("bold-fish-123").
pub fn default_run_name() -> String {
    const A: [&str; 12] = [
        "bold", "calm", "eager", "fair", "gentle", "keen", "lucid", "merry", "quiet", "sharp",
        "swift", "wise",
    ];
    const N: [&str; 12] = [
        "ant", "bear", "crane", "deer", "eagle", "fox", "hawk", "lynx", "owl", "seal", "wolf",
        "yak",
    ];
    let u = uuid::Uuid::new_v4().as_u128();
    format!(
        "{}-{}-{}",
        A[(u % 12) as usize],
        N[((u >> 8) % 12) as usize],
        (u >> 16) % 1000
    )
}

pub async fn insert_run(
    pool: &Pool,
    experiment_id: i64,
    run_name: Option<String>,
    user_id: &str,
    start_time: i64,
    tags: &[(String, String)],
) -> Result<Run> {
    let exp = super::experiments::get_experiment(pool, experiment_id).await?;
    if !exp.is_active() {
        return invalid(format!(
            "The experiment {experiment_id} must be in the 'active' state."
        ));
    }
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let tag_name = tags
        .iter()
        .find(|(k, _)| k == "mlflow.runName")
        .map(|(_, v)| v.clone());
    let run_name = run_name
        .filter(|n| !n.is_empty())
        .or(tag_name)
        .unwrap_or_else(default_run_name);
    let artifact_uri = format!(
        "{}/{}/artifacts",
        exp.artifact_location.trim_end_matches('/'),
        run_id
    );
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO runs (run_id, experiment_id, run_name, user_id, status, start_time, artifact_uri, lifecycle_stage) \
         VALUES ($1, $2, $3, $4, 'RUNNING', $5, $6, 'active')",
    )
    .bind(&run_id)
    .bind(experiment_id)
    .bind(&run_name)
    .bind(user_id)
    .bind(start_time)
    .bind(&artifact_uri)
    .execute(&mut *tx)
    .await?;
    let mut all_tags: Vec<(String, String)> = tags
        .iter()
        .filter(|(k, _)| k != "mlflow.runName")
        .cloned()
        .collect();
    all_tags.push(("mlflow.runName".into(), run_name.clone()));
    for (k, v) in &all_tags {
        sqlx::query("INSERT INTO tags (run_id, key, value) VALUES ($1, $2, $3) ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value")
            .bind(&run_id)
            .bind(k)
            .bind(v)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    get_run(pool, &run_id).await
}

const COLUMNS: &str = "run_id, experiment_id, run_name, user_id, status, start_time, end_time, artifact_uri, lifecycle_stage";

/// One row of a run's params (`p`), tags (`t`), latest metrics (`m`), inputs (`i`) or outputs
/// (`o`): [`fill`] reads all five tables in one statement, one hand-off to the database.
#[derive(sqlx::FromRow)]
struct PartRow {
    run_id: String,
    part: String,
    /// The key; an input's kind; an output's model id.
    key: String,
    /// A param's or tag's value; an input's payload.
    text: Option<String>,
    num: Option<f64>,
    is_nan: Option<i64>,
    ts: Option<i64>,
    /// A metric's or output's step; an input's row id (the order it was logged in).
    step: Option<i64>,
}

/// The five tables of [`PartRow`], each joined to `runs r` and cut to `scope`.
fn parts_sql(scope: &str) -> String {
    let (no_text, no_num, no_int) = (
        "CAST(NULL AS TEXT)",
        "CAST(NULL AS DOUBLE PRECISION)",
        "CAST(NULL AS BIGINT)",
    );
    [
        format!("SELECT t.run_id, 'p' AS part, t.key, t.value AS text, {no_num} AS num, {no_int} AS is_nan, {no_int} AS ts, {no_int} AS step FROM params t"),
        format!("SELECT t.run_id, 't', t.key, t.value, {no_num}, {no_int}, {no_int}, {no_int} FROM tags t"),
        format!("SELECT t.run_id, 'm', t.key, {no_text}, t.value, t.is_nan, t.timestamp, t.step FROM latest_metrics t"),
        format!("SELECT t.run_id, 'i', t.kind, t.payload, {no_num}, {no_int}, {no_int}, t.id FROM run_inputs t"),
        format!("SELECT t.run_id, 'o', t.model_id, {no_text}, {no_num}, {no_int}, {no_int}, t.step FROM run_outputs t"),
    ]
    .iter()
    .map(|select| format!("{select} JOIN runs r ON r.run_id = t.run_id WHERE {scope}"))
    .collect::<Vec<_>>()
    .join(" UNION ALL ")
}

/// Loads params, tags, latest metrics, inputs and outputs for runs, in one query.
async fn fill<'c, E>(db: E, runs: &mut [Run], scope: &str, scope_args: &[Arg]) -> Result<()>
where
    E: sqlx::Executor<'c, Database = sqlx::Any>,
{
    if runs.is_empty() {
        return Ok(());
    }
    let index: std::collections::HashMap<String, usize> = runs
        .iter()
        .enumerate()
        .map(|(i, r)| (r.run_id.clone(), i))
        .collect();
    let rows = sqlx::query_as_with::<_, PartRow, _>(&parts_sql(scope), arguments(scope_args)?)
        .fetch_all(db)
        .await?;
    let mut inputs: Vec<(usize, i64, String, String)> = Vec::new();
    for row in rows {
        let Some(&i) = index.get(&row.run_id) else {
            continue;
        };
        let run = &mut runs[i];
        match row.part.as_str() {
            "p" => run.params.push((row.key, row.text.unwrap_or_default())),
            "t" => run.tags.push((row.key, row.text.unwrap_or_default())),
            "m" => run.metrics.push(Metric {
                key: row.key,
                value: row.num.unwrap_or(0.0),
                is_nan: row.is_nan.unwrap_or(0) != 0,
                timestamp: row.ts.unwrap_or(0),
                step: row.step.unwrap_or(0),
            }),
            "i" => inputs.push((
                i,
                row.step.unwrap_or(0),
                row.key,
                row.text.unwrap_or_default(),
            )),
            _ => run.model_outputs.push((row.key, row.step.unwrap_or(0))),
        }
    }
    inputs.sort_by_key(|(i, id, _, _)| (*i, *id));
    for (i, _, kind, payload) in inputs {
        let payload = serde_json::from_str(&payload).unwrap_or(Value::Null);
        if kind == "model" {
            runs[i].model_inputs.push(payload);
        } else {
            runs[i].dataset_inputs.push(payload);
        }
    }
    for r in runs.iter_mut() {
        r.params.sort();
        r.tags.sort();
        r.metrics.sort_by(|a, b| a.key.cmp(&b.key));
        r.model_outputs.sort();
    }
    Ok(())
}

pub async fn get_run(pool: &Pool, run_id: &str) -> Result<Run> {
    let run = sqlx::query_as::<_, Run>(&format!("SELECT {COLUMNS} FROM runs WHERE run_id = $1"))
        .bind(run_id)
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| RegistryError::NotFound(format!("Run with id={run_id} not found")))?;
    let mut runs = vec![run];
    fill(
        pool,
        &mut runs,
        "r.run_id = $1",
        &[Arg::Text(run_id.into())],
    )
    .await?;
    Ok(runs.remove(0))
}

/// Runs of some experiments in a lifecycle view, fully loaded.
pub async fn list_runs(pool: &Pool, experiment_ids: &[i64], view: View) -> Result<Vec<Run>> {
    if experiment_ids.is_empty() {
        return Ok(Vec::new());
    }
    let stage = match view.stage() {
        Some(stage) => format!(" AND r.lifecycle_stage = '{stage}'"),
        None => String::new(),
    };
    let scope = format!(
        "r.experiment_id IN ({}){stage}",
        placeholders(1, experiment_ids.len())
    );
    let sql = format!(
        "SELECT {} FROM runs r WHERE {scope}",
        COLUMNS
            .split(", ")
            .map(|c| format!("r.{c}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    let mut q = sqlx::query_as::<_, Run>(&sql);
    for id in experiment_ids {
        q = q.bind(*id);
    }
    let mut runs = q.fetch_all(pool).await?;
    let args: Vec<Arg> = experiment_ids.iter().map(|i| Arg::Int(*i)).collect();
    fill(pool, &mut runs, &scope, &args).await?;
    Ok(runs)
}

/// A runs search's order with MLflow's tie-breaks: `start_time DESC` unless already ordered
/// on, then `run_id`.
pub fn with_tiebreaks(mut order: Vec<OrderBy>) -> Vec<OrderBy> {
    let start = Field::Attribute("start_time".into());
    if !order.iter().any(|o| o.field == start) {
        order.push(OrderBy {
            field: start,
            ascending: false,
        });
    }
    order.push(OrderBy {
        field: Field::Attribute("run_id".into()),
        ascending: true,
    });
    order
}

/// How runs' fields map to SQL, for searches the database answers.
pub const SHAPE: Shape = Shape {
    link: &[("run_id", "r.run_id")],
    metrics: Some("latest_metrics"),
    params: Some("params"),
    tags: Some("tags"),
    attrs: &[
        ("run_id", "r.run_id", Kind::Text),
        ("run_name", "r.run_name", Kind::Text),
        ("status", "r.status", Kind::Text),
        ("user_id", "r.user_id", Kind::Text),
        ("artifact_uri", "r.artifact_uri", Kind::Text),
        ("lifecycle_stage", "r.lifecycle_stage", Kind::Text),
        ("start_time", "r.start_time", Kind::Number),
        ("end_time", "r.end_time", Kind::OptNumber),
    ],
};

/// One page of a runs search, filtered, ordered and cut by the database: the runs from
/// `offset`, at most `max`, and whether more follow. `None` when the filter or the order has a
/// term SQL cannot say exactly (see [`crate::search_sql`]); the caller then searches in memory.
#[allow(clippy::too_many_arguments)]
pub async fn search_page(
    conn: &mut sqlx::AnyConnection,
    backend: Backend,
    experiment_ids: &[i64],
    view: View,
    clauses: &[Clause],
    order: &[OrderBy],
    offset: usize,
    max: usize,
) -> Result<Option<(Vec<Run>, bool)>> {
    if experiment_ids.is_empty() {
        return Ok(Some((Vec::new(), false)));
    }
    let stage = match view.stage() {
        Some(stage) => format!(" AND r.lifecycle_stage = '{stage}'"),
        None => String::new(),
    };
    let scope = search_sql::Scope {
        from: "runs r",
        keys: "r.run_id",
        condition: format!(
            "r.experiment_id IN ({}){stage}",
            placeholders(1, experiment_ids.len())
        ),
        args: experiment_ids.iter().map(|i| Arg::Int(*i)).collect(),
    };
    let keys = COLUMNS
        .split(", ")
        .map(|c| format!("r.{c}"))
        .collect::<Vec<_>>()
        .join(", ");
    let scope = search_sql::Scope {
        keys: &keys,
        ..scope
    };
    let Some((mut runs, more)) = search_sql::page_keys::<Run, _>(
        &mut *conn, backend, &SHAPE, scope, clauses, order, offset, max,
    )
    .await?
    else {
        return Ok(None);
    };
    // The page's params, tags and metrics, in chunks: SQLite binds at most 32,766 values.
    for chunk in runs.chunks_mut(super::MAX_BOUND) {
        let scope = format!("r.run_id IN ({})", placeholders(1, chunk.len()));
        let args: Vec<Arg> = chunk.iter().map(|r| Arg::Text(r.run_id.clone())).collect();
        fill(&mut *conn, chunk, &scope, &args).await?;
    }
    Ok(Some((runs, more)))
}

/// The run, which must be active to be written to.
pub async fn active_run(pool: &Pool, run_id: &str) -> Result<Run> {
    let run = get_run_info(pool, run_id).await?;
    if run.lifecycle_stage != "active" {
        return invalid(format!(
            "The run {run_id} must be in the 'active' state. Current state is {}.",
            run.lifecycle_stage
        ));
    }
    Ok(run)
}

/// The run's own columns only (no params, tags or metrics).
pub async fn get_run_info(pool: &Pool, run_id: &str) -> Result<Run> {
    sqlx::query_as::<_, Run>(&format!("SELECT {COLUMNS} FROM runs WHERE run_id = $1"))
        .bind(run_id)
        .fetch_optional(pool)
        .await?
        .ok_or_else(|| RegistryError::NotFound(format!("Run with id={run_id} not found")))
}

pub async fn update_run(
    pool: &Pool,
    run_id: &str,
    status: Option<&str>,
    end_time: Option<i64>,
    run_name: Option<&str>,
) -> Result<Run> {
    let run = active_run(pool, run_id).await?;
    if let Some(s) = status {
        if !STATUSES.contains(&s) {
            return invalid(format!("Invalid run status '{s}'"));
        }
    }
    let status = status.unwrap_or(&run.status);
    // Re-opening a run (status RUNNING) clears its end time.
    let end_time = if status == "RUNNING" {
        None
    } else {
        end_time.or(run.end_time)
    };
    let name = run_name.filter(|n| !n.is_empty()).unwrap_or(&run.run_name);
    let mut tx = pool.begin().await?;
    sqlx::query("UPDATE runs SET status = $1, end_time = $2, run_name = $3 WHERE run_id = $4")
        .bind(status)
        .bind(end_time)
        .bind(name)
        .bind(run_id)
        .execute(&mut *tx)
        .await?;
    if name != run.run_name {
        sqlx::query("INSERT INTO tags (run_id, key, value) VALUES ($1, 'mlflow.runName', $2) ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value")
            .bind(run_id)
            .bind(name)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    get_run_info(pool, run_id).await
}

pub async fn set_run_stage(pool: &Pool, run_id: &str, stage: &str) -> Result<()> {
    get_run_info(pool, run_id).await?;
    sqlx::query("UPDATE runs SET lifecycle_stage = $1 WHERE run_id = $2")
        .bind(stage)
        .bind(run_id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Logs params, metrics and tags of one batch atomically. Re-logging a param with a different
/// value is an error, as in MLflow.
pub async fn log_batch(
    pool: &Pool,
    run_id: &str,
    metrics: &[MetricIn],
    params: &[(String, String)],
    tags: &[(String, String)],
) -> Result<()> {
    active_run(pool, run_id).await?;
    let mut tx = pool.begin().await?;
    for (k, v) in params {
        let existing = sqlx::query_scalar::<_, String>(
            "SELECT value FROM params WHERE run_id = $1 AND key = $2",
        )
        .bind(run_id)
        .bind(k)
        .fetch_optional(&mut *tx)
        .await?;
        match existing {
            Some(old) => {
                if &old != v {
                    return invalid(format!(
                        "Changing param values is not allowed. Param with key='{k}' was already logged with value='{old}' for run ID='{run_id}'. Attempted logging new value '{v}'."
                    ));
                }
            }
            None => {
                sqlx::query("INSERT INTO params (run_id, key, value) VALUES ($1, $2, $3) ON CONFLICT (run_id, key) DO NOTHING")
                    .bind(run_id)
                    .bind(k)
                    .bind(v)
                    .execute(&mut *tx)
                    .await?;
            }
        }
    }
    for (k, v) in tags {
        sqlx::query("INSERT INTO tags (run_id, key, value) VALUES ($1, $2, $3) ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value")
            .bind(run_id)
            .bind(k)
            .bind(v)
            .execute(&mut *tx)
            .await?;
        if k == "mlflow.runName" {
            sqlx::query("UPDATE runs SET run_name = $1 WHERE run_id = $2")
                .bind(v)
                .bind(run_id)
                .execute(&mut *tx)
                .await?;
        }
    }
    for m in metrics {
        let is_nan = m.value.is_nan();
        let value = if is_nan { 0.0 } else { m.value };
        // A point identical to one already logged (key, value, step, timestamp) is kept once,
        // as MLflow's store keeps it.
        sqlx::query(
            "INSERT INTO metrics (run_id, key, value, is_nan, timestamp, step, model_id, dataset_name, dataset_digest) \
             SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9 WHERE NOT EXISTS (SELECT 1 FROM metrics \
             WHERE run_id = $1 AND key = $2 AND value = $3 AND is_nan = $4 AND timestamp = $5 AND step = $6)",
        )
        .bind(run_id)
        .bind(&m.key)
        .bind(value)
        .bind(i64::from(is_nan))
        .bind(m.timestamp)
        .bind(m.step)
        .bind(m.model_id.clone())
        .bind(m.dataset_name.clone())
        .bind(m.dataset_digest.clone())
        .execute(&mut *tx)
        .await?;
        // The latest value: largest (step, timestamp, value); NaN ranks below numbers.
        sqlx::query(
            "INSERT INTO latest_metrics (run_id, key, value, is_nan, timestamp, step) VALUES ($1, $2, $3, $4, $5, $6) \
             ON CONFLICT (run_id, key) DO UPDATE SET value = excluded.value, is_nan = excluded.is_nan, \
             timestamp = excluded.timestamp, step = excluded.step \
             WHERE excluded.step > latest_metrics.step \
                OR (excluded.step = latest_metrics.step AND excluded.timestamp > latest_metrics.timestamp) \
                OR (excluded.step = latest_metrics.step AND excluded.timestamp = latest_metrics.timestamp \
                    AND (excluded.is_nan < latest_metrics.is_nan OR (excluded.is_nan = latest_metrics.is_nan AND excluded.value > latest_metrics.value)))",
        )
        .bind(run_id)
        .bind(&m.key)
        .bind(value)
        .bind(i64::from(is_nan))
        .bind(m.timestamp)
        .bind(m.step)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub async fn delete_tag(pool: &Pool, run_id: &str, key: &str) -> Result<()> {
    active_run(pool, run_id).await?;
    let r = sqlx::query("DELETE FROM tags WHERE run_id = $1 AND key = $2")
        .bind(run_id)
        .bind(key)
        .execute(pool)
        .await?;
    if r.rows_affected() == 0 {
        return Err(RegistryError::NotFound(format!(
            "No tag with name: {key} in run with id {run_id}"
        )));
    }
    Ok(())
}

/// A metric's whole history, ordered by step then timestamp.
pub async fn metric_history(pool: &Pool, run_id: &str, key: &str) -> Result<Vec<Metric>> {
    get_run_info(pool, run_id).await?;
    let rows = sqlx::query_as::<_, MetricRow>("SELECT key, value, is_nan, timestamp, step FROM metrics WHERE run_id = $1 AND key = $2 ORDER BY step, timestamp, id")
        .bind(run_id)
        .bind(key)
        .fetch_all(pool)
        .await?;
    Ok(rows.into_iter().map(Metric::from).collect())
}

pub async fn log_inputs(
    pool: &Pool,
    run_id: &str,
    datasets: &[Value],
    model_ids: &[String],
) -> Result<()> {
    active_run(pool, run_id).await?;
    for id in model_ids {
        sqlx::query("INSERT INTO run_inputs (run_id, kind, payload) VALUES ($1, 'model', $2)")
            .bind(run_id)
            .bind(json!({"model_id": id}).to_string())
            .execute(pool)
            .await?;
    }
    for d in datasets {
        sqlx::query("INSERT INTO run_inputs (run_id, kind, payload) VALUES ($1, 'dataset', $2)")
            .bind(run_id)
            .bind(d.to_string())
            .execute(pool)
            .await?;
    }
    Ok(())
}

pub async fn log_outputs(pool: &Pool, run_id: &str, models: &[(String, i64)]) -> Result<()> {
    active_run(pool, run_id).await?;
    for (model_id, step) in models {
        sqlx::query("INSERT INTO run_outputs (run_id, model_id, step) VALUES ($1, $2, $3) ON CONFLICT (run_id, model_id) DO UPDATE SET step = excluded.step")
            .bind(run_id)
            .bind(model_id)
            .bind(*step)
            .execute(pool)
            .await?;
    }
    Ok(())
}

/// Latest metric values logged against a logged model, with their run and dataset.
pub async fn model_metrics(pool: &Pool, model_id: &str) -> Result<Vec<Value>> {
    Ok(models_metrics(pool, &[model_id.to_string()])
        .await?
        .remove(model_id)
        .unwrap_or_default())
}

/// The metrics of logged models, by model id: the latest point per key and dataset.
pub async fn models_metrics(
    pool: &Pool,
    model_ids: &[String],
) -> Result<std::collections::HashMap<String, Vec<Value>>> {
    let mut by_model: std::collections::HashMap<String, Vec<Value>> =
        std::collections::HashMap::new();
    if model_ids.is_empty() {
        return Ok(by_model);
    }
    let sql = format!(
        "SELECT model_id, run_id, key, value, is_nan, timestamp, step, dataset_name, dataset_digest FROM metrics \
         WHERE model_id IN ({}) ORDER BY model_id, key, step, timestamp, id",
        placeholders(1, model_ids.len())
    );
    let mut q = sqlx::query_as::<_, ModelMetricRow>(&sql);
    for id in model_ids {
        q = q.bind(id);
    }
    for row in q.fetch_all(pool).await? {
        let point = Metric::from(row.metric);
        let mut m = json!({
            "key": point.key,
            "value": metric_value_json(point.value, point.is_nan),
            "timestamp": point.timestamp,
            "step": point.step,
            "run_id": row.run_id,
            "model_id": row.model_id,
        });
        if let Some(n) = row.dataset_name {
            m["dataset_name"] = json!(n);
        }
        if let Some(d) = row.dataset_digest {
            m["dataset_digest"] = json!(d);
        }
        let out = by_model.entry(row.model_id).or_default();
        // Keep the latest per (key, dataset): rows come ordered, so later ones replace.
        if let Some(prev) = out
            .iter_mut()
            .find(|p| p["key"] == m["key"] && p["dataset_name"] == m["dataset_name"])
        {
            *prev = m;
        } else {
            out.push(m);
        }
    }
    Ok(by_model)
}

pub fn now() -> i64 {
    now_ms()
}

/// The number of active runs in each experiment that has any.
pub async fn count_by_experiment(pool: &Pool) -> Result<std::collections::HashMap<i64, i64>> {
    let rows = sqlx::query_as::<_, (i64, i64)>(
        "SELECT experiment_id, COUNT(*) AS n FROM runs WHERE lifecycle_stage = 'active' GROUP BY experiment_id",
    )
    .fetch_all(pool)
    .await?;
    Ok(rows.into_iter().collect())
}
