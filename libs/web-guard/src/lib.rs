//! The HTTP border every service shares: the `Host` header must name this server (DNS
//! rebinding), a state-changing request must come from no browser, this origin or an allowed
//! one (cross-site request forgery), and, where a service says so, must carry JSON, which a
//! cross-site `<form>` cannot send.
//!
//! The rules follow MLflow's security middleware (3.5+): `--allowed-hosts` defaults to the
//! localhost names and private addresses, `*` allows every host, patterns may use `*`
//! (`*.example.com`, `192.168.*`); a pattern with a port must match the port too.

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method, StatusCode};
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};

/// Why a request was refused; each service renders it in its own error format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Rejection {
    /// The `Host` header is missing or not on the allow-list.
    BadHost(String),
    /// A state-changing request from another site (foreign `Origin`, `Origin: null`, or
    /// `Sec-Fetch-Site: cross-site`/`same-site` without an allowed origin).
    CrossSite(String),
    /// A state-changing request to a JSON API without `Content-Type: application/json`.
    NotJson(String),
}

impl Rejection {
    pub fn status(&self) -> StatusCode {
        match self {
            Rejection::BadHost(_) | Rejection::CrossSite(_) => StatusCode::FORBIDDEN,
            Rejection::NotJson(_) => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        }
    }

    pub fn message(&self) -> String {
        match self {
            Rejection::BadHost(h) => format!(
                "Invalid Host header '{h}': this server answers only to its allowed hosts \
                 (--allowed-hosts)"
            ),
            Rejection::CrossSite(o) => format!(
                "Cross-site request refused (origin '{o}'): state-changing requests must come \
                 from this origin or one listed in --cors-allowed-origins"
            ),
            Rejection::NotJson(ct) => {
                format!("Unsupported Content-Type '{ct}': this endpoint takes application/json")
            }
        }
    }
}

/// What one service accepts.
#[derive(Clone)]
pub struct Guard {
    hosts: Vec<String>,
    origins: Vec<String>,
    /// Paths answered whatever the Host (probes and scrapers reach pods by IP).
    any_host_paths: Vec<String>,
    /// Path prefixes whose state-changing requests must be JSON.
    json_prefixes: Vec<String>,
    raw_body_paths: Vec<String>,
    render: fn(&actix_web::HttpRequest, &Rejection) -> HttpResponse,
}

/// Splits a comma-separated list, dropping blanks.
pub fn list(s: &str) -> Vec<String> {
    s.split(',')
        .map(str::trim)
        .filter(|x| !x.is_empty())
        .map(str::to_ascii_lowercase)
        .collect()
}

/// MLflow's default allow-list: localhost names and private IPv4 ranges, plus the address the
/// server binds when it is a specific one.
pub fn default_hosts(bind: &str) -> Vec<String> {
    let mut v: Vec<String> = ["localhost", "127.0.0.1", "[::1]", "10.*", "192.168.*"]
        .iter()
        .map(|s| s.to_string())
        .collect();
    v.extend((16..=31).map(|n| format!("172.{n}.*")));
    let bind = bind.trim().to_ascii_lowercase();
    if !bind.is_empty() && bind != "0.0.0.0" && bind != "::" && bind != "[::]" {
        v.push(if bind.contains(':') && !bind.starts_with('[') {
            format!("[{bind}]")
        } else {
            bind
        });
    }
    v
}

impl Guard {
    /// `hosts` empty means [`default_hosts`] of `bind`.
    pub fn new(
        hosts: Vec<String>,
        bind: &str,
        origins: Vec<String>,
        render: fn(&actix_web::HttpRequest, &Rejection) -> HttpResponse,
    ) -> Guard {
        Guard {
            hosts: if hosts.is_empty() {
                default_hosts(bind)
            } else {
                hosts
            },
            origins,
            any_host_paths: Vec::new(),
            json_prefixes: Vec::new(),
            raw_body_paths: Vec::new(),
            render,
        }
    }

