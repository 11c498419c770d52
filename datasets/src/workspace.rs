//! Creating and opening a workspace, its config file and its writers' lock.

use std::fs::{self, File};
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::atomic::write_atomic;
use crate::error::{DatasetError, Result};
use crate::layout::WorkspaceLayout;
use crate::names::validate_name;
use crate::version::{DatasetVersion, list_versions, read_version};

/// Current on-disk format of a workspace; bumped on incompatible layout changes.
pub const FORMAT_VERSION: u32 = 1;

/// The contents of `workspace.toml`.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct WorkspaceConfig {
    /// On-disk format version, see [`FORMAT_VERSION`].
    pub format_version: u32,
    /// The dataset that unqualified SQL table names refer to.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub default_dataset: Option<String>,
    /// slicetest version that created the workspace.
    pub created_by: String,
}

/// An opened workspace directory.
#[derive(Debug, Clone)]
pub struct Workspace {
    layout: WorkspaceLayout,
    config: WorkspaceConfig,
}

/// Summary of one dataset: its name and versions (oldest first).
#[derive(Debug, Clone)]
pub struct DatasetInfo {
    /// Dataset name (also its SQL schema name).
    pub name: String,
    /// Every published version, oldest first.
    pub versions: Vec<DatasetVersion>,
}

impl DatasetInfo {
    /// The newest version, if any was published.
    pub fn latest(&self) -> Option<&DatasetVersion> {
        self.versions.last()
    }
}

impl Workspace {
    /// Creates a new workspace in `root` (the directory may exist but must not hold one).
    pub fn init(root: impl Into<PathBuf>) -> Result<Self> {
        let layout = WorkspaceLayout::new(root);
        if layout.config_file().exists() {
            return Err(DatasetError::AlreadyAWorkspace(layout.root().to_path_buf()));
        }
        fs::create_dir_all(layout.datasets_dir()).map_err(DatasetError::io("creating", layout.datasets_dir()))?;
        let config = WorkspaceConfig {
            format_version: FORMAT_VERSION,
            default_dataset: None,
            created_by: format!("slicetest {}", env!("CARGO_PKG_VERSION")),
        };
        let ws = Self { layout, config };
        ws.save_config()?;
        Ok(ws)
    }

    /// Opens an existing workspace.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        let layout = WorkspaceLayout::new(root);
        let path = layout.config_file();
        if !path.exists() {
            return Err(DatasetError::NotAWorkspace(layout.root().to_path_buf()));
        }
        let text = fs::read_to_string(&path).map_err(DatasetError::io("reading", &path))?;
        let config: WorkspaceConfig = toml::from_str(&text).map_err(|e| DatasetError::Corrupt {
            what: "workspace config",
            path: path.clone(),
            message: e.to_string(),
        })?;
        if config.format_version > FORMAT_VERSION {
            return Err(DatasetError::Corrupt {
                what: "workspace config",
                path,
                message: format!(
                    "format_version {} is newer than this slicetest understands ({FORMAT_VERSION}); upgrade slicetest",
                    config.format_version
                ),
            });
        }
        Ok(Self { layout, config })
    }

    /// Opens the workspace in `root`, creating it first if it does not exist.
    pub fn open_or_init(root: impl Into<PathBuf>) -> Result<Self> {
        let root = root.into();
        if WorkspaceLayout::new(&root).config_file().exists() { Self::open(root) } else { Self::init(root) }
    }

    /// The workspace's paths.
    pub fn layout(&self) -> &WorkspaceLayout {
        &self.layout
    }

    /// The workspace directory.
    pub fn root(&self) -> &Path {
        self.layout.root()
    }

    /// The parsed `workspace.toml`.
    pub fn config(&self) -> &WorkspaceConfig {
        &self.config
    }

    /// Takes the writers' lock; blocks while another process writes.
    pub fn lock(&self) -> Result<WorkspaceLock> {
        WorkspaceLock::acquire(&self.layout.lock_file())
    }

    /// `dataset` if given, else the default dataset; an error if the workspace has none.
    pub fn dataset_or_default(&self, dataset: Option<&str>) -> Result<String> {
        dataset.map(str::to_string).or_else(|| self.config.default_dataset.clone()).ok_or_else(|| {
            DatasetError::NothingIngested {
                message: "the workspace has no datasets yet; run `slicetest ingest` first".into(),
            }
        })
    }

    /// Makes `dataset` the default schema for SQL.
    pub fn set_default_dataset(&mut self, dataset: &str) -> Result<()> {
        self.dataset(dataset)?;
        self.config.default_dataset = Some(dataset.to_string());
        self.save_config()
    }

    /// Sets the default dataset only if none is set yet (the first ingest does this).
    pub(crate) fn set_default_if_unset(&mut self, dataset: &str) -> Result<()> {
        if self.config.default_dataset.is_none() {
            self.config.default_dataset = Some(dataset.to_string());
            self.save_config()?;
        }
        Ok(())
    }

    fn save_config(&self) -> Result<()> {
        let text = toml::to_string_pretty(&self.config).expect("workspace config serialises");
        write_atomic(&self.layout.config_file(), text.as_bytes())
    }

    /// Names of all datasets that have at least one published version, sorted.
    pub fn dataset_names(&self) -> Result<Vec<String>> {
        let dir = self.layout.datasets_dir();
        let mut names = Vec::new();
        for entry in fs::read_dir(&dir).map_err(DatasetError::io("listing", &dir))? {
            let entry = entry.map_err(DatasetError::io("listing", &dir))?;
            let name = entry.file_name().to_string_lossy().into_owned();
            if validate_name(&name).is_ok() && !list_versions(&self.layout, &name)?.is_empty() {
                names.push(name);
            }
        }
        names.sort();
        Ok(names)
    }

    /// All datasets with their versions.
    pub fn datasets(&self) -> Result<Vec<DatasetInfo>> {
        self.dataset_names()?.iter().map(|n| self.dataset(n)).collect()
    }

    /// One dataset with its versions; a clear error (with the closest name) if it is unknown.
    pub fn dataset(&self, name: &str) -> Result<DatasetInfo> {
        validate_name(name)?;
        let numbers = list_versions(&self.layout, name)?;
        if numbers.is_empty() {
            let known = self.dataset_names()?;
            let hint = unknown_name_hint(
                name,
                &known,
                "datasets",
                "the workspace has no datasets yet, run `slicetest ingest`",
            );
            return Err(DatasetError::UnknownDataset { name: name.to_string(), hint });
        }
        let versions = numbers.into_iter().map(|v| read_version(&self.layout, name, v)).collect::<Result<_>>()?;
        Ok(DatasetInfo { name: name.to_string(), versions })
    }
}

