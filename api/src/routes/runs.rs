//! Model runs: upload predictions (streamed, bounded), list, metrics, verdicts, report,
//! slice discovery.

use std::io::Write;

use axum::Json;
use axum::body::Body;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use serde_json::{Value, json};
use slicetest_engine::discovery::{DiscoverOptions, Discovery};
use slicetest_engine::{BaselineChange, DEFAULT_ALPHA, RunManifest, RunReport, SliceScore, UploadOptions, Verdict};
use tokio::time::Instant;

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
    /// Detection runs: the operating point's score threshold.
    score_threshold: Option<f64>,
    /// Segmentation runs: the mask set to score against (default: the dataset's only one).
    mask_source: Option<String>,
    /// The masks are instance masks (detections), also those without a bbox.
    #[serde(default)]
    instances: bool,
}

/// The file extension the engine's reader expects for an upload's `Content-Type`.
fn upload_extension(headers: &HeaderMap) -> ApiResult<&'static str> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim();
    match media {
        "text/csv" => Ok("csv"),
        crate::tabular::PARQUET | "application/x-parquet" => Ok("parquet"),
        "application/x-ndjson" | "application/jsonl" | "application/jsonlines" => Ok("jsonl"),
        // A COCO results list: detections, or per-class RLE masks (segmentation).
        "application/json" => Ok("json"),
        crate::tabular::ARROW_STREAM => Ok("arrows"),
        // A folder as one file: YOLO label files or a segmentation run's PNG masks (or one
        // file of the kinds above). Windows browsers say x-zip-compressed.
        "application/zip" | "application/x-zip-compressed" => Ok("zip"),
        _ => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_media_type",
            format!(
                "Content-Type {content_type:?}: predictions are text/csv, {}, application/x-ndjson or {}; \
                 detections and segmentation masks may also be a COCO results list as application/json, \
                 and a folder (YOLO label files, PNG masks) an application/zip archive",
                crate::tabular::PARQUET,
                crate::tabular::ARROW_STREAM
            ),
        )),
    }
}

/// `POST /runs/{name}?model=&model_version=`: the body (CSV, Parquet, JSON lines or Arrow
/// IPC, by `Content-Type`; a COCO results list as JSON; a folder of YOLO label files or
/// PNG masks as a ZIP archive) is streamed to a temporary file,
/// bounded by the upload limit, then validated and stored: class predictions, detections,
/// or segmentation masks as per-class COCO RLE. A rejected upload leaves the workspace as
/// it was.
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
        score_threshold: params.score_threshold,
        instances: params.instances,
    };
    let mask_source = params.mask_source;
    let source = upload_name(&headers);
    let manifest = state
        .blocking_async(move |engine| async move {
            engine.upload_run_from(&path, &source, &options, mask_source.as_deref()).await
        })
        .await
        .map_err(|mut e| {
            // The temporary file's path means nothing to the client, nor do the CLI's flags.
            e.message = e.message.replace(&dir.path().join("").to_string_lossy().to_string(), "");
            upload_parameter_names(e)
        })?;
    Ok((StatusCode::CREATED, Json(manifest)).into_response())
}

/// What `run.json` records as an HTTP upload's source: the file name a
/// `Content-Disposition: attachment; filename="…"` header gives (its last path
/// component), else `upload` — never the temporary file the body was spooled to.
fn upload_name(headers: &HeaderMap) -> String {
    let disposition = headers.get(header::CONTENT_DISPOSITION).and_then(|v| v.to_str().ok()).unwrap_or("");
    let name = disposition.split(';').map(str::trim).find_map(|part| {
        let (key, value) = part.split_once('=')?;
        key.trim().eq_ignore_ascii_case("filename").then(|| value.trim().trim_matches('"'))
    });
    let name = name.and_then(|n| n.rsplit(['/', '\\']).next()).unwrap_or("");
    let name: String = name.chars().filter(|c| !c.is_control()).take(255).collect();
    if name.is_empty() || name == "." || name == ".." { "upload".to_string() } else { name }
}

