//! slicetest's DataFusion extensions: the workspace catalog (one schema per dataset),
//! the slice functions `slice()` and `in_slice()`, vector search over stored embeddings
//! through the engine's [`vectors::VectorStore`], all registered by [`register_functions`],
//! and the classification of errors that crossed DataFusion ([`error::kind_of`]).

pub mod case_keys;
pub mod catalog;
pub mod error;
pub mod first_copy;
pub mod memory;
pub mod options;
pub mod output_bound;
pub mod short_strings;
pub mod slices;
pub mod substring_pruning;
pub mod vectors;

pub use catalog::{
    CATALOG, EMBEDDINGS_TABLE, IMAGES_TABLE, TaggedImages, TaggerJoin, dataset_context, register_functions,
    register_workspace, session_config, workspace_context,
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

/// The documentation of one of slicetest's SQL functions (`ScalarUDFImpl::documentation`).
pub(crate) fn function_doc(
    description: &str,
    syntax: &str,
    arguments: &[(&str, &str)],
    example: &str,
) -> datafusion::logical_expr::Documentation {
    let mut builder = datafusion::logical_expr::Documentation::builder(doc_section(), description, syntax);
    for (name, what) in arguments {
        builder = builder.with_argument(*name, *what);
    }
    builder.with_sql_example(example).build()
}
