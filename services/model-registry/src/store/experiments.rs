//! Experiments and their tags.

use serde_json::{json, Value};

use super::{kv_json, now_ms, placeholders, Backend, Pool, View};
use crate::error::{RegistryError, Result};
use crate::search::{self, Clause, Field, OrderBy, Searchable};
use crate::search_sql::{self, Kind, Shape};

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct Experiment {
    #[sqlx(rename = "experiment_id")]
    pub id: i64,
    pub name: String,
    pub artifact_location: String,
    pub lifecycle_stage: String,
    pub creation_time: i64,
    pub last_update_time: i64,
    #[sqlx(skip)]
    pub tags: Vec<(String, String)>,
}

impl Experiment {
    pub fn json(&self) -> Value {
        json!({
            "experiment_id": self.id.to_string(),
            "name": self.name,
            "artifact_location": self.artifact_location,
            "lifecycle_stage": self.lifecycle_stage,
            "creation_time": self.creation_time,
            "last_update_time": self.last_update_time,
            "tags": kv_json(&self.tags),
            "workspace": "default",
        })
    }

    pub fn is_active(&self) -> bool {
        self.lifecycle_stage == "active"
    }
}

impl Searchable for Experiment {
    fn field(&self, f: &Field) -> Option<search::Value> {
        use search::Value as V;
        match f {
            Field::Attribute(a) => match a.as_str() {
                "name" => Some(V::Str(self.name.clone())),
                "experiment_id" => Some(V::Str(self.id.to_string())),
                "creation_time" => Some(V::Num(self.creation_time as f64)),
                "last_update_time" | "last_updated_timestamp" => {
                    Some(V::Num(self.last_update_time as f64))
                }
                _ => None,
            },
            Field::Tag(k) => self
                .tags
                .iter()
                .find(|(t, _)| t == k)
                .map(|(_, v)| V::Str(v.clone())),
            _ => None,
        }
    }
}

