//! Reading a whole user-supplied table file (CSV, Parquet, JSON lines, Arrow IPC) into one
//! batch, with DataFusion's full-file type inference. Used for manifests and predictions.

use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::compute::concat_batches;
use datafusion::arrow::ipc::reader::{FileReader, StreamReader};
use datafusion::arrow::record_batch::RecordBatch;
use datafusion::prelude::{CsvReadOptions, JsonReadOptions, ParquetReadOptions, SessionContext};

use crate::error::{DatasetError, Result};

/// The file format, from the extension: `.parquet`, `.jsonl`/`.ndjson`, `.arrow`/`.arrows`/`.ipc`, else CSV.
fn kind(path: &Path) -> &'static str {
    match path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase().as_str() {
        "parquet" => "Parquet",
        "jsonl" | "ndjson" => "JSON-lines",
        "arrow" | "arrows" | "ipc" => "Arrow IPC",
        _ => "CSV",
    }
}

/// Reads `path` whole; `what` names the role of the file in errors ("manifest", "predictions").
pub async fn read_table(path: &Path, what: &'static str) -> Result<RecordBatch> {
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
    let dotted = format!(".{ext}");
    let location = path.to_string_lossy();
    let kind = kind(path);
    let bad = |message: String| DatasetError::BadManifestFile {
        what,
        path: path.to_path_buf(),
        message: format!("({kind}) {message}"),
    };
    if kind == "Arrow IPC" {
        return read_ipc(path).map_err(bad);
    }
    if kind == "CSV" {
        // The CSV reader would report a repeated name as a row with too many fields.
        let names = column_names(path).await?;
        for (i, name) in names.iter().enumerate() {
            if let Some(first) = names[..i].iter().position(|n| n == name) {
                return Err(bad(format!(
                    "column {name:?} appears twice in the header (columns {} and {}); rename or drop one",
                    first + 1,
                    i + 1
                )));
            }
        }
    }
    let ctx = SessionContext::new();
    let wrap = |e: datafusion::error::DataFusionError| bad(e.strip_backtrace());
    let df = match kind {
        "Parquet" => ctx.read_parquet(&*location, ParquetReadOptions::default().file_extension(&dotted)).await,
        "JSON-lines" => {
            let opts = JsonReadOptions::default().file_extension(&dotted).schema_infer_max_records(usize::MAX);
            ctx.read_json(&*location, opts).await
        }
        _ => {
            let opts =
                CsvReadOptions::new().has_header(true).file_extension(&dotted).schema_infer_max_records(usize::MAX);
            ctx.read_csv(&*location, opts).await
        }
    }
    .map_err(wrap)?;
    let schema = Arc::new(df.schema().as_arrow().clone());
    let batches = df.collect().await.map_err(wrap)?;
    Ok(concat_batches(&schema, &batches)?)
}

/// The column names of a table file, read cheaply: a Parquet footer, a CSV header line
/// (quotes trimmed), an Arrow file's schema.
pub async fn column_names(path: &Path) -> Result<Vec<String>> {
    let bad = |message: String| DatasetError::BadManifestFile { what: "table", path: path.to_path_buf(), message };
    match kind(path) {
        "CSV" => {
            use std::io::BufRead;
            let file = std::fs::File::open(path).map_err(DatasetError::io("reading", path))?;
            let mut header = String::new();
            std::io::BufReader::new(file).read_line(&mut header).map_err(DatasetError::io("reading", path))?;
            Ok(header.trim_end().split(',').map(|c| c.trim().trim_matches('"').to_string()).collect())
        }
        "Arrow IPC" => Ok(read_ipc(path).map_err(bad)?.schema().fields().iter().map(|f| f.name().clone()).collect()),
        _ => {
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
            let location = path.to_string_lossy();
            let df = if kind(path) == "Parquet" {
                SessionContext::new()
                    .read_parquet(&*location, ParquetReadOptions::default().file_extension(&format!(".{ext}")))
                    .await
            } else {
                SessionContext::new()
                    .read_json(&*location, JsonReadOptions::default().file_extension(&format!(".{ext}")))
                    .await
            }
            .map_err(|e| bad(e.strip_backtrace()))?;
            Ok(df.schema().fields().iter().map(|f| f.name().clone()).collect())
        }
    }
}

/// Arrow IPC in either the file or the stream format.
fn read_ipc(path: &Path) -> std::result::Result<RecordBatch, String> {
    let bytes = std::fs::read(path).map_err(|e| e.to_string())?;
    let batches: Vec<RecordBatch>;
    let schema;
    if let Ok(reader) = FileReader::try_new(std::io::Cursor::new(&bytes), None) {
        schema = reader.schema();
        batches = reader.collect::<std::result::Result<_, _>>().map_err(|e| e.to_string())?;
    } else {
        let reader = StreamReader::try_new(std::io::Cursor::new(&bytes), None).map_err(|e| e.to_string())?;
        schema = reader.schema();
        batches = reader.collect::<std::result::Result<_, _>>().map_err(|e| e.to_string())?;
    }
    concat_batches(&schema, &batches).map_err(|e| e.to_string())
}
