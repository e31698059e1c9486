//! HTTP routes: MLflow's REST API under `/api/2.0/mlflow` (and `/ajax-api/2.0/mlflow`), the
//! artifact proxy, and the probes.

pub mod artifacts;
pub mod logged_models;
pub mod registry;
pub mod tracking;

use actix_web::{web, HttpResponse};

use crate::error::RegistryError;

/// What every MLflow handler returns.
pub(crate) type Resp = Result<HttpResponse, RegistryError>;

/// 200 with a JSON body.
pub(crate) fn ok(v: serde_json::Value) -> Resp {
    Ok(HttpResponse::Ok().json(v))
}

/// One resource per path with its methods, so a known path with the wrong method is a 405
/// (as MLflow answers), not a 404.
macro_rules! resource {
    ($cfg:ident, $path:expr, $($method:ident => $handler:expr),+) => {
        $cfg.service(web::resource($path)$(.route(web::$method().to($handler)))+);
    };
}

/// The tracking and registry API, mounted under both prefixes MLflow serves.
pub fn mlflow_api(cfg: &mut web::ServiceConfig) {
    use logged_models as l;
    use registry as r;
    use tracking as t;
    resource!(cfg, "/experiments/create", post => t::create_experiment);
    resource!(cfg, "/experiments/get", get => t::get_experiment);
    resource!(cfg, "/experiments/get-by-name", get => t::get_experiment_by_name);
    resource!(cfg, "/experiments/search", post => t::search_experiments, get => t::search_experiments);
    resource!(cfg, "/experiments/update", post => t::update_experiment);
    resource!(cfg, "/experiments/delete", post => t::delete_experiment);
    resource!(cfg, "/experiments/restore", post => t::restore_experiment);
    resource!(cfg, "/experiments/set-experiment-tag", post => t::set_experiment_tag);
    resource!(cfg, "/experiments/delete-experiment-tag", post => t::delete_experiment_tag);
    resource!(cfg, "/runs/create", post => t::create_run);
    resource!(cfg, "/runs/get", get => t::get_run);
    resource!(cfg, "/runs/update", post => t::update_run);
    resource!(cfg, "/runs/delete", post => t::delete_run);
    resource!(cfg, "/runs/restore", post => t::restore_run);
    resource!(cfg, "/runs/log-metric", post => t::log_metric);
    resource!(cfg, "/runs/log-parameter", post => t::log_param);
    resource!(cfg, "/runs/log-batch", post => t::log_batch);
    resource!(cfg, "/runs/set-tag", post => t::set_tag);
    resource!(cfg, "/runs/delete-tag", post => t::delete_tag);
    resource!(cfg, "/runs/search", post => t::search_runs);
    resource!(cfg, "/runs/log-inputs", post => t::log_inputs);
    resource!(cfg, "/runs/outputs", post => t::log_outputs);
    resource!(cfg, "/metrics/get-history", get => t::metric_history);
    resource!(cfg, "/metrics/get-history-bulk", get => t::metric_history_bulk);
    resource!(cfg, "/metrics/get-history-bulk-interval", get => t::metric_history_bulk_interval);
    resource!(cfg, "/artifacts/list", get => t::list_run_artifacts);
    resource!(cfg, "/upload-artifact", post => artifacts::upload_run_artifact);
    resource!(cfg, "/registered-models/create", post => r::create_registered_model);
    resource!(cfg, "/registered-models/get", get => r::get_registered_model);
    resource!(cfg, "/registered-models/rename", post => r::rename_registered_model);
    resource!(cfg, "/registered-models/update", patch => r::update_registered_model);
    resource!(cfg, "/registered-models/delete", delete => r::delete_registered_model);
    resource!(cfg, "/registered-models/search", get => r::search_registered_models);
    resource!(cfg, "/registered-models/set-tag", post => r::set_registered_model_tag);
    resource!(cfg, "/registered-models/delete-tag", delete => r::delete_registered_model_tag);
    resource!(cfg, "/registered-models/alias", post => r::set_alias, get => r::get_alias, delete => r::delete_alias);
    resource!(cfg, "/registered-models/get-latest-versions", post => r::get_latest_versions, get => r::get_latest_versions);
    resource!(cfg, "/model-versions/create", post => r::create_model_version);
    resource!(cfg, "/model-versions/get", get => r::get_model_version);
    resource!(cfg, "/model-versions/update", patch => r::update_model_version);
    resource!(cfg, "/model-versions/delete", delete => r::delete_model_version);
    resource!(cfg, "/model-versions/search", get => r::search_model_versions);
    resource!(cfg, "/model-versions/get-download-uri", get => r::get_download_uri);
    resource!(cfg, "/model-versions/set-tag", post => r::set_model_version_tag);
    resource!(cfg, "/model-versions/delete-tag", delete => r::delete_model_version_tag);
    resource!(cfg, "/model-versions/transition-stage", post => r::transition_stage);
    resource!(cfg, "/webhooks", post => crate::webhooks::create, get => crate::webhooks::list);
    resource!(cfg, "/webhooks/{webhook_id}", get => crate::webhooks::get, patch => crate::webhooks::update, delete => crate::webhooks::delete);
    resource!(cfg, "/webhooks/{webhook_id}/test", post => crate::webhooks::test);
    resource!(cfg, "/logged-models", post => l::create);
    resource!(cfg, "/logged-models/search", post => l::search);
    resource!(cfg, "/logged-models/{model_id}", get => l::get, patch => l::finalize, delete => l::delete);
    resource!(cfg, "/logged-models/{model_id}/tags", patch => l::set_tags);
    resource!(cfg, "/logged-models/{model_id}/tags/{key}", delete => l::delete_tag);
    resource!(cfg, "/logged-models/{model_id}/params", post => l::log_params);
    resource!(cfg, "/logged-models/{model_id}/artifacts/directories", get => l::list_artifacts);
    resource!(cfg, "/logged-models/{model_id}/artifacts/files", get => l::get_artifact);
}

pub fn artifacts_api(cfg: &mut web::ServiceConfig) {
    resource!(cfg, "/artifacts", get => artifacts::list);
    resource!(cfg, "/artifacts/{path:.*}", put => artifacts::upload, get => artifacts::download, delete => artifacts::delete);
}

pub async fn health() -> HttpResponse {
    HttpResponse::Ok().content_type("text/plain").body("OK")
}

pub async fn version() -> HttpResponse {
    // The MLflow version whose API this server speaks.
    HttpResponse::Ok().content_type("text/plain").body("3.17.2")
}

pub async fn server_info() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({
        "store_type": "SqlStore",
        "workspaces_enabled": false,
        "trace_archival_enabled": false,
        "multipart_uploads_enabled": false,
        "multipart_downloads_enabled": false,
        "presigned_upload_run_id_supported": false,
        "presigned_upload_model_id_supported": false,
        "features_enabled": {},
    }))
}

/// Prometheus metrics (open, like /health, for scrapers).
pub async fn metrics() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(telemetry::render_metrics())
}

pub async fn not_found() -> Result<HttpResponse, RegistryError> {
    Err(RegistryError::EndpointNotFound)
}
