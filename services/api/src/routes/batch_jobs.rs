//! `POST /v1/batch-jobs`, `GET /v1/batch-jobs/{id}`, `GET …/results`, `GET …/errors`,
//! `DELETE /v1/batch-jobs/{id}`.

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use futures_util::StreamExt;
use jobs::store::{Created, Idempotency};
use jobs::{Format, JobRecord, JobState, PinnedModel, ScoreChunk};
use model::ReasonPolicy;
use serde_json::json;

use super::jobs::{batch, create_job_dir, save_upload, storage_error, store_error};
use crate::batch::Batch;
use crate::error::ApiError;
use crate::state::AppState;

fn job_json(r: &JobRecord) -> serde_json::Value {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    if let Some(o) = v.as_object_mut() {
        o.remove("owner");
    }
    v["links"] = json!({"self": format!("/v1/batch-jobs/{}", r.id), "results": format!("/v1/batch-jobs/{}/results", r.id), "errors": format!("/v1/batch-jobs/{}/errors", r.id)});
    v
}

/// Accepts a CSV or NDJSON file of applications: streams it to shared storage, checks the
/// header against the serving model, splits it into chunks, pins the model version and queues
/// one task per chunk. 202 with the job and a `Location`.
#[derive(serde::Deserialize)]
pub struct CreateQuery {
    /// `all` (default), `adverse` (review and decline only) or `none`.
    reasons: Option<String>,
}

pub async fn create(
    req: HttpRequest,
    query: web::Query<CreateQuery>,
    mut payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let reasons = match query.reasons.as_deref() {
        None => ReasonPolicy::All,
        Some(r) => ReasonPolicy::parse(r).ok_or_else(|| {
            ApiError::InvalidBatch("reasons must be one of all, adverse, none".into())
        })?,
    };
    let ct = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let format = Format::from_content_type(ct).ok_or(ApiError::UnsupportedBatchType)?;
    let key = match req
        .headers()
        .get("idempotency-key")
        .map(|v| v.to_str().unwrap_or(""))
    {
        Some(k) if k.is_empty() || k.len() > 128 || !k.chars().all(|c| c.is_ascii_graphic()) => {
            return Err(ApiError::InvalidBatch(
                "Idempotency-Key must be 1 to 128 printable characters".into(),
            ))
        }
        other => other.map(String::from),
    };
    let caller = crate::auth::caller(&req);
    let owner = caller.as_ref().map(|c| c.id.clone());
    // One key's Idempotency-Key never names another key's job.
    let scoped = key.as_ref().map(|k| match &owner {
        Some(o) => format!("{o}:{k}"),
        None => k.clone(),
    });
    let b = batch(&state)?;
    let model = state.models.current().ok_or(ApiError::NotReady)?;
    let id = jobs::new_job_id();
    let input = b
        .layout
        .input(&id, format)
        .ok_or_else(|| ApiError::Unexpected(anyhow::anyhow!("job id")))?;
    let dir = create_job_dir(&b, &id).await?;
    let cleanup = || async {
        let _ = tokio::fs::remove_dir_all(&dir).await;
    };
    // Split as it arrives: the rows are read and checked on a blocking thread while the upload
    // is still being written (the file is created first, for it to open).
    if let Err(e) = tokio::fs::File::create(&input).await {
        cleanup().await;
        return Err(storage_error("cannot store the upload", &e));
    }
    let written = Arc::new(jobs::split::Written::default());
    let spec = model.scorer.bundle().spec.clone();
    let (layout, chunk_rows, job) = (
        b.layout.clone(),
        state.settings.batch_chunk_rows,
        id.clone(),
    );
    let (path, growing) = (input.clone(), written.clone());
    let split = tokio::task::spawn_blocking(move || {
        let rows = jobs::split::Growing::new(&path, growing)?;
        jobs::split::split_from(rows, &path, format, chunk_rows, &spec, |n| {
            layout.chunk(&job, n, format).expect("valid id")
        })
    });
    let upload = save_upload(
        &mut payload,
        &input,
        state.settings.batch_max_bytes,
        Some(written),
    )
    .await;
    // Told how the upload ended, the split ends too; only then is the folder removed.
    let split = split
        .await
        .map_err(|e| ApiError::Unexpected(anyhow::anyhow!(e)));
    let upload = match upload {
        Ok(u) => u,
        Err(e) => {
            cleanup().await;
            return Err(e);
        }
    };
    // The request, for the key: what is scored and how (the model is not part of it: a
    // retry after the champion moved is the same request).
    let fingerprint = format!(
        "{}-{}-{}",
        format.extension(),
        reasons.as_str(),
        upload.sha256
    );
    let once = scoped.as_deref().map(|key| Idempotency {
        key,
        fingerprint: &fingerprint,
    });
    let sent = key.as_deref().unwrap_or_default();
    // A key seen before answers with its job (this upload's chunks are removed).
    if let Some(once) = &once {
        match b.store.idempotent(once).await {
            Ok(Some(seen)) => {
                cleanup().await;
                return repeated(&b, seen, sent).await;
            }
            Ok(None) => {}
            Err(e) => {
                cleanup().await;
                return Err(store_error(e));
            }
        }
    }
    let split = match split {
        Ok(Ok(s)) if s.rows > 0 => s,
        Ok(Ok(_)) => {
            cleanup().await;
            return Err(ApiError::InvalidBatch("the file has no rows".into()));
        }
        Ok(Err(jobs::split::SplitError::Invalid(m))) => {
            cleanup().await;
            return Err(ApiError::InvalidBatch(m));
        }
        Ok(Err(jobs::split::SplitError::Io(e))) => {
            cleanup().await;
            return Err(storage_error("cannot split the upload into chunks", &e));
        }
        Err(e) => {
            cleanup().await;
            return Err(e);
        }
    };
    let local = std::path::Path::new(&model.source).is_dir() && model.name == "local";
    let pinned = PinnedModel {
        name: model.name.clone(),
        version: model.version.clone(),
        local_uri: local.then(|| model.source.clone()),
    };
    let record = JobRecord {
        owner,
        ..JobRecord::scoring(
            id.clone(),
            format,
            split.rows,
            split.chunks,
            pinned.clone(),
            reasons,
        )
    };
    // The record and its key are written in one step (a key never names a missing job); a
    // concurrent request with the same key may have won since the check above.
    let created = match &once {
        Some(once) => b.store.create_once(&record, once).await,
        None => b.store.create(&record).await.map(|_| Created::New),
    };
    match created {
        Ok(Created::New) => {}
        Ok(seen) => {
            cleanup().await;
            return repeated(&b, seen, sent).await;
        }
        Err(e) => {
            cleanup().await;
            return Err(store_error(e));
        }
    }
    // The request's trace context rides along, so the workers' spans join this trace.
    let trace_context = telemetry::current_trace_context();
    let chunk_rows = state.settings.batch_chunk_rows;
    let tasks = (0..split.chunks)
        .map(|chunk| ScoreChunk {
            job_id: id.clone(),
            chunk,
            format,
            model: pinned.clone(),
            trace_context: trace_context.clone(),
            first_row: u64::from(chunk) * chunk_rows,
            reasons,
        })
        .collect();
    if let Err(e) = b.queue.push_all(tasks).await {
        let reason = format!("queueing the chunks failed: {e}");
        let _ = b.store.finish(&id, JobState::Failed, &reason).await;
        return Err(ApiError::Unavailable(format!(
            "batch jobs are unavailable: {reason}"
        )));
    }
    // A failure here leaves the job marked unqueued: the reaper would fail a job whose chunks
    // are on the queue, so it is only logged; the chunks are scored whatever the marker says.
    if let Err(e) = b.store.mark_queued(&id).await {
        tracing::warn!(job.id = %id, error = %e, "cannot record that the job's chunks are queued");
    }
    tracing::info!(job.id = %id, rows = split.rows, chunks = split.chunks, "batch job queued");
    Ok(HttpResponse::Accepted()
        .insert_header(("Location", format!("/v1/batch-jobs/{id}")))
        .json(job_json(&record)))
}