/// The engine's upload messages name the CLI's flags (`pass --allow-partial to accept
/// that`); an HTTP client sets query parameters instead.
fn upload_parameter_names(mut error: ApiError) -> ApiError {
    for (flag, parameter) in [
        ("--allow-partial", "allow_partial=true"),
        ("--mask-source", "the mask_source parameter"),
        ("--score-threshold", "score_threshold"),
        ("--instances", "instances=true"),
    ] {
        error.message = error.message.replace(flag, parameter);
    }
    error
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
                "regression": regression_json(s),
                "mask_regression": mask_regression_json(s),
                "keypoint_regression": keypoint_regression_json(s),
                "failed": s.is_failure(),
                "reasons": failure_reasons(s),
                "map": s.detection.as_ref().and_then(|d| d.coco.ap),
                "mask_map": s.detection.as_ref().and_then(|d| d.mask.and_then(|m| m.ap)),
                "keypoint_map": s.detection.as_ref().and_then(|d| d.keypoints.and_then(|k| k.ap)),
                "miou": s.segmentation.as_ref().and_then(|m| m.scores.mean_iou),
                "checks": s.checks,
            })
        })
        .collect();
    let failing: Vec<&str> = report.failures().map(|s| s.slice.as_str()).collect();
    let not_enough = report.slices.iter().filter(|s| s.verdict == Verdict::NotEnoughData).count();
    // The whole run, `(all)` in `failing` when it regressed against the baseline.
    let all = &report.overall;
    let overall = json!({
        "slice": all.slice,
        "scored": all.scored,
        "regression": regression_json(all),
        "mask_regression": mask_regression_json(all),
        "keypoint_regression": keypoint_regression_json(all),
        "failed": all.is_failure(),
        "reasons": failure_reasons(all),
    });
    Ok(Json(json!({
        "run": report.run.run,
        "baseline": report.baseline,
        "passed": failing.is_empty(),
        "failing": failing,
        "not_enough_data": not_enough,
        "overall": overall,
        "slices": slices,
    })))
}

/// A slice's change against the baseline run, one shape for every task: `metric`
/// (`accuracy`, `mAP` or `mIoU`), `baseline` (the baseline's value), `delta`, `p_value`
/// and `significant`; a classification run's also has `baseline_accuracy` (with its
/// interval). Null without a baseline.
fn regression_json(s: &SliceScore) -> Value {
    let Some(change) = s.baseline_change() else { return Value::Null };
    let mut regression = change_json(&change);
    if let Some(r) = &s.regression {
        regression["baseline_accuracy"] = json!(r.baseline_accuracy);
    }
    regression
}

/// A detection run's change in instance-mask mAP against the baseline (the shape of
/// [`regression_json`], `metric` `mask mAP`); null unless both runs were scored with masks.
fn mask_regression_json(s: &SliceScore) -> Value {
    s.mask_baseline_change().as_ref().map_or(Value::Null, change_json)
}

/// The same for keypoint AP (`metric` `keypoint AP`); null unless both runs were scored
/// with poses.
fn keypoint_regression_json(s: &SliceScore) -> Value {
    s.keypoint_baseline_change().as_ref().map_or(Value::Null, change_json)
}

fn change_json(change: &BaselineChange) -> Value {
    json!({
        "metric": change.metric,
        "baseline": change.baseline,
        "delta": change.delta,
        "p_value": change.p_value,
        "significant": change.significant,
    })
}

