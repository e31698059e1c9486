//! Registered models, model versions, stages, aliases and their tags.

use serde_json::{json, Value};

use super::{kv_json, now_ms, placeholders, Backend, Pool};
use crate::error::{invalid, RegistryError, Result};
use crate::search::{self, Clause, Field, OrderBy, Searchable};
use crate::search_sql::{self, Kind, Shape};

pub const STAGES: [&str; 4] = ["None", "Staging", "Production", "Archived"];

/// A stage name as MLflow canonicalises it (input is case-insensitive).
pub fn canonical_stage(s: &str) -> Result<&'static str> {
    STAGES
        .iter()
        .find(|x| x.eq_ignore_ascii_case(s.trim()))
        .copied()
        .ok_or_else(|| RegistryError::InvalidParameter(format!("Invalid Model Version stage: {s}. Value must be one of None, Staging, Production, Archived.")))
}

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct ModelVersion {
    pub name: String,
    pub version: i64,
    pub creation_timestamp: i64,
    pub last_updated_timestamp: i64,
    pub description: String,
    pub user_id: String,
    pub current_stage: String,
    pub source: String,
    pub run_id: String,
    pub run_link: String,
    pub status: String,
    pub model_id: Option<String>,
    #[sqlx(skip)]
    pub tags: Vec<(String, String)>,
    #[sqlx(skip)]
    pub aliases: Vec<String>,
}

impl ModelVersion {
    pub fn json(&self) -> Value {
        json!({
            "name": self.name,
            "version": self.version.to_string(),
            "creation_timestamp": self.creation_timestamp,
            "last_updated_timestamp": self.last_updated_timestamp,
            "user_id": self.user_id,
            "current_stage": self.current_stage,
            "description": self.description,
            "source": self.source,
            "run_id": self.run_id,
            "run_link": self.run_link,
            "status": self.status,
            "tags": kv_json(&self.tags),
            "aliases": self.aliases,
        })
    }
}

