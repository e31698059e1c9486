//! `POST /v1/predict` and `POST /v1/predict/batch`.

use actix_web::{web, HttpRequest, HttpResponse};
use features::{FieldError, Raw};
use futures_util::StreamExt;
use model::batch::Row;
use model::{BlockScorer, Decision, Reason, ReasonPolicy};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::error::ApiError;
use crate::models::ServingModel;
use crate::state::AppState;

#[derive(Debug, Deserialize)]
pub struct ExplainQuery {
    /// `false` skips reason codes (faster).
    pub explain: Option<bool>,
}

/// The caller's request id (if it is a sane token) or a new one.
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
        .map_or_else(|| uuid::Uuid::new_v4().to_string(), String::from)
}

/// Reads a JSON body within the size limit, checking the content type.
pub async fn read_json(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<Value, ApiError> {
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
    let mut body = web::BytesMut::new();
    while let Some(chunk) = payload.next().await {
        let chunk =
            chunk.map_err(|e| ApiError::Malformed(format!("cannot read the request body: {e}")))?;
        if body.len() + chunk.len() > limit {
            return Err(ApiError::TooLarge(limit));
        }
        body.extend_from_slice(&chunk);
    }
    // serde_json rejects NaN and Infinity, which JSON does not have.
    serde_json::from_slice(&body)
        .map_err(|e| ApiError::Malformed(format!("the body is not valid JSON: {e}")))
}

fn field_error(field: &str, code: &'static str, message: impl Into<String>) -> FieldError {
    FieldError {
        field: field.to_string(),
        code,
        message: message.into(),
    }
}

/// Maps a JSON object onto the spec's features (in spec order). Unknown fields are errors;
/// the spec's id column is allowed and ignored.
fn record<'a>(
    m: &ServingModel,
    obj: &'a Map<String, Value>,
) -> Result<Vec<Raw<'a>>, Vec<FieldError>> {
    let spec = &m.scorer.bundle().spec;
    let mut errors: Vec<FieldError> = obj
        .keys()
        .filter(|k| spec.position(k).is_none() && spec.id_column.as_deref() != Some(k.as_str()))
        .map(|k| {
            let shown: String = k.chars().take(64).collect();
            field_error(
                &shown,
                "unknown_field",
                "is not a feature of the serving model",
            )
        })
        .collect();
    let raws: Vec<Raw<'a>> = spec
        .features
        .iter()
        .map(|f| obj.get(&f.name).map_or(Raw::Missing, Raw::from_json))
        .collect();
    if errors.is_empty() {
        // Scoring validates the values (every field at once) on its way.
        return Ok(raws);
    }
    // Report bad values along with the unknown fields, so the caller sees every problem.
    if let Err(mut e) = spec.validate(&raws) {
        errors.append(&mut e);
    }
    if errors.is_empty() {
        Ok(raws)
    } else {
        Err(errors)
    }
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
    pub reasons: Vec<Reason>,
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

/// One application; scored inline (about 15 µs with reasons, cheaper than a thread hop).
pub async fn predict(
    req: HttpRequest,
    payload: web::Payload,
    query: web::Query<ExplainQuery>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let rid = request_id(&req);
    let body = read_json(&req, payload, state.settings.max_body_bytes).await?;
    let m = state.models.current().ok_or(ApiError::NotReady)?;
    let Value::Object(obj) = &body else {
        return Err(ApiError::Invalid(vec![field_error(
            "",
            "wrong_type",
            "the body must be a JSON object of feature values",
        )]));
    };
    let explain = query.explain.unwrap_or(true);
    let raws = record(&m, obj).map_err(ApiError::Invalid)?;
    let s = m
        .scorer
        .score(&raws, explain)
        .map_err(|e| ApiError::Invalid(field_errors_of(&e)))?;
    crate::metrics::observe(s.decision, s.default_probability);
    let answer = Prediction {
        default_probability: s.default_probability,
        decision: s.decision,
        reasons: s.reasons,
        model: ModelRef::of(&m),
        request_id: &rid,
    };
    Ok(HttpResponse::Ok()
        .insert_header(("X-Request-Id", rid.clone()))
        .json(answer))
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
    let m = state.models.current().ok_or(ApiError::NotReady)?;
    let Value::Object(mut body) = body else {
        return Err(ApiError::InvalidBatch(
            "the body must be {\"applications\": [ ... ]}".into(),
        ));
    };
    let apps = match body.remove("applications") {
        Some(Value::Array(a)) => a,
        _ => {
            return Err(ApiError::InvalidBatch(
                "the body must be {\"applications\": [ ... ]}".into(),
            ))
        }
    };
    if apps.len() > state.settings.max_batch {
        return Err(ApiError::InvalidBatch(format!(
            "{} applications is more than the limit of {}",
            apps.len(),
            state.settings.max_batch
        )));
    }
    let policy = if query.explain.unwrap_or(true) {
        ReasonPolicy::All
    } else {
        ReasonPolicy::None
    };
    let m2 = m.clone();
    let results = web::block(move || score_applications(&m2, &apps, policy))
        .await
        .map_err(|e| ApiError::Unexpected(anyhow::anyhow!("batch scoring failed: {e}")))?;
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

/// Scores the applications as one block; each one's problems are reported by its index.
fn score_applications(m: &ServingModel, apps: &[Value], policy: ReasonPolicy) -> Vec<BatchResult> {
    let records: Vec<Result<Vec<Raw<'_>>, Vec<FieldError>>> = apps
        .iter()
        .map(|app| match app {
            Value::Object(obj) => record(m, obj),
            _ => Err(vec![field_error(
                "",
                "wrong_type",
                "each application must be a JSON object",
            )]),
        })
        .collect();
    let mut block = BlockScorer::new(&m.scorer, policy);
    block.score(records.len(), |i, raws| match &records[i] {
        Ok(r) => {
            raws.extend_from_slice(r);
            Ok(())
        }
        // Reported from `records` below.
        Err(_) => Err(features::FeatureError::Invalid(Vec::new())),
    });
    records
        .iter()
        .enumerate()
        .map(|(index, rec)| match (rec, block.row(index)) {
            (Err(errors), _) => BatchResult::Rejected {
                index,
                errors: errors.clone(),
            },
            (Ok(_), Row::Rejected(e)) => BatchResult::Rejected {
                index,
                errors: field_errors_of(e),
            },
            (
                Ok(raws),
                Row::Scored {
                    probability,
                    decision,
                    reasons,
                },
            ) => {
                crate::metrics::observe(decision, probability);
                BatchResult::Scored {
                    index,
                    default_probability: probability,
                    decision,
                    reasons: reasons
                        .iter()
                        .map(|(j, c)| m.scorer.reason(*j, *c, raws))
                        .collect(),
                }
            }
        })
        .collect()
}

fn field_errors_of(e: &features::FeatureError) -> Vec<FieldError> {
    match e {
        features::FeatureError::Invalid(errs) => errs.clone(),
        other => vec![field_error("", "invalid", other.to_string())],
    }
}