/// The answer to a request whose `Idempotency-Key` was seen before: the first job (200) when it
/// was the same request, a 422 when it was not (as the IETF Idempotency-Key draft says).
async fn repeated(b: &Batch, seen: Created, sent: &str) -> Result<HttpResponse, ApiError> {
    match seen {
        Created::Repeat(id) => {
            let existing = b.store.get(&id).await.map_err(store_error)?;
            Ok(HttpResponse::Ok()
                .insert_header(("Location", format!("/v1/batch-jobs/{id}")))
                .json(job_json(&existing)))
        }
        Created::Conflict(id) => {
            Err(ApiError::InvalidBatch(format!(
                "Idempotency-Key '{sent}' was used for a different request (job {id}); use a new key for a new file"
            )))
        }
        Created::New => Err(ApiError::Unexpected(anyhow::anyhow!(
            "a new job is not a repeat"
        ))),
    }
}

pub async fn get(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let b = batch(&state)?;
    let id = path.into_inner();
    if !jobs::is_valid_job_id(&id) {
        return Err(ApiError::NotFound(format!(
            "batch job '{}' not found",
            id.chars().take(64).collect::<String>()
        )));
    }
    let r = scoring_job(&req, &b, &id).await?;
    Ok(HttpResponse::Ok().json(job_json(&r)))
}

/// A batch-scoring job's record (training jobs have their own endpoints), if the caller may see
/// it: another key's job is "not found", as one that does not exist.
async fn scoring_job(req: &HttpRequest, b: &Batch, id: &str) -> Result<JobRecord, ApiError> {
    let r = b.store.get(id).await.map_err(store_error)?;
    let caller = crate::auth::caller(req);
    if r.kind != jobs::JobKind::Score || !crate::auth::may_see(caller.as_ref(), r.owner.as_deref())
    {
        return Err(ApiError::NotFound(format!("batch job '{id}' not found")));
    }
    Ok(r)
}

