//! Optional API keys (from `API_KEYS` or a file), compared as SHA-256 digests in constant time.
//! `/healthz`, `/readyz`, `/metrics`, `/openapi.json` and `/docs` stay open.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, ResponseError};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

#[derive(Debug, Clone, Default)]
pub struct ApiKeys(Vec<[u8; 32]>);

impl ApiKeys {
    pub fn load(
        inline: Option<&str>,
        file: Option<&std::path::Path>,
    ) -> anyhow::Result<Option<ApiKeys>> {
        let mut keys: Vec<String> = inline
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(String::from)
            .collect();
        if let Some(f) = file {
            let text = std::fs::read_to_string(f)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", f.display()))?;
            keys.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(String::from),
            );
        }
        if keys.is_empty() {
            return Ok(None);
        }
        Ok(Some(ApiKeys(
            keys.iter()
                .map(|k| Sha256::digest(k.as_bytes()).into())
                .collect(),
        )))
    }

    pub fn accepts(&self, key: &str) -> bool {
        let d: [u8; 32] = Sha256::digest(key.as_bytes()).into();
        self.0.iter().fold(false, |ok, k| {
            ok | (k.iter().zip(&d).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0)
        })
    }
}

const OPEN: [&str; 5] = ["/healthz", "/readyz", "/metrics", "/openapi.json", "/docs"];

pub async fn require(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let keys = req
        .app_data::<web::Data<Option<ApiKeys>>>()
        .and_then(|k| k.get_ref().clone());
    if let Some(keys) = keys {
        // CORS preflight carries no credentials.
        let open = OPEN.contains(&req.path()) || req.method() == actix_web::http::Method::OPTIONS;
        let h = req.headers();
        let key = h
            .get("x-api-key")
            .and_then(|v| v.to_str().ok())
            .or_else(|| {
                h.get("authorization")
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.strip_prefix("Bearer "))
            });
        if !open && !key.is_some_and(|k| keys.accepts(k)) {
            return Ok(req.into_response(ApiError::Unauthorized.error_response()));
        }
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}
