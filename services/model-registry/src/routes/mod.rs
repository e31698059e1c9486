//! HTTP routes: MLflow's REST API under `/api/2.0/mlflow` (and `/ajax-api/2.0/mlflow`), the
//! artifact proxy, and the probes.

pub mod artifacts;
pub mod logged_models;
pub mod registry;
pub mod tracking;

use actix_web::{web, HttpResponse};

use crate::error::RegistryError;

/// The tracking and registry API, mounted under both prefixes MLflow serves.
pub fn mlflow_api(cfg: &mut web::ServiceConfig) {
    use tracking as t;
    cfg.route("/experiments/create", web::post().to(t::create_experiment))
        .route("/experiments/get", web::get().to(t::get_experiment))
        .route(
            "/experiments/get-by-name",
            web::get().to(t::get_experiment_by_name),
        )
        .route("/experiments/search", web::post().to(t::search_experiments))
        .route("/experiments/search", web::get().to(t::search_experiments))
        .route("/experiments/update", web::post().to(t::update_experiment))
        .route("/experiments/delete", web::post().to(t::delete_experiment))
        .route(
            "/experiments/restore",
            web::post().to(t::restore_experiment),
        )
        .route(
            "/experiments/set-experiment-tag",
            web::post().to(t::set_experiment_tag),
        )
        .route(
            "/experiments/delete-experiment-tag",
            web::post().to(t::delete_experiment_tag),
        )
        .route("/runs/create", web::post().to(t::create_run))
        .route("/runs/get", web::get().to(t::get_run))
        .route("/runs/update", web::post().to(t::update_run))
        .route("/runs/delete", web::post().to(t::delete_run))
        .route("/runs/restore", web::post().to(t::restore_run))
        .route("/runs/log-metric", web::post().to(t::log_metric))
        .route("/runs/log-parameter", web::post().to(t::log_param))
        .route("/runs/log-batch", web::post().to(t::log_batch))
        .route("/runs/set-tag", web::post().to(t::set_tag))
        .route("/runs/delete-tag", web::post().to(t::delete_tag))
        .route("/runs/search", web::post().to(t::search_runs))
        .route("/runs/log-inputs", web::post().to(t::log_inputs))
        .route("/runs/outputs", web::post().to(t::log_outputs))
        .route("/metrics/get-history", web::get().to(t::metric_history))
        .route("/artifacts/list", web::get().to(t::list_run_artifacts));
    use registry as r;
    cfg.route(
        "/registered-models/create",
        web::post().to(r::create_registered_model),
    )
    .route(
        "/registered-models/get",
        web::get().to(r::get_registered_model),
    )
    .route(
        "/registered-models/rename",
        web::post().to(r::rename_registered_model),
    )
    .route(
        "/registered-models/update",
        web::patch().to(r::update_registered_model),
    )
    .route(
        "/registered-models/delete",
        web::delete().to(r::delete_registered_model),
    )
    .route(
        "/registered-models/search",
        web::get().to(r::search_registered_models),
    )
    .route(
        "/registered-models/set-tag",
        web::post().to(r::set_registered_model_tag),
    )
    .route(
        "/registered-models/delete-tag",
        web::delete().to(r::delete_registered_model_tag),
    )
    .route("/registered-models/alias", web::post().to(r::set_alias))
    .route("/registered-models/alias", web::get().to(r::get_alias))
    .route(
        "/registered-models/alias",
        web::delete().to(r::delete_alias),
    )
    .route(
        "/registered-models/get-latest-versions",
        web::post().to(r::get_latest_versions),
    )
    .route(
        "/registered-models/get-latest-versions",
        web::get().to(r::get_latest_versions),
    )
    .route(
        "/model-versions/create",
        web::post().to(r::create_model_version),
    )
    .route("/model-versions/get", web::get().to(r::get_model_version))
    .route(
        "/model-versions/update",
        web::patch().to(r::update_model_version),
    )
    .route(
        "/model-versions/delete",
        web::delete().to(r::delete_model_version),
    )
    .route(
        "/model-versions/search",
        web::get().to(r::search_model_versions),
    )
    .route(
        "/model-versions/get-download-uri",
        web::get().to(r::get_download_uri),
    )
    .route(
        "/model-versions/set-tag",
        web::post().to(r::set_model_version_tag),
    )
    .route(
        "/model-versions/delete-tag",
        web::delete().to(r::delete_model_version_tag),
    )
    .route(
        "/model-versions/transition-stage",
        web::post().to(r::transition_stage),
    );
    use logged_models as l;
    cfg.route("/logged-models", web::post().to(l::create))
        .route("/logged-models/search", web::post().to(l::search))
        .route("/logged-models/{model_id}", web::get().to(l::get))
        .route("/logged-models/{model_id}", web::patch().to(l::finalize))
        .route("/logged-models/{model_id}", web::delete().to(l::delete))
        .route(
            "/logged-models/{model_id}/tags",
            web::patch().to(l::set_tags),
        )
        .route(
            "/logged-models/{model_id}/tags/{key}",
            web::delete().to(l::delete_tag),
        )
        .route(
            "/logged-models/{model_id}/params",
            web::post().to(l::log_params),
        );
}

pub fn artifacts_api(cfg: &mut web::ServiceConfig) {
    cfg.route("/artifacts", web::get().to(artifacts::list))
        .route("/artifacts/{path:.*}", web::put().to(artifacts::upload))
        .route("/artifacts/{path:.*}", web::get().to(artifacts::download))
        .route("/artifacts/{path:.*}", web::delete().to(artifacts::delete));
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
