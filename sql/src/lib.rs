//! slicetest's DataFusion extensions: the workspace catalog (one schema per dataset),
//! and, as later issues land, the search and slice functions.

pub mod catalog;
pub mod error;
pub mod options;

pub use catalog::{CATALOG, IMAGES_TABLE, register_workspace, session_config, workspace_context};
pub use error::{Result, SqlError};
pub use options::read_only;
