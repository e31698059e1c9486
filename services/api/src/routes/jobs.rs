//! What the batch-job and training-job routes share: the job backend (or a 503 while Redis is
//! away), streamed uploads, job folders and job-store errors.

use std::sync::Arc;

use actix_web::web;
use futures_util::StreamExt;
use jobs::StoreError;

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
///
/// The bytes are hashed and written on a blocking thread while the next ones arrive. With
/// `written`, that thread says how far the file has been written, and whether it ended whole,
/// so that another thread can read it as it grows ([`jobs::split::Growing`]).
pub async fn save_upload<S, E>(
    payload: &mut S,
    path: &std::path::Path,
    limit: u64,
    written: Option<Arc<jobs::split::Written>>,
) -> Result<Upload, ApiError>
where
    S: futures_util::Stream<Item = Result<web::Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    // Whatever happens below, a reader of the file is told that it has ended, whole or not.
    let ends = Ends(written.clone());
    let stored = |e: std::io::Error| storage_error("cannot store the upload", &e);
    let (tx, mut rx) = tokio::sync::mpsc::channel::<web::Bytes>(64);
    let path = path.to_path_buf();
    let writer = tokio::task::spawn_blocking(move || -> std::io::Result<_> {
        use sha2::Digest;
        use std::io::Write;
        let mut file = std::fs::File::create(&path)?;
        let mut hash = sha2::Sha256::new();
        // Large writes: 4 MiB at a time.
        let mut buf = Vec::with_capacity(4 << 20);
        let flush = |file: &mut std::fs::File, buf: &mut Vec<u8>| -> std::io::Result<()> {
            file.write_all(buf)?;
            if let Some(w) = &written {
                w.grew(buf.len() as u64);
            }
            buf.clear();
            Ok(())
        };
        while let Some(chunk) = rx.blocking_recv() {
            hash.update(&chunk);
            buf.extend_from_slice(&chunk);
            if buf.len() >= 4 << 20 {
                flush(&mut file, &mut buf)?;
            }
        }
        flush(&mut file, &mut buf)?;
        Ok((hex::encode(hash.finalize()), file))
    });
    let mut size = 0u64;
    let mut failed = None;
    while let Some(chunk) = payload.next().await {
        let chunk = match chunk {
            Ok(c) => c,
            Err(e) => {
                failed = Some(ApiError::Malformed(format!("upload interrupted: {e}")));
                break;
            }
        };
        size += chunk.len() as u64;
        if size > limit {
            failed = Some(ApiError::TooLarge(limit as usize));
            break;
        }
        if tx.send(chunk).await.is_err() {
            // The writer stopped: its error is the answer.
            break;
        }
    }
    drop(tx);
    let joined = |e| ApiError::Unexpected(anyhow::anyhow!("{e}"));
    let (hashed, file) = writer.await.map_err(joined)?.map_err(stored)?;
    if let Some(e) = failed {
        return Err(e);
    }
    tokio::task::spawn_blocking(move || file.sync_all())
        .await
        .map_err(joined)?
        .map_err(stored)?;
    ends.whole();
    Ok(Upload {
        size,
        sha256: hashed,
    })
}

/// Tells a file's reader it has ended: whole when [`Ends::whole`] is called, otherwise not.
struct Ends(Option<Arc<jobs::split::Written>>);

impl Ends {
    fn whole(mut self) {
        if let Some(w) = self.0.take() {
            w.ended(true);
        }
    }
}

impl Drop for Ends {
    fn drop(&mut self) {
        if let Some(w) = self.0.take() {
            w.ended(false);
        }
    }
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
        let e = save_upload(&mut body, std::path::Path::new("/dev/full"), 1 << 30, None)
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
        let up = save_upload(&mut body, &dir.join("in.csv"), 100, None)
            .await
            .unwrap();
        assert_eq!(up.size, 8);
        assert_eq!(
            up.sha256,
            hex::encode(<sha2::Sha256 as sha2::Digest>::digest(b"a,b\n1,2\n"))
        );
        assert_eq!(std::fs::read(dir.join("in.csv")).unwrap(), b"a,b\n1,2\n");
    }

    /// A reader following the upload (the batch split) gets every byte of an upload that
    /// completes, and an error, not a wait without end, for one over the limit.
    #[actix_web::test]
    async fn a_reader_follows_the_upload_to_its_end_whole_or_not() {
        use std::io::Read;
        let dir = std::env::temp_dir().join(format!("upload-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&dir).unwrap();
        let piece = vec![b'x'; 3 << 20];
        for (limit, whole) in [(100 << 20, true), (5 << 20, false)] {
            let path = dir.join(format!("in-{limit}.csv"));
            std::fs::write(&path, "").unwrap();
            let written = Arc::new(jobs::split::Written::default());
            let mut reader = jobs::split::Growing::new(&path, written.clone()).unwrap();
            let (tx, rx) = std::sync::mpsc::channel();
            std::thread::spawn(move || {
                let mut got = Vec::new();
                let _ = tx.send(reader.read_to_end(&mut got).map(|_| got));
            });
            let parts = [0, 1, 2].map(|_| Ok::<_, std::io::Error>(web::Bytes::from(piece.clone())));
            let mut body = futures_util::stream::iter(parts);
            let saved = save_upload(&mut body, &path, limit, Some(written)).await;
            let read = rx
                .recv_timeout(std::time::Duration::from_secs(10))
                .expect("the reader is told the upload ended");
            if whole {
                assert_eq!(saved.unwrap().size, 9 << 20);
                assert_eq!(read.unwrap(), std::fs::read(&path).unwrap());
            } else {
                let e = saved.err().expect("over the limit");
                assert_eq!(e.status_code().as_u16(), 413, "{e}");
                assert!(read.is_err());
            }
        }
    }
}
