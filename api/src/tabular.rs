//! Tabular responses: the format is negotiated (`?format=` wins over `Accept`), and the
//! body is written batch by batch as the query produces them, so a million-row result
//! never sits in the server's memory.
//!
//! The first batch is awaited before the response starts: planning errors and errors
//! of the first batch still get a proper status. A failure after that (or the query
//! deadline) can only cut the body short; the client then sees a truncated stream,
//! which Arrow IPC, Parquet and JSON readers all reject.

use std::io::Write;
use std::sync::{Arc, Mutex};

use axum::body::Body;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use bytes::Bytes;
use datafusion::arrow::array::RecordBatch;
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;
use slicetest_engine::{OutputFormat, ResultWriter};
use tokio::time::Instant;

use crate::error::{ApiError, ApiResult};

/// Media type of an Arrow IPC stream (the Python client's default).
pub const ARROW_STREAM: &str = "application/vnd.apache.arrow.stream";
/// Media type of a Parquet file.
pub const PARQUET: &str = "application/vnd.apache.parquet";

/// The formats a tabular endpoint can answer in, with their media types.
const FORMATS: [(&str, OutputFormat, &str); 6] = [
    ("arrow", OutputFormat::Arrow, ARROW_STREAM),
    ("parquet", OutputFormat::Parquet, PARQUET),
    ("csv", OutputFormat::Csv, "text/csv; charset=utf-8"),
    ("json", OutputFormat::Json, "application/json"),
    ("jsonl", OutputFormat::Jsonl, "application/x-ndjson"),
    ("ndjson", OutputFormat::Jsonl, "application/x-ndjson"),
];

/// The negotiated format of a tabular response.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Negotiated {
    /// How rows are written.
    pub format: OutputFormat,
    /// The `Content-Type` answered.
    pub content_type: &'static str,
}

/// Picks the format from `?format=NAME`, else from the `Accept` header (JSON when it
/// accepts anything); 406 when nothing offered is acceptable.
pub fn negotiate(format_param: Option<&str>, headers: &HeaderMap) -> ApiResult<Negotiated> {
    if let Some(name) = format_param {
        return FORMATS
            .iter()
            .find(|(n, _, _)| n.eq_ignore_ascii_case(name))
            .map(|&(_, format, content_type)| Negotiated { format, content_type })
            .ok_or_else(|| {
                ApiError::bad_request(format!("unknown format {name:?}; use arrow, parquet, csv, json or jsonl"))
            });
    }
    let accept = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).unwrap_or("*/*");
    for wanted in accept.split(',').map(|m| m.split(';').next().unwrap_or("").trim()) {
        let found = match wanted {
            "*/*" | "application/*" | "application/json" => Some(3),
            ARROW_STREAM | "application/vnd.apache.arrow.file" => Some(0),
            PARQUET | "application/x-parquet" => Some(1),
            "text/csv" | "text/*" => Some(2),
            "application/x-ndjson" | "application/jsonl" | "application/jsonlines" => Some(4),
            _ => None,
        };
        if let Some(i) = found {
            let (_, format, content_type) = FORMATS[i];
            return Ok(Negotiated { format, content_type });
        }
    }
    Err(ApiError::new(
        StatusCode::NOT_ACCEPTABLE,
        "not_acceptable",
        format!(
            "cannot answer {accept:?}; tabular results are {ARROW_STREAM}, {PARQUET}, text/csv, application/json or application/x-ndjson"
        ),
    ))
}

/// A `Write` whose bytes are taken out after each batch and sent as one body chunk.
#[derive(Clone, Default)]
struct ChunkBuffer(Arc<Mutex<Vec<u8>>>);

impl ChunkBuffer {
    fn take(&self) -> Bytes {
        Bytes::from(std::mem::take(&mut *self.0.lock().expect("not poisoned")))
    }
}

impl Write for ChunkBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().expect("not poisoned").extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Turns a running query into a streamed response in `negotiated` format; the stream
/// must finish before `deadline`. A failure before the first batch is answered as
/// `state` answers engine errors (status from its kind, paths scrubbed).
pub async fn respond(
    state: &crate::AppState,
    stream: SendableRecordBatchStream,
    negotiated: Negotiated,
    deadline: Instant,
) -> ApiResult<Response> {
    let mut response = stream_response(stream, negotiated, deadline, |e| state.error(e)).await?;
    // How long the body may still take: a client whose stream is cut about then knows the
    // query's time limit cut it (see docs/http.md, "Tabular responses").
    let left = deadline.saturating_duration_since(Instant::now()).as_millis();
    response.headers_mut().insert(DEADLINE_HEADER, HeaderValue::from(left as u64));
    Ok(response)
}

/// The header of a streamed query result that says how many milliseconds were left, when
/// the response started, before the query's time limit cuts the body.
pub const DEADLINE_HEADER: &str = "slicetest-deadline-ms";

