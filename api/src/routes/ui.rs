//! The web UI: a page and two assets, embedded in the binary (no CDN, works offline).
//! Plain HTML, CSS and one ES module over the JSON API; see docs/architecture.md.

use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

const INDEX: &str = include_str!("../../ui/index.html");
const ASSETS: [(&str, &str, &str); 2] = [
    ("app.js", include_str!("../../ui/app.js"), "text/javascript; charset=utf-8"),
    ("style.css", include_str!("../../ui/style.css"), "text/css; charset=utf-8"),
];

fn page(body: &'static str, content_type: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Served by the binary that answers the API: revalidate so an upgrade is seen at once.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(
        "content-security-policy",
        HeaderValue::from_static(
            "default-src 'self'; img-src 'self' data: blob:; style-src 'self'; script-src 'self'; frame-src 'self'",
        ),
    );
    response
}

/// `GET /`: the UI's page.
pub async fn index() -> Response {
    page(INDEX, "text/html; charset=utf-8")
}

/// `GET /ui/{file}`: the script and the style sheet.
pub async fn asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    ASSETS
        .iter()
        .find(|(name, _, _)| *name == file)
        .map(|(_, body, content_type)| page(body, content_type))
        .ok_or_else(|| ApiError::not_found(format!("no UI asset {file:?}")))
}
