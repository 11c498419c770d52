//! The one error type of the sql crate.

/// Errors raised while building a SQL session over a workspace.
#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    /// Reading the workspace failed.
    #[error(transparent)]
    Dataset(#[from] slicetest_datasets::DatasetError),
    /// DataFusion refused to register a table or plan a query.
    #[error(transparent)]
    DataFusion(#[from] datafusion::error::DataFusionError),
}

/// Result alias of the sql crate.
pub type Result<T, E = SqlError> = std::result::Result<T, E>;
