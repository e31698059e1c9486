//! Optional authentication, compatible with the MLflow client: HTTP basic
//! (`MLFLOW_TRACKING_USERNAME` / `MLFLOW_TRACKING_PASSWORD`) with users from a file, and bearer
//! tokens (`MLFLOW_TRACKING_TOKEN`) from a file. In Kubernetes both files come from a Secret.
//! With neither configured, the server is open (embedded mode, local development).

use std::collections::HashMap;
use std::path::Path;

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use actix_web::{web, ResponseError};
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::error::RegistryError;

/// How a user's password is stored.
#[derive(Debug, Clone)]
enum Secret {
    Plain(String),
    Sha256([u8; 32]),
}

#[derive(Debug, Clone, Default)]
pub struct Auth {
    users: HashMap<String, Secret>,
    /// SHA-256 of each accepted token (compared as digests, in constant time).
    tokens: Vec<[u8; 32]>,
}

fn sha256(s: &str) -> [u8; 32] {
    Sha256::digest(s.as_bytes()).into()
}

/// Equal-time comparison of two digests.
fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

fn lines(path: &Path) -> anyhow::Result<Vec<String>> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    Ok(text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
        .map(String::from)
        .collect())
}

impl Auth {
    /// Reads `users_file` (lines `user:password` or `user:sha256:<hex>`) and `tokens_file`
    /// (one token per line). `None` when neither is given.
    pub fn load(
        users_file: Option<&Path>,
        tokens_file: Option<&Path>,
    ) -> anyhow::Result<Option<Auth>> {
        if users_file.is_none() && tokens_file.is_none() {
            return Ok(None);
        }
        let mut auth = Auth::default();
        if let Some(f) = users_file {
            for (n, line) in lines(f)?.into_iter().enumerate() {
                let (user, rest) = line.split_once(':').ok_or_else(|| {
                    anyhow::anyhow!("{} line {}: expected user:password", f.display(), n + 1)
                })?;
                let secret = match rest.strip_prefix("sha256:") {
                    Some(hex) => {
                        let bytes = hex::decode(hex.trim()).map_err(|_| {
                            anyhow::anyhow!("{} line {}: bad sha256 hex", f.display(), n + 1)
                        })?;
                        Secret::Sha256(bytes.try_into().map_err(|_| {
                            anyhow::anyhow!(
                                "{} line {}: sha256 must be 32 bytes",
                                f.display(),
                                n + 1
                            )
                        })?)
                    }
                    None => Secret::Plain(rest.to_string()),
                };
                auth.users.insert(user.to_string(), secret);
            }
        }
        if let Some(f) = tokens_file {
            auth.tokens = lines(f)?.iter().map(|t| sha256(t)).collect();
        }
        if auth.users.is_empty() && auth.tokens.is_empty() {
            anyhow::bail!("authentication is configured but no users or tokens were found");
        }
        Ok(Some(auth))
    }

    /// Whether an `Authorization` header value is accepted.
    pub fn accepts(&self, header: Option<&str>) -> bool {
        let Some(h) = header else { return false };
        if let Some(token) = h
            .strip_prefix("Bearer ")
            .or_else(|| h.strip_prefix("bearer "))
        {
            let d = sha256(token.trim());
            return self.tokens.iter().fold(false, |ok, t| ok | same(t, &d));
        }
        let Some(b64) = h
            .strip_prefix("Basic ")
            .or_else(|| h.strip_prefix("basic "))
        else {
            return false;
        };
        let Ok(decoded) = base64::engine::general_purpose::STANDARD.decode(b64.trim()) else {
            return false;
        };
        let Ok(text) = String::from_utf8(decoded) else {
            return false;
        };
        let Some((user, password)) = text.split_once(':') else {
            return false;
        };
        match self.users.get(user) {
            Some(Secret::Plain(p)) => same(&sha256(p), &sha256(password)),
            Some(Secret::Sha256(d)) => same(d, &sha256(password)),
            None => {
                // Same work for unknown users, so timing does not reveal who exists.
                let _ = same(&sha256(password), &sha256(""));
                false
            }
        }
    }
}

/// Rejects unauthenticated requests when authentication is on; `/health` and `/metrics` stay
/// open for probes and scrapers, and the UI's sign-in page and stylesheet for browsers. UI pages
/// also accept a token from the sign-in cookie, and answer a missing login with a page.
pub async fn require(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let auth = req
        .app_data::<web::Data<Option<Auth>>>()
        .and_then(|a| a.get_ref().clone());
    if let Some(auth) = auth {
        let path = req.path();
        let ui = crate::ui::is_ui_path(path);
        let open = path == "/health" || path == "/metrics" || crate::ui::is_open_path(path);
        let header = req
            .headers()
            .get("authorization")
            .and_then(|v| v.to_str().ok());
        let by_cookie = || {
            ui && req
                .cookie(crate::ui::TOKEN_COOKIE)
                .is_some_and(|c| auth.accepts(Some(&format!("Bearer {}", c.value()))))
        };
        if !open && !auth.accepts(header) && !by_cookie() {
            if ui {
                let resp = crate::ui::unauthenticated_page(req.request(), !auth.users.is_empty());
                return Ok(req.into_response(resp));
            }
            let resp = RegistryError::Unauthenticated(
                "You are not authenticated. Please see the server's authentication settings."
                    .into(),
            )
            .error_response();
            return Ok(req.into_response(resp));
        }
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn basic(user: &str, pw: &str) -> String {
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(format!("{user}:{pw}"))
        )
    }

    #[test]
    fn basic_users_plain_and_hashed_and_bearer_tokens() {
        let dir = std::env::temp_dir().join(format!("auth-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let hashed = hex::encode(sha256("s3cret"));
        std::fs::write(
            dir.join("users"),
            format!("# users\nalice:wonderland\nbob:sha256:{hashed}\n"),
        )
        .unwrap();
        std::fs::write(dir.join("tokens"), "tok-123\n").unwrap();
        let auth = Auth::load(Some(&dir.join("users")), Some(&dir.join("tokens")))
            .unwrap()
            .unwrap();
        assert!(auth.accepts(Some(&basic("alice", "wonderland"))));
        assert!(auth.accepts(Some(&basic("bob", "s3cret"))));
        assert!(auth.accepts(Some("Bearer tok-123")));
        assert!(!auth.accepts(Some(&basic("alice", "wrong"))));
        assert!(!auth.accepts(Some(&basic("carol", "wonderland"))));
        assert!(!auth.accepts(Some("Bearer tok-1234")));
        assert!(!auth.accepts(Some("Basic !!!")));
        assert!(!auth.accepts(None));
        assert!(Auth::load(None, None).unwrap().is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
