//! Registered models, model versions, stages and aliases.

use actix_web::{web, HttpRequest};
use serde_json::json;

use crate::error::{invalid, Result};
use crate::params::{self, Params};
use crate::search::{self, Entity};
use crate::startup::AppState;

use super::{ok, Resp};
use crate::store::{logged_models, registry, runs};

fn model_name(p: &Params, key: &str) -> Result<String> {
    let n = p.str(key)?;
    if n.len() > params::MAX_NAME {
        return invalid(format!(
            "Registered model name exceeds the maximum length of {}",
            params::MAX_NAME
        ));
    }
    Ok(n)
}

fn version(p: &Params) -> Result<i64> {
    registry::parse_version(&p.str("version")?)
}

pub async fn create_registered_model(p: Params, s: web::Data<AppState>) -> Resp {
    let name = model_name(&p, "name")?;
    let tags = p.key_values("tags", params::MAX_REGISTRY_TAG_VALUE)?;
    let m = registry::insert_registered_model(
        &s.pool,
        &name,
        &p.opt_str("description")?.unwrap_or_default(),
        &tags,
    )
    .await?;
    crate::webhooks::fire(
        &s.pool,
        "registered_model",
        "created",
        json!({"name": name, "tags": tags.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(), "description": p.opt_str("description")?}),
    );
    ok(json!({"registered_model": m.json()}))
}

pub async fn get_registered_model(p: Params, s: web::Data<AppState>) -> Resp {
    let m = registry::get_registered_model(&s.pool, &p.str("name")?).await?;
    ok(json!({"registered_model": m.json()}))
}

pub async fn rename_registered_model(p: Params, s: web::Data<AppState>) -> Resp {
    let m =
        registry::rename_registered_model(&s.pool, &p.str("name")?, &model_name(&p, "new_name")?)
            .await?;
    ok(json!({"registered_model": m.json()}))
}

pub async fn update_registered_model(p: Params, s: web::Data<AppState>) -> Resp {
    let m = registry::update_registered_model(
        &s.pool,
        &p.str("name")?,
        &p.opt_str("description")?.unwrap_or_default(),
    )
    .await?;
    ok(json!({"registered_model": m.json()}))
}

pub async fn delete_registered_model(p: Params, s: web::Data<AppState>) -> Resp {
    registry::delete_registered_model(&s.pool, &p.str("name")?).await?;
    ok(json!({}))
}

pub async fn search_registered_models(p: Params, s: web::Data<AppState>) -> Resp {
    let max = search::max_results(p.opt_i64("max_results")?, 100, 1000)?;
    let clauses = search::parse_filter(
        &p.opt_str("filter")?.unwrap_or_default(),
        Entity::RegisteredModels,
    )?;
    let mut order = search::parse_order_by(&p.str_list("order_by")?, Entity::RegisteredModels)?;
    order.push(search::OrderBy {
        field: search::Field::Attribute("name".into()),
        ascending: true,
    });
    let token = p.opt_str("page_token")?;
    let offset = search::decode_token(token.as_deref())?;
    let pushed =
        registry::search_models_page(&s.reader, s.backend, &clauses, &order, offset, max).await?;
    let all = registry::list_registered_models(&s.reader);
    let (page, next) =
        search::page_or_memory(pushed, offset, max, token.as_deref(), &clauses, &order, all)
            .await?;
    ok(search::page_body(
        "registered_models",
        page.iter().map(registry::RegisteredModel::json).collect(),
        next,
    ))
}

pub async fn set_registered_model_tag(p: Params, s: web::Data<AppState>) -> Resp {
    let (key, value) = (p.str("key")?, p.opt_str("value")?.unwrap_or_default());
    params::check_key(&key)?;
    params::check_value(&key, &value, params::MAX_REGISTRY_TAG_VALUE)?;
    registry::set_registered_model_tag(&s.pool, &p.str("name")?, &key, &value).await?;
    ok(json!({}))
}

pub async fn delete_registered_model_tag(p: Params, s: web::Data<AppState>) -> Resp {
    registry::delete_registered_model_tag(&s.pool, &p.str("name")?, &p.str("key")?).await?;
    ok(json!({}))
}

