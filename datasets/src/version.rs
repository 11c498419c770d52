//! Published dataset versions: `versions/<n>/{images-<key>.parquet, version.json, …}`.
//!
//! A version's data files carry a content key in their names, so two writers preparing
//! the same number never overwrite each other's files; `version.json`, created only if
//! absent, is the commit (see [`crate::ingest`]). A number without `version.json` is not
//! a version, and versions are never rewritten.

use std::fs::File;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use chrono::{DateTime, Utc};
use datafusion::arrow::array::{AsArray, RecordBatch};
use datafusion::arrow::datatypes::DataType;
use datafusion::parquet::arrow::ArrowWriter;
use datafusion::parquet::basic::{Compression, ZstdLevel};
use datafusion::parquet::file::properties::{EnabledStatistics, WriterProperties};
use datafusion::parquet::schema::types::ColumnPath;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::error::{DatasetError, Result};
use crate::layout::{VERSION_FILE, WorkspaceLayout};
use crate::stored::{parse_json, read_checked_parquet, read_json};

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
    /// SHA-256 of the images file, checked when a version is read back for merging.
    pub parquet_sha256: String,
    /// The images file's name inside the version directory (`images.parquet` in
    /// workspaces written before commits were lock-free).
    #[serde(default = "legacy_images_file")]
    pub images_file: String,
    /// The ingest report's name inside the version directory, when one was written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub report_file: Option<String>,
    /// The ingested path that produced this version.
    pub source: String,
    /// The importer used.
    pub source_format: String,
    /// The slicetest version that wrote it.
    pub slicetest_version: String,
    /// Columns of `images.parquet`.
    pub columns: Vec<ColumnInfo>,
    /// Ground-truth boxes (`objects.parquet`), when an import carried any.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub objects: Option<crate::objects::ObjectsInfo>,
}

fn legacy_images_file() -> String {
    crate::layout::IMAGES_FILE.to_string()
}

/// Version numbers of a dataset, ascending: the numbers whose `version.json` exists (one
/// listing, also on a bucket). Numbers a writer is still filling, or lost, are not versions.
pub fn list_versions(layout: &WorkspaceLayout, dataset: &str) -> Result<Vec<u64>> {
    let dir = layout.versions_dir(dataset);
    let mut versions: Vec<u64> = layout
        .storage()
        .list_files(&dir)?
        .iter()
        .filter_map(|file| file.strip_suffix(VERSION_FILE)?.strip_suffix('/')?.parse().ok())
        .collect();
    versions.sort_unstable();
    Ok(versions)
}

/// Reads a version's manifest.
pub fn read_version(layout: &WorkspaceLayout, dataset: &str, version: u64) -> Result<DatasetVersion> {
    read_json(layout.storage(), layout.version_dir(dataset, version).join(VERSION_FILE), "version manifest")
}

/// Reads the manifests of `versions` of `dataset` (concurrently from a bucket), in order.
pub fn read_versions(layout: &WorkspaceLayout, dataset: &str, versions: &[u64]) -> Result<Vec<DatasetVersion>> {
    read_manifests(layout, versions.iter().map(|v| version_file(layout, dataset, *v)).collect())
}

/// `versions/<n>/version.json` of `dataset`.
pub(crate) fn version_file(layout: &WorkspaceLayout, dataset: &str, version: u64) -> PathBuf {
    layout.version_dir(dataset, version).join(VERSION_FILE)
}

/// Reads version manifests at `paths` (concurrently from a bucket), in order.
pub(crate) fn read_manifests(layout: &WorkspaceLayout, paths: Vec<PathBuf>) -> Result<Vec<DatasetVersion>> {
    let texts = layout.storage().read_many(&paths)?;
    paths
        .into_iter()
        .zip(texts)
        .map(|(path, text)| match text {
            Some(text) => parse_json(&text, path, "version manifest"),
            None => Err(DatasetError::io("reading", &path)(std::io::Error::new(
                std::io::ErrorKind::NotFound,
                "not found (listed a moment ago: removed by another process?)",
            ))),
        })
        .collect()
}

/// Reads a version's `images` table into one batch, after checking the file's hash.
pub fn read_images(layout: &WorkspaceLayout, manifest: &DatasetVersion) -> Result<RecordBatch> {
    read_checked_images(layout, manifest, None)
}

