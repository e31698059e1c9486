//! Builds the application: the model holder and its poller, the HTTP server. Tests run this.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{web, App, HttpServer};

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
                .wrap(cors)
                .wrap(actix_web::middleware::from_fn(telemetry::record_http))
                .wrap(tracing_actix_web::TracingLogger::default())
                .app_data(state.clone())
                .app_data(keys.clone())
                // A query string that does not parse is a problem+json 400 like any other.
                .app_data(web::QueryConfig::default().error_handler(|e, _| {
                    crate::error::ApiError::Malformed(format!("invalid query string: {e}")).into()
                }))
                .route("/v1/predict", web::post().to(predict::predict))
                .route("/v1/predict/batch", web::post().to(predict::predict_batch))
                .route("/v1/batch-jobs", web::post().to(batch_jobs::create))
                .route("/v1/batch-jobs/{id}", web::get().to(batch_jobs::get))
                .route("/v1/batch-jobs/{id}", web::delete().to(batch_jobs::cancel))
                .route(
                    "/v1/batch-jobs/{id}/results",
                    web::get().to(batch_jobs::results),
                )
                .route(
                    "/v1/batch-jobs/{id}/errors",
                    web::get().to(batch_jobs::errors),
                )
                .route("/v1/training-jobs", web::post().to(training_jobs::create))
                .route("/v1/training-jobs/{id}", web::get().to(training_jobs::get))
                .route(
                    "/v1/training-jobs/{id}",
                    web::delete().to(training_jobs::cancel),
                )
                .route("/v1/model", web::get().to(model::get_model))
                .route("/v1/model/reload", web::post().to(model::reload))
                .route("/healthz", web::get().to(model::healthz))
                .route("/readyz", web::get().to(model::readyz))
                .route("/metrics", web::get().to(model::metrics))
                .route("/openapi.json", web::get().to(openapi::openapi))
                .route("/docs", web::get().to(openapi::docs))
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
