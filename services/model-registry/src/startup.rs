//! Builds the application: database, artifact store, HTTP server. Tests run exactly this.

use std::net::TcpListener;

use actix_web::dev::Server;
use actix_web::{web, App, HttpServer};

use crate::artifacts::ArtifactStore;
use crate::config::Settings;
use crate::routes;
use crate::store::{self, Backend, Pool};

/// Shared by every request.
pub struct AppState {
    pub pool: Pool,
    /// For searches: a pool of reading connections on SQLite files, `pool` otherwise.
    pub reader: Pool,
    /// Where runs searches read (see [`store::Held`]).
    pub runs_reader: store::Held,
    pub backend: Backend,
    pub artifacts: ArtifactStore,
    /// The default artifact root when it is a local folder (`file://…`): the server's own, so
    /// it reads and writes there as `mlflow server` does (`None` otherwise).
    pub local_root: Option<(String, ArtifactStore)>,
    pub settings: Settings,
}

impl AppState {
    /// The store holding an artifact URI's files and the path in it: the proxy's store for
    /// `mlflow-artifacts:` (and the proxy's own URL), the local default root for `file://` URIs
    /// inside it. Anything else is the client's to read (400).
    pub fn store_for(&self, uri: &str) -> crate::error::Result<(&ArtifactStore, String)> {
        if let Some((root, store)) = &self.local_root {
            if let Some(rest) = uri.strip_prefix(root.as_str()) {
                if rest.is_empty() || rest.starts_with('/') {
                    let rel = crate::artifacts::check_relative(rest.trim_start_matches('/'))?;
                    return Ok((store, rel));
                }
            }
        }
        Ok((&self.artifacts, crate::artifacts::uri_to_relative(uri)?))
    }
}

pub struct Application {
    port: u16,
    server: Server,
}

