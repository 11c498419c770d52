//! Published dataset versions: `versions/<n>/{images.parquet, version.json, ingest-report.json}`.
//!
//! A version directory is written under a temporary name and renamed into place in one
//! step, so `versions/` only ever holds complete versions. Versions are never rewritten.

use std::fs::{self, File};
use std::path::Path;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{AsArray, RecordBatch, RecordBatchReader};
use datafusion::arrow::compute::concat_batches;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::WriterProperties;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::atomic::TMP_PREFIX;
use crate::error::{DatasetError, Result};
use crate::layout::{VERSION_FILE, WorkspaceLayout};

/// A column of a version's `images` table, as recorded in its manifest.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq, Eq)]
pub struct ColumnInfo {
    /// Column name.
    pub name: String,
    /// Arrow data type, as Arrow prints it (`Utf8`, `Int64`, …).
    pub data_type: String,
    /// Whether the column may hold NULLs.
    pub nullable: bool,
}

/// The manifest of one published version (`version.json`).
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct DatasetVersion {
    /// Dataset name.
    pub dataset: String,
    /// Version number, from 1.
    pub version: u64,
    /// The version this one was built on, if any.
    pub parent: Option<u64>,
    /// When it was published.
    pub created_at: DateTime<Utc>,
    /// Number of images.
    pub row_count: u64,
    /// SHA-256 over the sorted `image_id\tsha256\n` lines: equal content, equal hash.
    pub content_hash: String,
    /// SHA-256 of `images.parquet`, checked when a version is read back for merging.
    pub parquet_sha256: String,
    /// The ingested path that produced this version.
    pub source: String,
    /// The importer used.
    pub source_format: String,
    /// The slicetest version that wrote it.
    pub slicetest_version: String,
    /// Columns of `images.parquet`.
    pub columns: Vec<ColumnInfo>,
}

/// Version numbers of a dataset, ascending; temporary and foreign entries are ignored.
pub fn list_versions(layout: &WorkspaceLayout, dataset: &str) -> Result<Vec<u64>> {
    let dir = layout.versions_dir(dataset);
    let entries = match fs::read_dir(&dir) {
        Ok(e) => e,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(DatasetError::io("listing", &dir)(e)),
    };
    let mut versions: Vec<u64> = entries
        .flatten()
        .filter_map(|e| {
            let name = e.file_name().to_string_lossy().into_owned();
            (!name.starts_with(TMP_PREFIX) && e.path().join(VERSION_FILE).is_file())
                .then(|| name.parse().ok())
                .flatten()
        })
        .collect();
    versions.sort_unstable();
    Ok(versions)
}

/// Reads a version's manifest.
pub fn read_version(layout: &WorkspaceLayout, dataset: &str, version: u64) -> Result<DatasetVersion> {
    let path = layout.version_dir(dataset, version).join(VERSION_FILE);
    let text = fs::read(&path).map_err(DatasetError::io("reading", &path))?;
    serde_json::from_slice(&text).map_err(|e| DatasetError::BadManifestFile {
        what: "version manifest",
        path,
        message: e.to_string(),
    })
}

/// Reads a version's `images` table into one batch, after checking the file's hash.
pub fn read_images(layout: &WorkspaceLayout, manifest: &DatasetVersion) -> Result<RecordBatch> {
    let path = layout.images_file(&manifest.dataset, manifest.version);
    let data = fs::read(&path).map_err(DatasetError::io("reading", &path))?;
    check_hash(&path, &data, manifest)?;
    read_batch(data, None)
}

fn check_hash(path: &Path, data: &[u8], manifest: &DatasetVersion) -> Result<()> {
    let actual = hex::encode(Sha256::digest(data));
    if actual != manifest.parquet_sha256 {
        return Err(DatasetError::BadManifestFile {
            what: "dataset version",
            path: path.to_path_buf(),
            message: format!(
                "the file was modified after it was published (sha256 {actual}, manifest says {})",
                manifest.parquet_sha256
            ),
        });
    }
    Ok(())
}

/// Like [`read_images`], decoding only the named columns (the hash check still covers the
/// whole file).
pub fn read_image_columns(
    layout: &WorkspaceLayout,
    manifest: &DatasetVersion,
    columns: &[&str],
) -> Result<RecordBatch> {
    let path = layout.images_file(&manifest.dataset, manifest.version);
    let data = fs::read(&path).map_err(DatasetError::io("reading", &path))?;
    check_hash(&path, &data, manifest)?;
    read_batch(data, Some(columns))
}

fn read_batch(data: Vec<u8>, columns: Option<&[&str]>) -> Result<RecordBatch> {
    let mut builder = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(data))?;
    if let Some(columns) = columns {
        let fields = builder.schema().fields();
        let indices: Vec<usize> = columns.iter().filter_map(|c| fields.iter().position(|f| f.name() == c)).collect();
        let mask = datafusion::parquet::arrow::ProjectionMask::roots(builder.parquet_schema(), indices);
        builder = builder.with_projection(mask);
    }
    let reader = builder.build()?;
    let schema = reader.schema();
    let batches = reader.collect::<Result<Vec<_>, _>>()?;
    Ok(concat_batches(&schema, &batches)?)
}

/// SHA-256 over sorted `image_id\tsha256\n` lines of a batch sorted by image_id.
pub fn content_hash(batch: &RecordBatch) -> String {
    let ids = batch.column_by_name("image_id").expect("image_id column").as_string::<i32>();
    let shas = batch.column_by_name("sha256").expect("sha256 column").as_string::<i32>();
    let mut h = Sha256::new();
    for i in 0..batch.num_rows() {
        h.update(ids.value(i).as_bytes());
        h.update(b"\t");
        h.update(shas.value(i).as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// Writes `batch` as a Parquet file (zstd, statistics on) and returns the file's SHA-256.
pub fn write_parquet(path: &Path, batch: &RecordBatch) -> Result<String> {
    let props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(3).expect("valid level")))
        .set_max_row_group_row_count(Some(128 * 1024))
        .set_created_by(format!("slicetest {}", env!("CARGO_PKG_VERSION")))
        .build();
    let file = File::create(path).map_err(DatasetError::io("creating", path))?;
    let mut writer = ArrowWriter::try_new(file, batch.schema(), Some(props))?;
    writer.write(batch)?;
    let file = writer.into_inner()?;
    file.sync_all().map_err(DatasetError::io("syncing", path))?;
    let bytes = fs::read(path).map_err(DatasetError::io("reading", path))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// Column descriptions of a batch for the manifest.
pub fn column_infos(batch: &RecordBatch) -> Vec<ColumnInfo> {
    batch
        .schema()
        .fields()
        .iter()
        .map(|f| ColumnInfo { name: f.name().clone(), data_type: f.data_type().to_string(), nullable: f.is_nullable() })
        .collect()
}
