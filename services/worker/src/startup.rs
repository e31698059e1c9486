//! The worker process: a health and metrics server, and the job consumers (the handlers of
//! `job-handlers` on the Redis queues) until told to stop. `Application::build` binds the server
//! (port 0 picks a free one; `port()` says which), `run_until_stopped` runs until SIGTERM/SIGINT.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};

use job_handlers::{metrics, RedisQueues, WorkerState};

use crate::config::Settings;

struct Health {
    ready: AtomicBool,
    redis_url: String,
    active_list: String,
}

async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(serde_json::json!({"status": "ok"}))
}

async fn readyz(h: web::Data<Health>) -> HttpResponse {
    if h.ready.load(Ordering::Relaxed) {
        HttpResponse::Ok().json(serde_json::json!({"status": "ready"}))
    } else {
        HttpResponse::ServiceUnavailable()
            .json(serde_json::json!({"status": "starting", "detail": "waiting for Redis"}))
    }
}

async fn metrics_handler(h: web::Data<Health>) -> HttpResponse {
    // Queue depth is read at scrape time; a Redis outage leaves the last value.
    if let Ok(client) = redis::Client::open(h.redis_url.as_str()) {
        if let Ok(Ok(mut c)) = tokio::time::timeout(
            Duration::from_secs(1),
            client.get_multiplexed_async_connection(),
        )
        .await
        {
            if let Ok(n) = redis::cmd("LLEN")
                .arg(&h.active_list)
                .query_async::<i64>(&mut c)
                .await
            {
                metrics::queue_depth().set(n);
            }
        }
    }
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(telemetry::render_metrics())
}

/// SIGTERM (Kubernetes) or SIGINT (Ctrl-C).
async fn shutdown_signal() {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .expect("SIGTERM handler");
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
}

pub struct Application {
    settings: Settings,
    health: web::Data<Health>,
    server: actix_web::dev::Server,
    port: u16,
}

impl Application {
    /// Binds the health and metrics server; nothing is consumed until it runs.
    pub async fn build(settings: Settings) -> anyhow::Result<Application> {
        let active_list = apalis_redis::Config::default()
            .queue(&settings.jobs.job_queue)
            .active_jobs_list();
        let health = web::Data::new(Health {
            ready: AtomicBool::new(false),
            redis_url: settings.redis_url.clone(),
            active_list,
        });
        let h = health.clone();
        let listener = std::net::TcpListener::bind((settings.host.as_str(), settings.port))?;
        let port = listener.local_addr()?.port();
        let server = HttpServer::new(move || {
            App::new()
                .app_data(h.clone())
                .route("/healthz", web::get().to(healthz))
                .route("/readyz", web::get().to(readyz))
                .route("/metrics", web::get().to(metrics_handler))
        })
        .workers(1)
        .disable_signals()
        .listen(listener)?
        .run();
        Ok(Application {
            settings,
            health,
            server,
            port,
        })
    }

    /// The health server's port.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Runs until SIGTERM (Kubernetes) or SIGINT (Ctrl-C).
    pub async fn run_until_stopped(self) -> anyhow::Result<()> {
        self.run_until(shutdown_signal()).await
    }

    /// Runs until `stop` resolves: finishes the chunks in hand (within the grace period) and
    /// stops the health server.
    pub async fn run_until(
        self,
        stop: impl std::future::Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let Application {
            settings,
            health,
            server,
            ..
        } = self;
        let server_handle = server.handle();
        tokio::spawn(server);
        // `stop` flips this once; every wait below watches it.
        let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        tokio::spawn(async move {
            stop.await;
            tracing::info!("stopping: no new chunks; finishing the ones in hand");
            let _ = stop_tx.send(true);
        });
        consume(&settings, &health, stop_rx).await;
        server_handle.stop(true).await;
        Ok(())
    }
}

async fn stopping(mut rx: tokio::sync::watch::Receiver<bool>) {
    let _ = rx.wait_for(|v| *v).await;
}

