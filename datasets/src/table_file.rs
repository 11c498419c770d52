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
        let names = csv_header(path, what)?;
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
    if kind == "Parquet" {
        check_parquet_frame(path).map_err(bad)?;
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
        "CSV" => csv_header(path, "table"),
        "Arrow IPC" => Ok(read_ipc(path).map_err(bad)?.schema().fields().iter().map(|f| f.name().clone()).collect()),
        _ => {
            let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("").to_ascii_lowercase();
            let location = path.to_string_lossy();
            let df = if kind(path) == "Parquet" {
                check_parquet_frame(path).map_err(bad)?;
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

/// Checks that `path` is framed as a Parquet file: `PAR1` at both ends, and a footer
/// that fits in the file. DataFusion's reader panics on a footer length pointing outside
/// the file (a truncated copy, a file that only starts like Parquet), so a table file is
/// checked before it is handed over.
fn check_parquet_frame(path: &Path) -> std::result::Result<(), String> {
    use std::io::{Read, Seek, SeekFrom};
    let read = |e: std::io::Error| format!("reading it: {e}");
    let mut file = std::fs::File::open(path).map_err(read)?;
    let size = file.metadata().map_err(read)?.len();
    if size < 12 {
        return Err(format!("the file is {size} bytes, too short for Parquet (truncated, or not Parquet)"));
    }
    let (mut head, mut tail) = ([0u8; 4], [0u8; 8]);
    file.read_exact(&mut head).map_err(read)?;
    file.seek(SeekFrom::End(-8)).and_then(|_| file.read_exact(&mut tail)).map_err(read)?;
    if &head != b"PAR1" || &tail[4..] != b"PAR1" {
        return Err("not a Parquet file: it does not start and end with PAR1 (truncated, or another format)".into());
    }
    let footer = u64::from(u32::from_le_bytes([tail[0], tail[1], tail[2], tail[3]]));
    if footer + 12 > size {
        return Err(format!(
            "the file is {size} bytes, but its footer says it holds {footer} bytes of metadata: it is truncated or damaged"
        ));
    }
    Ok(())
}

/// Longest CSV header line read: past it, the names are those of its start.
const MAX_HEADER_BYTES: u64 = 16 << 20;

/// The column names of a CSV file's header line (quotes trimmed). A header that is not
/// UTF-8 (a binary file sent as CSV, another encoding) is the input's fault, said with
/// where the first bad byte is: `what` names the file's role ("predictions", "manifest").
fn csv_header(path: &Path, what: &'static str) -> Result<Vec<String>> {
    use std::io::{BufRead, Read};
    let file = std::fs::File::open(path).map_err(DatasetError::io("reading", path))?;
    let mut header = Vec::new();
    std::io::BufReader::new(file.take(MAX_HEADER_BYTES))
        .read_until(b'\n', &mut header)
        .map_err(DatasetError::io("reading", path))?;
    let header = String::from_utf8(header).map_err(|e| {
        let at = e.utf8_error().valid_up_to();
        DatasetError::BadManifestFile {
            what,
            path: path.to_path_buf(),
            message: format!(
                "(CSV) line 1 (the header) is not UTF-8 text: byte {} (0x{:02x}) is not valid UTF-8; a CSV file \
                 must be UTF-8 (is it a binary file, or in another encoding?)",
                at + 1,
                e.as_bytes()[at]
            ),
        }
    })?;
    Ok(header.trim_end().split(',').map(|c| c.trim().trim_matches('"').to_string()).collect())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::error::ErrorKind;

    #[tokio::test]
    async fn a_file_that_is_not_whole_parquet_is_refused_not_read() {
        let dir = tempfile::tempdir().unwrap();
        let whole = dir.path().join("whole.parquet");
        let batch = RecordBatch::try_from_iter([(
            "image_id",
            Arc::new(datafusion::arrow::array::StringArray::from(vec!["a", "b"])) as _,
        )])
        .unwrap();
        crate::version::write_parquet(&whole, &batch).unwrap();
        let bytes = std::fs::read(&whole).unwrap();
        assert_eq!(read_table(&whole, "predictions").await.unwrap().num_rows(), 2);
        let cases: [(&str, Vec<u8>, &str); 4] = [
            ("garbage", b"PAR1garbagePAR1".to_vec(), "footer says it holds 1701273954 bytes"),
            ("short", b"PAR1".to_vec(), "too short for Parquet"),
            ("cut", bytes[..bytes.len() - 3].to_vec(), "does not start and end with PAR1"),
            ("text", b"image_id\na\nb\n".to_vec(), "does not start and end with PAR1"),
        ];
        for (name, content, expected) in cases {
            let path = dir.path().join(format!("{name}.parquet"));
            std::fs::write(&path, content).unwrap();
            for err in [
                read_table(&path, "predictions").await.unwrap_err().to_string(),
                column_names(&path).await.unwrap_err().to_string(),
            ] {
                assert!(err.contains(expected) && err.contains(&format!("{name}.parquet")), "{name}: {err}");
            }
        }
    }

    #[tokio::test]
    async fn a_csv_whose_header_is_not_utf8_is_the_inputs_fault() {
        let dir = tempfile::tempdir().unwrap();
        let png = dir.path().join("predictions.csv");
        std::fs::write(&png, b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR").unwrap();
        let bom = dir.path().join("utf16.csv");
        std::fs::write(&bom, b"\xff\xfeimage_id,predicted\nimg_0001.png,x\n").unwrap();
        for (path, byte) in [(&png, "byte 1 (0x89)"), (&bom, "byte 1 (0xff)")] {
            let e = read_table(path, "predictions").await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
            let message = e.to_string();
            assert!(message.starts_with(&format!("invalid predictions {}", path.display())), "{message}");
            assert!(message.contains("line 1 (the header) is not UTF-8") && message.contains(byte), "{message}");
            let e = column_names(path).await.unwrap_err();
            assert_eq!(e.kind(), ErrorKind::InvalidInput, "{e}");
        }
    }
}
