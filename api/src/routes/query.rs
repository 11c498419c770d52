//! `POST /sql` and the search endpoints.

use std::sync::Arc;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::IntoResponse;
use axum::response::Response;
use datafusion::arrow::array::{Float32Array, RecordBatch, StringArray};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use datafusion::common::ScalarValue;
use serde::Deserialize;
use serde_json::{Value, json};
use slicetest_engine::query::QuerySummary;
use slicetest_engine::{ErrorKind, SearchHit, SearchQuery};
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

/// `POST /sql`'s options, as query parameters or fields of a JSON body (the body wins).
#[derive(Debug, Default, Deserialize)]
pub struct SqlParams {
    /// arrow, parquet, csv, json or jsonl (overrides `Accept`).
    format: Option<String>,
    /// At most this many rows (a page).
    limit: Option<usize>,
    /// Skip this many rows first.
    offset: Option<usize>,
    /// Answer a summary of the whole result instead of its rows.
    summary: Option<bool>,
    /// The dataset unqualified table names read (default: the workspace's default).
    dataset: Option<String>,
}

#[derive(Deserialize)]
struct SqlBody {
    sql: String,
    limit: Option<usize>,
    offset: Option<usize>,
    summary: Option<bool>,
    dataset: Option<String>,
}

/// `POST /sql`: a read-only query, as `{"sql": "…"}` or as the plain-text body; a page of
/// its rows with `limit`/`offset` (the server pages the plan, so any statement pages,
/// EXPLAIN and SHOW too, and error positions are those of the text sent), or with
/// `summary` the whole result's row count and per-column counts and ranges.
pub async fn sql(
    State(state): State<AppState>,
    Query(params): Query<SqlParams>,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let request = sql_request(&headers, &body, params)?;
    let deadline = Instant::now() + state.limits().query_timeout;
    let _slot = state.query_slot().await;
    if let Some(statement) = slicetest_engine::statement::parse(&request.sql) {
        return slice_statement(&state, statement, &request, &headers, deadline).await;
    }
    if request.summary {
        if request.limit.is_some() || request.offset.is_some() {
            return Err(ApiError::bad_request("a summary describes the whole result: leave out limit and offset"));
        }
        let summarized = async {
            let df = state.engine().sql_in(request.dataset.as_deref(), &request.sql).await?;
            slicetest_engine::query::summarize(df).await
        };
        let summary = match tokio::time::timeout_at(deadline, summarized).await {
            Err(_) => return Err(tabular::timeout()),
            Ok(result) => result.map_err(|e| state.error(e))?,
        };
        return Ok(Json(summary_json(&summary)).into_response());
    }
    let negotiated = negotiate(request.format.as_deref(), &headers)?;
    let planned = async {
        let df = state.engine().sql_in(request.dataset.as_deref(), &request.sql).await?;
        let read = TablesRead::of(df.logical_plan());
        let stream = slicetest_engine::query::stream_page(df, request.offset.unwrap_or(0), request.limit).await?;
        Ok::<_, slicetest_engine::EngineError>((read, stream))
    };
    let (read, stream) = match tokio::time::timeout_at(deadline, planned).await {
        Err(_) => {
            return Err(ApiError::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, "timeout", "planning timed out"));
        }
        Ok(result) => result.map_err(|e| state.error(e))?,
    };
    let dataset = read.dataset(&state, &request.sql, request.dataset.clone()).await;
    let mut response = tabular::respond(&state, stream, negotiated, deadline).await?;
    if let Some(value) = dataset.and_then(|d| HeaderValue::from_str(&d).ok()) {
        response.headers_mut().insert(DATASET_HEADER, value);
    }
    Ok(response)
}

/// The response header of `POST /sql` that names the dataset whose images the result's
/// `image_id`s are: the one dataset every table the query reads belongs to (unqualified
/// names, `text_search` and `image_search`: the default dataset; `slice('name')`: the
/// slice's). Left out when that is not one dataset (a join of two) or cannot be known, so
/// a client (the web UI's thumbnails and image links) never takes ids for another
/// dataset's. A query that reads no table (`SELECT 'a.png' AS image_id`) names the default.
pub const DATASET_HEADER: &str = "slicetest-dataset";

/// What the tables a plan scans say about the dataset of its rows.
#[derive(Debug, Default)]
struct TablesRead {
    /// Datasets named by schema (`other.images`), or None for the default dataset.
    datasets: std::collections::BTreeSet<Option<String>>,
    /// It reads `slice(…)`: the slices' datasets are looked up by name.
    slices: bool,
    /// It reads a table function whose dataset is not known here.
    unknown: bool,
}

