//! Changes to what serves in production (alias and stage moves), made through the REST API or
//! the web UI, applied and logged in one place: one structured line each, with the user and the
//! old and new version, that an operator can alert on (`event` is `alias_set`, `alias_deleted`
//! or `stage_changed`; target `registry::moves`).

use actix_web::HttpRequest;

use crate::error::Result;
use crate::store::registry::{self, ModelVersion};
use crate::store::Pool;

/// Where a change came from, for the log line.
#[derive(Debug, Clone, Copy)]
pub enum Via {
    Rest,
    Ui,
}

impl Via {
    fn as_str(self) -> &'static str {
        match self {
            Via::Rest => "rest",
            Via::Ui => "ui",
        }
    }
}

async fn version_of_alias(pool: &Pool, name: &str, alias: &str) -> Option<i64> {
    registry::get_version_by_alias(pool, name, alias)
        .await
        .ok()
        .map(|v| v.version)
}

pub async fn set_alias(
    req: &HttpRequest,
    via: Via,
    pool: &Pool,
    name: &str,
    alias: &str,
    version: i64,
) -> Result<()> {
    let old = version_of_alias(pool, name, alias).await;
    registry::set_alias(pool, name, alias, version).await?;
    crate::webhooks::fire(
        pool,
        "model_version_alias",
        "created",
        serde_json::json!({"name": name, "alias": alias, "version": version.to_string()}),
    );
    tracing::info!(
        target: "registry::moves",
        event = "alias_set",
        user = %crate::auth::user_of(req),
        via = via.as_str(),
        model.name = %name,
        alias = %alias,
        old_version = old,
        new_version = version,
        "alias moved"
    );
    Ok(())
}

pub async fn delete_alias(
    req: &HttpRequest,
    via: Via,
    pool: &Pool,
    name: &str,
    alias: &str,
) -> Result<()> {
    let old = version_of_alias(pool, name, alias).await;
    registry::delete_alias(pool, name, alias).await?;
    crate::webhooks::fire(
        pool,
        "model_version_alias",
        "deleted",
        serde_json::json!({"name": name, "alias": alias}),
    );
    tracing::info!(
        target: "registry::moves",
        event = "alias_deleted",
        user = %crate::auth::user_of(req),
        via = via.as_str(),
        model.name = %name,
        alias = %alias,
        old_version = old,
        "alias removed"
    );
    Ok(())
}

pub async fn transition_stage(
    req: &HttpRequest,
    via: Via,
    pool: &Pool,
    name: &str,
    version: i64,
    stage: &str,
    archive_existing: bool,
) -> Result<ModelVersion> {
    let old = registry::get_model_version(pool, name, version)
        .await
        .ok()
        .map(|v| v.current_stage);
    let v = registry::transition_stage(pool, name, version, stage, archive_existing).await?;
    tracing::info!(
        target: "registry::moves",
        event = "stage_changed",
        user = %crate::auth::user_of(req),
        via = via.as_str(),
        model.name = %name,
        version,
        old_stage = old.as_deref().unwrap_or(""),
        new_stage = %v.current_stage,
        archive_existing,
        "stage changed"
    );
    Ok(v)
}
