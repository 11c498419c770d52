//! The one error type of the API and the only place errors become HTTP statuses.
//!
//! Every error answers `{"error": {"code", "message"}}`, plus fields of its own for some
//! codes (`no_embeddings` has `dataset`, `hint`, `command` and `model`; a query error
//! that knows where it is has `position`: `{"line", "column"}`, 1-based). An engine error's
//! status comes from its [`ErrorKind`] through [`status_of`], one table; the kind is
//! decided where the error was made, so the same missing slice is a 404 whether a REST path
//! or `SELECT * FROM slice('…')` named it. Client errors carry the engine's message (which
//! says what and where) with the workspace path scrubbed; server errors answer a generic
//! message, and their details go to the request log (the logging middleware), so file
//! paths and internals never reach a client.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Map, Value, json};
use slicetest_engine::{EngineError, ErrorKind};

/// An error answered to a client.
#[derive(Debug)]
pub struct ApiError {
    /// The HTTP status.
    pub status: StatusCode,
    /// A stable, machine-readable code (`not_found`, `read_only`, …).
    pub code: &'static str,
    /// What went wrong, for a person.
    pub message: String,
    /// More fields of the error object (what a client can act on: a hint, a command).
    pub details: Map<String, Value>,
    /// What the server log says about it (server errors: the full error, never sent).
    pub log_detail: Option<String>,
}

/// Result alias of the API crate.
pub type ApiResult<T> = std::result::Result<T, ApiError>;

/// The HTTP status of each kind of engine error: the one table.
pub const fn status_of(kind: ErrorKind) -> StatusCode {
    use StatusCode as S;
    match kind {
        ErrorKind::InvalidArgument | ErrorKind::InvalidName | ErrorKind::InvalidQuery | ErrorKind::InvalidImage => {
            S::BAD_REQUEST
        }
        ErrorKind::InvalidInput | ErrorKind::ResourcesExhausted => S::UNPROCESSABLE_ENTITY,
        ErrorKind::NotFound => S::NOT_FOUND,
        ErrorKind::AlreadyExists | ErrorKind::NotFrozen | ErrorKind::NoData | ErrorKind::NoEmbeddings => S::CONFLICT,
        ErrorKind::Cancelled => S::CONFLICT,
        ErrorKind::ReadOnly => S::FORBIDDEN,
        ErrorKind::ModelUnavailable | ErrorKind::ClusterUnavailable => S::SERVICE_UNAVAILABLE,
        ErrorKind::Internal => S::INTERNAL_SERVER_ERROR,
    }
}

/// What a client is told of a server-side failure of `kind`.
const fn server_message(kind: ErrorKind) -> &'static str {
    match kind {
        ErrorKind::ModelUnavailable => "the embedding model could not be loaded (details are in the server log)",
        ErrorKind::ClusterUnavailable => "the SQL cluster could not be reached (details are in the server log)",
        _ => "internal error (details are in the server log)",
    }
}

/// The request log's copy of an error's details, carried from the handler to the logging
/// middleware in the response's extensions (never in its body).
#[derive(Debug, Clone)]
pub struct LoggedError(pub String);

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), details: Map::new(), log_detail: None }
    }

    /// Adds the field `key` to the error object.
    pub fn with(mut self, key: &str, value: impl Into<Value>) -> Self {
        self.details.insert(key.to_string(), value.into());
        self
    }

    /// 409 `no_embeddings`: `dataset` cannot be searched until it is embedded; says how
    /// (`command` for the CLI, or a job with the server's `model`).
    pub fn no_embeddings(dataset: &str, command: String, model: &str) -> Self {
        Self::new(
            StatusCode::CONFLICT,
            ErrorKind::NoEmbeddings.code(),
            format!("dataset {dataset} has no embeddings yet, so it cannot be searched by text or by image"),
        )
        .with("dataset", dataset)
        .with("hint", format!("embed it first: run `{command}`, or start a job with POST /datasets/{dataset}/embed"))
        .with("command", command)
        .with("model", model)
    }

    /// 400: the request itself is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, ErrorKind::InvalidArgument.code(), message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, ErrorKind::NotFound.code(), message)
    }

    /// 500 with a generic message; `detail` goes to the server log only.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        Self::server(ErrorKind::Internal, detail)
    }

    /// A server-side failure of `kind`: its status and a generic message; `detail` goes to
    /// the server log only.
    fn server(kind: ErrorKind, detail: impl std::fmt::Display) -> Self {
        let mut e = Self::new(status_of(kind), kind.code(), server_message(kind));
        e.log_detail = Some(detail.to_string());
        e
    }

    /// An engine error as the client sees it: status and code from its kind; for client
    /// errors the engine's message with `root` (the workspace directory) removed, for
    /// server errors a generic message (the error itself goes to the log).
    pub fn from_engine(error: EngineError, root: &std::path::Path) -> Self {
        let kind = error.kind();
        if kind.is_client_error() {
            let answer = ApiError::new(status_of(kind), kind.code(), scrub(&error.to_string(), root));
            match error.position() {
                Some(at) => answer.with("position", json!({ "line": at.line, "column": at.column })),
                None => answer,
            }
        } else {
            ApiError::server(kind, error)
        }
    }
}

