//! The one error type of the engine crate, and how any error is classified.

use std::error::Error;

use datafusion::error::DataFusionError;
pub use slicetest_error::ErrorKind;

/// Errors surfaced to the CLI and the HTTP API. Each knows its [`ErrorKind`]
/// ([`EngineError::kind`]); front ends map the kind, never the message.
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    /// A workspace or ingest problem.
    #[error(transparent)]
    Dataset(#[from] slicetest_datasets::DatasetError),
    /// Building the SQL session, or a slicetest SQL function, failed.
    #[error(transparent)]
    Sql(#[from] slicetest_sql::SqlError),
    /// A query failed to plan or run; the message is DataFusion's plus a hint where we have one.
    #[error("{message}")]
    Query {
        /// What went wrong, for a person.
        message: String,
        /// The underlying error.
        #[source]
        source: DataFusionError,
        /// Its kind: that of the first error in `source`'s chain that knows one, unless
        /// the engine knows better (a query naming a dataset that does not exist).
        kind: ErrorKind,
    },
    /// A query would change the workspace or the session; SQL is read-only.
    #[error("{message}")]
    ReadOnly {
        /// DataFusion's verdict (`DDL not supported: CreateExternalTable`, …).
        message: String,
    },
    /// A slicetest statement (CREATE/FREEZE SLICE …) that does not parse.
    #[error("{message} (at line {line}, column {column})")]
    Parse {
        /// What was expected.
        message: String,
        /// 1-based line of the statement where it went wrong.
        line: usize,
        /// 1-based column.
        column: usize,
    },
    /// An option or argument that is malformed or out of range.
    #[error("{0}")]
    InvalidArgument(String),
    /// Something named that the workspace does not have (a tagger's tags, …), with what
    /// it has.
    #[error("{0}")]
    NotFound(String),
    /// A long job was cancelled; what it stored stays.
    #[error("cancelled after storing {stored} images; running it again resumes there")]
    Cancelled {
        /// Items stored before the cancellation.
        stored: usize,
    },
    /// `source`, with what the engine was doing when it happened.
    #[error("{context}: {source}")]
    Context {
        /// What was being done.
        context: String,
        /// What failed.
        source: Box<EngineError>,
    },
    /// `original` told in other words: its paths inside an unpacked archive named as paths
    /// in the archive the user sent. Same kind as `original`, and not its cause: the words
    /// replace the original's, which would show the temporary paths again.
    #[error("{message}")]
    Reworded {
        /// The message shown.
        message: String,
        /// The error as it was made.
        original: Box<EngineError>,
    },
    /// Loading a model or embedding failed.
    #[error(transparent)]
    Embed(slicetest_embed::EmbedError),
    /// Writing results failed.
    #[error("writing results: {0}")]
    Output(String),
    /// Reaching or starting the SQL cluster failed.
    #[cfg(feature = "ballista")]
    #[error(transparent)]
    Cluster(#[from] slicetest_cluster::ClusterError),
}

impl EngineError {
    /// A query error with DataFusion's text made readable (no backtrace, hint appended).
    pub fn query(source: DataFusionError, hint: Option<String>) -> Self {
        let kind = kind_of(&source);
        Self::query_of_kind(source, hint, kind)
    }

    /// Like [`EngineError::query`], with the kind given.
    pub fn query_of_kind(source: DataFusionError, hint: Option<String>, kind: ErrorKind) -> Self {
        // Our own errors say what and where; DataFusion's "External error: " adds nothing.
        let mut message = own_message(&source).unwrap_or_else(|| source.strip_backtrace());
        if let Some(h) = hint {
            message.push_str("\n  hint: ");
            message.push_str(&h);
        }
        EngineError::Query { message, source, kind }
    }

    /// `self`, saying what was being done (the kind stays that of `self`).
    pub fn context(self, context: impl Into<String>) -> Self {
        EngineError::Context { context: context.into(), source: Box::new(self) }
    }

    /// What kind of failure this is (see [`ErrorKind`]).
    pub fn kind(&self) -> ErrorKind {
        match self {
            EngineError::Dataset(e) => e.kind(),
            EngineError::Sql(e) => e.kind(),
            EngineError::Query { kind, .. } => *kind,
            EngineError::ReadOnly { .. } => ErrorKind::ReadOnly,
            EngineError::Parse { .. } => ErrorKind::InvalidQuery,
            EngineError::InvalidArgument(_) => ErrorKind::InvalidArgument,
            EngineError::NotFound(_) => ErrorKind::NotFound,
            EngineError::Cancelled { .. } => ErrorKind::Cancelled,
            EngineError::Context { source, .. } | EngineError::Reworded { original: source, .. } => source.kind(),
            EngineError::Embed(e) => e.kind(),
            EngineError::Output(_) => ErrorKind::Internal,
            #[cfg(feature = "ballista")]
            EngineError::Cluster(e) => e.kind(),
        }
    }

    /// Where in the query text the error is, when the parser or planner says: the span of
    /// DataFusion's diagnostic (an unknown column, a type mismatch), or the position
    /// sqlparser puts in its message (its errors carry no structured location).
    pub fn position(&self) -> Option<Position> {
        match self {
            EngineError::Query { source, .. } => position_of(source),
            EngineError::Parse { line, column, .. } => Some(Position { line: *line as u64, column: *column as u64 }),
            EngineError::Context { source, .. } => source.position(),
            _ => None,
        }
    }
}

/// A place in a query's text: 1-based line and column.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    /// 1-based line.
    pub line: u64,
    /// 1-based column (characters, as sqlparser counts them).
    pub column: u64,
}

fn position_of(error: &DataFusionError) -> Option<Position> {
    if let Some(span) = error.diagnostic().and_then(|d| d.span)
        && span.start.line > 0
    {
        return Some(Position { line: span.start.line, column: span.start.column.max(1) });
    }
    match error.find_root() {
        // The one place slicetest reads a message: sqlparser's `ParserError` is a String
        // ending "… at Line: L, Column: C".
        DataFusionError::SQL(parser, _) => {
            let text = parser.to_string();
            let at = text.rfind("Line: ")?;
            let (line, rest) = text[at + 6..].split_once(", Column: ")?;
            let column: String = rest.chars().take_while(char::is_ascii_digit).collect();
            Some(Position { line: line.parse().ok()?, column: column.parse().ok()? })
        }
        _ => None,
    }
}

/// The message of the slicetest error `error` carries, if it only wraps one.
fn own_message(error: &DataFusionError) -> Option<String> {
    match error {
        DataFusionError::External(inner) => {
            let ours = inner.is::<EngineError>()
                || inner.is::<slicetest_sql::SqlError>()
                || inner.is::<slicetest_datasets::DatasetError>()
                || inner.is::<slicetest_embed::EmbedError>();
            ours.then(|| inner.to_string())
        }
        DataFusionError::Shared(inner) => own_message(inner),
        DataFusionError::Diagnostic(_, inner) => own_message(inner),
        _ => None,
    }
}

/// The kind of any error slicetest raises, wherever it sits in `error`'s `source()`
/// chain (through `DataFusionError::External`, contexts and shared errors).
pub fn kind_of(error: &(dyn Error + 'static)) -> ErrorKind {
    slicetest_error::classify_chain(error, |e| {
        if let Some(e) = e.downcast_ref::<EngineError>() {
            return Some(e.kind());
        }
        // A cluster's failure carried out of a query's stream (a scheduler lost mid-query).
        #[cfg(feature = "ballista")]
        if let Some(e) = e.downcast_ref::<slicetest_cluster::ClusterError>() {
            return Some(e.kind());
        }
        slicetest_sql::error::probe(e)
    })
}

impl From<datafusion::arrow::error::ArrowError> for EngineError {
    fn from(e: datafusion::arrow::error::ArrowError) -> Self {
        EngineError::query(e.into(), None)
    }
}

impl From<DataFusionError> for EngineError {
    fn from(e: DataFusionError) -> Self {
        EngineError::query(e, None)
    }
}

/// Result alias of the engine crate.
pub type Result<T, E = EngineError> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;
    use slicetest_datasets::DatasetError;

    #[test]
    fn an_engine_error_inside_datafusion_keeps_its_kind() {
        // discover_slices() is a SQL table that runs the engine: its errors come back
        // through DataFusion.
        let bad = EngineError::InvalidArgument("--min-support 0".into());
        let through = EngineError::query(DataFusionError::External(Box::new(bad)), None);
        assert_eq!(through.kind(), ErrorKind::InvalidArgument);
        let missing = EngineError::from(DatasetError::UnknownRun { name: "r".into(), hint: String::new() });
        let through = EngineError::query(DataFusionError::External(Box::new(missing)), None);
        assert_eq!(through.kind(), ErrorKind::NotFound);
        let context = EngineError::Cancelled { stored: 3 }.context("embedding d");
        assert_eq!(
            (context.kind(), context.to_string().as_str()),
            (ErrorKind::Cancelled, "embedding d: cancelled after storing 3 images; running it again resumes there")
        );
    }

    async fn planning_error(sql: &str) -> EngineError {
        // As the workspace's sessions are configured (slicetest_sql::catalog).
        let config = datafusion::prelude::SessionConfig::new().set_bool("datafusion.sql_parser.collect_spans", true);
        let ctx = datafusion::prelude::SessionContext::new_with_config(config);
        ctx.sql("CREATE TABLE t (a INT, b VARCHAR)").await.unwrap();
        crate::query::plan(&ctx, sql).await.map(|_| ()).unwrap_err()
    }

    #[tokio::test]
    async fn parser_and_planner_errors_say_where_they_are() {
        let parse = planning_error("SELECT a FROM t\nWHERE a = = 1").await;
        assert_eq!(parse.kind(), ErrorKind::InvalidQuery);
        let at = parse.position().unwrap_or_else(|| panic!("{parse:?}"));
        assert_eq!((at.line, at.column), (2, 11), "{parse}");
        let unknown = planning_error("SELECT a\n  FROM t\n WHERE nope = 1").await;
        assert_eq!(unknown.position(), Some(Position { line: 3, column: 8 }), "{unknown}");
        // A query that stops too soon is placed just after its last character.
        let cut = planning_error("SELECT a FROM t\nWHERE a = 1 AND  \n").await;
        assert_eq!(cut.position(), Some(Position { line: 2, column: 16 }), "{cut}");
        assert!(cut.to_string().contains("found: EOF at Line: 2, Column: 16"), "{cut}");
        let fine_but_missing = planning_error("SELECT * FROM missing").await;
        assert_eq!(fine_but_missing.position(), Some(Position { line: 1, column: 15 }), "{fine_but_missing}");
        let context = EngineError::Parse { message: "expected a name".into(), line: 4, column: 2 }.context("x");
        assert_eq!(context.position(), Some(Position { line: 4, column: 2 }));
        assert_eq!(EngineError::NotFound("x".into()).position(), None);
    }
}