/// Why a slice fails the build, one line per cause (empty when it does not): the slice
/// test's thresholds it misses, a significant regression against the baseline; the lines
/// say what `slicetest test` prints.
fn failure_reasons(s: &SliceScore) -> Vec<String> {
    let mut reasons = Vec::new();
    if s.verdict == Verdict::Fail {
        let failed: Vec<String> = s.checks.iter().filter(|c| !c.passed).map(|c| c.text()).collect();
        match (s.accuracy(), s.min_accuracy) {
            (Some(a), Some(min)) if failed.is_empty() && a.value < min => {
                reasons.push(format!("accuracy {:.1}% < {:.0}%", 100.0 * a.value, 100.0 * min));
            }
            _ if failed.is_empty() => reasons.push("the slice test failed".into()),
            _ => reasons.extend(failed),
        }
    }
    for regression in s.baseline_changes().into_iter().filter(|r| r.significant) {
        let (metric, p_value) = (regression.metric, regression.p_value);
        // A value that is not a number reads "n/a", as it is null in the JSON.
        let change = match (metric, regression.delta.filter(|d| d.is_finite())) {
            ("accuracy", Some(d)) => format!("{:+.1} pts", 100.0 * d),
            (_, Some(d)) => format!("{d:+.3}"),
            (_, None) => "n/a".into(),
        };
        let baseline = regression.baseline.filter(|b| b.is_finite()).map_or("n/a".into(), |b| match metric {
            "accuracy" => format!("{:.1}%", 100.0 * b),
            _ => format!("{b:.3}"),
        });
        reasons.push(format!("{metric} {change} vs baseline {baseline} (p={p_value:.3}): significant regression"));
    }
    reasons
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
    let report = score(&state, name.clone(), &params).await?;
    if !html {
        return Ok(Json(report).into_response());
    }
    // The page lists the slices discovery confirms with its default settings; a run it
    // cannot search (too few images for the default support, say) gets a page without them.
    let discovery = discover_bounded(&state, name, DiscoverOptions::default()).await.ok();
    let page = state.blocking(move |engine| engine.html_report(&report, discovery.as_ref())).await?;
    let mut response = page.into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/html; charset=utf-8"));
    Ok(response)
}

/// Query parameters of `GET /runs/{name}/discover`; each defaults to `slicetest
/// discover`'s.
#[derive(Debug, Deserialize)]
pub struct DiscoverParams {
    /// How many slices to report.
    k: Option<usize>,
    /// Most predicates in a slice.
    max_level: Option<usize>,
    /// Fewest images a slice needs in the discovery half.
    min_support: Option<u64>,
    /// SliceLine's α in (0, 1].
    alpha: Option<f64>,
    /// Only these columns of `images`, comma-separated.
    columns: Option<String>,
    /// Seeds the split into discovery and confirmation halves.
    seed: Option<u64>,
    /// The false-discovery rate of the confirmation.
    fdr: Option<f64>,
    /// Also list the slices the confirmation half did not confirm.
    #[serde(default)]
    all: bool,
    /// Regression mode: errors are "wrong now, right in this run".
    baseline: Option<String>,
    /// `auto`, `tags`, `embeddings` or `both`.
    method: Option<String>,
    /// The embedding model to search.
    model: Option<String>,
    /// `severity`, `excess` or `sliceline`.
    rank: Option<String>,
    /// A column whose equal values stay in one half.
    group: Option<String>,
}

/// Most slices one request may ask for, and most predicates per slice: the search's work
/// grows with both.
const MAX_DISCOVER_K: usize = 1_000;
const MAX_DISCOVER_LEVEL: usize = 6;

impl DiscoverParams {
    fn options(self) -> ApiResult<DiscoverOptions> {
        // Field by field over the defaults, so settings the engine adds keep theirs.
        let mut options = DiscoverOptions::default();
        options.k = self.k.unwrap_or(options.k);
        options.max_level = self.max_level.unwrap_or(options.max_level);
        options.min_support = self.min_support.unwrap_or(options.min_support);
        options.alpha = self.alpha.unwrap_or(options.alpha);
        options.seed = self.seed.unwrap_or(options.seed);
        options.fdr = self.fdr.unwrap_or(options.fdr);
        options.include_unconfirmed = self.all;
        options.baseline = self.baseline.filter(|b| !b.is_empty());
        options.model = self.model.filter(|m| !m.is_empty());
        options.group = self.group.filter(|g| !g.is_empty());
        if let Some(method) = self.method.filter(|m| !m.is_empty()) {
            options.method = method.parse().map_err(ApiError::bad_request)?;
        }
        if let Some(rank) = self.rank.filter(|r| !r.is_empty()) {
            options.rank = rank.parse().map_err(ApiError::bad_request)?;
        }
        options.columns = self
            .columns
            .map(|list| list.split(',').map(str::trim).filter(|c| !c.is_empty()).map(String::from).collect::<Vec<_>>())
            .filter(|columns| !columns.is_empty());
        if options.k > MAX_DISCOVER_K {
            return Err(ApiError::bad_request(format!("k must be at most {MAX_DISCOVER_K}, not {}", options.k)));
        }
        if options.max_level > MAX_DISCOVER_LEVEL {
            return Err(ApiError::bad_request(format!(
                "max_level must be at most {MAX_DISCOVER_LEVEL}, not {}",
                options.max_level
            )));
        }
        Ok(options)
    }
}