/// Like [`read_images`], decoding only the named columns (the hash check still covers the
/// whole file). The columns come in the file's order, not in the order named: look them
/// up by name.
pub fn read_image_columns(
    layout: &WorkspaceLayout,
    manifest: &DatasetVersion,
    columns: &[&str],
) -> Result<RecordBatch> {
    read_checked_images(layout, manifest, Some(columns))
}

/// `[width, height]` of each row of images read with the `width` and `height` columns
/// (see [`read_image_columns`]), in row order.
pub fn image_sizes(images: &RecordBatch) -> Result<Vec<[u32; 2]>> {
    let dimension = |name: &str| -> Result<Vec<u32>> {
        let column = images.column_by_name(name).expect("read with the width and height columns");
        let column = datafusion::arrow::compute::cast(column, &DataType::UInt32)?;
        Ok(column.as_primitive::<datafusion::arrow::datatypes::UInt32Type>().values().to_vec())
    };
    Ok(dimension("width")?.into_iter().zip(dimension("height")?).map(|(w, h)| [w, h]).collect())
}

fn read_checked_images(
    layout: &WorkspaceLayout,
    manifest: &DatasetVersion,
    columns: Option<&[&str]>,
) -> Result<RecordBatch> {
    let expected = &manifest.parquet_sha256;
    let altered = |actual: &str| {
        format!("the file was modified after it was published (sha256 {actual}, manifest says {expected})")
    };
    let path = layout.images_file(manifest);
    read_checked_parquet(layout.storage(), &path, expected, "dataset version", altered, columns)
}

/// SHA-256 over sorted `image_id\tsha256\n` lines of a batch sorted by image_id.
pub fn content_hash(batch: &RecordBatch) -> String {
    let ids = batch.column_by_name("image_id").expect("image_id column").as_string::<i32>();
    let shas = batch.column_by_name("sha256").expect("sha256 column").as_string::<i32>();
    pairs_hash((0..batch.num_rows()).map(|i| (ids.value(i), shas.value(i))))
}

/// SHA-256 over `image_id\tsha256\n` lines, in the given order.
pub fn pairs_hash<'a>(pairs: impl IntoIterator<Item = (&'a str, &'a str)>) -> String {
    let mut h = Sha256::new();
    for (id, sha) in pairs {
        h.update(id.as_bytes());
        h.update(b"\t");
        h.update(sha.as_bytes());
        h.update(b"\n");
    }
    hex::encode(h.finalize())
}

/// Writes `batch` as a Parquet file (zstd, statistics on) and returns the file's SHA-256.
pub fn write_parquet(path: &Path, batch: &RecordBatch) -> Result<String> {
    write_parquet_with_metadata(path, batch, Vec::new())
}

/// [`write_parquet`] with key-value pairs in the file's footer metadata, where every
/// Parquet reader (pyarrow's `read_metadata`, DuckDB's `parquet_kv_metadata`) finds them.
pub fn write_parquet_with_metadata(
    path: &Path,
    batch: &RecordBatch,
    metadata: Vec<(String, String)>,
) -> Result<String> {
    let bytes = encode_parquet(batch, metadata)?;
    let mut file = File::create(path).map_err(DatasetError::io("creating", path))?;
    std::io::Write::write_all(&mut file, &bytes).map_err(DatasetError::io("writing", path))?;
    file.sync_all().map_err(DatasetError::io("syncing", path))?;
    Ok(hex::encode(Sha256::digest(&bytes)))
}

/// `batch` as the bytes of a Parquet file (zstd, statistics on, `metadata` in the footer),
/// for writing to any store.
pub fn encode_parquet(batch: &RecordBatch, metadata: Vec<(String, String)>) -> Result<bytes::Bytes> {
    encode_parquet_at(batch, metadata, 3)
}

