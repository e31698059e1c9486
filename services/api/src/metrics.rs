//! Scoring metrics, in the process-wide registry from `telemetry`.

use std::sync::OnceLock;

use prometheus::{Histogram, HistogramOpts, IntCounter, IntCounterVec, IntGaugeVec, Opts};

use telemetry::register;

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

fn explained_rows() -> &'static Histogram {
    static M: OnceLock<Histogram> = OnceLock::new();
    M.get_or_init(|| {
        register(
            Histogram::with_opts(
                HistogramOpts::new(
                    "explained_together_rows",
                    "Single applications explained in one block (requests that arrived together)",
                )
                .buckets(vec![1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0]),
            )
            .expect("metric"),
        )
    })
}

/// One block of `rows` single applications explained together (`crate::explain`).
pub fn explained_together(rows: usize) {
    explained_rows().observe(rows as f64);
}

/// Shadow scoring: counts, agreement and probability differences, by the two versions.
pub mod shadow {
    use std::sync::OnceLock;

    use prometheus::{GaugeVec, HistogramOpts, HistogramVec, IntCounterVec, Opts};

    use telemetry::register;

    const LABELS: [&str; 2] = ["champion_version", "shadow_version"];

    fn scored() -> &'static IntCounterVec {
        static M: OnceLock<IntCounterVec> = OnceLock::new();
        M.get_or_init(|| {
            register(
                IntCounterVec::new(
                    Opts::new("shadow_scored_total", "Requests scored by the shadow model"),
                    &LABELS,
                )
                .expect("metric"),
            )
        })
    }

    fn agreed() -> &'static IntCounterVec {
        static M: OnceLock<IntCounterVec> = OnceLock::new();
        M.get_or_init(|| {
            register(
                IntCounterVec::new(
                    Opts::new(
                        "shadow_decision_agreements_total",
                        "Shadow decisions equal to the served decision",
                    ),
                    &LABELS,
                )
                .expect("metric"),
            )
        })
    }

    fn ratio() -> &'static GaugeVec {
        static M: OnceLock<GaugeVec> = OnceLock::new();
        M.get_or_init(|| {
            register(
                GaugeVec::new(
                    Opts::new(
                        "shadow_decision_agreement_ratio",
                        "Share of shadow-scored requests whose shadow decision equals the served one",
                    ),
                    &LABELS,
                )
                .expect("metric"),
            )
        })
    }

    fn diff() -> &'static HistogramVec {
        static M: OnceLock<HistogramVec> = OnceLock::new();
        M.get_or_init(|| {
            register(
                HistogramVec::new(
                    HistogramOpts::new(
                        "shadow_probability_abs_diff",
                        "|served probability - shadow probability|",
                    )
                    .buckets(vec![0.001, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0]),
                    &LABELS,
                )
                .expect("metric"),
            )
        })
    }

    fn failed() -> &'static IntCounterVec {
        static M: OnceLock<IntCounterVec> = OnceLock::new();
        M.get_or_init(|| {
            register(
                IntCounterVec::new(
                    Opts::new(
                        "shadow_failures_total",
                        "Requests the shadow model could not score (its spec refused them)",
                    ),
                    &LABELS,
                )
                .expect("metric"),
            )
        })
    }

    /// One shadow-scored request.
    pub fn observe(champion: &str, shadow: &str, agree: bool, abs_diff: f64) {
        let labels = [champion, shadow];
        let scored = scored().with_label_values(&labels);
        scored.inc();
        let agreed = agreed().with_label_values(&labels);
        if agree {
            agreed.inc();
        }
        ratio()
            .with_label_values(&labels)
            .set(agreed.get() as f64 / scored.get() as f64);
        diff().with_label_values(&labels).observe(abs_diff);
    }

    pub fn failure(champion: &str, shadow: &str) {
        failed().with_label_values(&[champion, shadow]).inc();
    }

    fn skips() -> &'static IntCounterVec {
        static M: OnceLock<IntCounterVec> = OnceLock::new();
        M.get_or_init(|| {
            register(
                IntCounterVec::new(
                    Opts::new(
                        "shadow_skipped_total",
                        "Requests not shadow-scored because the shadow model was behind (its queue full)",
                    ),
                    &LABELS,
                )
                .expect("metric"),
            )
        })
    }

    /// `n` applications the shadow could not take.
    pub fn skipped(champion: &str, shadow: &str, n: u64) {
        skips().with_label_values(&[champion, shadow]).inc_by(n);
    }
}
