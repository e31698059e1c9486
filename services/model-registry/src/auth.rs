//! Optional authentication and permissions, compatible with the MLflow client: HTTP basic
//! (`MLFLOW_TRACKING_USERNAME` / `MLFLOW_TRACKING_PASSWORD`) with users from a file, and bearer
//! tokens (`MLFLOW_TRACKING_TOKEN`) from a file, each token belonging to a user. In Kubernetes
//! the files come from a Secret. With neither configured, the server is open (embedded mode,
//! local development).
//!
//! Permissions are MLflow's levels, given per user: `READ` (look, download), `EDIT` (log runs,
//! register versions), `MANAGE` (move aliases and stages, delete) and `ADMIN` (everything), with
//! a default for users the permissions file does not name.
//!
//! Passwords are argon2id PHC strings (`loanctl registry hash-password` prints one). A failed
//! sign-in always costs one argon2 verification, so its time does not tell whether the user
//! exists; repeated failures from one address are slowed down.

use std::collections::HashMap;
use std::net::IpAddr;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{web, HttpMessage, ResponseError};
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use argon2::Argon2;
use base64::Engine as _;
use sha2::{Digest, Sha256};

use crate::error::RegistryError;

/// MLflow's permission levels, in order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Permission {
    NoPermissions,
    Read,
    Edit,
    Manage,
    Admin,
}

impl std::str::FromStr for Permission {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, String> {
        match s.trim().to_ascii_uppercase().as_str() {
            "NO_PERMISSIONS" => Ok(Permission::NoPermissions),
            "READ" => Ok(Permission::Read),
            "EDIT" => Ok(Permission::Edit),
            "MANAGE" => Ok(Permission::Manage),
            "ADMIN" => Ok(Permission::Admin),
            other => Err(format!(
                "unknown permission '{other}': expected READ, EDIT, MANAGE, ADMIN or NO_PERMISSIONS"
            )),
        }
    }
}

impl std::fmt::Display for Permission {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Permission::NoPermissions => "NO_PERMISSIONS",
            Permission::Read => "READ",
            Permission::Edit => "EDIT",
            Permission::Manage => "MANAGE",
            Permission::Admin => "ADMIN",
        })
    }
}

/// Who made a request; put in the request's extensions by [`require`] when auth is on.
#[derive(Debug, Clone)]
pub struct Principal {
    pub user: String,
    pub permission: Permission,
}

/// The user a request names in logs: the signed-in user, or "anonymous" when auth is off.
pub fn user_of(req: &actix_web::HttpRequest) -> String {
    req.extensions()
        .get::<Principal>()
        .map_or_else(|| "anonymous".to_string(), |p| p.user.clone())
}

/// How a user's password is stored.
#[derive(Debug, Clone)]
enum Secret {
    /// A PHC string (`$argon2id$…`).
    Argon2(String),
    /// Legacy: unsalted SHA-256 (accepted with a warning at start).
    Sha256([u8; 32]),
    /// Legacy: the password itself (accepted with a warning at start).
    Plain(String),
}

/// Failed sign-ins from one address after which each further failure waits, and the window.
const FREE_FAILURES: u32 = 3;
const FAILURE_WINDOW: Duration = Duration::from_secs(600);
const MAX_DELAY: Duration = Duration::from_secs(10);
/// Bounds of the in-memory tables (verified credentials, addresses with failures).
const MAX_CACHED: usize = 4096;
const MAX_ADDRESSES: usize = 10_000;