impl TablesRead {
    fn of(plan: &datafusion::logical_expr::LogicalPlan) -> TablesRead {
        use datafusion::common::tree_node::TreeNodeRecursion;
        use datafusion::logical_expr::LogicalPlan;
        let mut read = TablesRead::default();
        let _ = plan.apply_with_subqueries(|node| {
            if let LogicalPlan::TableScan(scan) = node {
                match (scan.table_name.schema(), scan.table_name.table()) {
                    (Some("information_schema"), _) => {}
                    (Some(schema), _) => {
                        read.datasets.insert(Some(schema.to_string()));
                    }
                    // Table functions are scanned as `name()` (or `name`, as lateral ones).
                    (None, "slice()" | "slice") => read.slices = true,
                    (None, "text_search()" | "image_search()" | "text_search" | "image_search") => {
                        read.datasets.insert(None);
                    }
                    (None, name) if name.ends_with(')') || name.contains('(') => read.unknown = true,
                    (None, _) => {
                        read.datasets.insert(None);
                    }
                }
            }
            Ok(TreeNodeRecursion::Continue)
        });
        read
    }

    /// The one dataset of the rows, if it is one (see [`DATASET_HEADER`]); unqualified
    /// names read `unqualified` (None: the default dataset).
    async fn dataset(self, state: &AppState, sql: &str, unqualified: Option<String>) -> Option<String> {
        if self.unknown {
            return None;
        }
        let slices = if self.slices { slice_names(sql)? } else { Vec::new() };
        let default = unqualified.or_else(|| state.engine().workspace().config().default_dataset.clone());
        let mut datasets: std::collections::BTreeSet<String> =
            self.datasets.into_iter().map(|d| d.or_else(|| default.clone())).collect::<Option<_>>()?;
        if !slices.is_empty() {
            let found = state
                .blocking(move |engine| {
                    slices.iter().map(|name| Ok(engine.slice(name)?.definition.dataset)).collect::<Result<Vec<_>, _>>()
                })
                .await
                .ok()?;
            datasets.extend(found);
        }
        let mut datasets = datasets.into_iter();
        match (datasets.next(), datasets.next()) {
            (Some(one), None) => Some(one),
            (None, _) => default,
            (Some(_), Some(_)) => None,
        }
    }
}

/// The names of the slices `sql` reads with `slice('name'…)`; None when one is not a
/// string literal or the text does not parse here.
fn slice_names(sql: &str) -> Option<Vec<String>> {
    use datafusion::sql::parser::{DFParser, Statement};
    use datafusion::sql::sqlparser::ast::{Expr, FunctionArg, FunctionArgExpr, TableFactor, Value, Visit, Visitor};
    use std::ops::ControlFlow;

    struct Names(Vec<String>);
    impl Visitor for Names {
        type Break = ();
        fn pre_visit_table_factor(&mut self, factor: &TableFactor) -> ControlFlow<()> {
            let TableFactor::Table { name, args: Some(args), .. } = factor else { return ControlFlow::Continue(()) };
            let is_slice =
                matches!(&name.0[..], [part] if part.as_ident().is_some_and(|i| i.value.eq_ignore_ascii_case("slice")));
            if !is_slice {
                return ControlFlow::Continue(());
            }
            match args.args.first() {
                Some(FunctionArg::Unnamed(FunctionArgExpr::Expr(Expr::Value(v)))) => match &v.value {
                    Value::SingleQuotedString(s) => {
                        self.0.push(s.clone());
                        ControlFlow::Continue(())
                    }
                    _ => ControlFlow::Break(()),
                },
                _ => ControlFlow::Break(()),
            }
        }
    }
    let mut names = Names(Vec::new());
    for statement in DFParser::parse_sql(sql).ok()? {
        let Statement::Statement(statement) = statement else { return None };
        if statement.visit(&mut names).is_break() {
            return None;
        }
    }
    Some(names.0)
}

/// The slice statements of `slicetest sql` over HTTP: `SHOW SLICES` and `DESCRIBE SLICE`
/// read and are answered whole; the ones that change the workspace are refused (SQL over
/// HTTP is read-only), naming the endpoint that does the same with write access.
async fn slice_statement(
    state: &AppState,
    statement: slicetest_engine::Result<slicetest_engine::statement::SliceStatement>,
    request: &SqlRequest,
    headers: &HeaderMap,
    deadline: Instant,
) -> ApiResult<Response> {
    use slicetest_engine::statement::SliceStatement;
    let statement = statement.map_err(|e| state.error(e))?;
    let instead = match &statement {
        SliceStatement::Create { .. } => Some("create a slice with POST /slices"),
        SliceStatement::Freeze { .. } => Some("freeze a slice with POST /slices/{name}/freeze"),
        SliceStatement::Drop { .. } => {
            Some("drop a slice with `slicetest sql 'DROP SLICE …'` on the workspace's machine")
        }
        SliceStatement::Show | SliceStatement::Describe { .. } => None,
    };
    if let Some(instead) = instead {
        return Err(ApiError::new(
            axum::http::StatusCode::FORBIDDEN,
            "read_only",
            format!("SQL over HTTP is read-only and this statement changes the workspace: {instead}"),
        ));
    }
    if request.summary || request.limit.is_some() || request.offset.is_some() {
        return Err(ApiError::bad_request(
            "SHOW SLICES and DESCRIBE SLICE answer whole: leave out limit, offset and summary",
        ));
    }
    let negotiated = negotiate(request.format.as_deref(), headers)?;
    // Parsed once, above: run as it is, not parsed again from the text.
    let batch = match tokio::time::timeout_at(deadline, state.engine().run_slice_statement(statement)).await {
        Err(_) => return Err(tabular::timeout()),
        Ok(result) => result.map_err(|e| state.error(e))?,
    };
    tabular::respond_batches(vec![batch], negotiated).await
}

