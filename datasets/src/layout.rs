//! Where things live inside a workspace directory (see docs/architecture.md).
//!
//! ```text
//! workspace.toml
//! workspace.lock                                   writers hold an exclusive lock on it
//! datasets/<ds>/versions/<n>/images-<key>.parquet  immutable; named in version.json
//! datasets/<ds>/versions/<n>/version.json          manifest of version n: created last, it commits n
//! datasets/<ds>/versions/<n>/ingest-report-<key>.json  what the ingest skipped and why
//! datasets/<ds>/files/<aa>/<sha256>.<ext>          image files slicetest wrote itself (IDX import)
//! datasets/<ds>/embeddings/<model>/part-<n>.parquet CLIP vectors (see `embeddings`)
//! datasets/<ds>/tags/<tagger>.parquet              one row per image per tagger (see `tags`)
//! datasets/<ds>/detections/<tagger>.parquet        one row per box found by a tagger
//! slices/<name>.toml                               a slice's definition (query, dataset, comment)
//! slices/<name>/v<k>-<key>.parquet + v<k>.json     frozen version k: members + manifest (the commit)
//! runs/<run>/predictions-<key>.parquet + run.json   an uploaded model run (run.json: the commit)
//! ```

use std::path::{Path, PathBuf};

use crate::error::Result;
use crate::storage::Storage;

/// Paths of a workspace rooted at one directory or bucket prefix, and the [`Storage`]
/// that reads and writes them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkspaceLayout {
    root: PathBuf,
    storage: Storage,
}

impl WorkspaceLayout {
    /// A layout rooted at the local directory `root` (nothing is checked or created).
    pub fn new(root: impl Into<PathBuf>) -> Self {
        Self::on(Storage::local(root))
    }

    /// The layout of `location`: a path, `file://…` or `s3://bucket/prefix`.
    pub fn open(location: &Path) -> Result<Self> {
        Ok(Self::on(Storage::open(location)?))
    }

    /// The layout of a workspace kept in `storage`.
    pub fn on(storage: Storage) -> Self {
        Self { root: storage.root().to_path_buf(), storage }
    }

    /// The workspace directory (for a bucket workspace, its URL).
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// Reads and writes the workspace's files.
    pub fn storage(&self) -> &Storage {
        &self.storage
    }

    /// `workspace.toml`.
    pub fn config_file(&self) -> PathBuf {
        self.root.join("workspace.toml")
    }

    /// `workspace.lock`, the writers' lock file.
    pub fn lock_file(&self) -> PathBuf {
        self.root.join("workspace.lock")
    }

    /// `datasets/`.
    pub fn datasets_dir(&self) -> PathBuf {
        self.root.join("datasets")
    }

    /// `datasets/<ds>/`.
    pub fn dataset_dir(&self, dataset: &str) -> PathBuf {
        self.datasets_dir().join(dataset)
    }

    /// `datasets/<ds>/versions/`.
    pub fn versions_dir(&self, dataset: &str) -> PathBuf {
        self.dataset_dir(dataset).join("versions")
    }

    /// `datasets/<ds>/versions/<n>/`.
    pub fn version_dir(&self, dataset: &str, version: u64) -> PathBuf {
        self.versions_dir(dataset).join(version.to_string())
    }

    /// The images file of a published version (`images-<key>.parquet`, or
    /// `images.parquet` in older workspaces).
    pub fn images_file(&self, version: &crate::version::DatasetVersion) -> PathBuf {
        self.version_dir(&version.dataset, version.version).join(&version.images_file)
    }

    /// `datasets/<ds>/files/`: image files written by slicetest itself, content-addressed.
    pub fn files_dir(&self, dataset: &str) -> PathBuf {
        self.dataset_dir(dataset).join("files")
    }

    /// `datasets/<ds>/embeddings/<model>/`: one model's image embeddings, in parts.
    pub fn embeddings_dir(&self, dataset: &str, model: &str) -> PathBuf {
        self.dataset_dir(dataset).join("embeddings").join(model)
    }

    /// `slices/`: slice definitions and their frozen versions.
    pub fn slices_dir(&self) -> PathBuf {
        self.root.join("slices")
    }

    /// `slices/<name>.toml`: a slice's definition.
    pub fn slice_definition_file(&self, slice: &str) -> PathBuf {
        self.slices_dir().join(format!("{slice}.toml"))
    }

    /// `slices/<name>/`: a slice's frozen versions.
    pub fn slice_dir(&self, slice: &str) -> PathBuf {
        self.slices_dir().join(slice)
    }

    /// `slices/<name>/v<k>.json`: the manifest of frozen version k (written last: it is the commit).
    pub fn frozen_manifest_file(&self, slice: &str, version: u64) -> PathBuf {
        self.slice_dir(slice).join(format!("v{version}.json"))
    }

    /// `runs/`: uploaded model runs.
    pub fn runs_dir(&self) -> PathBuf {
        self.root.join("runs")
    }

    /// `runs/<run>/`: one run's predictions and manifest.
    pub fn run_dir(&self, run: &str) -> PathBuf {
        self.runs_dir().join(run)
    }

    /// Resolves a `uri` column value to the file to read: relative values are inside the
    /// workspace; an object's URL (`s3://bucket/key`) stays as it is, for
    /// [`crate::image_files`] to read.
    pub fn resolve_uri(&self, uri: &str) -> PathBuf {
        if crate::image_files::is_object_url(Path::new(uri)) {
            return PathBuf::from(uri);
        }
        let path = Path::new(uri.strip_prefix("file://").unwrap_or(uri));
        if path.is_absolute() { path.to_path_buf() } else { self.root.join(path) }
    }
}

/// File name of a version's image table in workspaces written before lock-free commits.
pub const IMAGES_FILE: &str = "images.parquet";
/// File name of a version's manifest.
pub const VERSION_FILE: &str = "version.json";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relative_uris_resolve_inside_the_workspace() {
        let l = WorkspaceLayout::new("/ws");
        assert_eq!(l.resolve_uri("datasets/a/files/x.png"), PathBuf::from("/ws/datasets/a/files/x.png"));
        assert_eq!(l.resolve_uri("/data/x.png"), PathBuf::from("/data/x.png"));
        assert_eq!(l.resolve_uri("file:///data/x.png"), PathBuf::from("/data/x.png"));
        assert_eq!(l.resolve_uri("s3://imgs/x.png"), PathBuf::from("s3://imgs/x.png"));
    }
}