/// Start order does not matter, and Redis may go away later: (re)connect with backoff, unready
/// meanwhile. The job store reconnects by itself; the apalis consumers are rebuilt.
async fn consume(
    settings: &Settings,
    health: &Health,
    stop_rx: tokio::sync::watch::Receiver<bool>,
) {
    let mut state: Option<Arc<WorkerState>> = None;
    let grace = Duration::from_secs(settings.shutdown_timeout);
    let heartbeat = Duration::from_secs(settings.heartbeat_seconds.max(1));
    let mut backoff = Duration::from_millis(250);
    loop {
        let attempt = async {
            let store = match &state {
                Some(s) => s.store.clone(),
                None => {
                    jobs::Store::redis(
                        &settings.redis_url,
                        &settings.jobs.job_key_prefix,
                        Duration::from_secs(settings.jobs.job_retention_seconds),
                    )
                    .await?
                }
            };
            let chunks =
                jobs::queue::queue_with(&settings.redis_url, &settings.jobs.job_queue, heartbeat)
                    .await?;
            let training =
                jobs::queue::queue_with(&settings.redis_url, &settings.jobs.train_queue, heartbeat)
                    .await?;
            anyhow::Ok((store, chunks, training))
        };
        let (store, chunks, training) = tokio::select! {
            r = attempt => match r {
                Ok(v) => v,
                Err(e) => {
                    tracing::warn!(error = %e, retry_in_ms = backoff.as_millis() as u64, "Redis not reachable");
                    tokio::select! {
                        () = tokio::time::sleep(backoff) => {}
                        () = stopping(stop_rx.clone()) => break,
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(10));
                    continue;
                }
            },
            () = stopping(stop_rx.clone()) => break,
        };
        let state = state
            .get_or_insert_with(|| {
                let registry = settings.registry.client().ok();
                let mut state = WorkerState::new(
                    store,
                    jobs::Layout::new(&settings.jobs.jobs_root),
                    registry,
                    settings.model_cache_dir.clone(),
                );
                state.tracking_uri = Some(settings.registry.tracking_uri.clone());
                state.audit = job_handlers::JobAudit::new(&settings.audit);
                state.drift_window = settings.drift_window;
                Arc::new(state)
            })
            .clone();
        health.ready.store(true, Ordering::Relaxed);
        tracing::info!(queue = %settings.jobs.job_queue, concurrency = settings.jobs.worker_concurrency, "worker ready");
        let name = format!(
            "worker-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        );
        let vacuum = vacuum_queues(
            chunks.clone(),
            training.clone(),
            Duration::from_secs(settings.vacuum_seconds.max(1)),
            Duration::from_secs(settings.jobs.job_retention_seconds),
        );
        let queues = RedisQueues {
            chunks,
            training,
            poll: Duration::from_millis(settings.poll_ms.max(10)),
        };
        let consumers = job_handlers::run_on_redis(
            name,
            queues,
            settings.jobs.worker_concurrency,
            state,
            stopping(stop_rx.clone()),
        );
        tokio::select! {
            () = vacuum => unreachable!("the vacuum loop never ends"),
            r = consumers => {
                if *stop_rx.borrow() {
                    break;
                }
                health.ready.store(false, Ordering::Relaxed);
                match r {
                    Err(e) => tracing::warn!(error = %e, "lost the queue; reconnecting"),
                    Ok(()) => tracing::warn!("the queue consumer ended; reconnecting"),
                }
                backoff = Duration::from_millis(250);
                tokio::time::sleep(backoff).await;
            }
            () = async { stopping(stop_rx.clone()).await; tokio::time::sleep(grace).await } => {
                tracing::warn!(grace_s = grace.as_secs(), "grace period over; exiting with chunks in hand (they will be re-enqueued)");
                break;
            }
        }
    }
}

/// Every `every`, removes from both queues the tasks that finished more than `retention` ago
/// (apalis keeps them otherwise, and Redis runs `noeviction` with a memory cap). Never ends;
/// a failed sweep is logged and tried again at the next.
async fn vacuum_queues(
    mut chunks: apalis_redis::RedisStorage<jobs::ScoreChunk>,
    mut training: apalis_redis::RedisStorage<jobs::TrainModel>,
    every: Duration,
    retention: Duration,
) {
    loop {
        tokio::time::sleep(every).await;
        let swept = (
            jobs::queue::vacuum(&mut chunks, retention).await,
            jobs::queue::vacuum(&mut training, retention).await,
        );
        match swept {
            (Ok(a), Ok(b)) if a + b > 0 => {
                tracing::info!(tasks = a + b, "removed finished tasks from the queues");
            }
            (Ok(_), Ok(_)) => {}
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(error = %e, "cannot remove finished tasks from the queues");
            }
        }
    }
}
