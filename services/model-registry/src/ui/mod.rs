//! The web UI at `/`: experiments, runs, metric charts, artifacts and registered models, rendered
//! on the server with maud (every interpolated value is HTML-escaped) and no JavaScript. Pages
//! read the same store the REST API writes. State changes (aliases, stages) are POST forms with a
//! CSRF token, behind a confirmation page.
//!
//! Authentication is the API's: the browser's basic-auth prompt, or a token entered at `/login`
//! and kept in an HttpOnly cookie that only UI pages accept (never `/api/…`).

mod chart;
mod compare;
mod experiments;
mod markdown;
mod models;
pub mod routes;
mod runs;

use actix_web::http::header::{self, HeaderValue};
use actix_web::http::StatusCode;
use actix_web::{web, HttpMessage, HttpRequest, HttpResponse, ResponseError};
use maud::{html, Markup, PreEscaped, DOCTYPE};

use crate::auth::Auth;
use crate::error::RegistryError;

/// Name of the cookie that carries the CSRF token (double-submit: the form field must match it).
const CSRF_COOKIE: &str = "registry_csrf";
/// Name of the cookie that carries a token entered at `/login`.
pub const TOKEN_COOKIE: &str = "registry_token";

const CSS: &str = include_str!("ui.css");

/// Whether a path belongs to the UI (as opposed to the REST API and the probes): the token
/// cookie is accepted, and a 401 is a page, only here.
pub fn is_ui_path(path: &str) -> bool {
    !(path.starts_with("/api/")
        || path.starts_with("/ajax-api/")
        || matches!(path, "/health" | "/metrics" | "/version"))
}

/// Paths open without credentials: the sign-in page, the stylesheet and the (empty) icon.
pub fn is_open_path(path: &str) -> bool {
    matches!(path, "/login" | "/static/ui.css" | "/favicon.ico")
}

/// What authentication needs to know about these pages.
pub fn browser() -> crate::auth::Browser {
    crate::auth::Browser {
        is_page: is_ui_path,
        is_open: is_open_path,
        token_cookie: TOKEN_COOKIE,
        unauthenticated: unauthenticated_page,
    }
}

/// A UI handler's result: a page, or an error shown as a page.
type Page = Result<HttpResponse, RegistryError>;

/// Turns a handler's error into an HTML page with the same status the API would give.
/// An error as a page of the UI.
pub fn error_page(req: &HttpRequest, e: RegistryError) -> HttpResponse {
    or_error_page(req, Err(e))
}

fn or_error_page(req: &HttpRequest, r: Page) -> HttpResponse {
    r.unwrap_or_else(|e| {
        let status = e.status_code();
        let message = match &e {
            RegistryError::Unexpected(cause) => {
                tracing::error!(error = format!("{cause:#}"), "request failed");
                "Something went wrong on the server; the log has the details.".to_string()
            }
            other => other.to_string(),
        };
        let title = status.canonical_reason().unwrap_or("Error");
        page_with_status(
            req,
            status,
            title,
            html! {
                h1 { (title) }
                p.error { (message) }
                p { a href="/" { "Experiments" } " · " a href="/models" { "Models" } }
            },
        )
    })
}

