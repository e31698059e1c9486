//! Builds the application: the model holder and its poller, the middleware, the HTTP server.
//! The state is in `state.rs`, the route table in `routes::configure`. Tests run this.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{web, App, HttpServer};

use crate::error::ApiError;

use crate::auth::{self, ApiKeys};
use crate::config::Settings;
use crate::models::Models;
use crate::state::AppState;

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
                .wrap(tracing_actix_web::TracingLogger::<
                    telemetry::requests::RequestLog,
                >::new())
                .app_data(state.clone())
                .app_data(keys.clone())
                .app_data(guard.clone())
                // A query string that does not parse is a problem+json 400 like any other.
                .app_data(web::QueryConfig::default().error_handler(|e, _| {
                    ApiError::Malformed(format!("invalid query string: {e}")).into()
                }))
                .configure(crate::routes::configure)
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
