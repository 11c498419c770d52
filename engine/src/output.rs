//! Writing query results as a terminal table, CSV, JSON, Parquet or Arrow IPC, streamed
//! batch by batch (only the terminal table buffers, to size its columns).

use std::io::Write;

use datafusion::arrow::array::RecordBatch;
use datafusion::arrow::datatypes::SchemaRef;
use datafusion::execution::SendableRecordBatchStream;
use futures::StreamExt;

use crate::error::{EngineError, Result};

/// Output formats of `slicetest sql` (and of the HTTP API later).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutputFormat {
    /// A boxed table for people.
    Table,
    /// CSV with a header row.
    Csv,
    /// A JSON array of objects.
    Json,
    /// JSON lines: one object per line.
    Jsonl,
    /// A Parquet file.
    Parquet,
    /// An Arrow IPC stream.
    Arrow,
}

/// Streams all batches of `stream` to `out` in `format`; returns the number of rows.
pub async fn write_stream(
    mut stream: SendableRecordBatchStream,
    format: OutputFormat,
    out: impl Write + Send,
) -> Result<usize> {
    let schema = stream.schema();
    let mut sink = Sink::new(format, schema, out)?;
    let mut rows = 0;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| EngineError::query(e, None))?;
        rows += batch.num_rows();
        sink.write(batch)?;
    }
    sink.finish()?;
    Ok(rows)
}

enum Sink<W: Write + Send> {
    Table(W, SchemaRef, Vec<RecordBatch>),
    Csv(datafusion::arrow::csv::Writer<W>),
    Json(datafusion::arrow::json::ArrayWriter<W>),
    Jsonl(datafusion::arrow::json::LineDelimitedWriter<W>),
    Parquet(datafusion::parquet::arrow::ArrowWriter<W>),
    Arrow(datafusion::arrow::ipc::writer::StreamWriter<W>),
}

fn out_err(e: impl std::fmt::Display) -> EngineError {
    EngineError::Output(e.to_string())
}

impl<W: Write + Send> Sink<W> {
    fn new(format: OutputFormat, schema: SchemaRef, out: W) -> Result<Self> {
        Ok(match format {
            OutputFormat::Table => Sink::Table(out, schema, Vec::new()),
            OutputFormat::Csv => Sink::Csv(datafusion::arrow::csv::WriterBuilder::new().with_header(true).build(out)),
            OutputFormat::Json => Sink::Json(datafusion::arrow::json::ArrayWriter::new(out)),
            OutputFormat::Jsonl => Sink::Jsonl(datafusion::arrow::json::LineDelimitedWriter::new(out)),
            OutputFormat::Parquet => {
                Sink::Parquet(datafusion::parquet::arrow::ArrowWriter::try_new(out, schema, None).map_err(out_err)?)
            }
            OutputFormat::Arrow => {
                Sink::Arrow(datafusion::arrow::ipc::writer::StreamWriter::try_new(out, &schema).map_err(out_err)?)
            }
        })
    }

    fn write(&mut self, batch: RecordBatch) -> Result<()> {
        match self {
            Sink::Table(_, _, batches) => {
                batches.push(batch);
                Ok(())
            }
            Sink::Csv(w) => w.write(&batch).map_err(out_err),
            Sink::Json(w) => w.write(&batch).map_err(out_err),
            Sink::Jsonl(w) => w.write(&batch).map_err(out_err),
            Sink::Parquet(w) => w.write(&batch).map_err(out_err),
            Sink::Arrow(w) => w.write(&batch).map_err(out_err),
        }
    }

    fn finish(self) -> Result<()> {
        match self {
            Sink::Table(mut out, schema, batches) => {
                let text = if batches.iter().all(|b| b.num_rows() == 0) {
                    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                    format!("(no rows; columns: {})", names.join(", "))
                } else {
                    datafusion::arrow::util::pretty::pretty_format_batches(&batches).map_err(out_err)?.to_string()
                };
                writeln!(out, "{text}").map_err(out_err)?;
                out.flush().map_err(out_err)
            }
            Sink::Csv(w) => w.into_inner().flush().map_err(out_err),
            Sink::Json(mut w) => {
                w.finish().map_err(out_err)?;
                let mut out = w.into_inner();
                writeln!(out).and_then(|_| out.flush()).map_err(out_err)
            }
            Sink::Jsonl(mut w) => {
                w.finish().map_err(out_err)?;
                w.into_inner().flush().map_err(out_err)
            }
            Sink::Parquet(w) => w.into_inner().map_err(out_err)?.flush().map_err(out_err),
            Sink::Arrow(mut w) => {
                w.finish().map_err(out_err)?;
                w.into_inner().map_err(out_err)?.flush().map_err(out_err)
            }
        }
    }
}
