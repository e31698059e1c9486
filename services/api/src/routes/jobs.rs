//! What the batch-job and training-job routes share: the job backend (or a 503 while Redis is
//! away), streamed uploads, job folders and job-store errors.

use std::sync::Arc;

use actix_web::web;
use futures_util::StreamExt;
use jobs::StoreError;
use tokio::io::AsyncWriteExt;

use crate::batch::Batch;
use crate::error::ApiError;
use crate::state::AppState;

pub fn batch(state: &AppState) -> Result<Arc<Batch>, ApiError> {
    state.batch.load_full().ok_or_else(|| {
        ApiError::Unavailable(
            "batch jobs are unavailable: Redis cannot be reached (single scoring still works); retry shortly".into(),
        )
    })
}

/// Streams a request body to `path` (never whole in memory), up to `limit` bytes.
pub async fn save_upload(
    payload: &mut web::Payload,
    path: &std::path::Path,
    limit: u64,
) -> Result<u64, ApiError> {
    // Large writes: every write to a tokio file is a trip to the blocking pool.
    let mut file = tokio::io::BufWriter::with_capacity(
        4 << 20,
        tokio::fs::File::create(path)
            .await
            .map_err(|e| ApiError::Unexpected(anyhow::anyhow!("cannot create the upload: {e}")))?,
    );
    let mut size = 0u64;
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::Malformed(format!("upload interrupted: {e}")))?;
        size += chunk.len() as u64;
        if size > limit {
            return Err(ApiError::TooLarge(limit as usize));
        }
        file.write_all(&chunk)
            .await
            .map_err(|e| ApiError::Unexpected(anyhow::anyhow!("cannot store the upload: {e}")))?;
    }
    file.flush()
        .await
        .map_err(|e| ApiError::Unexpected(anyhow::anyhow!("cannot store the upload: {e}")))?;
    Ok(size)
}

/// Creates the job's folder on the shared storage.
pub async fn create_job_dir(b: &Batch, id: &str) -> Result<std::path::PathBuf, ApiError> {
    let dir = b
        .layout
        .job_dir(id)
        .ok_or_else(|| ApiError::Unexpected(anyhow::anyhow!("invalid job id")))?;
    tokio::fs::create_dir_all(&dir).await.map_err(|e| {
        ApiError::Unexpected(anyhow::anyhow!("cannot create {}: {e}", dir.display()))
    })?;
    Ok(dir)
}

pub fn store_error(e: StoreError) -> ApiError {
    match e {
        StoreError::NotFound(id) => ApiError::NotFound(format!("batch job '{id}' not found")),
        // Only the Redis store can be unavailable.
        StoreError::Unavailable(m) => ApiError::Unavailable(format!(
            "batch jobs are unavailable: Redis cannot be reached ({m}); single scoring still works, retry shortly"
        )),
        other => ApiError::Unexpected(anyhow::anyhow!(other)),
    }
}