/// MLflow always has experiment 0, "Default", its artifacts under `root` (see
/// [`crate::Settings::experiment_artifact_root`]).
pub async fn ensure_default(pool: &Pool, root: &str) -> anyhow::Result<()> {
    let now = now_ms();
    sqlx::query(
        "INSERT INTO experiments (experiment_id, name, artifact_location, lifecycle_stage, creation_time, last_update_time) \
         VALUES (0, 'Default', $1, 'active', $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(format!("{root}/0"))
    .bind(now)
    .bind(now)
    .execute(pool)
    .await?;
    Ok(())
}

/// Creates an experiment; the artifact location defaults to `<root>/<id>` (`root` from
/// [`crate::Settings::experiment_artifact_root`], `mlflow-artifacts:` unless configured).
pub async fn insert_experiment(
    pool: &Pool,
    name: &str,
    artifact_location: Option<&str>,
    root: &str,
    tags: &[(String, String)],
) -> Result<i64> {
    let now = now_ms();
    let mut tx = pool.begin().await?;
    let id = sqlx::query_scalar::<_, i64>(
        "INSERT INTO experiments (name, artifact_location, lifecycle_stage, creation_time, last_update_time) \
         VALUES ($1, '', 'active', $2, $3) RETURNING experiment_id",
    )
    .bind(name)
    .bind(now)
    .bind(now)
    .fetch_one(&mut *tx)
    .await
    .map_err(super::already_exists(format!("Experiment '{name}' already exists.")))?;
    let location = artifact_location.map_or_else(|| format!("{root}/{id}"), str::to_string);
    sqlx::query("UPDATE experiments SET artifact_location = $1 WHERE experiment_id = $2")
        .bind(&location)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    for (k, v) in tags {
        sqlx::query(
            "INSERT INTO experiment_tags (experiment_id, key, value) VALUES ($1, $2, $3) \
             ON CONFLICT (experiment_id, key) DO UPDATE SET value = excluded.value",
        )
        .bind(id)
        .bind(k)
        .bind(v)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(id)
}

const COLUMNS: &str =
    "experiment_id, name, artifact_location, lifecycle_stage, creation_time, last_update_time";

async fn with_tags(pool: &Pool, mut exps: Vec<Experiment>) -> Result<Vec<Experiment>> {
    let at: std::collections::HashMap<i64, usize> =
        exps.iter().enumerate().map(|(i, e)| (e.id, i)).collect();
    let ids: Vec<i64> = exps.iter().map(|e| e.id).collect();
    // In chunks: SQLite binds at most 32,766 values in one statement.
    for chunk in ids.chunks(super::MAX_BOUND) {
        let sql = format!(
            "SELECT experiment_id, key, value FROM experiment_tags WHERE experiment_id IN ({}) ORDER BY key",
            placeholders(1, chunk.len())
        );
        let mut q = sqlx::query_as::<_, (i64, String, String)>(&sql);
        for id in chunk {
            q = q.bind(*id);
        }
        for (id, key, value) in q.fetch_all(pool).await? {
            if let Some(&i) = at.get(&id) {
                exps[i].tags.push((key, value));
            }
        }
    }
    Ok(exps)
}

/// Parses an experiment id as MLflow sends it (a string of digits).
pub fn parse_id(id: &str) -> Result<i64> {
    id.trim()
        .parse()
        .map_err(|_| RegistryError::InvalidParameter(format!("Invalid experiment ID '{id}'")))
}

pub async fn get_experiment(pool: &Pool, id: i64) -> Result<Experiment> {
    let e = sqlx::query_as::<_, Experiment>(&format!(
        "SELECT {COLUMNS} FROM experiments WHERE experiment_id = $1"
    ))
    .bind(id)
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| RegistryError::NotFound(format!("No Experiment with id={id} exists")))?;
    Ok(with_tags(pool, vec![e]).await?.remove(0))
}

pub async fn get_experiment_by_name(pool: &Pool, name: &str) -> Result<Experiment> {
    let e = sqlx::query_as::<_, Experiment>(&format!(
        "SELECT {COLUMNS} FROM experiments WHERE name = $1"
    ))
    .bind(name)
    .fetch_optional(pool)
    .await?
    .ok_or_else(|| {
        RegistryError::NotFound(format!("Could not find experiment with name '{name}'"))
    })?;
    Ok(with_tags(pool, vec![e]).await?.remove(0))
}

/// All experiments in a lifecycle view.
pub async fn list_experiments(pool: &Pool, view: View) -> Result<Vec<Experiment>> {
    let filter = match view.stage() {
        Some(stage) => format!(" WHERE lifecycle_stage = '{stage}'"),
        None => String::new(),
    };
    let exps =
        sqlx::query_as::<_, Experiment>(&format!("SELECT {COLUMNS} FROM experiments{filter}"))
            .fetch_all(pool)
            .await?;
    with_tags(pool, exps).await
}

/// How experiments' fields map to SQL, for searches the database answers. The id is compared
/// and ordered as text, as [`Searchable`] gives it.
pub const SHAPE: Shape = Shape {
    link: &[("experiment_id", "e.experiment_id")],
    metrics: None,
    params: None,
    tags: Some("experiment_tags"),
    attrs: &[
        ("name", "e.name", Kind::Text),
        ("experiment_id", "CAST(e.experiment_id AS TEXT)", Kind::Text),
        ("creation_time", "e.creation_time", Kind::Number),
        ("last_update_time", "e.last_update_time", Kind::Number),
        ("last_updated_timestamp", "e.last_update_time", Kind::Number),
    ],
};

/// One page of an experiments search, filtered, ordered and cut by the database (see
/// [`search_sql::page_keys`]); `None` sends the caller to the in-memory search.
pub async fn search_page(
    pool: &Pool,
    backend: Backend,
    view: View,
    clauses: &[Clause],
    order: &[OrderBy],
    offset: usize,
    max: usize,
) -> Result<Option<(Vec<Experiment>, bool)>> {
    let scope = search_sql::Scope {
        from: "experiments e",
        keys: "e.experiment_id",
        condition: match view.stage() {
            Some(stage) => format!("e.lifecycle_stage = '{stage}'"),
            None => "1 = 1".into(),
        },
        args: Vec::new(),
    };
    let Some((ids, more)) = search_sql::page_keys::<(i64,), _>(
        pool, backend, &SHAPE, scope, clauses, order, offset, max,
    )
    .await?
    else {
        return Ok(None);
    };
    let ids: Vec<i64> = ids.into_iter().map(|(id,)| id).collect();
    let mut exps = Vec::with_capacity(ids.len());
    for chunk in ids.chunks(super::MAX_BOUND) {
        let sql = format!(
            "SELECT {COLUMNS} FROM experiments WHERE experiment_id IN ({})",
            placeholders(1, chunk.len())
        );
        let mut q = sqlx::query_as::<_, Experiment>(&sql);
        for id in chunk {
            q = q.bind(*id);
        }
        exps.extend(with_tags(pool, q.fetch_all(pool).await?).await?);
    }
    super::in_key_order(&mut exps, &ids, |e| e.id);
    Ok(Some((exps, more)))
}

pub async fn rename_experiment(pool: &Pool, id: i64, new_name: &str) -> Result<()> {
    get_experiment(pool, id).await?;
    sqlx::query("UPDATE experiments SET name = $1, last_update_time = $2 WHERE experiment_id = $3")
        .bind(new_name)
        .bind(now_ms())
        .bind(id)
        .execute(pool)
        .await
        .map_err(super::already_exists(format!(
            "Experiment '{new_name}' already exists."
        )))?;
    Ok(())
}

/// Deleting an experiment marks it and its runs deleted (restorable).
pub async fn set_experiment_stage(pool: &Pool, id: i64, stage: &str) -> Result<()> {
    get_experiment(pool, id).await?;
    if id == 0 && stage == "deleted" {
        return crate::error::invalid("Cannot delete the default experiment '0'.");
    }
    let mut tx = pool.begin().await?;
    sqlx::query("UPDATE experiments SET lifecycle_stage = $1, last_update_time = $2 WHERE experiment_id = $3")
        .bind(stage)
        .bind(now_ms())
        .bind(id)
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE runs SET lifecycle_stage = $1 WHERE experiment_id = $2")
        .bind(stage)
        .bind(id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(())
}

pub async fn set_experiment_tag(pool: &Pool, id: i64, key: &str, value: &str) -> Result<()> {
    let e = get_experiment(pool, id).await?;
    if !e.is_active() {
        return crate::error::invalid(format!(
            "The experiment {id} must be in the 'active' state."
        ));
    }
    upsert_tag(pool, "experiment_tags", "experiment_id", id, key, value).await
}

pub async fn delete_experiment_tag(pool: &Pool, id: i64, key: &str) -> Result<()> {
    get_experiment(pool, id).await?;
    let r = sqlx::query("DELETE FROM experiment_tags WHERE experiment_id = $1 AND key = $2")
        .bind(id)
        .bind(key)
        .execute(pool)
        .await?;
    if r.rows_affected() == 0 {
        return Err(RegistryError::NotFound(format!(
            "No tag with name: {key} in experiment {id}"
        )));
    }
    Ok(())
}

/// Insert or replace a tag in a (owner, key, value) table.
async fn upsert_tag(
    pool: &Pool,
    table: &str,
    owner_col: &str,
    owner: i64,
    key: &str,
    value: &str,
) -> Result<()> {
    sqlx::query(&format!(
        "INSERT INTO {table} ({owner_col}, key, value) VALUES ($1, $2, $3) \
         ON CONFLICT ({owner_col}, key) DO UPDATE SET value = excluded.value"
    ))
    .bind(owner)
    .bind(key)
    .bind(value)
    .execute(pool)
    .await?;
    Ok(())
}
