//! The worker process: health and metrics server, then the queue consumer until SIGTERM/SIGINT.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use apalis::prelude::*;

use crate::config::Settings;
use crate::{metrics, WorkerState};

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

pub async fn run(settings: Settings) -> anyhow::Result<()> {
    let active_list = apalis_redis::Config::default()
        .queue(&settings.queue)
        .active_jobs_list();
    let health = web::Data::new(Health {
        ready: AtomicBool::new(false),
        redis_url: settings.redis_url.clone(),
        active_list,
    });
    let h = health.clone();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(h.clone())
            .route("/healthz", web::get().to(healthz))
            .route("/readyz", web::get().to(readyz))
            .route("/metrics", web::get().to(metrics_handler))
    })
    .workers(1)
    .disable_signals()
    .bind((settings.host.as_str(), settings.port))?
    .run();
    let server_handle = server.handle();
    tokio::spawn(server);

    // SIGTERM/SIGINT flips this once; every wait below watches it.
    let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
    tokio::spawn(async move {
        shutdown_signal().await;
        tracing::info!("stopping: no new chunks; finishing the ones in hand");
        let _ = stop_tx.send(true);
    });
    let stopping = |mut rx: tokio::sync::watch::Receiver<bool>| async move {
        let _ = rx.wait_for(|v| *v).await;
    };

    // Start order does not matter, and Redis may go away later: (re)connect with backoff,
    // unready meanwhile. The job store reconnects by itself; the apalis consumer is rebuilt.
    let mut state: Option<Arc<WorkerState>> = None;
    let grace = Duration::from_secs(settings.shutdown_timeout);
    let mut backoff = Duration::from_millis(250);
    loop {
        let attempt = async {
            let store = match &state {
                Some(s) => s.store.clone(),
                None => {
                    jobs::Store::redis(
                        &settings.redis_url,
                        &settings.key_prefix,
                        Duration::from_secs(settings.retention_seconds),
                    )
                    .await?
                }
            };
            let queue = crate::queue_with(
                &settings.redis_url,
                &settings.queue,
                Duration::from_secs(settings.heartbeat_seconds.max(1)),
            )
            .await?;
            let train_queue = crate::queue_with::<jobs::TrainModel>(
                &settings.redis_url,
                &settings.train_queue,
                Duration::from_secs(settings.heartbeat_seconds.max(1)),
            )
            .await?;
            anyhow::Ok((store, queue, train_queue))
        };
        let (store, queue, train_queue) = tokio::select! {
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
                let registry = mlflow_client::Client::from_env(&settings.tracking_uri).ok();
                let mut state = WorkerState::new(
                    store,
                    jobs::Layout::new(&settings.jobs_root),
                    registry,
                    settings.model_cache_dir.clone(),
                );
                state.tracking_uri = Some(settings.tracking_uri.clone());
                Arc::new(state)
            })
            .clone();
        health.ready.store(true, Ordering::Relaxed);
        tracing::info!(queue = %settings.queue, concurrency = settings.concurrency, "worker ready");
        let name = format!(
            "worker-{}-{}",
            std::process::id(),
            uuid::Uuid::new_v4().simple()
        );
        // An idle worker looks for new chunks this often (else only at its heartbeat).
        let poll = Duration::from_millis(settings.poll_ms.max(10));
        let worker = WorkerBuilder::new(name.clone())
            .backend(queue.poll_with_interval(poll))
            .concurrency(settings.concurrency.max(1))
            .data(state.clone())
            .build(crate::handle);
        // Training uses every core; one at a time per worker.
        let trainer = WorkerBuilder::new(format!("{name}-train"))
            .backend(train_queue.poll_with_interval(poll))
            .concurrency(1)
            .data(state)
            .build(crate::handle_training);
        let signal = || {
            let rx = stop_rx.clone();
            async move {
                stopping(rx).await;
                Ok::<(), std::io::Error>(())
            }
        };
        let both = async {
            let (a, b) = tokio::join!(worker.run_until(signal()), trainer.run_until(signal()));
            a.and(b)
        };
        tokio::select! {
            r = both => {
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
    server_handle.stop(true).await;
    Ok(())
}
