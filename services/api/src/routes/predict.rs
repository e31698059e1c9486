//! `POST /v1/predict` and `POST /v1/predict/batch`.

use actix_web::{web, HttpRequest, HttpResponse};
use features::{FieldError, Raw};
use futures_util::StreamExt;
use model::batch::Row;
use model::{BlockScorer, Decision, Reason, ReasonPolicy, ReasonView};
use serde::{Deserialize, Serialize};

use crate::applications::{self, Application, BodyError};
use crate::error::ApiError;
use crate::models::ServingModel;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
pub struct ExplainQuery {
    /// `false` skips reason codes (faster).
    pub explain: Option<bool>,
}

/// The caller's request id (if it is a sane token) or a new one. New ids are UUIDv7: they rise
/// with time, so the audit log's key on `request_id` is appended to at its right edge instead of
/// being written at a random page for every decision (PostgreSQL's CPU per audited request fell
/// from about 13 µs to 10 µs; BENCHMARKS.md).
pub fn request_id(req: &HttpRequest) -> String {
    req.headers()
        .get("x-request-id")
        .and_then(|v| v.to_str().ok())
        .filter(|s| {
            !s.is_empty()
                && s.len() <= 64
                && s.chars()
                    .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
        })
        .map_or_else(|| uuid::Uuid::now_v7().to_string(), String::from)
}

/// Reads a JSON body within the size limit, checking the content type. The bytes are parsed by
/// [`crate::applications`], which keeps nothing bigger than the body.
pub async fn read_json(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<web::Bytes, ApiError> {
    let ct = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let mime = ct
        .split(';')
        .next()
        .unwrap_or("")
        .trim()
        .to_ascii_lowercase();
    if mime != "application/json" && !mime.ends_with("+json") {
        return Err(ApiError::UnsupportedMediaType);
    }
    // One allocation of the announced size (within the limit), not a doubling series.
    let announced = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<usize>().ok())
        .unwrap_or(0);
    if announced > limit {
        return Err(ApiError::TooLarge(limit));
    }
    let mut body = web::BytesMut::with_capacity(announced);
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::Malformed(format!("cannot read the request body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

fn field_error(field: &str, code: &'static str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_string(),
        code,
        message: message.into(),
    }
}

fn malformed(e: impl std::fmt::Display) -> ApiError {
    // serde_json rejects NaN and Infinity, which JSON does not have.
    ApiError::Malformed(format!("the body is not valid JSON: {e}"))
}

/// The model that answered.
#[derive(Debug, Serialize)]
pub struct ModelRef<'a> {
    pub name: &'a str,
    pub version: &'a str,
}

impl<'a> ModelRef<'a> {
    fn of(m: &'a ServingModel) -> ModelRef<'a> {
        ModelRef {
            name: &m.name,
            version: &m.version,
        }
    }
}

/// The answer to `POST /v1/predict`.
#[derive(Debug, Serialize)]
pub struct Prediction<'a> {
    pub default_probability: f64,
    pub decision: Decision,
    /// Empty (not absent) without explanations.
    pub reasons: Vec<ReasonView<'a>>,
    pub model: ModelRef<'a>,
    pub request_id: &'a str,
}

/// One application's line in a `POST /v1/predict/batch` answer.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum BatchResult {
    Scored {
        index: usize,
        default_probability: f64,
        decision: Decision,
        reasons: Vec<Reason>,
    },
    Rejected {
        index: usize,
        errors: Vec<FieldError>,
    },
}

/// The answer to `POST /v1/predict/batch`.
#[derive(Debug, Serialize)]
pub struct BatchPrediction<'a> {
    pub results: Vec<BatchResult>,
    pub scored: usize,
    pub rejected: usize,
    pub model: ModelRef<'a>,
    pub request_id: &'a str,
}

