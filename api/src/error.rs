//! The one error type of the API and the only place errors become HTTP statuses.
//!
//! Every error answers `{"error": {"code", "message"}}`, plus fields of its own for some
//! codes (`no_embeddings` has `dataset`, `hint`, `command` and `model`). Client errors carry the
//! engine's message (which says what and where); server errors are logged in full and
//! answered with a generic message, so file paths and internals never reach a client.

use axum::Json;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use datafusion::error::DataFusionError;
use serde_json::{Map, Value, json};
use slicetest_engine::{DatasetError, EngineError};

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
}

/// Result alias of the API crate.
pub type ApiResult<T> = std::result::Result<T, ApiError>;

impl ApiError {
    /// An error with `status`, `code` and `message`.
    pub fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        ApiError { status, code, message: message.into(), details: Map::new() }
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
            "no_embeddings",
            format!("dataset {dataset} has no embeddings yet, so it cannot be searched by text or by image"),
        )
        .with("dataset", dataset)
        .with("hint", format!("embed it first: run `{command}`, or start a job with POST /datasets/{dataset}/embed"))
        .with("command", command)
        .with("model", model)
    }

    /// 400: the request itself is malformed.
    pub fn bad_request(message: impl Into<String>) -> Self {
        Self::new(StatusCode::BAD_REQUEST, "bad_request", message)
    }

    /// 404.
    pub fn not_found(message: impl Into<String>) -> Self {
        Self::new(StatusCode::NOT_FOUND, "not_found", message)
    }

    /// 500 with a generic message; `detail` goes to the server log only.
    pub fn internal(detail: impl std::fmt::Display) -> Self {
        eprintln!("slicetest serve: internal error: {detail}");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error (details are in the server log)")
    }

    /// The error of a query or slice operation, with `root` (the workspace directory)
    /// removed from its message.
    pub fn from_engine(error: EngineError, root: &std::path::Path) -> Self {
        let mut e = classify(error);
        if e.status.is_client_error() {
            e.message = scrub(&e.message, root);
        }
        e
    }
}

/// Replaces the workspace's absolute path in `message`, so a client learns names, not the
/// server's directory layout.
pub fn scrub(message: &str, root: &std::path::Path) -> String {
    let root = root.to_string_lossy();
    if root.len() > 1 { message.replace(root.as_ref(), "<workspace>") } else { message.to_string() }
}

fn classify(error: EngineError) -> ApiError {
    use StatusCode as S;
    let message = error.to_string();
    match error {
        EngineError::Dataset(d) | EngineError::Sql(slicetest_engine::SqlError::Dataset(d)) => dataset_error(d),
        EngineError::Query { source, .. } | EngineError::Sql(slicetest_engine::SqlError::DataFusion(source)) => {
            query_error(&source, message)
        }
        EngineError::Statement(m) => ApiError::new(S::BAD_REQUEST, "bad_request", m),
        EngineError::Embed(slicetest_engine::EmbedError::Image { .. }) => {
            ApiError::new(S::BAD_REQUEST, "bad_image", message)
        }
        EngineError::Embed(slicetest_engine::EmbedError::Model { .. }) => {
            eprintln!("slicetest serve: {message}");
            ApiError::new(S::SERVICE_UNAVAILABLE, "model_unavailable", "the embedding model could not be loaded")
        }
        EngineError::Embed(_) | EngineError::Output(_) => ApiError::internal(message),
    }
}

fn dataset_error(error: DatasetError) -> ApiError {
    use StatusCode as S;
    let message = error.to_string();
    let (status, code) = match &error {
        DatasetError::InvalidName { .. } => (S::BAD_REQUEST, "invalid_name"),
        DatasetError::UnknownDataset { .. }
        | DatasetError::UnknownVersion { .. }
        | DatasetError::UnknownSlice { .. }
        | DatasetError::UnknownSliceVersion { .. }
        | DatasetError::UnknownRun { .. } => (S::NOT_FOUND, "not_found"),
        DatasetError::SliceExists(_) => (S::CONFLICT, "exists"),
        DatasetError::SliceNotFrozen(_) => (S::CONFLICT, "not_frozen"),
        DatasetError::NothingIngested { .. } => (S::CONFLICT, "no_data"),
        DatasetError::BadHoldout(_) | DatasetError::BadInput { .. } | DatasetError::BadManifestFile { .. } => {
            (S::UNPROCESSABLE_ENTITY, "invalid_input")
        }
        _ => return ApiError::internal(message),
    };
    ApiError::new(status, code, message)
}

fn query_error(source: &DataFusionError, message: String) -> ApiError {
    use StatusCode as S;
    match source.find_root() {
        DataFusionError::ResourcesExhausted(_) => {
            ApiError::new(S::UNPROCESSABLE_ENTITY, "resources_exhausted", message)
        }
        DataFusionError::IoError(_) | DataFusionError::ObjectStore(_) | DataFusionError::Internal(_) => {
            ApiError::internal(message)
        }
        // text_search / image_search / clip_similarity on a dataset that was never embedded.
        DataFusionError::Plan(plan) if plan.contains("has no embeddings yet") => {
            ApiError::new(S::CONFLICT, "no_embeddings", plan.clone())
        }
        // SQLOptions' verdicts: "DDL not supported: …", "DML not supported: …",
        // "Statement not supported: …".
        _ if message.contains(" not supported: ") && is_read_only_refusal(&message) => {
            ApiError::new(S::FORBIDDEN, "read_only", message)
        }
        _ => ApiError::new(S::BAD_REQUEST, "query", message),
    }
}

fn is_read_only_refusal(message: &str) -> bool {
    ["DDL not supported", "DML not supported", "Statement not supported"].iter().any(|p| message.contains(p))
}

impl From<EngineError> for ApiError {
    fn from(error: EngineError) -> Self {
        classify(error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut error = Map::new();
        error.insert("code".into(), self.code.into());
        error.insert("message".into(), self.message.into());
        error.extend(self.details);
        let body = json!({ "error": error });
        let mut response = (self.status, Json(body)).into_response();
        if self.status == StatusCode::UNAUTHORIZED {
            response.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
        }
        response
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_follow_the_kind_of_error() {
        let unknown = DatasetError::UnknownSlice { name: "x".into(), hint: String::new() };
        assert_eq!(ApiError::from(EngineError::from(unknown)).status, StatusCode::NOT_FOUND);
        let ddl = DataFusionError::Plan("DDL not supported: CreateExternalTable".into());
        let e = ApiError::from(EngineError::query(ddl, None));
        assert_eq!((e.status, e.code), (StatusCode::FORBIDDEN, "read_only"));
        let plan = DataFusionError::Plan("table 'x' not found".into());
        assert_eq!(ApiError::from(EngineError::query(plan, None)).status, StatusCode::BAD_REQUEST);
        let unembedded = DataFusionError::Plan("dataset d has no embeddings yet: run `slicetest embed d` first".into());
        let e = ApiError::from(EngineError::query(unembedded, None));
        assert_eq!((e.status, e.code), (StatusCode::CONFLICT, "no_embeddings"));
        assert!(e.message.starts_with("dataset d has no embeddings yet"), "DataFusion's prefix is gone: {}", e.message);
        let io = DataFusionError::IoError(std::io::Error::other("/secret/path"));
        let e = ApiError::from(EngineError::query(io, None));
        assert_eq!(e.status, StatusCode::INTERNAL_SERVER_ERROR);
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
