//! `POST /v1/batch-jobs`, `GET /v1/batch-jobs/{id}`, `GET …/results`, `GET …/errors`,
//! `DELETE /v1/batch-jobs/{id}`.

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use apalis::prelude::TaskSink;
use futures_util::StreamExt;
use jobs::{Format, JobRecord, JobState, PinnedModel, ScoreChunk, StoreError};
use serde_json::json;
use tokio::io::AsyncWriteExt;

use crate::batch::Batch;
use crate::error::ApiError;
use crate::startup::AppState;

fn batch(state: &AppState) -> Result<Arc<Batch>, ApiError> {
    state.batch.load_full().ok_or_else(|| {
        ApiError::Unavailable(if state.settings.redis_url.is_some() {
            "batch jobs are unavailable: Redis cannot be reached (single scoring still works); retry shortly".into()
        } else {
            "batch jobs need REDIS_URL to be set".into()
        })
    })
}

fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound(id) => ApiError::NotFound(format!("batch job '{id}' not found")),
        StoreError::Unavailable(m) => {
            ApiError::Unavailable(format!("batch jobs are unavailable: {m}"))
        }
        other => ApiError::Unexpected(anyhow::anyhow!(other)),
    }
}

fn job_json(r: &JobRecord) -> serde_json::Value {
    let mut v = serde_json::to_value(r).unwrap_or_default();
    v["links"] = json!({"self": format!("/v1/batch-jobs/{}", r.id), "results": format!("/v1/batch-jobs/{}/results", r.id), "errors": format!("/v1/batch-jobs/{}/errors", r.id)});
    v
}

/// Accepts a CSV or NDJSON file of applications: streams it to shared storage, checks the
/// header against the serving model, splits it into chunks, pins the model version and queues
/// one task per chunk. 202 with the job and a `Location`.
pub async fn create(
    req: HttpRequest,
    mut payload: web::Payload,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
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
    let b = batch(&state)?;
    let model = state.models.current().ok_or(ApiError::NotReady)?;
    let id = jobs::new_job_id();
    let input = b
        .layout
        .input(&id, format)
        .ok_or_else(|| ApiError::Unexpected(anyhow::anyhow!("job id")))?;
    let dir = b
        .layout
        .job_dir(&id)
        .ok_or_else(|| ApiError::Unexpected(anyhow::anyhow!("job id")))?;
    tokio::fs::create_dir_all(&dir).await.map_err(|e| {
        ApiError::Unexpected(anyhow::anyhow!("cannot create {}: {e}", dir.display()))
    })?;
    let cleanup = || async {
        let _ = tokio::fs::remove_dir_all(&dir).await;
    };
    // Streamed to disk, never whole in memory.
    let mut file = tokio::fs::File::create(&input)
        .await
        .map_err(|e| ApiError::Unexpected(anyhow::anyhow!("cannot create the upload: {e}")))?;
    let mut size = 0u64;
    while let Some(chunk) = payload.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                cleanup().await;
                return Err(ApiError::Malformed(format!("upload interrupted: {e}")));
            }
        };
        size += chunk.len() as u64;
        if size > state.settings.batch_max_bytes {
            cleanup().await;
            return Err(ApiError::TooLarge(state.settings.batch_max_bytes as usize));
        }
        if let Err(e) = file.write_all(&chunk).await {
            cleanup().await;
            return Err(ApiError::Unexpected(anyhow::anyhow!(
                "cannot store the upload: {e}"
            )));
        }
    }
    let _ = file.flush().await;
    drop(file);
    let spec = model.scorer.bundle().spec.clone();
    let (layout, chunk_rows, job) = (
        b.layout.clone(),
        state.settings.batch_chunk_rows,
        id.clone(),
    );
    let split = tokio::task::spawn_blocking(move || {
        jobs::split::split_file(&input, format, chunk_rows, &spec, |n| {
            layout.chunk(&job, n, format).expect("valid id")
        })
    })
    .await
    .map_err(|e| ApiError::Unexpected(anyhow::anyhow!(e)))?;
    let split = match split {
        Ok(s) if s.rows > 0 => s,
        Ok(_) => {
            cleanup().await;
            return Err(ApiError::InvalidBatch("the file has no rows".into()));
        }
        Err(jobs::split::SplitError::Invalid(m)) => {
            cleanup().await;
            return Err(ApiError::InvalidBatch(m));
        }
        Err(e) => {
            cleanup().await;
            return Err(ApiError::Unexpected(anyhow::anyhow!(e)));
        }
    };
    let local = std::path::Path::new(&model.source).is_dir() && model.name == "local";
    let pinned = PinnedModel {
        name: model.name.clone(),
        version: model.version.clone(),
        local_uri: local.then(|| model.source.clone()),
    };
    let now = jobs::now();
    let record = JobRecord {
        id: id.clone(),
        state: JobState::Queued,
        format,
        rows_total: split.rows,
        rows_scored: 0,
        rows_rejected: 0,
        chunks_total: split.chunks,
        chunks_done: 0,
        model: pinned.clone(),
        created_at: now.clone(),
        updated_at: now,
        finished_at: None,
        error: None,
    };
    let created = b
        .store
        .create(&record, key.as_deref())
        .await
        .map_err(store_error);
    let created = match created {
        Ok(c) => c,
        Err(e) => {
            cleanup().await;
            return Err(e);
        }
    };
    if created != id {
        // A repeated submission: the first job stands.
        cleanup().await;
        let existing = b.store.get(&created).await.map_err(store_error)?;
        return Ok(HttpResponse::Ok()
            .insert_header(("Location", format!("/v1/batch-jobs/{created}")))
            .json(job_json(&existing)));
    }
    // The request's trace context rides along, so the workers' spans join this trace.
    let trace_context = {
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        let cx = tracing::Span::current().context();
        let mut carrier = std::collections::HashMap::new();
        opentelemetry::global::get_text_map_propagator(|p| p.inject_context(&cx, &mut carrier));
        carrier
    };
    {
        let mut q = b.queue.lock().await;
        for chunk in 0..split.chunks {
            let task = ScoreChunk {
                job_id: id.clone(),
                chunk,
                format,
                model: pinned.clone(),
                trace_context: trace_context.clone(),
            };
            if let Err(e) = q.push(task).await {
                let reason = format!("queueing chunk {chunk} failed: {e}");
                let _ = b.store.finish(&id, JobState::Failed, &reason).await;
                return Err(ApiError::Unavailable(format!(
                    "batch jobs are unavailable: {reason}"
                )));
            }
        }
    }
    tracing::info!(job.id = %id, rows = split.rows, chunks = split.chunks, "batch job queued");
    Ok(HttpResponse::Accepted()
        .insert_header(("Location", format!("/v1/batch-jobs/{id}")))
        .json(job_json(&record)))
}

