//! slicetest's DataFusion extensions: the workspace catalog (one schema per dataset),
//! the slice functions `slice()` and `in_slice()`, and, as later issues land, search.

pub mod catalog;
pub mod error;
pub mod options;
pub mod slices;
pub mod vectors;

pub use catalog::{
    CATALOG, EMBEDDINGS_TABLE, IMAGES_TABLE, dataset_context, register_workspace, session_config, workspace_context,
};
pub use error::{Result, SqlError};
pub use options::read_only;
