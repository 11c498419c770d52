//! Stored tags: `datasets/<ds>/tags/<tagger>.parquet`, one row per image (image_id,
//! sha256, then the tagger's columns), and for taggers that find objects
//! `datasets/<ds>/detections/<tagger>.parquet` (image_id, sha256, label, score, x0, y0,
//! x1, y1; one row per box). The tagger's provenance (name, version, parameters and their
//! hash, model) is stored as JSON in the Parquet file's metadata under [`PROVENANCE_KEY`],
//! so any Parquet reader can tell where a column came from.
//!
//! Rows are keyed by (image_id, sha256): a tag describes an image as it was when tagged,
//! and the SQL view only joins rows whose sha256 is the image's current one. A file is
//! always replaced whole (temporary sibling, fsync, rename), so readers never see half of
//! one; taggers rewrite it every few seconds while they work, which is what makes a killed
//! run resumable.

use std::collections::HashMap;
use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::{concat_batches, filter_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use datafusion::parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::atomic::{sync_dir, tmp_sibling};
use crate::error::{DatasetError, Result};
use crate::layout::WorkspaceLayout;
use crate::names::validate_name;
use crate::stored::entry_names;
use crate::version::write_parquet_with_metadata;

/// The Parquet (and Arrow schema) metadata key holding a tag file's [`TaggerProvenance`].
pub const PROVENANCE_KEY: &str = "slicetest.tagger";
/// The columns every tag file starts with.
pub const KEY_COLUMNS: [&str; 2] = ["image_id", "sha256"];
/// The columns of a detections file after the keys.
pub const DETECTION_COLUMNS: [&str; 6] = ["label", "score", "x0", "y0", "x1", "y1"];

/// Where a tag file's columns came from. Two runs with the same `parameters_hash` produce
/// the same columns, so a later run only tags images that are new; a different hash means
/// the file is rebuilt from scratch.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TaggerProvenance {
    /// The tagger's name (the file name, and how `slicetest tag --tagger` names it).
    pub tagger: String,
    /// The version of the tagger's definitions.
    pub version: String,
    /// The tagger's settings (a vocabulary, thresholds, the source file of an import).
    pub parameters: serde_json::Value,
    /// SHA-256 over version, parameters and model.
    pub parameters_hash: String,
    /// The model the tags came from (a name and fingerprint), if any.
    pub model: Option<String>,
    /// The slicetest version that wrote the file.
    pub slicetest_version: String,
    /// The CPU of the run that last wrote the file (`slicetest_embed::cpu::describe`):
    /// model taggers (faces, CLIP zero-shot) run kernels chosen by the CPU, whose last bits
    /// can differ between machines. Not part of `parameters_hash`: another CPU does not
    /// make stored tags stale. Absent for imports and older files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub computed_on: Option<String>,
}

impl TaggerProvenance {
    /// A provenance record whose hash covers `version`, `parameters` and `model`.
    pub fn new(tagger: &str, version: &str, parameters: serde_json::Value, model: Option<String>) -> Self {
        let mut h = Sha256::new();
        h.update(version.as_bytes());
        h.update(b"\0");
        h.update(parameters.to_string().as_bytes());
        h.update(b"\0");
        h.update(model.as_deref().unwrap_or("").as_bytes());
        TaggerProvenance {
            tagger: tagger.to_string(),
            version: version.to_string(),
            parameters,
            parameters_hash: hex::encode(h.finalize()),
            model,
            slicetest_version: env!("CARGO_PKG_VERSION").to_string(),
            computed_on: None,
        }
    }

    /// The same record, saying which CPU computed the tags.
    pub fn computed_on(mut self, cpu: String) -> Self {
        self.computed_on = Some(cpu);
        self
    }
}

/// One tagger's stored rows.
#[derive(Debug, Clone)]
pub struct TagFile {
    /// Where the rows came from.
    pub provenance: TaggerProvenance,
    /// image_id, sha256, then the tag columns.
    pub tags: RecordBatch,
    /// The boxes, for taggers that find objects.
    pub detections: Option<RecordBatch>,
}

impl TagFile {
    /// The (image_id, sha256) pairs that have a row.
    pub fn tagged(&self) -> std::collections::HashSet<(String, String)> {
        let (ids, shas) = key_columns(&self.tags);
        (0..self.tags.num_rows()).map(|i| (ids.value(i).to_string(), shas.value(i).to_string())).collect()
    }

    /// The tag columns (everything after the keys).
    pub fn tag_fields(&self) -> Vec<Arc<Field>> {
        self.tags.schema().fields().iter().skip(KEY_COLUMNS.len()).cloned().collect()
    }
}

