//! Slices: list (with breakdown), get, create, freeze, diff, and a frozen version's data.

use std::collections::HashMap;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::compute::filter_record_batch;
use datafusion::execution::SendableRecordBatchStream;
use datafusion::physical_plan::stream::RecordBatchStreamAdapter;
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use slicetest_engine::{SliceBreakdown, SliceInfo, SliceThresholds};
use tokio::time::Instant;

use super::query::FormatParam;
use super::{WriteAccess, json_body};
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::tabular::{self, negotiate};

/// `GET /slices`: every slice with its frozen versions and the breakdown of the latest.
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let (slices, breakdown) = state.blocking(|engine| Ok((engine.slices()?, engine.breakdown()?))).await?;
    let by_name: HashMap<&str, &SliceBreakdown> = breakdown.iter().map(|b| (b.slice.as_str(), b)).collect();
    Ok(Json(Value::Array(
        slices.iter().map(|s| slice_json(s, by_name.get(s.definition.name.as_str()).copied())).collect(),
    )))
}

/// `GET /slices/{name}`.
pub async fn get_one(State(state): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<Value>> {
    let (slice, breakdown) =
        state.blocking(move |engine| Ok((engine.slice(&name)?, engine.slice_breakdown(&name)?))).await?;
    Ok(Json(slice_json(&slice, Some(&breakdown))))
}

fn slice_json(slice: &SliceInfo, breakdown: Option<&SliceBreakdown>) -> Value {
    let d = &slice.definition;
    json!({
        "name": d.name,
        "dataset": d.dataset,
        "query": d.query,
        "comment": d.comment,
        "created_at": d.created_at,
        "min_accuracy": d.min_accuracy,
        "min_samples": d.min_samples,
        "min_map": d.min_map,
        "min_ap50": d.min_ap50,
        "min_mask_map": d.min_mask_map,
        "min_keypoint_map": d.min_keypoint_map,
        "min_recall": d.min_recall,
        "min_class_recall": d.min_class_recall,
        "min_miou": d.min_miou,
        "min_pixel_accuracy": d.min_pixel_accuracy,
        "min_class_iou": d.min_class_iou,
        "versions": slice.frozen,
        "breakdown": breakdown.map(|b| json!({
            "version": b.version,
            "members": b.members,
            "train": b.train,
            "val": b.val,
            "test": b.test,
            "holdout": b.holdout,
            "unsplit": b.unsplit,
            "coverage": b.coverage,
        })),
    })
}

/// Body of `POST /slices`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CreateSlice {
    name: String,
    query: String,
    comment: Option<String>,
    min_accuracy: Option<f64>,
    min_samples: Option<u64>,
    min_map: Option<f64>,
    min_ap50: Option<f64>,
    min_mask_map: Option<f64>,
    min_keypoint_map: Option<f64>,
    min_recall: Option<f64>,
    #[serde(default)]
    min_class_recall: std::collections::BTreeMap<String, f64>,
    min_miou: Option<f64>,
    min_pixel_accuracy: Option<f64>,
    #[serde(default)]
    min_class_iou: std::collections::BTreeMap<String, f64>,
}

/// `POST /slices`: defines a slice (its query is planned first).
pub async fn create(
    _: WriteAccess,
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let shape = "a JSON object {\"name\", \"query\", \"comment\"?, \"min_accuracy\"?, \"min_samples\"?, …}";
    let body: CreateSlice =
        json_body(&headers, &body, shape)?.ok_or_else(|| ApiError::bad_request(format!("the body must be {shape}")))?;
    let thresholds = SliceThresholds {
        min_accuracy: body.min_accuracy,
        min_samples: body.min_samples,
        min_map: body.min_map,
        min_ap50: body.min_ap50,
        min_mask_map: body.min_mask_map,
        min_keypoint_map: body.min_keypoint_map,
        min_recall: body.min_recall,
        min_class_recall: body.min_class_recall,
        min_miou: body.min_miou,
        min_pixel_accuracy: body.min_pixel_accuracy,
        min_class_iou: body.min_class_iou,
    };
    let definition = state
        .blocking_async(move |engine| async move {
            engine.create_slice(&body.name, &body.query, body.comment, thresholds).await
        })
        .await?;
    Ok((StatusCode::CREATED, Json(definition)).into_response())
}