#[derive(Debug)]
pub struct Auth {
    users: HashMap<String, Secret>,
    permissions: HashMap<String, Permission>,
    default_permission: Permission,
    /// SHA-256 of each accepted token with the user it belongs to.
    tokens: Vec<([u8; 32], String)>,
    /// A hash of a random password with the default parameters: unknown users and legacy
    /// secrets are checked against it too, so every failure costs one argon2 verification.
    dummy: String,
    /// Keyed digests of credentials already verified (argon2 is slow by design; the MLflow
    /// client sends Basic credentials with every request).
    verified: Mutex<std::collections::HashSet<[u8; 32]>>,
    cache_key: [u8; 32],
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

fn sha256(s: &[u8]) -> [u8; 32] {
    Sha256::digest(s).into()
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

/// An argon2id PHC string for `password` with a random salt and the default parameters
/// (what `loanctl registry hash-password` prints).
pub fn hash_password(password: &str) -> anyhow::Result<String> {
    let salt = SaltString::encode_b64(uuid::Uuid::new_v4().as_bytes())
        .map_err(|e| anyhow::anyhow!("salt: {e}"))?;
    Argon2::default()
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| anyhow::anyhow!("cannot hash the password: {e}"))
}

fn argon2_ok(phc: &str, password: &str) -> bool {
    PasswordHash::new(phc).is_ok_and(|h| {
        Argon2::default()
            .verify_password(password.as_bytes(), &h)
            .is_ok()
    })
}

/// Where the credentials files are and what users get by default.
#[derive(Debug, Clone, Default)]
pub struct AuthFiles<'a> {
    /// Lines `user:$argon2id$…` (or legacy `user:sha256:<hex>`, `user:password`).
    pub users: Option<&'a Path>,
    /// Lines `user:token` (a bare `token` line is a legacy token of user `token`).
    pub tokens: Option<&'a Path>,
    /// Lines `user:PERMISSION`.
    pub permissions: Option<&'a Path>,
    /// For users the permissions file does not name.
    pub default_permission: Option<Permission>,
}

impl Auth {
    /// Reads the files; `None` when neither users nor tokens are configured.
    pub fn load(files: &AuthFiles) -> anyhow::Result<Option<Auth>> {
        if files.users.is_none() && files.tokens.is_none() {
            return Ok(None);
        }
        let mut users = HashMap::new();
        let mut legacy = Vec::new();
        if let Some(f) = files.users {
            for (n, line) in lines(f)?.into_iter().enumerate() {
                let at = || format!("{} line {}", f.display(), n + 1);
                let (user, rest) = line
                    .split_once(':')
                    .ok_or_else(|| anyhow::anyhow!("{}: expected user:secret", at()))?;
                let secret = if rest.starts_with("$argon2") {
                    PasswordHash::new(rest)
                        .map_err(|e| anyhow::anyhow!("{}: bad argon2 PHC string: {e}", at()))?;
                    Secret::Argon2(rest.to_string())
                } else if let Some(hex) = rest.strip_prefix("sha256:") {
                    let bytes = hex::decode(hex.trim())
                        .map_err(|_| anyhow::anyhow!("{}: bad sha256 hex", at()))?;
                    legacy.push(user.to_string());
                    Secret::Sha256(
                        bytes
                            .try_into()
                            .map_err(|_| anyhow::anyhow!("{}: sha256 must be 32 bytes", at()))?,
                    )
                } else {
                    legacy.push(user.to_string());
                    Secret::Plain(rest.to_string())
                };
                users.insert(user.to_string(), secret);
            }
        }
        if !legacy.is_empty() {
            tracing::warn!(
                users = legacy.join(","),
                "users file has unsalted or plain passwords; replace each with the argon2id \
                 string that `loanctl registry hash-password` prints"
            );
        }
        let mut tokens = Vec::new();
        if let Some(f) = files.tokens {
            let mut bare = 0;
            for line in lines(f)? {
                let (user, token) = match line.split_once(':') {
                    Some((u, t)) if !u.is_empty() && !t.is_empty() => (u.to_string(), t),
                    _ => {
                        bare += 1;
                        ("token".to_string(), line.as_str())
                    }
                };
                tokens.push((sha256(token.trim().as_bytes()), user));
            }
            if bare > 0 {
                tracing::warn!(
                    count = bare,
                    "tokens file has lines without a user; they act as user 'token'. Write \
                     them as user:token"
                );
            }
        }
        if users.is_empty() && tokens.is_empty() {
            anyhow::bail!("authentication is configured but no users or tokens were found");
        }
        let mut permissions = HashMap::new();
        if let Some(f) = files.permissions {
            for (n, line) in lines(f)?.into_iter().enumerate() {
                let (user, level) = line.split_once(':').ok_or_else(|| {
                    anyhow::anyhow!("{} line {}: expected user:PERMISSION", f.display(), n + 1)
                })?;
                let level = level
                    .parse()
                    .map_err(|e| anyhow::anyhow!("{} line {}: {e}", f.display(), n + 1))?;
                permissions.insert(user.trim().to_string(), level);
            }
        }
        Ok(Some(Auth {
            users,
            permissions,
            default_permission: files.default_permission.unwrap_or(Permission::Read),
            tokens,
            dummy: hash_password(&uuid::Uuid::new_v4().to_string())?,
            verified: Mutex::default(),
            cache_key: sha256(uuid::Uuid::new_v4().as_bytes()),
            failures: Mutex::default(),
        }))
    }

