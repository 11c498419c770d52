//! Detection runs: uploaded boxes checked against the dataset's images and ground-truth
//! categories, stored as `runs/<run>/detections-<key>.parquet` in the upload's order (the order
//! COCO evaluation breaks score ties by).
//!
//! Two inputs are understood:
//! - a COCO results file (`.json`, a list of `{"image_id", "category_id", "bbox": [x, y,
//!   w, h], "score"}`), where `image_id` is the COCO id (`coco_id` of `images`) or the
//!   dataset's own `image_id` string;
//! - a table (CSV, Parquet, JSON lines, Arrow) with `image_id`, `category` (a name) or
//!   `category_id`, `x`, `y`, `w`, `h` and `score`.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, SchemaRef};
use serde::Deserialize;

use crate::error::{DatasetError, Result};
use crate::objects::Category;

/// File name of a detection run's boxes.
pub const DETECTIONS_FILE: &str = "detections.parquet";

/// At most this many problems are listed in a rejection.
const MAX_PROBLEMS: usize = 20;

/// The schema of `detections.parquet` and of the SQL table `predicted_objects`.
pub fn detections_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        Field::new("run", DataType::Utf8, false),
        Field::new("image_id", DataType::Utf8, false),
        Field::new("category", DataType::Utf8, false),
        Field::new("category_id", DataType::Int64, false),
        Field::new("x", DataType::Float64, false),
        Field::new("y", DataType::Float64, false),
        Field::new("w", DataType::Float64, false),
        Field::new("h", DataType::Float64, false),
        Field::new("score", DataType::Float64, false),
    ]))
}

/// Whether a table holds detections (box columns) rather than classification predictions.
pub fn is_detection_table(batch: &RecordBatch) -> bool {
    ["x", "y", "w", "h"].iter().all(|c| batch.column_by_name(c).is_some())
}

/// An image as the upload names it.
pub(crate) enum ImageRef {
    Coco(i64),
    Id(String),
}

/// A category as the upload names it.
pub(crate) enum CategoryRef {
    Id(i64),
    Name(String),
}

pub(crate) struct Row {
    image: Option<ImageRef>,
    category: Option<CategoryRef>,
    bbox: [Option<f64>; 4],
    score: Option<f64>,
}

#[derive(Deserialize)]
struct CocoResult {
    image_id: serde_json::Value,
    category_id: serde_json::Value,
    bbox: Vec<f64>,
    score: Option<f64>,
}

/// Reads a COCO results file (a table of detections goes through [`table_rows`]).
pub(crate) fn read_coco_results(path: &Path) -> Result<Vec<Row>> {
    let text = std::fs::read(path).map_err(DatasetError::io("reading", path))?;
    let bad = |message: String| DatasetError::BadInput { source_path: path.to_path_buf(), message };
    let results: Vec<CocoResult> = serde_json::from_slice(&text)
        .map_err(|e| bad(format!("not a COCO results file (a list of image_id, category_id, bbox, score): {e}")))?;
    let mut rows = Vec::with_capacity(results.len());
    for (n, r) in results.into_iter().enumerate() {
        let &[x, y, w, h] = r.bbox.as_slice() else {
            return Err(bad(format!(
                "detection #{n}: \"bbox\" must be [x, y, width, height], got {} numbers",
                r.bbox.len()
            )));
        };
        let image = match r.image_id {
            serde_json::Value::Number(v) => v.as_i64().map(ImageRef::Coco),
            serde_json::Value::String(s) => Some(ImageRef::Id(s)),
            _ => None,
        };
        let category = match r.category_id {
            serde_json::Value::Number(v) => v.as_i64().map(CategoryRef::Id),
            serde_json::Value::String(s) => Some(CategoryRef::Name(s)),
            _ => None,
        };
        rows.push(Row { image, category, bbox: [Some(x), Some(y), Some(w), Some(h)], score: r.score });
    }
    Ok(rows)
}

