//! Champion/challenger: a second model scores requests in the shadow, after the answer, and
//! never changes it. Its agreement with the served decisions is in `/metrics`, and its
//! probability and decision in the request's audit record.
//!
//! The shadow scores on its own thread from a bounded lock-free queue: the requests' threads
//! only queue the work, and the shadow scores only while fewer than `cores - 1` requests are
//! in hand (none on two cores), so that it takes CPU time the requests leave. When it falls
//! behind (the queue is full), a request is not shadow-scored: it is counted in
//! `shadow_skipped_total` and its audit record says so. At shutdown the queue is drained before
//! the audit log is.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use crossbeam_queue::ArrayQueue;
use model::Decision;
use serde_json::json;

use crate::applications::{self, Application};
use crate::metrics;
use crate::models::{Models, ServingModel};

/// Requests waiting for the shadow thread; past this, requests are skipped (and counted).
const QUEUE: usize = 4_096;

/// Whether this request is one of the `rate` share the shadow scores: evenly spread (a
/// low-discrepancy sequence), no random numbers needed.
pub fn sampled(rate: f64) -> bool {
    static N: AtomicU64 = AtomicU64::new(0);
    if rate >= 1.0 {
        return true;
    }
    if rate <= 0.0 {
        return false;
    }
    let n = N.fetch_add(1, Ordering::Relaxed);
    (n as f64 * 0.618_033_988_749_894_9).fract() < rate
}

/// The shadow model (hot-swapped like the champion) and the thread that scores with it.
pub struct Shadow {
    /// The shadow model's holder (`MODEL_SHADOW_ALIAS` or `SHADOW_MODEL_URI`).
    pub models: Arc<Models>,
    /// Lock-free: a request never waits for the shadow thread. A push does not wake the
    /// thread (it wakes every millisecond and takes what has come), so that a request costs no
    /// system call.
    queue: Arc<ArrayQueue<Work>>,
    /// Set at shutdown: the thread ends once the queue is empty.
    stopping: Arc<AtomicBool>,
    /// Scoring requests in hand (see [`Shadow::busy`]).
    busy: Arc<AtomicUsize>,
    thread: std::thread::Thread,
    joined: Mutex<Option<std::thread::JoinHandle<()>>>,
}

enum Work {
    One(Box<Task>),
    Batch(Box<BatchTask>),
}

impl Shadow {
    /// Starts the shadow thread.
    pub fn start(models: Arc<Models>) -> anyhow::Result<Shadow> {
        let queue = Arc::new(ArrayQueue::new(QUEUE));
        let stopping = Arc::new(AtomicBool::new(false));
        let busy = Arc::new(AtomicUsize::new(0));
        // The shadow waits while this many requests are in hand: one core for itself, the
        // others for the requests.
        let limit = std::thread::available_parallelism()
            .map_or(1, |n| n.get().saturating_sub(1))
            .max(1);
        let (q, stop, b) = (queue.clone(), stopping.clone(), busy.clone());
        let joined = std::thread::Builder::new()
            .name("shadow".into())
            .spawn(move || {
                loop {
                    while let Some(work) = q.pop() {
                        // Only on CPU time the requests leave: while they are many, wait (the
                        // queue takes the backlog; when it is full, requests are skipped). A
                        // lower OS priority would do this without polling, but a thread starved
                        // of the CPU while it holds an allocator lock stalls every request that
                        // needs the lock (measured: 100 ms to 1 s at the 99th percentile under
                        // nice 19 or SCHED_IDLE, BENCHMARKS.md).
                        while b.load(Ordering::Relaxed) >= limit && !stop.load(Ordering::Relaxed) {
                            std::thread::sleep(Duration::from_micros(200));
                        }
                        match work {
                            Work::One(t) => score(*t),
                            Work::Batch(t) => score_batch(*t),
                        }
                        // A request whose thread is runnable but has not started yet is not
                        // counted as in hand: give it the core now rather than at the end of
                        // this thread's time slice (milliseconds).
                        std::thread::yield_now();
                    }
                    if stop.load(Ordering::Acquire) && q.is_empty() {
                        break;
                    }
                    // Not woken per request (see `queue`); unparked at shutdown.
                    std::thread::park_timeout(Duration::from_millis(1));
                }
            })?;
        Ok(Shadow {
            models,
            queue,
            stopping,
            busy,
            thread: joined.thread().clone(),
            joined: Mutex::new(Some(joined)),
        })
    }