    /// Whether the file configured basic-auth users (the UI then uses the browser's prompt).
    pub fn has_users(&self) -> bool {
        !self.users.is_empty()
    }

    fn principal(&self, user: &str) -> Principal {
        Principal {
            user: user.to_string(),
            permission: *self
                .permissions
                .get(user)
                .unwrap_or(&self.default_permission),
        }
    }

    /// The user a bearer token belongs to (digests compared in equal time).
    pub fn token_user(&self, token: &str) -> Option<Principal> {
        let d = sha256(token.trim().as_bytes());
        let mut found = None;
        for (t, user) in &self.tokens {
            if same(t, &d) {
                found = Some(user);
            }
        }
        found.map(|u| self.principal(u))
    }

    /// Who an `Authorization` header value signs in as, if anyone. Basic credentials not seen
    /// before cost an argon2 verification (call it off the async threads).
    pub fn authenticate(&self, header: Option<&str>) -> Option<Principal> {
        let h = header?;
        if let Some(token) = h
            .strip_prefix("Bearer ")
            .or_else(|| h.strip_prefix("bearer "))
        {
            return self.token_user(token);
        }
        let b64 = h
            .strip_prefix("Basic ")
            .or_else(|| h.strip_prefix("basic "))?;
        let text = base64::engine::general_purpose::STANDARD
            .decode(b64.trim())
            .ok()
            .and_then(|d| String::from_utf8(d).ok())?;
        let (user, password) = text.split_once(':')?;
        self.check_password(user, password)
            .then(|| self.principal(user))
    }

    fn check_password(&self, user: &str, password: &str) -> bool {
        let mut keyed = Sha256::new();
        keyed.update(self.cache_key);
        keyed.update(user.as_bytes());
        keyed.update([0]);
        keyed.update(password.as_bytes());
        let key: [u8; 32] = keyed.finalize().into();
        if self.verified.lock().unwrap().contains(&key) {
            return true;
        }
        let ok = match self.users.get(user) {
            Some(Secret::Argon2(phc)) => argon2_ok(phc, password),
            Some(Secret::Sha256(d)) => same(d, &sha256(password.as_bytes())),
            Some(Secret::Plain(p)) => same(&sha256(p.as_bytes()), &sha256(password.as_bytes())),
            None => false,
        };
        if !ok {
            // Unknown users and legacy secrets pay for one argon2 verification too.
            if !matches!(self.users.get(user), Some(Secret::Argon2(_))) {
                let _ = argon2_ok(&self.dummy, password);
            }
            return false;
        }
        let mut verified = self.verified.lock().unwrap();
        if verified.len() >= MAX_CACHED {
            verified.clear();
        }
        verified.insert(key);
        true
    }

    /// Records a failed sign-in from `ip` and says how long to hold the answer back.
    pub fn failed_from(&self, ip: Option<IpAddr>) -> Duration {
        let Some(ip) = ip else {
            return Duration::ZERO;
        };
        let now = Instant::now();
        let mut failures = self.failures.lock().unwrap();
        if failures.len() >= MAX_ADDRESSES {
            failures.retain(|_, (_, last)| now.duration_since(*last) < FAILURE_WINDOW);
        }
        let entry = failures.entry(ip).or_insert((0, now));
        if now.duration_since(entry.1) >= FAILURE_WINDOW {
            entry.0 = 0;
        }
        *entry = (entry.0 + 1, now);
        throttle_delay(entry.0)
    }

    /// Forgets the failures of `ip` after a good sign-in.
    pub fn succeeded_from(&self, ip: Option<IpAddr>) {
        if let Some(ip) = ip {
            self.failures.lock().unwrap().remove(&ip);
        }
    }
}