/// Reads an already loaded table (CSV/Parquet/JSONL/Arrow) of detections.
pub(crate) fn table_rows(table: &RecordBatch) -> std::result::Result<Vec<Row>, String> {
    let names: Vec<String> = table.schema().fields().iter().map(|f| f.name().clone()).collect();
    let missing: Vec<&str> =
        ["image_id", "x", "y", "w", "h", "score"].into_iter().filter(|c| !names.iter().any(|n| n == c)).collect();
    if !missing.is_empty() || !(names.iter().any(|n| n == "category") || names.iter().any(|n| n == "category_id")) {
        return Err(format!(
            "a detections table needs image_id, category (or category_id), x, y, w, h and score; \
             missing {}; the columns are: {}",
            if missing.is_empty() { "category".to_string() } else { missing.join(", ") },
            names.join(", ")
        ));
    }
    let float = |name: &str| -> std::result::Result<Float64Array, String> {
        let column = table.column_by_name(name).expect("checked");
        cast(column, &DataType::Float64)
            .map(|c| c.as_primitive::<Float64Type>().clone())
            .map_err(|_| format!("column {name:?} must be numeric"))
    };
    let (x, y, w, h, score) = (float("x")?, float("y")?, float("w")?, float("h")?, float("score")?);
    let image_column = table.column_by_name("image_id").expect("checked");
    let image_ints = image_column.data_type().is_integer();
    let images = cast(image_column, &DataType::Utf8).map_err(|e| format!("column \"image_id\": {e}"))?;
    let images = images.as_string::<i32>();
    let category_names = table.column_by_name("category").map(|c| cast(c, &DataType::Utf8)).transpose();
    let category_names = category_names.map_err(|e| format!("column \"category\": {e}"))?;
    let category_ids = match table.column_by_name("category_id") {
        Some(c) if category_names.is_none() => Some(
            cast(c, &DataType::Int64)
                .map(|c| c.as_primitive::<Int64Type>().clone())
                .map_err(|_| "column \"category_id\" must hold integers".to_string())?,
        ),
        _ => None,
    };
    let value = |a: &Float64Array, i: usize| a.is_valid(i).then(|| a.value(i));
    Ok((0..table.num_rows())
        .map(|i| Row {
            image: images.is_valid(i).then(|| {
                let v = images.value(i);
                match v.parse::<i64>() {
                    Ok(n) if image_ints => ImageRef::Coco(n),
                    _ => ImageRef::Id(v.to_string()),
                }
            }),
            category: match (&category_names, &category_ids) {
                (Some(names), _) => {
                    let names = names.as_string::<i32>();
                    names.is_valid(i).then(|| CategoryRef::Name(names.value(i).to_string()))
                }
                (None, Some(ids)) => ids.is_valid(i).then(|| CategoryRef::Id(ids.value(i))),
                (None, None) => None,
            },
            bbox: [value(&x, i), value(&y, i), value(&w, i), value(&h, i)],
            score: value(&score, i),
        })
        .collect())
}

/// Checked detections, ready to store.
pub(crate) struct CheckedDetections {
    /// Rows in upload order (see [`detections_schema`]).
    pub batch: RecordBatch,
    /// Images of the dataset with no detection at all.
    pub images_without_detections: u64,
}