/// [`encode_parquet`] at zstd level `level` (1 is about twice as fast as 3 and a few
/// percent larger on ids and hashes: frozen members files, written on every freeze).
///
/// The same bytes as [`parquet_writer_at`]'s writer given the whole batch, but every
/// (row group, column) chunk is encoded on its own thread (rayon): compression is most of
/// the cost, and one writer does it on one core.
pub fn encode_parquet_at(batch: &RecordBatch, metadata: Vec<(String, String)>, level: i32) -> Result<bytes::Bytes> {
    encode_parquet_grouped(batch, metadata, level, ROWS_PER_GROUP)
}

/// Rows per row group of the files slicetest writes, unless a writer says otherwise.
const ROWS_PER_GROUP: usize = 128 * 1024;

/// [`encode_parquet_at`] with row groups of `rows_per_group` rows: wide rows (vectors) want
/// smaller groups, which readers skip by their statistics and read on several threads.
pub fn encode_parquet_grouped(
    batch: &RecordBatch,
    metadata: Vec<(String, String)>,
    level: i32,
    rows_per_group: usize,
) -> Result<bytes::Bytes> {
    use datafusion::parquet::arrow::arrow_writer::{ArrowRowGroupWriterFactory, compute_leaves};
    use datafusion::parquet::arrow::{ArrowSchemaConverter, add_encoded_arrow_schema_to_metadata};
    use datafusion::parquet::file::writer::SerializedFileWriter;
    use rayon::prelude::*;

    let schema = batch.schema();
    let mut props = writer_properties(&schema, metadata, level, rows_per_group);
    // As ArrowWriter does: the Arrow schema in the footer, so readers get the same types.
    add_encoded_arrow_schema_to_metadata(&schema, &mut props);
    let parquet_schema = ArrowSchemaConverter::new().with_coerce_types(props.coerce_types()).convert(&schema)?;
    let rows_per_group = props.max_row_group_row_count().unwrap_or(usize::MAX).max(1);
    let props = Arc::new(props);
    let mut file = SerializedFileWriter::new(Vec::new(), parquet_schema.root_schema_ptr(), props)?;
    let factory = ArrowRowGroupWriterFactory::new(&file, schema.clone());
    let groups: Vec<RecordBatch> = (0..batch.num_rows())
        .step_by(rows_per_group)
        .map(|start| batch.slice(start, rows_per_group.min(batch.num_rows() - start)))
        .collect();
    let mut jobs = Vec::new();
    for (index, group) in groups.iter().enumerate() {
        let writers = factory.create_column_writers(index)?;
        let mut leaves = Vec::with_capacity(writers.len());
        for (field, column) in schema.fields().iter().zip(group.columns()) {
            leaves.extend(compute_leaves(field, column)?);
        }
        jobs.push(writers.into_iter().zip(leaves).collect::<Vec<_>>());
    }
    let chunks = jobs
        .into_par_iter()
        .map(|group| {
            group
                .into_par_iter()
                .map(|(mut writer, leaf)| {
                    writer.write(&leaf)?;
                    writer.close()
                })
                .collect::<std::result::Result<Vec<_>, _>>()
        })
        .collect::<std::result::Result<Vec<_>, _>>()?;
    for group in chunks {
        let mut row_group = file.next_row_group()?;
        for chunk in group {
            chunk.append_to_row_group(&mut row_group)?;
        }
        row_group.close()?;
    }
    Ok(file.into_inner()?.into())
}

/// A writer of the same files as [`encode_parquet_at`], for a table written a batch at a
/// time (the bytes stay in memory; `into_inner` gives them).
pub fn parquet_writer_at(
    schema: &datafusion::arrow::datatypes::SchemaRef,
    metadata: Vec<(String, String)>,
    level: i32,
) -> Result<ArrowWriter<Vec<u8>>> {
    Ok(ArrowWriter::try_new(
        Vec::new(),
        schema.clone(),
        Some(writer_properties(schema, metadata, level, ROWS_PER_GROUP)),
    )?)
}