fn key_columns(
    batch: &RecordBatch,
) -> (&datafusion::arrow::array::StringArray, &datafusion::arrow::array::StringArray) {
    (batch.column(0).as_string::<i32>(), batch.column(1).as_string::<i32>())
}

/// `datasets/<ds>/tags/<tagger>.parquet`.
pub fn tags_file(layout: &WorkspaceLayout, dataset: &str, tagger: &str) -> PathBuf {
    layout.dataset_dir(dataset).join("tags").join(format!("{tagger}.parquet"))
}

/// `datasets/<ds>/detections/<tagger>.parquet`.
pub fn detections_file(layout: &WorkspaceLayout, dataset: &str, tagger: &str) -> PathBuf {
    layout.dataset_dir(dataset).join("detections").join(format!("{tagger}.parquet"))
}

/// The taggers with stored tags for `dataset`, sorted by name (the order their columns
/// join the `images` view in).
pub fn tagger_names(layout: &WorkspaceLayout, dataset: &str) -> Result<Vec<String>> {
    stored_names(&layout.dataset_dir(dataset).join("tags"))
}

/// The taggers with stored detections for `dataset`, sorted by name.
pub fn detection_taggers(layout: &WorkspaceLayout, dataset: &str) -> Result<Vec<String>> {
    stored_names(&layout.dataset_dir(dataset).join("detections"))
}

/// The `<name>.parquet` files of `dir` by name; leftovers of killed writers (`.tmp-*`)
/// are not valid names and are skipped.
fn stored_names(dir: &Path) -> Result<Vec<String>> {
    let mut names: Vec<String> =
        entry_names(dir)?.into_iter().filter_map(|n| n.strip_suffix(".parquet").map(str::to_string)).collect();
    names.retain(|n| validate_name(n).is_ok());
    names.sort();
    Ok(names)
}

/// `image_id`, `sha256`: the first fields of every tag and detections file.
pub fn key_fields() -> Vec<Field> {
    KEY_COLUMNS.iter().map(|n| Field::new(*n, DataType::Utf8, false)).collect()
}

/// The schema of a detections file.
pub fn detections_schema() -> SchemaRef {
    let mut fields = key_fields();
    fields.push(Field::new("label", DataType::Utf8, false));
    fields.extend(["score", "x0", "y0", "x1", "y1"].map(|n| Field::new(n, DataType::Float32, true)));
    Arc::new(Schema::new(fields))
}

/// A tagger's stored file, if there is one.
pub fn read_tags(layout: &WorkspaceLayout, dataset: &str, tagger: &str) -> Result<Option<TagFile>> {
    let path = tags_file(layout, dataset, tagger);
    if !path.is_file() {
        return Ok(None);
    }
    let tags = read_whole(&path)?;
    let bad = |message: String| DatasetError::Corrupt { what: "tag file", path: path.clone(), message };
    let keys_ok = tags.num_columns() >= 2
        && KEY_COLUMNS.iter().enumerate().all(|(i, n)| tags.schema().field(i).name() == n)
        && tags.column(0).data_type() == &DataType::Utf8
        && tags.column(1).data_type() == &DataType::Utf8;
    if !keys_ok {
        return Err(bad(format!("expected image_id, sha256 first, got {:?}", tags.schema())));
    }
    let provenance = tags
        .schema()
        .metadata()
        .get(PROVENANCE_KEY)
        .cloned()
        .ok_or_else(|| bad(format!("no {PROVENANCE_KEY} metadata")))
        .and_then(|json| serde_json::from_str(&json).map_err(|e| bad(e.to_string())))?;
    let detections = read_detections(layout, dataset, tagger)?;
    Ok(Some(TagFile { provenance, tags: strip_metadata(tags), detections }))
}

/// A tagger's stored boxes, if it has any (without reading its tag file).
pub fn read_detections(layout: &WorkspaceLayout, dataset: &str, tagger: &str) -> Result<Option<RecordBatch>> {
    let path = detections_file(layout, dataset, tagger);
    if path.is_file() { read_whole(&path).map(Some) } else { Ok(None) }
}

/// The tag columns of a stored tagger (read from the file's footer only).
pub fn tag_columns(layout: &WorkspaceLayout, dataset: &str, tagger: &str) -> Result<Vec<String>> {
    let path = tags_file(layout, dataset, tagger);
    let file = File::open(&path).map_err(DatasetError::io("reading", &path))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)?;
    Ok(builder.schema().fields().iter().skip(KEY_COLUMNS.len()).map(|f| f.name().clone()).collect())
}

