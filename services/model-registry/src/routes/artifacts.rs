//! The artifact proxy: `/api/2.0/mlflow-artifacts/artifacts[/{path}]`.

use actix_web::http::header::{ContentDisposition, DispositionParam, DispositionType};
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use crate::error::Result;
use crate::params::QueryParams;
use crate::startup::AppState;

type Resp = Result<HttpResponse>;

/// The path after the route prefix, percent-decoded exactly once. The decoded path is what is
/// checked, so `%2e%2e` is a `..` (refused), and a `%` left after decoding (double encoding)
/// is refused too.
fn raw_path(req: &HttpRequest) -> String {
    let full = req.uri().path();
    let after = full
        .split_once("/mlflow-artifacts/artifacts")
        .map_or("", |(_, rest)| rest);
    crate::artifacts::percent_decode(after.trim_start_matches('/'))
}

pub async fn upload(req: HttpRequest, payload: web::Payload, s: web::Data<AppState>) -> Resp {
    let path = raw_path(&req);
    s.artifacts
        .put(&path, payload, s.settings.max_artifact_bytes)
        .await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

pub async fn download(req: HttpRequest, s: web::Data<AppState>) -> Resp {
    serve(&req, &s.artifacts, &raw_path(&req)).await
}

/// `GET /get-artifact?run_id=…&path=…`, the UI's download of one run artifact: served from this
/// server's store when the run's artifacts are there (400 for a run whose artifacts are the
/// client's, such as a `file://` location).
pub async fn get_run_artifact(req: HttpRequest, p: QueryParams, s: web::Data<AppState>) -> Resp {
    let sub = crate::artifacts::check_relative(&p.str("path")?)?;
    let run =
        crate::store::runs::get_run_info(&s.pool, &p.str_either("run_id", "run_uuid")?).await?;
    let (store, root) = s.store_for(&run.artifact_uri)?;
    serve(&req, store, &crate::artifacts::join(&root, &sub)).await
}

/// `GET /model-versions/get-artifact?name=…&version=…&path=…`, the UI's download of one file of
/// a model version, served from this server's store.
pub async fn get_model_version_artifact(
    req: HttpRequest,
    p: QueryParams,
    s: web::Data<AppState>,
) -> Resp {
    let sub = crate::artifacts::check_relative(&p.str("path")?)?;
    let version = crate::store::registry::parse_version(&p.str("version")?)?;
    let v = crate::store::registry::get_model_version(&s.pool, &p.str("name")?, version).await?;
    let uri = super::registry::download_uri(&s, &v.source).await?;
    let (store, root) = s.store_for(&uri)?;
    serve(&req, store, &crate::artifacts::join(&root, &sub)).await
}

/// `POST …/mlflow/upload-artifact?run_uuid=…&path=…` with the file as the body (MLflow's UI
/// upload): stored under the run's artifacts on this server's store.
pub async fn upload_run_artifact(
    req: HttpRequest,
    p: QueryParams,
    payload: web::Payload,
    s: web::Data<AppState>,
) -> Resp {
    let Some(run_id) = p.opt_str("run_uuid")?.filter(|r| !r.is_empty()) else {
        return crate::error::invalid("Request must specify run_uuid.");
    };
    let Some(path) = p.opt_str("path")?.filter(|r| !r.is_empty()) else {
        return crate::error::invalid("Request must specify path.");
    };
    let sub = crate::artifacts::check_relative(&path)?;
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    let has_data = header(actix_web::http::header::TRANSFER_ENCODING).is_some()
        || header(actix_web::http::header::CONTENT_LENGTH).is_some_and(|l| l.trim() != "0");
    if !has_data {
        return crate::error::invalid("Request must specify data.");
    }
    let run = crate::store::runs::active_run(&s.pool, &run_id).await?;
    let (store, root) = s.store_for(&run.artifact_uri)?;
    store
        .put(
            &crate::artifacts::join(&root, &sub),
            payload,
            s.settings.max_artifact_bytes,
        )
        .await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

/// One stored file, typed as MLflow types it, as an attachment.
pub(crate) async fn serve(
    req: &HttpRequest,
    store: &crate::artifacts::ArtifactStore,
    path: &str,
) -> Resp {
    let file = store.file(path)?;
    let name = file
        .file_name()
        .map(|n| n.to_string_lossy().to_string())
        .unwrap_or_default();
    let named = actix_files::NamedFile::open_async(&file)
        .await
        .map_err(|e| {
            crate::error::RegistryError::Unexpected(anyhow::anyhow!("cannot open artifact: {e}"))
        })?
        .set_content_type(mime_type(&name))
        // The type exactly as MLflow sends it (`text/plain`, no charset added).
        .prefer_utf8(false)
        .set_content_disposition(ContentDisposition {
            disposition: DispositionType::Attachment,
            parameters: vec![DispositionParam::Filename(name.clone())],
        });
    let mut resp = named.into_response(req);
    // A name that is an HTTP token goes unquoted, as mlflow server (werkzeug) writes it; others
    // keep the quoted (and, for non-ASCII, RFC 5987) form.
    if is_token(&name) {
        if let Ok(v) =
            actix_web::http::header::HeaderValue::from_str(&format!("attachment; filename={name}"))
        {
            resp.headers_mut()
                .insert(actix_web::http::header::CONTENT_DISPOSITION, v);
        }
    }
    Ok(resp)
}

/// Whether `s` is an HTTP token (RFC 9110 `tchar`s), which needs no quotes.
fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Extensions (or whole names, for files without one) MLflow serves as `text/plain`.
const TEXT: [&str; 26] = [
    "txt",
    "log",
    "err",
    "cfg",
    "conf",
    "cnf",
    "cf",
    "ini",
    "properties",
    "prop",
    "hocon",
    "toml",
    "yaml",
    "yml",
    "xml",
    "json",
    "js",
    "py",
    "py3",
    "csv",
    "tsv",
    "md",
    "rst",
    "mlmodel",
    "mlproject",
    "jsonnet",
];

/// The type a download is served with, as MLflow chooses it: its text files as `text/plain`,
/// others by extension, `application/octet-stream` when unknown. The request never picks it.
fn mime_type(name: &str) -> mime_guess::Mime {
    let ext = match name.rsplit_once('.') {
        Some((_, ext)) if !ext.is_empty() => ext,
        _ => name,
    }
    .to_ascii_lowercase();
    if TEXT.contains(&ext.as_str()) {
        return mime_guess::mime::TEXT_PLAIN;
    }
    mime_guess::from_ext(&ext).first_or_octet_stream()
}

pub async fn delete(req: HttpRequest, s: web::Data<AppState>) -> Resp {
    s.artifacts.delete(&raw_path(&req)).await?;
    Ok(HttpResponse::Ok().json(json!({})))
}

/// `GET …/artifacts?path=dir`: names relative to `dir`; a missing directory or a file lists as `{}`.
pub async fn list(p: QueryParams, s: web::Data<AppState>) -> Resp {
    let dir = p.opt_str("path")?.unwrap_or_default();
    let files = s.artifacts.list(&dir).await?;
    if files.is_empty() {
        return Ok(HttpResponse::Ok().json(json!({})));
    }
    Ok(HttpResponse::Ok().json(json!({"files": files})))
}