/// The candidate closest to `name` by edit distance, if it is close enough to be a typo.
pub fn closest<'a>(name: &str, candidates: &'a [String]) -> Option<&'a str> {
    candidates
        .iter()
        .map(|c| (strsim::levenshtein(&name.to_lowercase(), &c.to_lowercase()), c))
        .filter(|(d, c)| *d <= 2.max(c.len() / 3))
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c.as_str())
}

/// The hint appended to an "unknown name" error: the closest of `known` (`kind`, plural)
/// when one is close, else all of them, else `none_yet`.
pub fn unknown_name_hint(name: &str, known: &[String], kind: &str, none_yet: &str) -> String {
    match closest(name, known) {
        Some(c) => format!("; did you mean {c:?}?"),
        None if known.is_empty() => format!("; {none_yet}"),
        None => format!("; {kind} are: {}", known.join(", ")),
    }
}

/// An exclusive lock on `workspace.lock`, held by one writer at a time.
///
/// The OS releases it when the process dies, so a killed writer never leaves the
/// workspace locked.
#[derive(Debug)]
pub struct WorkspaceLock {
    _file: File,
}

impl WorkspaceLock {
    fn acquire(path: &Path) -> Result<Self> {
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)
            .map_err(DatasetError::io("opening", path))?;
        match file.try_lock() {
            Ok(()) => {}
            Err(std::fs::TryLockError::WouldBlock) => {
                tracing::warn!("waiting for another slicetest process to finish writing to the workspace…");
                file.lock().map_err(DatasetError::io("locking", path))?;
            }
            Err(std::fs::TryLockError::Error(e)) => return Err(DatasetError::io("locking", path)(e)),
        }
        Ok(Self { _file: file })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn init_then_open_roundtrips_and_refuses_double_init() {
        let dir = tempfile::tempdir().unwrap();
        let ws = Workspace::init(dir.path()).unwrap();
        assert_eq!(ws.config().format_version, FORMAT_VERSION);
        assert!(matches!(Workspace::init(dir.path()), Err(DatasetError::AlreadyAWorkspace(_))));
        let opened = Workspace::open(dir.path()).unwrap();
        assert_eq!(opened.config(), ws.config());
        assert!(opened.dataset_names().unwrap().is_empty());
    }

    #[test]
    fn opening_a_plain_directory_says_to_init() {
        let dir = tempfile::tempdir().unwrap();
        let err = Workspace::open(dir.path()).unwrap_err().to_string();
        assert!(err.contains("slicetest init"), "{err}");
    }

    #[test]
    fn closest_name_suggests_typos_only() {
        let names = vec!["fashion_mnist".to_string(), "coco".to_string()];
        assert_eq!(closest("fashion_mnst", &names), Some("fashion_mnist"));
        assert_eq!(closest("imagenet", &names), None);
    }
}
