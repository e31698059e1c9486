//! Artifacts on a local directory (the shared volume in Kubernetes), streamed in and out.
//!
//! Every path that reaches the filesystem goes through [`ArtifactStore::resolve`]: MLflow's
//! history of path traversal and local file inclusion (CVE-2023-1177, CVE-2023-6909,
//! CVE-2024-1483, CVE-2024-1558, CVE-2024-3848) came from paths and URIs that escaped the root,
//! so `..`, absolute paths, other schemes, `#`, `?`, percent-encoding, backslashes and symlinks
//! pointing out of the root are all refused.

use std::path::{Component, Path, PathBuf};

use futures_util::StreamExt;
use serde::Serialize;
use tokio::io::AsyncWriteExt;

use crate::error::{invalid, RegistryError, Result};

/// The scheme of proxied artifact URIs.
pub const SCHEME: &str = "mlflow-artifacts:";

#[derive(Debug, Clone)]
pub struct ArtifactStore {
    root: PathBuf,
    /// The jobs' folder (applicants' uploads and results) when it lies inside the root: never
    /// served, listed or written, whatever path leads there.
    excluded: Option<PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct FileInfo {
    pub path: String,
    pub is_dir: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub file_size: Option<u64>,
}

/// Checks a relative artifact path and returns its normalised form ("" is the root).
pub fn check_relative(path: &str) -> Result<String> {
    // MLflow's exact message (clients and its tests match it).
    let bad = || invalid("Invalid path".to_string());
    if path.contains(['\0', '\\', '#', '?', '%']) || path.contains("://") {
        return bad();
    }
    if path.starts_with('/') || path.starts_with('~') {
        return bad();
    }
    // A Windows drive or any scheme-like prefix ("file:", "c:").
    if let Some((head, _)) = path.split_once(':') {
        if !head.contains('/') {
            return bad();
        }
    }
    let trimmed = path.trim_end_matches('/');
    if trimmed.is_empty() {
        return Ok(String::new());
    }
    for part in trimmed.split('/') {
        if part.is_empty() || part == "." || part == ".." {
            return bad();
        }
    }
    let p = Path::new(trimmed);
    if !p.components().all(|c| matches!(c, Component::Normal(_))) {
        return bad();
    }
    Ok(trimmed.to_string())
}

/// The real path of `p`, which may not exist yet: its deepest existing ancestor resolved
/// (symlinks and all), with the rest appended.
fn real_path(p: &Path) -> std::io::Result<PathBuf> {
    let abs = std::path::absolute(p)?;
    let mut existing = abs.as_path();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_os_string());
                existing = parent;
            }
            _ => break,
        }
    }
    let mut real = existing.canonicalize()?;
    for part in rest.iter().rev() {
        real.push(part);
    }
    Ok(real)
}

/// The proxy's route, as `mlflow server` records it in artifact URIs when its default artifact
/// root is its own URL (`http://host:port/api/2.0/mlflow-artifacts/artifacts`).
const HTTP_PROXY_ROUTE: &str = "api/2.0/mlflow-artifacts/artifacts";

/// The relative path, under this server's artifact root, of an `mlflow-artifacts:/…` URI or of
/// the proxy's own URL (`http(s)://host/api/2.0/mlflow-artifacts/artifacts/…`). Other URIs
/// (`file://`, `s3://`, paths) are the client's business: the server never reads them.
pub fn uri_to_relative(uri: &str) -> Result<String> {
    if let Some(sub) = proxy_url_path(uri) {
        return check_relative(sub.trim_start_matches('/'));
    }
    let Some(rest) = uri.strip_prefix(SCHEME) else {
        return invalid(format!(
            "Invalid artifact URI '{uri}': only {SCHEME}/… URIs are served here"
        ));
    };
    if rest.starts_with("//") {
        return invalid(format!(
            "Invalid artifact URI '{uri}': artifact URIs may not name another host"
        ));
    }
    check_relative(rest.trim_start_matches('/'))
}

/// The path after the proxy's route in an `http(s)://host/api/2.0/mlflow-artifacts/artifacts…`
/// URL, if `uri` is one.
fn proxy_url_path(uri: &str) -> Option<&str> {
    let rest = uri
        .strip_prefix("http://")
        .or_else(|| uri.strip_prefix("https://"))?;
    let sub = rest.split_once('/')?.1.strip_prefix(HTTP_PROXY_ROUTE)?;
    (sub.is_empty() || sub.starts_with('/')).then_some(sub)
}

