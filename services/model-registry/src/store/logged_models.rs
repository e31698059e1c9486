//! MLflow 3 logged models: a model's own artifact directory, params, tags and metrics.

use serde_json::{json, Value};

use super::{kv_json, now_ms, placeholders, Backend, Pool};
use crate::error::{invalid, RegistryError, Result};
use crate::search::{self, Clause, Field, OrderBy, Searchable};
use crate::search_sql::{self, Arg, Kind, Shape};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct LoggedModel {
    pub model_id: String,
    pub experiment_id: i64,
    pub name: String,
    pub artifact_uri: String,
    pub creation_timestamp_ms: i64,
    pub last_updated_timestamp_ms: i64,
    pub status: String,
    pub model_type: Option<String>,
    pub source_run_id: Option<String>,
    #[sqlx(skip)]
    pub params: Vec<(String, String)>,
    #[sqlx(skip)]
    pub tags: Vec<(String, String)>,
    #[sqlx(skip)]
    pub metrics: Vec<Value>,
}

impl LoggedModel {
    pub fn json(&self) -> Value {
        let mut info = json!({
            "model_id": self.model_id,
            "experiment_id": self.experiment_id.to_string(),
            "name": self.name,
            "artifact_uri": self.artifact_uri,
            "creation_timestamp_ms": self.creation_timestamp_ms,
            "last_updated_timestamp_ms": self.last_updated_timestamp_ms,
            "status": self.status,
            "tags": kv_json(&self.tags),
        });
        if let Some(t) = &self.model_type {
            info["model_type"] = json!(t);
        }
        if let Some(r) = &self.source_run_id {
            info["source_run_id"] = json!(r);
        }
        json!({"info": info, "data": {"params": kv_json(&self.params), "metrics": self.metrics}})
    }
}

impl Searchable for LoggedModel {
    fn field(&self, f: &Field) -> Option<search::Value> {
        use search::Value as V;
        match f {
            Field::Attribute(a) => match a.as_str() {
                "name" => Some(V::Str(self.name.clone())),
                "model_id" => Some(V::Str(self.model_id.clone())),
                "model_type" => self.model_type.clone().map(V::Str),
                "status" => Some(V::Str(self.status.clone())),
                "source_run_id" => self.source_run_id.clone().map(V::Str),
                "creation_timestamp" | "creation_time" => {
                    Some(V::Num(self.creation_timestamp_ms as f64))
                }
                "last_updated_timestamp" => Some(V::Num(self.last_updated_timestamp_ms as f64)),
                _ => None,
            },
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
            Field::Metric(k) => self
                .metrics
                .iter()
                .find(|m| m["key"] == k.as_str())
                .and_then(|m| match &m["value"] {
                    Value::Number(n) => n.as_f64().map(V::Num),
                    Value::String(s) => crate::params::parse_float(s).map(V::Num),
                    _ => None,
                }),
            Field::Dataset(_) => None,
        }
    }
}

pub const STATUSES: [&str; 3] = [
    "LOGGED_MODEL_PENDING",
    "LOGGED_MODEL_READY",
    "LOGGED_MODEL_UPLOAD_FAILED",
];

pub async fn insert_logged_model(
    pool: &Pool,
    experiment_id: i64,
    name: &str,
    model_type: Option<String>,
    source_run_id: Option<String>,
    params: &[(String, String)],
    tags: &[(String, String)],
) -> Result<LoggedModel> {
    let exp = super::experiments::get_experiment(pool, experiment_id).await?;
    if !exp.is_active() {
        return invalid(format!(
            "The experiment {experiment_id} must be in the 'active' state."
        ));
    }
    // The source run is recorded as given: MLflow does not require it to be stored here.
    let model_id = format!("m-{}", uuid::Uuid::new_v4().simple());
    let artifact_uri = format!(
        "{}/models/{model_id}/artifacts",
        exp.artifact_location.trim_end_matches('/')
    );
    let now = now_ms();
    let mut tx = pool.begin().await?;
    sqlx::query(
        "INSERT INTO logged_models (model_id, experiment_id, name, artifact_uri, creation_timestamp_ms, last_updated_timestamp_ms, status, model_type, source_run_id) \
         VALUES ($1, $2, $3, $4, $5, $6, 'LOGGED_MODEL_PENDING', $7, $8)",
    )
    .bind(&model_id)
    .bind(experiment_id)
    .bind(name)
    .bind(&artifact_uri)
    .bind(now)
    .bind(now)
    .bind(model_type)
    .bind(source_run_id)
    .execute(&mut *tx)
    .await?;
    for (table, kv) in [("logged_model_params", params), ("logged_model_tags", tags)] {
        for (k, v) in kv {
            sqlx::query(&format!("INSERT INTO {table} (model_id, key, value) VALUES ($1, $2, $3) ON CONFLICT (model_id, key) DO UPDATE SET value = excluded.value"))
                .bind(&model_id)
                .bind(k)
                .bind(v)
                .execute(&mut *tx)
                .await?;
        }
    }
    tx.commit().await?;
    get_logged_model(pool, &model_id).await
}