impl Application {
    /// Connects to the database (applying migrations), opens the artifact root and binds.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let url = settings.database_url();
        let (pool, backend) = store::connect(&url)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open the database: {e:#}"))?;
        let reader = store::reader(&url, backend, &pool)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open the database for reading: {e:#}"))?;
        let runs_reader = store::Held::open(&url, backend, &pool)
            .await
            .map_err(|e| anyhow::anyhow!("cannot open the database for reading: {e:#}"))?;
        Application::with_pool(settings, pool, reader, runs_reader, backend).await
    }

    pub async fn with_pool(
        settings: Settings,
        pool: Pool,
        reader: Pool,
        runs_reader: store::Held,
        backend: Backend,
    ) -> anyhow::Result<Application> {
        let mut artifacts = ArtifactStore::new(&settings.artifact_root()).map_err(|e| {
            anyhow::anyhow!(
                "cannot open the artifact root {}: {e}",
                settings.artifact_root().display()
            )
        })?;
        if let Some(jobs) = &settings.jobs_root {
            artifacts = artifacts.excluding(jobs)?;
        }
        let local_root = match settings.experiment_artifact_root().strip_prefix("file://") {
            Some(path) if path.starts_with('/') => Some((
                format!("file://{path}"),
                ArtifactStore::new(std::path::Path::new(path)).map_err(|e| {
                    anyhow::anyhow!("cannot open the default artifact root {path}: {e}")
                })?,
            )),
            _ => None,
        };
        crate::store::experiments::ensure_default(&pool, &settings.experiment_artifact_root())
            .await
            .map_err(|e| anyhow::anyhow!("cannot create the Default experiment: {e:#}"))?;
        let listener = TcpListener::bind((settings.host.as_str(), settings.port)).map_err(|e| {
            anyhow::anyhow!("cannot listen on {}:{}: {e}", settings.host, settings.port)
        })?;
        let port = listener.local_addr()?.port();
        let auth = web::Data::new(crate::auth::Auth::load(&crate::auth::AuthFiles {
            users: settings.auth_users_file.as_deref(),
            tokens: settings.auth_tokens_file.as_deref(),
            permissions: settings.auth_permissions_file.as_deref(),
            default_permission: Some(settings.auth_default_permission),
        })?);
        if auth.is_some() {
            tracing::info!("authentication is on");
        }
        let origins = web_guard::list(&settings.cors_allowed_origins);
        let guard = web::Data::new(
            web_guard::Guard::new(
                web_guard::list(&settings.allowed_hosts),
                &settings.host,
                origins.clone(),
                crate::border::rejected,
            )
            .any_host(&["/health", "/metrics"])
            .json_only(&[
                "/api/2.0/mlflow/",
                "/ajax-api/2.0/mlflow/",
                "/api/3.0/mlflow/",
            ])
            .raw_body(&[
                "/api/2.0/mlflow/upload-artifact",
                "/ajax-api/2.0/mlflow/upload-artifact",
            ]),
        );
        tracing::info!(hosts = guard.hosts().join(","), "allowed hosts");
        let max_json = settings.max_json_bytes;
        let shutdown = settings.shutdown_timeout;
        let state = web::Data::new(AppState {
            pool,
            reader,
            runs_reader,
            backend,
            artifacts,
            local_root,
            settings,
        });
        let browser = web::Data::new(crate::ui::browser());
        let server = HttpServer::new(move || {
            let mut cors = actix_cors::Cors::default()
                .allowed_methods(["GET", "POST", "PATCH", "PUT", "DELETE"])
                .allowed_headers(["content-type", "authorization"])
                .max_age(600);
            for o in &origins {
                cors = if o == "*" {
                    cors.allow_any_origin()
                } else {
                    cors.allowed_origin(o)
                };
            }
            App::new()
                // As `mlflow server` answers: no response is sniffed into another type (an
                // uploaded artifact is never run as a page).
                .wrap(
                    actix_web::middleware::DefaultHeaders::new()
                        .add((actix_web::http::header::X_CONTENT_TYPE_OPTIONS, "nosniff")),
                )
                .wrap(actix_web::middleware::from_fn(crate::params::refuse_nul))
                .wrap(actix_web::middleware::from_fn(crate::auth::require))
                // Before credentials are looked at: a page in a browser holding cached Basic
                // credentials must not be able to move the champion.
                .wrap(actix_web::middleware::from_fn(web_guard::enforce))
                .wrap(actix_web::middleware::Condition::new(
                    !origins.is_empty(),
                    cors,
                ))
                .wrap(actix_web::middleware::from_fn(telemetry::record_http))
                .wrap(tracing_actix_web::TracingLogger::<
                    telemetry::requests::RequestLog,
                >::new())
                .app_data(state.clone())
                .app_data(auth.clone())
                .app_data(browser.clone())
                .app_data(guard.clone())
                .app_data(web::PayloadConfig::new(max_json))
                .service(web::scope("/api/2.0/mlflow").configure(routes::mlflow_api))
                .service(web::scope("/ajax-api/2.0/mlflow").configure(routes::mlflow_api))
                .service(web::scope("/api/2.0/mlflow-artifacts").configure(routes::artifacts_api))
                .service(
                    web::scope("/ajax-api/2.0/mlflow-artifacts").configure(routes::artifacts_api),
                )
                .route(
                    "/api/3.0/mlflow/server-info",
                    web::get().to(routes::server_info),
                )
                .route("/health", web::get().to(routes::health))
                .route(
                    "/get-artifact",
                    web::get().to(routes::artifacts::get_run_artifact),
                )
                // MLflow's UI (and its tests) also call it with a doubled slash.
                .route(
                    "/model-versions/get-artifact",
                    web::get().to(routes::artifacts::get_model_version_artifact),
                )
                .route(
                    "//model-versions/get-artifact",
                    web::get().to(routes::artifacts::get_model_version_artifact),
                )
                .route("/metrics", web::get().to(routes::metrics))
                .route("/version", web::get().to(routes::version))
                .configure(crate::ui::routes::configure)
                .default_service(web::to(routes::not_found))
        })
        .shutdown_timeout(shutdown)
        .listen(listener)?
        .run();
        Ok(Application { port, server })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// For stopping the server from the outside (tests simulate outages with it).
    pub fn handle(&self) -> actix_web::dev::ServerHandle {
        self.server.handle()
    }

    /// Runs until SIGTERM or SIGINT, then drains in-flight requests.
    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}
