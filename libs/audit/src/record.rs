//! One recorded decision, and the applicant's features as JSON (written on the hot path, read
//! back by replay).

use features::{Raw, Spec};
use serde::{Deserialize, Serialize};

/// Which path made the decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// `POST /v1/predict`.
    Predict,
    /// `POST /v1/predict/batch` (one record per application, `row_index` its index).
    PredictBatch,
    /// A row of a batch job (`request_id` the job id, `row_index` the row's number in the file).
    Job,
}

impl Source {
    pub fn as_str(self) -> &'static str {
        match self {
            Source::Predict => "predict",
            Source::PredictBatch => "predict_batch",
            Source::Job => "job",
        }
    }
}

/// A decision as recorded. The JSON columns (`features`, `thresholds`, `reasons`, `shadow`)
/// hold JSON text exactly as written at decision time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, sqlx::FromRow)]
pub struct Record {
    /// Unique: a fresh id per API decision; `<job id>:<row>` for batch jobs.
    pub decision_id: String,
    pub request_id: String,
    pub row_index: i64,
    pub recorded_at_ms: i64,
    /// `predict`, `predict_batch` or `job`.
    pub source: String,
    /// The API key's id (never the key); absent when keys are off.
    pub key_id: Option<String>,
    pub model_name: String,
    pub model_version: String,
    /// SHA-256 of the bundle file (`model.json`) that scored.
    pub bundle_sha256: String,
    /// `{"feature": value, …}` after validation, before encoding; `null` for missing.
    pub features: String,
    pub probability: f64,
    pub decision: String,
    /// The thresholds the decision was taken with (`{"approve": …, "decline": …, …}`).
    pub thresholds: String,
    /// `all`, `adverse` or `none`: which decisions were explained.
    pub reason_policy: String,
    /// The reasons given, as answered (`[]` when none were asked for).
    pub reasons: String,
    /// The shadow model's probability and decision, when one scored.
    pub shadow: Option<String>,
}

impl Record {
    /// The record as a JSON document (the JSON columns inline, not as strings).
    pub fn to_json(&self) -> serde_json::Value {
        let parse = |s: &str| serde_json::from_str(s).unwrap_or(serde_json::Value::Null);
        serde_json::json!({
            "decision_id": self.decision_id,
            "request_id": self.request_id,
            "row_index": self.row_index,
            "recorded_at_ms": self.recorded_at_ms,
            "source": self.source,
            "key_id": self.key_id,
            "model": {
                "name": self.model_name,
                "version": self.model_version,
                "bundle_sha256": self.bundle_sha256,
            },
            "features": parse(&self.features),
            "probability": self.probability,
            "decision": self.decision,
            "thresholds": parse(&self.thresholds),
            "reason_policy": self.reason_policy,
            "reasons": parse(&self.reasons),
            "shadow": self.shadow.as_deref().map(parse),
        })
    }
}

/// What every record of one request (or batch job) shares: the model that decided, who asked,
/// and which decisions were explained.
pub struct Context<'a> {
    pub source: Source,
    pub request_id: &'a str,
    pub key_id: Option<&'a str>,
    pub model_name: &'a str,
    pub model_version: &'a str,
    pub bundle_sha256: &'a str,
    /// The model's thresholds as JSON.
    pub thresholds_json: &'a str,
    pub reason_policy: model::ReasonPolicy,
}

impl Context<'_> {
    /// The record of one decision: the applicant's values as scored (`raws`, spec order), the
    /// outcome and the reasons given.
    #[allow(clippy::too_many_arguments)]
    pub fn record(
        &self,
        decision_id: String,
        row: i64,
        spec: &Spec,
        raws: &[Raw<'_>],
        probability: f64,
        decision: model::Decision,
        reasons: &[impl serde::Serialize],
    ) -> Record {
        Record {
            decision_id,
            request_id: self.request_id.to_string(),
            row_index: row,
            recorded_at_ms: crate::now_ms(),
            source: self.source.as_str().into(),
            key_id: self.key_id.map(String::from),
            model_name: self.model_name.into(),
            model_version: self.model_version.into(),
            bundle_sha256: self.bundle_sha256.into(),
            features: features_json(spec, raws),
            probability,
            decision: decision.as_str().into(),
            thresholds: self.thresholds_json.into(),
            reason_policy: self.reason_policy.as_str().into(),
            reasons: serde_json::to_string(reasons).unwrap_or_else(|_| "[]".into()),
            shadow: None,
        }
    }
}