    /// Marks a scoring request in hand until the guard is dropped (the shadow waits while
    /// there are many).
    pub fn busy(&self) -> Busy {
        self.busy.fetch_add(1, Ordering::Relaxed);
        Busy(self.busy.clone())
    }

    /// The shadow model to score this request with, if it is loaded and the request sampled.
    pub fn pick(&self, rate: f64) -> Option<Arc<ServingModel>> {
        if sampled(rate) {
            self.models.current()
        } else {
            None
        }
    }

    /// Queues a request. When the shadow is behind, the request is not shadow-scored: its
    /// record (if any) comes back, marked as skipped, for the caller to write.
    pub fn submit(&self, t: Task) -> Option<audit::Record> {
        match self.queue.push(Work::One(Box::new(t))) {
            Ok(()) => None,
            Err(Work::One(t)) => {
                let note = skipped(&t.champion, &t.shadow, 1);
                t.record.map(|mut r| {
                    r.shadow = Some(note.to_string());
                    r
                })
            }
            Err(Work::Batch(_)) => unreachable!("the work given back is the work sent"),
        }
    }

    /// As [`Shadow::submit`], for a batch: its records come back when the shadow is behind.
    pub fn submit_batch(&self, t: BatchTask) -> Vec<audit::Record> {
        match self.queue.push(Work::Batch(Box::new(t))) {
            Ok(()) => Vec::new(),
            Err(Work::Batch(t)) => {
                let note = skipped(&t.champion, &t.shadow, t.served.len() as u64).to_string();
                let mut records = t.records;
                for r in &mut records {
                    r.shadow = Some(note.clone());
                }
                records
            }
            Err(Work::One(_)) => unreachable!("the work given back is the work sent"),
        }
    }

    /// Scores what is queued and ends the thread (at shutdown, once the server takes no more
    /// requests, before the audit log is drained). Gives up after `deadline`.
    pub async fn drain(&self, deadline: Duration) {
        let Some(joined) = self.joined.lock().ok().and_then(|mut t| t.take()) else {
            return;
        };
        self.stopping.store(true, Ordering::Release);
        self.thread.unpark();
        let done = tokio::task::spawn_blocking(move || joined.join());
        if tokio::time::timeout(deadline, done).await.is_err() {
            tracing::error!(
                left = self.queue.len(),
                "the shadow model did not finish its queue at shutdown; its records are lost"
            );
        }
    }
}

impl Drop for Shadow {
    /// An application dropped without [`Shadow::drain`] (tests that build one in-process):
    /// the thread scores what is queued and ends instead of polling for ever.
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Release);
        self.thread.unpark();
    }
}

/// A scoring request in hand (from [`Shadow::busy`]).
pub struct Busy(Arc<AtomicUsize>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::Relaxed);
    }
}

/// Counts requests the shadow could not take; the note their records carry.
fn skipped(champion: &ServingModel, shadow: &ServingModel, n: u64) -> serde_json::Value {
    metrics::shadow::skipped(&champion.version, &shadow.version, n);
    json!({
        "model": model_ref(shadow),
        "skipped": "the shadow model was behind; this request was not scored by it",
    })
}

fn model_ref(shadow: &ServingModel) -> serde_json::Value {
    json!({
        "name": shadow.name,
        "version": shadow.version,
        "bundle_sha256": shadow.bundle_sha256,
    })
}

/// A request to score in the shadow.
pub struct Task {
    /// The request body (shared, not copied), parsed again with the shadow's own spec.
    pub body: actix_web::web::Bytes,
    pub champion: Arc<ServingModel>,
    pub shadow: Arc<ServingModel>,
    /// What was served.
    pub probability: f64,
    pub decision: Decision,
    /// The served decision's audit record, written once the shadow result is in it.
    pub record: Option<audit::Record>,
    pub audit: Option<Arc<audit::Auditor>>,
}