/// A `POST /sql` request, its options merged from the query string and the body.
struct SqlRequest {
    sql: String,
    format: Option<String>,
    limit: Option<usize>,
    offset: Option<usize>,
    summary: bool,
    dataset: Option<String>,
}

fn sql_request(headers: &HeaderMap, body: &[u8], params: SqlParams) -> ApiResult<SqlRequest> {
    let is_json = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    let mut request = SqlRequest {
        sql: String::new(),
        format: params.format,
        limit: params.limit,
        offset: params.offset,
        summary: params.summary.unwrap_or(false),
        dataset: params.dataset,
    };
    if is_json {
        let body: SqlBody = serde_json::from_slice(body).map_err(|e| {
            ApiError::bad_request(format!(
                "the body must be {{\"sql\": \"…\"}} (optionally with \"limit\", \"offset\", \"summary\", \"dataset\"): {e}"
            ))
        })?;
        request.sql = body.sql;
        request.limit = body.limit.or(request.limit);
        request.offset = body.offset.or(request.offset);
        request.summary = body.summary.unwrap_or(request.summary);
        request.dataset = body.dataset.or(request.dataset);
    } else {
        request.sql =
            String::from_utf8(body.to_vec()).map_err(|_| ApiError::bad_request("the SQL text is not UTF-8"))?;
    }
    if request.sql.trim().is_empty() {
        return Err(ApiError::bad_request("no SQL given"));
    }
    Ok(request)
}

/// The JSON of a summary: `{"rows", "columns": [{"name", "type", "non_null", "distinct",
/// "min", "max"}]}`; numbers stay numbers, other values are written as text.
fn summary_json(summary: &QuerySummary) -> Value {
    let columns: Vec<Value> = summary
        .columns
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.data_type,
                "non_null": c.non_null,
                "distinct": c.distinct,
                "min": c.min.as_ref().map(scalar_json),
                "max": c.max.as_ref().map(scalar_json),
            })
        })
        .collect();
    json!({ "rows": summary.rows, "columns": columns })
}

fn scalar_json(value: &ScalarValue) -> Value {
    use ScalarValue as S;
    let number = match value {
        S::Boolean(Some(b)) => return Value::Bool(*b),
        S::Int8(Some(v)) => Value::from(*v),
        S::Int16(Some(v)) => Value::from(*v),
        S::Int32(Some(v)) => Value::from(*v),
        S::Int64(Some(v)) => Value::from(*v),
        S::UInt8(Some(v)) => Value::from(*v),
        S::UInt16(Some(v)) => Value::from(*v),
        S::UInt32(Some(v)) => Value::from(*v),
        S::UInt64(Some(v)) => Value::from(*v),
        S::Float32(Some(v)) => serde_json::Number::from_f64(f64::from(*v)).map_or(Value::Null, Value::Number),
        S::Float64(Some(v)) => serde_json::Number::from_f64(*v).map_or(Value::Null, Value::Number),
        _ => Value::Null,
    };
    if !number.is_null() {
        return number;
    }
    // NaN and infinities, dates, timestamps, strings and the rest: as Arrow displays them
    // (`2024-01-01T09:00:00Z`; ScalarValue's own text of a timestamp is its integer).
    let shown = value.to_array().ok().and_then(|a| datafusion::arrow::util::display::array_value_to_string(&a, 0).ok());
    Value::String(shown.unwrap_or_else(|| value.to_string()))
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
    // A dataset with no embeddings is told how to embed it; asked only when the search
    // fails, so that a search costs no listing of the models beyond the engine's own.
    let searched = state
        .blocking(move |engine| match engine.search(&query, k, model.as_deref()) {
            Err(e) if e.kind() == ErrorKind::NoEmbeddings => Ok(Err(engine.workspace().dataset_or_default(None)?)),
            searched => searched.map(Ok),
        })
        .await?;
    let hits = searched
        .map_err(|dataset| ApiError::no_embeddings(&dataset, state.embed_command(&dataset), state.clip_model()))?;
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
