//! A box manifest: ground-truth boxes for the images of a folder or manifest import, one
//! row per object (CSV, Parquet, JSON lines or Arrow), passed as `ingest --boxes FILE`.
//!
//! Columns: `image_id` (the dataset's image id: the path relative to the import root) or
//! a path column (`path`, `file_name`, `file`), `category` (a name), `x`, `y`, `w`, `h`
//! (COCO's top-left corner, width and height, in pixels); optional `category_id`,
//! `object_id` (or `id`), `area`, `iscrowd`. Without `category_id`, categories are
//! numbered 1, 2, … in name order. Any other column (`occluded`, `truncated`, `source`, …)
//! is kept as a column of `objects` with its type (see [`crate::objects`]).

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Float64Type, Int64Type};

use super::CandidateSet;
use crate::error::{DatasetError, Result};
use crate::objects::{Category, ImportedObject, ImportedObjects};
use crate::table_file::read_table;

const IMAGE_COLUMNS: [&str; 4] = ["image_id", "path", "file_name", "file"];

/// Columns the manifest's own meaning uses; every other column is an extra field.
const KNOWN_COLUMNS: [&str; 14] = [
    "image_id",
    "path",
    "file_name",
    "file",
    "category",
    "category_id",
    "x",
    "y",
    "w",
    "h",
    "area",
    "iscrowd",
    "object_id",
    "id",
];

/// Reads the box manifest at `path` for the images of `set`. Every row must name an image
/// of the import and a category; all problems are reported together.
pub(super) async fn gather(path: &Path, set: &CandidateSet) -> Result<ImportedObjects> {
    let table = read_table(path, "box manifest").await?;
    objects(&table, set).map_err(|problems| DatasetError::BadInput {
        source_path: path.to_path_buf(),
        message: format!("box manifest rejected, nothing was ingested:\n  - {}", problems.join("\n  - ")),
    })
}

