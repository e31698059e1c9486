//! Where a job's files live under the shared storage root (`ARTIFACT_ROOT`; the RWX volume in
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
}

#[cfg(test)]
mod tests {
    use super::*;

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
