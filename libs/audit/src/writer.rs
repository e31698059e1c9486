//! The API's audit writer: a bounded queue in front of one task that writes records in batches.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use prometheus::{IntCounter, IntGauge};
use telemetry::register;
use tokio::sync::{mpsc, watch};

use crate::store::{encode, Encoded};
use crate::{Mode, Record, Settings, Store};

/// Records written per transaction at most.
const BATCH: usize = 2_000;

/// How long the writer waits for more records after the first ones of a batch arrive.
const LINGER: Duration = Duration::from_millis(5);

/// Why a decision may not be made now (fail-closed).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refused {
    /// The store is unreachable or the queue is full: no decision without a record.
    Unavailable,
}

/// The audit log as the API sees it.
pub struct Auditor {
    /// Records encoded on the caller's thread (`store::encode`): one allocation each.
    tx: mpsc::Sender<Vec<u8>>,
    mode: Mode,
    /// The last write or ping succeeded.
    healthy: Arc<AtomicBool>,
    stop: watch::Sender<bool>,
    writer: tokio::sync::Mutex<Option<tokio::task::JoinHandle<()>>>,
    /// The store, once reached (for reads, erasure and the retention sweep).
    store: Arc<OnceLock<Store>>,
}

/// Records written to the store.
pub fn written() -> &'static IntCounter {
    static M: OnceLock<IntCounter> = OnceLock::new();
    M.get_or_init(|| {
        register(
            IntCounter::new("audit_records_total", "Decision records written").expect("metric"),
        )
    })
}

/// Records lost (fail-open with the store down or the queue full, or a shutdown that could not
/// reach the store).
pub fn dropped() -> &'static IntCounter {
    static M: OnceLock<IntCounter> = OnceLock::new();
    M.get_or_init(|| {
        register(
            IntCounter::new(
                "audit_dropped_total",
                "Decision records that were not written",
            )
            .expect("metric"),
        )
    })
}

/// Decisions refused because they could not be recorded (fail-closed).
pub fn refused() -> &'static IntCounter {
    static M: OnceLock<IntCounter> = OnceLock::new();
    M.get_or_init(|| {
        register(
            IntCounter::new(
                "audit_refused_total",
                "Decisions refused (503) because they could not be recorded",
            )
            .expect("metric"),
        )
    })
}

fn write_failures() -> &'static IntCounter {
    static M: OnceLock<IntCounter> = OnceLock::new();
    M.get_or_init(|| {
        register(
            IntCounter::new(
                "audit_write_failures_total",
                "Failed writes to the audit store",
            )
            .expect("metric"),
        )
    })
}

fn queued() -> &'static IntGauge {
    static M: OnceLock<IntGauge> = OnceLock::new();
    M.get_or_init(|| {
        register(
            IntGauge::new(
                "audit_queue_depth",
                "Decision records waiting to be written",
            )
            .expect("metric"),
        )
    })
}

impl Auditor {
    /// Starts the writer. It connects in the background (retrying), so a store that is down at
    /// start makes the service unready (fail-closed) instead of failing to start.
    pub fn start(settings: &Settings, url: String) -> Arc<Auditor> {
        let (tx, rx) = mpsc::channel(settings.queue.max(1));
        let (stop, stopped) = watch::channel(false);
        let healthy = Arc::new(AtomicBool::new(false));
        let store = Arc::new(OnceLock::new());
        let writer = tokio::spawn(write_loop(url, rx, stopped, healthy.clone(), store.clone()));
        Arc::new(Auditor {
            tx,
            mode: settings.mode,
            healthy,
            stop,
            writer: tokio::sync::Mutex::new(Some(writer)),
            store,
        })
    }

    /// The store, once the writer has reached it.
    pub fn store(&self) -> Option<Store> {
        self.store.get().cloned()
    }

    pub fn mode(&self) -> Mode {
        self.mode
    }