/// Checks a version's `source` as `mlflow server` 3.17 does, and returns the run id the version
/// records (from the request, or from a logged model's source run).
/// - `models:/m-…`: the logged model must exist and be the request's `model_id`.
/// - `runs:/<run>/<path>`: the run in the source must be the request's `run_id`, if one is given.
/// - a local path or `file://` URI: only inside the artifact directory of the run named by
///   `run_id`, and only when that run's artifacts are local.
/// - any other URI: no `..` segment.
///
/// Recording a source is not serving it: the server reads artifacts only under its own root
/// (`uri_to_relative`), so a version whose source is elsewhere is the client's to download
/// (MLflow's CVE-2023-1177 / CVE-2024-1483 class cannot reach the server's files).
async fn check_source(
    s: &AppState,
    source: &str,
    run_id: &str,
    model_id: Option<&str>,
) -> Result<String> {
    if let Some(rest) = source.strip_prefix("models:/") {
        let id = rest.split('/').next().unwrap_or("");
        if !id.starts_with("m-") {
            return invalid(format!("Invalid model version source '{source}': models:/ sources must name a logged model (models:/m-…)"));
        }
        match model_id {
            Some(m) if m == id => {}
            _ => return invalid("The model_id request parameter must identify the resource that contains the source"),
        }
        let model = logged_models::get_logged_model(&s.pool, id).await?;
        crate::artifacts::check_relative(rest.split_once('/').map_or("", |(_, p)| p))?;
        // MLflow 3 records the logged model's source run, so that a search by run finds it.
        return Ok(if run_id.is_empty() {
            model.source_run_id.unwrap_or_default()
        } else {
            run_id.to_string()
        });
    }
    if let Some(rest) = source.strip_prefix("runs:/") {
        let (rid, path) = rest.split_once('/').unwrap_or((rest, ""));
        if !run_id.is_empty() && rid != run_id {
            return invalid("The run_id request parameter has to match the run ID in the source");
        }
        crate::artifacts::check_relative(path)?;
        return Ok(if run_id.is_empty() { rid } else { run_id }.to_string());
    }
    if let Some(path) = local_path(source) {
        let within = |uri: &str| {
            local_path(uri).is_some_and(|dir| normalise(&path).starts_with(normalise(&dir)))
        };
        if !run_id.is_empty() && within(&runs::get_run_info(&s.pool, run_id).await?.artifact_uri) {
            return Ok(run_id.to_string());
        }
        // Or inside the folder of the logged model named by model_id (MLflow 3).
        if let Some(id) = model_id {
            let model = logged_models::get_logged_model(&s.pool, id).await?;
            if within(&model.artifact_uri) {
                return Ok(if run_id.is_empty() {
                    model.source_run_id.unwrap_or_default()
                } else {
                    run_id.to_string()
                });
            }
        }
        return invalid(
            "To use a local path as a model version input, the run_id request parameter has to be specified and the local path has to be contained within the artifact directory of the run specified by the run_id.",
        );
    }
    if source
        .strip_prefix("file://")
        .is_some_and(|rest| !rest.starts_with('/'))
    {
        // The caller's mistake, but `mlflow server` answers it with a 500 and this message, and
        // MLflow's own suite checks both (test_create_model_version_with_file_uri).
        return Err(crate::error::RegistryError::Internal(format!(
            "{source} is not a valid remote uri. For remote access on windows, please consider using a different scheme such as SMB (e.g. smb://<hostname>/<path>)."
        )));
    }
    let decoded = crate::artifacts::percent_decode(source);
    if decoded.split(['/', '\\']).any(|part| part == "..") {
        return invalid("If supplying a source as an http, https, local file path, ftp, objectstore, or mlflow-artifacts uri, an absolute path must be provided without relative path references present. Please provide an absolute path.");
    }
    Ok(run_id.to_string())
}

/// The path of a local source: `file://…` or a path with no scheme.
fn local_path(source: &str) -> Option<std::path::PathBuf> {
    if let Some(rest) = source.strip_prefix("file://") {
        if !rest.starts_with('/') {
            // `file://host/…`: not local; refused by `check_source`.
            return None;
        }
        return Some(std::path::PathBuf::from(crate::artifacts::percent_decode(
            rest,
        )));
    }
    (!crate::artifacts::has_scheme(source)).then(|| std::path::PathBuf::from(source))
}

/// `.` and `..` resolved without touching the filesystem (`/a/b/..` is `/a`).
fn normalise(path: &std::path::Path) -> std::path::PathBuf {
    use std::path::Component;
    let mut out = std::path::PathBuf::new();
    for c in path.components() {
        match c {
            Component::ParentDir => {
                out.pop();
            }
            Component::CurDir => {}
            other => out.push(other),
        }
    }
    out
}