fn objects(table: &RecordBatch, set: &CandidateSet) -> std::result::Result<ImportedObjects, Vec<String>> {
    let schema = table.schema();
    let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
    let Some(image_column) = IMAGE_COLUMNS.iter().find(|c| names.contains(c)) else {
        return Err(vec![format!(
            "no image column: give image_id (or path / file_name / file); the columns are: {}",
            names.join(", ")
        )]);
    };
    let missing: Vec<&str> = ["category", "x", "y", "w", "h"].into_iter().filter(|c| !names.contains(c)).collect();
    if !missing.is_empty() {
        return Err(vec![format!("missing column(s) {}; the columns are: {}", missing.join(", "), names.join(", "))]);
    }
    let strings = |name: &str| -> std::result::Result<Vec<Option<String>>, Vec<String>> {
        let column = cast(table.column_by_name(name).expect("checked"), &DataType::Utf8)
            .map_err(|e| vec![format!("column {name:?}: {e}")])?;
        let column = column.as_string::<i32>();
        Ok((0..column.len()).map(|i| column.is_valid(i).then(|| column.value(i).to_string())).collect())
    };
    let floats = |name: &str| -> std::result::Result<Option<Vec<Option<f64>>>, Vec<String>> {
        let Some(column) = table.column_by_name(name) else { return Ok(None) };
        let column = cast(column, &DataType::Float64).map_err(|_| vec![format!("column {name:?} must be numeric")])?;
        let column = column.as_primitive::<Float64Type>();
        Ok(Some((0..column.len()).map(|i| column.is_valid(i).then(|| column.value(i))).collect()))
    };
    let ints = |name: &str| -> std::result::Result<Option<Vec<Option<i64>>>, Vec<String>> {
        let Some(column) = table.column_by_name(name) else { return Ok(None) };
        let column = cast(column, &DataType::Int64).map_err(|_| vec![format!("column {name:?} must hold integers")])?;
        let column = column.as_primitive::<Int64Type>();
        Ok(Some((0..column.len()).map(|i| column.is_valid(i).then(|| column.value(i))).collect()))
    };
    let images = strings(image_column)?;
    let categories = strings("category")?;
    let [x, y, w, h] = ["x", "y", "w", "h"].map(&floats);
    let (x, y, w, h) = (x?.expect("checked"), y?.expect("checked"), w?.expect("checked"), h?.expect("checked"));
    let area = floats("area")?;
    let category_ids = ints("category_id")?;
    let object_ids = match ints("object_id")? {
        Some(ids) => Some(ids),
        None => ints("id")?,
    };
    let iscrowd = match table.column_by_name("iscrowd") {
        Some(c) => Some(
            cast(c, &DataType::Boolean)
                .map_err(|_| vec!["column \"iscrowd\" must be 0/1 or true/false".to_string()])?,
        ),
        None => None,
    };

    let extra = extra_fields(table)?;

    // An image is named by its id or by the file path the import read it from.
    let mut known: HashMap<String, &str> = HashMap::new();
    for c in &set.candidates {
        known.insert(c.image_id.clone(), &c.image_id);
        known.insert(c.file.to_string_lossy().into_owned(), &c.image_id);
    }
    // Category ids: given, or 1, 2, … in name order.
    let mut category_of: BTreeMap<String, i64> = BTreeMap::new();
    let mut problems = Vec::new();
    for (row, name) in categories.iter().enumerate() {
        let Some(name) = name else { continue };
        let id = category_ids.as_ref().and_then(|ids| ids[row]);
        match (category_of.get(name), id) {
            (Some(&existing), Some(id)) if existing != id => {
                problems.push(format!("row {}: category {name:?} has id {id} here and {existing} above", row + 1))
            }
            (None, Some(id)) => {
                category_of.insert(name.clone(), id);
            }
            _ => {}
        }
    }
    if category_ids.is_none() {
        let mut sorted: Vec<String> = categories.iter().flatten().cloned().collect();
        sorted.sort();
        sorted.dedup();
        category_of = sorted.into_iter().enumerate().map(|(i, name)| (name, i as i64 + 1)).collect();
    }
    let mut objects = Vec::with_capacity(table.num_rows());
    for row in 0..table.num_rows() {
        let at = format!("row {}", row + 1);
        let image = images[row].as_deref().and_then(|i| known.get(i)).copied();
        let Some(image_id) = image else {
            let name = images[row].as_deref().unwrap_or("(empty)");
            problems.push(format!("{at}: image {name:?} is not among the images of this import"));
            continue;
        };
        let Some(category_id) = categories[row].as_ref().and_then(|c| category_of.get(c)).copied() else {
            problems.push(format!("{at}: category is empty (or has no category_id)"));
            continue;
        };
        let (Some(bx), Some(by), Some(bw), Some(bh)) = (x[row], y[row], w[row], h[row]) else {
            problems.push(format!("{at}: x, y, w and h are all needed"));
            continue;
        };
        objects.push(ImportedObject {
            image_id: image_id.to_string(),
            object_id: object_ids.as_ref().and_then(|ids| ids[row]).unwrap_or(row as i64 + 1),
            numbered: object_ids.as_ref().and_then(|ids| ids[row]).is_none(),
            category_id,
            bbox: [bx, by, bw, bh],
            area: area.as_ref().and_then(|a| a[row]),
            iscrowd: iscrowd.as_ref().is_some_and(|c| c.as_boolean().is_valid(row) && c.as_boolean().value(row)),
            extra: extra.iter().filter_map(|(name, values)| Some((name.clone(), values[row].clone()?))).collect(),
            position: at,
        });
        if problems.len() >= 20 {
            break;
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let mut seen = HashMap::new();
    for (n, o) in objects.iter().enumerate() {
        if let Some(first) = seen.insert(o.object_id, n) {
            return Err(vec![format!(
                "{}: object id {} is also {}'s",
                o.position, o.object_id, objects[first].position
            )]);
        }
    }
    Ok(ImportedObjects {
        objects,
        categories: category_of.into_iter().map(|(name, id)| Category { id, name }).collect(),
        images: set.candidates.iter().map(|c| c.image_id.clone()).collect(),
    })
}

/// The manifest's other columns, by name, as plain values per row (None where null).
type ExtraFields = Vec<(String, Vec<Option<serde_json::Value>>)>;

fn extra_fields(table: &RecordBatch) -> std::result::Result<ExtraFields, Vec<String>> {
    use serde_json::Value;
    let mut out = Vec::new();
    for (field, column) in table.schema().fields().iter().zip(table.columns()) {
        let name = field.name();
        if KNOWN_COLUMNS.contains(&name.as_str()) || name == "segmentation" {
            continue;
        }
        let fail = |e: datafusion::arrow::error::ArrowError| vec![format!("column {name:?}: {e}")];
        let valid = |i: usize| column.is_valid(i);
        let values: Vec<Option<Value>> = match field.data_type() {
            DataType::Boolean => {
                let c = column.as_boolean();
                (0..c.len()).map(|i| valid(i).then(|| Value::Bool(c.value(i)))).collect()
            }
            t if t.is_integer() => {
                let c = cast(column, &DataType::Int64).map_err(fail)?;
                let c = c.as_primitive::<Int64Type>();
                (0..c.len()).map(|i| valid(i).then(|| Value::from(c.value(i)))).collect()
            }
            t if t.is_floating() => {
                let c = cast(column, &DataType::Float64).map_err(fail)?;
                let c = c.as_primitive::<Float64Type>();
                (0..c.len()).map(|i| valid(i).then(|| Value::from(c.value(i)))).collect()
            }
            _ => {
                let c = cast(column, &DataType::Utf8).map_err(fail)?;
                let c = c.as_string::<i32>();
                (0..c.len()).map(|i| valid(i).then(|| Value::String(c.value(i).to_string()))).collect()
            }
        };
        out.push((name.clone(), values));
    }
    Ok(out)
}
