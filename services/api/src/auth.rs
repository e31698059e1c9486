//! Optional API keys (from `API_KEYS` or a file), compared as SHA-256 digests in constant time.
//! Each key has an id (recorded on the jobs it creates, never the key itself) and scopes:
//! `score` (scoring and the serving model), `batch` (batch jobs), `train` (training jobs) and
//! `admin` (reloading the model, and every key's jobs). A key sees only its own jobs.
//! `/healthz`, `/readyz`, `/metrics`, `/openapi.json` and `/docs` stay open.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, HttpRequest, ResponseError};
use sha2::{Digest, Sha256};

use crate::error::ApiError;

/// What a key may do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Score,
    Batch,
    Train,
    Admin,
}

impl Scope {
    fn parse(s: &str) -> Option<Scope> {
        match s.trim().to_ascii_lowercase().as_str() {
            "score" => Some(Scope::Score),
            "batch" => Some(Scope::Batch),
            "train" => Some(Scope::Train),
            "admin" => Some(Scope::Admin),
            _ => None,
        }
    }

    fn as_str(self) -> &'static str {
        match self {
            Scope::Score => "score",
            Scope::Batch => "batch",
            Scope::Train => "train",
            Scope::Admin => "admin",
        }
    }
}

/// Scopes of keys written without any (the `API_KEYS` list and bare lines of the file): what
/// every key could do before scopes, except reloading the model.
const LEGACY: [Scope; 3] = [Scope::Score, Scope::Batch, Scope::Train];

/// The key a request came with, put in the request's extensions when keys are on.
#[derive(Debug, Clone)]
pub struct Caller {
    pub id: String,
    pub scopes: Vec<Scope>,
}

impl Caller {
    pub fn is_admin(&self) -> bool {
        self.scopes.contains(&Scope::Admin)
    }
}

/// The caller of a request (`None` when API keys are off).
pub fn caller(req: &HttpRequest) -> Option<Caller> {
    req.extensions().get::<Caller>().cloned()
}

/// Whether `caller` may see a job created by `owner`: anyone when keys are off, an admin key
/// always, another key only its own jobs.
pub fn may_see(caller: Option<&Caller>, owner: Option<&str>) -> bool {
    match caller {
        None => true,
        Some(c) => c.is_admin() || owner == Some(c.id.as_str()),
    }
}

#[derive(Debug, Clone)]
struct Key {
    digest: [u8; 32],
    id: String,
    scopes: Vec<Scope>,
}

#[derive(Debug, Clone, Default)]
pub struct ApiKeys(Vec<Key>);

fn digest(key: &str) -> [u8; 32] {
    Sha256::digest(key.as_bytes()).into()
}

fn legacy(key: &str) -> Key {
    let d = digest(key);
    Key {
        digest: d,
        id: format!("key-{}", &hex_prefix(&d)),
        scopes: LEGACY.to_vec(),
    }
}

fn hex_prefix(d: &[u8; 32]) -> String {
    d[..4].iter().map(|b| format!("{b:02x}")).collect()
}

impl ApiKeys {
    /// `inline` is a comma-separated list of keys; the file has lines `id:key:scopes`
    /// (scopes comma-separated) or, the older form, a bare key.
    pub fn load(
        inline: Option<&str>,
        file: Option<&std::path::Path>,
    ) -> anyhow::Result<Option<ApiKeys>> {
        let mut keys: Vec<Key> = inline
            .unwrap_or("")
            .split(',')
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .map(legacy)
            .collect();
        let mut bare = keys.len();
        if let Some(f) = file {
            let text = std::fs::read_to_string(f)
                .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", f.display()))?;
            for (n, line) in text.lines().map(str::trim).enumerate() {
                if line.is_empty() || line.starts_with('#') {
                    continue;
                }
                let at = || format!("{} line {}", f.display(), n + 1);
                let parts: Vec<&str> = line.splitn(3, ':').collect();
                let key = match parts.as_slice() {
                    [k] => {
                        bare += 1;
                        legacy(k)
                    }
                    [id, key, scopes] if !id.is_empty() && !key.is_empty() => {
                        let scopes = scopes
                            .split(',')
                            .map(|s| {
                                Scope::parse(s).ok_or_else(|| {
                                    anyhow::anyhow!(
                                        "{}: unknown scope '{}' (score, batch, train, admin)",
                                        at(),
                                        s.trim()
                                    )
                                })
                            })
                            .collect::<anyhow::Result<Vec<Scope>>>()?;
                        Key {
                            digest: digest(key),
                            id: id.to_string(),
                            scopes,
                        }
                    }
                    _ => anyhow::bail!("{}: expected id:key:scopes", at()),
                };
                keys.push(key);
            }
        }
        if keys.is_empty() {
            return Ok(None);
        }
        if bare > 0 {
            tracing::warn!(
                count = bare,
                "API keys without an id and scopes get score,batch,train; write them as \
                 id:key:scopes in the keys file"
            );
        }
        Ok(Some(ApiKeys(keys)))
    }

