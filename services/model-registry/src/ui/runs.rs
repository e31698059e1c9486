//! A run: overview, params, metrics with their history charts, tags, registered versions, and
//! the artifact browser with previews and downloads.

use actix_web::http::header::{
    self, ContentDisposition, DispositionParam, DispositionType, HeaderValue,
};
use actix_web::{web, HttpRequest, HttpResponse};
use maud::{html, Markup};
use tokio::io::AsyncReadExt;

use super::chart::{line_chart, Series};
use super::{
    badge, bytes, duration, markdown, number, or_error_page, page, q, query_pairs, time, trusted,
    Page,
};
use crate::artifacts::{check_relative, uri_to_relative};
use crate::error::{RegistryError, Result};
use crate::startup::AppState;
use crate::store::{experiments, registry, runs};

/// Largest text shown inline; the rest is a download.
const MAX_PREVIEW: u64 = 512 * 1024;
/// Metric charts drawn on one run page.
const MAX_CHARTS: usize = 40;

const IMAGES: [&str; 5] = ["png", "jpg", "jpeg", "gif", "webp"];

fn extension(path: &str) -> String {
    path.rsplit_once('.')
        .map(|(_, e)| e.to_ascii_lowercase())
        .unwrap_or_default()
}

pub async fn show(
    req: HttpRequest,
    run_id: web::Path<String>,
    s: web::Data<AppState>,
) -> HttpResponse {
    let r = show_page(&req, &run_id, &s).await;
    or_error_page(&req, r)
}

async fn show_page(req: &HttpRequest, run_id: &str, s: &AppState) -> Page {
    let run = runs::get_run(&s.pool, run_id).await?;
    let exp = experiments::get_experiment(&s.pool, run.experiment_id).await?;
    let versions: Vec<registry::ModelVersion> = registry::list_model_versions(&s.pool)
        .await?
        .into_iter()
        .filter(|v| v.run_id == run.run_id)
        .collect();
    let mut charts = Vec::new();
    for m in run.metrics.iter().take(MAX_CHARTS) {
        let history = runs::metric_history(&s.pool, &run.run_id, &m.key).await?;
        let points: Vec<(f64, f64)> = history
            .iter()
            .map(|h| (h.step as f64, if h.is_nan { f64::NAN } else { h.value }))
            .collect();
        charts.push((m, history.len(), points));
    }
    let listing = match uri_to_relative(&run.artifact_uri) {
        Ok(root) => Some(s.artifacts.list(&root).await?),
        Err(_) => None,
    };
    let tag = |k: &str| {
        run.tags
            .iter()
            .find(|(t, _)| t == k)
            .map(|(_, v)| v.clone())
    };
    Ok(page(
        req,
        &run.run_name,
        html! {
            p.crumbs {
                a href="/" { "Experiments" } " / "
                a href=(format!("/experiments/{}", exp.id)) { (exp.name) } " / "
            }
            h1 { (run.run_name) " " (badge(&run.status)) }
            dl.overview {
                dt { "Run ID" } dd { code { (run.run_id) } }
                dt { "Started" } dd { (time(run.start_time)) }
                @if let Some(end) = run.end_time {
                    dt { "Duration" } dd { (duration(end - run.start_time)) }
                }
                dt { "User" } dd { (run.user_id) }
                @if let Some(src) = tag("mlflow.source.name") { dt { "Source" } dd { (src) } }
                @if let Some(note) = tag("mlflow.note.content") { dt { "Note" } dd { (note) } }
                dt { "Artifacts" } dd { code { (run.artifact_uri) } }
                @if run.lifecycle_stage != "active" { dt { "Lifecycle" } dd { (run.lifecycle_stage) } }
            }
            @if !versions.is_empty() {
                h2 { "Registered as" }
                ul {
                    @for v in &versions {
                        li {
                            a href=(format!("/model?name={}", q(&v.name))) { (v.name) }
                            " version " (v.version)
                            @for a in &v.aliases { " " span.tag { "@" (a) } }
                        }
                    }
                }
            }
            h2 { "Metrics" }
            @if run.metrics.is_empty() { p.muted { "No metrics." } } @else {
                table {
                    thead { tr { th { "Metric" } th.num { "Last value" } th.num { "Step" } th.num { "Points" } } }
                    tbody {
                        @for (m, n, _) in &charts {
                            tr {
                                th scope="row" {
                                    @if *n > 1 { a href=(format!("#metric-{}", q(&m.key))) { (m.key) } } @else { (m.key) }
                                }
                                td.num { (if m.is_nan { "NaN".to_string() } else { number(m.value) }) }
                                td.num { (m.step) }
                                td.num { (n) }
                            }
                        }
                    }
                }
                @if charts.iter().any(|(_, n, _)| *n == 1) {
                    p.muted { "Metrics logged once are not charted." }
                }
                div.charts {
                    @for (m, _, points) in charts.iter().filter(|(_, n, _)| *n > 1) {
                        section id=(format!("metric-{}", q(&m.key))) {
                            h3 { (m.key) }
                            (line_chart(&m.key, &[Series { label: run.run_name.clone(), points: points.clone() }]))
                        }
                    }
                }
            }
            h2 { "Parameters" }
            @if run.params.is_empty() { p.muted { "No parameters." } } @else {
                table { tbody { @for (k, v) in &run.params { tr { th scope="row" { (k) } td { (v) } } } } }
            }
            h2 { "Tags" }
            @if run.tags.is_empty() { p.muted { "No tags." } } @else {
                table { tbody { @for (k, v) in &run.tags { tr { th scope="row" { (k) } td { (v) } } } } }
            }
            h2 { "Artifacts" }
            @match &listing {
                None => p.muted { "Artifacts are stored outside this server (" code { (run.artifact_uri) } ")." },
                Some(files) => (file_list(&run.run_id, "", files)),
            }
        },
    ))
}