/// Every problem with the uploaded rows, located by position (`detection #n`, from 0 as
/// in a COCO results list; `row n`, from 1 as in a table file).
pub(crate) fn validate(
    run: &str,
    rows: &[Row],
    coco_results: bool,
    image_ids: &[String],
    coco_ids: Option<&[Option<i64>]>,
    categories: &[Category],
) -> std::result::Result<CheckedDetections, Vec<String>> {
    if rows.is_empty() {
        return Err(vec!["the file holds no detections".into()]);
    }
    let by_id: HashMap<&str, usize> = image_ids.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
    let by_coco: HashMap<i64, usize> =
        coco_ids.map(|ids| ids.iter().enumerate().filter_map(|(i, c)| c.map(|c| (c, i))).collect()).unwrap_or_default();
    let category_by_id: HashMap<i64, &Category> = categories.iter().map(|c| (c.id, c)).collect();
    let category_by_name: HashMap<&str, &Category> = categories.iter().map(|c| (c.name.as_str(), c)).collect();
    let category_list = || categories.iter().map(|c| format!("{} {:?}", c.id, c.name)).collect::<Vec<_>>().join(", ");
    let mut problems = Vec::new();
    let mut images = Vec::with_capacity(rows.len());
    let mut cats: Vec<&Category> = Vec::with_capacity(rows.len());
    let mut covered = vec![false; image_ids.len()];
    for (n, row) in rows.iter().enumerate() {
        let at = if coco_results { format!("detection #{n}") } else { format!("row {}", n + 1) };
        let image = match &row.image {
            None => {
                problems.push(format!("{at}: image_id is empty"));
                None
            }
            Some(ImageRef::Coco(id)) => match by_coco.get(id).or_else(|| by_id.get(id.to_string().as_str())) {
                Some(&i) => Some(i),
                None => {
                    let hint = if coco_ids.is_none() { " (the dataset has no coco_id column)" } else { "" };
                    problems.push(format!("{at}: image_id {id} is not an image of the dataset{hint}"));
                    None
                }
            },
            Some(ImageRef::Id(id)) => match by_id.get(id.as_str()) {
                Some(&i) => Some(i),
                None => {
                    problems.push(format!("{at}: image_id {id:?} is not an image of the dataset"));
                    None
                }
            },
        };
        let category = match &row.category {
            None => {
                problems.push(format!("{at}: category is empty"));
                None
            }
            Some(CategoryRef::Id(id)) => category_by_id.get(id).copied().or_else(|| {
                problems.push(format!("{at}: category id {id} is not a category of the dataset ({})", category_list()));
                None
            }),
            Some(CategoryRef::Name(name)) => category_by_name.get(name.as_str()).copied().or_else(|| {
                problems
                    .push(format!("{at}: category {name:?} is not a category of the dataset ({})", category_list()));
                None
            }),
        };
        match row.bbox {
            [Some(x), Some(y), Some(w), Some(h)] if [x, y, w, h].iter().all(|v| v.is_finite()) => {
                if w < 0.0 || h < 0.0 {
                    problems.push(format!("{at}: box [{x}, {y}, {w}, {h}] has a negative width or height"));
                }
            }
            bbox => problems.push(format!("{at}: box {bbox:?} must be four finite numbers")),
        }
        match row.score {
            Some(s) if (0.0..=1.0).contains(&s) => {}
            Some(s) => problems.push(format!("{at}: score {s} is not a number in [0, 1]")),
            None => problems.push(format!("{at}: score is empty")),
        }
        if let (Some(i), Some(c)) = (image, category) {
            covered[i] = true;
            images.push(i);
            cats.push(c);
        }
        if problems.len() >= MAX_PROBLEMS {
            problems.push(format!("… (stopped after {MAX_PROBLEMS} problems)"));
            return Err(problems);
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let float = |k: usize| -> ArrayRef { Arc::new(rows.iter().map(|r| r.bbox[k]).collect::<Float64Array>()) };
    let columns: Vec<ArrayRef> = vec![
        Arc::new(StringArray::from(vec![run; rows.len()])),
        Arc::new(images.iter().map(|&i| Some(image_ids[i].as_str())).collect::<StringArray>()),
        Arc::new(cats.iter().map(|c| Some(c.name.as_str())).collect::<StringArray>()),
        Arc::new(cats.iter().map(|c| c.id).collect::<Int64Array>()),
        float(0),
        float(1),
        float(2),
        float(3),
        Arc::new(rows.iter().map(|r| r.score).collect::<Float64Array>()),
    ];
    let batch = RecordBatch::try_new(detections_schema(), columns).map_err(|e| vec![e.to_string()])?;
    Ok(CheckedDetections { batch, images_without_detections: covered.iter().filter(|c| !**c).count() as u64 })
}
