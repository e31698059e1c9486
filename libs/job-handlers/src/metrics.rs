//! Worker metrics, in the process-wide registry from `telemetry`.

use std::sync::OnceLock;

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGauge, Opts};

use telemetry::register;

pub fn chunks() -> &'static IntCounterVec {
    static M: OnceLock<IntCounterVec> = OnceLock::new();
    M.get_or_init(|| {
        register(
            IntCounterVec::new(
                Opts::new("batch_chunks_total", "Chunks processed by outcome"),
                &["outcome"],
            )
            .expect("metric"),
        )
    })
}

pub fn rows_scored() -> &'static IntCounter {
    static M: OnceLock<IntCounter> = OnceLock::new();
    M.get_or_init(|| {
        register(IntCounter::new("batch_rows_scored_total", "Rows scored").expect("metric"))
    })
}

pub fn rows_rejected() -> &'static IntCounter {
    static M: OnceLock<IntCounter> = OnceLock::new();
    M.get_or_init(|| {
        register(
            IntCounter::new("batch_rows_rejected_total", "Rows rejected by validation")
                .expect("metric"),
        )
    })
}

pub fn chunk_seconds() -> &'static Histogram {
    static M: OnceLock<Histogram> = OnceLock::new();
    M.get_or_init(|| {
        register(
            Histogram::with_opts(
                HistogramOpts::new("batch_chunk_duration_seconds", "Time to score one chunk")
                    .buckets(vec![
                        0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0,
                    ]),
            )
            .expect("metric"),
        )
    })
}

/// Tasks waiting in the queue: the signal for autoscaling workers (e.g. KEDA).
pub fn queue_depth() -> &'static IntGauge {
    static M: OnceLock<IntGauge> = OnceLock::new();
    M.get_or_init(|| {
        register(IntGauge::new("batch_queue_depth", "Chunks waiting in the queue").expect("metric"))
    })
}

pub fn training_jobs() -> &'static IntCounterVec {
    static M: OnceLock<IntCounterVec> = OnceLock::new();
    M.get_or_init(|| {
        register(
            IntCounterVec::new(
                Opts::new("training_jobs_total", "Training jobs by outcome"),
                &["outcome"],
            )
            .expect("metric"),
        )
    })
}

pub fn training_seconds() -> &'static Histogram {
    static M: OnceLock<Histogram> = OnceLock::new();
    M.get_or_init(|| {
        register(
            Histogram::with_opts(
                HistogramOpts::new("training_job_duration_seconds", "Time to train one model")
                    .buckets(vec![1.0, 5.0, 15.0, 60.0, 300.0, 900.0, 3600.0]),
            )
            .expect("metric"),
        )
    })
}
