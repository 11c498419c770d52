//! `GET /images/{id}` and `GET /images/{id}/thumbnail`: image bytes by id only.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use slicetest_engine::ImageFile;

use crate::error::{ApiError, ApiResult};
use crate::images::{media_type, thumbnail as make_thumbnail};
use crate::state::AppState;

/// Query parameters of the image endpoints.
#[derive(Debug, Deserialize)]
pub struct ImageParams {
    /// The dataset (default: the workspace default).
    dataset: Option<String>,
    /// Thumbnail side in pixels (default 128).
    size: Option<u32>,
}

/// The image's file and the dataset it is in; 404 when the dataset has no such id.
async fn find(state: &AppState, id: String, dataset: Option<String>) -> ApiResult<(String, ImageFile)> {
    let (dataset, found) = {
        let state = state.clone();
        let id = id.clone();
        state.clone().blocking(move |engine| state.images().find(engine, dataset.as_deref(), &id)).await?
    };
    let file = found.ok_or_else(|| ApiError::not_found(format!("no image with id {id:?}")))?;
    Ok((dataset, file))
}

/// The ETag of an image's content (its SHA-256 at ingest), with a suffix per rendition.
fn etag(file: &ImageFile, rendition: &str) -> HeaderValue {
    HeaderValue::from_str(&format!("\"{}{rendition}\"", file.sha256)).expect("hex is a valid header")
}

fn not_modified(headers: &HeaderMap, tag: &HeaderValue) -> bool {
    headers.get(header::IF_NONE_MATCH).is_some_and(|v| v == tag)
}

fn image_response(bytes: Vec<u8>, media: &'static str, tag: HeaderValue) -> Response {
    let mut response = bytes.into_response();
    let h = response.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(media));
    h.insert(header::ETAG, tag);
    // An id may point at new content in a later dataset version: revalidate by ETag.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    response
}

/// `GET /images/{id}`: the file as ingested.
pub async fn file(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<ImageParams>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let (_, file) = find(&state, id, params.dataset).await?;
    let tag = etag(&file, "");
    if not_modified(&headers, &tag) {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    let bytes =
        tokio::fs::read(&file.path).await.map_err(|e| ApiError::internal(format!("{}: {e}", file.path.display())))?;
    Ok(image_response(bytes, media_type(&file.format), tag))
}

/// `GET /images/{id}/thumbnail?size=`: a PNG or JPEG that fits in size×size.
pub async fn thumbnail(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<ImageParams>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let size = params.size.unwrap_or(128);
    let (_, file) = find(&state, id, params.dataset).await?;
    let tag = etag(&file, &format!("-{size}"));
    if not_modified(&headers, &tag) {
        return Ok(StatusCode::NOT_MODIFIED.into_response());
    }
    let (bytes, media) =
        tokio::task::spawn_blocking(move || make_thumbnail(&file, size)).await.map_err(ApiError::internal)??;
    Ok(image_response(bytes, media, tag))
}

/// `GET /images/{id}/info`: the image's row (every column, tags included), the slices
/// whose latest frozen version holds it, each classification run's prediction for it, the
/// boxes taggers found in it, its ground-truth objects, and each detection run's boxes on
/// it at the run's operating point.
pub async fn info(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<ImageParams>,
) -> ApiResult<axum::Json<serde_json::Value>> {
    let (dataset, file) = find(&state, id.clone(), params.dataset).await?;
    // The dataset exists (so its name is a valid identifier); the id is quoted as a literal.
    let sql = format!("SELECT * FROM \"{dataset}\".images WHERE image_id = '{}'", id.replace('\'', "''"));
    let stream = state.engine().sql_stream(&sql).await.map_err(|e| state.error(e))?;
    let batches = datafusion::physical_plan::common::collect(stream)
        .await
        .map_err(|e| state.error(slicetest_engine::EngineError::query(e, None)))?;
    let mut writer = datafusion::arrow::json::ArrayWriter::new(Vec::new());
    for batch in &batches {
        writer.write(batch).map_err(ApiError::internal)?;
    }
    writer.finish().map_err(ApiError::internal)?;
    let rows: serde_json::Value = serde_json::from_slice(&writer.into_inner()).unwrap_or_default();
    let row = rows.get(0).cloned().unwrap_or_default();
    let (slices, predictions, detections, objects, run_boxes) = {
        let (dataset, id, sha) = (dataset.clone(), id.clone(), file.sha256.clone());
        state
            .blocking(move |engine| {
                Ok((
                    engine.image_slices(&dataset, &id)?,
                    engine.image_predictions(&dataset, &id)?,
                    engine.image_detections(&dataset, &id, &sha)?,
                    engine.image_objects(&dataset, &id)?,
                    engine.image_run_boxes(&dataset, &id)?,
                ))
            })
            .await?
    };
    Ok(axum::Json(serde_json::json!({
        "image_id": id,
        "dataset": dataset,
        "format": file.format,
        "image": row,
        "slices": slices,
        "predictions": predictions,
        "detections": detections,
        "objects": objects,
        "detection_runs": run_boxes,
    })))
}