fn writer_properties(
    schema: &datafusion::arrow::datatypes::SchemaRef,
    metadata: Vec<(String, String)>,
    level: i32,
    rows_per_group: usize,
) -> WriterProperties {
    let metadata =
        metadata.into_iter().map(|(k, v)| datafusion::parquet::file::metadata::KeyValue::new(k, v)).collect::<Vec<_>>();
    let mut props = WriterProperties::builder()
        .set_compression(Compression::ZSTD(ZstdLevel::try_new(level).expect("a zstd level, 1 to 22")))
        .set_max_row_group_row_count(Some(rows_per_group.max(1)))
        .set_created_by(format!("slicetest {}", env!("CARGO_PKG_VERSION")))
        .set_key_value_metadata((!metadata.is_empty()).then_some(metadata));
    // Binary columns hold run-length-encoded masks: already compact and all distinct, so a
    // dictionary never pays, min/max statistics of blobs serve no query, and zstd gains
    // little over LZ4 at several times its cost (it was a tenth of a segmentation upload).
    for field in schema.fields().iter().filter(|f| f.data_type() == &DataType::Binary) {
        let column = ColumnPath::from(field.name().as_str());
        props = props
            .set_column_compression(column.clone(), Compression::LZ4_RAW)
            .set_column_dictionary_enabled(column.clone(), false)
            .set_column_statistics_enabled(column, EnabledStatistics::None);
    }
    props.build()
}

/// A file name that no other content takes: `<stem>-<first 16 hex of sha256>.<ext>`.
pub fn keyed_name(stem: &str, sha256: &str, ext: &str) -> String {
    format!("{stem}-{}.{ext}", &sha256[..16])
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

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::{ArrayRef, BinaryArray, StringArray};
    use datafusion::parquet::file::reader::{FileReader, SerializedFileReader};

    #[test]
    fn blob_columns_are_lz4_without_dictionary_or_statistics() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("t.parquet");
        let batch = RecordBatch::try_from_iter([
            ("image_id", std::sync::Arc::new(StringArray::from(vec!["a", "b"])) as ArrayRef),
            ("rle", std::sync::Arc::new(BinaryArray::from_iter_values([b"\x01\x02".as_slice(), b"\x03"])) as ArrayRef),
        ])
        .unwrap();
        let sha = write_parquet(&path, &batch).unwrap();
        assert_eq!(sha, hex::encode(Sha256::digest(std::fs::read(&path).unwrap())));
        let reader = SerializedFileReader::new(File::open(&path).unwrap()).unwrap();
        let group = reader.metadata().row_group(0);
        let (id, rle) = (group.column(0), group.column(1));
        assert!(matches!(id.compression(), Compression::ZSTD(_)));
        assert!(id.statistics().is_some());
        assert_eq!(rle.compression(), Compression::LZ4_RAW);
        assert!(rle.statistics().is_none() && rle.dictionary_page_offset().is_none());
    }

    #[test]
    fn the_parallel_encoding_writes_the_bytes_the_arrow_writer_does() {
        use datafusion::arrow::array::{BooleanArray, Int64Array};
        let rows = 300_000; // three row groups, the last one short
        let ids = StringArray::from_iter_values((0..rows).map(|i| format!("img_{i:07}")));
        let labels = StringArray::from_iter((0..rows).map(|i| (i % 7 != 0).then(|| ["cat", "dog", "bus"][i % 3])));
        let flags = BooleanArray::from_iter((0..rows).map(|i| Some(i % 5 == 0)));
        let counts = Int64Array::from_iter_values((0..rows as i64).map(|i| i * 31 % 1000));
        let blobs = BinaryArray::from_iter_values((0..rows).map(|i| (i as u32).to_le_bytes()));
        let batch = RecordBatch::try_from_iter([
            ("image_id", Arc::new(ids) as ArrayRef),
            ("label", Arc::new(labels) as ArrayRef),
            ("holdout", Arc::new(flags) as ArrayRef),
            ("n", Arc::new(counts) as ArrayRef),
            ("rle", Arc::new(blobs) as ArrayRef),
        ])
        .unwrap();
        let metadata = vec![("slicetest".to_string(), "v".to_string())];
        for batch in [batch.clone(), batch.slice(0, 10), batch.slice(0, 0)] {
            let mut writer = parquet_writer_at(&batch.schema(), metadata.clone(), 1).unwrap();
            writer.write(&batch).unwrap();
            let expected = writer.into_inner().unwrap();
            let bytes = encode_parquet_at(&batch, metadata.clone(), 1).unwrap();
            assert!(bytes.as_ref() == expected.as_slice(), "{} rows: the files differ", batch.num_rows());
        }
    }
}