fn file_list(run_id: &str, dir: &str, files: &[crate::artifacts::FileInfo]) -> Markup {
    html! {
        @if files.is_empty() { p.muted { "No artifacts." } } @else {
            table.files {
                thead { tr { th { "Name" } th.num { "Size" } th { span.visually-hidden { "Download" } } } }
                tbody {
                    @for f in files {
                        @let path = if dir.is_empty() { f.path.clone() } else { format!("{dir}/{}", f.path) };
                        tr {
                            td {
                                a href=(format!("/runs/{run_id}/artifacts?path={}", q(&path))) {
                                    (f.path) @if f.is_dir { "/" }
                                }
                            }
                            td.num { @if let Some(n) = f.file_size { (bytes(n)) } }
                            td {
                                @if !f.is_dir {
                                    a href=(format!("/runs/{run_id}/artifact-file?path={}&download=1", q(&path))) download { "Download" }
                                }
                            }
                        }
                    }
                }
            }
        }
    }
}

/// The run and its artifact path: `(run, path inside the run, path inside the store)`.
async fn locate(s: &AppState, run_id: &str, path: &str) -> Result<(runs::Run, String, String)> {
    let run = runs::get_run_info(&s.pool, run_id).await?;
    let sub = check_relative(path)?;
    let root = uri_to_relative(&run.artifact_uri)?;
    let full = if sub.is_empty() {
        root
    } else {
        format!("{root}/{sub}")
    };
    Ok((run, sub, full))
}

pub async fn artifacts(
    req: HttpRequest,
    run_id: web::Path<String>,
    s: web::Data<AppState>,
) -> HttpResponse {
    let r = artifacts_page(&req, &run_id, &s).await;
    or_error_page(&req, r)
}

async fn artifacts_page(req: &HttpRequest, run_id: &str, s: &AppState) -> Page {
    let path = query_pairs(req)
        .into_iter()
        .find(|(k, _)| k == "path")
        .map(|(_, v)| v)
        .unwrap_or_default();
    let (run, sub, full) = locate(s, run_id, &path).await?;
    let on_disk = s.artifacts.resolve(&full)?;
    let crumbs = breadcrumbs(&run, &sub);
    if on_disk.is_dir() || sub.is_empty() {
        let files = s.artifacts.list(&full).await?;
        return Ok(page(
            req,
            &format!("{} · artifacts", run.run_name),
            html! {
                (crumbs)
                h1 { "Artifacts of " (run.run_name) }
                (file_list(&run.run_id, &sub, &files))
            },
        ));
    }
    let file = s.artifacts.file(&full)?;
    let size = tokio::fs::metadata(&file)
        .await
        .map(|m| m.len())
        .unwrap_or(0);
    let name = sub.rsplit('/').next().unwrap_or(&sub).to_string();
    let dir = sub.rsplit_once('/').map_or("", |(d, _)| d).to_string();
    let raw = format!("/runs/{}/artifact-file?path={}", run.run_id, q(&sub));
    let ext = extension(&sub);
    let preview = if IMAGES.contains(&ext.as_str()) {
        html! { img.preview src=(raw) alt=(name); }
    } else {
        let (text, truncated) = read_prefix(&file, MAX_PREVIEW).await?;
        match text {
            None => html! { p.muted { "No preview for this file type." } },
            Some(text) => {
                let body = match ext.as_str() {
                    "md" | "markdown" => {
                        let run_id = run.run_id.clone();
                        let resolve = move |target: &str, image: bool| -> Option<String> {
                            let target = target.trim_start_matches("./");
                            let joined = if dir.is_empty() {
                                target.to_string()
                            } else {
                                format!("{dir}/{target}")
                            };
                            let rel = check_relative(&joined).ok()?;
                            let route = if image { "artifact-file" } else { "artifacts" };
                            Some(format!("/runs/{run_id}/{route}?path={}", q(&rel)))
                        };
                        html! { article.markdown { (trusted(markdown::render(&text, &resolve))) } }
                    }
                    "json" if !truncated => {
                        let pretty = serde_json::from_str::<serde_json::Value>(&text)
                            .ok()
                            .and_then(|v| serde_json::to_string_pretty(&v).ok())
                            .unwrap_or(text);
                        html! { pre.text { code { (pretty) } } }
                    }
                    _ => html! { pre.text { code { (text) } } },
                };
                html! {
                    (body)
                    @if truncated { p.muted { "Showing the first " (bytes(MAX_PREVIEW)) "; download the file for the rest." } }
                }
            }
        }
    };
    Ok(page(
        req,
        &format!("{name} · {}", run.run_name),
        html! {
            (crumbs)
            h1 { (name) }
            p {
                span.muted { (bytes(size)) } " · "
                a href=(format!("{raw}&download=1")) download { "Download" }
            }
            (preview)
        },
    ))
}

