//! The web UI: a page, its style sheet and its ES modules, embedded in the binary (no CDN,
//! no bundler, works offline). Plain HTML, CSS and native modules over the JSON API; see
//! docs/architecture.md.

use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

const INDEX: &str = include_str!("../../ui/index.html");
/// The files under `/ui/`: name, text, media type. A module added to api/ui/ is listed here.
const ASSETS: [(&str, &str, &str); 12] = [
    ("style.css", include_str!("../../ui/style.css"), "text/css; charset=utf-8"),
    module("app.js", include_str!("../../ui/app.js")),
    module("api.js", include_str!("../../ui/api.js")),
    module("dom.js", include_str!("../../ui/dom.js")),
    module("format.js", include_str!("../../ui/format.js")),
    module("editor.js", include_str!("../../ui/editor.js")),
    module("home.js", include_str!("../../ui/home.js")),
    module("explore.js", include_str!("../../ui/explore.js")),
    module("search.js", include_str!("../../ui/search.js")),
    module("image.js", include_str!("../../ui/image.js")),
    module("slices.js", include_str!("../../ui/slices.js")),
    module("runs.js", include_str!("../../ui/runs.js")),
];

const fn module(name: &'static str, text: &'static str) -> (&'static str, &'static str, &'static str) {
    (name, text, "text/javascript; charset=utf-8")
}

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

/// `GET /ui/{file}`: the style sheet and the modules.
pub async fn asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    ASSETS
        .iter()
        .find(|(name, _, _)| *name == file)
        .map(|(_, body, content_type)| page(body, content_type))
        .ok_or_else(|| ApiError::not_found(format!("no UI asset {file:?}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_file_of_the_ui_is_served() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("ui");
        for entry in std::fs::read_dir(&dir).unwrap() {
            let name = entry.unwrap().file_name().into_string().unwrap();
            if name.ends_with(".js") || name.ends_with(".css") {
                assert!(ASSETS.iter().any(|(served, _, _)| *served == name), "api/ui/{name} is not in ASSETS");
            }
        }
    }
}
