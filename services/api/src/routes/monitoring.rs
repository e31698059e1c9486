//! `GET /v1/monitoring/drift`: the population stability index of the score and of every
//! feature over the serving model's last decisions (`DRIFT_WINDOW`) against its training data.

use actix_web::{web, HttpResponse};
use serde_json::json;

use crate::error::ApiError;
use crate::state::AppState;

pub async fn drift(state: web::Data<AppState>) -> Result<HttpResponse, ApiError> {
    let m = state.models.current().ok_or(ApiError::NotReady)?;
    let Some(monitor) = &m.drift else {
        return Err(ApiError::NotFound(if state.settings.drift_window == 0 {
            "drift is not watched here (DRIFT_WINDOW=0)".into()
        } else {
            "the serving model has no drift baseline (an XGBoost import without --data); \
             retrain it or import it again with --data"
                .into()
        }));
    };
    let report = monitor.report();
    publish(&report);
    let mut body = serde_json::to_value(&report)
        .map_err(|e| ApiError::Unexpected(anyhow::anyhow!("drift report: {e}")))?;
    body["model"] = json!({"name": m.name, "version": m.version});
    body["capacity"] = json!(state.settings.drift_window);
    Ok(HttpResponse::Ok().json(body))
}

/// Sets the drift gauges from a report.
pub fn publish(report: &model::drift::Report) {
    telemetry::publish_drift(report.window, report.score.psi, &report.psi_by_feature());
}

/// Refreshes the gauges from the serving model's window (before `/metrics` is rendered).
pub fn refresh(state: &AppState) {
    if let Some(monitor) = state
        .models
        .current()
        .as_ref()
        .and_then(|m| m.drift.as_ref())
    {
        publish(&monitor.report());
    }
}