impl Searchable for ModelVersion {
    fn field(&self, f: &Field) -> Option<search::Value> {
        use search::Value as V;
        match f {
            Field::Attribute(a) => match a.as_str() {
                "name" => Some(V::Str(self.name.clone())),
                "version_number" => Some(V::Num(self.version as f64)),
                "run_id" => Some(V::Str(self.run_id.clone())),
                "source_path" => Some(V::Str(self.source.clone())),
                "current_stage" => Some(V::Str(self.current_stage.clone())),
                "creation_timestamp" => Some(V::Num(self.creation_timestamp as f64)),
                "last_updated_timestamp" => Some(V::Num(self.last_updated_timestamp as f64)),
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

#[derive(Debug, Clone, sqlx::FromRow)]
pub struct RegisteredModel {
    pub name: String,
    pub creation_timestamp: i64,
    pub last_updated_timestamp: i64,
    pub description: String,
    #[sqlx(skip)]
    pub tags: Vec<(String, String)>,
    #[sqlx(skip)]
    pub aliases: Vec<(String, i64)>,
    #[sqlx(skip)]
    pub latest_versions: Vec<ModelVersion>,
}

impl RegisteredModel {
    pub fn json(&self) -> Value {
        json!({
            "name": self.name,
            "creation_timestamp": self.creation_timestamp,
            "last_updated_timestamp": self.last_updated_timestamp,
            "description": self.description,
            "tags": kv_json(&self.tags),
            "aliases": self.aliases.iter().map(|(a, v)| json!({"alias": a, "version": v.to_string()})).collect::<Vec<_>>(),
            "latest_versions": self.latest_versions.iter().map(ModelVersion::json).collect::<Vec<_>>(),
        })
    }
}

impl Searchable for RegisteredModel {
    fn field(&self, f: &Field) -> Option<search::Value> {
        use search::Value as V;
        match f {
            Field::Attribute(a) => match a.as_str() {
                "name" => Some(V::Str(self.name.clone())),
                "creation_timestamp" => Some(V::Num(self.creation_timestamp as f64)),
                "last_updated_timestamp" => Some(V::Num(self.last_updated_timestamp as f64)),
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

fn not_found(name: &str) -> RegistryError {
    RegistryError::NotFound(format!("Registered Model with name={name} not found"))
}

fn version_not_found(name: &str, version: i64) -> RegistryError {
    RegistryError::NotFound(format!(
        "Model Version (name={name}, version={version}) not found"
    ))
}

/// Parses a version number as sent ("1").
pub fn parse_version(v: &str) -> Result<i64> {
    v.trim()
        .parse()
        .ok()
        .filter(|n: &i64| *n > 0)
        .ok_or_else(|| {
            RegistryError::InvalidParameter(format!(
                "Parameter 'version' must be a positive integer, got '{v}'"
            ))
        })
}

pub async fn insert_registered_model(
    pool: &Pool,
    name: &str,
    description: &str,
    tags: &[(String, String)],
) -> Result<RegisteredModel> {
    let now = now_ms();
    let mut tx = pool.begin().await?;
    sqlx::query("INSERT INTO registered_models (name, creation_time, last_updated_time, description) VALUES ($1, $2, $3, $4)")
        .bind(name)
        .bind(now)
        .bind(now)
        .bind(description)
        .execute(&mut *tx)
        .await
        .map_err(super::already_exists(format!("Registered Model (name={name}) already exists.")))?;
    for (k, v) in tags {
        sqlx::query(
            "INSERT INTO registered_model_tags (name, key, value) VALUES ($1, $2, $3) \
             ON CONFLICT (name, key) DO UPDATE SET value = excluded.value",
        )
        .bind(name)
        .bind(k)
        .bind(v)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    get_registered_model(pool, name).await
}

// MLflow's column names (migration 0005), read into the fields its REST API names.
const RM_COLUMNS: &str = "name, creation_time AS creation_timestamp, last_updated_time AS last_updated_timestamp, description";
const MV_COLUMNS: &str = "name, version, creation_time AS creation_timestamp, last_updated_time AS last_updated_timestamp, description, user_id, current_stage, source, run_id, run_link, status, model_id";

/// ` WHERE name IN ($1, …)` when loading some models' rows, nothing when loading all.
fn where_name(names: Option<&[&str]>) -> String {
    match names {
        Some(names) => format!(" WHERE name IN ({})", placeholders(1, names.len())),
        None => String::new(),
    }
}

/// The rows of `sql`, with `names` bound from `$1` when given (see [`where_name`]).
async fn fetch_for<T>(pool: &Pool, sql: &str, names: Option<&[&str]>) -> Result<Vec<T>>
where
    T: for<'r> sqlx::FromRow<'r, sqlx::any::AnyRow> + Send + Unpin,
{
    if names.is_some_and(|n| n.is_empty()) {
        return Ok(Vec::new());
    }
    let mut q = sqlx::query_as::<_, T>(sql);
    for n in names.unwrap_or_default() {
        q = q.bind(*n);
    }
    Ok(q.fetch_all(pool).await?)
}

/// Versions (all, or of some models) with tags and aliases, by name then version.
async fn load_versions(pool: &Pool, names: Option<&[&str]>) -> Result<Vec<ModelVersion>> {
    let where_ = where_name(names);
    let mut versions: Vec<ModelVersion> = fetch_for(
        pool,
        &format!("SELECT {MV_COLUMNS} FROM model_versions{where_} ORDER BY name, version"),
        names,
    )
    .await?;
    let at: std::collections::HashMap<(String, i64), usize> = versions
        .iter()
        .enumerate()
        .map(|(i, v)| ((v.name.clone(), v.version), i))
        .collect();
    let tags: Vec<(String, i64, String, String)> = fetch_for(
        pool,
        &format!("SELECT name, version, key, value FROM model_version_tags{where_} ORDER BY key"),
        names,
    )
    .await?;
    for (n, v, key, value) in tags {
        if let Some(&i) = at.get(&(n, v)) {
            versions[i].tags.push((key, value));
        }
    }
    let aliases: Vec<(String, String, i64)> = fetch_for(
        pool,
        &format!(
            "SELECT name, alias, version FROM registered_model_aliases{where_} ORDER BY alias"
        ),
        names,
    )
    .await?;
    for (n, alias, v) in aliases {
        if let Some(&i) = at.get(&(n, v)) {
            versions[i].aliases.push(alias);
        }
    }
    Ok(versions)
}

/// The highest version in each stage.
fn latest_per_stage(versions: &[ModelVersion], stages: &[&str]) -> Vec<ModelVersion> {
    let mut out: Vec<ModelVersion> = Vec::new();
    for stage in STAGES {
        if !stages.is_empty() && !stages.contains(&stage) {
            continue;
        }
        if let Some(v) = versions
            .iter()
            .filter(|v| v.current_stage == stage)
            .max_by_key(|v| v.version)
        {
            out.push(v.clone());
        }
    }
    out
}

async fn load_models(pool: &Pool, names: Option<&[&str]>) -> Result<Vec<RegisteredModel>> {
    let where_ = where_name(names);
    let mut models: Vec<RegisteredModel> = fetch_for(
        pool,
        &format!("SELECT {RM_COLUMNS} FROM registered_models{where_}"),
        names,
    )
    .await?;
    let at: std::collections::HashMap<String, usize> = models
        .iter()
        .enumerate()
        .map(|(i, m)| (m.name.clone(), i))
        .collect();
    let mut versions: Vec<Vec<ModelVersion>> = vec![Vec::new(); models.len()];
    for v in load_versions(pool, names).await? {
        if let Some(&i) = at.get(&v.name) {
            versions[i].push(v);
        }
    }
    for (m, mine) in models.iter_mut().zip(&versions) {
        m.latest_versions = latest_per_stage(mine, &[]);
    }
    let tags: Vec<(String, String, String)> = fetch_for(
        pool,
        &format!("SELECT name, key, value FROM registered_model_tags{where_} ORDER BY key"),
        names,
    )
    .await?;
    for (n, k, v) in tags {
        if let Some(&i) = at.get(&n) {
            models[i].tags.push((k, v));
        }
    }
    let aliases: Vec<(String, String, i64)> = fetch_for(
        pool,
        &format!(
            "SELECT name, alias, version FROM registered_model_aliases{where_} ORDER BY alias"
        ),
        names,
    )
    .await?;
    for (n, a, v) in aliases {
        if let Some(&i) = at.get(&n) {
            models[i].aliases.push((a, v));
        }
    }
    Ok(models)
}

pub async fn get_registered_model(pool: &Pool, name: &str) -> Result<RegisteredModel> {
    load_models(pool, Some(&[name]))
        .await?
        .pop()
        .ok_or_else(|| not_found(name))
}

/// How registered models' fields map to SQL, for searches the database answers.
pub const MODEL_SHAPE: Shape = Shape {
    link: &[("name", "m.name")],
    metrics: None,
    params: None,
    tags: Some("registered_model_tags"),
    attrs: &[
        ("name", "m.name", Kind::Text),
        ("creation_timestamp", "m.creation_time", Kind::Number),
        (
            "last_updated_timestamp",
            "m.last_updated_time",
            Kind::Number,
        ),
    ],
};

/// How model versions' fields map to SQL, for searches the database answers.
pub const VERSION_SHAPE: Shape = Shape {
    link: &[("name", "v.name"), ("version", "v.version")],
    metrics: None,
    params: None,
    tags: Some("model_version_tags"),
    attrs: &[
        ("name", "v.name", Kind::Text),
        ("version_number", "v.version", Kind::Number),
        ("run_id", "v.run_id", Kind::Text),
        ("source_path", "v.source", Kind::Text),
        ("current_stage", "v.current_stage", Kind::Text),
        ("creation_timestamp", "v.creation_time", Kind::Number),
        (
            "last_updated_timestamp",
            "v.last_updated_time",
            Kind::Number,
        ),
    ],
};

/// One page of a registered models search, filtered, ordered and cut by the database (see
/// [`search_sql::page_keys`]); `None` sends the caller to the in-memory search.
pub async fn search_models_page(
    pool: &Pool,
    backend: Backend,
    clauses: &[Clause],
    order: &[OrderBy],
    offset: usize,
    max: usize,
) -> Result<Option<(Vec<RegisteredModel>, bool)>> {
    let scope = search_sql::Scope {
        from: "registered_models m",
        keys: "m.name",
        condition: "1 = 1".into(),
        args: Vec::new(),
    };
    let Some((names, more)) = search_sql::page_keys::<(String,), _>(
        pool,
        backend,
        &MODEL_SHAPE,
        scope,
        clauses,
        order,
        offset,
        max,
    )
    .await?
    else {
        return Ok(None);
    };
    let names: Vec<String> = names.into_iter().map(|(n,)| n).collect();
    let mut models = Vec::with_capacity(names.len());
    for chunk in names.chunks(super::MAX_BOUND) {
        let chunk: Vec<&str> = chunk.iter().map(String::as_str).collect();
        models.extend(load_models(pool, Some(&chunk)).await?);
    }
    super::in_key_order(&mut models, &names, |m| m.name.clone());
    Ok(Some((models, more)))
}

/// One page of a model versions search, filtered, ordered and cut by the database (see
/// [`search_sql::page_keys`]); `None` sends the caller to the in-memory search.
pub async fn search_versions_page(
    pool: &Pool,
    backend: Backend,
    clauses: &[Clause],
    order: &[OrderBy],
    offset: usize,
    max: usize,
) -> Result<Option<(Vec<ModelVersion>, bool)>> {
    let scope = search_sql::Scope {
        from: "model_versions v",
        keys: "v.name, v.version",
        condition: "1 = 1".into(),
        args: Vec::new(),
    };
    let Some((keys, more)) = search_sql::page_keys::<(String, i64), _>(
        pool,
        backend,
        &VERSION_SHAPE,
        scope,
        clauses,
        order,
        offset,
        max,
    )
    .await?
    else {
        return Ok(None);
    };
    let mut names: Vec<&str> = keys.iter().map(|(n, _)| n.as_str()).collect();
    names.sort_unstable();
    names.dedup();
    let wanted: std::collections::HashSet<&(String, i64)> = keys.iter().collect();
    let mut versions = Vec::with_capacity(keys.len());
    for chunk in names.chunks(super::MAX_BOUND) {
        versions.extend(
            load_versions(pool, Some(chunk))
                .await?
                .into_iter()
                .filter(|v| wanted.contains(&(v.name.clone(), v.version))),
        );
    }
    super::in_key_order(&mut versions, &keys, |v| (v.name.clone(), v.version));
    Ok(Some((versions, more)))
}

pub async fn list_registered_models(pool: &Pool) -> Result<Vec<RegisteredModel>> {
    load_models(pool, None).await
}

pub async fn list_model_versions(pool: &Pool) -> Result<Vec<ModelVersion>> {
    load_versions(pool, None).await
}

/// Every version of one model, oldest first.
pub async fn versions_of(pool: &Pool, name: &str) -> Result<Vec<ModelVersion>> {
    load_versions(pool, Some(&[name])).await
}

async fn touch(tx: &mut sqlx::Transaction<'_, sqlx::Any>, name: &str) -> Result<()> {
    sqlx::query("UPDATE registered_models SET last_updated_time = $1 WHERE name = $2")
        .bind(now_ms())
        .bind(name)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

pub async fn rename_registered_model(
    pool: &Pool,
    name: &str,
    new_name: &str,
) -> Result<RegisteredModel> {
    get_registered_model(pool, name).await?;
    let mut tx = pool.begin().await?;
    sqlx::query("UPDATE registered_models SET name = $1, last_updated_time = $2 WHERE name = $3")
        .bind(new_name)
        .bind(now_ms())
        .bind(name)
        .execute(&mut *tx)
        .await
        .map_err(super::already_exists(format!(
            "Registered Model (name={new_name}) already exists."
        )))?;
    for table in [
        "model_versions",
        "model_version_tags",
        "registered_model_tags",
        "registered_model_aliases",
    ] {
        sqlx::query(&format!("UPDATE {table} SET name = $1 WHERE name = $2"))
            .bind(new_name)
            .bind(name)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    get_registered_model(pool, new_name).await
}

pub async fn update_registered_model(
    pool: &Pool,
    name: &str,
    description: &str,
) -> Result<RegisteredModel> {
    get_registered_model(pool, name).await?;
    sqlx::query(
        "UPDATE registered_models SET description = $1, last_updated_time = $2 WHERE name = $3",
    )
    .bind(description)
    .bind(now_ms())
    .bind(name)
    .execute(pool)
    .await?;
    get_registered_model(pool, name).await
}

pub async fn delete_registered_model(pool: &Pool, name: &str) -> Result<()> {
    get_registered_model(pool, name).await?;
    let mut tx = pool.begin().await?;
    for table in [
        "model_version_tags",
        "registered_model_aliases",
        "model_versions",
        "registered_model_tags",
        "registered_models",
    ] {
        sqlx::query(&format!("DELETE FROM {table} WHERE name = $1"))
            .bind(name)
            .execute(&mut *tx)
            .await?;
    }
    tx.commit().await?;
    Ok(())
}

pub async fn set_registered_model_tag(
    pool: &Pool,
    name: &str,
    key: &str,
    value: &str,
) -> Result<()> {
    get_registered_model(pool, name).await?;
    sqlx::query("INSERT INTO registered_model_tags (name, key, value) VALUES ($1, $2, $3) ON CONFLICT (name, key) DO UPDATE SET value = excluded.value")
        .bind(name)
        .bind(key)
        .bind(value)
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn delete_registered_model_tag(pool: &Pool, name: &str, key: &str) -> Result<()> {
    get_registered_model(pool, name).await?;
    sqlx::query("DELETE FROM registered_model_tags WHERE name = $1 AND key = $2")
        .bind(name)
        .bind(key)
        .execute(pool)
        .await?;
    Ok(())
}

/// New version fields.
pub struct NewVersion<'a> {
    pub name: &'a str,
    pub source: &'a str,
    /// Where the files are, as MLflow records it: a `models:/` source resolved to the logged
    /// model's artifact URI, any other source as given.
    pub storage_location: &'a str,
    pub run_id: &'a str,
    pub run_link: &'a str,
    pub description: &'a str,
    pub model_id: Option<&'a str>,
    pub tags: &'a [(String, String)],
}

/// Creates a version. The number comes from an UPDATE … RETURNING on the model's row inside the
/// transaction, so concurrent registrations get distinct, consecutive numbers on both backends.
pub async fn insert_model_version(pool: &Pool, v: NewVersion<'_>) -> Result<ModelVersion> {
    let now = now_ms();
    let mut tx = pool.begin().await?;
    let version = sqlx::query_scalar::<_, i64>("UPDATE registered_models SET last_version = last_version + 1, last_updated_time = $1 WHERE name = $2 RETURNING last_version")
        .bind(now)
        .bind(v.name)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| not_found(v.name))?;
    sqlx::query(
        "INSERT INTO model_versions (name, version, creation_time, last_updated_time, description, user_id, current_stage, source, storage_location, run_id, run_link, status, model_id) \
         VALUES ($1, $2, $3, $4, $5, '', 'None', $6, $7, $8, $9, 'READY', $10)",
    )
    .bind(v.name)
    .bind(version)
    .bind(now)
    .bind(now)
    .bind(v.description)
    .bind(v.source)
    .bind(v.storage_location)
    .bind(v.run_id)
    .bind(v.run_link)
    .bind(v.model_id.map(str::to_string))
    .execute(&mut *tx)
    .await?;
    for (k, val) in v.tags {
        sqlx::query(
            "INSERT INTO model_version_tags (name, version, key, value) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (name, version, key) DO UPDATE SET value = excluded.value",
        )
        .bind(v.name)
        .bind(version)
        .bind(k)
        .bind(val)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    get_model_version(pool, v.name, version).await
}

pub async fn get_model_version(pool: &Pool, name: &str, version: i64) -> Result<ModelVersion> {
    load_versions(pool, Some(&[name]))
        .await?
        .into_iter()
        .find(|v| v.version == version)
        .ok_or_else(|| version_not_found(name, version))
}

pub async fn update_model_version(
    pool: &Pool,
    name: &str,
    version: i64,
    description: &str,
) -> Result<ModelVersion> {
    get_model_version(pool, name, version).await?;
    sqlx::query("UPDATE model_versions SET description = $1, last_updated_time = $2 WHERE name = $3 AND version = $4")
        .bind(description)
        .bind(now_ms())
        .bind(name)
        .bind(version)
        .execute(pool)
        .await?;
    get_model_version(pool, name, version).await
}

pub async fn delete_model_version(pool: &Pool, name: &str, version: i64) -> Result<()> {
    get_model_version(pool, name, version).await?;
    let mut tx = pool.begin().await?;
    for table in [
        "model_version_tags",
        "registered_model_aliases",
        "model_versions",
    ] {
        sqlx::query(&format!(
            "DELETE FROM {table} WHERE name = $1 AND version = $2"
        ))
        .bind(name)
        .bind(version)
        .execute(&mut *tx)
        .await?;
    }
    touch(&mut tx, name).await?;
    tx.commit().await?;
    Ok(())
}

pub async fn set_model_version_tag(
    pool: &Pool,
    name: &str,
    version: i64,
    key: &str,
    value: &str,
) -> Result<()> {
    get_model_version(pool, name, version).await?;
    sqlx::query("INSERT INTO model_version_tags (name, version, key, value) VALUES ($1, $2, $3, $4) ON CONFLICT (name, version, key) DO UPDATE SET value = excluded.value")
        .bind(name)
        .bind(version)
        .bind(key)
        .bind(value)
        .execute(pool)
        .await?;
    Ok(())
}

pub async fn delete_model_version_tag(
    pool: &Pool,
    name: &str,
    version: i64,
    key: &str,
) -> Result<()> {
    get_model_version(pool, name, version).await?;
    sqlx::query("DELETE FROM model_version_tags WHERE name = $1 AND version = $2 AND key = $3")
        .bind(name)
        .bind(version)
        .bind(key)
        .execute(pool)
        .await?;
    Ok(())
}

/// Moves a version to a stage; with `archive_existing`, other versions in that stage are archived.
pub async fn transition_stage(
    pool: &Pool,
    name: &str,
    version: i64,
    stage: &str,
    archive_existing: bool,
) -> Result<ModelVersion> {
    let stage = canonical_stage(stage)?;
    get_model_version(pool, name, version).await?;
    let now = now_ms();
    let mut tx = pool.begin().await?;
    if archive_existing && (stage == "Staging" || stage == "Production") {
        sqlx::query("UPDATE model_versions SET current_stage = 'Archived', last_updated_time = $1 WHERE name = $2 AND current_stage = $3 AND version != $4")
            .bind(now)
            .bind(name)
            .bind(stage)
            .bind(version)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query("UPDATE model_versions SET current_stage = $1, last_updated_time = $2 WHERE name = $3 AND version = $4")
        .bind(stage)
        .bind(now)
        .bind(name)
        .bind(version)
        .execute(&mut *tx)
        .await?;
    touch(&mut tx, name).await?;
    tx.commit().await?;
    get_model_version(pool, name, version).await
}

pub async fn latest_versions(
    pool: &Pool,
    name: &str,
    stages: &[String],
) -> Result<Vec<ModelVersion>> {
    get_registered_model(pool, name).await?;
    let stages = stages
        .iter()
        .map(|s| canonical_stage(s))
        .collect::<Result<Vec<_>>>()?;
    Ok(latest_per_stage(
        &load_versions(pool, Some(&[name])).await?,
        &stages,
    ))
}

/// Alias names MLflow reserves: `latest` and `v<digits>`.
pub fn check_alias(alias: &str) -> Result<()> {
    let lower = alias.to_ascii_lowercase();
    let reserved = lower == "latest"
        || (lower.starts_with('v')
            && lower.len() > 1
            && lower[1..].chars().all(|c| c.is_ascii_digit()));
    if reserved {
        return invalid(format!(
            "'{alias}' alias name (case insensitive) is reserved."
        ));
    }
    if alias.is_empty()
        || alias.len() > 255
        || !alias
            .chars()
            .all(|c| c.is_alphanumeric() || "_-".contains(c))
    {
        return invalid(format!(
            "Invalid alias name '{alias}': use letters, digits, '_' and '-' (at most 255)."
        ));
    }
    Ok(())
}

pub async fn set_alias(pool: &Pool, name: &str, alias: &str, version: i64) -> Result<()> {
    check_alias(alias)?;
    get_model_version(pool, name, version).await?;
    let mut tx = pool.begin().await?;
    sqlx::query("INSERT INTO registered_model_aliases (name, alias, version) VALUES ($1, $2, $3) ON CONFLICT (name, alias) DO UPDATE SET version = excluded.version")
        .bind(name)
        .bind(alias)
        .bind(version)
        .execute(&mut *tx)
        .await?;
    touch(&mut tx, name).await?;
    tx.commit().await?;
    Ok(())
}

pub async fn get_version_by_alias(pool: &Pool, name: &str, alias: &str) -> Result<ModelVersion> {
    get_registered_model(pool, name).await?;
    let version = sqlx::query_scalar::<_, i64>(
        "SELECT version FROM registered_model_aliases WHERE name = $1 AND alias = $2",
    )
    .bind(name)
    .bind(alias)
    .fetch_optional(pool)
    .await?
    // MLflow answers an unknown alias with 400, not 404.
    .ok_or_else(|| {
        RegistryError::InvalidParameter(format!("Registered model alias {alias} not found."))
    })?;
    get_model_version(pool, name, version).await
}

pub async fn delete_alias(pool: &Pool, name: &str, alias: &str) -> Result<()> {
    get_registered_model(pool, name).await?;
    let mut tx = pool.begin().await?;
    sqlx::query("DELETE FROM registered_model_aliases WHERE name = $1 AND alias = $2")
        .bind(name)
        .bind(alias)
        .execute(&mut *tx)
        .await?;
    touch(&mut tx, name).await?;
    tx.commit().await?;
    Ok(())
}