/// One application; scored on the request's worker (cheaper than a thread hop), with reasons
/// together with the applications that arrived with it (`crate::explain`).
pub async fn predict(
    req: HttpRequest,
    payload: web::Payload,
    query: web::Query<ExplainQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let rid = request_id(&req);
    let body = read_json(&req, payload, state.settings.max_body_bytes).await?;
    let _busy = state.shadow.as_deref().map(crate::shadow::Shadow::busy);
    let m = state.models.current().ok_or(ApiError::NotReady)?;
    admit(&state)?;
    let spec = &m.scorer.bundle().spec;
    let app = applications::read_one(&body, spec).map_err(malformed)?;
    if app == Application::NotObject {
        return Err(ApiError::Invalid(vec![field_error(
            "",
            "wrong_type",
            "the body must be a JSON object of feature values",
        )]));
    }
    let explain = query.explain.unwrap_or(true);
    let raws = app.raws(spec).map_err(ApiError::Invalid)?;
    let s = if explain {
        // With the applications that arrived with it (`crate::explain`); the same bits as alone.
        crate::explain::score(&m, &raws).await
    } else {
        m.scorer.encode(&raws).map(|row| {
            let (probability, decision) = m.scorer.decide_encoded(&row);
            crate::explain::Scored {
                probability,
                decision,
                top: Vec::new(),
                row,
            }
        })
    }
    .map_err(|e| ApiError::Invalid(field_errors_of(&e)))?;
    let reasons: Vec<ReasonView<'_>> = s
        .top
        .iter()
        .map(|&(j, c)| m.scorer.reason_view(j, c, &raws))
        .collect();
    let record = state.audit.as_ref().map(|_| {
        let policy = if explain {
            ReasonPolicy::All
        } else {
            ReasonPolicy::None
        };
        let key = crate::auth::caller(&req).map(|c| c.id);
        audit_context(&m, audit::Source::Predict, &rid, key.as_deref(), policy).record(
            audit::new_decision_id(),
            0,
            spec,
            &raws,
            s.probability,
            s.decision,
            &reasons,
        )
    });
    match (shadow_of(&state), record) {
        // Scored after the answer, on the shadow's thread; the record (if any) waits for the
        // shadow's result. When the shadow is behind, the record is written now, marked so.
        (Some((sh, shadow)), record) => {
            let skipped = sh.submit(crate::shadow::Task {
                // The shadow's row, made here from what the champion validated and encoded
                // (well under a microsecond) when their specs agree: its thread then only
                // predicts instead of parsing and validating the request again.
                encoded: shadow.scorer.row_from(&m.scorer, &raws, &s.row),
                body: body.clone(),
                champion: m.clone(),
                shadow,
                probability: s.probability,
                decision: s.decision,
                // Encoded here, on the request's thread, but for the shadow's note.
                record: record.as_ref().map(audit::Unfinished::new),
                audit: state.audit.clone(),
            });
            if let (Some(record), Some(a)) = (skipped, &state.audit) {
                a.record_encoded(record).map_err(|_| audit_unavailable())?;
            }
        }
        (None, Some(record)) => {
            if let Some(a) = &state.audit {
                a.record([record]).map_err(|_| audit_unavailable())?;
            }
        }
        (None, None) => {}
    }
    crate::metrics::observe(s.decision, s.probability);
    if let Some(d) = &m.drift {
        d.observe(spec, &raws, s.probability);
    }
    let answer = Prediction {
        default_probability: s.probability,
        decision: s.decision,
        reasons,
        model: ModelRef::of(&m),
        request_id: &rid,
    };
    // Written once into a buffer that holds a usual answer (about 720 bytes with four
    // reasons), not grown by doubling from 128 bytes.
    let mut body = Vec::with_capacity(1024);
    serde_json::to_writer(&mut body, &answer)
        .map_err(|e| ApiError::Unexpected(anyhow::anyhow!("cannot write the answer: {e}")))?;
    Ok(HttpResponse::Ok()
        .insert_header(("X-Request-Id", rid.clone()))
        .content_type("application/json")
        .body(body))
}

