//! Creating and opening a workspace, its config file and its writers' lock.
//!
//! A workspace is a local directory or a bucket prefix (`s3://bucket/prefix`, see
//! [`crate::storage`]).

use std::fs::File;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{DatasetError, Result};
use crate::layout::WorkspaceLayout;
use crate::names::validate_name;
use crate::version::{DatasetVersion, list_versions, read_manifests, read_versions, version_file};

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

/// One dataset as lists show it: its latest version and how many it has (read with one
/// manifest, however long its history).
#[derive(Debug, Clone, PartialEq)]
pub struct DatasetSummary {
    /// The newest version.
    pub latest: DatasetVersion,
    /// How many versions are published.
    pub versions: usize,
}

impl DatasetInfo {
    /// The newest version, if any was published.
    pub fn latest(&self) -> Option<&DatasetVersion> {
        self.versions.last()
    }
}

impl Workspace {
    /// Creates a new workspace at `root`, a directory (which may exist but must not hold
    /// one) or a bucket URL.
    pub fn init(root: impl Into<PathBuf>) -> Result<Self> {
        Self::init_in(WorkspaceLayout::open(&root.into())?)
    }

    /// Creates a new workspace in `layout`'s storage.
    pub fn init_in(layout: WorkspaceLayout) -> Result<Self> {
        let config = WorkspaceConfig {
            format_version: FORMAT_VERSION,
            default_dataset: None,
            created_by: format!("slicetest {}", env!("CARGO_PKG_VERSION")),
        };
        let text = toml::to_string_pretty(&config).expect("workspace config serialises");
        if !layout.storage().create(&layout.config_file(), text.into())? {
            return Err(DatasetError::AlreadyAWorkspace(layout.root().to_path_buf()));
        }
        if !layout.storage().is_remote() {
            let dir = layout.datasets_dir();
            std::fs::create_dir_all(&dir).map_err(DatasetError::io("creating", dir))?;
        }
        Ok(Self { layout, config })
    }

    /// Opens an existing workspace: a directory or a bucket URL.
    pub fn open(root: impl Into<PathBuf>) -> Result<Self> {
        Self::open_in(WorkspaceLayout::open(&root.into())?)
    }