/// Whether a URI names this server's own store (`mlflow-artifacts:…` or the proxy's URL), so
/// that it must stay inside the root; other URIs are recorded as given.
pub fn is_own_store_uri(uri: &str) -> bool {
    uri.starts_with(SCHEME) || proxy_url_path(uri).is_some()
}

/// Whether `s` starts with a URI scheme (`s3:`, `file:`), not a path (a one-letter "scheme" is
/// a Windows drive).
pub fn has_scheme(s: &str) -> bool {
    s.split_once(':')
        .is_some_and(|(scheme, _)| scheme.len() > 1 && !scheme.contains('/'))
}

/// `%XX` sequences decoded once; invalid ones are kept as they are.
pub fn percent_decode(s: &str) -> String {
    percent_encoding::percent_decode_str(s)
        .decode_utf8_lossy()
        .into_owned()
}

/// `root/sub` for store paths, where either may be empty (the root itself).
pub fn join(root: &str, sub: &str) -> String {
    match (root.is_empty(), sub.is_empty()) {
        (true, _) => sub.to_string(),
        (_, true) => root.to_string(),
        _ => format!("{root}/{sub}"),
    }
}

/// A folder's entries as MLflow lists them: paths relative to the listed root, so that `sub`
/// prefixes each name.
pub fn listing_json(files: Vec<FileInfo>, sub: &str) -> Vec<serde_json::Value> {
    files
        .into_iter()
        .map(|f| {
            let mut v = serde_json::json!({"path": join(sub, &f.path), "is_dir": f.is_dir});
            if let Some(size) = f.file_size {
                v["file_size"] = serde_json::json!(size);
            }
            v
        })
        .collect()
}

impl ArtifactStore {
    pub fn new(root: &Path) -> anyhow::Result<ArtifactStore> {
        std::fs::create_dir_all(root)?;
        Ok(ArtifactStore {
            root: root.canonicalize()?,
            excluded: None,
        })
    }

    /// Keeps `jobs_root` out of reach when it is inside the artifact root (a setup where the
    /// API's JOBS_ROOT was nested in the registry's volume). It need not exist yet.
    pub fn excluding(mut self, jobs_root: &Path) -> anyhow::Result<ArtifactStore> {
        let real = real_path(jobs_root)?;
        if self.root.starts_with(&real) {
            anyhow::bail!(
                "the artifact root {} is inside JOBS_ROOT {}: applicants' files would be served; \
                 give the registry its own folder",
                self.root.display(),
                real.display()
            );
        }
        self.excluded = Some(real);
        Ok(self)
    }

