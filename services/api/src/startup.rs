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
    audit: Option<Arc<audit::Auditor>>,
    shadow: Option<Arc<crate::shadow::Shadow>>,
    subscription: crate::events::Subscription,
}

impl Application {
    /// Binds the listener and starts following the model; the process is alive (and unready)
    /// even when the registry is down.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let models = Arc::new(Models::new(&settings)?);
        tokio::spawn(models.clone().run());
        let shadow = match Models::shadow(&settings)?.map(Arc::new) {
            Some(models) => {
                tokio::spawn(models.clone().run());
                Some(Arc::new(crate::shadow::Shadow::start(models)?))
            }
            None => None,
        };
        let keys = web::Data::new(ApiKeys::load(
            settings.api_keys.as_deref(),
            settings.api_keys_file.as_deref(),
        )?);
        let listener = TcpListener::bind((settings.host.as_str(), settings.port)).map_err(|e| {
            anyhow::anyhow!("cannot listen on {}:{}: {e}", settings.host, settings.port)
        })?;
        let port = listener.local_addr()?.port();
        let subscription = match (
            settings.webhook_url.as_deref().filter(|u| !u.is_empty()),
            settings.webhook_secret.as_deref().filter(|s| !s.is_empty()),
        ) {
            (Some(url), Some(secret)) => crate::events::Subscription::start(
                &models,
                url.replace("{port}", &port.to_string()),
                secret.to_string(),
            ),
            (Some(_), None) => {
                anyhow::bail!("MODEL_WEBHOOK_SECRET is required with MODEL_WEBHOOK_URL")
            }
            _ => crate::events::Subscription::default(),
        };
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
        let audit = start_audit(&settings.audit);
        let state = web::Data::new(AppState {
            models: models.clone(),
            settings,
            batch,
            shadow: shadow.clone(),
            audit: audit.clone(),
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
            audit,
            shadow,
            subscription,
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

    /// Runs until SIGTERM or SIGINT, then finishes in-flight requests within the timeout,
    /// lets the shadow model score what it has queued, and writes every queued audit record
    /// before it returns.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        let served = self.server.await;
        self.subscription.end().await;
        if let Some(s) = &self.shadow {
            s.drain(AUDIT_DRAIN).await;
        }
        if let Some(a) = &self.audit {
            a.shutdown(AUDIT_DRAIN).await;
        }
        served
    }
}

/// How long shutdown waits for the audit store to take the queued records.
const AUDIT_DRAIN: std::time::Duration = std::time::Duration::from_secs(60);

/// Starts the audit writer and, with a retention, its sweeper; warns when auditing is off.
fn start_audit(settings: &audit::Settings) -> Option<Arc<audit::Auditor>> {
    let Some(url) = settings.url().map(String::from) else {
        tracing::warn!("AUDIT_URL is not set: decisions are not recorded");
        return None;
    };
    let auditor = audit::Auditor::start(settings, url);
    if settings.retention_days > 0 {
        tokio::spawn(audit::sweep_forever(
            auditor.clone(),
            settings.retention_days,
        ));
    }
    Some(auditor)
}
