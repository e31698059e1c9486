//! Scoring metrics, in the process-wide registry from `telemetry`.

use std::sync::OnceLock;

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts};

fn register<T: prometheus::core::Collector + Clone + 'static>(c: T) -> T {
    let _ = telemetry::registry().register(Box::new(c.clone()));
    c
}

pub fn predictions() -> &'static IntCounterVec {
    static M: OnceLock<IntCounterVec> = OnceLock::new();
    M.get_or_init(|| {
        register(
            IntCounterVec::new(
                Opts::new("predictions_total", "Scored applications by decision"),
                &["decision"],
            )
            .expect("metric"),
        )
    })
}

pub fn probabilities() -> &'static Histogram {
    static M: OnceLock<Histogram> = OnceLock::new();
    M.get_or_init(|| {
        let buckets = (1..=20).map(|i| f64::from(i) / 20.0).collect();
        register(
            Histogram::with_opts(
                HistogramOpts::new(
                    "predicted_default_probability",
                    "Served probabilities of default",
                )
                .buckets(buckets),
            )
            .expect("metric"),
        )
    })
}

pub fn model_reloads() -> &'static IntCounter {
    static M: OnceLock<IntCounter> = OnceLock::new();
    M.get_or_init(|| {
        register(IntCounter::new("model_reloads_total", "Models swapped in").expect("metric"))
    })
}

pub fn model_load_failures() -> &'static IntCounter {
    static M: OnceLock<IntCounter> = OnceLock::new();
    M.get_or_init(|| {
        register(
            IntCounter::new(
                "model_load_failures_total",
                "Model checks or loads that failed",
            )
            .expect("metric"),
        )
    })
}

fn serving() -> &'static IntGaugeVec {
    static M: OnceLock<IntGaugeVec> = OnceLock::new();
    M.get_or_init(|| {
        register(
            IntGaugeVec::new(
                Opts::new("serving_model_info", "1 for the model version serving now"),
                &["name", "version"],
            )
            .expect("metric"),
        )
    })
}

pub fn set_serving_version(name: &str, version: &str) {
    serving().reset();
    serving().with_label_values(&[name, version]).set(1);
}

/// Counts a served prediction.
pub fn observe(decision: model::Decision, p: f64) {
    predictions().with_label_values(&[decision.as_str()]).inc();
    probabilities().observe(p);
}