const COLUMNS: &str = "model_id, experiment_id, name, artifact_uri, creation_timestamp_ms, last_updated_timestamp_ms, status, model_type, source_run_id";

async fn fill(pool: &Pool, m: &mut LoggedModel) -> Result<()> {
    fill_all(pool, std::slice::from_mut(m)).await
}

/// Loads the params, tags and metrics of logged models: three statements per 10,000 models
/// (SQLite binds at most 32,766 values in one).
async fn fill_all(pool: &Pool, models: &mut [LoggedModel]) -> Result<()> {
    for chunk in models.chunks_mut(super::MAX_BOUND) {
        let at: std::collections::HashMap<String, usize> = chunk
            .iter()
            .enumerate()
            .map(|(i, m)| (m.model_id.clone(), i))
            .collect();
        let ids: Vec<String> = chunk.iter().map(|m| m.model_id.clone()).collect();
        for table in ["logged_model_params", "logged_model_tags"] {
            let sql = format!(
                "SELECT model_id, key, value FROM {table} WHERE model_id IN ({}) ORDER BY key",
                placeholders(1, ids.len())
            );
            let mut q = sqlx::query_as::<_, (String, String, String)>(&sql);
            for id in &ids {
                q = q.bind(id);
            }
            for (id, key, value) in q.fetch_all(pool).await? {
                if let Some(&i) = at.get(&id) {
                    if table == "logged_model_params" {
                        chunk[i].params.push((key, value));
                    } else {
                        chunk[i].tags.push((key, value));
                    }
                }
            }
        }
        let mut metrics = super::runs::models_metrics(pool, &ids).await?;
        for m in chunk.iter_mut() {
            m.metrics = metrics.remove(&m.model_id).unwrap_or_default();
        }
    }
    Ok(())
}

pub async fn get_logged_model(pool: &Pool, model_id: &str) -> Result<LoggedModel> {
    let mut m = sqlx::query_as::<_, LoggedModel>(&format!(
        "SELECT {COLUMNS} FROM logged_models WHERE model_id = $1 AND lifecycle_stage = 'active'"
    ))
    .bind(model_id)
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| {
        RegistryError::NotFound(format!("Logged model with ID '{model_id}' not found."))
    })?;
    fill(pool, &mut m).await?;
    Ok(m)
}

pub async fn list_logged_models(pool: &Pool, experiment_ids: &[i64]) -> Result<Vec<LoggedModel>> {
    if experiment_ids.is_empty() {
        return Ok(Vec::new());
    }
    let sql = format!(
        "SELECT {COLUMNS} FROM logged_models WHERE lifecycle_stage = 'active' AND experiment_id IN ({})",
        placeholders(1, experiment_ids.len())
    );
    let mut q = sqlx::query_as::<_, LoggedModel>(&sql);
    for id in experiment_ids {
        q = q.bind(*id);
    }
    let mut out = q.fetch_all(pool).await?;
    fill_all(pool, &mut out).await?;
    Ok(out)
}

/// How logged models' fields map to SQL, for searches the database answers. Metrics are not
/// here: a model's metric is any point logged against it, so a search on one is done in memory.
pub const SHAPE: Shape = Shape {
    link: &[("model_id", "lm.model_id")],
    metrics: None,
    params: Some("logged_model_params"),
    tags: Some("logged_model_tags"),
    attrs: &[
        ("name", "lm.name", Kind::Text),
        ("model_id", "lm.model_id", Kind::Text),
        ("model_type", "lm.model_type", Kind::OptText),
        ("status", "lm.status", Kind::Text),
        ("source_run_id", "lm.source_run_id", Kind::OptText),
        (
            "creation_timestamp",
            "lm.creation_timestamp_ms",
            Kind::Number,
        ),
        ("creation_time", "lm.creation_timestamp_ms", Kind::Number),
        (
            "last_updated_timestamp",
            "lm.last_updated_timestamp_ms",
            Kind::Number,
        ),
    ],
};