/// The layout every page shares.
fn layout(req: &HttpRequest, title: &str, body: Markup) -> Markup {
    let signed_in_by_cookie = req.cookie(TOKEN_COOKIE).is_some();
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                title { (title) " · Model registry" }
                link rel="stylesheet" href="/static/ui.css";
            }
            body {
                header.top {
                    nav aria-label="Main" {
                        a.brand href="/" { "Model registry" }
                        a href="/" { "Experiments" }
                        a href="/models" { "Models" }
                        @if signed_in_by_cookie {
                            form.inline method="post" action="/logout" {
                                (csrf_field(req))
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main { (body) }
            }
        }
    }
}

fn page(req: &HttpRequest, title: &str, body: Markup) -> HttpResponse {
    page_with_status(req, StatusCode::OK, title, body)
}

/// An HTML response with the UI's security headers, and the CSRF cookie when the browser has
/// none yet.
fn page_with_status(
    req: &HttpRequest,
    status: StatusCode,
    title: &str,
    body: Markup,
) -> HttpResponse {
    let markup = layout(req, title, body);
    let mut resp = HttpResponse::build(status);
    resp.content_type("text/html; charset=utf-8");
    security_headers(&mut resp);
    if csrf_from_cookie(req).is_none() {
        resp.cookie(csrf_cookie(req, &csrf_token(req)));
    }
    resp.body(markup.into_string())
}

fn security_headers(resp: &mut actix_web::HttpResponseBuilder) {
    resp.insert_header((
        header::CONTENT_SECURITY_POLICY,
        "default-src 'none'; img-src 'self' data:; style-src 'self'; form-action 'self'; \
         frame-ancestors 'none'; base-uri 'none'",
    ))
    .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
    .insert_header((header::REFERRER_POLICY, "same-origin"))
    .insert_header((header::X_FRAME_OPTIONS, "DENY"))
    .insert_header((header::CACHE_CONTROL, "no-store"));
}

/// 303 to a page after a POST, so reloading it does not repeat the change.
fn see_other(location: &str) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .finish()
}

// --- CSRF: double-submit cookie, plus an Origin check ------------------------------------------

/// A valid-looking token from the cookie (32 hex digits), if the browser sent one.
fn csrf_from_cookie(req: &HttpRequest) -> Option<String> {
    req.cookie(CSRF_COOKIE)
        .map(|c| c.value().to_string())
        .filter(|v| v.len() == 32 && v.bytes().all(|b| b.is_ascii_hexdigit()))
}

/// The token for this browser: its cookie's, or a fresh one that the response will set.
/// A fresh token is stored in the request's extensions so every form on one page agrees.
fn csrf_token(req: &HttpRequest) -> String {
    if let Some(t) = csrf_from_cookie(req) {
        return t;
    }
    if let Some(t) = req.extensions().get::<FreshCsrf>() {
        return t.0.clone();
    }
    let t = uuid::Uuid::new_v4().simple().to_string();
    req.extensions_mut().insert(FreshCsrf(t.clone()));
    t
}

#[derive(Clone)]
struct FreshCsrf(String);

fn csrf_cookie<'a>(req: &HttpRequest, value: &str) -> actix_web::cookie::Cookie<'a> {
    actix_web::cookie::Cookie::build(CSRF_COOKIE, value.to_string())
        .path("/")
        .http_only(true)
        .secure(is_https(req))
        .same_site(actix_web::cookie::SameSite::Strict)
        .finish()
}

fn is_https(req: &HttpRequest) -> bool {
    req.connection_info().scheme() == "https"
}

/// The hidden form field every POST form carries.
fn csrf_field(req: &HttpRequest) -> Markup {
    html! { input type="hidden" name="csrf" value=(csrf_token(req)); }
}

/// Checks a POST: the form's token equals the cookie's, and a browser-sent Origin (or, without
/// one, Referer) names this host.
fn check_csrf(req: &HttpRequest, form_token: &str) -> Result<(), RegistryError> {
    let refuse = || {
        Err(RegistryError::PermissionDenied(
            "This form has expired or came from another site. Reload the page and try again."
                .into(),
        ))
    };
    let Some(cookie) = csrf_from_cookie(req) else {
        return refuse();
    };
    let same = cookie.len() == form_token.len()
        && cookie
            .bytes()
            .zip(form_token.bytes())
            .fold(0u8, |acc, (a, b)| acc | (a ^ b))
            == 0;
    if !same {
        return refuse();
    }
    let host = req.connection_info().host().to_string();
    let from = req
        .headers()
        .get(header::ORIGIN)
        .or_else(|| req.headers().get(header::REFERER))
        .and_then(|v| v.to_str().ok())
        .map(|v| v.to_string());
    if let Some(from) = from {
        let from_host = url::Url::parse(&from).ok().map(|u| match u.port() {
            Some(p) => format!("{}:{p}", u.host_str().unwrap_or("")),
            None => u.host_str().unwrap_or("").to_string(),
        });
        if from_host.as_deref() != Some(host.as_str()) {
            return refuse();
        }
    }
    Ok(())
}

