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
/// `altered(actual_sha256)`, unless the bytes were a local copy of a bucket's file (the
/// object cache): then that copy is damaged, not the file, so it is removed, said, and the
/// file read from the bucket.
pub(crate) fn read_checked_parquet(
    storage: &Storage,
    path: &Path,
    expected: &str,
    what: &'static str,
    altered: impl FnOnce(&str) -> String,
    columns: Option<&[&str]>,
) -> Result<RecordBatch> {
    let mut data = storage.read(path)?;
    let mut actual = hex::encode(Sha256::digest(&data));
    if actual != expected
        && let Some(copy) = storage.evict_cached(path)?
    {
        tracing::warn!(
            "{what} {}: the local copy {} had sha256 {actual}, not {expected}: removed it, reading the bucket's",
            path.display(),
            copy.display()
        );
        data = storage.read(path)?;
        actual = hex::encode(Sha256::digest(&data));
    }
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

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use datafusion::arrow::array::{ArrayRef, Int64Array};
    use datafusion::parquet::arrow::ArrowWriter;
    use object_store::memory::InMemory;

    use super::*;
    use crate::object_cache::ObjectCache;

    #[test]
    fn a_damaged_local_copy_is_replaced_by_the_buckets_file() {
        let bucket = Arc::new(InMemory::new());
        let dir = tempfile::tempdir().unwrap();
        let cache = Arc::new(ObjectCache::new(bucket.clone(), dir.path().to_path_buf(), 1 << 30).unwrap());
        let storage = Storage::with_object_cache(cache, "memory://ws");
        let batch =
            RecordBatch::try_from_iter([("v", Arc::new(Int64Array::from_iter_values(0..1000)) as ArrayRef)]).unwrap();
        let mut bytes = Vec::new();
        let mut writer = ArrowWriter::try_new(&mut bytes, batch.schema(), None).unwrap();
        writer.write(&batch).unwrap();
        writer.close().unwrap();
        let sha = hex::encode(Sha256::digest(&bytes));
        let path = storage.root().join("slices/s/v1-0123456789abcdef.parquet");
        storage.write(&path, bytes.clone().into()).unwrap();
        let read = || read_checked_parquet(&storage, &path, &sha, "frozen slice", |a| format!("altered: {a}"), None);
        assert_eq!(read().unwrap(), batch, "the first read fills the cache");

        // A flipped byte in the local copy: the bucket's file is read, and cached again.
        // `memory://ws`: the bucket is `ws`, so keys start at the workspace's own paths.
        let copy = dir.path().join("slices/s/v1-0123456789abcdef.parquet");
        let mut damaged = std::fs::read(&copy).unwrap();
        damaged[100] ^= 1;
        std::fs::write(&copy, &damaged).unwrap();
        assert_eq!(read().unwrap(), batch);
        assert_eq!(std::fs::read(&copy).unwrap(), bytes);

        // The bucket's own file altered: that is the error, whatever the cache held.
        let key = object_store::path::Path::from("slices/s/v1-0123456789abcdef.parquet");
        block_on_put(&bucket, &key, damaged);
        std::fs::remove_file(&copy).unwrap();
        let err = read().unwrap_err().to_string();
        assert!(err.contains("altered: "), "{err}");
    }

    fn block_on_put(bucket: &InMemory, key: &object_store::path::Path, bytes: Vec<u8>) {
        use object_store::ObjectStoreExt;
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        runtime.block_on(bucket.put(key, bytes.into())).unwrap();
    }
}