    /// Paths that answer whatever the `Host` (health probes, metrics).
    pub fn any_host(mut self, paths: &[&str]) -> Guard {
        self.any_host_paths = paths.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Path prefixes whose POST, PUT, PATCH and DELETE requests must be `application/json`.
    pub fn json_only(mut self, prefixes: &[&str]) -> Guard {
        self.json_prefixes = prefixes.iter().map(|s| s.to_string()).collect();
        self
    }

    /// Paths under the JSON prefixes that take a raw body (MLflow's `upload-artifact`). The
    /// cross-site rule still applies to them.
    pub fn raw_body(mut self, paths: &[&str]) -> Guard {
        self.raw_body_paths = paths.iter().map(|s| s.to_string()).collect();
        self
    }

    /// The hosts allowed (for the start-up log).
    pub fn hosts(&self) -> &[String] {
        &self.hosts
    }

    /// Whether the `Host` header value is allowed.
    pub fn host_allowed(&self, host: &str) -> bool {
        let host = host.trim().to_ascii_lowercase();
        let (name, _port) = split_port(&host);
        self.hosts.iter().any(|p| {
            if p == "*" {
                return true;
            }
            let (_, pport) = split_port(p);
            let subject = if pport.is_some() { host.as_str() } else { name };
            glob(p, subject)
        })
    }

    /// Whether an `Origin` may make state-changing requests to a server reached as `host`.
    pub fn origin_allowed(&self, origin: &str, host: Option<&str>) -> bool {
        let origin = origin.trim().to_ascii_lowercase();
        if origin == "null" {
            return false;
        }
        if let Some(h) = host {
            if authority_of_origin(&origin).is_some_and(|a| a == normalise_authority(h, None)) {
                return true;
            }
        }
        self.origins
            .iter()
            .any(|p| p == "*" || glob(p.trim_end_matches('/'), &origin))
    }

    /// The rule applied to one request; `None` lets it through.
    pub fn check(
        &self,
        method: &Method,
        path: &str,
        headers: &header::HeaderMap,
        uri_host: Option<&str>,
    ) -> Option<Rejection> {
        let get = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok());
        let host = get(header::HOST).or(uri_host);
        if !self.any_host_paths.iter().any(|p| p == path) {
            match host {
                Some(h) if self.host_allowed(h) => {}
                other => return Some(Rejection::BadHost(clip(other.unwrap_or("")))),
            }
        }
        if matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS) {
            return None;
        }
        match get(header::ORIGIN) {
            Some(origin) => {
                if !self.origin_allowed(origin, host) {
                    return Some(Rejection::CrossSite(clip(origin)));
                }
            }
            None => {
                let site = headers
                    .get("sec-fetch-site")
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("");
                if site.eq_ignore_ascii_case("cross-site") || site.eq_ignore_ascii_case("same-site")
                {
                    return Some(Rejection::CrossSite(format!(
                        "(none; Sec-Fetch-Site: {site})"
                    )));
                }
            }
        }
        // A request with neither a body nor a type (MLflow's client sends its DELETEs so)
        // carries nothing to read as JSON or otherwise.
        let bodyless = get(header::CONTENT_TYPE).is_none()
            && get(header::TRANSFER_ENCODING).is_none()
            && get(header::CONTENT_LENGTH).is_none_or(|l| l.trim() == "0");
        if !bodyless
            && self
                .json_prefixes
                .iter()
                .any(|p| path.starts_with(p.as_str()))
            && !self.raw_body_paths.iter().any(|p| p == path)
        {
            let ct = get(header::CONTENT_TYPE).unwrap_or("");
            let essence = ct.split(';').next().unwrap_or("").trim();
            if !essence.eq_ignore_ascii_case("application/json") {
                return Some(Rejection::NotJson(clip(ct)));
            }
        }
        None
    }
}

/// The middleware: wrap an app with `actix_web::middleware::from_fn(web_guard::enforce)` and
/// give it the [`Guard`] as `web::Data<Guard>`.
pub async fn enforce(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    if let Some(guard) = req.app_data::<web::Data<Guard>>() {
        let uri_host = req.uri().authority().map(|a| a.as_str().to_string());
        if let Some(r) = guard.check(req.method(), req.path(), req.headers(), uri_host.as_deref()) {
            let resp = (guard.render)(req.request(), &r);
            return Ok(req.into_response(resp));
        }
    }
    Ok(next.call(req).await?.map_into_boxed_body())
}

/// A header value cut for an error message.
fn clip(s: &str) -> String {
    s.chars().take(200).collect()
}