/// The applicant's values as a JSON object in the spec's order: numbers (written so that they
/// read back to the same bits), strings, booleans, `null` for missing. `raws` is in spec order.
pub fn features_json(spec: &Spec, raws: &[Raw<'_>]) -> String {
    use std::fmt::Write as _;
    let mut out = String::with_capacity(32 * raws.len() + 2);
    out.push('{');
    for (i, (f, raw)) in spec.features.iter().zip(raws).enumerate() {
        if i > 0 {
            out.push(',');
        }
        push_json_string(&mut out, &f.name);
        out.push(':');
        match raw {
            Raw::Missing | Raw::Nested => out.push_str("null"),
            Raw::Num(x) => match serde_json::Number::from_f64(*x) {
                // Written in place (no string per number); a finite number always writes.
                Some(n) => {
                    let _ = write!(out, "{n}");
                }
                None => out.push_str("null"),
            },
            Raw::Text(s) => push_json_string(&mut out, s),
            Raw::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        }
    }
    out.push('}');
    out
}

fn push_json_string(out: &mut String, s: &str) {
    if s.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\') {
        // Nothing to escape (the usual case): no allocation.
        out.push('"');
        out.push_str(s);
        out.push('"');
    } else {
        // serde_json's escaping; a string always serialises.
        out.push_str(&serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into()));
    }
}

/// A new decision id, unique across processes and restarts: a random prefix drawn once per
/// process and a counter (no system call per decision, unlike a fresh UUID).
pub fn new_decision_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static PREFIX: OnceLock<String> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let prefix = PREFIX.get_or_init(|| uuid::Uuid::new_v4().simple().to_string());
    format!("{prefix}-{:x}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// The raws, in spec order, of a recorded `features` object (parsed by the caller, which keeps
/// it alive for the borrowed strings).
pub fn raws_from_json<'v>(
    spec: &Spec,
    features: &'v serde_json::Value,
) -> Result<Vec<Raw<'v>>, String> {
    let obj = features
        .as_object()
        .ok_or("the recorded features are not a JSON object")?;
    Ok(spec
        .features
        .iter()
        .map(|f| obj.get(&f.name).map_or(Raw::Missing, Raw::from_json))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> Spec {
        serde_json::from_value(serde_json::json!({
            "format_version": 1,
            "target": {"name": "default", "positive": "1"},
            "features": [
                {"name": "amount", "kind": "numeric"},
                {"name": "purpose", "kind": "categorical"},
                {"name": "owner", "kind": "boolean"},
                {"name": "age", "kind": "numeric", "required": false}
            ]
        }))
        .expect("spec")
    }

    #[test]
    fn features_read_back_to_the_same_raws_bit_for_bit() {
        let spec = spec();
        let raws = [
            Raw::Num(0.1 + 0.2),
            Raw::Text("car \"new\"\n"),
            Raw::Bool(true),
            Raw::Missing,
        ];
        let text = features_json(&spec, &raws);
        let value: serde_json::Value = serde_json::from_str(&text).expect("valid JSON");
        let back = raws_from_json(&spec, &value).expect("object");
        assert_eq!(back.len(), 4);
        match back[0] {
            Raw::Num(x) => assert_eq!(x.to_bits(), (0.1f64 + 0.2).to_bits()),
            ref other => panic!("amount read back as {other:?}"),
        }
        assert!(matches!(back[1], Raw::Text("car \"new\"\n")));
        assert!(matches!(back[2], Raw::Bool(true)));
        assert!(matches!(back[3], Raw::Missing));
    }

    #[test]
    fn plain_and_escaped_strings_are_valid_json_and_ids_do_not_repeat() {
        let spec = spec();
        for s in [
            "plain text",
            "tab\there",
            "quote\"",
            "back\\slash",
            "\u{1}",
            "caf\u{e9}",
        ] {
            let raws = [Raw::Num(1.0), Raw::Text(s), Raw::Bool(false), Raw::Missing];
            let v: serde_json::Value =
                serde_json::from_str(&features_json(&spec, &raws)).expect("valid JSON");
            assert_eq!(v["purpose"], s);
        }
        let ids: std::collections::HashSet<String> = (0..1000).map(|_| new_decision_id()).collect();
        assert_eq!(ids.len(), 1000);
    }
}