/// The wait before answering the `n`-th failure in a row: none for the first few, then 250 ms
/// doubling up to 10 s.
pub fn throttle_delay(n: u32) -> Duration {
    if n <= FREE_FAILURES {
        return Duration::ZERO;
    }
    let exp = (n - FREE_FAILURES - 1).min(6);
    (Duration::from_millis(250) * 2u32.pow(exp)).min(MAX_DELAY)
}

/// What a request needs: reading is `READ`; writing `EDIT`; moving aliases and stages and
/// deleting `MANAGE` (as the issue of roles sets it; MLflow itself lets `EDIT` move aliases).
pub fn required_permission(method: &Method, path: &str) -> Permission {
    const API: [&str; 3] = [
        "/api/2.0/mlflow/",
        "/ajax-api/2.0/mlflow/",
        "/api/3.0/mlflow/",
    ];
    const ARTIFACTS: [&str; 2] = [
        "/api/2.0/mlflow-artifacts/",
        "/ajax-api/2.0/mlflow-artifacts/",
    ];
    const READ_POSTS: [&str; 4] = [
        "experiments/search",
        "runs/search",
        "registered-models/get-latest-versions",
        "logged-models/search",
    ];
    const MANAGE: [&str; 7] = [
        "registered-models/alias",
        "model-versions/transition-stage",
        "registered-models/delete",
        "model-versions/delete",
        "experiments/delete",
        "runs/delete",
        "experiments/restore",
    ];
    // Webhooks say where events go and sign them: managing, even listing, them is MANAGE.
    if API
        .iter()
        .filter_map(|p| path.strip_prefix(p))
        .any(|rest| rest == "webhooks" || rest.starts_with("webhooks/"))
    {
        return Permission::Manage;
    }
    let safe = matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS);
    if safe {
        return Permission::Read;
    }
    if ARTIFACTS.iter().any(|p| path.starts_with(p)) {
        return if *method == Method::DELETE {
            Permission::Manage
        } else {
            Permission::Edit
        };
    }
    if let Some(rest) = API.iter().find_map(|p| path.strip_prefix(p)) {
        if READ_POSTS.contains(&rest) {
            return Permission::Read;
        }
        if MANAGE.contains(&rest) {
            return Permission::Manage;
        }
        if rest.starts_with("logged-models/")
            && *method == Method::DELETE
            && !rest.contains("/tags")
        {
            return Permission::Manage;
        }
        return Permission::Edit;
    }
    // The UI: its only changes are alias and stage moves (sign-in and sign-out are open).
    if matches!(path, "/login" | "/logout") {
        Permission::NoPermissions
    } else {
        Permission::Manage
    }
}

/// How browser pages take part in authentication. The UI provides it as app data (this module
/// does not know the UI): without it every path is treated as the REST API.
#[derive(Clone, Copy)]
pub struct Browser {
    /// Whether a path is a page: the token cookie is accepted, and a 401 is a page.
    pub is_page: fn(&str) -> bool,
    /// Pages open without credentials (the sign-in page, the stylesheet).
    pub is_open: fn(&str) -> bool,
    /// The cookie a signed-in browser sends its token in.
    pub token_cookie: &'static str,
    /// The page for a browser without credentials (`basic`: also offer Basic auth).
    pub unauthenticated: fn(&actix_web::HttpRequest, bool) -> actix_web::HttpResponse,
}

