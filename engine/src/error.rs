//! The one error type of the engine crate.

/// Errors surfaced to the CLI and, later, the HTTP API.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A workspace or ingest problem.
    #[error(transparent)]
    Dataset(#[from] slicetest_datasets::DatasetError),
    /// Building the SQL session failed.
    #[error(transparent)]
    Sql(#[from] slicetest_sql::SqlError),
    /// A query failed to plan or run; the message is DataFusion's plus a hint where we have one.
    #[error("{message}")]
    Query {
        /// What went wrong, for a person.
        message: String,
        /// The underlying error.
        #[source]
        source: datafusion::error::DataFusionError,
    },
    /// A slicetest statement (CREATE/FREEZE SLICE …) that is malformed or cannot run.
    #[error("{0}")]
    Statement(String),
    /// Loading a model or embedding failed.
    #[error(transparent)]
    Embed(slicetest_embed::EmbedError),
    /// Writing results failed.
    #[error("writing results: {0}")]
    Output(String),
}

impl EngineError {
    /// A query error with DataFusion's text made readable (no backtrace, hint appended).
    pub fn query(source: datafusion::error::DataFusionError, hint: Option<String>) -> Self {
        let mut message = source.strip_backtrace();
        if let Some(h) = hint {
            message.push_str("\n  hint: ");
            message.push_str(&h);
        }
        EngineError::Query { message, source }
    }
}

impl From<datafusion::arrow::error::ArrowError> for EngineError {
    fn from(e: datafusion::arrow::error::ArrowError) -> Self {
        EngineError::query(e.into(), None)
    }
}

impl From<datafusion::error::DataFusionError> for EngineError {
    fn from(e: datafusion::error::DataFusionError) -> Self {
        EngineError::query(e, None)
    }
}

/// Result alias of the engine crate.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;