pub async fn create_model_version(p: Params, s: web::Data<AppState>) -> Resp {
    let name = p.str("name")?;
    let source = p.str("source")?;
    let run_id = p.opt_str("run_id")?.unwrap_or_default();
    let model_id = p.opt_str("model_id")?.filter(|m| !m.is_empty());
    let run_id = check_source(&s, &source, &run_id, model_id.as_deref()).await?;
    let tags = p.key_values("tags", params::MAX_REGISTRY_TAG_VALUE)?;
    let storage_location = if source.starts_with("models:/") {
        download_uri(&s, &source).await?
    } else {
        source.clone()
    };
    let v = registry::insert_model_version(
        &s.pool,
        registry::NewVersion {
            name: &name,
            source: &source,
            storage_location: &storage_location,
            run_id: &run_id,
            run_link: &p.opt_str("run_link")?.unwrap_or_default(),
            description: &p.opt_str("description")?.unwrap_or_default(),
            model_id: model_id.as_deref(),
            tags: &tags,
        },
    )
    .await?;
    if let Some(id) = &model_id {
        record_version_on_model(&s, id, &name, v.version).await?;
    }
    crate::webhooks::fire(
        &s.pool,
        "model_version",
        "created",
        json!({
            "name": name,
            "version": v.version.to_string(),
            "source": source,
            "run_id": run_id,
            "tags": tags.iter().cloned().collect::<std::collections::BTreeMap<_, _>>(),
            "description": p.opt_str("description")?,
        }),
    );
    ok(json!({"model_version": v.json()}))
}

/// Appends `{"name", "version"}` to the logged model's `mlflow.modelVersions` tag, written as
/// MLflow writes it (Python's `json.dumps`), so the client sees which versions it became.
async fn record_version_on_model(
    s: &AppState,
    model_id: &str,
    name: &str,
    version: i64,
) -> Result<()> {
    let model = logged_models::get_logged_model(&s.pool, model_id).await?;
    let mut entries: Vec<(String, i64)> = model
        .tags
        .iter()
        .find(|(k, _)| k == "mlflow.modelVersions")
        .and_then(|(_, v)| serde_json::from_str::<Vec<serde_json::Value>>(v).ok())
        .unwrap_or_default()
        .iter()
        .filter_map(|e| Some((e["name"].as_str()?.to_string(), e["version"].as_i64()?)))
        .collect();
    entries.push((name.to_string(), version));
    let value = format!(
        "[{}]",
        entries
            .iter()
            .map(|(n, v)| format!(
                "{{\"name\": {}, \"version\": {v}}}",
                serde_json::Value::from(n.as_str())
            ))
            .collect::<Vec<_>>()
            .join(", ")
    );
    logged_models::set_tags(&s.pool, model_id, &[("mlflow.modelVersions".into(), value)]).await
}

pub async fn get_model_version(p: Params, s: web::Data<AppState>) -> Resp {
    let v = registry::get_model_version(&s.pool, &p.str("name")?, version(&p)?).await?;
    ok(json!({"model_version": v.json()}))
}

pub async fn update_model_version(p: Params, s: web::Data<AppState>) -> Resp {
    let v = registry::update_model_version(
        &s.pool,
        &p.str("name")?,
        version(&p)?,
        &p.opt_str("description")?.unwrap_or_default(),
    )
    .await?;
    ok(json!({"model_version": v.json()}))
}

pub async fn delete_model_version(p: Params, s: web::Data<AppState>) -> Resp {
    registry::delete_model_version(&s.pool, &p.str("name")?, version(&p)?).await?;
    ok(json!({}))
}

pub async fn search_model_versions(p: Params, s: web::Data<AppState>) -> Resp {
    let max = search::max_results(p.opt_i64("max_results")?, 10_000, 200_000)?;
    let clauses = search::parse_filter(
        &p.opt_str("filter")?.unwrap_or_default(),
        Entity::ModelVersions,
    )?;
    let mut order = search::parse_order_by(&p.str_list("order_by")?, Entity::ModelVersions)?;
    // MLflow's default: the most recently updated first; then name, then newest version.
    if order.is_empty() {
        order.push(search::OrderBy {
            field: search::Field::Attribute("last_updated_timestamp".into()),
            ascending: false,
        });
    }
    order.push(search::OrderBy {
        field: search::Field::Attribute("name".into()),
        ascending: true,
    });
    order.push(search::OrderBy {
        field: search::Field::Attribute("version_number".into()),
        ascending: false,
    });
    let token = p.opt_str("page_token")?;
    let offset = search::decode_token(token.as_deref())?;
    let pushed =
        registry::search_versions_page(&s.reader, s.backend, &clauses, &order, offset, max).await?;
    let all = registry::list_model_versions(&s.reader);
    let (page, next) =
        search::page_or_memory(pushed, offset, max, token.as_deref(), &clauses, &order, all)
            .await?;
    ok(search::page_body(
        "model_versions",
        page.iter().map(registry::ModelVersion::json).collect(),
        next,
    ))
}

