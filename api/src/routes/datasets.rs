//! Datasets: the list (with what is embedded), and embedding jobs: start one, follow it.

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::{Value, json};
use slicetest_engine::{EmbedOptions, JobView, check_model_path};

use super::{WriteAccess, json_body};
use crate::error::{ApiError, ApiResult, scrub};
use crate::state::AppState;

/// Largest `batch_size` of a job (a batch of 256 ViT-B/32 images is ~2 GB of activations).
const MAX_BATCH: usize = 256;

/// `GET /datasets`: every dataset with its latest version, image count, the embeddings
/// it has (with where each one's search index stands), and how to embed it.
pub async fn list(State(state): State<AppState>) -> ApiResult<Json<Value>> {
    let rows = state
        .blocking(|engine| {
            let default = engine.workspace().config().default_dataset.clone();
            let mut rows = Vec::new();
            for summary in engine.datasets()? {
                let embeddings = engine.embedding_models(&summary.latest.dataset)?;
                let mut indexes = serde_json::Map::new();
                for model in &embeddings {
                    let index = engine.search_index(&summary.latest, model)?;
                    indexes.insert(model.clone(), serde_json::to_value(index).expect("serialisable"));
                }
                rows.push((summary, embeddings, indexes, default.clone()));
            }
            Ok(rows)
        })
        .await?;
    Ok(Json(Value::Array(
        rows.into_iter()
            .map(|(summary, embeddings, indexes, default)| {
                let latest = &summary.latest;
                json!({
                    "name": latest.dataset,
                    "default": default.as_deref() == Some(latest.dataset.as_str()),
                    "versions": summary.versions,
                    "version": latest.version,
                    "images": latest.row_count,
                    "columns": latest.columns.len(),
                    "published_at": latest.created_at,
                    "embeddings": embeddings,
                    "search_index": indexes,
                    "embed": {"command": state.embed_command(&latest.dataset), "model": state.clip_model()},
                })
            })
            .collect(),
    )))
}

/// Body of `POST /datasets/{name}/embed` (every field optional).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EmbedBody {
    /// A checkpoint directory on the server or a Hugging Face id (default: the server's).
    model: Option<String>,
    /// A boolean SQL predicate over the dataset's `images`.
    #[serde(rename = "where")]
    filter: Option<String>,
    /// Only the first `limit` selected images by image_id.
    limit: Option<usize>,
    /// Images per forward pass (default 16).
    batch_size: Option<usize>,
    /// Store the embeddings under this name (default: derived from the model).
    name: Option<String>,
}

/// `POST /datasets/{name}/embed`: starts a background job that embeds the dataset (or a
/// subset) and answers 202 with the job. Everything that can be checked without running
/// it is checked first: the dataset, a model directory, the predicate. One unfinished job
/// per dataset (409 otherwise).
pub async fn embed(
    _: WriteAccess,
    State(state): State<AppState>,
    Path(dataset): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let shape = "a JSON object with any of model, where, limit, batch_size, name";
    let body: EmbedBody = json_body(&headers, &body, shape)?.unwrap_or_default();
    let batch_size = body.batch_size.unwrap_or(16);
    if !(1..=MAX_BATCH).contains(&batch_size) {
        return Err(ApiError::bad_request(format!("batch_size must be between 1 and {MAX_BATCH}")));
    }
    if body.limit == Some(0) {
        return Err(ApiError::bad_request("limit must be at least 1"));
    }
    let model = body.model.filter(|m| !m.trim().is_empty()).unwrap_or_else(|| state.clip_model().to_string());
    let checked = model.clone();
    let (filter, limit, name) = (body.filter.clone(), body.limit, dataset.clone());
    state
        .blocking_async(move |engine| async move {
            engine.workspace().latest(&name)?;
            check_model_path(&checked)?;
            engine.embed_selection(&name, filter.as_deref(), limit).await.map(drop)
        })
        .await?;
    let options = EmbedOptions {
        model,
        name: body.name,
        filter: body.filter,
        limit: body.limit,
        batch_size,
        ..EmbedOptions::default()
    };
    let job = state.jobs().start(&dataset, options).map_err(|conflict| {
        ApiError::new(StatusCode::CONFLICT, "job_running", conflict.to_string())
            .with("job", serde_json::to_value(job_view(&state, *conflict.0)).expect("serialisable"))
    })?;
    let runner = job.clone();
    let engine = state.engine().clone();
    let runtime = tokio::runtime::Handle::current();
    tokio::task::spawn_blocking(move || runtime.block_on(runner.run(&engine)));
    let view = job_view(&state, job.view());
    let mut response = (StatusCode::ACCEPTED, Json(view)).into_response();
    let location = HeaderValue::from_str(&format!("/jobs/{}", job.id())).expect("job ids are ASCII");
    response.headers_mut().insert(header::LOCATION, location);
    Ok(response)
}

/// `GET /jobs`: every job of this server process, newest first.
pub async fn jobs(State(state): State<AppState>) -> Json<Vec<JobView>> {
    Json(state.jobs().list().into_iter().map(|j| job_view(&state, j)).collect())
}

/// `GET /jobs/{id}`: one job's state and progress.
pub async fn job(State(state): State<AppState>, Path(id): Path<String>) -> ApiResult<Json<JobView>> {
    let job = state.jobs().get(&id).ok_or_else(|| {
        ApiError::not_found(format!("no job {id:?} (jobs are kept in memory: a restarted server forgets them)"))
    })?;
    Ok(Json(job_view(&state, job.view())))
}

/// A job as a client sees it: the workspace path scrubbed from its error.
fn job_view(state: &AppState, mut view: JobView) -> JobView {
    let root = state.engine().workspace().root();
    view.error = view.error.map(|e| scrub(&e, root));
    for (_, reason) in &mut view.failed_images {
        *reason = scrub(reason, root);
    }
    view
}