    /// The key's id and scopes, if it is one of ours.
    pub fn find(&self, key: &str) -> Option<Caller> {
        let d = digest(key);
        let mut found = None;
        for k in &self.0 {
            let same = k
                .digest
                .iter()
                .zip(&d)
                .fold(0u8, |acc, (a, b)| acc | (a ^ b))
                == 0;
            if same {
                found = Some(k);
            }
        }
        found.map(|k| Caller {
            id: k.id.clone(),
            scopes: k.scopes.clone(),
        })
    }
}

/// `/v1/model/events` is the registry's, authenticated by its signature instead of a key.
const OPEN: [&str; 6] = [
    "/healthz",
    "/readyz",
    "/metrics",
    "/openapi.json",
    "/docs",
    "/v1/model/events",
];

/// The scope an endpoint needs.
pub fn required_scope(method: &Method, path: &str) -> Scope {
    if path.starts_with("/v1/batch-jobs") {
        Scope::Batch
    } else if path.starts_with("/v1/training-jobs") {
        Scope::Train
    } else if path == "/v1/model/reload"
        || (*method != Method::GET && path == "/v1/model")
        || (*method == Method::DELETE && path.starts_with("/v1/decisions/"))
    {
        Scope::Admin
    } else {
        Scope::Score
    }
}

pub async fn require(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let keys = req
        .app_data::<web::Data<Option<ApiKeys>>>()
        .and_then(|k| k.get_ref().clone());
    if let Some(keys) = keys {
        // CORS preflight carries no credentials.
        let open = OPEN.contains(&req.path()) || req.method() == Method::OPTIONS;
        if !open {
            let h = req.headers();
            let key = h
                .get("x-api-key")
                .and_then(|v| v.to_str().ok())
                .or_else(|| {
                    h.get("authorization")
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.strip_prefix("Bearer "))
                });
            let Some(caller) = key.and_then(|k| keys.find(k)) else {
                return Ok(req.into_response(ApiError::Unauthorized.error_response()));
            };
            let needed = required_scope(req.method(), req.path());
            if !caller.scopes.contains(&needed) && !caller.is_admin() {
                let e = ApiError::Forbidden(format!(
                    "this API key (id '{}') lacks the '{}' scope",
                    caller.id,
                    needed.as_str()
                ));
                return Ok(req.into_response(e.error_response()));
            }
            req.extensions_mut().insert(caller);
        }
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_have_ids_and_scopes_and_bare_keys_keep_working() {
        let dir = std::env::temp_dir().join(format!("keys-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("keys");
        std::fs::write(
            &f,
            "# id:key:scopes\nlender-a:k-a:score\nops:k-ops:admin\nold-style-key\n",
        )
        .unwrap();
        let keys = ApiKeys::load(Some("inline-key"), Some(&f))
            .unwrap()
            .unwrap();
        let a = keys.find("k-a").unwrap();
        assert_eq!(
            (a.id.as_str(), a.scopes.as_slice()),
            ("lender-a", &[Scope::Score][..])
        );
        assert!(keys.find("k-ops").unwrap().is_admin());
        let old = keys.find("old-style-key").unwrap();
        assert!(old.id.starts_with("key-") && old.scopes == LEGACY);
        assert_eq!(keys.find("inline-key").unwrap().scopes, LEGACY);
        assert!(keys.find("k-b").is_none());
        std::fs::write(&f, "x:k:score,fly\n").unwrap();
        let err = ApiKeys::load(None, Some(&f)).unwrap_err().to_string();
        assert!(err.contains("unknown scope 'fly'"), "{err}");
        assert!(ApiKeys::load(None, None).unwrap().is_none());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn each_endpoint_needs_its_scope_and_jobs_are_their_owners() {
        assert_eq!(required_scope(&Method::POST, "/v1/predict"), Scope::Score);
        assert_eq!(required_scope(&Method::GET, "/v1/model"), Scope::Score);
        assert_eq!(
            required_scope(&Method::POST, "/v1/model/reload"),
            Scope::Admin
        );
        assert_eq!(
            required_scope(&Method::GET, "/v1/batch-jobs/x/results"),
            Scope::Batch
        );
        assert_eq!(
            required_scope(&Method::POST, "/v1/training-jobs"),
            Scope::Train
        );
        let a = Caller {
            id: "a".into(),
            scopes: vec![Scope::Batch],
        };
        let admin = Caller {
            id: "ops".into(),
            scopes: vec![Scope::Admin],
        };
        assert!(may_see(Some(&a), Some("a")));
        assert!(!may_see(Some(&a), Some("b")));
        assert!(!may_see(Some(&a), None));
        assert!(may_see(Some(&admin), Some("b")));
        assert!(may_see(None, Some("b")));
    }
}