async fn stream_response(
    mut stream: SendableRecordBatchStream,
    negotiated: Negotiated,
    deadline: Instant,
    answer: impl Fn(slicetest_engine::EngineError) -> ApiError,
) -> ApiResult<Response> {
    let first = match tokio::time::timeout_at(deadline, stream.next()).await {
        Err(_) => return Err(timeout()),
        Ok(Some(Err(e))) => return Err(answer(slicetest_engine::EngineError::query(e, None))),
        Ok(Some(Ok(batch))) => batch,
        // An empty result still gets its header (CSV) or an empty array (JSON).
        Ok(None) => RecordBatch::new_empty(stream.schema()),
    };
    let buffer = ChunkBuffer::default();
    let writer = ResultWriter::new(negotiated.format, stream.schema(), buffer.clone()).map_err(&answer)?;
    let state = BodyState { stream, writer: Some(writer), buffer, pending: Some(first), deadline };
    let body = futures::stream::unfold(state, next_chunk);
    let mut response = Response::new(Body::from_stream(body));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static(negotiated.content_type));
    Ok(response)
}

/// 503 `timeout`: the work ran past `Limits::query_timeout`.
pub(crate) fn timeout() -> ApiError {
    ApiError::new(
        StatusCode::SERVICE_UNAVAILABLE,
        "timeout",
        "the query ran past the server's time limit (slicetest serve --query-timeout)",
    )
}

struct BodyState {
    stream: SendableRecordBatchStream,
    /// None once finished.
    writer: Option<ResultWriter<ChunkBuffer>>,
    buffer: ChunkBuffer,
    /// The first batch, taken before the response started.
    pending: Option<RecordBatch>,
    deadline: Instant,
}

type Chunk = std::io::Result<Bytes>;

/// The next body chunk: one batch's bytes, then the format's trailer, then the end.
/// Empty chunks (a CSV header, say, before the next batch) are skipped by looping.
async fn next_chunk(mut state: BodyState) -> Option<(Chunk, BodyState)> {
    loop {
        let writer = state.writer.as_mut()?;
        // `timeout_at` polls the stream before its timer, so a stream that always has its
        // next batch ready (a cross join, a huge scan) would never see the deadline: check
        // the clock for every chunk too.
        if Instant::now() >= state.deadline {
            return Some((Err(std::io::Error::other("query deadline passed")), end(state)));
        }
        let batch = match state.pending.take() {
            Some(batch) => Some(batch),
            None => match tokio::time::timeout_at(state.deadline, state.stream.next()).await {
                Err(_) => return Some((Err(std::io::Error::other("query deadline passed")), end(state))),
                Ok(Some(Err(e))) => return Some((Err(std::io::Error::other(e.to_string())), end(state))),
                Ok(Some(Ok(batch))) => Some(batch),
                Ok(None) => None,
            },
        };
        let written = match batch {
            Some(batch) => writer.write(batch),
            None => state.writer.take().expect("checked above").finish(),
        };
        if let Err(e) = written {
            return Some((Err(std::io::Error::other(e.to_string())), end(state)));
        }
        let bytes = state.buffer.take();
        if !bytes.is_empty() {
            return Some((Ok(bytes), state));
        }
    }
}

fn end(mut state: BodyState) -> BodyState {
    state.writer = None;
    state
}

/// A tabular response of in-memory batches (search hits, listings).
pub async fn respond_batches(batches: Vec<RecordBatch>, negotiated: Negotiated) -> ApiResult<Response> {
    let schema = batches.first().map(|b| b.schema()).ok_or_else(|| ApiError::internal("no batch to answer"))?;
    let stream = futures::stream::iter(batches.into_iter().map(Ok));
    let stream = datafusion::physical_plan::stream::RecordBatchStreamAdapter::new(schema, stream);
    // In-memory batches cannot fail; if writing them does, it is the server's fault.
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    stream_response(Box::pin(stream), negotiated, deadline, ApiError::internal).await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn accept(value: &str) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ACCEPT, HeaderValue::from_str(value).unwrap());
        h
    }

    #[test]
    fn format_comes_from_the_parameter_then_accept() {
        let arrow = negotiate(None, &accept(ARROW_STREAM)).unwrap();
        assert_eq!(arrow.format, OutputFormat::Arrow);
        assert_eq!(negotiate(None, &HeaderMap::new()).unwrap().format, OutputFormat::Json);
        assert_eq!(negotiate(None, &accept("text/html, text/csv;q=0.9")).unwrap().format, OutputFormat::Csv);
        assert_eq!(negotiate(Some("parquet"), &accept(ARROW_STREAM)).unwrap().format, OutputFormat::Parquet);
        assert_eq!(negotiate(None, &accept("image/png")).unwrap_err().status, StatusCode::NOT_ACCEPTABLE);
        assert_eq!(negotiate(Some("xml"), &HeaderMap::new()).unwrap_err().status, StatusCode::BAD_REQUEST);
    }
}
