//! The router: one module per resource, the write check, the body limits.

mod datasets;
mod images;
mod query;
mod runs;
mod slices;
mod ui;

use std::net::{IpAddr, Ipv6Addr};

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, FromRequestParts, State};
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde::de::DeserializeOwned;

use crate::error::{ApiError, ApiResult, LoggedError};
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
        .layer(axum::middleware::from_fn_with_state(state.clone(), guard_origin))
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

/// Refuses what a web page on another site could make a browser send (see docs/http.md,
/// "Safety and limits"): on a server bound to loopback, a `Host` other than `localhost` or
/// a loopback address (a DNS-rebinding page: its own name, resolved to 127.0.0.1); and any
/// request that is not a read (`POST` …) whose `Origin` is not the server itself (a
/// cross-site form or `no-cors` fetch, which browsers send without a preflight). The web UI
/// is same-origin; the Python client and curl send no `Origin`.
async fn guard_origin(
    State(state): State<AppState>,
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    let names = state.loopback_only().then(|| state.allowed_hosts());
    match check_origin(names, request.method(), request.headers(), request.uri()) {
        Ok(()) => next.run(request).await,
        Err(refused) => refused.into_response(),
    }
}

/// The checks of [`guard_origin`]; `loopback_only` holds the names other than loopback
/// ones that a loopback server answers to (None: the server is not on loopback).
fn check_origin(
    loopback_only: Option<&[String]>,
    method: &Method,
    headers: &HeaderMap,
    uri: &Uri,
) -> Result<(), ApiError> {
    let host = match headers.get(header::HOST) {
        Some(value) => match value.to_str() {
            Ok(host) => Some(host),
            Err(_) if loopback_only.is_some() => return Err(forbidden_host("(not ASCII)")),
            Err(_) => None,
        },
        None => uri.authority().map(|a| a.as_str()),
    };
    if let Some(allowed) = loopback_only
        && let Some(host) = host
        && !is_loopback_host(host)
        && !host_name(host).is_some_and(|name| allowed.iter().any(|a| a.eq_ignore_ascii_case(name)))
    {
        return Err(forbidden_host(host));
    }
    let reads = [Method::GET, Method::HEAD, Method::OPTIONS];
    let Some(origin) = headers.get(header::ORIGIN) else { return Ok(()) };
    if reads.contains(method) {
        return Ok(());
    }
    let origin = origin.to_str().unwrap_or("(not ASCII)");
    match host {
        Some(host) if same_origin(origin, host) => Ok(()),
        _ => Err(ApiError::new(
            StatusCode::FORBIDDEN,
            "cross_origin",
            format!(
                "refused a {method} from a page of another site (Origin {origin:?}, but this server is {:?}): \
                 only the server's own web UI may send writes from a browser; clients that are not browsers \
                 (the Python client, curl) send no Origin",
                host.unwrap_or("unknown")
            ),
        )),
    }
}

fn forbidden_host(host: &str) -> ApiError {
    ApiError::new(
        StatusCode::FORBIDDEN,
        "forbidden_host",
        format!(
            "this server listens on loopback only and answers requests for localhost, 127.0.0.1 or [::1], \
             not Host {host:?} (a page whose name resolves to this machine must not read it); connect to \
             http://127.0.0.1:<port>, or, behind a reverse proxy, start it with --allowed-host <the proxy's name>"
        ),
    )
}

/// The name of `host[:port]` (`name` or `name.`, without the dot), without its port; None
/// when the port is not a number or the host is an IPv6 literal.
fn host_name(host: &str) -> Option<&str> {
    let name = match host.rsplit_once(':') {
        Some((name, port)) if is_port(port) && !name.contains(':') => name,
        Some(_) => return None,
        None => host,
    };
    Some(name.strip_suffix('.').unwrap_or(name))
}

/// `host[:port]` names this machine's loopback interface: `localhost` or a loopback
/// address literal (`127.0.0.1`, `[::1]`), any port. A name is never trusted to resolve
/// there: DNS rebinding points a page's own name at 127.0.0.1.
fn is_loopback_host(host: &str) -> bool {
    if let Some(bracketed) = host.strip_prefix('[') {
        let Some((ip, port)) = bracketed.split_once(']') else { return false };
        return (port.is_empty() || is_port(port.strip_prefix(':').unwrap_or("x")))
            && ip.parse::<Ipv6Addr>().is_ok_and(|ip| ip.is_loopback());
    }
    host_name(host).is_some_and(|name| {
        name.eq_ignore_ascii_case("localhost") || name.parse::<IpAddr>().is_ok_and(|ip| ip.is_loopback())
    })
}

fn is_port(text: &str) -> bool {
    !text.is_empty() && text.len() <= 5 && text.bytes().all(|b| b.is_ascii_digit())
}