/// Up to `API_MAX_BATCH` applications; a bad row is reported by index, the rest are scored
/// with the block scorer. Scored on the blocking pool: a full batch is milliseconds of CPU.
pub async fn predict_batch(
    req: HttpRequest,
    payload: web::Payload,
    query: web::Query<ExplainQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let rid = request_id(&req);
    let limit = state.settings.max_body_bytes.saturating_mul(16);
    let body = read_json(&req, payload, limit).await?;
    let _busy = state.shadow.as_deref().map(crate::shadow::Shadow::busy);
    let m = state.models.current().ok_or(ApiError::NotReady)?;
    admit(&state)?;
    let max = state.settings.max_batch;
    let policy = if query.explain.unwrap_or(true) {
        ReasonPolicy::All
    } else {
        ReasonPolicy::None
    };
    let shadow = shadow_of(&state).map(|sh| (sh, body.clone()));
    let m2 = m.clone();
    let audit = state.audit.clone();
    let key = crate::auth::caller(&req).map(|c| c.id);
    let rid2 = rid.clone();
    // Read and scored on the blocking pool (a full batch is milliseconds of CPU); applications
    // past the limit are never parsed.
    let results = web::block(move || {
        let apps = applications::read_batch(&body, &m2.scorer.bundle().spec, max)?;
        let decided = audit.is_some().then(|| {
            audit_context(
                &m2,
                audit::Source::PredictBatch,
                &rid2,
                key.as_deref(),
                policy,
            )
        });
        let (results, records) = score_applications(&m2, &apps, policy, decided.as_ref());
        Ok::<_, BodyError>((results, records, audit))
    })
    .await
    .map_err(|e| ApiError::Unexpected(anyhow::anyhow!("batch scoring failed: {e}")))?
    .map_err(|e| match e {
        BodyError::Malformed(e) => malformed(e),
        BodyError::NotBatch => {
            ApiError::InvalidBatch("the body must be {\"applications\": [ ... ]}".into())
        }
        BodyError::TooMany(max) => ApiError::InvalidBatch(format!(
            "more applications than the limit of {max} (API_MAX_BATCH)"
        )),
    })?;
    let (results, records, audit) = results;
    match shadow {
        // Scored after the answer, on the shadow's thread; the records (if any) wait for its
        // results, or are written now, marked, when the shadow is behind.
        Some(((sh, shadow), body)) => {
            let served = results
                .iter()
                .filter_map(|r| match r {
                    BatchResult::Scored {
                        index,
                        default_probability,
                        decision,
                        ..
                    } => Some((*index, *default_probability, *decision)),
                    BatchResult::Rejected { .. } => None,
                })
                .collect();
            let skipped = sh.submit_batch(crate::shadow::BatchTask {
                body,
                max,
                champion: m.clone(),
                shadow,
                served,
                records,
                audit: audit.clone(),
            });
            if let (false, Some(a)) = (skipped.is_empty(), audit) {
                a.record(skipped).map_err(|_| audit_unavailable())?;
            }
        }
        None => {
            if let Some(a) = audit {
                a.record(records).map_err(|_| audit_unavailable())?;
            }
        }
    }
    let rejected = results
        .iter()
        .filter(|r| matches!(r, BatchResult::Rejected { .. }))
        .count();
    let answer = BatchPrediction {
        scored: results.len() - rejected,
        rejected,
        results,
        model: ModelRef::of(&m),
        request_id: &rid,
    };
    Ok(HttpResponse::Ok()
        .insert_header(("X-Request-Id", rid.clone()))
        .json(answer))
}