    /// Whether decisions can be recorded now: the store answered the last write or ping. In
    /// fail-open mode the service answers anyway.
    pub fn healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Fail-closed: may a decision be made? (Checked before scoring, so a refused request costs
    /// nothing.)
    pub fn admit(&self) -> Result<(), Refused> {
        if self.mode == Mode::FailClosed && (!self.healthy() || self.tx.capacity() == 0) {
            refused().inc();
            return Err(Refused::Unavailable);
        }
        Ok(())
    }

    /// Queues records. Fail-closed: refused when the queue is full (the caller answers 503);
    /// fail-open: dropped and counted.
    pub fn record(&self, records: impl IntoIterator<Item = Record>) -> Result<(), Refused> {
        for r in records {
            self.queue(encode(&r))?;
        }
        Ok(())
    }

    /// As [`Auditor::record`], for a record encoded already (one the shadow finished).
    pub fn record_encoded(&self, record: Encoded) -> Result<(), Refused> {
        self.queue(record.0)
    }

    fn queue(&self, row: Vec<u8>) -> Result<(), Refused> {
        if self.tx.try_send(row).is_err() {
            if self.mode == Mode::FailClosed {
                refused().inc();
                return Err(Refused::Unavailable);
            }
            dropped().inc();
        }
        Ok(())
    }

    /// Queues a record, waiting for room rather than refusing (the shadow model's records: they
    /// are completed after the answer, and the decision was admitted before it was made).
    pub async fn record_when_room(&self, record: Record) {
        self.record_encoded_when_room(Encoded(encode(&record)))
            .await;
    }

    /// As [`Auditor::record_when_room`], for a record encoded already.
    pub async fn record_encoded_when_room(&self, record: Encoded) {
        if self.tx.send(record.0).await.is_err() {
            dropped().inc();
        }
    }

    /// Drains the queue into the store and stops the writer (at shutdown, after the server has
    /// stopped taking requests). Records that cannot be written within `deadline` are counted
    /// as dropped and logged by number (never by content).
    pub async fn shutdown(&self, deadline: Duration) {
        let _ = self.stop.send(true);
        let Some(writer) = self.writer.lock().await.take() else {
            return;
        };
        if tokio::time::timeout(deadline, writer).await.is_err() {
            give_up(self.tx.max_capacity() - self.tx.capacity());
        }
    }
}

/// Counts and logs (by number only) records that cannot be written at shutdown.
fn give_up(left: usize) {
    if left > 0 {
        dropped().inc_by(left as u64);
        tracing::error!(
            records = left,
            "the audit store was unreachable at shutdown; records were not written"
        );
    }
}

async fn connect(url: &str, healthy: &AtomicBool) -> Store {
    let mut backoff = Duration::from_millis(200);
    loop {
        match Store::connect(url).await {
            Ok(store) => {
                healthy.store(true, Ordering::Relaxed);
                return store;
            }
            Err(e) => {
                tracing::warn!(error = %e, "cannot reach the audit store; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
            }
        }
    }
}

/// Writes queued records in batches until stopped and drained. A failed batch is retried (with
/// backoff) until it is written: records in the queue are never given up while running.
async fn write_loop(
    url: String,
    mut rx: mpsc::Receiver<Vec<u8>>,
    mut stopped: watch::Receiver<bool>,
    healthy: Arc<AtomicBool>,
    shared: Arc<OnceLock<Store>>,
) {
    let store = tokio::select! {
        store = connect(&url, &healthy) => store,
        () = async { drop(stopped.wait_for(|s| *s).await); } => {
            // Stopped before the store was ever reached: one last try for what is queued.
            match tokio::time::timeout(Duration::from_secs(5), Store::connect(&url)).await {
                Ok(Ok(store)) => store,
                _ => {
                    give_up(rx.len());
                    return;
                }
            }
        }
    };
    let _ = shared.set(store.clone());
    let mut batch = Vec::with_capacity(BATCH);
    // The `COPY`'s buffer, kept from batch to batch.
    let mut buf = Vec::new();
    let mut ping = tokio::time::interval(Duration::from_secs(5));
    loop {
        let stopping = *stopped.borrow();
        if stopping {
            // Draining: take what is queued without waiting; end when nothing is left.
            while batch.len() < BATCH {
                match rx.try_recv() {
                    Ok(r) => batch.push(r),
                    Err(_) => break,
                }
            }
            if batch.is_empty() {
                return;
            }
        } else {
            tokio::select! {
                n = rx.recv_many(&mut batch, BATCH) => {
                    if n == 0 {
                        return;
                    }
                    // A busy service: gather for a moment so that it writes a few large
                    // batches instead of many small ones (a commit each), and its requests do
                    // not wake this task one by one while it sleeps.
                    if n < BATCH / 4 {
                        tokio::time::sleep(LINGER).await;
                        while batch.len() < BATCH {
                            match rx.try_recv() {
                                Ok(r) => batch.push(r),
                                Err(_) => break,
                            }
                        }
                    }
                }
                _ = ping.tick() => {
                    let ok = store.ping().await.is_ok();
                    if !ok {
                        write_failures().inc();
                    }
                    healthy.store(ok, Ordering::Relaxed);
                    continue;
                }
                _ = stopped.changed() => continue,
            }
        }
        queued().set((rx.len() + batch.len()) as i64);
        let mut backoff = Duration::from_millis(100);
        loop {
            match store.insert_encoded(&batch, &mut buf).await {
                Ok(_) => {
                    written().inc_by(batch.len() as u64);
                    healthy.store(true, Ordering::Relaxed);
                    break;
                }
                Err(e) => {
                    write_failures().inc();
                    healthy.store(false, Ordering::Relaxed);
                    tracing::warn!(error = %e, records = batch.len(), "cannot write to the audit store; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(5));
                }
            }
        }
        batch.clear();
        queued().set(rx.len() as i64);
    }
}

/// Deletes records older than `days` days: once the store is reached, then hourly.
pub async fn sweep_forever(auditor: Arc<Auditor>, days: u64) {
    let store = loop {
        match auditor.store() {
            Some(store) => break store,
            None => tokio::time::sleep(Duration::from_millis(200)).await,
        }
    };
    let mut every = tokio::time::interval(Duration::from_secs(3600));
    loop {
        every.tick().await;
        let days_ms = i64::try_from(days.saturating_mul(86_400_000)).unwrap_or(i64::MAX);
        match store.sweep(crate::now_ms().saturating_sub(days_ms)).await {
            Ok(0) => {}
            Ok(n) => tracing::info!(
                records = n,
                days,
                "audit records past the retention deleted"
            ),
            Err(e) => tracing::warn!(error = %e, "cannot sweep the audit store"),
        }
    }
}