fn read_whole(path: &Path) -> Result<RecordBatch> {
    let file = File::open(path).map_err(DatasetError::io("reading", path))?;
    let builder = ParquetRecordBatchReaderBuilder::try_new(file)?;
    let schema = builder.schema().clone();
    let batches = builder.build()?.collect::<std::result::Result<Vec<_>, _>>()?;
    Ok(concat_batches(&schema, &batches)?)
}

fn strip_metadata(batch: RecordBatch) -> RecordBatch {
    let schema = Arc::new(Schema::new(batch.schema().fields().clone()));
    RecordBatch::try_new(schema, batch.columns().to_vec()).expect("same fields")
}

/// Publishes a tagger's rows: the detections first, then the tag file, each replaced
/// whole. A run killed between the two leaves detections of images whose tags aren't
/// stored yet; those images are tagged again by the next run, which replaces their boxes.
pub fn write_tags(layout: &WorkspaceLayout, dataset: &str, file: &TagFile) -> Result<()> {
    let tagger = &file.provenance.tagger;
    validate_name(tagger)?;
    let json = serde_json::to_string(&file.provenance).expect("serialisable");
    let metadata = vec![(PROVENANCE_KEY.to_string(), json)];
    if let Some(detections) = &file.detections {
        write_replacing(&detections_file(layout, dataset, tagger), detections, metadata.clone())?;
    }
    // In the Arrow schema too, so readers of the schema alone (DataFusion) see it.
    let schema =
        Arc::new(Schema::new_with_metadata(file.tags.schema().fields().clone(), metadata.iter().cloned().collect()));
    let tags = RecordBatch::try_new(schema, file.tags.columns().to_vec())?;
    write_replacing(&tags_file(layout, dataset, tagger), &tags, metadata)?;
    crate::ingest::failpoint("tag-after-publish");
    Ok(())
}

fn write_replacing(path: &Path, batch: &RecordBatch, metadata: Vec<(String, String)>) -> Result<()> {
    let dir = path.parent().expect("tag files live in a directory");
    fs::create_dir_all(dir).map_err(DatasetError::io("creating", dir))?;
    crate::atomic::remove_stale_tmp(dir);
    let tmp = tmp_sibling(path);
    write_parquet_with_metadata(&tmp, batch, metadata)?;
    fs::rename(&tmp, path).map_err(DatasetError::io("publishing", path))?;
    sync_dir(dir).map_err(DatasetError::io("syncing", dir))
}

/// Removes a tagger's files (tags, detections, and the mask set of a mask import).
pub fn remove_tags(layout: &WorkspaceLayout, dataset: &str, tagger: &str) -> Result<bool> {
    validate_name(tagger)?;
    let mut removed = crate::masks::remove_mask_set(layout, dataset, tagger)?;
    for path in [tags_file(layout, dataset, tagger), detections_file(layout, dataset, tagger)] {
        if path.is_file() {
            fs::remove_file(&path).map_err(DatasetError::io("removing", &path))?;
            removed = true;
        }
    }
    Ok(removed)
}

/// The rows of `batch` (keys first) whose (image_id, sha256) satisfy `keep`.
pub fn retain_rows(batch: &RecordBatch, keep: impl Fn(&str, &str) -> bool) -> Result<RecordBatch> {
    let (ids, shas) = key_columns(batch);
    let mask: datafusion::arrow::array::BooleanArray =
        (0..batch.num_rows()).map(|i| Some(keep(ids.value(i), shas.value(i)))).collect();
    Ok(filter_record_batch(batch, &mask)?)
}

/// `old` rows to keep followed by `new` ones (same schema, metadata aside).
pub fn append_rows(old: &RecordBatch, new: &RecordBatch) -> Result<RecordBatch> {
    let schema = new.schema();
    let old = RecordBatch::try_new(schema.clone(), old.columns().to_vec()).map_err(|_| DatasetError::BadInput {
        source_path: PathBuf::from("<tags>"),
        message: format!("stored tag columns {:?} differ from the tagger's {:?}", old.schema(), schema),
    })?;
    Ok(concat_batches(&schema, [&old, new])?)
}

/// The column names a tagger may not use, each with who owns it: the dataset version's
/// own `columns`, and every other tagger's (all but `tagger`).
pub fn taken_columns(
    layout: &WorkspaceLayout,
    dataset: &str,
    columns: &[String],
    tagger: &str,
) -> Result<HashMap<String, String>> {
    let mut taken: HashMap<String, String> =
        columns.iter().map(|c| (c.clone(), format!("dataset {dataset}"))).collect();
    for other in tagger_names(layout, dataset)?.into_iter().filter(|o| o != tagger) {
        for c in tag_columns(layout, dataset, &other)? {
            taken.insert(c, format!("tagger {other}"));
        }
    }
    Ok(taken)
}