// --- Sign-in with a token -----------------------------------------------------------------------

#[derive(serde::Deserialize)]
struct LoginForm {
    csrf: String,
    token: String,
}

async fn login_page(req: HttpRequest, auth: web::Data<Option<Auth>>) -> HttpResponse {
    let open = auth.get_ref().is_none();
    page(&req, "Sign in", login_body(&req, open, None))
}

fn login_body(req: &HttpRequest, open: bool, error: Option<&str>) -> Markup {
    html! {
        h1 { "Sign in" }
        @if open {
            p { "This registry has no authentication configured; every page is open." }
        } @else {
            p {
                "Users with a name and password: open any page and your browser asks for them. "
                "With an API token (the one " code { "MLFLOW_TRACKING_TOKEN" } " holds), enter it here."
            }
            @if let Some(e) = error { p.error role="alert" { (e) } }
            form method="post" action="/login" {
                (csrf_field(req))
                label for="token" { "Token" }
                input #token type="password" name="token" autocomplete="current-password" required;
                button type="submit" { "Sign in" }
            }
        }
    }
}

async fn login(
    req: HttpRequest,
    form: web::Form<LoginForm>,
    auth: web::Data<Option<Auth>>,
) -> HttpResponse {
    if let Err(e) = check_csrf(&req, &form.csrf) {
        return or_error_page(&req, Err(e));
    }
    let Some(auth) = auth.get_ref() else {
        return see_other("/");
    };
    let token = form.token.trim();
    if token.len() > 4096 || auth.token_user(token).is_none() {
        return page_with_status(
            &req,
            StatusCode::UNAUTHORIZED,
            "Sign in",
            login_body(&req, false, Some("That token is not accepted.")),
        );
    }
    let cookie = actix_web::cookie::Cookie::build(TOKEN_COOKIE, token.to_string())
        .path("/")
        .http_only(true)
        .secure(is_https(&req))
        .same_site(actix_web::cookie::SameSite::Strict)
        .finish();
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/"))
        .cookie(cookie)
        .finish()
}

#[derive(serde::Deserialize)]
struct CsrfOnly {
    csrf: String,
}

async fn logout(req: HttpRequest, form: web::Form<CsrfOnly>) -> HttpResponse {
    if let Err(e) = check_csrf(&req, &form.csrf) {
        return or_error_page(&req, Err(e));
    }
    let mut gone = actix_web::cookie::Cookie::build(TOKEN_COOKIE, "")
        .path("/")
        .finish();
    gone.make_removal();
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/login"))
        .cookie(gone)
        .finish()
}

/// The 401 a browser gets on a UI page without credentials: the basic-auth prompt when users are
/// configured, and a page pointing to token sign-in.
pub fn unauthenticated_page(req: &HttpRequest, basic: bool) -> HttpResponse {
    let mut resp = page_with_status(
        req,
        StatusCode::UNAUTHORIZED,
        "Sign in required",
        html! {
            h1 { "Sign in required" }
            p { "This registry requires credentials." }
            p { a href="/login" { "Sign in with a token" } }
        },
    );
    if basic {
        resp.headers_mut().insert(
            header::WWW_AUTHENTICATE,
            HeaderValue::from_static("Basic realm=\"mlflow\""),
        );
    }
    resp
}

async fn css() -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/css; charset=utf-8")
        .insert_header((header::CACHE_CONTROL, "public, max-age=3600"))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .body(CSS)
}

// --- Formatting ---------------------------------------------------------------------------------

/// Milliseconds since the epoch as `2026-11-29 16:55:51 UTC`.
fn time(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S UTC").to_string())
        .unwrap_or_else(|| ms.to_string())
}