/// `GET /runs/{name}/discover`: the slices where the run fails, found on one half of its
/// images and confirmed on the other (the JSON of `slicetest discover --format json`).
pub async fn discover(
    State(state): State<AppState>,
    Path(name): Path<String>,
    Query(params): Query<DiscoverParams>,
) -> ApiResult<Json<Discovery>> {
    let options = params.options()?;
    Ok(Json(discover_bounded(&state, name, options).await?))
}

/// Runs a discovery on the blocking pool in one of the query slots, answering 503 past the
/// query timeout (the slot stays taken until the work has really ended).
async fn discover_bounded(state: &AppState, name: String, options: DiscoverOptions) -> ApiResult<Discovery> {
    let deadline = Instant::now() + state.limits().query_timeout;
    let slot = state.owned_query_slot().await;
    let work = state.blocking_async(move |engine| async move {
        let _slot = slot;
        engine.discover(&name, &options).await
    });
    match tokio::time::timeout_at(deadline, work).await {
        Err(_) => Err(crate::tabular::timeout()),
        Ok(result) => result.map_err(parameter_names),
    }
}

/// The engine's messages name the CLI's flags (`--min-support 30 is more than …`); the
/// API's client knows the query parameters.
fn parameter_names(mut error: ApiError) -> ApiError {
    if error.status == StatusCode::BAD_REQUEST {
        for (flag, parameter) in [
            ("--max-level", "max_level"),
            ("--min-support", "min_support"),
            ("--alpha", "alpha"),
            ("--columns", "columns"),
            ("--fdr", "fdr"),
            ("--seed", "seed"),
            ("--method", "method"),
            ("--model", "model"),
            ("--group", "group"),
            ("-k ", "k "),
        ] {
            error.message = error.message.replace(flag, parameter);
        }
    }
    error
}

#[cfg(test)]
mod tests {
    use super::*;

    fn named(disposition: Option<&str>) -> String {
        let mut headers = HeaderMap::new();
        if let Some(d) = disposition {
            headers.insert(header::CONTENT_DISPOSITION, HeaderValue::from_str(d).unwrap());
        }
        upload_name(&headers)
    }

    #[test]
    fn an_upload_is_recorded_by_its_file_name_never_a_server_path() {
        assert_eq!(named(None), "upload");
        assert_eq!(named(Some("attachment; filename=\"preds.csv\"")), "preds.csv");
        assert_eq!(named(Some("attachment; FILENAME=preds.parquet")), "preds.parquet");
        assert_eq!(named(Some("attachment; filename=\"/home/me/out/preds.csv\"")), "preds.csv");
        assert_eq!(named(Some("attachment; filename=\"C:\\\\out\\\\preds.csv\"")), "preds.csv");
        assert_eq!(named(Some("attachment; filename=\"..\"")), "upload");
        assert_eq!(named(Some("inline")), "upload");
    }

    #[test]
    fn upload_errors_name_query_parameters_not_cli_flags() {
        let e = ApiError::new(
            StatusCode::UNPROCESSABLE_ENTITY,
            "invalid_input",
            "1 of 3 images have no prediction (e.g. \"c\"); pass --allow-partial to accept that",
        );
        assert_eq!(
            upload_parameter_names(e).message,
            "1 of 3 images have no prediction (e.g. \"c\"); pass allow_partial=true to accept that"
        );
    }
}
