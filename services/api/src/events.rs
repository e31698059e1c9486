//! Alias moves pushed by the registry (MLflow 3 webhooks): the API subscribes at start when
//! `MODEL_WEBHOOK_URL` is set, checks each event's signature and wakes the poller of the alias
//! that moved, so a promotion serves within a second. The poll stays as the fallback, and the
//! webhook is deleted at shutdown.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, HttpRequest, HttpResponse};
use base64::Engine;
use hmac::Mac;
use serde_json::{json, Value};

use crate::error::ApiError;
use crate::models::Models;
use crate::state::AppState;

/// How old (or how far ahead) an event's timestamp may be, in seconds.
const MAX_SKEW: i64 = 300;

/// Checks `X-MLflow-Signature` (`v1,<base64 HMAC-SHA256 of "{id}.{timestamp}.{body}">`) and
/// the timestamp's freshness.
pub fn verify(secret: &str, req: &HttpRequest, body: &[u8]) -> Result<(), &'static str> {
    let h = |k: &str| req.headers().get(k).and_then(|v| v.to_str().ok());
    let (Some(id), Some(ts), Some(sig)) = (
        h("x-mlflow-delivery-id"),
        h("x-mlflow-timestamp"),
        h("x-mlflow-signature"),
    ) else {
        return Err("missing X-MLflow-Delivery-Id, X-MLflow-Timestamp or X-MLflow-Signature");
    };
    let age = ts
        .parse::<i64>()
        .map(|t| (chrono::Utc::now().timestamp() - t).abs())
        .map_err(|_| "X-MLflow-Timestamp is not a Unix time")?;
    if age > MAX_SKEW {
        return Err("the event is too old (or its clock too far off)");
    }
    let sig = sig
        .strip_prefix("v1,")
        .and_then(|s| base64::engine::general_purpose::STANDARD.decode(s).ok())
        .ok_or("X-MLflow-Signature is not v1,<base64>")?;
    let mut mac =
        hmac::Hmac::<sha2::Sha256>::new_from_slice(secret.as_bytes()).expect("any key size");
    mac.update(id.as_bytes());
    mac.update(b".");
    mac.update(ts.as_bytes());
    mac.update(b".");
    mac.update(body);
    // Constant time.
    mac.verify_slice(&sig)
        .map_err(|_| "the signature does not match")
}

/// `POST /v1/model/events`.
pub async fn receive(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let Some(secret) = state
        .settings
        .webhook_secret
        .as_deref()
        .filter(|s| !s.is_empty())
    else {
        return Err(ApiError::NotFound(
            "model events are not subscribed here (MODEL_WEBHOOK_URL)".into(),
        ));
    };
    verify(secret, &req, &body).map_err(|e| ApiError::Forbidden(format!("rejected event: {e}")))?;
    let event: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::Malformed(format!("the event is not JSON: {e}")))?;
    let mut woken = Vec::new();
    if event["entity"] == "model_version_alias" {
        let name = event["data"]["name"].as_str().unwrap_or_default();
        let alias = event["data"]["alias"].as_str().unwrap_or_default();
        if state.models.follows(name, alias) {
            state.models.wake();
            woken.push("champion");
        }
        if let Some(sh) = state
            .shadow
            .as_ref()
            .map(|s| &s.models)
            .filter(|sh| sh.follows(name, alias))
        {
            sh.wake();
            woken.push("shadow");
        }
    }
    Ok(HttpResponse::Ok().json(json!({"woken": woken})))
}

/// The registry webhook this process created, deleted at shutdown.
#[derive(Default, Clone)]
pub struct Subscription(Arc<Mutex<Option<(mlflow_client::Client, String)>>>);

impl Subscription {
    /// Subscribes `url` in the background, retrying until the registry takes it.
    pub fn start(models: &Arc<Models>, url: String, secret: String) -> Subscription {
        let sub = Subscription::default();
        let Some(client) = models.registry().cloned() else {
            tracing::warn!(
                "MODEL_WEBHOOK_URL is set but the model does not come from the registry; ignored"
            );
            return sub;
        };
        let slot = sub.0.clone();
        tokio::spawn(async move {
            let name = format!(
                "loan-scoring-api-{}",
                &uuid::Uuid::new_v4().simple().to_string()[..8]
            );
            let mut wait = Duration::from_millis(500);
            loop {
                match client.create_alias_webhook(&name, &url, &secret).await {
                    Ok(id) => {
                        tracing::info!(webhook = %id, "subscribed to alias moves");
                        *slot.lock().expect("lock") = Some((client, id));
                        return;
                    }
                    Err(e) => {
                        tracing::warn!(error = %e, "cannot subscribe to alias moves yet; polling meanwhile");
                        tokio::time::sleep(wait).await;
                        wait = (wait * 2).min(Duration::from_secs(60));
                    }
                }
            }
        });
        sub
    }

    /// Deletes the webhook (best effort, a few seconds at most).
    pub async fn end(&self) {
        let taken = self.0.lock().expect("lock").take();
        if let Some((client, id)) = taken {
            match tokio::time::timeout(Duration::from_secs(5), client.delete_webhook(&id)).await {
                Ok(Ok(())) => tracing::info!(webhook = %id, "unsubscribed from alias moves"),
                _ => {
                    tracing::warn!(webhook = %id, "cannot delete the webhook; the registry will keep trying this address")
                }
            }
        }
    }
}