pub async fn get(
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
    let r = b.store.get(&id).await.map_err(store_error)?;
    Ok(HttpResponse::Ok().json(job_json(&r)))
}

pub async fn cancel(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    let b = batch(&state)?;
    let id = path.into_inner();
    if !jobs::is_valid_job_id(&id) {
        return Err(ApiError::NotFound("batch job not found".into()));
    }
    b.store
        .finish(&id, JobState::Cancelled, "cancelled by the client")
        .await
        .map_err(store_error)?;
    let r = b.store.get(&id).await.map_err(store_error)?;
    Ok(HttpResponse::Ok().json(job_json(&r)))
}

/// Streams the parts of a finished job, in chunk order, as one CSV (the header once).
async fn parts(state: &AppState, id: String, errors: bool) -> Result<HttpResponse, ApiError> {
    let b = batch(state)?;
    if !jobs::is_valid_job_id(&id) {
        return Err(ApiError::NotFound("batch job not found".into()));
    }
    let r = b.store.get(&id).await.map_err(store_error)?;
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
    // One part at a time, skipping the header line of every part but the first.
    let stream =
        futures_util::stream::iter(files.into_iter().enumerate()).then(|(i, f)| async move {
            let bytes = tokio::fs::read(&f).await.map_err(|e| {
                actix_web::error::ErrorInternalServerError(format!("result part missing: {e}"))
            })?;
            let body = if i == 0 {
                bytes
            } else {
                bytes
                    .iter()
                    .position(|b| *b == b'\n')
                    .map_or(Vec::new(), |p| bytes[p + 1..].to_vec())
            };
            Ok::<_, actix_web::Error>(web::Bytes::from(body))
        });
    Ok(HttpResponse::Ok()
        .content_type("text/csv; charset=utf-8")
        .streaming(stream))
}

pub async fn results(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    parts(&state, path.into_inner(), false).await
}

pub async fn errors(
    path: web::Path<String>,
    state: web::Data<AppState>,
) -> Result<HttpResponse, ApiError> {
    parts(&state, path.into_inner(), true).await
}
