//! Champion/challenger: a second model scores requests in the shadow, after the answer, and
//! never changes it. Its agreement with the served decisions is in `/metrics`, and its
//! probability and decision in the request's audit record.
//!
//! The shadow scores on its own thread from a bounded lock-free queue: the requests' threads
//! only queue the work. The thread runs at the lowest CPU priority (nice 19), and scores only
//! while fewer than `cores - 1` requests are in hand (none on two cores), so that it takes CPU
//! time the requests leave. A thread at that priority may wait for the CPU, so it must hold
//! nothing a request waits for: it takes no lock, frees nothing another thread allocated, and
//! only reads and scores. Its work goes back through a second lock-free queue to a task on the
//! async runtime, which counts the metrics, completes the audit records and frees the memory.
//! (`SCHED_IDLE` instead of nice 19 stalled requests for up to a second: a thread the kernel
//! never schedules while the cores are busy can hold up the process, BENCHMARKS.md.)
//!
//! When the shadow falls behind (the queue is full), a request is not shadow-scored: it is
//! counted in `shadow_skipped_total` and its audit record says so. At shutdown the queue is
//! drained before the audit log is.

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
    /// Scored work on its way back from the thread (see the module's documentation).
    done: Arc<ArrayQueue<Work>>,
    /// Set at shutdown: the thread ends once the queue is empty.
    stopping: Arc<AtomicBool>,
    /// Scoring requests in hand (see [`Shadow::busy`]).
    busy: Arc<AtomicUsize>,
    thread: std::thread::Thread,
    /// The thread, and the task that finishes its work.
    joined: Mutex<Option<(std::thread::JoinHandle<()>, tokio::task::JoinHandle<()>)>>,
}

/// A result of the shadow model: probability and decision, or `None` where its spec refused the
/// application.
type Scored = Option<(f64, Decision)>;

/// A request and, once the thread has scored it, the shadow's results.
enum Work {
    One(Box<Task>, Scored),
    Batch(Box<BatchTask>, Vec<Scored>),
}

