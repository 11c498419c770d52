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
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
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
    let mut sink = ResultWriter::new(format, schema, out)?;
    let mut rows = 0;
    while let Some(batch) = stream.next().await {
        let batch = batch.map_err(|e| EngineError::query(e, None))?;
        rows += batch.num_rows();
        sink.write(batch)?;
    }
    sink.finish()?;
    Ok(rows)
}

/// Rows per Parquet row group in results: the writer buffers a whole row group, so this
/// bounds the memory a streamed Parquet result holds (DataFusion's default is 1M rows).
const RESULT_ROW_GROUP_ROWS: usize = 65_536;

/// Writes record batches in one [`OutputFormat`], batch by batch, for callers that drive
/// the stream themselves (the HTTP API sends each batch's bytes as they are written).
pub enum ResultWriter<W: Write + Send> {
    #[doc(hidden)]
    Table(W, SchemaRef, Vec<RecordBatch>),
    #[doc(hidden)]
    Csv(datafusion::arrow::csv::Writer<W>),
    #[doc(hidden)]
    Json(datafusion::arrow::json::ArrayWriter<W>),
    #[doc(hidden)]
    Jsonl(datafusion::arrow::json::LineDelimitedWriter<W>),
    #[doc(hidden)]
    Parquet(datafusion::parquet::arrow::ArrowWriter<W>),
    #[doc(hidden)]
    Arrow(datafusion::arrow::ipc::writer::StreamWriter<W>),
}

fn json_writer() -> datafusion::arrow::json::WriterBuilder {
    datafusion::arrow::json::WriterBuilder::new().with_explicit_nulls(true)
}

/// `batch` as CSV can hold it: a nested column (list, struct, map), which CSV has no
/// cell for, becomes the JSON text of each value (as the JSON formats write it: a list
/// of boxes reads back with `json.loads`), NULL an empty cell.
fn flat_for_csv(batch: RecordBatch) -> Result<RecordBatch> {
    use std::sync::Arc;

    use datafusion::arrow::datatypes::{DataType, Field, Schema};
    let schema = batch.schema();
    if !schema.fields().iter().any(|f| f.data_type().is_nested()) {
        return Ok(batch);
    }
    let mut fields = Vec::with_capacity(schema.fields().len());
    let mut columns = Vec::with_capacity(schema.fields().len());
    for (field, column) in schema.fields().iter().zip(batch.columns()) {
        if !field.data_type().is_nested() {
            fields.push(field.clone());
            columns.push(column.clone());
            continue;
        }
        // One column, written as JSON lines ({"name": value} per row), each value kept as text.
        let one = RecordBatch::try_new(Arc::new(Schema::new(vec![field.clone()])), vec![column.clone()])?;
        let mut lines = Vec::new();
        let mut writer = json_writer().build::<_, datafusion::arrow::json::writer::LineDelimited>(&mut lines);
        writer.write(&one).map_err(out_err)?;
        writer.finish().map_err(out_err)?;
        drop(writer);
        let text = String::from_utf8(lines).map_err(out_err)?;
        let values: Vec<Option<String>> = text
            .lines()
            .map(|line| {
                let row: serde_json::Map<String, serde_json::Value> = serde_json::from_str(line).map_err(out_err)?;
                Ok(row.get(field.name()).filter(|v| !v.is_null()).map(|v| v.to_string()))
            })
            .collect::<Result<_>>()?;
        columns.push(Arc::new(datafusion::arrow::array::StringArray::from(values)));
        fields.push(Arc::new(Field::new(field.name(), DataType::Utf8, true)));
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)
}

fn out_err(e: impl std::fmt::Display) -> EngineError {
    EngineError::Output(e.to_string())
}

impl<W: Write + Send> ResultWriter<W> {
    /// A writer of `format` for batches of `schema` into `out`.
    pub fn new(format: OutputFormat, schema: SchemaRef, out: W) -> Result<Self> {
        Ok(match format {
            OutputFormat::Table => ResultWriter::Table(out, schema, Vec::new()),
            OutputFormat::Csv => {
                ResultWriter::Csv(datafusion::arrow::csv::WriterBuilder::new().with_header(true).build(out))
            }
            // Every row has every key, NULL as `null`: a reader (pandas, jq) sees the same
            // columns in every row, and a column of NULLs is not lost.
            OutputFormat::Json => ResultWriter::Json(json_writer().build(out)),
            OutputFormat::Jsonl => ResultWriter::Jsonl(json_writer().build(out)),
            OutputFormat::Parquet => {
                let props = datafusion::parquet::file::properties::WriterProperties::builder()
                    .set_max_row_group_row_count(Some(RESULT_ROW_GROUP_ROWS))
                    .build();
                let writer = datafusion::parquet::arrow::ArrowWriter::try_new(out, schema, Some(props));
                ResultWriter::Parquet(writer.map_err(out_err)?)
            }
            OutputFormat::Arrow => ResultWriter::Arrow(
                datafusion::arrow::ipc::writer::StreamWriter::try_new(out, &schema).map_err(out_err)?,
            ),
        })
    }

