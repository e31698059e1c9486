//! Registered models, model versions, stages, aliases and their tags.

use serde_json::{json, Value};

use super::{get_i64, get_opt_str, get_str, kv_json, now_ms, Pool};
use crate::error::{invalid, RegistryError, Result};
use crate::search::{self, Field, Searchable};

pub const STAGES: [&str; 4] = ["None", "Staging", "Production", "Archived"];

/// A stage name as MLflow canonicalises it (input is case-insensitive).
pub fn canonical_stage(s: &str) -> Result<&'static str> {
    STAGES
        .iter()
        .find(|x| x.eq_ignore_ascii_case(s.trim()))
        .copied()
        .ok_or_else(|| RegistryError::InvalidParameter(format!("Invalid Model Version stage: {s}. Value must be one of None, Staging, Production, Archived.")))
}

#[derive(Debug, Clone)]
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
    pub tags: Vec<(String, String)>,
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

#[derive(Debug, Clone)]
pub struct RegisteredModel {
    pub name: String,
    pub creation_timestamp: i64,
    pub last_updated_timestamp: i64,
    pub description: String,
    pub tags: Vec<(String, String)>,
    pub aliases: Vec<(String, i64)>,
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
    sqlx::query("INSERT INTO registered_models (name, creation_timestamp, last_updated_timestamp, description) VALUES ($1, $2, $3, $4)")
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

const RM_COLUMNS: &str = "name, creation_timestamp, last_updated_timestamp, description";
const MV_COLUMNS: &str = "name, version, creation_timestamp, last_updated_timestamp, description, user_id, current_stage, source, run_id, run_link, status, model_id";

fn mv_from_row(row: &sqlx::any::AnyRow) -> Result<ModelVersion> {
    Ok(ModelVersion {
        name: get_str(row, "name")?,
        version: get_i64(row, "version")?,
        creation_timestamp: get_i64(row, "creation_timestamp")?,
        last_updated_timestamp: get_i64(row, "last_updated_timestamp")?,
        description: get_str(row, "description")?,
        user_id: get_str(row, "user_id")?,
        current_stage: get_str(row, "current_stage")?,
        source: get_str(row, "source")?,
        run_id: get_str(row, "run_id")?,
        run_link: get_str(row, "run_link")?,
        status: get_str(row, "status")?,
        model_id: get_opt_str(row, "model_id")?,
        tags: Vec::new(),
        aliases: Vec::new(),
    })
}

/// Versions (all, or of one model) with tags and aliases.
async fn load_versions(pool: &Pool, name: Option<&str>) -> Result<Vec<ModelVersion>> {
    let where_ = if name.is_some() {
        " WHERE name = $1"
    } else {
        ""
    };
    let fetch = |sql: String| async move {
        let mut q = sqlx::query(&sql);
        if let Some(n) = name {
            q = q.bind(n);
        }
        q.fetch_all(pool).await
    };
    let rows = fetch(format!(
        "SELECT {MV_COLUMNS} FROM model_versions{where_} ORDER BY name, version"
    ))
    .await?;
    let mut versions = rows.iter().map(mv_from_row).collect::<Result<Vec<_>>>()?;
    let tags = fetch(format!(
        "SELECT name, version, key, value FROM model_version_tags{where_} ORDER BY key"
    ))
    .await?;
    for row in tags {
        let (n, v) = (get_str(&row, "name")?, get_i64(&row, "version")?);
        if let Some(mv) = versions.iter_mut().find(|m| m.name == n && m.version == v) {
            mv.tags
                .push((get_str(&row, "key")?, get_str(&row, "value")?));
        }
    }
    let aliases = fetch(format!(
        "SELECT name, alias, version FROM registered_model_aliases{where_} ORDER BY alias"
    ))
    .await?;
    for row in aliases {
        let (n, v) = (get_str(&row, "name")?, get_i64(&row, "version")?);
        if let Some(mv) = versions.iter_mut().find(|m| m.name == n && m.version == v) {
            mv.aliases.push(get_str(&row, "alias")?);
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

async fn load_models(pool: &Pool, name: Option<&str>) -> Result<Vec<RegisteredModel>> {
    let rows = match name {
        Some(n) => {
            sqlx::query(&format!(
                "SELECT {RM_COLUMNS} FROM registered_models WHERE name = $1"
            ))
            .bind(n)
            .fetch_all(pool)
            .await?
        }
        None => {
            sqlx::query(&format!("SELECT {RM_COLUMNS} FROM registered_models"))
                .fetch_all(pool)
                .await?
        }
    };
    let versions = load_versions(pool, name).await?;
    let (tags, aliases) = match name {
        Some(n) => (
            sqlx::query("SELECT name, key, value FROM registered_model_tags WHERE name = $1 ORDER BY key").bind(n).fetch_all(pool).await?,
            sqlx::query("SELECT name, alias, version FROM registered_model_aliases WHERE name = $1 ORDER BY alias").bind(n).fetch_all(pool).await?,
        ),
        None => (
            sqlx::query("SELECT name, key, value FROM registered_model_tags ORDER BY key").fetch_all(pool).await?,
            sqlx::query("SELECT name, alias, version FROM registered_model_aliases ORDER BY alias").fetch_all(pool).await?,
        ),
    };
    let mut out = Vec::new();
    for row in rows {
        let n = get_str(&row, "name")?;
        let mine: Vec<ModelVersion> = versions.iter().filter(|v| v.name == n).cloned().collect();
        let mut m = RegisteredModel {
            creation_timestamp: get_i64(&row, "creation_timestamp")?,
            last_updated_timestamp: get_i64(&row, "last_updated_timestamp")?,
            description: get_str(&row, "description")?,
            tags: Vec::new(),
            aliases: Vec::new(),
            latest_versions: latest_per_stage(&mine, &[]),
            name: n,
        };
        for t in tags.iter() {
            if get_str(t, "name")? == m.name {
                m.tags.push((get_str(t, "key")?, get_str(t, "value")?));
            }
        }
        for a in aliases.iter() {
            if get_str(a, "name")? == m.name {
                m.aliases
                    .push((get_str(a, "alias")?, get_i64(a, "version")?));
            }
        }
        out.push(m);
    }
    Ok(out)
}

pub async fn get_registered_model(pool: &Pool, name: &str) -> Result<RegisteredModel> {
    load_models(pool, Some(name))
        .await?
        .pop()
        .ok_or_else(|| not_found(name))
}

pub async fn list_registered_models(pool: &Pool) -> Result<Vec<RegisteredModel>> {
    load_models(pool, None).await
}

pub async fn list_model_versions(pool: &Pool) -> Result<Vec<ModelVersion>> {
    load_versions(pool, None).await
}

/// Every version of one model, oldest first.
pub async fn versions_of(pool: &Pool, name: &str) -> Result<Vec<ModelVersion>> {
    load_versions(pool, Some(name)).await
}

async fn touch(tx: &mut sqlx::Transaction<'_, sqlx::Any>, name: &str) -> Result<()> {
    sqlx::query("UPDATE registered_models SET last_updated_timestamp = $1 WHERE name = $2")
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
    sqlx::query(
        "UPDATE registered_models SET name = $1, last_updated_timestamp = $2 WHERE name = $3",
    )
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
    sqlx::query("UPDATE registered_models SET description = $1, last_updated_timestamp = $2 WHERE name = $3")
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
    let row = sqlx::query("UPDATE registered_models SET last_version = last_version + 1, last_updated_timestamp = $1 WHERE name = $2 RETURNING last_version")
        .bind(now)
        .bind(v.name)
        .fetch_optional(&mut *tx)
        .await?
        .ok_or_else(|| not_found(v.name))?;
    let version = get_i64(&row, "last_version")?;
    sqlx::query(
        "INSERT INTO model_versions (name, version, creation_timestamp, last_updated_timestamp, description, user_id, current_stage, source, run_id, run_link, status, model_id) \
         VALUES ($1, $2, $3, $4, $5, '', 'None', $6, $7, $8, 'READY', $9)",
    )
    .bind(v.name)
    .bind(version)
    .bind(now)
    .bind(now)
    .bind(v.description)
    .bind(v.source)
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
    load_versions(pool, Some(name))
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
    sqlx::query("UPDATE model_versions SET description = $1, last_updated_timestamp = $2 WHERE name = $3 AND version = $4")
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
        sqlx::query("UPDATE model_versions SET current_stage = 'Archived', last_updated_timestamp = $1 WHERE name = $2 AND current_stage = $3 AND version != $4")
            .bind(now)
            .bind(name)
            .bind(stage)
            .bind(version)
            .execute(&mut *tx)
            .await?;
    }
    sqlx::query("UPDATE model_versions SET current_stage = $1, last_updated_timestamp = $2 WHERE name = $3 AND version = $4")
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
        &load_versions(pool, Some(name)).await?,
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
    let row =
        sqlx::query("SELECT version FROM registered_model_aliases WHERE name = $1 AND alias = $2")
            .bind(name)
            .bind(alias)
            .fetch_optional(pool)
            .await?
            // MLflow answers an unknown alias with 400, not 404.
            .ok_or_else(|| {
                RegistryError::InvalidParameter(format!(
                    "Registered model alias {alias} not found."
                ))
            })?;
    get_model_version(pool, name, get_i64(&row, "version")?).await
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