/// A duration in milliseconds, readably.
fn duration(ms: i64) -> String {
    let s = ms as f64 / 1000.0;
    if s < 60.0 {
        format!("{s:.1} s")
    } else if s < 3600.0 {
        format!("{:.1} min", s / 60.0)
    } else {
        format!("{:.1} h", s / 3600.0)
    }
}

fn bytes(n: u64) -> String {
    match n {
        n if n < 1024 => format!("{n} B"),
        n if n < 1 << 20 => format!("{:.1} KiB", n as f64 / 1024.0),
        n if n < 1 << 30 => format!("{:.1} MiB", n as f64 / (1u64 << 20) as f64),
        n => format!("{:.1} GiB", n as f64 / (1u64 << 30) as f64),
    }
}

/// A metric value to about six significant digits.
fn number(v: f64) -> String {
    if v.is_nan() {
        return "NaN".into();
    }
    if v.is_infinite() {
        return if v > 0.0 { "∞".into() } else { "-∞".into() };
    }
    if v != 0.0 && (v.abs() >= 1e6 || v.abs() < 1e-4) {
        return format!("{v:.4e}");
    }
    let s = format!("{v:.6}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    s.to_string()
}

/// The query string's pairs in order (repeated keys kept), at most 200.
fn query_pairs(req: &HttpRequest) -> Vec<(String, String)> {
    url::form_urlencoded::parse(req.query_string().as_bytes())
        .into_owned()
        .take(200)
        .collect()
}

/// The first value of `key` among query or form pairs.
fn param(pairs: &[(String, String)], key: &str) -> Option<String> {
    pairs.iter().find(|(k, _)| k == key).map(|(_, v)| v.clone())
}

/// The name search of a list page (`q`), and whether a name matches it (case-insensitive).
fn name_search(action: &str, needle: &str) -> Markup {
    html! {
        form.search method="get" action=(action) role="search" {
            label for="q" { "Name contains" }
            input #q type="search" name="q" value=(needle);
            button type="submit" { "Search" }
        }
    }
}

fn name_matches(name: &str, needle: &str) -> bool {
    needle.is_empty() || name.to_lowercase().contains(&needle.to_lowercase())
}

/// "No experiments." or "No experiments match “x”."
fn none_found(what: &str, needle: &str) -> Markup {
    html! { p.muted { "No " (what) @if !needle.is_empty() { " match “" (needle) "”" } "." } }
}

/// Percent-encodes a query-string value.
fn q(v: &str) -> String {
    url::form_urlencoded::byte_serialize(v.as_bytes()).collect()
}

/// Status as a small badge.
fn badge(text: &str) -> Markup {
    let class = match text {
        "FINISHED" | "READY" | "Production" => "badge ok",
        "FAILED" | "KILLED" | "FAILED_REGISTRATION" | "Archived" => "badge bad",
        "RUNNING" | "PENDING_REGISTRATION" | "Staging" => "badge busy",
        _ => "badge",
    };
    html! { span class=(class) { (text) } }
}

/// Raw, already-safe HTML (from the markdown renderer, which escapes).
fn trusted(html: String) -> Markup {
    PreEscaped(html)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_and_durations_read_well() {
        assert_eq!(number(0.826_512_3), "0.826512");
        assert_eq!(number(200.0), "200");
        assert_eq!(number(1.5e-7), "1.5000e-7");
        assert_eq!(number(f64::NAN), "NaN");
        assert_eq!(duration(1_500), "1.5 s");
        assert_eq!(duration(90_000), "1.5 min");
        assert_eq!(bytes(2048), "2.0 KiB");
        assert_eq!(time(0), "1970-01-01 00:00:00 UTC");
    }

    #[test]
    fn ui_paths_exclude_the_api_and_probes() {
        assert!(is_ui_path("/"));
        assert!(is_ui_path("/models"));
        assert!(!is_ui_path("/api/2.0/mlflow/runs/get"));
        assert!(!is_ui_path("/ajax-api/2.0/mlflow/runs/get"));
        assert!(!is_ui_path("/health"));
    }
}
