//! HTTP routes, and the table that maps paths to them.

pub mod batch_jobs;
pub mod decisions;
pub mod jobs;
pub mod model;
pub mod monitoring;
pub mod openapi;
pub mod predict;
pub mod training_jobs;

use actix_web::web;

use crate::error::ApiError;

/// Every route. One resource per path: a known path with another method is a 405, an unknown
/// path a 404, both as problem documents.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/v1/predict", "POST").route(web::post().to(predict::predict)))
        .service(
            resource("/v1/predict/batch", "POST").route(web::post().to(predict::predict_batch)),
        )
        .service(resource("/v1/batch-jobs", "POST").route(web::post().to(batch_jobs::create)))
        .service(
            resource("/v1/batch-jobs/{id}", "GET, DELETE")
                .route(web::get().to(batch_jobs::get))
                .route(web::delete().to(batch_jobs::cancel)),
        )
        .service(
            resource("/v1/batch-jobs/{id}/results", "GET")
                .route(web::get().to(batch_jobs::results)),
        )
        .service(
            resource("/v1/batch-jobs/{id}/errors", "GET").route(web::get().to(batch_jobs::errors)),
        )
        .service(resource("/v1/training-jobs", "POST").route(web::post().to(training_jobs::create)))
        .service(
            resource("/v1/training-jobs/{id}", "GET, DELETE")
                .route(web::get().to(training_jobs::get))
                .route(web::delete().to(training_jobs::cancel)),
        )
        .service(
            resource("/v1/decisions/{request_id}", "GET, DELETE")
                .route(web::get().to(decisions::get))
                .route(web::delete().to(decisions::erase)),
        )
        .service(resource("/v1/monitoring/drift", "GET").route(web::get().to(monitoring::drift)))
        .service(resource("/v1/model", "GET").route(web::get().to(model::get_model)))
        .service(resource("/v1/model/events", "POST").route(web::post().to(crate::events::receive)))
        .service(resource("/v1/model/reload", "POST").route(web::post().to(model::reload)))
        .service(resource("/healthz", "GET").route(web::get().to(model::healthz)))
        .service(resource("/readyz", "GET").route(web::get().to(model::readyz)))
        .service(resource("/metrics", "GET").route(web::get().to(model::metrics)))
        .service(resource("/openapi.json", "GET").route(web::get().to(openapi::openapi)))
        .service(resource("/docs", "GET").route(web::get().to(openapi::docs)))
        .default_service(web::to(|| async {
            Err::<actix_web::HttpResponse, _>(ApiError::NotFound(
                "no such endpoint; see /openapi.json".into(),
            ))
        }));
}

/// A resource whose other methods answer 405 as a problem document, with `Allow: allow` (the
/// methods routed below it; a test compares them with the OpenAPI document).
fn resource(path: &str, allow: &'static str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(move || async move {
        Err::<actix_web::HttpResponse, _>(ApiError::MethodNotAllowed(allow))
    }))
}
