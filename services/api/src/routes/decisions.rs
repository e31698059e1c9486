//! `GET /v1/decisions/{request_id}`: the audit records of a request (its key's own, or any with
//! an admin key); `DELETE` erases them (admin; an applicant's request for erasure).

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use crate::auth;
use crate::error::ApiError;
use crate::state::AppState;

fn store(state: &AppState) -> Result<audit::Store, ApiError> {
    let a = state.audit.as_ref().ok_or_else(|| {
        ApiError::NotFound("decisions are not recorded here (AUDIT_URL is not set)".into())
    })?;
    a.store()
        .ok_or_else(|| ApiError::Unavailable("the audit store is not reachable yet".into()))
}

fn not_found(id: &str) -> ApiError {
    ApiError::NotFound(format!(
        "no recorded decision with request id '{}'",
        id.chars().take(64).collect::<String>()
    ))
}

pub async fn get(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let store = store(&state)?;
    let caller = auth::caller(&req);
    let records: Vec<serde_json::Value> = store
        .by_request(&id)
        .await
        .map_err(|e| ApiError::Unavailable(format!("cannot read the audit store: {e}")))?
        .iter()
        .filter(|r| auth::may_see(caller.as_ref(), r.key_id.as_deref()))
        .map(audit::Record::to_json)
        .collect();
    // Another key's decisions are not found, not forbidden: their existence is not told.
    if records.is_empty() {
        return Err(not_found(&id));
    }
    Ok(HttpResponse::Ok().json(json!({"request_id": id, "records": records})))
}

pub async fn erase(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    let erased = store(&state)?
        .erase(&id)
        .await
        .map_err(|e| ApiError::Unavailable(format!("cannot write to the audit store: {e}")))?;
    if erased == 0 {
        return Err(not_found(&id));
    }
    tracing::info!(records = erased, "decision records erased on request");
    Ok(HttpResponse::Ok().json(json!({"request_id": id, "erased": erased})))
}