/// `host[:port]` into the name and the port; `[v6]:port` keeps its brackets.
fn split_port(h: &str) -> (&str, Option<&str>) {
    if h.starts_with('[') {
        return match h.find("]:") {
            Some(i) => (&h[..=i], Some(&h[i + 2..])),
            None => (h, None),
        };
    }
    match h.rsplit_once(':') {
        Some((n, p)) if !n.contains(':') && p.chars().all(|c| c.is_ascii_digit()) => (n, Some(p)),
        _ => (h, None),
    }
}

/// `host[:port]` without the scheme's default port.
fn normalise_authority(authority: &str, scheme: Option<&str>) -> String {
    let a = authority.trim().to_ascii_lowercase();
    let (name, port) = split_port(&a);
    match (scheme, port) {
        (Some("https"), Some("443")) | (Some("http"), Some("80")) => name.to_string(),
        // A Host header does not say the scheme; either default port is the bare name.
        (None, Some("443" | "80")) => name.to_string(),
        _ => a.clone(),
    }
}

/// The authority of an origin (`scheme://host[:port]`), without a default port.
fn authority_of_origin(origin: &str) -> Option<String> {
    let (scheme, rest) = origin.split_once("://")?;
    let authority = rest.split('/').next()?;
    Some(normalise_authority(authority, Some(scheme)))
}