    /// Opens the workspace in `layout`'s storage.
    pub fn open_in(layout: WorkspaceLayout) -> Result<Self> {
        let path = layout.config_file();
        let Some(bytes) = layout.storage().read_opt(&path)? else {
            return Err(DatasetError::NotAWorkspace(layout.root().to_path_buf()));
        };
        let config = parse_config(&bytes, &path)?;
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
        let layout = WorkspaceLayout::open(&root.into())?;
        match Self::open_in(layout.clone()) {
            Err(DatasetError::NotAWorkspace(_)) => match Self::init_in(layout.clone()) {
                // Another process created it meanwhile.
                Err(DatasetError::AlreadyAWorkspace(_)) => Self::open_in(layout),
                other => other,
            },
            other => other,
        }
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

    /// Takes the writers' lock; blocks while another process writes. A bucket has no
    /// lock: there the lock is a no-op, and what must not race commits by conditional
    /// create instead (ingest, freeze and run upload do so everywhere).
    pub fn lock(&self) -> Result<WorkspaceLock> {
        if self.layout.storage().is_remote() {
            return Ok(WorkspaceLock { _file: None });
        }
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
        self.latest(dataset)?;
        self.update_config(|config| {
            let changed = config.default_dataset.as_deref() != Some(dataset);
            config.default_dataset = Some(dataset.to_string());
            changed
        })
    }

    /// Sets the default dataset only if none is set yet (the first ingest does this). Two
    /// first ingests of different datasets at once: the first to commit its config wins,
    /// the other finds a default set and keeps it.
    pub(crate) fn set_default_if_unset(&mut self, dataset: &str) -> Result<()> {
        if self.config.default_dataset.is_some() {
            return Ok(());
        }
        self.update_config(|config| {
            let unset = config.default_dataset.is_none();
            if unset {
                config.default_dataset = Some(dataset.to_string());
            }
            unset
        })
    }

    /// Applies `change` (true: it changed something) to the stored `workspace.toml` as it
    /// is now, not as this process read it: a conditional write on a bucket
    /// ([`Storage::update`]), under the workspace lock on a local disk.
    fn update_config(&mut self, change: impl Fn(&mut WorkspaceConfig) -> bool) -> Result<()> {
        let _lock = self.lock()?;
        let path = self.layout.config_file();
        let stored = self.layout.storage().update(&path, |current| {
            let Some(current) = current else {
                return Err(DatasetError::NotAWorkspace(self.layout.root().to_path_buf()));
            };
            let mut config = parse_config(current, &path)?;
            Ok(change(&mut config)
                .then(|| toml::to_string_pretty(&config).expect("workspace config serialises").into()))
        })?;
        let stored = stored.ok_or_else(|| DatasetError::NotAWorkspace(self.layout.root().to_path_buf()))?;
        self.config = parse_config(&stored, &path)?;
        Ok(())
    }

    /// The datasets that have at least one published version, sorted, with their version
    /// numbers: one listing each.
    fn listed_datasets(&self) -> Result<Vec<(String, Vec<u64>)>> {
        let storage = self.layout.storage();
        let names = self.dataset_dirs()?;
        let versions = storage.each(&names, |name| list_versions(&self.layout, name));
        let mut listed = Vec::new();
        for (name, numbers) in names.into_iter().zip(versions) {
            let numbers = numbers?;
            if !numbers.is_empty() {
                listed.push((name, numbers));
            }
        }
        listed.sort();
        Ok(listed)
    }

    /// The directories under `datasets/` with a valid dataset name, published or not.
    fn dataset_dirs(&self) -> Result<Vec<String>> {
        let listed = self.layout.storage().list(&self.layout.datasets_dir())?;
        Ok(listed.into_iter().filter(|name| validate_name(name).is_ok()).collect())
    }

    /// Names of all datasets that have at least one published version, sorted.
    pub fn dataset_names(&self) -> Result<Vec<String>> {
        Ok(self.listed_datasets()?.into_iter().map(|(name, _)| name).collect())
    }

    /// All datasets with their versions.
    pub fn datasets(&self) -> Result<Vec<DatasetInfo>> {
        self.listed_datasets()?
            .into_iter()
            .map(|(name, numbers)| Ok(DatasetInfo { versions: read_versions(&self.layout, &name, &numbers)?, name }))
            .collect()
    }

    /// The latest version of every dataset, sorted by dataset name: one listing per dataset
    /// and one manifest each (what every query session needs; a dataset's older versions
    /// are read only when asked for, which on a bucket with hundreds of versions is most of
    /// a command's time).
    pub fn latest_versions(&self) -> Result<Vec<DatasetVersion>> {
        Ok(self.summaries()?.into_iter().map(|s| s.latest).collect())
    }

    /// [`Workspace::latest_versions`], each with what `also(dataset)` returns, run for
    /// every dataset while its versions are listed and its manifest read (at once, on a
    /// bucket): a SQL session lists each dataset's tags and embeddings in the round trips
    /// it spends finding the latest version anyway. `also` runs for every directory under
    /// `datasets/`, also one whose first version is not published yet (left out here).
    pub fn latest_versions_with<R: Send>(&self, also: impl Fn(&str) -> R + Sync) -> Result<Vec<(DatasetVersion, R)>> {
        let storage = self.layout.storage();
        let names = self.dataset_dirs()?;
        let latest = |name: &String| -> Result<Option<DatasetVersion>> {
            let numbers = list_versions(&self.layout, name)?;
            let Some(&last) = numbers.last() else { return Ok(None) };
            Ok(read_versions(&self.layout, name, &[last])?.pop())
        };
        let listed = storage.each(&names, |name| storage.join(|| latest(name), || also(name)));
        let mut found = Vec::new();
        for (latest, also) in listed {
            if let Some(latest) = latest? {
                found.push((latest, also));
            }
        }
        found.sort_by(|(a, _), (b, _)| a.dataset.cmp(&b.dataset));
        Ok(found)
    }

    /// Every dataset's latest version and version count, sorted by name (one listing and
    /// one manifest per dataset).
    pub fn summaries(&self) -> Result<Vec<DatasetSummary>> {
        let listed = self.listed_datasets()?;
        let paths = listed
            .iter()
            .map(|(name, numbers)| version_file(&self.layout, name, *numbers.last().expect("listed")))
            .collect();
        let latest = read_manifests(&self.layout, paths)?;
        Ok(latest
            .into_iter()
            .zip(listed)
            .map(|(latest, (_, numbers))| DatasetSummary { latest, versions: numbers.len() })
            .collect())
    }

    /// One dataset with its versions; a clear error (with the closest name) if it is unknown.
    pub fn dataset(&self, name: &str) -> Result<DatasetInfo> {
        let numbers = self.version_numbers(name)?;
        Ok(DatasetInfo { name: name.to_string(), versions: read_versions(&self.layout, name, &numbers)? })
    }

    /// The latest version of one dataset (reading only its manifest); the same error as
    /// [`Workspace::dataset`] if it is unknown.
    pub fn latest(&self, name: &str) -> Result<DatasetVersion> {
        let numbers = self.version_numbers(name)?;
        Ok(read_versions(&self.layout, name, &numbers[numbers.len() - 1..])?.remove(0))
    }

    /// The published version numbers of `name`, ascending; an error naming the closest
    /// dataset when there are none.
    fn version_numbers(&self, name: &str) -> Result<Vec<u64>> {
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
        Ok(numbers)
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

/// `workspace.toml`'s content, parsed.
fn parse_config(bytes: &[u8], path: &Path) -> Result<WorkspaceConfig> {
    toml::from_str(&String::from_utf8_lossy(bytes)).map_err(|e| DatasetError::Corrupt {
        what: "workspace config",
        path: path.to_path_buf(),
        message: e.to_string(),
    })
}

/// An exclusive lock on `workspace.lock`, held by one writer at a time.
///
/// The OS releases it when the process dies, so a killed writer never leaves the
/// workspace locked.
#[derive(Debug)]
pub struct WorkspaceLock {
    _file: Option<File>,
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
        Ok(Self { _file: Some(file) })
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