/// Whether `origin` (`scheme://host[:port]`, as browsers send it) is the server `host`
/// (`host[:port]`, the request's `Host`): the same name and port, a missing port being the
/// scheme's default.
fn same_origin(origin: &str, host: &str) -> bool {
    let Some((scheme, authority)) = origin.split_once("://") else { return false };
    let default_port = match scheme.to_ascii_lowercase().as_str() {
        "http" => "80",
        "https" => "443",
        _ => return false,
    };
    let split = |authority: &str| -> (String, String) {
        let (name, port) = match authority.rsplit_once(':') {
            Some((name, port)) if !port.contains(']') => (name, port),
            _ => (authority, default_port),
        };
        (name.to_ascii_lowercase(), port.to_string())
    };
    split(authority) == split(host)
}

/// Whether `headers` declare a JSON body (`application/json`, or `application/…+json`).
fn is_json(headers: &HeaderMap) -> Option<bool> {
    let value = headers.get(header::CONTENT_TYPE)?;
    let media = value.to_str().unwrap_or("").split(';').next().unwrap_or("").trim().to_ascii_lowercase();
    Some(media == "application/json" || (media.starts_with("application/") && media.ends_with("+json")))
}

/// The JSON body of a write, `shape` naming what it must be for errors: None when there is
/// none (an empty body, sent without a `Content-Type` or as JSON). A body of any other
/// `Content-Type` is refused with 415 before it is read: a browser sends `text/plain` and
/// form bodies across sites without asking first, JSON never.
pub(crate) fn json_body<T: DeserializeOwned>(headers: &HeaderMap, body: &Bytes, shape: &str) -> ApiResult<Option<T>> {
    let empty = body.iter().all(u8::is_ascii_whitespace);
    match is_json(headers) {
        Some(true) => {}
        None if empty => return Ok(None),
        declared => {
            let declared = match declared {
                None => "no Content-Type".to_string(),
                Some(_) => format!(
                    "Content-Type {:?}",
                    headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("")
                ),
            };
            return Err(ApiError::new(
                StatusCode::UNSUPPORTED_MEDIA_TYPE,
                "unsupported_media_type",
                format!("the body must be {shape} sent as Content-Type: application/json, not with {declared}"),
            ));
        }
    }
    if empty {
        return Ok(None);
    }
    serde_json::from_slice(body).map(Some).map_err(|e| ApiError::bad_request(format!("the body must be {shape}: {e}")))
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
        // A write is computed from the workspace as it is now: another process may have
        // committed within SLICETEST_READ_CONSISTENCY_INTERVAL (a CLI ingest, then a freeze
        // over HTTP), so what this server remembers of the bucket's listings is forgotten.
        let fresh = || {
            state.engine().workspace().layout().storage().forget_recent_reads();
            Ok(WriteAccess)
        };
        let Some(token) = state.token() else { return fresh() };
        let given = parts.headers.get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).and_then(bearer_credentials);
        match given {
            Some(given) if constant_time_eq(given.as_bytes(), token.as_bytes()) => fresh(),
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
    use super::{bearer_credentials, constant_time_eq, is_loopback_host, same_origin};

    #[test]
    fn the_bearer_scheme_is_case_insensitive() {
        for header in ["Bearer sekret", "bearer sekret", "BEARER  sekret ", " Bearer sekret"] {
            assert_eq!(bearer_credentials(header), Some("sekret"), "{header:?}");
        }
        assert_eq!(bearer_credentials("Basic c2VrcmV0"), None);
        assert_eq!(bearer_credentials("Bearersekret"), None);
    }

    #[test]
    fn only_loopback_names_are_loopback_hosts() {
        for host in ["localhost", "LocalHost:7878", "localhost.:1", "127.0.0.1", "127.1.2.3:80", "[::1]", "[::1]:7878"]
        {
            assert!(is_loopback_host(host), "{host}");
        }
        for host in
            ["evil.example", "localhost.evil.example", "0.0.0.0:7878", "[::]:7878", "[::1]x", "localhost:x", "10.0.0.1"]
        {
            assert!(!is_loopback_host(host), "{host}");
        }
    }

    #[test]
    fn an_origin_is_the_same_host_and_port() {
        assert!(same_origin("http://localhost:7878", "localhost:7878"));
        assert!(same_origin("http://LOCALHOST:7878", "localhost:7878"));
        assert!(same_origin("http://[::1]:7878", "[::1]:7878"));
        assert!(same_origin("https://ml.example", "ml.example:443"));
        assert!(same_origin("http://ml.example", "ml.example"));
        assert!(!same_origin("http://ml.example", "ml.example:7878"));
        assert!(!same_origin("http://evil.example:7878", "localhost:7878"));
        assert!(!same_origin("null", "localhost:7878"));
        assert!(!same_origin("file://", "localhost:7878"));
    }

    #[test]
    fn tokens_compare_whole() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"abcd"));
        assert!(!constant_time_eq(b"", b"a"));
    }
}
