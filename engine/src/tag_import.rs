//! `slicetest tag import`: any model's outputs as tag columns. A per-image file (CSV,
//! Parquet, JSON lines, Arrow; `image_id` + columns) becomes `tags/<name>.parquet`; a
//! per-object file (`image_id, label, x0, y0, x1, y1[, score]`, one row per box) becomes
//! `detections/<name>.parquet` plus a `num_<label>` count per image.
//!
//! Everything is checked before anything is written, so a bad file leaves the workspace
//! as it was: ids must be images of the dataset (each at most once in a per-image file),
//! columns numbers, booleans or strings, boxes finite with x0 ≤ x1 and y0 ≤ y1.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Int32Array, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Float32Type, Schema};
use slicetest_datasets::DatasetError;
use slicetest_datasets::tags::{self, TagFile, TaggerProvenance};

use crate::Engine;
use crate::error::Result;
use crate::tagging::{CurrentImages, TaggerRegistry, TaggerReport};

/// What a file to import holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum ImportKind {
    /// Per-object boxes when the file has `label`, `x0`, `y0`, `x1`, `y1`, else per-image.
    #[default]
    Auto,
    /// One row per image.
    PerImage,
    /// One row per box.
    Detections,
}

/// What `slicetest tag import` should do.
#[derive(Debug, Clone, Default)]
pub struct TagImportOptions {
    /// The dataset (default: the workspace default).
    pub dataset: Option<String>,
    /// The tagger name the columns are stored under (default: the file's stem).
    pub name: Option<String>,
    /// Per-image or per-object.
    pub kind: ImportKind,
}

/// The version stored in imported tags' provenance.
const IMPORT_VERSION: &str = "import-1";

impl Engine {
    /// Imports a file of per-image outputs or per-object detections as tag columns,
    /// replacing an earlier import under the same name. Returns the dataset and what was stored.
    pub async fn import_tags(&self, path: &Path, options: &TagImportOptions) -> Result<(String, TaggerReport)> {
        let started = Instant::now();
        let dataset = self.workspace.dataset_or_default(options.dataset.as_deref())?;
        let tagger = import_name(path, options.name.as_deref(), self.tagger_registry())?;
        let batch = slicetest_datasets::table_file::read_table(path, "tag file").await?;
        let bad = |message: String| DatasetError::BadInput { source_path: path.to_path_buf(), message };
        if batch.num_rows() == 0 {
            return Err(bad("the file has no rows".into()).into());
        }
        let _lock = self.workspace.lock()?;
        let current = self.current_images(&dataset)?;
        let is_detections = match options.kind {
            ImportKind::Auto => ["label", "x0", "y0", "x1", "y1"].iter().all(|c| batch.column_by_name(c).is_some()),
            ImportKind::PerImage => false,
            ImportKind::Detections => true,
        };
        let ids = id_column(&batch, &current, &dataset).map_err(bad)?;
        let file = if is_detections {
            detections_file(&batch, &ids, &current, &tagger).map_err(bad)?
        } else {
            per_image_file(&batch, &ids, &current, &tagger).map_err(bad)?
        };
        let file = TagFile { provenance: self.import_provenance(path, &tagger, is_detections)?, ..file };
        let columns: Vec<String> = file.tag_fields().iter().map(|f| f.name().clone()).collect();
        let layout = self.workspace.layout();
        let taken = tags::taken_columns(layout, &dataset, &current.columns, &tagger)?;
        tags::check_columns(&tagger, columns.iter().map(String::as_str), &taken)
            .map_err(|e| bad(e.to_string().replacen(&format!("{tagger}: "), "", 1)))?;
        // A new generation: an earlier per-object import's boxes do not carry over.
        tags::write_tags(layout, &dataset, &file)?;
        let report = TaggerReport {
            tagger,
            columns,
            tagged: ids.iter().collect::<BTreeSet<_>>().len(),
            already_tagged: 0,
            rebuilt: false,
            failed: Vec::new(),
            boxes: if is_detections { batch.num_rows() } else { 0 },
            seconds: started.elapsed().as_secs_f64(),
        };
        Ok((dataset, report))
    }

    fn import_provenance(&self, path: &Path, tagger: &str, detections: bool) -> Result<TaggerProvenance> {
        use sha2::Digest;
        let bytes = std::fs::read(path).map_err(DatasetError::io("reading", path))?;
        let parameters = serde_json::json!({
            "source": path.file_name().map(|n| n.to_string_lossy().into_owned()),
            "source_sha256": hex::encode(sha2::Sha256::digest(&bytes)),
            "kind": if detections { "detections" } else { "per-image" },
        });
        Ok(TaggerProvenance::new(tagger, IMPORT_VERSION, parameters, None))
    }
}