/// Replaces the workspace's absolute path in `message`, so a client learns names, not the
/// server's directory layout.
pub fn scrub(message: &str, root: &std::path::Path) -> String {
    let root = root.to_string_lossy();
    if root.len() > 1 { message.replace(root.as_ref(), "<workspace>") } else { message.to_string() }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = Map::new();
        error.insert("code".into(), self.code.into());
        error.insert("message".into(), self.message.into());
        error.extend(self.details);
        let body = json!({ "error": error });
        let mut response = (self.status, Json(body)).into_response();
        if let Some(detail) = self.log_detail {
            response.extensions_mut().insert(LoggedError(detail));
        }
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::error::DataFusionError;
    use slicetest_engine::DatasetError;

    fn answer(error: EngineError) -> ApiError {
        ApiError::from_engine(error, std::path::Path::new("/home/me/ws"))
    }

    #[test]
    fn statuses_follow_the_kind_of_error() {
        let unknown = DatasetError::UnknownSlice { name: "x".into(), hint: String::new() };
        assert_eq!(answer(unknown.into()).status, StatusCode::NOT_FOUND);
        let ddl = EngineError::ReadOnly { message: "DDL not supported: CreateExternalTable".into() };
        let e = answer(ddl);
        assert_eq!((e.status, e.code), (StatusCode::FORBIDDEN, "read_only"));
        let plan = DataFusionError::Plan("table 'x' not found".into());
        assert_eq!(answer(EngineError::query(plan, None)).status, StatusCode::BAD_REQUEST);
        let unembedded = slicetest_engine::SqlError::NoEmbeddings { dataset: "d".into() }.into_datafusion();
        let e = answer(EngineError::query(unembedded, None));
        assert_eq!((e.status, e.code), (StatusCode::CONFLICT, "no_embeddings"));
        assert!(e.message.starts_with("dataset d has no embeddings yet"), "DataFusion's prefix is gone: {}", e.message);
    }

    #[test]
    fn a_failure_inside_a_sql_function_answers_as_it_would_over_rest() {
        let missing = DatasetError::UnknownSlice { name: "nope".into(), hint: String::new() };
        let e = answer(EngineError::query(DataFusionError::External(Box::new(missing)), None));
        assert_eq!((e.status, e.code), (StatusCode::NOT_FOUND, "not_found"));
        let io = DatasetError::Io {
            action: "reading",
            path: "/home/me/ws/slices/s/v1/members.parquet".into(),
            source: std::io::Error::other("Input/output error"),
        };
        let e = answer(EngineError::query(DataFusionError::External(Box::new(io)), None));
        assert_eq!((e.status, e.code), (StatusCode::INTERNAL_SERVER_ERROR, "internal"));
        assert!(!e.message.contains("/home") && !e.message.contains("members"), "{}", e.message);
        assert!(e.log_detail.is_some_and(|d| d.contains("members.parquet")), "the log keeps the detail");
    }

    #[test]
    fn every_kind_has_a_status_and_server_errors_say_nothing() {
        for kind in ErrorKind::ALL {
            let status = status_of(kind);
            assert_eq!(status.is_server_error(), !kind.is_client_error(), "{kind:?}");
        }
        let e = ApiError::internal("/secret/path");
        assert!(!e.message.contains("/secret"), "{}", e.message);
    }

    #[test]
    fn the_workspace_path_is_scrubbed_from_client_errors() {
        let root = std::path::Path::new("/home/me/ws");
        let bad = DatasetError::BadInput { source_path: root.join("tmp/x.csv"), message: "bad row 3".into() };
        let e = ApiError::from_engine(bad.into(), root);
        assert_eq!(e.message, "<workspace>/tmp/x.csv: bad row 3");
    }
}
