//! Builds the application: the model holder and its poller, the HTTP server. Tests run this.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{web, App, HttpServer};

use crate::error::ApiError;

use crate::auth::{self, ApiKeys};
use crate::config::Settings;
use crate::models::Models;
use crate::routes::{batch_jobs, model, openapi, predict, training_jobs};

pub struct AppState {
    pub models: Arc<Models>,
    pub settings: Settings,
    /// Batch jobs, once Redis is reachable.
    pub batch: Arc<arc_swap::ArcSwapOption<crate::batch::Batch>>,
}

pub struct Application {
    port: u16,
    server: Server,
    models: Arc<Models>,
}

impl Application {
    /// Binds the listener and starts following the model; the process is alive (and unready)
    /// even when the registry is down.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let models = Arc::new(Models::new(&settings)?);
        tokio::spawn(models.clone().run());
        let keys = web::Data::new(ApiKeys::load(
            settings.api_keys.as_deref(),
            settings.api_keys_file.as_deref(),
        )?);
        let listener = TcpListener::bind((settings.host.as_str(), settings.port)).map_err(|e| {
            anyhow::anyhow!("cannot listen on {}:{}: {e}", settings.host, settings.port)
        })?;
        let port = listener.local_addr()?.port();
        let origins: Vec<String> = settings
            .cors_allowed_origins
            .split(',')
            .map(str::trim)
            .filter(|o| !o.is_empty())
            .map(String::from)
            .collect();
        let guard = web::Data::new(
            web_guard::Guard::new(
                web_guard::list(&settings.allowed_hosts),
                &settings.host,
                web_guard::list(&settings.cors_allowed_origins),
                crate::error::rejected,
            )
            .any_host(&["/healthz", "/readyz", "/metrics"]),
        );
        let shutdown = settings.shutdown_timeout;
        let batch = Arc::new(arc_swap::ArcSwapOption::empty());
        crate::batch::connect_in_background(&settings, batch.clone());
        let state = web::Data::new(AppState {
            models: models.clone(),
            settings,
            batch,
        });
        let server = HttpServer::new(move || {
            let mut cors = actix_cors::Cors::default()
                .allowed_methods(["GET", "POST", "DELETE"])
                .allowed_headers([
                    "content-type",
                    "x-api-key",
                    "authorization",
                    "x-request-id",
                    "idempotency-key",
                ])
                .expose_headers(["x-request-id", "location"])
                .max_age(600);
            for o in &origins {
                cors = cors.allowed_origin(o);
            }
            App::new()
                .wrap(actix_web::middleware::from_fn(auth::require))
                // Before the keys: a page must not start jobs or reload the model.
                .wrap(actix_web::middleware::from_fn(web_guard::enforce))
                .wrap(cors)
                .wrap(actix_web::middleware::from_fn(telemetry::record_http))
                .wrap(tracing_actix_web::TracingLogger::default())
                .app_data(state.clone())
                .app_data(keys.clone())
                .app_data(guard.clone())
                // A query string that does not parse is a problem+json 400 like any other.
                .app_data(web::QueryConfig::default().error_handler(|e, _| {
                    ApiError::Malformed(format!("invalid query string: {e}")).into()
                }))
                // One resource per path: a known path with another method is a 405, an unknown
                // path a 404, both as problem documents.
                .service(resource("/v1/predict").route(web::post().to(predict::predict)))
                .service(
                    resource("/v1/predict/batch").route(web::post().to(predict::predict_batch)),
                )
                .service(resource("/v1/batch-jobs").route(web::post().to(batch_jobs::create)))
                .service(
                    resource("/v1/batch-jobs/{id}")
                        .route(web::get().to(batch_jobs::get))
                        .route(web::delete().to(batch_jobs::cancel)),
                )
                .service(
                    resource("/v1/batch-jobs/{id}/results")
                        .route(web::get().to(batch_jobs::results)),
                )
                .service(
                    resource("/v1/batch-jobs/{id}/errors").route(web::get().to(batch_jobs::errors)),
                )
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
                }))
        })
        .shutdown_timeout(shutdown)
        .listen(listener)?
        .run();
        Ok(Application {
            port,
            server,
            models,
        })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn models(&self) -> Arc<Models> {
        self.models.clone()
    }

    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    /// Runs until SIGTERM or SIGINT, then finishes in-flight requests within the timeout.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// A resource whose other methods answer 405 as a problem document.
fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(|| async {
        Err::<actix_web::HttpResponse, _>(ApiError::MethodNotAllowed)
    }))
}
