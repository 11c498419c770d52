//! `GET /images/{id}`, `GET /images/{id}/thumbnail` and `GET /images/{id}/mask`: image
//! bytes by id only; `GET /images/{id}/info`: everything known about one image.

use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use slicetest_engine::ImageFile;
use slicetest_engine::segmentation::MaskLayer;

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

fn image_response(bytes: impl IntoResponse, media: &'static str, tag: HeaderValue) -> Response {
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
    let path = file.path.clone();
    let bytes = tokio::task::spawn_blocking(move || slicetest_engine::read_image_bytes(&path))
        .await
        .map_err(|e| ApiError::internal(e.to_string()))?
        .map_err(|e| crate::images::unreadable(&file, e))?;
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

/// Query parameters of `GET /images/{id}/mask`.
#[derive(Debug, Deserialize)]
pub struct MaskParams {
    /// The dataset (default: the workspace default).
    dataset: Option<String>,
    /// A mask set: its ground truth.
    source: Option<String>,
    /// A segmentation run: its prediction, or with `view=errors` where it is wrong.
    run: Option<String>,
    /// `prediction` (default) or `errors`; with `run` only.
    view: Option<String>,
}

impl MaskParams {
    /// The layer asked for: exactly one of `source` and `run`.
    fn layer(&self) -> ApiResult<MaskLayer> {
        match (&self.source, &self.run, self.view.as_deref()) {
            (Some(_), Some(_), _) => Err(ApiError::bad_request("give ?source= (ground truth) or ?run=, not both")),
            (None, None, _) => Err(ApiError::bad_request(
                "say which masks: ?source=SET for a mask set's ground truth, or ?run=RUN[&view=errors] for a \
                 segmentation run's prediction (or where it is wrong)",
            )),
            (Some(_), None, Some(_)) => Err(ApiError::bad_request("view= is for runs (?run=RUN&view=errors)")),
            (Some(source), None, None) => Ok(MaskLayer::Truth(source.clone())),
            (None, Some(run), None | Some("prediction")) => Ok(MaskLayer::Predicted(run.clone())),
            (None, Some(run), Some("errors")) => Ok(MaskLayer::Errors(run.clone())),
            (None, Some(_), Some(view)) => {
                Err(ApiError::bad_request(format!("view={view:?}: the views of a run are prediction and errors")))
            }
        }
    }
}

/// `GET /images/{id}/mask?source=SET` or `?run=RUN[&view=errors]`: one layer of masks as
/// an RGBA PNG of the image's size, in the HTML report's class colours (ignored pixels
/// transparent; the errors view red where the run is wrong, green where right). 404 when
/// the set or run does not exist or has no mask for the image.
pub async fn mask(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<MaskParams>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let layer = params.layer()?;
    let (dataset, _) = find(&state, id.clone(), params.dataset).await?;
    let given = headers.get(header::IF_NONE_MATCH).cloned();
    let (tag, png) = state
        .blocking(move |engine| {
            let tag = HeaderValue::from_str(&format!("\"{}\"", engine.mask_tag(&dataset, &id, &layer)?))
                .expect("hex is a valid header");
            if given.is_some_and(|g| g == tag) {
                return Ok((tag, None));
            }
            Ok((tag, Some(engine.mask_png(&dataset, &id, &layer)?)))
        })
        .await?;
    Ok(match png {
        Some(png) => image_response(png, "image/png", tag),
        None => StatusCode::NOT_MODIFIED.into_response(),
    })
}

/// `GET /images/{id}/info`: the image's row (every column, tags included), the slices
/// whose latest frozen version holds it, each classification run's prediction for it, the
/// boxes taggers found in it, its ground-truth objects, each detection run's boxes on it
/// at the run's operating point, its ground-truth masks (`masks`: each mask set's classes
/// and their shares) and each segmentation run's scores on it (`segmentation_runs`).
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
    let (slices, predictions, detections, objects, run_boxes, masks) = {
        let (dataset, id, sha) = (dataset.clone(), id.clone(), file.sha256.clone());
        state
            .blocking(move |engine| {
                Ok((
                    engine.image_slices(&dataset, &id)?,
                    engine.image_predictions(&dataset, &id)?,
                    engine.image_detections(&dataset, &id, &sha)?,
                    engine.image_objects(&dataset, &id)?,
                    engine.image_run_boxes(&dataset, &id)?,
                    engine.image_masks(&dataset, &id)?,
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
        "masks": masks.sets,
        "segmentation_runs": masks.runs,
    })))
}
