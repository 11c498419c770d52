//! What kind of failure an error is, said where the error is made.
//!
//! Every crate's error type (`DatasetError`, `EmbedError`, `SqlError`, `EngineError`)
//! has a `kind()` that answers with an [`ErrorKind`]. Front ends map the kind, never the
//! message text: the HTTP API keeps one kind → status table, so a missing slice is a 404
//! whether it was named in a REST path or inside `SELECT * FROM slice('…')`.
//!
//! Errors cross DataFusion as `DataFusionError::External`; [`classify_chain`] walks the
//! `source()` chain through such wrappers to the first error that knows its kind.

use std::error::Error;

/// The kind of a failure: whose fault it is and what a client can do about it.
///
/// Each kind has a stable, machine-readable [`code`](ErrorKind::code) that the HTTP API
/// sends as `error.code`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ErrorKind {
    /// A request's option or argument is malformed or out of range (`k = 0`, `--limit 0`).
    InvalidArgument,
    /// A name (of a dataset, slice, run…) breaks the naming rules.
    InvalidName,
    /// A SQL query or slicetest statement does not parse, plan or run.
    InvalidQuery,
    /// An uploaded or imported file's content is wrong (a bad row, an unknown image id).
    InvalidInput,
    /// An image could not be decoded.
    InvalidImage,
    /// The named dataset, version, slice, run, image or model does not exist.
    NotFound,
    /// Something by that name already exists.
    AlreadyExists,
    /// The slice has no frozen version yet.
    NotFrozen,
    /// The workspace or dataset holds no data yet.
    NoData,
    /// The dataset has no embeddings yet, so it cannot be searched.
    NoEmbeddings,
    /// The operation would write, and this interface is read-only (SQL over HTTP).
    ReadOnly,
    /// The query needs more memory than it may use.
    ResourcesExhausted,
    /// A model could not be loaded on this machine.
    ModelUnavailable,
    /// The SQL cluster (`--cluster`) could not be reached.
    ClusterUnavailable,
    /// The work was cancelled before it finished (what it stored stays).
    Cancelled,
    /// A failure of the machine or of slicetest itself (I/O, a corrupt file, a bug): not
    /// the client's to fix, and its details stay in the server's log.
    Internal,
}

impl ErrorKind {
    /// Every kind, for tables and tests that must cover them all.
    pub const ALL: [ErrorKind; 16] = [
        ErrorKind::InvalidArgument,
        ErrorKind::InvalidName,
        ErrorKind::InvalidQuery,
        ErrorKind::InvalidInput,
        ErrorKind::InvalidImage,
        ErrorKind::NotFound,
        ErrorKind::AlreadyExists,
        ErrorKind::NotFrozen,
        ErrorKind::NoData,
        ErrorKind::NoEmbeddings,
        ErrorKind::ReadOnly,
        ErrorKind::ResourcesExhausted,
        ErrorKind::ModelUnavailable,
        ErrorKind::ClusterUnavailable,
        ErrorKind::Cancelled,
        ErrorKind::Internal,
    ];

    /// The stable code of this kind (the HTTP API's `error.code`).
    pub const fn code(self) -> &'static str {
        match self {
            ErrorKind::InvalidArgument => "bad_request",
            ErrorKind::InvalidName => "invalid_name",
            ErrorKind::InvalidQuery => "query",
            ErrorKind::InvalidInput => "invalid_input",
            ErrorKind::InvalidImage => "bad_image",
            ErrorKind::NotFound => "not_found",
            ErrorKind::AlreadyExists => "exists",
            ErrorKind::NotFrozen => "not_frozen",
            ErrorKind::NoData => "no_data",
            ErrorKind::NoEmbeddings => "no_embeddings",
            ErrorKind::ReadOnly => "read_only",
            ErrorKind::ResourcesExhausted => "resources_exhausted",
            ErrorKind::ModelUnavailable => "model_unavailable",
            ErrorKind::ClusterUnavailable => "cluster_unavailable",
            ErrorKind::Cancelled => "cancelled",
            ErrorKind::Internal => "internal",
        }
    }

    /// Whether the client caused the failure (and may see its message).
    pub const fn is_client_error(self) -> bool {
        !matches!(self, ErrorKind::Internal | ErrorKind::ModelUnavailable | ErrorKind::ClusterUnavailable)
    }
}

impl std::fmt::Display for ErrorKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.code())
    }
}

/// The kind of `error`: `probe` is asked about `error`, then about each of its sources in
/// turn; the first answer wins. A chain that no probe recognises is [`ErrorKind::Internal`]
/// (an unknown failure is never blamed on the client).
///
/// A probe answers `None` for wrappers that only carry another error
/// (`DataFusionError::External`, a context), so the walk goes on to what they carry.
pub fn classify_chain(
    error: &(dyn Error + 'static),
    probe: impl Fn(&(dyn Error + 'static)) -> Option<ErrorKind>,
) -> ErrorKind {
    let mut link = Some(error);
    while let Some(e) = link {
        if let Some(kind) = probe(e) {
            return kind;
        }
        link = e.source();
    }
    ErrorKind::Internal
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Wrapper(Box<dyn Error + 'static>);
    impl std::fmt::Display for Wrapper {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "wrapped: {}", self.0)
        }
    }
    impl Error for Wrapper {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            Some(self.0.as_ref())
        }
    }

    #[derive(Debug)]
    struct Missing;
    impl std::fmt::Display for Missing {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("missing")
        }
    }
    impl Error for Missing {}

    fn probe(e: &(dyn Error + 'static)) -> Option<ErrorKind> {
        e.is::<Missing>().then_some(ErrorKind::NotFound)
    }

    #[test]
    fn the_walk_reaches_the_error_that_knows_its_kind() {
        let nested = Wrapper(Box::new(Wrapper(Box::new(Missing))));
        assert_eq!(classify_chain(&nested, probe), ErrorKind::NotFound);
        let unknown = Wrapper(Box::new(std::io::Error::other("disk")));
        assert_eq!(classify_chain(&unknown, probe), ErrorKind::Internal);
    }

    #[test]
    fn codes_are_distinct() {
        let codes: std::collections::BTreeSet<_> = ErrorKind::ALL.iter().map(|k| k.code()).collect();
        assert_eq!(codes.len(), ErrorKind::ALL.len());
    }
}
