//! The one error type of the datasets crate.

use std::path::PathBuf;

pub use slicetest_error::ErrorKind;

/// Errors raised while creating, reading or ingesting into a workspace.
///
/// Every variant names the file or the input it is about, so a message on its own
/// tells the user where to look.
#[derive(Debug, thiserror::Error)]
pub enum DatasetError {
    /// An I/O failure on a named path.
    #[error("{action} {path}: {source}")]
    Io {
        /// What was being done ("reading", "writing", …).
        action: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        #[source]
        source: std::io::Error,
    },
    /// The directory is not a slicetest workspace (no `workspace.toml`).
    #[error("{0} is not a slicetest workspace (no workspace.toml); run `slicetest init` first")]
    NotAWorkspace(PathBuf),
    /// `init` was asked to create a workspace where one already is.
    #[error("{0} already holds a slicetest workspace")]
    AlreadyAWorkspace(PathBuf),
    /// A dataset, slice or run name that could become a path or break SQL.
    #[error("invalid name {name:?}: {reason}")]
    InvalidName {
        /// The name as given.
        name: String,
        /// Which rule it breaks.
        reason: &'static str,
    },
    /// The named dataset does not exist in the workspace.
    #[error("no dataset named {name:?} in this workspace{hint}")]
    UnknownDataset {
        /// The name as given.
        name: String,
        /// The closest existing names, or how to list them (may be empty).
        hint: String,
    },
    /// A dataset version that does not exist.
    #[error("dataset {dataset:?} has no version {version} (latest is {latest})")]
    UnknownVersion {
        /// The dataset.
        dataset: String,
        /// The version asked for.
        version: u64,
        /// The latest version there is.
        latest: u64,
    },
    /// The named slice does not exist.
    #[error("no slice named {name:?} in this workspace{hint}")]
    UnknownSlice {
        /// The name as given.
        name: String,
        /// The closest existing names, or how to list them (may be empty).
        hint: String,
    },
    /// `CREATE SLICE` with a name already taken.
    #[error("a slice named {0:?} already exists (DROP SLICE it first, or pick another name)")]
    SliceExists(String),
    /// A slice that has no frozen version yet, where one is needed.
    #[error("slice {0:?} has no frozen version yet; run `FREEZE SLICE {0}` first")]
    SliceNotFrozen(String),
    /// A frozen version that does not exist.
    #[error("slice {slice:?} has no frozen version {version} (latest is {latest})")]
    UnknownSliceVersion {
        /// The slice.
        slice: String,
        /// The version asked for.
        version: u64,
        /// The latest version there is.
        latest: u64,
    },
    /// An upload under a run name that is taken (runs are immutable).
    #[error("a run named {0:?} already exists; runs are immutable, pick another name")]
    RunExists(String),
    /// The named run does not exist.
    #[error("no run named {name:?} in this workspace{hint}")]
    UnknownRun {
        /// The name as given.
        name: String,
        /// The closest existing names, or how to list them (may be empty).
        hint: String,
    },
    /// An ingested image whose file is no longer where it was (moved or deleted since): its
    /// id is right, its bytes are not there.
    #[error("the file of this image, {path}, is gone (moved or deleted since it was ingested); ingest it again")]
    MissingImageFile {
        /// Where the ingest found it: a file or an `s3://` URL.
        path: PathBuf,
    },
    /// Hold-out parameters out of range.
    #[error("invalid hold-out settings: {0}")]
    BadHoldout(String),
    /// The input given to an importer is unusable as a whole (not a per-file problem).
    #[error("{source_path}: {message}")]
    BadInput {
        /// The input.
        source_path: PathBuf,
        /// What is wrong, and where in it.
        message: String,
    },
    /// Every candidate file of an ingest was rejected, or `--strict` refused a partial ingest.
    #[error("{message}")]
    NothingIngested {
        /// What is wrong, and where in it.
        message: String,
    },
    /// A file given to slicetest (a manifest, predictions) that does not parse.
    #[error("invalid {what} {path}: {message}")]
    BadManifestFile {
        /// What the file is to slicetest ("tag file", "slice definition", …).
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// What is wrong, and where in it.
        message: String,
    },
    /// One of the workspace's own files that does not parse or no longer matches its
    /// recorded hash: damage to the workspace, not a mistake of whoever asked.
    #[error("invalid {what} {path}: {message}")]
    Corrupt {
        /// What the file is to slicetest ("tag file", "slice definition", …).
        what: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// What is wrong, and where in it.
        message: String,
    },
    /// Arrow / Parquet / DataFusion failures while reading or writing tables.
    #[error("{context}: {source}")]
    DataFusion {
        /// What was being done.
        context: String,
        /// The underlying error.
        #[source]
        source: datafusion::error::DataFusionError,
    },
}

impl DatasetError {
    /// What kind of failure this is (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        use DatasetError as E;
        match self {
            E::InvalidName { .. } => ErrorKind::InvalidName,
            E::NotAWorkspace(_)
            | E::UnknownDataset { .. }
            | E::UnknownVersion { .. }
            | E::UnknownSlice { .. }
            | E::UnknownSliceVersion { .. }
            | E::UnknownRun { .. }
            | E::MissingImageFile { .. } => ErrorKind::NotFound,
            E::AlreadyAWorkspace(_) | E::SliceExists(_) | E::RunExists(_) => ErrorKind::AlreadyExists,
            E::SliceNotFrozen(_) => ErrorKind::NotFrozen,
            E::NothingIngested { .. } => ErrorKind::NoData,
            E::BadHoldout(_) | E::BadInput { .. } | E::BadManifestFile { .. } => ErrorKind::InvalidInput,
            // Reading or writing the workspace's own files: the machine's problem, not the
            // client's, whatever the message says.
            E::Io { .. } | E::Corrupt { .. } | E::DataFusion { .. } => ErrorKind::Internal,
        }
    }

    /// Wraps an I/O error with the action and the path it concerns.
    pub fn io(action: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| DatasetError::Io { action, path, source }
    }

    /// Whether this is a file (or object) that is not there.
    pub fn is_missing_file(&self) -> bool {
        matches!(self, DatasetError::Io { source, .. } if source.kind() == std::io::ErrorKind::NotFound)
    }

    /// Wraps an Arrow, Parquet or DataFusion error with what was being done.
    pub fn df(context: impl Into<String>) -> impl FnOnce(datafusion::error::DataFusionError) -> Self {
        let context = context.into();
        move |source| DatasetError::DataFusion { context, source }
    }
}

impl From<datafusion::arrow::error::ArrowError> for DatasetError {
    fn from(e: datafusion::arrow::error::ArrowError) -> Self {
        DatasetError::DataFusion { context: "arrow".into(), source: e.into() }
    }
}

impl From<datafusion::parquet::errors::ParquetError> for DatasetError {
    fn from(e: datafusion::parquet::errors::ParquetError) -> Self {
        DatasetError::DataFusion { context: "parquet".into(), source: e.into() }
    }
}

/// Result alias of the datasets crate.
pub type Result<T, E = DatasetError> = std::result::Result<T, E>;