/// Matches `pattern` (with `*` for any run of characters) against `s`.
fn glob(pattern: &str, s: &str) -> bool {
    let parts: Vec<&str> = pattern.split('*').collect();
    if parts.len() == 1 {
        return pattern == s;
    }
    let (first, last) = (parts[0], parts[parts.len() - 1]);
    if !s.starts_with(first) || s.len() < first.len() + last.len() || !s.ends_with(last) {
        return false;
    }
    let mut rest = &s[first.len()..s.len() - last.len()];
    for mid in &parts[1..parts.len() - 1] {
        match rest.find(mid) {
            Some(i) => rest = &rest[i + mid.len()..],
            None => return false,
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::http::header::{HeaderMap, HeaderName, HeaderValue};

    fn guard(hosts: &str, origins: &str) -> Guard {
        Guard::new(list(hosts), "127.0.0.1", list(origins), |_, _| {
            HttpResponse::Forbidden().finish()
        })
        .any_host(&["/health"])
        .json_only(&["/api/"])
        .raw_body(&["/api/upload"])
    }

    fn headers(pairs: &[(&str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(
                HeaderName::from_bytes(k.as_bytes()).unwrap(),
                HeaderValue::from_str(v).unwrap(),
            );
        }
        h
    }

    #[test]
    fn default_hosts_are_localhost_and_private_addresses() {
        let g = guard("", "");
        for ok in [
            "localhost:5000",
            "127.0.0.1",
            "[::1]:5000",
            "10.1.2.3:5000",
            "172.20.0.5",
            "192.168.1.9:80",
        ] {
            assert!(g.host_allowed(ok), "{ok}");
        }
        for bad in [
            "evil.example",
            "172.32.0.1",
            "localhost.evil.example",
            "11.0.0.1",
        ] {
            assert!(!g.host_allowed(bad), "{bad}");
        }
        assert!(Guard::new(vec![], "10.0.0.7", vec![], |_, _| {
            HttpResponse::Ok().finish()
        })
        .hosts()
        .contains(&"10.0.0.7".to_string()));
    }

    #[test]
    fn host_patterns_wildcards_and_ports() {
        let g = guard("registry.example.com, *.corp.example, api.local:8000", "");
        assert!(g.host_allowed("registry.example.com"));
        assert!(g.host_allowed("REGISTRY.example.com:443"));
        assert!(g.host_allowed("a.corp.example"));
        assert!(!g.host_allowed("corp.example"));
        assert!(g.host_allowed("api.local:8000"));
        assert!(!g.host_allowed("api.local:9000"));
        assert!(!g.host_allowed("localhost"));
        assert!(guard("*", "").host_allowed("anything.example"));
    }

    #[test]
    fn a_cross_site_form_post_is_refused() {
        let g = guard("", "");
        let form = headers(&[
            ("host", "127.0.0.1:5000"),
            ("origin", "https://evil.example"),
            ("sec-fetch-site", "cross-site"),
            ("content-type", "text/plain"),
        ]);
        let path = "/api/2.0/mlflow/registered-models/alias";
        assert!(matches!(
            g.check(&Method::POST, path, &form, None),
            Some(Rejection::CrossSite(_))
        ));
        // No Origin but the browser says it is cross-site.
        let no_origin = headers(&[("host", "127.0.0.1:5000"), ("sec-fetch-site", "cross-site")]);
        assert!(matches!(
            g.check(&Method::POST, path, &no_origin, None),
            Some(Rejection::CrossSite(_))
        ));
        let null = headers(&[("host", "127.0.0.1:5000"), ("origin", "null")]);
        assert!(g.check(&Method::DELETE, path, &null, None).is_some());
        // Reading is not refused for the origin (CORS keeps the answer from the page).
        assert_eq!(g.check(&Method::GET, path, &form, None), None);
    }

    #[test]
    fn same_origin_listed_origins_and_clients_without_origin_pass() {
        let g = guard("*", "https://app.example");
        let path = "/api/2.0/mlflow/runs/create";
        let json = ("content-type", "application/json; charset=utf-8");
        let same = headers(&[
            ("host", "registry.example"),
            ("origin", "https://registry.example"),
            json,
        ]);
        assert_eq!(g.check(&Method::POST, path, &same, None), None);
        let same_port = headers(&[
            ("host", "127.0.0.1:5000"),
            ("origin", "http://127.0.0.1:5000"),
            json,
        ]);
        assert_eq!(g.check(&Method::POST, path, &same_port, None), None);
        let other_port = headers(&[
            ("host", "127.0.0.1:5000"),
            ("origin", "http://127.0.0.1:5001"),
            json,
        ]);
        assert!(g.check(&Method::POST, path, &other_port, None).is_some());
        let listed = headers(&[
            ("host", "r.example"),
            ("origin", "https://app.example"),
            json,
        ]);
        assert_eq!(g.check(&Method::POST, path, &listed, None), None);
        let client = headers(&[("host", "r.example"), json]);
        assert_eq!(g.check(&Method::POST, path, &client, None), None);
    }

    #[test]
    fn json_apis_refuse_other_content_types_and_bad_hosts() {
        let g = guard("", "");
        let h = headers(&[("host", "localhost:5000"), ("content-type", "text/plain")]);
        assert!(matches!(
            g.check(&Method::POST, "/api/2.0/mlflow/x", &h, None),
            Some(Rejection::NotJson(_))
        ));
        // Nothing to read: no body, no type.
        let none = headers(&[("host", "localhost:5000")]);
        assert_eq!(g.check(&Method::DELETE, "/api/x", &none, None), None);
        let empty = headers(&[("host", "localhost:5000"), ("content-length", "0")]);
        assert_eq!(g.check(&Method::POST, "/api/x", &empty, None), None);
        // A body without a type is not JSON.
        let untyped = headers(&[("host", "localhost:5000"), ("content-length", "5")]);
        assert!(matches!(
            g.check(&Method::POST, "/api/x", &untyped, None),
            Some(Rejection::NotJson(_))
        ));
        let chunked = headers(&[("host", "localhost:5000"), ("transfer-encoding", "chunked")]);
        assert!(g.check(&Method::POST, "/api/x", &chunked, None).is_some());
        // A raw-body path takes any body, but not from another site.
        assert_eq!(g.check(&Method::POST, "/api/upload", &untyped, None), None);
        let foreign = headers(&[
            ("host", "localhost:5000"),
            ("content-length", "5"),
            ("origin", "https://evil.example"),
        ]);
        assert!(matches!(
            g.check(&Method::POST, "/api/upload", &foreign, None),
            Some(Rejection::CrossSite(_))
        ));
        // Outside the JSON prefixes (artifact uploads) any type is fine.
        assert_eq!(g.check(&Method::PUT, "/files/x", &h, None), None);
        let rebound = headers(&[("host", "attacker.example:5000")]);
        assert!(matches!(
            g.check(&Method::GET, "/api/2.0/mlflow/x", &rebound, None),
            Some(Rejection::BadHost(_))
        ));
        assert_eq!(g.check(&Method::GET, "/health", &rebound, None), None);
        assert!(g
            .check(&Method::GET, "/x", &HeaderMap::new(), None)
            .is_some());
        assert_eq!(
            g.check(&Method::GET, "/x", &HeaderMap::new(), Some("localhost:1")),
            None
        );
    }
}
