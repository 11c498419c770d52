//! The router: one module per resource, the write check, the body limits.

mod datasets;
mod images;
mod query;
mod runs;
mod slices;
mod ui;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};

use crate::error::{ApiError, LoggedError};
use crate::state::AppState;

/// Every route of the API, documented in `openapi.json` (a test checks the two agree).
pub fn router(state: AppState) -> Router {
    let limits = state.limits().clone();
    Router::new()
        .route("/", get(ui::index))
        .route("/ui/{file}", get(ui::asset))
        .route("/health", get(health))
        .route("/openapi.json", get(openapi))
        .route("/sql", post(query::sql))
        .route("/search/text", get(query::search_text))
        .route("/search/image/{id}", get(query::search_image_id))
        .route("/search/image", post(query::search_image_upload).layer(DefaultBodyLimit::max(limits.max_image_bytes)))
        .route("/slices", get(slices::list).post(slices::create))
        .route("/slices/{name}", get(slices::get_one))
        .route("/slices/{name}/freeze", post(slices::freeze))
        .route("/slices/{name}/diff", get(slices::diff))
        .route("/slices/{name}/data", get(slices::data))
        .route("/images/{id}", get(images::file))
        .route("/images/{id}/thumbnail", get(images::thumbnail))
        .route("/images/{id}/info", get(images::info))
        .route("/images/{id}/mask", get(images::mask))
        .route("/runs", get(runs::list))
        .route("/runs/{name}", get(runs::get_one).post(runs::upload).layer(DefaultBodyLimit::disable()))
        .route("/runs/{name}/metrics", get(runs::metrics))
        .route("/runs/{name}/test", get(runs::test))
        .route("/runs/{name}/report", get(runs::report))
        .route("/runs/{name}/discover", get(runs::discover))
        .route("/datasets", get(datasets::list))
        .route("/datasets/{name}/embed", post(datasets::embed))
        .route("/jobs", get(datasets::jobs))
        .route("/jobs/{id}", get(datasets::job))
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(limits.max_request_bytes))
        .layer(axum::middleware::map_response(json_errors))
        .layer(axum::middleware::from_fn(log_requests))
        .with_state(state)
}

/// One log line per request: method, path (never the query string, which may carry a
/// client's text), status and time. A server error's details, which its body never
/// carries, are logged here and nowhere else.
async fn log_requests(request: axum::extract::Request, next: axum::middleware::Next) -> Response {
    let (method, path) = (request.method().clone(), request.uri().path().to_string());
    let started = std::time::Instant::now();
    let response = next.run(request).await;
    let (status, ms) = (response.status().as_u16(), started.elapsed().as_secs_f64() * 1e3);
    match response.extensions().get::<LoggedError>() {
        Some(LoggedError(detail)) => tracing::error!(%method, path, status, ms, detail, "request failed"),
        None if response.status().is_server_error() => tracing::error!(%method, path, status, ms, "request failed"),
        None => tracing::info!(%method, path, status, ms, "request"),
    }
    response
}

/// Rewrites the plain-text rejections of axum's extractors (a missing query parameter,
/// a body over its limit, 405) into the API's JSON error shape, so that every error a
/// client sees has a `code` and a `message`.
async fn json_errors(response: Response) -> Response {
    let status = response.status();
    let is_json =
        response.headers().get(header::CONTENT_TYPE).is_some_and(|v| v.as_bytes().starts_with(b"application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return response;
    }
    let code = match status {
        StatusCode::BAD_REQUEST => "bad_request",
        StatusCode::NOT_FOUND => "not_found",
        StatusCode::METHOD_NOT_ALLOWED => "method_not_allowed",
        StatusCode::PAYLOAD_TOO_LARGE => "too_large",
        StatusCode::UNSUPPORTED_MEDIA_TYPE => "unsupported_media_type",
        StatusCode::UNPROCESSABLE_ENTITY => "invalid_input",
        _ => "error",
    };
    let (parts, body) = response.into_parts();
    let text = axum::body::to_bytes(body, 64 << 10).await.unwrap_or_default();
    let message = String::from_utf8_lossy(&text).trim().to_string();
    let mut error =
        ApiError::new(status, code, if message.is_empty() { status.to_string() } else { message }).into_response();
    for name in [header::ALLOW, header::WWW_AUTHENTICATE] {
        if let Some(value) = parts.headers.get(&name) {
            error.headers_mut().insert(name, value.clone());
        }
    }
    error
}

async fn health() -> impl IntoResponse {
    axum::Json(serde_json::json!({"status": "ok", "version": env!("CARGO_PKG_VERSION")}))
}

async fn openapi() -> Response {
    let mut response = crate::OPENAPI.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

async fn not_found() -> ApiError {
    ApiError::not_found("no such endpoint; the API is described at /openapi.json")
}

/// Proof that a request may write: present in the handlers of writes. With a token
/// configured, the request must carry `Authorization: Bearer <token>`.
pub struct WriteAccess;

impl FromRequestParts<AppState> for WriteAccess {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Self, Self::Rejection> {
        let Some(token) = state.token() else { return Ok(WriteAccess) };
        let given = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer_credentials);
        match given {
            Some(given) if constant_time_eq(given.as_bytes(), token.as_bytes()) => Ok(WriteAccess),
            Some(_) => Err(ApiError::new(StatusCode::UNAUTHORIZED, "unauthorized", "wrong token")),
            None => Err(ApiError::new(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "this server needs a token for writes: send Authorization: Bearer <token>",
            )),
        }
    }
}

/// The credentials of an `Authorization: Bearer <token>` header; the scheme's name is
/// case-insensitive (RFC 9110 §11.1), so `bearer` and `BEARER` are accepted too.
fn bearer_credentials(value: &str) -> Option<&str> {
    let (scheme, credentials) = value.trim_start().split_once(' ')?;
    scheme.eq_ignore_ascii_case("bearer").then(|| credentials.trim())
}

/// Compares without returning early, so response time says nothing about the token.
fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let mut diff = a.len() ^ b.len();
    for (i, x) in a.iter().enumerate() {
        diff |= usize::from(x ^ b.get(i).copied().unwrap_or(0));
    }
    diff == 0
}

#[cfg(test)]
mod tests {
    use super::{bearer_credentials, constant_time_eq};

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for header in ["Bearer sekret", "bearer sekret", "BEARER  sekret ", " Bearer sekret"] {
            assert_eq!(bearer_credentials(header), Some("sekret"), "{header:?}");
        }
        assert_eq!(bearer_credentials("Basic c2VrcmV0"), None);
        assert_eq!(bearer_credentials("Bearersekret"), None);
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
