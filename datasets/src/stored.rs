//! Reading back what slicetest stored: directory listings, JSON manifests, and Parquet
//! files checked against the SHA-256 their manifest recorded. Dataset versions, frozen
//! slices and runs all go through here, so "altered file" and "bad manifest" errors look
//! the same everywhere, on a local disk or in a bucket.

use std::path::{Path, PathBuf};

use datafusion::arrow::array::{RecordBatch, RecordBatchReader};
use datafusion::arrow::compute::concat_batches;
use datafusion::parquet::arrow::ProjectionMask;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};

use crate::error::{DatasetError, Result};
use crate::storage::Storage;

/// Parses a JSON manifest already read from `path`; `what` names it in the error.
pub(crate) fn parse_json<T: DeserializeOwned>(text: &[u8], path: PathBuf, what: &'static str) -> Result<T> {
    serde_json::from_slice(text).map_err(|e| DatasetError::Corrupt { what, path, message: e.to_string() })
}

/// Reads and parses a JSON manifest.
pub(crate) fn read_json<T: DeserializeOwned>(storage: &Storage, path: PathBuf, what: &'static str) -> Result<T> {
    let text = storage.read(&path)?;
    parse_json(&text, path, what)
}

/// Reads a stored Parquet file whole (or only `columns`), after checking its SHA-256 is
/// `expected`. On a mismatch the error is `what` at `path` with the message
/// `altered(actual_sha256)`.
pub(crate) fn read_checked_parquet(
    storage: &Storage,
    path: &Path,
    expected: &str,
    what: &'static str,
    altered: impl FnOnce(&str) -> String,
    columns: Option<&[&str]>,
) -> Result<RecordBatch> {
    let data = storage.read(path)?;
    let actual = hex::encode(Sha256::digest(&data));
    if actual != expected {
        return Err(DatasetError::Corrupt { what, path: path.to_path_buf(), message: altered(&actual) });
    }
    let mut builder = ParquetRecordBatchReaderBuilder::try_new(data)?;
    if let Some(columns) = columns {
        let fields = builder.schema().fields();
        let indices: Vec<usize> = columns.iter().filter_map(|c| fields.iter().position(|f| f.name() == c)).collect();
        let mask = ProjectionMask::roots(builder.parquet_schema(), indices);
        builder = builder.with_projection(mask);
    }
    let reader = builder.build()?;
    let schema = reader.schema();
    let batches = reader.collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(concat_batches(&schema, &batches)?)
}
