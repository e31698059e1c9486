//! Where a job's files live under the shared storage root (`JOBS_ROOT`; the RWX volume in
//! Kubernetes): `jobs/<id>/input.<ext>`, `chunks/<n>.<ext>`, `results/<n>.csv`, `errors/<n>.csv`.

use std::path::{Path, PathBuf};

use crate::{is_valid_job_id, Format};

#[derive(Debug, Clone)]
pub struct Layout {
    root: PathBuf,
}

impl Layout {
    pub fn new(root: impl Into<PathBuf>) -> Layout {
        Layout { root: root.into() }
    }

    /// The job's directory; `None` for an id that is not one of ours (never a path from input).
    pub fn job_dir(&self, id: &str) -> Option<PathBuf> {
        is_valid_job_id(id).then(|| self.root.join("jobs").join(id))
    }

    pub fn input(&self, id: &str, format: Format) -> Option<PathBuf> {
        Some(
            self.job_dir(id)?
                .join(format!("input.{}", format.extension())),
        )
    }

    pub fn chunk(&self, id: &str, n: u32, format: Format) -> Option<PathBuf> {
        Some(
            self.job_dir(id)?
                .join("chunks")
                .join(format!("{n:06}.{}", format.extension())),
        )
    }

    pub fn result(&self, id: &str, n: u32) -> Option<PathBuf> {
        Some(
            self.job_dir(id)?
                .join("results")
                .join(format!("{n:06}.csv")),
        )
    }

    pub fn errors(&self, id: &str, n: u32) -> Option<PathBuf> {
        Some(self.job_dir(id)?.join("errors").join(format!("{n:06}.csv")))
    }

    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Removes the files of jobs last modified more than `retention` ago (their records have
    /// expired from the store by then). Returns how many job directories were removed.
    pub fn sweep(&self, retention: std::time::Duration) -> std::io::Result<usize> {
        let jobs = self.root.join("jobs");
        let Ok(entries) = std::fs::read_dir(&jobs) else {
            return Ok(0);
        };
        let mut removed = 0;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().to_string();
            // Only directories this crate made; never follow anything else.
            if !is_valid_job_id(&name) || !entry.file_type().is_ok_and(|t| t.is_dir()) {
                continue;
            }
            let age = entry
                .metadata()
                .and_then(|m| m.modified())
                .ok()
                .and_then(|t| t.elapsed().ok());
            if age.is_some_and(|a| a > retention) {
                std::fs::remove_dir_all(entry.path())?;
                removed += 1;
            }
        }
        Ok(removed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sweep_removes_only_old_job_directories() {
        let root = std::env::temp_dir().join(format!("sweep-{}", uuid::Uuid::new_v4().simple()));
        let l = Layout::new(&root);
        let id = crate::new_job_id();
        std::fs::create_dir_all(l.job_dir(&id).unwrap().join("chunks")).unwrap();
        std::fs::create_dir_all(root.join("jobs").join("not a job")).unwrap();
        assert_eq!(
            l.sweep(std::time::Duration::from_secs(3600)).unwrap(),
            0,
            "fresh jobs stay"
        );
        std::thread::sleep(std::time::Duration::from_millis(20));
        assert_eq!(l.sweep(std::time::Duration::from_millis(1)).unwrap(), 1);
        assert!(!l.job_dir(&id).unwrap().exists());
        assert!(
            root.join("jobs").join("not a job").exists(),
            "foreign directories are left alone"
        );
        let _ = std::fs::remove_dir_all(&root);
    }

    #[test]
    fn paths_stay_under_the_root_and_bad_ids_get_none() {
        let l = Layout::new("/data");
        let id = crate::new_job_id();
        assert_eq!(
            l.chunk(&id, 3, Format::Csv).unwrap(),
            Path::new("/data/jobs").join(&id).join("chunks/000003.csv")
        );
        assert_eq!(
            l.result(&id, 12).unwrap(),
            Path::new("/data/jobs").join(&id).join("results/000012.csv")
        );
        assert!(l.job_dir("../../etc").is_none());
        assert!(l.input("a/b", Format::Ndjson).is_none());
    }
}