fn breadcrumbs(run: &runs::Run, sub: &str) -> Markup {
    // Each folder on the way links to its listing; the last part is where we are.
    let parts: Vec<&str> = sub.split('/').filter(|p| !p.is_empty()).collect();
    let prefixes: Vec<String> = (1..=parts.len()).map(|n| parts[..n].join("/")).collect();
    html! {
        p.crumbs {
            a href=(format!("/runs/{}", run.run_id)) { (run.run_name) } " / "
            a href=(format!("/runs/{}/artifacts", run.run_id)) { "artifacts" }
            @for (i, part) in parts.iter().enumerate() {
                " / "
                @if i + 1 < parts.len() {
                    a href=(format!("/runs/{}/artifacts?path={}", run.run_id, q(&prefixes[i]))) { (part) }
                } @else {
                    (part)
                }
            }
        }
    }
}

/// Up to `limit` bytes of a file as text, or `None` when it looks binary; and whether the file
/// is longer than that.
async fn read_prefix(path: &std::path::Path, limit: u64) -> Result<(Option<String>, bool)> {
    let f = tokio::fs::File::open(path)
        .await
        .map_err(|e| RegistryError::Unexpected(anyhow::anyhow!("cannot open artifact: {e}")))?;
    let len = f.metadata().await.map(|m| m.len()).unwrap_or(0);
    let mut buf = Vec::with_capacity(limit.min(len) as usize);
    f.take(limit)
        .read_to_end(&mut buf)
        .await
        .map_err(|e| RegistryError::Unexpected(anyhow::anyhow!("cannot read artifact: {e}")))?;
    let truncated = len > limit;
    if buf[..buf.len().min(8192)].contains(&0) {
        return Ok((None, truncated));
    }
    let text = match String::from_utf8(buf) {
        Ok(t) => t,
        // Cut mid-character at the limit: drop the partial character.
        Err(e) if truncated && e.utf8_error().error_len().is_none() => {
            let valid = e.utf8_error().valid_up_to();
            let mut b = e.into_bytes();
            b.truncate(valid);
            String::from_utf8(b).unwrap_or_default()
        }
        Err(_) => return Ok((None, truncated)),
    };
    Ok((Some(text), truncated))
}

/// The file itself: raster images inline (for previews), anything else as a download, always
/// with `nosniff` and a sandboxing CSP so an uploaded HTML or SVG file cannot run script here.
pub async fn artifact_file(
    req: HttpRequest,
    run_id: web::Path<String>,
    s: web::Data<AppState>,
) -> HttpResponse {
    let r = artifact_file_response(&req, &run_id, &s).await;
    or_error_page(&req, r)
}

async fn artifact_file_response(req: &HttpRequest, run_id: &str, s: &AppState) -> Page {
    let query = query_pairs(req);
    let path = query
        .iter()
        .find(|(k, _)| k == "path")
        .map(|(_, v)| v.clone())
        .unwrap_or_default();
    let download = query.iter().any(|(k, v)| k == "download" && v == "1");
    let (_, sub, full) = locate(s, run_id, &path).await?;
    let file = s.artifacts.file(&full)?;
    let name = sub.rsplit('/').next().unwrap_or(&sub).to_string();
    let inline = !download && IMAGES.contains(&extension(&sub).as_str());
    let mime = if inline {
        mime_guess::from_path(&file).first_or_octet_stream()
    } else {
        mime_guess::mime::APPLICATION_OCTET_STREAM
    };
    let named = actix_files::NamedFile::open_async(&file)
        .await
        .map_err(|e| RegistryError::Unexpected(anyhow::anyhow!("cannot open artifact: {e}")))?
        .set_content_type(mime)
        .set_content_disposition(ContentDisposition {
            disposition: if inline {
                DispositionType::Inline
            } else {
                DispositionType::Attachment
            },
            parameters: vec![DispositionParam::Filename(name)],
        });
    let mut resp = named.into_response(req);
    let h = resp.headers_mut();
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static("default-src 'none'; sandbox"),
    );
    Ok(resp)
}