/// Scores the applications as one block; each one's problems are reported by its index. With
/// `decided`, also the audit record of each scored application.
fn score_applications(
    m: &ServingModel,
    apps: &[Application<'_>],
    policy: ReasonPolicy,
    decided: Option<&audit::Context<'_>>,
) -> (Vec<BatchResult>, Vec<audit::Record>) {
    let spec = &m.scorer.bundle().spec;
    let records: Vec<Result<Vec<Raw<'_>>, Vec<FieldError>>> =
        apps.iter().map(|app| app.raws(spec)).collect();
    let mut block = BlockScorer::new(&m.scorer, policy);
    block.score(records.len(), |i, raws| match &records[i] {
        Ok(r) => {
            raws.extend_from_slice(r);
            Ok(())
        }
        Err(errors) => Err(features::FeatureError::Invalid(errors.clone())),
    });
    let mut audited = Vec::new();
    let results = records
        .iter()
        .enumerate()
        .map(|(index, rec)| match (rec, block.row(index)) {
            (_, Row::Rejected(e)) => BatchResult::Rejected {
                index,
                errors: field_errors_of(e),
            },
            (Err(_), Row::Scored { .. }) => unreachable!("a row refused by `raws` is rejected"),
            (
                Ok(raws),
                Row::Scored {
                    probability,
                    decision,
                    reasons,
                },
            ) => {
                crate::metrics::observe(decision, probability);
                if let Some(d) = &m.drift {
                    d.observe(spec, raws, probability);
                }
                let reasons: Vec<Reason> = reasons
                    .iter()
                    .map(|(j, c)| m.scorer.reason(*j, *c, raws))
                    .collect();
                if let Some(d) = decided {
                    audited.push(d.record(
                        audit::new_decision_id(),
                        index as i64,
                        spec,
                        raws,
                        probability,
                        decision,
                        &reasons,
                    ));
                }
                BatchResult::Scored {
                    index,
                    default_probability: probability,
                    decision,
                    reasons,
                }
            }
        })
        .collect();
    (results, audited)
}

/// The shadow and the model it scores this request with, when one is configured, loaded and
/// this request sampled.
fn shadow_of(
    state: &AppState,
) -> Option<(
    &crate::shadow::Shadow,
    std::sync::Arc<crate::models::ServingModel>,
)> {
    let sh = state.shadow.as_deref()?;
    Some((sh, sh.pick(state.settings.shadow_sample)?))
}

/// Fail-closed auditing: no decision while its record cannot be kept.
fn admit(state: &AppState) -> Result<(), ApiError> {
    match &state.audit {
        Some(a) => a.admit().map_err(|_| audit_unavailable()),
        None => Ok(()),
    }
}

fn audit_unavailable() -> ApiError {
    ApiError::Unavailable(
        "the decision cannot be recorded now (the audit store is unreachable or behind); \
         no decision is made without a record (AUDIT_MODE=fail-closed)"
            .into(),
    )
}

/// The audit context of one request to the serving model.
fn audit_context<'a>(
    m: &'a ServingModel,
    source: audit::Source,
    request_id: &'a str,
    key_id: Option<&'a str>,
    reason_policy: ReasonPolicy,
) -> audit::Context<'a> {
    audit::Context {
        source,
        request_id,
        key_id,
        model_name: &m.name,
        model_version: &m.version,
        bundle_sha256: &m.bundle_sha256,
        thresholds_json: &m.thresholds_json,
        reason_policy,
    }
}

fn field_errors_of(e: &features::FeatureError) -> Vec<FieldError> {
    match e {
        features::FeatureError::Invalid(errs) => errs.clone(),
        other => vec![field_error("", "invalid", other.to_string())],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn new_request_ids_rise_with_time_and_a_callers_id_is_kept() {
        let req = actix_web::test::TestRequest::default().to_http_request();
        let ids: Vec<String> = (0..200).map(|_| request_id(&req)).collect();
        assert!(
            ids.windows(2).all(|w| w[0] < w[1]),
            "generated ids must be strictly increasing: {:?}",
            &ids[..4]
        );
        assert!(ids.iter().all(|id| uuid::Uuid::parse_str(id).is_ok()));
        let req = actix_web::test::TestRequest::default()
            .insert_header(("x-request-id", "abc-123"))
            .to_http_request();
        assert_eq!(request_id(&req), "abc-123");
        let req = actix_web::test::TestRequest::default()
            .insert_header(("x-request-id", "no spaces"))
            .to_http_request();
        assert_ne!(request_id(&req), "no spaces");
    }
}