/// Where a version's files are: a logged model's artifact URI for `models:/m-…`, the run's
/// artifact URI plus the path for `runs:/…`, else the source itself.
pub async fn get_download_uri(p: Params, s: web::Data<AppState>) -> Resp {
    let v = registry::get_model_version(&s.pool, &p.str("name")?, version(&p)?).await?;
    ok(json!({"artifact_uri": download_uri(&s, &v.source).await?}))
}

/// Where a version's files are: its source with `models:/` and `runs:/` resolved.
pub async fn download_uri(s: &AppState, source: &str) -> Result<String> {
    Ok(if let Some(rest) = source.strip_prefix("models:/") {
        let (id, path) = rest.split_once('/').unwrap_or((rest, ""));
        let m = logged_models::get_logged_model(&s.pool, id).await?;
        join_uri(&m.artifact_uri, path)
    } else if let Some(rest) = source.strip_prefix("runs:/") {
        let (rid, path) = rest.split_once('/').unwrap_or((rest, ""));
        let run = runs::get_run_info(&s.pool, rid).await?;
        join_uri(&run.artifact_uri, path)
    } else {
        source.to_string()
    })
}

fn join_uri(base: &str, path: &str) -> String {
    if path.is_empty() {
        base.to_string()
    } else {
        format!("{}/{}", base.trim_end_matches('/'), path)
    }
}

pub async fn set_model_version_tag(p: Params, s: web::Data<AppState>) -> Resp {
    let (key, value) = (p.str("key")?, p.opt_str("value")?.unwrap_or_default());
    params::check_key(&key)?;
    params::check_value(&key, &value, params::MAX_REGISTRY_TAG_VALUE)?;
    registry::set_model_version_tag(&s.pool, &p.str("name")?, version(&p)?, &key, &value).await?;
    ok(json!({}))
}

pub async fn delete_model_version_tag(p: Params, s: web::Data<AppState>) -> Resp {
    registry::delete_model_version_tag(&s.pool, &p.str("name")?, version(&p)?, &p.str("key")?)
        .await?;
    ok(json!({}))
}

pub async fn transition_stage(req: HttpRequest, p: Params, s: web::Data<AppState>) -> Resp {
    let v = crate::moves::transition_stage(
        &req,
        crate::moves::Via::Rest,
        &s.pool,
        &p.str("name")?,
        version(&p)?,
        &p.str("stage")?,
        p.opt_bool("archive_existing_versions")?.unwrap_or(false),
    )
    .await?;
    ok(json!({"model_version": v.json()}))
}

pub async fn get_latest_versions(p: Params, s: web::Data<AppState>) -> Resp {
    let vs = registry::latest_versions(&s.pool, &p.str("name")?, &p.str_list("stages")?).await?;
    ok(json!({"model_versions": vs.iter().map(registry::ModelVersion::json).collect::<Vec<_>>()}))
}

pub async fn set_alias(req: HttpRequest, p: Params, s: web::Data<AppState>) -> Resp {
    crate::moves::set_alias(
        &req,
        crate::moves::Via::Rest,
        &s.pool,
        &p.str("name")?,
        &p.str("alias")?,
        version(&p)?,
    )
    .await?;
    ok(json!({}))
}

pub async fn get_alias(p: Params, s: web::Data<AppState>) -> Resp {
    let v = registry::get_version_by_alias(&s.pool, &p.str("name")?, &p.str("alias")?).await?;
    ok(json!({"model_version": v.json()}))
}

pub async fn delete_alias(req: HttpRequest, p: Params, s: web::Data<AppState>) -> Resp {
    crate::moves::delete_alias(
        &req,
        crate::moves::Via::Rest,
        &s.pool,
        &p.str("name")?,
        &p.str("alias")?,
    )
    .await?;
    ok(json!({}))
}