pub async fn cancel(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let b = batch(&state)?;
    let id = path.into_inner();
    if !jobs::is_valid_job_id(&id) {
        return Err(ApiError::NotFound("batch job not found".into()));
    }
    scoring_job(&req, &b, &id).await?;
    b.store
        .finish(&id, JobState::Cancelled, "cancelled by the client")
        .await
        .map_err(store_error)?;
    let r = b.store.get(&id).await.map_err(store_error)?;
    Ok(HttpResponse::Ok().json(job_json(&r)))
}

/// The format a client asks for in `Accept`: NDJSON when it names it (before CSV), else CSV.
fn wants_ndjson(req: &HttpRequest) -> bool {
    let accept = req
        .headers()
        .get("accept")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_ascii_lowercase();
    let pos = |needle: &str| accept.find(needle);
    let nd = [
        "application/x-ndjson",
        "application/ndjson",
        "application/jsonl",
    ]
    .iter()
    .filter_map(|m| pos(m))
    .min();
    match (nd, pos("text/csv")) {
        (Some(n), Some(c)) => n < c,
        (Some(_), None) => true,
        _ => false,
    }
}

/// One CSV part as NDJSON lines: carried-through columns as strings, the probability as a
/// number, the reasons as an array; in the errors part, the row number as a number.
fn part_to_ndjson(csv_bytes: &[u8], errors: bool) -> Result<Vec<u8>, csv::Error> {
    let mut rdr = csv::Reader::from_reader(csv_bytes);
    let headers = rdr.headers()?.clone();
    let mut out = Vec::with_capacity(csv_bytes.len() * 2);
    for rec in rdr.records() {
        let rec = rec?;
        let mut obj = serde_json::Map::new();
        let mut reasons = Vec::new();
        for (h, v) in headers.iter().zip(rec.iter()) {
            if !errors && h.starts_with("reason_") && h[7..].parse::<u32>().is_ok() {
                if !v.is_empty() {
                    reasons.push(serde_json::Value::from(v));
                }
                continue;
            }
            let value = match h {
                "default_probability" if !errors => v
                    .parse::<f64>()
                    .map_or(serde_json::Value::Null, serde_json::Value::from),
                "row" if errors => v
                    .parse::<u64>()
                    .map_or(serde_json::Value::from(v), serde_json::Value::from),
                _ => serde_json::Value::from(v),
            };
            obj.insert(h.to_string(), value);
        }
        if !errors {
            obj.insert("reasons".into(), serde_json::Value::Array(reasons));
        }
        serde_json::to_writer(&mut out, &obj).expect("JSON to memory");
        out.push(b'\n');
    }
    Ok(out)
}

/// Streams the parts of a finished job, in chunk order, as one CSV (the header once) or as
/// NDJSON. One part is in memory at a time.
async fn parts(
    req: &HttpRequest,
    state: &AppState,
    id: String,
    errors: bool,
) -> Result<HttpResponse, ApiError> {
    let b = batch(state)?;
    if !jobs::is_valid_job_id(&id) {
        return Err(ApiError::NotFound("batch job not found".into()));
    }
    let r = scoring_job(req, &b, &id).await?;
    if r.state != JobState::Succeeded {
        return Err(ApiError::NotFinished(format!(
            "batch job '{id}' is {}; results are available once it has succeeded",
            r.state.as_str()
        )));
    }
    let files: Vec<std::path::PathBuf> = (0..r.chunks_total)
        .map(|n| {
            if errors {
                b.layout.errors(&id, n)
            } else {
                b.layout.result(&id, n)
            }
            .expect("valid id")
        })
        .collect();
    let ndjson = wants_ndjson(req);
    let stream =
        futures_util::stream::iter(files.into_iter().enumerate()).then(move |(i, f)| async move {
            let bytes = tokio::fs::read(&f).await.map_err(|e| {
                actix_web::error::ErrorInternalServerError(format!("result part missing: {e}"))
            })?;
            let body = if ndjson {
                tokio::task::spawn_blocking(move || part_to_ndjson(&bytes, errors))
                    .await
                    .map_err(actix_web::error::ErrorInternalServerError)?
                    .map_err(|e| {
                        actix_web::error::ErrorInternalServerError(format!(
                            "result part unreadable: {e}"
                        ))
                    })?
            } else if i == 0 {
                bytes
            } else {
                // The header line only once.
                bytes
                    .iter()
                    .position(|b| *b == b'\n')
                    .map_or(Vec::new(), |p| bytes[p + 1..].to_vec())
            };
            Ok::<_, actix_web::Error>(web::Bytes::from(body))
        });
    Ok(HttpResponse::Ok()
        .content_type(if ndjson {
            "application/x-ndjson"
        } else {
            "text/csv; charset=utf-8"
        })
        .streaming(stream))
}

pub async fn results(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    parts(&req, &state, path.into_inner(), false).await
}

pub async fn errors(
    req: HttpRequest,
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    parts(&req, &state, path.into_inner(), true).await
}