/// The tagger name: `--name`, else the file stem (cleaned); the registered taggers' names are refused.
fn import_name(path: &Path, name: Option<&str>, taggers: &TaggerRegistry) -> Result<String> {
    let name = match name {
        Some(n) => n.to_string(),
        None => {
            let stem = path.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            slicetest_datasets::sanitize_name(&stem, "tags")
        }
    };
    slicetest_datasets::validate_name(&name)?;
    if taggers.is_reserved(&name) {
        return Err(DatasetError::BadInput {
            source_path: path.to_path_buf(),
            message: format!("{name:?} is a built-in tagger's name; pick another with --name"),
        }
        .into());
    }
    Ok(name)
}

/// The file's image ids as strings, every one an image of the dataset.
fn id_column(batch: &RecordBatch, current: &CurrentImages, dataset: &str) -> std::result::Result<Vec<String>, String> {
    let columns = || batch.schema().fields().iter().map(|f| f.name().clone()).collect::<Vec<_>>().join(", ");
    let column =
        batch.column_by_name("image_id").ok_or_else(|| format!("no image_id column (columns: {})", columns()))?;
    let ids = cast(column, &DataType::Utf8).map_err(|e| format!("image_id: {e}"))?;
    let ids = ids.as_string::<i32>();
    let mut out = Vec::with_capacity(ids.len());
    let mut unknown = Vec::new();
    for i in 0..ids.len() {
        if ids.is_null(i) {
            return Err(format!("row {}: image_id is empty", i + 1));
        }
        let id = ids.value(i);
        if !current.rows.contains_key(id) {
            unknown.push((i + 1, id.to_string()));
        }
        out.push(id.to_string());
    }
    if let Some((row, id)) = unknown.first() {
        let more: Vec<String> = unknown.iter().skip(1).take(3).map(|(r, id)| format!("{id:?} (row {r})")).collect();
        return Err(format!(
            "{} image_id(s) are not images of dataset {dataset} (version {}): {id:?} (row {row}){}",
            unknown.len(),
            current.version,
            more.iter().map(|m| format!(", {m}")).collect::<String>()
        ));
    }
    Ok(out)
}

/// The Arrow type a tag column is stored as, or why the column can't be one.
fn tag_type(field: &Field) -> std::result::Result<DataType, String> {
    let t = field.data_type();
    if t.is_integer() {
        Ok(DataType::Int64)
    } else if t.is_floating() || matches!(t, DataType::Decimal128(..) | DataType::Decimal256(..)) {
        Ok(DataType::Float64)
    } else if matches!(t, DataType::Boolean) {
        Ok(DataType::Boolean)
    } else if matches!(t, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) {
        Ok(DataType::Utf8)
    } else if matches!(t, DataType::Null) {
        Err(format!("column {:?} is empty on every row", field.name()))
    } else {
        Err(format!("column {:?} has type {t}; tag columns are numbers, booleans or strings", field.name()))
    }
}

fn key_columns(ids: &[&str], current: &CurrentImages) -> Vec<ArrayRef> {
    vec![
        Arc::new(StringArray::from_iter_values(ids.iter().copied())),
        Arc::new(StringArray::from_iter_values(ids.iter().map(|id| current.rows[*id].0.as_str()))),
    ]
}

fn placeholder(tagger: &str) -> TaggerProvenance {
    TaggerProvenance::new(tagger, IMPORT_VERSION, serde_json::Value::Null, None)
}

/// A per-image file: every other column becomes a tag column (names lower-cased).
fn per_image_file(
    batch: &RecordBatch,
    ids: &[String],
    current: &CurrentImages,
    tagger: &str,
) -> std::result::Result<TagFile, String> {
    let mut seen = HashMap::new();
    for (row, id) in ids.iter().enumerate() {
        if let Some(first) = seen.insert(id.as_str(), row + 1) {
            return Err(format!("image_id {id:?} appears twice (rows {first} and {})", row + 1));
        }
    }
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let (mut fields, mut columns) = (tags::key_fields(), key_columns(&refs, current));
    for (field, array) in batch.schema().fields().iter().zip(batch.columns()) {
        if field.name() == "image_id" {
            continue;
        }
        let name = slicetest_datasets::validate_column(field.name())?;
        let t = tag_type(field)?;
        columns.push(cast(array, &t).map_err(|e| format!("column {:?}: {e}", field.name()))?);
        fields.push(Field::new(name, t, true));
    }
    if fields.len() == 2 {
        return Err("the file has only image_id; add the columns to import".into());
    }
    let tags = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| e.to_string())?;
    Ok(TagFile { provenance: placeholder(tagger), tags, detections: None })
}

