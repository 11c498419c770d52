//! slicetest's datasets crate: everything slicetest keeps on disk — the workspace and its
//! lock, importers, immutable dataset versions, slices and their frozen versions, model
//! runs ([`run`]), tags with their provenance ([`tags`]) and stored embeddings
//! ([`embeddings`]).
//!
//! Data flow: an importer ([`import`]) lists candidate files → [`probe`] hashes and
//! decodes them in parallel → [`merge`] folds the accepted rows onto the latest version →
//! [`ingest`] publishes the result as a new immutable version ([`version`]).
//! [`slice`] stores slice definitions and their frozen, hash-checked versions.

pub mod atomic;
pub mod coco_mask;
pub mod embeddings;
pub mod error;
pub mod image_files;
pub mod import;
pub mod ingest;
pub mod layout;
pub mod masks;
pub mod merge;
pub mod names;
pub mod object_cache;
pub mod objects;
pub mod parts;
pub mod probe;
pub mod progress;
pub mod recent_reads;
pub mod record;
pub mod run;
pub mod slice;
pub mod storage;
mod stored;
pub mod table_file;
pub mod tags;
pub mod version;
pub mod workspace;

pub use error::{DatasetError, Result};
pub use import::{ImportOptions, Rejection, SourceFormat};
pub use ingest::{AcceptedImage, IngestOptions, IngestReport, KnownFiles, import_table, ingest, ingest_checked};
pub use layout::WorkspaceLayout;
pub use names::{identifier, sanitize_name, validate_column, validate_dataset_name, validate_name};
pub use probe::Verify;
pub use slice::{FreezeOutcome, FreezeRequest, FrozenMember, FrozenSlice, HoldoutAssigner, SliceDefinition};
pub use storage::Storage;
pub use version::DatasetVersion;
pub use workspace::{DatasetInfo, DatasetSummary, Workspace, closest};
