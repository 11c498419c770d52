//! Model runs: upload predictions (streamed, bounded), list, metrics, verdicts, report.

use std::io::Write;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use slicetest_engine::{DEFAULT_ALPHA, RunManifest, RunReport, UploadOptions, Verdict};

use super::WriteAccess;
use crate::error::{ApiError, ApiResult};
use crate::state::AppState;

/// `GET /runs`: every run's manifest.
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Vec<RunManifest>>> {
    Ok(Json(state.blocking(|engine| engine.runs()).await?))
}

/// `GET /runs/{name}`: one run's manifest.
pub async fn get_one(State(state): State<AppState>, Path(name): Path<String>) -> ApiResult<Json<RunManifest>> {
    Ok(Json(state.blocking(move |engine| engine.run(&name)).await?))
}

/// Query parameters of `POST /runs/{name}`.
#[derive(Debug, Deserialize)]
pub struct UploadParams {
    /// The model's name.
    model: String,
    /// The model's version.
    model_version: String,
    /// The dataset (default: the workspace default).
    dataset: Option<String>,
    /// Accept predictions for part of the dataset.
    #[serde(default)]
    allow_partial: bool,
}

/// The file extension the engine's reader expects for an upload's `Content-Type`.
fn upload_extension(headers: &HeaderMap) -> ApiResult<&'static str> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim();
    match media {
        "text/csv" => Ok("csv"),
        crate::tabular::PARQUET | "application/x-parquet" => Ok("parquet"),
        "application/x-ndjson" | "application/jsonl" | "application/jsonlines" => Ok("jsonl"),
        crate::tabular::ARROW_STREAM => Ok("arrows"),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "Content-Type {content_type:?}: predictions are text/csv, {}, application/x-ndjson or {}",
                crate::tabular::PARQUET,
                crate::tabular::ARROW_STREAM
            ),
        )),
    }
}

/// `POST /runs/{name}?model=&model_version=`: the body (CSV, Parquet, JSON lines or Arrow
/// IPC, by `Content-Type`) is streamed to a temporary file, bounded by the upload limit,
/// then validated and stored. A rejected upload leaves the workspace as it was.
pub async fn upload(
    _: WriteAccess,
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(params): Query<UploadParams>,
    headers: HeaderMap,
    body: Body,
) -> ApiResult<Response> {
    let extension = upload_extension(&headers)?;
    let dir = tempfile::tempdir().map_err(ApiError::internal)?;
    let path = dir.path().join(format!("predictions.{extension}"));
    spool(body, &path, state.limits().max_upload_bytes).await?;
    let options = UploadOptions {
        run: name,
        model: params.model,
        model_version: params.model_version,
        dataset: params.dataset,
        allow_partial: params.allow_partial,
        provenance: Default::default(),
    };
    let manifest = state
        .blocking_async(move |engine| async move { engine.upload_run(&path, &options).await })
        .await
        .map_err(|mut e| {
            // The temporary file's path means nothing to the client.
            e.message = e.message.replace(&dir.path().join("").to_string_lossy().to_string(), "");
            e
        })?;
    Ok((StatusCode::CREATED, Json(manifest)).into_response())
}

/// Writes the request body to `path`, refusing it (413) past `limit` bytes.
async fn spool(body: Body, path: &std::path::Path, limit: u64) -> ApiResult<()> {
    let mut file = std::io::BufWriter::new(std::fs::File::create(path).map_err(ApiError::internal)?);
    let mut stream = body.into_data_stream();
    let mut written = 0u64;
    while let Some(chunk) = stream.next().await {
        let chunk = chunk.map_err(|e| ApiError::bad_request(format!("reading the upload: {e}")))?;
        written += chunk.len() as u64;
        if written > limit {
            return Err(ApiError::new(
                StatusCode::PAYLOAD_TOO_LARGE,
                "too_large",
                format!("the upload is larger than the server's limit of {limit} bytes"),
            ));
        }
        file.write_all(&chunk).map_err(ApiError::internal)?;
    }
    if written == 0 {
        return Err(ApiError::bad_request("the upload is empty"));
    }
    file.flush().map_err(ApiError::internal)
}

/// Query parameters of the scoring endpoints.
#[derive(Debug, Deserialize)]
pub struct ScoreParams {
    /// A run to compare with (regressions).
    baseline: Option<String>,
    /// Significance level of the regression test (default 0.05).
    alpha: Option<f64>,
    /// `html` or `json` (report only; overrides `Accept`).
    format: Option<String>,
}

async fn score(state: &AppState, name: String, params: &ScoreParams) -> ApiResult<RunReport> {
    let alpha = params.alpha.unwrap_or(DEFAULT_ALPHA);
    if !(alpha > 0.0 && alpha < 1.0) {
        return Err(ApiError::bad_request("alpha must be between 0 and 1"));
    }
    let baseline = params.baseline.clone();
    state.blocking(move |engine| engine.score_run(&name, baseline.as_deref(), alpha)).await
}

/// `GET /runs/{name}/metrics`: the run scored on every slice (the full report as JSON).
pub async fn metrics(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(params): Query<ScoreParams>,
) -> ApiResult<Json<RunReport>> {
    Ok(Json(score(&state, name, &params).await?))
}

/// `GET /runs/{name}/test`: the slice tests' verdicts, like `slicetest test`.
pub async fn test(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(params): Query<ScoreParams>,
) -> ApiResult<Json<Value>> {
    let report = score(&state, name, &params).await?;
    let slices: Vec<Value> = report
        .slices
        .iter()
        .map(|s| {
            json!({
                "slice": s.slice,
                "version": s.version,
                "verdict": s.verdict,
                "accuracy": s.accuracy(),
                "min_accuracy": s.min_accuracy,
                "scored": s.scored,
                "min_samples": s.min_samples,
                "regression": s.regression,
                "failed": s.is_failure(),
            })
        })
        .collect();
    let failing: Vec<&str> = report.failures().map(|s| s.slice.as_str()).collect();
    let not_enough = report.slices.iter().filter(|s| s.verdict == Verdict::NotEnoughData).count();
    Ok(Json(json!({
        "run": report.run.run,
        "baseline": report.baseline,
        "passed": failing.is_empty(),
        "failing": failing,
        "not_enough_data": not_enough,
        "slices": slices,
    })))
}

/// `GET /runs/{name}/report`: the report as HTML (for browsers) or JSON.
pub async fn report(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(params): Query<ScoreParams>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("");
    let html = match params.format.as_deref() {
        Some("html") => true,
        Some("json") => false,
        Some(other) => return Err(ApiError::bad_request(format!("unknown format {other:?}; use html or json"))),
        None => accept.contains("text/html"),
    };
    let report = score(&state, name, &params).await?;
    if !html {
        return Ok(Json(report).into_response());
    }
    let page = state.blocking(move |engine| engine.html_report(&report)).await?;
    let mut response = page.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    Ok(response)
}