    fn is_excluded(&self, p: &Path) -> bool {
        self.excluded.as_ref().is_some_and(|e| p.starts_with(e))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The filesystem path of a checked relative path, confined to the root even through
    /// symlinks: the deepest existing ancestor must resolve inside the root.
    pub fn resolve(&self, rel: &str) -> Result<PathBuf> {
        let rel = check_relative(rel)?;
        let full = self.root.join(&rel);
        let mut existing = full.as_path();
        while !existing.exists() {
            match existing.parent() {
                Some(p) => existing = p,
                None => break,
            }
        }
        let real = existing.canonicalize().map_err(|e| {
            RegistryError::Unexpected(anyhow::anyhow!(
                "cannot resolve {}: {e}",
                existing.display()
            ))
        })?;
        if !real.starts_with(&self.root) || self.is_excluded(&real) || self.is_excluded(&full) {
            return invalid(format!("Invalid path: '{rel}'"));
        }
        Ok(full)
    }

    /// Streams an upload into place (a temporary file renamed when complete).
    pub async fn put<S, E>(&self, rel: &str, mut body: S, max_bytes: u64) -> Result<u64>
    where
        S: futures_util::Stream<Item = std::result::Result<actix_web::web::Bytes, E>> + Unpin,
        E: std::fmt::Display,
    {
        let target = self.resolve(rel)?;
        if check_relative(rel)?.is_empty() {
            return invalid("Invalid path: an upload needs a file name");
        }
        if target.is_dir() {
            return invalid(format!("Invalid path: '{rel}' is a directory"));
        }
        let parent = target
            .parent()
            .ok_or_else(|| RegistryError::InvalidParameter("Invalid path".into()))?;
        tokio::fs::create_dir_all(parent).await.map_err(|e| {
            RegistryError::Unexpected(anyhow::anyhow!("cannot create {}: {e}", parent.display()))
        })?;
        // Re-check after creating directories: a symlinked parent must not lead outside.
        self.resolve(rel)?;
        let tmp = parent.join(format!(".upload-{}", uuid::Uuid::new_v4().simple()));
        let mut file = tokio::fs::File::create(&tmp).await.map_err(|e| {
            RegistryError::Unexpected(anyhow::anyhow!("cannot create {}: {e}", tmp.display()))
        })?;
        let mut written = 0u64;
        let result: Result<()> = async {
            while let Some(chunk) = body.next().await {
                let chunk = chunk
                    .map_err(|e| RegistryError::BadRequest(format!("upload interrupted: {e}")))?;
                written += chunk.len() as u64;
                if written > max_bytes {
                    return invalid(format!(
                        "Artifact is larger than the limit of {max_bytes} bytes"
                    ));
                }
                file.write_all(&chunk)
                    .await
                    .map_err(|e| RegistryError::Unexpected(anyhow::anyhow!("write failed: {e}")))?;
            }
            file.flush()
                .await
                .map_err(|e| RegistryError::Unexpected(anyhow::anyhow!("write failed: {e}")))?;
            Ok(())
        }
        .await;
        if let Err(e) = result {
            let _ = tokio::fs::remove_file(&tmp).await;
            return Err(e);
        }
        tokio::fs::rename(&tmp, &target).await.map_err(|e| {
            RegistryError::Unexpected(anyhow::anyhow!("cannot move upload into place: {e}"))
        })?;
        Ok(written)
    }

    /// Lists a directory: names relative to it. A missing directory, or a file, lists as empty
    /// (MLflow answers `{}` there, and clients rely on it).
    pub async fn list(&self, rel: &str) -> Result<Vec<FileInfo>> {
        let dir = self.resolve(rel)?;
        if !dir.is_dir() {
            return Ok(Vec::new());
        }
        let mut out = Vec::new();
        let mut rd = tokio::fs::read_dir(&dir).await.map_err(|e| {
            RegistryError::Unexpected(anyhow::anyhow!("cannot list {}: {e}", dir.display()))
        })?;
        while let Ok(Some(entry)) = rd.next_entry().await {
            let name = entry.file_name().to_string_lossy().to_string();
            if name.starts_with(".upload-") {
                continue;
            }
            // symlink_metadata: a symlink is never followed out of the root.
            let Ok(meta) = tokio::fs::symlink_metadata(entry.path()).await else {
                continue;
            };
            if meta.file_type().is_symlink() || self.is_excluded(&entry.path()) {
                continue;
            }
            out.push(FileInfo {
                path: name,
                is_dir: meta.is_dir(),
                file_size: meta.is_file().then_some(meta.len()),
            });
        }
        out.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(out)
    }

    /// The path of an existing regular file inside the root.
    pub fn file(&self, rel: &str) -> Result<PathBuf> {
        let path = self.resolve(rel)?;
        let real = path
            .canonicalize()
            .map_err(|_| RegistryError::NotFound(format!("Artifact '{rel}' does not exist")))?;
        if !real.starts_with(&self.root) {
            return invalid(format!("Invalid path: '{rel}'"));
        }
        if !real.is_file() {
            return Err(RegistryError::NotFound(format!(
                "Artifact '{rel}' does not exist"
            )));
        }
        Ok(real)
    }

    pub async fn delete(&self, rel: &str) -> Result<()> {
        if check_relative(rel)?.is_empty() {
            return invalid("Invalid path: refusing to delete the artifact root");
        }
        let path = self.resolve(rel)?;
        let meta = match tokio::fs::symlink_metadata(&path).await {
            Ok(m) => m,
            Err(_) => {
                return Err(RegistryError::NotFound(format!(
                    "Artifact '{rel}' does not exist"
                )))
            }
        };
        let r = if meta.is_dir() {
            tokio::fs::remove_dir_all(&path).await
        } else {
            tokio::fs::remove_file(&path).await
        };
        r.map_err(|e| {
            RegistryError::Unexpected(anyhow::anyhow!("cannot delete {}: {e}", path.display()))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traversal_absolute_schemes_fragments_queries_and_encoding_are_refused() {
        for bad in [
            "../etc/passwd",
            "a/../../b",
            "a/./b",
            "/etc/passwd",
            "file:///etc/passwd",
            "file:/etc/passwd",
            "c:/windows",
            "a/b#frag",
            "a/b?x=1",
            "a/%2e%2e/b",
            "a\\..\\b",
            "a//b",
            "~/x",
            "http://evil/x",
            "a\0b",
        ] {
            assert!(check_relative(bad).is_err(), "{bad:?} must be refused");
        }
        for good in [
            "",
            "1/abc/artifacts/model/MLmodel",
            "exp/models/m-1/artifacts",
            "a b/c.json",
            "dir/",
        ] {
            assert!(check_relative(good).is_ok(), "{good:?} must be accepted");
        }
        assert_eq!(
            uri_to_relative("mlflow-artifacts:/1/r/artifacts").unwrap(),
            "1/r/artifacts"
        );
        assert!(uri_to_relative("mlflow-artifacts://other-host/1").is_err());
        assert_eq!(
            uri_to_relative(
                "http://127.0.0.1:5000/api/2.0/mlflow-artifacts/artifacts/0/r/artifacts"
            )
            .unwrap(),
            "0/r/artifacts"
        );
        assert!(
            uri_to_relative("http://h/api/2.0/mlflow-artifacts/artifacts/0/../../etc").is_err()
        );
        assert!(uri_to_relative("http://h/api/2.0/mlflow-artifacts/artifactsX/a").is_err());
        assert!(uri_to_relative("http://h/other/a").is_err());
        assert!(is_own_store_uri("mlflow-artifacts:/x"));
        assert!(is_own_store_uri(
            "https://h/api/2.0/mlflow-artifacts/artifacts/x"
        ));
        assert!(!is_own_store_uri("s3://bucket/mlflow-artifacts/x"));
        assert!(!is_own_store_uri(
            "http://h/api/2.0/mlflow-artifacts/artifactsX"
        ));
        assert_eq!(join("", "a"), "a");
        assert_eq!(join("r", ""), "r");
        assert_eq!(join("r", "a"), "r/a");
        assert!(has_scheme("s3://b") && has_scheme("file:///x"));
        assert!(!has_scheme("my_location") && !has_scheme("C:/x") && !has_scheme("a/b:c"));
        assert!(uri_to_relative("file:///tmp").is_err());
        assert!(uri_to_relative("mlflow-artifacts:/1/../../x").is_err());
    }

    #[test]
    fn a_jobs_root_nested_in_the_artifact_root_is_out_of_reach() {
        let root = std::env::temp_dir().join(format!("art-{}", uuid::Uuid::new_v4().simple()));
        let store = ArtifactStore::new(&root)
            .unwrap()
            .excluding(&root.join("jobs"))
            .unwrap();
        std::fs::create_dir_all(root.join("jobs/j1")).unwrap();
        std::fs::write(root.join("jobs/j1/input.csv"), "applicant").unwrap();
        std::fs::create_dir_all(root.join("1/r/artifacts")).unwrap();
        // Directly, and through a symlink elsewhere in the root.
        std::os::unix::fs::symlink(root.join("jobs"), root.join("1/r/artifacts/j")).unwrap();
        for p in [
            "jobs",
            "jobs/j1/input.csv",
            "jobs/new.csv",
            "1/r/artifacts/j/j1/input.csv",
        ] {
            assert!(store.resolve(p).is_err(), "{p}");
        }
        assert!(store.file("jobs/j1/input.csv").is_err());
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let listed = rt.block_on(store.list("")).unwrap();
        assert_eq!(
            listed.iter().map(|f| f.path.as_str()).collect::<Vec<_>>(),
            vec!["1"]
        );
        assert!(store.resolve("1/r/artifacts").is_ok());
        // A registry root inside the jobs folder is refused at start.
        assert!(ArtifactStore::new(&root.join("jobs/reg"))
            .unwrap()
            .excluding(&root.join("jobs"))
            .is_err());
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn symlinks_out_of_the_root_are_refused() {
        let root = std::env::temp_dir().join(format!("art-{}", uuid::Uuid::new_v4().simple()));
        let outside = std::env::temp_dir().join(format!("out-{}", uuid::Uuid::new_v4().simple()));
        std::fs::create_dir_all(&outside).unwrap();
        std::fs::write(outside.join("secret.txt"), "s").unwrap();
        let store = ArtifactStore::new(&root).unwrap();
        std::os::unix::fs::symlink(&outside, root.join("link")).unwrap();
        assert!(store.resolve("link/secret.txt").is_err());
        assert!(store.file("link/secret.txt").is_err());
        std::fs::write(root.join("ok.txt"), "fine").unwrap();
        assert!(store.file("ok.txt").is_ok());
        let _ = std::fs::remove_dir_all(&root);
        let _ = std::fs::remove_dir_all(&outside);
    }
}
