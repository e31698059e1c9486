//! HTTP routes, and the table that maps paths to them.

pub mod batch_jobs;
pub mod jobs;
pub mod model;
pub mod openapi;
pub mod predict;
pub mod training_jobs;

use actix_web::web;

use crate::error::ApiError;

/// Every route. One resource per path: a known path with another method is a 405, an unknown
/// path a 404, both as problem documents.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(resource("/v1/predict").route(web::post().to(predict::predict)))
        .service(resource("/v1/predict/batch").route(web::post().to(predict::predict_batch)))
        .service(resource("/v1/batch-jobs").route(web::post().to(batch_jobs::create)))
        .service(
            resource("/v1/batch-jobs/{id}")
                .route(web::get().to(batch_jobs::get))
                .route(web::delete().to(batch_jobs::cancel)),
        )
        .service(resource("/v1/batch-jobs/{id}/results").route(web::get().to(batch_jobs::results)))
        .service(resource("/v1/batch-jobs/{id}/errors").route(web::get().to(batch_jobs::errors)))
        .service(resource("/v1/training-jobs").route(web::post().to(training_jobs::create)))
        .service(
            resource("/v1/training-jobs/{id}")
                .route(web::get().to(training_jobs::get))
                .route(web::delete().to(training_jobs::cancel)),
        )
        .service(resource("/v1/model").route(web::get().to(model::get_model)))
        .service(resource("/v1/model/reload").route(web::post().to(model::reload)))
        .service(resource("/healthz").route(web::get().to(model::healthz)))
        .service(resource("/readyz").route(web::get().to(model::readyz)))
        .service(resource("/metrics").route(web::get().to(model::metrics)))
        .service(resource("/openapi.json").route(web::get().to(openapi::openapi)))
        .service(resource("/docs").route(web::get().to(openapi::docs)))
        .default_service(web::to(|| async {
            Err::<actix_web::HttpResponse, _>(ApiError::NotFound(
                "no such endpoint; see /openapi.json".into(),
            ))
        }));
}

/// A resource whose other methods answer 405 as a problem document.
fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(|| async {
        Err::<actix_web::HttpResponse, _>(ApiError::MethodNotAllowed)
    }))
}