/// Checks that a tagger's column names are usable: not a key column, unique, and not one
/// of `taken` (the images table's columns and other taggers' columns), so a column name
/// always means one thing in SQL.
pub fn check_columns<'a>(
    tagger: &str,
    columns: impl IntoIterator<Item = &'a str>,
    taken: &HashMap<String, String>,
) -> Result<()> {
    let mut seen = std::collections::HashSet::new();
    for name in columns {
        let bad = |message: String| DatasetError::BadInput { source_path: PathBuf::from(tagger), message };
        if KEY_COLUMNS.contains(&name) {
            return Err(bad(format!("column {name:?} is reserved")));
        }
        if !seen.insert(name) {
            return Err(bad(format!("column {name:?} appears twice")));
        }
        if let Some(owner) = taken.get(name) {
            return Err(bad(format!("column {name:?} already exists in the images table (from {owner}); rename it")));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use datafusion::arrow::array::{Float32Array, StringArray};

    use super::*;

    fn batch(ids: &[&str], values: &[f32]) -> RecordBatch {
        let schema = Arc::new(Schema::new(vec![
            Field::new("image_id", DataType::Utf8, false),
            Field::new("sha256", DataType::Utf8, false),
            Field::new("brightness", DataType::Float32, true),
        ]));
        let shas: Vec<String> = ids.iter().map(|i| format!("sha-{i}")).collect();
        RecordBatch::try_new(
            schema,
            vec![
                Arc::new(StringArray::from_iter_values(ids)),
                Arc::new(StringArray::from_iter_values(shas)),
                Arc::new(Float32Array::from(values.to_vec())),
            ],
        )
        .unwrap()
    }

    #[test]
    fn tags_round_trip_with_provenance_and_append() {
        let dir = tempfile::tempdir().unwrap();
        let layout = WorkspaceLayout::new(dir.path());
        assert!(read_tags(&layout, "ds", "pixels").unwrap().is_none());
        let provenance = TaggerProvenance::new("pixels", "1", serde_json::json!({"a": 1}), None);
        let file = TagFile { provenance: provenance.clone(), tags: batch(&["a", "b"], &[0.1, 0.2]), detections: None };
        write_tags(&layout, "ds", &file).unwrap();
        let back = read_tags(&layout, "ds", "pixels").unwrap().unwrap();
        assert_eq!(back.provenance, provenance);
        // Any Parquet reader finds the provenance in the footer.
        let file = File::open(tags_file(&layout, "ds", "pixels")).unwrap();
        let footer = ParquetRecordBatchReaderBuilder::try_new(file).unwrap().metadata().clone();
        let kv = footer.file_metadata().key_value_metadata().unwrap();
        assert!(
            kv.iter().any(|e| e.key == PROVENANCE_KEY && e.value.as_deref().is_some_and(|v| v.contains("\"pixels\"")))
        );
        assert_eq!(back.tags.num_rows(), 2);
        assert!(back.tagged().contains(&("a".to_string(), "sha-a".to_string())));
        let kept = retain_rows(&back.tags, |id, _| id != "a").unwrap();
        let merged = append_rows(&kept, &batch(&["c"], &[0.3])).unwrap();
        assert_eq!(merged.num_rows(), 2);
        assert_eq!(tagger_names(&layout, "ds").unwrap(), ["pixels"]);
        // Same inputs, same hash; any change, another.
        let again = TaggerProvenance::new("pixels", "1", serde_json::json!({"a": 1}), None);
        assert_eq!(again.parameters_hash, provenance.parameters_hash);
        let other = TaggerProvenance::new("pixels", "2", serde_json::json!({"a": 1}), None);
        assert_ne!(other.parameters_hash, provenance.parameters_hash);
        assert!(remove_tags(&layout, "ds", "pixels").unwrap());
        assert!(tagger_names(&layout, "ds").unwrap().is_empty());
    }

    #[test]
    fn column_names_must_be_free() {
        let taken: HashMap<String, String> = [("label".to_string(), "the manifest".to_string())].into();
        check_columns("t", ["brightness", "contrast"], &taken).unwrap();
        for bad in [vec!["label"], vec!["image_id"], vec!["x", "x"]] {
            assert!(check_columns("t", bad.iter().copied(), &taken).is_err(), "{bad:?}");
        }
    }
}