    /// Writes one batch.
    pub fn write(&mut self, batch: RecordBatch) -> Result<()> {
        match self {
            ResultWriter::Table(_, _, batches) => {
                batches.push(batch);
                Ok(())
            }
            ResultWriter::Csv(w) => w.write(&flat_for_csv(batch)?).map_err(out_err),
            ResultWriter::Json(w) => w.write(&batch).map_err(out_err),
            ResultWriter::Jsonl(w) => w.write(&batch).map_err(out_err),
            ResultWriter::Parquet(w) => w.write(&batch).map_err(out_err),
            ResultWriter::Arrow(w) => w.write(&batch).map_err(out_err),
        }
    }

    /// Writes what the format needs after the last batch and flushes.
    pub fn finish(self) -> Result<()> {
        match self {
            ResultWriter::Table(mut out, schema, batches) => {
                let text = if batches.iter().all(|b| b.num_rows() == 0) {
                    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
                    format!("(no rows; columns: {})", names.join(", "))
                } else {
                    datafusion::arrow::util::pretty::pretty_format_batches(&batches).map_err(out_err)?.to_string()
                };
                writeln!(out, "{text}").map_err(out_err)?;
                out.flush().map_err(out_err)
            }
            ResultWriter::Csv(w) => w.into_inner().flush().map_err(out_err),
            ResultWriter::Json(mut w) => {
                w.finish().map_err(out_err)?;
                let mut out = w.into_inner();
                writeln!(out).and_then(|_| out.flush()).map_err(out_err)
            }
            ResultWriter::Jsonl(mut w) => {
                w.finish().map_err(out_err)?;
                w.into_inner().flush().map_err(out_err)
            }
            ResultWriter::Parquet(w) => w.into_inner().map_err(out_err)?.flush().map_err(out_err),
            ResultWriter::Arrow(mut w) => {
                w.finish().map_err(out_err)?;
                w.into_inner().map_err(out_err)?.flush().map_err(out_err)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::{Arc, Mutex};

    use datafusion::arrow::array::{Int64Array, StringArray};
    use datafusion::arrow::datatypes::{DataType, Field, Schema};

    use super::*;

    /// A `Write` whose bytes can be read after the writer that owns it is gone.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<u8>>>);

    impl Write for Shared {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.0.lock().unwrap().write(buf)
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn csv_writes_nested_values_as_json_text() {
        use datafusion::arrow::array::{ArrayRef, ListArray, StructArray};
        use datafusion::arrow::datatypes::Float64Type;
        let boxes: ArrayRef = Arc::new(ListArray::from_iter_primitive::<Float64Type, _, _>(vec![
            Some(vec![Some(1.5), Some(2.0)]),
            None,
            Some(vec![]),
        ]));
        let meta: ArrayRef = Arc::new(StructArray::from(vec![(
            Arc::new(Field::new("camera", DataType::Utf8, true)),
            Arc::new(StringArray::from(vec![Some("a,b"), None, Some("c")])) as ArrayRef,
        )]));
        let ids: ArrayRef = Arc::new(StringArray::from(vec!["x", "y", "z"]));
        let batch = RecordBatch::try_from_iter([("image_id", ids), ("boxes", boxes), ("meta", meta)]).unwrap();
        let out = Shared::default();
        let mut writer = ResultWriter::new(OutputFormat::Csv, batch.schema(), out.clone()).unwrap();
        writer.write(batch.clone()).unwrap();
        writer.write(batch.slice(0, 0)).unwrap();
        writer.finish().unwrap();
        let text = String::from_utf8(out.0.lock().unwrap().clone()).unwrap();
        assert_eq!(
            text,
            "image_id,boxes,meta\nx,\"[1.5,2.0]\",\"{\"\"camera\"\":\"\"a,b\"\"}\"\ny,,\"{\"\"camera\"\":null}\"\nz,[],\"{\"\"camera\"\":\"\"c\"\"}\"\n"
        );
    }

    #[test]
    fn json_rows_keep_their_null_keys() {
        let schema = Arc::new(Schema::new(vec![
            Field::new("image_id", DataType::Utf8, false),
            Field::new("brightness", DataType::Int64, true),
        ]));
        let batch = RecordBatch::try_new(
            schema.clone(),
            vec![Arc::new(StringArray::from(vec!["a", "b"])), Arc::new(Int64Array::from(vec![Some(3), None]))],
        )
        .unwrap();
        for (format, expected) in [
            (OutputFormat::Json, "[{\"image_id\":\"a\",\"brightness\":3},{\"image_id\":\"b\",\"brightness\":null}]"),
            (OutputFormat::Jsonl, "{\"image_id\":\"a\",\"brightness\":3}\n{\"image_id\":\"b\",\"brightness\":null}\n"),
        ] {
            let out = Shared::default();
            let mut writer = ResultWriter::new(format, schema.clone(), out.clone()).unwrap();
            writer.write(batch.clone()).unwrap();
            writer.finish().unwrap();
            assert_eq!(String::from_utf8(out.0.lock().unwrap().clone()).unwrap().trim_end(), expected.trim_end());
        }
    }
}
