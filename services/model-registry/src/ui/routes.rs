//! The pages' route table.

use actix_web::{web, HttpResponse};

use super::{experiments, models, runs};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(experiments::list))
        .route("/experiments/{id}", web::get().to(experiments::show))
        .route("/compare", web::get().to(experiments::compare))
        .route("/runs/{run_id}", web::get().to(runs::show))
        .route("/runs/{run_id}/artifacts", web::get().to(runs::artifacts))
        .route(
            "/runs/{run_id}/artifact-file",
            web::get().to(runs::artifact_file),
        )
        .route("/models", web::get().to(models::list))
        .route("/model", web::get().to(models::show))
        .route("/model/confirm", web::get().to(models::confirm))
        .route("/model/apply", web::post().to(models::apply))
        .route("/login", web::get().to(super::login_page))
        .route("/login", web::post().to(super::login))
        .route("/logout", web::post().to(super::logout))
        .route("/static/ui.css", web::get().to(super::css))
        .route("/favicon.ico", web::get().to(HttpResponse::NoContent));
}