/// Body of `POST /slices/{name}/freeze`.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Freeze {
    /// Share of members held out (default: the latest frozen version's, 0 at a first freeze).
    #[serde(default)]
    holdout: Option<f64>,
    /// Seed of the hold-out choice (default: the latest frozen version's, 0 at a first freeze).
    #[serde(default)]
    seed: Option<u64>,
}

/// `POST /slices/{name}/freeze`: freezes the current members as the next version (or
/// answers the latest one, `created: false`, when nothing changed). A share or seed left
/// out is the latest version's, so the same images stay held out. The answer says when
/// the hold-out changed (`holdout_changed`, `previous`) and how many images held out by
/// the previous version no longer are (`released_from_holdout`, of which
/// `released_left_slice` are no longer members; with a `warnings` line).
pub async fn freeze(
    _: WriteAccess,
    State(state): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let shape = "a JSON object with any of \"holdout\", \"seed\"";
    let Freeze { holdout, seed } = json_body(&headers, &body, shape)?.unwrap_or_default();
    let outcome = state
        .blocking_async(move |engine| async move { engine.freeze_slice_keeping(&name, holdout, seed).await })
        .await?;
    let status = if outcome.created { StatusCode::CREATED } else { StatusCode::OK };
    let notes = outcome.notes();
    let text =
        |warning: bool| notes.iter().filter(|n| n.warning == warning).map(|n| n.text.clone()).collect::<Vec<_>>();
    let body = json!({
        "created": outcome.created,
        "frozen": outcome.frozen,
        "previous": outcome.previous.as_ref().map(|p| json!({
            "version": p.version,
            "holdout_share": p.holdout_share,
            "seed": p.seed,
            "holdout_members": p.holdout_members,
        })),
        "holdout_changed": outcome.holdout_change().is_some(),
        "released_from_holdout": outcome.released_from_holdout,
        "released_left_slice": outcome.released_left_slice,
        "notes": text(false),
        "warnings": text(true),
    });
    Ok((status, Json(body)).into_response())
}

/// `GET /slices/{name}/diff`: added / removed / changed members since the latest freeze.
pub async fn diff(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(params): Query<FormatParam>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let negotiated = negotiate(params.format.as_deref(), &headers)?;
    let deadline = Instant::now() + state.limits().query_timeout;
    let _slot = state.query_slot().await;
    let stream = state.engine().slice_diff(&name).await.map_err(|e| state.error(e))?;
    tabular::respond(&state, stream, negotiated, deadline).await
}

/// Query parameters of `GET /slices/{name}/data`.
#[derive(Debug, Deserialize)]
pub struct DataParams {
    /// A frozen version (default: the latest).
    version: Option<u64>,
    /// Only held-out members (true) or only the others (false); default both.
    holdout: Option<bool>,
    format: Option<String>,
}

/// `GET /slices/{name}/data`: the members of a frozen version with uri, label, split,
/// hold-out flag and every tag column.
pub async fn data(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(params): Query<DataParams>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let negotiated = negotiate(params.format.as_deref(), &headers)?;
    let deadline = Instant::now() + state.limits().query_timeout;
    let _slot = state.query_slot().await;
    let stream = state.engine().slice_export(&name, params.version).await.map_err(|e| state.error(e))?;
    let stream = match params.holdout {
        Some(wanted) => only_holdout(stream, wanted),
        None => stream,
    };
    tabular::respond(&state, stream, negotiated, deadline).await
}

/// Keeps the rows whose `holdout` column equals `wanted`.
fn only_holdout(stream: SendableRecordBatchStream, wanted: bool) -> SendableRecordBatchStream {
    let schema = stream.schema();
    let filtered = stream.map(move |batch| {
        let batch: RecordBatch = batch?;
        let column = batch.column_by_name("holdout").expect("slice exports have a holdout column").as_boolean();
        let mask = if wanted { column.clone() } else { datafusion::arrow::compute::not(column)? };
        Ok(filter_record_batch(&batch, &mask)?)
    });
    Box::pin(RecordBatchStreamAdapter::new(schema, filtered))
}