/// Rejects unauthenticated requests when authentication is on, and requests beyond the user's
/// permission; `/health` and `/metrics` stay open for probes and scrapers, and the UI's sign-in
/// page and stylesheet for browsers. UI pages also accept a token from the sign-in cookie, and
/// answer a missing login with a page.
pub async fn require(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let Some(data) = req.app_data::<web::Data<Option<Auth>>>().cloned() else {
        return Ok(next.call(req).await?.map_into_boxed_body());
    };
    if data.is_none() {
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    let path = req.path().to_string();
    let browser = req.app_data::<web::Data<Browser>>().map(|b| *b.get_ref());
    let ui = browser.is_some_and(|b| (b.is_page)(&path));
    let open =
        path == "/health" || path == "/metrics" || browser.is_some_and(|b| (b.is_open)(&path));
    if open {
        return Ok(next.call(req).await?.map_into_boxed_body());
    }
    let header = req
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .map(String::from);
    let cookie = browser
        .filter(|_| ui)
        .and_then(|b| req.cookie(b.token_cookie))
        .map(|c| c.value().to_string());
    let ip = req.peer_addr().map(|a| a.ip());
    let checker = data.clone();
    let principal = web::block(move || {
        let auth = checker.as_ref().as_ref().expect("auth is on");
        auth.authenticate(header.as_deref())
            .or_else(|| cookie.and_then(|c| auth.token_user(&c)))
    })
    .await
    .map_err(actix_web::error::ErrorInternalServerError)?;
    let auth = data.as_ref().as_ref().expect("auth is on");
    let Some(principal) = principal else {
        let wait = auth.failed_from(ip);
        if !wait.is_zero() {
            tokio::time::sleep(wait).await;
        }
        if let Some(b) = browser.filter(|_| ui) {
            let resp = (b.unauthenticated)(req.request(), auth.has_users());
            return Ok(req.into_response(resp));
        }
        let resp = RegistryError::Unauthenticated(
            "You are not authenticated. Please see the server's authentication settings.".into(),
        )
        .error_response();
        return Ok(req.into_response(resp));
    };
    auth.succeeded_from(ip);
    let needed = required_permission(req.method(), &path);
    if principal.permission < needed {
        tracing::warn!(
            user = principal.user,
            permission = %principal.permission,
            needed = %needed,
            method = %req.method(),
            path,
            "permission denied"
        );
        let resp = RegistryError::PermissionDenied(format!(
            "Permission denied: {} needs {needed}; user '{}' has {}",
            path, principal.user, principal.permission
        ))
        .error_response();
        return Ok(req.into_response(resp));
    }
    req.extensions_mut().insert(principal);
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

    fn files(dir: &Path, users: &str, tokens: &str, perms: &str) -> Auth {
        std::fs::create_dir_all(dir).unwrap();
        std::fs::write(dir.join("users"), users).unwrap();
        std::fs::write(dir.join("tokens"), tokens).unwrap();
        std::fs::write(dir.join("perms"), perms).unwrap();
        Auth::load(&AuthFiles {
            users: Some(&dir.join("users")),
            tokens: Some(&dir.join("tokens")),
            permissions: Some(&dir.join("perms")),
            default_permission: None,
        })
        .unwrap()
        .unwrap()
    }

    fn tmp() -> std::path::PathBuf {
        std::env::temp_dir().join(format!("auth-{}", uuid::Uuid::new_v4().simple()))
    }

    #[test]
    fn argon2_legacy_users_and_tokens_with_their_users() {
        let dir = tmp();
        let hashed = hex::encode(sha256(b"s3cret"));
        let phc = hash_password("correct horse").unwrap();
        assert!(phc.starts_with("$argon2id$"), "{phc}");
        let auth = files(
            &dir,
            &format!("# users\nalice:wonderland\nbob:sha256:{hashed}\ncarol:{phc}\n"),
            "ci:tok-123\nlegacy-tok\n",
            "carol:MANAGE\nci:edit\n",
        );
        let who = |h: &str| auth.authenticate(Some(h)).map(|p| (p.user, p.permission));
        assert_eq!(
            who(&basic("alice", "wonderland")),
            Some(("alice".into(), Permission::Read))
        );
        assert_eq!(
            who(&basic("bob", "s3cret")).map(|p| p.0),
            Some("bob".into())
        );
        assert_eq!(
            who(&basic("carol", "correct horse")),
            Some(("carol".into(), Permission::Manage))
        );
        // Cached after the first verification, still exact.
        assert!(who(&basic("carol", "correct horse")).is_some());
        assert_eq!(who(&basic("carol", "correct horsE")), None);
        assert_eq!(who("Bearer tok-123"), Some(("ci".into(), Permission::Edit)));
        assert_eq!(who("Bearer legacy-tok").map(|p| p.0), Some("token".into()));
        assert_eq!(who(&basic("alice", "wrong")), None);
        assert_eq!(who(&basic("dave", "wonderland")), None);
        assert_eq!(who("Bearer tok-1234"), None);
        assert_eq!(who("Basic !!!"), None);
        assert!(auth.authenticate(None).is_none());
        assert!(Auth::load(&AuthFiles::default()).unwrap().is_none());
        let bad = dir.join("bad-perms");
        std::fs::write(&bad, "alice:OWNER\n").unwrap();
        let err = Auth::load(&AuthFiles {
            users: Some(&dir.join("users")),
            permissions: Some(&bad),
            ..Default::default()
        })
        .unwrap_err();
        assert!(
            err.to_string().contains("unknown permission 'OWNER'"),
            "{err}"
        );
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_failed_sign_in_costs_the_same_whether_the_user_exists_or_not() {
        let dir = tmp();
        let phc = hash_password("pw").unwrap();
        let auth = files(
            &dir,
            &format!("alice:{phc}\nbob:sha256:{}\n", hex::encode(sha256(b"x"))),
            "",
            "",
        );
        // Interleaved, so that load from other tests weighs on every kind alike; medians.
        let users = ["alice", "bob", "nobody"];
        let mut times: Vec<Vec<Duration>> = vec![Vec::new(); users.len()];
        for i in 0..9 {
            for (k, user) in users.iter().enumerate() {
                let start = Instant::now();
                let header = basic(user, &format!("wrong-{i}"));
                assert!(auth.authenticate(Some(&header)).is_none());
                times[k].push(start.elapsed());
            }
        }
        let median = |t: &mut Vec<Duration>| {
            t.sort();
            t[t.len() / 2]
        };
        let known = median(&mut times[0]);
        for k in 1..users.len() {
            let t = median(&mut times[k]);
            let ratio = t.as_secs_f64() / known.as_secs_f64();
            // Without the dummy verification an unknown user failed ~10,000 times faster.
            assert!(
                (0.25..4.0).contains(&ratio),
                "{} fails in {t:?}, a known user in {known:?}",
                users[k]
            );
        }
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn failures_from_one_address_are_slowed_down() {
        assert_eq!(throttle_delay(1), Duration::ZERO);
        assert_eq!(throttle_delay(3), Duration::ZERO);
        assert_eq!(throttle_delay(4), Duration::from_millis(250));
        assert_eq!(throttle_delay(6), Duration::from_secs(1));
        assert_eq!(throttle_delay(50), MAX_DELAY);
        let auth = files(&tmp(), "a:b\n", "", "");
        let ip: IpAddr = "192.0.2.7".parse().unwrap();
        let other: IpAddr = "192.0.2.8".parse().unwrap();
        let waits: Vec<Duration> = (0..6).map(|_| auth.failed_from(Some(ip))).collect();
        assert_eq!(waits[5], Duration::from_secs(1));
        assert_eq!(auth.failed_from(Some(other)), Duration::ZERO);
        auth.succeeded_from(Some(ip));
        assert_eq!(auth.failed_from(Some(ip)), Duration::ZERO);
    }

    #[test]
    fn permissions_needed_by_each_kind_of_request() {
        use Permission::*;
        let cases = [
            (Method::GET, "/api/2.0/mlflow/registered-models/alias", Read),
            (Method::POST, "/api/2.0/mlflow/runs/search", Read),
            (Method::POST, "/api/2.0/mlflow/runs/log-batch", Edit),
            (Method::POST, "/api/2.0/mlflow/model-versions/create", Edit),
            (
                Method::POST,
                "/api/2.0/mlflow/registered-models/alias",
                Manage,
            ),
            (
                Method::DELETE,
                "/ajax-api/2.0/mlflow/registered-models/alias",
                Manage,
            ),
            (
                Method::POST,
                "/api/2.0/mlflow/model-versions/transition-stage",
                Manage,
            ),
            (
                Method::DELETE,
                "/api/2.0/mlflow/registered-models/delete",
                Manage,
            ),
            (Method::DELETE, "/api/2.0/mlflow/logged-models/m-1", Manage),
            (
                Method::DELETE,
                "/api/2.0/mlflow/logged-models/m-1/tags/k",
                Edit,
            ),
            (Method::PUT, "/api/2.0/mlflow-artifacts/artifacts/a/b", Edit),
            (
                Method::DELETE,
                "/api/2.0/mlflow-artifacts/artifacts/a/b",
                Manage,
            ),
            (Method::GET, "/api/2.0/mlflow-artifacts/artifacts/a/b", Read),
            (Method::POST, "/models/alias", Manage),
            (Method::GET, "/models", Read),
        ];
        for (m, p, want) in cases {
            assert_eq!(required_permission(&m, p), want, "{m} {p}");
        }
    }
}
