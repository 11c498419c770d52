//! `POST /sql` and the search endpoints.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use datafusion::arrow::array::{Float32Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use serde::Deserialize;
use slicetest_engine::{SearchHit, SearchQuery};
use tokio::time::Instant;

use crate::error::{ApiError, ApiResult};
use crate::state::AppState;
use crate::tabular::{self, negotiate};

/// `?format=` of tabular endpoints.
#[derive(Debug, Default, Deserialize)]
pub struct FormatParam {
    /// arrow, parquet, csv, json or jsonl (overrides `Accept`).
    pub format: Option<String>,
}

#[derive(Deserialize)]
struct SqlBody {
    sql: String,
}

/// `POST /sql`: a read-only query, as `{"sql": "…"}` or as the plain-text body.
pub async fn sql(
    State(state): State<AppState>,
    Query(params): Query<FormatParam>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let negotiated = negotiate(params.format.as_deref(), &headers)?;
    let text = sql_text(&headers, &body)?;
    let deadline = Instant::now() + state.limits().query_timeout;
    let _slot = state.query_slot().await;
    let planned = tokio::time::timeout_at(deadline, state.engine().sql_stream(&text)).await;
    let stream = match planned {
        Err(_) => {
            return Err(ApiError::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, "timeout", "planning timed out"));
        }
        Ok(result) => result.map_err(|e| state.error(e))?,
    };
    tabular::respond(&state, stream, negotiated, deadline).await
}

fn sql_text(headers: &HeaderMap, body: &[u8]) -> ApiResult<String> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let text = if is_json {
        serde_json::from_slice::<SqlBody>(body)
            .map_err(|e| ApiError::bad_request(format!("the body must be {{\"sql\": \"…\"}}: {e}")))?
            .sql
    } else {
        String::from_utf8(body.to_vec()).map_err(|_| ApiError::bad_request("the SQL text is not UTF-8"))?
    };
    if text.trim().is_empty() {
        return Err(ApiError::bad_request("no SQL given"));
    }
    Ok(text)
}

/// Query parameters of the search endpoints.
#[derive(Debug, Deserialize)]
pub struct SearchParams {
    /// The sentence (text search only).
    q: Option<String>,
    /// How many results (default 10).
    k: Option<usize>,
    /// Which embedding model (default: the dataset's only one).
    model: Option<String>,
    format: Option<String>,
}

/// `GET /search/text?q=&k=`.
pub async fn search_text(
    State(state): State<AppState>,
    Query(params): Query<SearchParams>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    let q = params.q.clone().filter(|q| !q.trim().is_empty()).ok_or_else(|| ApiError::bad_request("q is required"))?;
    search(state, SearchQuery::Text(q), params, headers).await
}

/// `GET /search/image/{id}?k=`: images like a dataset image.
pub async fn search_image_id(
    State(state): State<AppState>,
    Path(id): Path<String>,
    Query(params): Query<SearchParams>,
    headers: HeaderMap,
) -> ApiResult<Response> {
    search(state, SearchQuery::ImageId(id), params, headers).await
}

/// `POST /search/image?k=`: images like the uploaded one (the body is the encoded image).
pub async fn search_image_upload(
    State(state): State<AppState>,
    Query(params): Query<SearchParams>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    if body.is_empty() {
        return Err(ApiError::bad_request("the body must be an image (PNG, JPEG, …)"));
    }
    search(state, SearchQuery::ImageBytes(body.to_vec()), params, headers).await
}

async fn search(state: AppState, query: SearchQuery, params: SearchParams, headers: HeaderMap) -> ApiResult<Response> {
    let negotiated = negotiate(params.format.as_deref(), &headers)?;
    let k = params.k.unwrap_or(10);
    if k == 0 || k > state.limits().max_k {
        return Err(ApiError::bad_request(format!("k must be between 1 and {}", state.limits().max_k)));
    }
    let model = params.model;
    let _slot = state.query_slot().await;
    let (dataset, models) = state
        .blocking(|engine| {
            let dataset = engine.workspace().dataset_or_default(None)?;
            let models = engine.embedding_models(&dataset)?;
            Ok((dataset, models))
        })
        .await?;
    if models.is_empty() {
        return Err(ApiError::no_embeddings(&dataset, state.embed_command(&dataset), state.clip_model()));
    }
    let hits = state.blocking(move |engine| engine.search(&query, k, model.as_deref())).await?;
    tabular::respond_batches(vec![hits_batch(&hits)?], negotiated).await
}

fn hits_batch(hits: &[SearchHit]) -> ApiResult<RecordBatch> {
    let schema = Arc::new(Schema::new(vec![
        Field::new("image_id", DataType::Utf8, false),
        Field::new("score", DataType::Float32, false),
        Field::new("uri", DataType::Utf8, false),
    ]));
    let ids = StringArray::from_iter_values(hits.iter().map(|h| h.image_id.as_str()));
    let scores = Float32Array::from_iter_values(hits.iter().map(|h| h.score));
    let uris = StringArray::from_iter_values(hits.iter().map(|h| h.uri.as_str()));
    RecordBatch::try_new(schema, vec![Arc::new(ids), Arc::new(scores), Arc::new(uris)]).map_err(ApiError::internal)
}
