//! MLflow 3 logged models.

use actix_web::{web, HttpRequest};
use serde_json::json;

use crate::error::Result;
use crate::params::{self, Params, QueryParams};
use crate::search::{self, Entity};
use crate::startup::AppState;

use super::{ok, Resp};
use crate::store::{experiments, logged_models};

pub async fn create(p: Params, s: web::Data<AppState>) -> Resp {
    let exp = experiments::parse_id(&p.str("experiment_id")?)?;
    let name = p
        .opt_str("name")?
        .filter(|n| !n.is_empty())
        // A readable random name, as MLflow gives one: searches by name find this model only.
        .unwrap_or_else(crate::store::runs::default_run_name);
    let params_ = p.key_values("params", params::MAX_PARAM_VALUE)?;
    let tags = p.key_values("tags", params::MAX_RUN_TAG_VALUE)?;
    let m = logged_models::insert_logged_model(
        &s.pool,
        exp,
        &name,
        p.opt_str("model_type")?,
        p.opt_str("source_run_id")?.filter(|r| !r.is_empty()),
        &params_,
        &tags,
    )
    .await?;
    ok(json!({"model": m.json()}))
}

pub async fn get(path: web::Path<String>, s: web::Data<AppState>) -> Resp {
    let m = logged_models::get_logged_model(&s.pool, &path).await?;
    ok(json!({"model": m.json()}))
}

pub async fn finalize(path: web::Path<String>, p: Params, s: web::Data<AppState>) -> Resp {
    let m = logged_models::set_status(&s.pool, &path, &p.str("status")?).await?;
    ok(json!({"model": m.json()}))
}

pub async fn delete(path: web::Path<String>, s: web::Data<AppState>) -> Resp {
    logged_models::delete_logged_model(&s.pool, &path).await?;
    ok(json!({}))
}

pub async fn set_tags(path: web::Path<String>, p: Params, s: web::Data<AppState>) -> Resp {
    logged_models::set_tags(
        &s.pool,
        &path,
        &p.key_values("tags", params::MAX_REGISTRY_TAG_VALUE)?,
    )
    .await?;
    ok(json!({}))
}

pub async fn delete_tag(path: web::Path<(String, String)>, s: web::Data<AppState>) -> Resp {
    let (id, key) = path.into_inner();
    logged_models::delete_tag(&s.pool, &id, &key).await?;
    ok(json!({}))
}

pub async fn log_params(path: web::Path<String>, p: Params, s: web::Data<AppState>) -> Resp {
    logged_models::log_params(
        &s.pool,
        &path,
        &p.key_values("params", params::MAX_PARAM_VALUE)?,
    )
    .await?;
    ok(json!({}))
}

pub async fn search(p: Params, s: web::Data<AppState>) -> Resp {
    let max = search::max_results(p.opt_i64("max_results")?, 100, 50_000)?;
    let ids = p
        .str_list("experiment_ids")?
        .iter()
        .map(|i| experiments::parse_id(i))
        .collect::<Result<Vec<_>>>()?;
    let clauses = search::parse_filter(
        &p.opt_str("filter")?.unwrap_or_default(),
        Entity::LoggedModels,
    )?;
    // order_by arrives as [{field_name, ascending}].
    let mut order = Vec::new();
    for o in p.objects("order_by")? {
        let terms = vec![o.str("field_name")?];
        let mut parsed = search::parse_order_by(&terms, Entity::LoggedModels)?;
        if let Some(first) = parsed.first_mut() {
            first.ascending = o.opt_bool("ascending")?.unwrap_or(true);
        }
        order.extend(parsed);
    }
    order.push(search::OrderBy {
        field: search::Field::Attribute("creation_timestamp".into()),
        ascending: false,
    });
    order.push(search::OrderBy {
        field: search::Field::Attribute("model_id".into()),
        ascending: true,
    });
    let token = p.opt_str("page_token")?;
    let offset = search::decode_token(token.as_deref())?;
    // `datasets`: only models with a metric logged against one of these datasets.
    let datasets = p.objects("datasets")?;
    let pushed = if datasets.is_empty() {
        logged_models::search_page(&s.reader, s.backend, &ids, &clauses, &order, offset, max)
            .await?
    } else {
        None
    };
    // Datasets, metrics or a filter SQL cannot say exactly: searched in memory.
    let all = async {
        let mut items = logged_models::list_logged_models(&s.reader, &ids).await?;
        if !datasets.is_empty() {
            let mut keep = std::collections::HashSet::new();
            for d in &datasets {
                let name = d.str("dataset_name")?;
                let digest = d.opt_str("dataset_digest")?.filter(|x| !x.is_empty());
                keep.extend(
                    logged_models::models_with_dataset(&s.reader, &name, digest.as_deref()).await?,
                );
            }
            items.retain(|m| keep.contains(&m.model_id));
        }
        Ok(items)
    };
    let (page, next) =
        search::page_or_memory(pushed, offset, max, token.as_deref(), &clauses, &order, all)
            .await?;
    ok(search::page_body(
        "models",
        page.iter().map(logged_models::LoggedModel::json).collect(),
        next,
    ))
}

/// `GET logged-models/{id}/artifacts/directories?artifact_directory_path=…` (MLflow's UI): the
/// files in one folder of a logged model, from this server's store.
pub async fn list_artifacts(
    path: web::Path<String>,
    p: QueryParams,
    s: web::Data<AppState>,
) -> Resp {
    let sub = crate::artifacts::check_relative(
        &p.opt_str("artifact_directory_path")?.unwrap_or_default(),
    )?;
    let m = logged_models::get_logged_model(&s.pool, &path.into_inner()).await?;
    let (store, root) = s.store_for(&m.artifact_uri)?;
    let files = store.list(&crate::artifacts::join(&root, &sub)).await?;
    let files = crate::artifacts::listing_json(files, &sub);
    ok(json!({"root_uri": m.artifact_uri, "files": files}))
}

/// `GET logged-models/{id}/artifacts/files?artifact_file_path=…` (MLflow's UI): one file of a
/// logged model, typed and `nosniff`.
pub async fn get_artifact(
    req: HttpRequest,
    path: web::Path<String>,
    p: QueryParams,
    s: web::Data<AppState>,
) -> Resp {
    let sub = crate::artifacts::check_relative(&p.str("artifact_file_path")?)?;
    let m = logged_models::get_logged_model(&s.pool, &path.into_inner()).await?;
    let (store, root) = s.store_for(&m.artifact_uri)?;
    super::artifacts::serve(&req, store, &crate::artifacts::join(&root, &sub)).await
}
