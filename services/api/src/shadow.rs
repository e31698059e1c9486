//! Champion/challenger: a second model scores requests in the shadow, after the answer, and
//! never changes it. Its agreement with the served decisions is in `/metrics`, and its
//! probability and decision in the request's audit record.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use model::Decision;
use serde_json::json;

use crate::applications::{self, Application};
use crate::metrics;
use crate::models::ServingModel;

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

/// The shadow model to score this request with, if one is configured, loaded and sampled.
pub fn pick(state: &crate::state::AppState) -> Option<Arc<ServingModel>> {
    state
        .shadow
        .as_ref()
        .filter(|_| sampled(state.settings.shadow_sample))
        .and_then(|sh| sh.current())
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

/// The shadow's result for one application, as the audit record keeps it; counted in the
/// metrics.
fn result(
    champion: &ServingModel,
    shadow: &ServingModel,
    served: (f64, Decision),
    scored: Option<(f64, Decision)>,
) -> serde_json::Value {
    let model = json!({
        "name": shadow.name,
        "version": shadow.version,
        "bundle_sha256": shadow.bundle_sha256,
    });
    match scored {
        Some((p, d)) => {
            metrics::shadow::observe(
                &champion.version,
                &shadow.version,
                d == served.1,
                (p - served.0).abs(),
            );
            json!({"model": model, "probability": p, "decision": d.as_str()})
        }
        None => {
            metrics::shadow::failure(&champion.version, &shadow.version);
            json!({"model": model, "error": "the shadow model's spec refused the application"})
        }
    }
}

/// Scores the request with the shadow model, counts agreement, completes the audit record.
pub async fn score(t: Task) {
    let spec = &t.shadow.scorer.bundle().spec;
    let scored = match applications::read_one(&t.body, spec) {
        Ok(app) if app != Application::NotObject => app
            .raws(spec)
            .ok()
            .and_then(|raws| t.shadow.scorer.score(&raws, false).ok()),
        _ => None,
    };
    let result = result(
        &t.champion,
        &t.shadow,
        (t.probability, t.decision),
        scored.map(|s| (s.default_probability, s.decision)),
    );
    if let (Some(mut record), Some(a)) = (t.record, t.audit) {
        record.shadow = Some(result.to_string());
        a.record_wait(record).await;
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

/// Scores a batch with the shadow model as one block (on the blocking pool), then as [`score`].
pub async fn score_batch(t: BatchTask) {
    let BatchTask {
        body,
        max,
        champion,
        shadow,
        served,
        mut records,
        audit,
    } = t;
    let sh = shadow.clone();
    let scored = actix_web::web::block(move || {
        let spec = &sh.scorer.bundle().spec;
        let Ok(apps) = applications::read_batch(&body, spec, max) else {
            return Vec::new();
        };
        let raws: Vec<_> = apps.iter().map(|a| a.raws(spec)).collect();
        let mut block = model::BlockScorer::new(&sh.scorer, model::ReasonPolicy::None);
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
    })
    .await
    .unwrap_or_default();
    for (index, p, d) in served {
        let r = result(
            &champion,
            &shadow,
            (p, d),
            scored.get(index).copied().flatten(),
        );
        // Records are in index order.
        if let Ok(k) = records.binary_search_by_key(&(index as i64), |rec| rec.row_index) {
            records[k].shadow = Some(r.to_string());
        }
    }
    if let Some(a) = audit {
        for rec in records {
            a.record_wait(rec).await;
        }
    }
}
