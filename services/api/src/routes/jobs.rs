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

/// A stored upload: its size and the SHA-256 of its bytes (hex).
pub struct Upload {
    pub size: u64,
    pub sha256: String,
}

/// Streams a request body to `path` (never whole in memory), up to `limit` bytes, and syncs it
/// to disk before answering: a job is never accepted on a file the disk did not keep. A full
/// disk is a 507; the caller removes what was written.
pub async fn save_upload<S, E>(
    payload: &mut S,
    path: &std::path::Path,
    limit: u64,
) -> Result<Upload, ApiError>
where
    S: futures_util::Stream<Item = Result<web::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    use sha2::Digest;
    let stored = |e: std::io::Error| storage_error("cannot store the upload", &e);
    // Large writes: every write to a tokio file is a trip to the blocking pool.
    let mut file = tokio::io::BufWriter::with_capacity(
        4 << 20,
        tokio::fs::File::create(path).await.map_err(stored)?,
    );
    let mut size = 0u64;
    let mut hash = sha2::Sha256::new();
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| ApiError::Malformed(format!("upload interrupted: {e}")))?;
        size += chunk.len() as u64;
        if size > limit {
            return Err(ApiError::TooLarge(limit as usize));
        }
        hash.update(&chunk);
        file.write_all(&chunk).await.map_err(stored)?;
    }
    file.flush().await.map_err(stored)?;
    file.get_ref().sync_all().await.map_err(stored)?;
    Ok(Upload {
        size,
        sha256: hex::encode(hash.finalize()),
    })
}

/// An I/O error on the shared storage: 507 when the disk (or quota) is full, else a 500.
pub fn storage_error(what: &str, e: &std::io::Error) -> ApiError {
    match e.kind() {
        std::io::ErrorKind::StorageFull | std::io::ErrorKind::QuotaExceeded => {
            ApiError::InsufficientStorage(format!("{what}: the job storage is full"))
        }
        _ => ApiError::Unexpected(anyhow::anyhow!("{what}: {e}")),
    }
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

#[cfg(test)]
mod tests {
    use actix_web::ResponseError;

    use super::*;

    /// A full disk (here the kernel's `/dev/full`, whose writes fail with ENOSPC) is a 507 the
    /// client can act on, not a 500.
    #[actix_web::test]
    async fn a_full_disk_is_a_507() {
        let chunk = web::Bytes::from(vec![7u8; 8 << 20]);
        let mut body = futures_util::stream::iter([Ok::<_, std::io::Error>(chunk)]);
        let e = save_upload(&mut body, std::path::Path::new("/dev/full"), 1 << 30)
            .await
            .err()
            .expect("writing to /dev/full fails");
        assert_eq!(e.status_code().as_u16(), 507, "{e}");
    }

    #[actix_web::test]
    async fn an_upload_is_hashed_as_it_is_stored() {
        let dir = std::env::temp_dir().join(format!("upload-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let parts = ["a,b\n", "1,2\n"].map(|p| Ok::<_, std::io::Error>(web::Bytes::from(p)));
        let mut body = futures_util::stream::iter(parts);
        let up = save_upload(&mut body, &dir.join("in.csv"), 100)
            .await
            .unwrap();
        assert_eq!(up.size, 8);
        assert_eq!(
            up.sha256,
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"a,b\n1,2\n"))
        );
        assert_eq!(std::fs::read(dir.join("in.csv")).unwrap(), b"a,b\n1,2\n");
    }
}