/// A per-object file: the boxes, and `num_<label>` for every image of the dataset (0 where
/// the file has no box of that label: detectors list only what they found).
fn detections_file(
    batch: &RecordBatch,
    ids: &[String],
    current: &CurrentImages,
    tagger: &str,
) -> std::result::Result<TagFile, String> {
    let column =
        |name: &str| batch.column_by_name(name).ok_or_else(|| format!("a detections file needs a {name} column"));
    let label = column("label")?;
    if !matches!(label.data_type(), DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) {
        return Err(format!("column \"label\" must be text, got {}", label.data_type()));
    }
    let labels = cast(label, &DataType::Utf8).map_err(|e| e.to_string())?;
    let labels = labels.as_string::<i32>();
    let number = |name: &str| -> std::result::Result<ArrayRef, String> {
        let a = column(name)?;
        if !(a.data_type().is_numeric()) {
            return Err(format!("column {name:?} must be a number, got {}", a.data_type()));
        }
        cast(a, &DataType::Float32).map_err(|e| e.to_string())
    };
    let corners = [number("x0")?, number("y0")?, number("x1")?, number("y1")?];
    let score = match batch.column_by_name("score") {
        Some(_) => number("score")?,
        None => Arc::new(datafusion::arrow::array::Float32Array::new_null(batch.num_rows())),
    };
    let mut counts: BTreeMap<String, HashMap<&str, i32>> = BTreeMap::new();
    for (row, id) in ids.iter().enumerate() {
        let at = |what: String| format!("row {}: {what}", row + 1);
        if labels.is_null(row) || labels.value(row).trim().is_empty() {
            return Err(at("label is empty".into()));
        }
        let c: Vec<Option<f32>> = corners
            .iter()
            .map(|a| {
                let a = a.as_primitive::<Float32Type>();
                (!a.is_null(row)).then(|| a.value(row))
            })
            .collect();
        let [Some(x0), Some(y0), Some(x1), Some(y1)] = c[..] else {
            return Err(at("a box corner is empty".into()));
        };
        if ![x0, y0, x1, y1].iter().all(|v| v.is_finite()) || x1 < x0 || y1 < y0 {
            return Err(at(format!("box ({x0}, {y0}, {x1}, {y1}) is not x0 ≤ x1, y0 ≤ y1 with finite corners")));
        }
        let name = format!("num_{}", slicetest_datasets::identifier(labels.value(row)));
        slicetest_datasets::validate_column(&name).map_err(at)?;
        *counts.entry(name).or_default().entry(id.as_str()).or_default() += 1;
    }
    // Per-image counts over every image of the dataset, sorted by id.
    let all: Vec<&str> = current.order.iter().map(String::as_str).collect();
    let (mut fields, mut columns) = (tags::key_fields(), key_columns(&all, current));
    for (name, per_image) in &counts {
        columns.push(Arc::new(Int32Array::from_iter_values(all.iter().map(|id| *per_image.get(id).unwrap_or(&0)))));
        fields.push(Field::new(name, DataType::Int32, true));
    }
    let tags = RecordBatch::try_new(Arc::new(Schema::new(fields)), columns).map_err(|e| e.to_string())?;
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut box_columns = key_columns(&refs, current);
    box_columns.push(Arc::new(StringArray::from_iter_values((0..labels.len()).map(|i| labels.value(i).trim()))));
    box_columns.push(score);
    box_columns.extend(corners);
    let boxes = RecordBatch::try_new(tags::detections_schema(), box_columns).map_err(|e| e.to_string())?;
    Ok(TagFile { provenance: placeholder(tagger), tags, detections: Some(boxes) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn labels_become_identifiers() {
        assert_eq!(slicetest_datasets::identifier(" Traffic light "), "traffic_light");
        assert_eq!(slicetest_datasets::identifier("person"), "person");
        assert_eq!(slicetest_datasets::identifier("hot-dog!"), "hot_dog");
    }

    #[test]
    fn tag_types_are_numbers_booleans_or_strings() {
        assert_eq!(tag_type(&Field::new("a", DataType::Int8, true)).unwrap(), DataType::Int64);
        assert_eq!(tag_type(&Field::new("a", DataType::Utf8View, true)).unwrap(), DataType::Utf8);
        let list = DataType::List(Arc::new(Field::new_list_field(DataType::Int32, true)));
        let err = tag_type(&Field::new("boxes", list, true)).unwrap_err();
        assert!(err.contains("\"boxes\" has type"), "{err}");
        assert!(
            slicetest_datasets::validate_column("NumPeople").unwrap() == "numpeople"
                && slicetest_datasets::validate_column("1x").is_err()
        );
    }
}
