//! The serving model, operator reloads, and the probes.

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::error::ApiError;
use crate::models::Checked;
use crate::state::AppState;

/// `GET /v1/model`: what is serving, with its spec (so clients can build forms), metrics and
/// thresholds.
pub async fn get_model(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let m = state.models.current().ok_or(ApiError::NotReady)?;
    let b = m.scorer.bundle();
    Ok(HttpResponse::Ok().json(json!({
        "name": m.name,
        "version": m.version,
        "source": m.source,
        "loaded_at": m.loaded_at,
        "model_uuid": b.model_uuid,
        "model_source": b.source,
        "spec": b.spec,
        "metrics": b.metrics,
        "thresholds": b.thresholds,
        "trees": b.ensemble.trees.len(),
    })))
}

/// `POST /v1/model/reload`: check the registry now.
pub async fn reload(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    match state.models.check().await {
        Ok(outcome) => {
            let m = state.models.current().ok_or(ApiError::NotReady)?;
            Ok(HttpResponse::Ok().json(json!({
                "swapped": matches!(outcome, Checked::Swapped { .. }),
                "model": {"name": m.name, "version": m.version},
            })))
        }
        Err(e) => Err(ApiError::ReloadFailed(e)),
    }
}

/// Alive while the process runs.
pub async fn healthz() -> HttpResponse {
    HttpResponse::Ok().json(json!({"status": "ok"}))
}

/// Ready once a model is loaded; independent of the registry and Redis after that.
pub async fn readyz(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let m = state.models.current().ok_or(ApiError::NotReady)?;
    if let Some(a) = &state.audit {
        if a.mode() == audit::Mode::FailClosed && !a.healthy() {
            return Err(ApiError::Unavailable(
                "the audit store is unreachable; decisions are refused (AUDIT_MODE=fail-closed)"
                    .into(),
            ));
        }
    }
    Ok(HttpResponse::Ok()
        .json(json!({"status": "ready", "model": {"name": m.name, "version": m.version}})))
}

pub async fn metrics(state: web::Data<AppState>) -> HttpResponse {
    super::monitoring::refresh(&state);
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(telemetry::render_metrics())
}
