//! A box manifest: ground-truth boxes for the images of a folder or manifest import, one
//! row per object (CSV, Parquet, JSON lines or Arrow), passed as `ingest --boxes FILE`.
//!
//! Columns: `image_id` (the dataset's image id: the path relative to the import root) or
//! a path column (`path`, `file_name`, `file`), `category` (a name), `x`, `y`, `w`, `h`
//! (COCO's top-left corner, width and height, in pixels); optional `category_id`,
//! `object_id` (or `id`), `area`, `iscrowd`. Without `category_id`, categories are
//! numbered 1, 2, … in name order. Any other column (`occluded`, `truncated`, `source`, …)
//! is kept as a column of `objects` with its type (see [`crate::objects`]).
//!
//! A category list (`ingest --categories FILE`) names every category, also those without
//! a box among these images (a detector's classes that the data lacks): a text file with
//! one name per line, or a table with `category` (or `name`) and optionally `category_id`
//! (or `id`). With it, a box's category must be on the list.

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

/// A category of a category list: its name and the id it gives it, if any.
type DeclaredCategory = (String, Option<i64>);

/// Reads the box manifest at `path` for the images of `set`, with the category list at
/// `categories` if one is given. Every row must name an image of the import and a
/// category (one on the list); all problems are reported together.
pub(super) async fn gather(path: &Path, categories: Option<&Path>, set: &CandidateSet) -> Result<ImportedObjects> {
    let declared = match categories {
        Some(list) => Some(read_categories(list).await?),
        None => None,
    };
    let table = read_table(path, "box manifest").await?;
    objects(&table, declared.as_deref(), set).map_err(|problems| DatasetError::BadInput {
        source_path: path.to_path_buf(),
        message: format!("box manifest rejected, nothing was ingested:\n  - {}", problems.join("\n  - ")),
    })
}

/// The category list at `path`: a `.txt` file of one name per line (blank lines skipped),
/// or a table with `category` or `name`, and optionally `category_id` or `id` for every
/// name. Names and ids must not repeat.
async fn read_categories(path: &Path) -> Result<Vec<DeclaredCategory>> {
    let bad = |message: String| DatasetError::BadInput {
        source_path: path.to_path_buf(),
        message: format!("category list rejected, nothing was ingested: {message}"),
    };
    let is_text = path.extension().is_some_and(|e| e.eq_ignore_ascii_case("txt"));
    let declared: Vec<DeclaredCategory> = if is_text {
        let text = std::fs::read_to_string(path).map_err(|e| bad(format!("cannot read it as UTF-8 text ({e})")))?;
        text.lines().map(str::trim).filter(|l| !l.is_empty()).map(|l| (l.to_string(), None)).collect()
    } else {
        let table = read_table(path, "category list").await?;
        let schema = table.schema();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        let column = |options: [&'static str; 2]| options.into_iter().find(|c| names.contains(c));
        let Some(name_column) = column(["category", "name"]) else {
            return Err(bad(format!("no category (or name) column; the columns are: {}", names.join(", "))));
        };
        let text = cast(table.column_by_name(name_column).expect("found"), &DataType::Utf8)
            .map_err(|e| bad(format!("column {name_column:?}: {e}")))?;
        let text = text.as_string::<i32>();
        let ids = match column(["category_id", "id"]) {
            Some(id_column) => {
                let ids = cast(table.column_by_name(id_column).expect("found"), &DataType::Int64)
                    .map_err(|_| bad(format!("column {id_column:?} must hold integers")))?;
                Some(ids.as_primitive::<Int64Type>().clone())
            }
            None => None,
        };
        let mut declared = Vec::with_capacity(table.num_rows());
        for row in 0..table.num_rows() {
            if text.is_null(row) || text.value(row).trim().is_empty() {
                return Err(bad(format!("row {}: the category name is empty", row + 1)));
            }
            let id = match &ids {
                Some(ids) if ids.is_null(row) => return Err(bad(format!("row {}: the id is empty", row + 1))),
                Some(ids) => Some(ids.value(row)),
                None => None,
            };
            declared.push((text.value(row).trim().to_string(), id));
        }
        declared
    };
    if declared.is_empty() {
        return Err(bad("it names no category".to_string()));
    }
    let mut names = HashMap::new();
    let mut ids = HashMap::new();
    for (line, (name, id)) in declared.iter().enumerate() {
        if let Some(first) = names.insert(name.as_str(), line) {
            return Err(bad(format!("{name:?} is listed twice (entries {} and {})", first + 1, line + 1)));
        }
        if let Some(id) = id
            && let Some(first) = ids.insert(*id, line)
        {
            return Err(bad(format!("id {id} is given twice (entries {} and {})", first + 1, line + 1)));
        }
    }
    Ok(declared)
}

fn objects(
    table: &RecordBatch,
    declared: Option<&[DeclaredCategory]>,
    set: &CandidateSet,
) -> std::result::Result<ImportedObjects, Vec<String>> {
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
    let declared_ids = declared.is_some_and(|d| d.iter().any(|(_, id)| id.is_some()));
    if let Some(declared) = declared {
        // The list is the dataset's categories: a box's category must be on it, with the
        // list's id when both give one.
        let listed: HashMap<&str, Option<i64>> = declared.iter().map(|(n, id)| (n.as_str(), *id)).collect();
        for (row, name) in categories.iter().enumerate() {
            let Some(name) = name else { continue };
            match listed.get(name.as_str()) {
                None => problems.push(format!("row {}: category {name:?} is not on the category list", row + 1)),
                Some(Some(id)) => match category_ids.as_ref().and_then(|ids| ids[row]) {
                    Some(given) if given != *id => problems.push(format!(
                        "row {}: category {name:?} has category_id {given} here and id {id} on the category list",
                        row + 1
                    )),
                    _ => {}
                },
                Some(None) => {}
            }
            if problems.len() >= 20 {
                return Err(problems);
            }
        }
        if category_ids.is_some() && !declared_ids {
            problems.push(
                "the box manifest gives category_id but the category list gives no ids: add an id column to the \
                 list, or drop category_id from the manifest"
                    .to_string(),
            );
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        category_of = match declared_ids {
            true => declared.iter().map(|(n, id)| (n.clone(), id.expect("every id, checked"))).collect(),
            false => numbered_in_name_order(declared.iter().map(|(n, _)| n)),
        };
    } else if category_ids.is_none() {
        category_of = numbered_in_name_order(categories.iter().flatten());
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
        numbered_categories: category_ids.is_none() && !declared_ids,
        normalized: false,
    })
}

/// Category ids given by slicetest: 1, 2, … in name order.
fn numbered_in_name_order<'a>(names: impl Iterator<Item = &'a String>) -> BTreeMap<String, i64> {
    let names: std::collections::BTreeSet<&String> = names.collect();
    names.into_iter().enumerate().map(|(i, name)| (name.clone(), i as i64 + 1)).collect()
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