/// Counts the shadow's result for one application in the metrics.
fn observe(
    champion: &ServingModel,
    shadow: &ServingModel,
    served: (f64, Decision),
    scored: Option<(f64, Decision)>,
) {
    match scored {
        Some((p, d)) => metrics::shadow::observe(
            &champion.version,
            &shadow.version,
            d == served.1,
            (p - served.0).abs(),
        ),
        None => metrics::shadow::failure(&champion.version, &shadow.version),
    }
}

/// The shadow's result for one application, as the audit record keeps it (built only for a
/// record).
fn note(shadow: &ServingModel, scored: Option<(f64, Decision)>) -> String {
    let model = model_ref(shadow);
    match scored {
        Some((p, d)) => json!({"model": model, "probability": p, "decision": d.as_str()}),
        None => {
            json!({"model": model, "error": "the shadow model's spec refused the application"})
        }
    }
    .to_string()
}

/// Scores the request with the shadow model, counts agreement, completes the audit record.
fn score(t: Task) {
    let spec = &t.shadow.scorer.bundle().spec;
    let scored = match applications::read_one(&t.body, spec) {
        Ok(app) if app != Application::NotObject => app
            .raws(spec)
            .ok()
            .and_then(|raws| t.shadow.scorer.score(&raws, false).ok()),
        _ => None,
    };
    let scored = scored.map(|s| (s.default_probability, s.decision));
    observe(&t.champion, &t.shadow, (t.probability, t.decision), scored);
    if let (Some(mut record), Some(a)) = (t.record, t.audit) {
        record.shadow = Some(note(&t.shadow, scored));
        a.record_blocking(record);
    }
}

/// A `/v1/predict/batch` request to score in the shadow.
pub struct BatchTask {
    pub body: actix_web::web::Bytes,
    /// `API_MAX_BATCH`.
    pub max: usize,
    pub champion: Arc<ServingModel>,
    pub shadow: Arc<ServingModel>,
    /// (index, probability, decision) of each application served.
    pub served: Vec<(usize, f64, Decision)>,
    /// Their audit records (`row_index` is the index), written once the shadow's results are in.
    pub records: Vec<audit::Record>,
    pub audit: Option<Arc<audit::Auditor>>,
}

/// Scores a batch with the shadow model as one block, then as [`score`].
fn score_batch(t: BatchTask) {
    let BatchTask {
        body,
        max,
        champion,
        shadow,
        served,
        mut records,
        audit,
    } = t;
    let scored = {
        let spec = &shadow.scorer.bundle().spec;
        match applications::read_batch(&body, spec, max) {
            Ok(apps) => {
                let raws: Vec<_> = apps.iter().map(|a| a.raws(spec)).collect();
                let mut block = model::BlockScorer::new(&shadow.scorer, model::ReasonPolicy::None);
                block.score(raws.len(), |i, out| match &raws[i] {
                    Ok(r) => {
                        out.extend_from_slice(r);
                        Ok(())
                    }
                    Err(e) => Err(features::FeatureError::Invalid(e.clone())),
                });
                (0..raws.len())
                    .map(|i| match block.row(i) {
                        model::batch::Row::Scored {
                            probability,
                            decision,
                            ..
                        } => Some((probability, decision)),
                        model::batch::Row::Rejected(_) => None,
                    })
                    .collect::<Vec<_>>()
            }
            Err(_) => Vec::new(),
        }
    };
    for (index, p, d) in served {
        let one = scored.get(index).copied().flatten();
        observe(&champion, &shadow, (p, d), one);
        // Records are in index order.
        if let Ok(k) = records.binary_search_by_key(&(index as i64), |rec| rec.row_index) {
            records[k].shadow = Some(note(&shadow, one));
        }
    }
    if let Some(a) = audit {
        for rec in records {
            a.record_blocking(rec);
        }
    }
}