/// One page of a logged models search in `experiment_ids`, filtered, ordered and cut by the
/// database (see [`search_sql::page_keys`]); `None` sends the caller to the in-memory search.
pub async fn search_page(
    pool: &Pool,
    backend: Backend,
    experiment_ids: &[i64],
    clauses: &[Clause],
    order: &[OrderBy],
    offset: usize,
    max: usize,
) -> Result<Option<(Vec<LoggedModel>, bool)>> {
    if experiment_ids.is_empty() {
        return Ok(Some((Vec::new(), false)));
    }
    let scope = search_sql::Scope {
        from: "logged_models lm",
        keys: "lm.model_id",
        condition: format!(
            "lm.lifecycle_stage = 'active' AND lm.experiment_id IN ({})",
            placeholders(1, experiment_ids.len())
        ),
        args: experiment_ids.iter().map(|i| Arg::Int(*i)).collect(),
    };
    let Some((ids, more)) = search_sql::page_keys::<(String,), _>(
        pool, backend, &SHAPE, scope, clauses, order, offset, max,
    )
    .await?
    else {
        return Ok(None);
    };
    let ids: Vec<String> = ids.into_iter().map(|(id,)| id).collect();
    let mut out = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(super::MAX_BOUND) {
        let sql = format!(
            "SELECT {COLUMNS} FROM logged_models WHERE model_id IN ({})",
            placeholders(1, chunk.len())
        );
        let mut q = sqlx::query_as::<_, LoggedModel>(&sql);
        for id in chunk {
            q = q.bind(id);
        }
        out.extend(q.fetch_all(pool).await?);
    }
    fill_all(pool, &mut out).await?;
    super::in_key_order(&mut out, &ids, |m| m.model_id.clone());
    Ok(Some((out, more)))
}

pub async fn set_status(pool: &Pool, model_id: &str, status: &str) -> Result<LoggedModel> {
    if !STATUSES.contains(&status) {
        return invalid(format!("Invalid logged model status '{status}'"));
    }
    get_logged_model(pool, model_id).await?;
    sqlx::query(
        "UPDATE logged_models SET status = $1, last_updated_timestamp_ms = $2 WHERE model_id = $3",
    )
    .bind(status)
    .bind(now_ms())
    .bind(model_id)
    .execute(pool)
    .await?;
    get_logged_model(pool, model_id).await
}

pub async fn set_tags(pool: &Pool, model_id: &str, tags: &[(String, String)]) -> Result<()> {
    get_logged_model(pool, model_id).await?;
    for (k, v) in tags {
        sqlx::query("INSERT INTO logged_model_tags (model_id, key, value) VALUES ($1, $2, $3) ON CONFLICT (model_id, key) DO UPDATE SET value = excluded.value")
            .bind(model_id)
            .bind(k)
            .bind(v)
            .execute(pool)
            .await?;
    }
    Ok(())
}

pub async fn log_params(pool: &Pool, model_id: &str, params: &[(String, String)]) -> Result<()> {
    get_logged_model(pool, model_id).await?;
    for (k, v) in params {
        sqlx::query("INSERT INTO logged_model_params (model_id, key, value) VALUES ($1, $2, $3) ON CONFLICT (model_id, key) DO UPDATE SET value = excluded.value")
            .bind(model_id)
            .bind(k)
            .bind(v)
            .execute(pool)
            .await?;
    }
    Ok(())
}

pub async fn delete_tag(pool: &Pool, model_id: &str, key: &str) -> Result<()> {
    get_logged_model(pool, model_id).await?;
    let r = sqlx::query("DELETE FROM logged_model_tags WHERE model_id = $1 AND key = $2")
        .bind(model_id)
        .bind(key)
        .execute(pool)
        .await?;
    if r.rows_affected() == 0 {
        return Err(crate::error::RegistryError::NotFound(format!(
            "No tag with key: {key} in model with id {model_id}"
        )));
    }
    Ok(())
}

pub async fn delete_logged_model(pool: &Pool, model_id: &str) -> Result<()> {
    get_logged_model(pool, model_id).await?;
    sqlx::query("UPDATE logged_models SET lifecycle_stage = 'deleted', last_updated_timestamp_ms = $1 WHERE model_id = $2")
        .bind(now_ms())
        .bind(model_id)
        .execute(pool)
        .await?;
    Ok(())
}

/// Ids of the logged models with a metric logged against a dataset (and digest, if given).
pub async fn models_with_dataset(
    pool: &Pool,
    name: &str,
    digest: Option<&str>,
) -> Result<Vec<String>> {
    Ok(sqlx::query_scalar::<_, String>(
        "SELECT DISTINCT model_id FROM metrics WHERE model_id IS NOT NULL AND dataset_name = $1 \
         AND ($2 = '' OR dataset_digest = $2)",
    )
    .bind(name)
    .bind(digest.unwrap_or(""))
    .fetch_all(pool)
    .await?)
}
