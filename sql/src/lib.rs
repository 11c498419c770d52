//! slicetest's DataFusion extensions: the workspace catalog (one schema per dataset),
//! the slice functions `slice()` and `in_slice()`, and, as later issues land, search.

pub mod catalog;
pub mod error;
pub mod options;
pub mod slices;
pub mod vectors;

pub use catalog::{
    CATALOG, EMBEDDINGS_TABLE, IMAGES_TABLE, dataset_context, register_functions, register_workspace, session_config,
    workspace_context,
};
pub use error::{ErrorKind, Result, SqlError};
pub use options::read_only;

/// The section slicetest's functions appear under in `information_schema.routines` and
/// `SHOW FUNCTIONS`.
pub(crate) fn doc_section() -> datafusion::logical_expr::DocSection {
    datafusion::logical_expr::DocSection {
        include: true,
        label: "slicetest functions",
        description: Some("slices and vector search over a slicetest workspace"),
    }
}