impl Shadow {
    /// Starts the shadow thread, and the task that finishes its work (on the current async
    /// runtime).
    pub fn start(models: Arc<Models>) -> anyhow::Result<Shadow> {
        let queue = Arc::new(ArrayQueue::new(QUEUE));
        let done = Arc::new(ArrayQueue::new(QUEUE));
        let stopping = Arc::new(AtomicBool::new(false));
        let ended = Arc::new(AtomicBool::new(false));
        let busy = Arc::new(AtomicUsize::new(0));
        // The shadow waits while this many requests are in hand: one core for itself, the
        // others for the requests.
        let limit = std::thread::available_parallelism()
            .map_or(1, |n| n.get().saturating_sub(1))
            .max(1);
        let (q, d, stop, end, b) = (
            queue.clone(),
            done.clone(),
            stopping.clone(),
            ended.clone(),
            busy.clone(),
        );
        let thread = std::thread::Builder::new()
            .name("shadow".into())
            .spawn(move || {
                use thread_priority::{
                    set_thread_priority_and_policy, thread_native_id, NormalThreadSchedulePolicy,
                    ThreadPriority, ThreadSchedulePolicy,
                };
                // Nice 19 (the lowest priority of the normal policy).
                if let Err(e) = set_thread_priority_and_policy(
                    thread_native_id(),
                    ThreadPriority::Min,
                    ThreadSchedulePolicy::Normal(NormalThreadSchedulePolicy::Other),
                ) {
                    tracing::warn!(error = ?e, "the shadow thread keeps the normal CPU priority");
                }
                loop {
                    while let Some(mut work) = q.pop() {
                        // Only on CPU time the requests leave: while they are many, wait (the
                        // queue takes the backlog; when it is full, requests are skipped).
                        while b.load(Ordering::Relaxed) >= limit && !stop.load(Ordering::Relaxed) {
                            std::thread::sleep(Duration::from_micros(200));
                        }
                        match &mut work {
                            Work::One(t, out) => *out = score(t),
                            Work::Batch(t, out) => *out = score_batch(t),
                        }
                        // Handed back, never dropped here; when the way back is full, wait
                        // for the finishing task.
                        while let Err(back) = d.push(work) {
                            work = back;
                            std::thread::sleep(Duration::from_millis(1));
                        }
                    }
                    if stop.load(Ordering::Acquire) && q.is_empty() {
                        end.store(true, Ordering::Release);
                        break;
                    }
                    // Not woken per request (see `queue`); unparked at shutdown.
                    std::thread::park_timeout(Duration::from_millis(1));
                }
            })?;
        let d = done.clone();
        let finisher = tokio::spawn(async move {
            let mut every = tokio::time::interval(Duration::from_millis(5));
            every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                every.tick().await;
                while let Some(work) = d.pop() {
                    finish(work).await;
                }
                // The thread has ended (shutdown) and everything it handed back is finished.
                if ended.load(Ordering::Acquire) && d.is_empty() {
                    break;
                }
            }
        });
        Ok(Shadow {
            models,
            queue,
            done,
            stopping,
            busy,
            thread: thread.thread().clone(),
            joined: Mutex::new(Some((thread, finisher))),
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
    pub fn submit(&self, t: Task) -> Option<audit::Encoded> {
        match self.queue.push(Work::One(Box::new(t), None)) {
            Ok(()) => None,
            Err(Work::One(t, _)) => {
                metrics::shadow::skipped(&t.champion.version, &t.shadow.version, 1);
                let t = *t;
                t.record.map(|r| r.finish(&skipped_note(&t.shadow)))
            }
            Err(Work::Batch(..)) => unreachable!("the work given back is the work sent"),
        }
    }

    /// As [`Shadow::submit`], for a batch: its records come back when the shadow is behind.
    pub fn submit_batch(&self, t: BatchTask) -> Vec<audit::Record> {
        match self.queue.push(Work::Batch(Box::new(t), Vec::new())) {
            Ok(()) => Vec::new(),
            Err(Work::Batch(t, _)) => {
                let n = t.served.len() as u64;
                metrics::shadow::skipped(&t.champion.version, &t.shadow.version, n);
                let note = skipped_note(&t.shadow).to_string();
                let mut records = t.records;
                for r in &mut records {
                    r.shadow = Some(note.clone());
                }
                records
            }
            Err(Work::One(..)) => unreachable!("the work given back is the work sent"),
        }
    }

    /// Scores what is queued, ends the thread and finishes its work (at shutdown, once the
    /// server takes no more requests, before the audit log is drained). Gives up after
    /// `deadline`.
    pub async fn drain(&self, deadline: Duration) {
        let Some((thread, finisher)) = self.joined.lock().ok().and_then(|mut t| t.take()) else {
            return;
        };
        self.stopping.store(true, Ordering::Release);
        self.thread.unpark();
        let finished = async move {
            let _ = tokio::task::spawn_blocking(move || thread.join()).await;
            let _ = finisher.await;
        };
        if tokio::time::timeout(deadline, finished).await.is_err() {
            tracing::error!(
                left = self.queue.len() + self.done.len(),
                "the shadow model did not finish its queue at shutdown; its records are lost"
            );
        }
    }
}

impl Drop for Shadow {
    /// An application dropped without [`Shadow::drain`] (tests that build one in-process):
    /// the thread scores what is queued and ends instead of polling for ever, and so does the
    /// task that finishes its work.
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

/// The note the records of requests the shadow could not take carry.
fn skipped_note(shadow: &ServingModel) -> serde_json::Value {
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
    /// The shadow's row, made on the request's thread from the champion's (`Scorer::row_from`)
    /// when their specs agree; otherwise the shadow parses `body` with its own spec.
    pub encoded: Option<Vec<f32>>,
    /// The request body (shared, not copied).
    pub body: actix_web::web::Bytes,
    pub champion: Arc<ServingModel>,
    pub shadow: Arc<ServingModel>,
    /// What was served.
    pub probability: f64,
    pub decision: Decision,
    /// The served decision's audit record, encoded but for the shadow's note, written once
    /// that is in it.
    pub record: Option<audit::Unfinished>,
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
fn note(shadow: &ServingModel, scored: Option<(f64, Decision)>) -> serde_json::Value {
    let model = model_ref(shadow);
    match scored {
        Some((p, d)) => json!({"model": model, "probability": p, "decision": d.as_str()}),
        None => {
            json!({"model": model, "error": "the shadow model's spec refused the application"})
        }
    }
}

/// Scores the request with the shadow model (on the shadow's thread: reads and its own
/// allocations only).
fn score(t: &Task) -> Scored {
    if let Some(row) = &t.encoded {
        return Some(t.shadow.scorer.decide_encoded(row));
    }
    let spec = &t.shadow.scorer.bundle().spec;
    let scored = match applications::read_one(&t.body, spec) {
        Ok(app) if app != Application::NotObject => app
            .raws(spec)
            .ok()
            .and_then(|raws| t.shadow.scorer.score(&raws, false).ok()),
        _ => None,
    };
    scored.map(|s| (s.default_probability, s.decision))
}

/// Counts a scored request's agreement and writes its completed audit records (on the async
/// runtime, where the work is also freed).
async fn finish(work: Work) {
    match work {
        Work::One(t, scored) => {
            let t = *t;
            observe(&t.champion, &t.shadow, (t.probability, t.decision), scored);
            if let (Some(record), Some(a)) = (t.record, t.audit) {
                a.record_encoded_when_room(record.finish(&note(&t.shadow, scored)))
                    .await;
            }
        }
        Work::Batch(t, scored) => {
            let BatchTask {
                champion,
                shadow,
                served,
                mut records,
                audit,
                ..
            } = *t;
            for (index, p, d) in served {
                let one = scored.get(index).copied().flatten();
                observe(&champion, &shadow, (p, d), one);
                // Records are in index order.
                if let Ok(k) = records.binary_search_by_key(&(index as i64), |rec| rec.row_index) {
                    records[k].shadow = Some(note(&shadow, one).to_string());
                }
            }
            if let Some(a) = audit {
                for rec in records {
                    a.record_when_room(rec).await;
                }
            }
        }
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

/// Scores a batch with the shadow model as one block (as [`score`]): the result of each
/// application, by index.
fn score_batch(t: &BatchTask) -> Vec<Scored> {
    let spec = &t.shadow.scorer.bundle().spec;
    match applications::read_batch(&t.body, spec, t.max) {
        Ok(apps) => {
            let raws: Vec<_> = apps.iter().map(|a| a.raws(spec)).collect();
            let mut block = model::BlockScorer::new(&t.shadow.scorer, model::ReasonPolicy::None);
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
                .collect()
        }
        Err(_) => Vec::new(),
    }
}
