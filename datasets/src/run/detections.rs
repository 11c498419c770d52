//! Detection runs: uploaded boxes checked against the dataset's images and ground-truth
//! categories, stored as `runs/<run>/detections-<key>.parquet` in the upload's order (the order
//! COCO evaluation breaks score ties by).
//!
//! Two inputs are understood:
//! - COCO results (`.json`, a list of `{"image_id", "category_id", "bbox": [x, y, w, h],
//!   "score"}`, or `.jsonl`, one such record a line), where `image_id` is the COCO id
//!   (`coco_id` of `images`) or the dataset's own `image_id` string; ids may be whole
//!   floats (`1.0`), as pycocotools accepts;
//! - a table (CSV, Parquet, JSON lines, Arrow) with `image_id`, `category` (a name) or
//!   `category_id`, `x`, `y`, `w`, `h` (or one `bbox` column of `[x, y, w, h]`) and
//!   `score`. A table with any box column (see [`box_columns`]) is taken for detections
//!   and must have all of these.
//!
//! A detection may carry its instance mask, as Mask R-CNN-style results do: COCO's
//! `"segmentation"` (an RLE `{"size": [h, w], "counts": …}` of the whole image, or
//! polygons), or a table's `segmentation` column holding that JSON. Either every
//! detection has one or none does; an RLE must have its image's size. The mask is stored
//! as its compact JSON in the column `segmentation` and scored as mask AP.

use std::collections::HashMap;
use std::sync::Arc;

use datafusion::arrow::array::{Array, ArrayRef, AsArray, Float64Array, Int64Array, RecordBatch, StringArray};
use datafusion::arrow::compute::cast;
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Int32Type, Schema, SchemaRef};
use serde::Deserialize;
use serde_json::Value;
use slicetest_eval::keypoints::keypoint_extent;

use super::{Cell, Numbers, number_cells, whole_f64, whole_number};
use crate::coco_mask::Segmentation;
use crate::import::yolo::{centre_box, polygon_box, polygons_in_pixels};
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
        Field::new(SEGMENTATION_COLUMN, DataType::Utf8, true),
        Field::new(KEYPOINTS_COLUMN, DataType::Utf8, true),
    ]))
}

/// The column of a detection's pose (COCO's `keypoints`, `[x1, y1, s1, …]` with each
/// keypoint's confidence, as compact JSON), null for a detection without one. Files of
/// runs uploaded before keypoints were scored lack it.
pub const KEYPOINTS_COLUMN: &str = "keypoints";

/// A detection's `keypoints`: a flat list of finite (x, y, confidence) triples, at least
/// one.
fn keypoints_of(value: &Value) -> std::result::Result<Vec<f64>, String> {
    let shown = || {
        let text = value.to_string();
        if text.len() > 60 { format!("{}…", &text[..text.floor_char_boundary(60)]) } else { text }
    };
    let points: Vec<f64> = serde_json::from_value(value.clone())
        .map_err(|_| format!("\"keypoints\" must be a list of numbers [x1, y1, score1, …], got {}", shown()))?;
    if points.is_empty() || !points.len().is_multiple_of(3) {
        return Err(format!(
            "\"keypoints\" must be (x, y, score) triples, got {} numbers (a list of [x, y] pairs is not COCO's \
             layout: flatten it with a score or visibility after each point)",
            points.len()
        ));
    }
    if points.iter().any(|v| !v.is_finite()) {
        return Err(format!("\"keypoints\" must be finite numbers, got {}", shown()));
    }
    Ok(points)
}

/// The column of a detection's instance mask (COCO's `segmentation` as compact JSON),
/// null when the run has no masks. Files of runs uploaded before masks lack it.
pub const SEGMENTATION_COLUMN: &str = "segmentation";

/// A detection's `segmentation`, read as one COCO understands: its compact JSON (what is
/// stored) and the mask it describes (decoded on its image by [`validate`]).
fn segmentation_text(value: Value) -> std::result::Result<(String, Segmentation), String> {
    let text = value.to_string();
    // pandas' to_csv writes a dict column as Python's repr, not JSON.
    let python_repr = value.as_str().is_some_and(|s| s.starts_with("{'") || s.starts_with("[{'"));
    match serde_json::from_value::<Segmentation>(value) {
        Ok(segmentation) => Ok((text, segmentation)),
        Err(_) => Err(format!(
            "\"segmentation\" must be an RLE {{\"size\": [height, width], \"counts\": …}} or a list of polygons, got {}{}",
            if text.len() > 60 { format!("{}…", &text[..text.floor_char_boundary(60)]) } else { text },
            if python_repr { " (Python's repr of a dict, not JSON: write each mask with json.dumps)" } else { "" }
        )),
    }
}

/// Columns only a table of boxes has. A table with any of them is taken for detections,
/// and must then have every column detections need: box columns are never silently
/// ignored in a classification upload. (`width` and `height` are not among them: a
/// classification file may carry the image's size.)
const BOX_COLUMNS: &[&str] = &[
    "category",
    "category_id",
    "bbox",
    "x",
    "y",
    "w",
    "h",
    "x1",
    "y1",
    "x2",
    "y2",
    "xmin",
    "ymin",
    "xmax",
    "ymax",
    KEYPOINTS_COLUMN,
];

/// Corner columns, which a detections table does not read (boxes are x, y, w, h).
const CORNER_COLUMNS: &[&str] = &["x1", "y1", "x2", "y2", "xmin", "ymin", "xmax", "ymax"];

/// The table's columns that belong to detections (see [`BOX_COLUMNS`]; compared without
/// case), in table order; empty for classification predictions.
pub fn box_columns(batch: &RecordBatch) -> Vec<String> {
    let schema = batch.schema();
    let names = schema.fields().iter().map(|f| f.name());
    names.filter(|n| BOX_COLUMNS.contains(&n.to_ascii_lowercase().as_str())).cloned().collect()
}

/// Whether a table holds detections (box columns) rather than classification predictions.
pub fn is_detection_table(batch: &RecordBatch) -> bool {
    !box_columns(batch).is_empty()
}

/// Whether a `.json` upload is a COCO results list: a list with a record that has a
/// `bbox` or `keypoints` ([`Probe`]). A list without one is classification records (or segmentation masks, which
/// [`super::mask_results::is_mask_results`] finds first).
pub(crate) fn has_boxes(bytes: &[u8]) -> std::result::Result<bool, String> {
    let list: Vec<Probe> = serde_json::from_slice(bytes).map_err(|e| {
        format!(
            "a .json file of predictions is a list of records: COCO results ({{\"image_id\", \"category_id\", \"bbox\", \
             \"score\"}}) or classification records ({{\"image_id\", \"predicted\", …}}): {e}"
        )
    })?;
    if list.is_empty() {
        return Err("the file holds no predictions: the list is empty".into());
    }
    Ok(list.iter().any(Probe::is_detection))
}

/// What tells a COCO result from a classification record: a `bbox`, or a pose's
/// `keypoints` (loadRes boxes a pose without a box by its keypoints).
#[derive(Deserialize)]
struct Probe {
    bbox: Option<serde::de::IgnoredAny>,
    keypoints: Option<serde::de::IgnoredAny>,
}

impl Probe {
    fn is_detection(&self) -> bool {
        self.bbox.is_some() || self.keypoints.is_some()
    }
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
    /// A YOLO class index `k`: category id `k + 1`, as Ultralytics numbers classes (a YOLO
    /// import, and Ultralytics' conversion of a COCO file to labels), or, on a dataset
    /// whose categories carry COCO's 80 ids (COCO's own JSON, a YOLO import of
    /// `coco.yaml`), COCO's id of class `k`.
    Class(i64),
}

pub(crate) struct Row {
    image: Option<ImageRef>,
    category: Option<CategoryRef>,
    bbox: [Option<f64>; 4],
    score: Option<f64>,
    /// The instance mask: its compact JSON and what it reads as (see [`segmentation_text`]).
    segmentation: Option<(String, Segmentation)>,
    /// The box is the mask's, found when the mask is decoded on its image (an instance
    /// mask given without a box, `instances`).
    box_from_mask: bool,
    /// The box is the pose's keypoints' extent (a pose given without a box).
    box_from_keypoints: bool,
    /// The box and polygon are fractions of the image's width and height (YOLO labels),
    /// turned into pixels where the image is known.
    normalized: bool,
    /// A pose model's keypoints (`[x1, y1, score1, …]`), scored by OKS against the ground
    /// truth's.
    keypoints: Option<Vec<f64>>,
}

impl Row {
    /// Whether the upload gave this detection's box (not found from its mask or pose).
    pub(crate) fn box_given(&self) -> bool {
        !self.box_from_mask && !self.box_from_keypoints
    }

    /// A normalized row's box and polygon in pixels of its `[width, height]` image.
    fn in_pixels(&mut self, [width, height]: [u32; 2]) {
        let (w, h) = (f64::from(width), f64::from(height));
        let scale = [w, h, w, h];
        self.bbox = [0, 1, 2, 3].map(|k| self.bbox[k].map(|v| v * scale[k]));
        if let Some((json, Segmentation::Polygons(polygons))) = &mut self.segmentation {
            polygons_in_pixels(polygons, width, height);
            *json = serde_json::to_string(polygons).expect("numbers serialise");
        }
        self.normalized = false;
    }
}

/// The folder of YOLO label files (`.txt`, as Ultralytics'
/// `predict(save_txt=True, save_conf=True)` writes them) that `dir` is, or that its
/// `labels` folder is (`runs/detect/predict` holds the drawn images and `labels/`); `None`
/// for a segmentation run's PNG masks.
pub fn yolo_labels_dir(dir: &std::path::Path) -> Option<std::path::PathBuf> {
    let holds_labels = |dir: &std::path::Path| {
        let Ok(entries) = std::fs::read_dir(dir) else { return false };
        let names: Vec<String> = entries.flatten().map(|e| e.file_name().to_string_lossy().to_lowercase()).collect();
        names.iter().any(|n| n.ends_with(".txt")) && !names.iter().any(|n| n.ends_with(".png"))
    };
    [dir.to_path_buf(), dir.join("labels")].into_iter().find(|d| holds_labels(d))
}

/// The `.txt` files of a folder of YOLO labels, by name.
pub(crate) fn yolo_label_files(dir: &std::path::Path) -> std::io::Result<Vec<std::path::PathBuf>> {
    let mut files: Vec<std::path::PathBuf> = std::fs::read_dir(dir)?
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.is_file() && p.extension().is_some_and(|e| e.eq_ignore_ascii_case("txt")))
        .collect();
    files.sort();
    Ok(files)
}

/// The detections of a folder of YOLO prediction files: `<image stem>.txt`, a line per
/// detection, `class cx cy w h conf` (a box by its centre) or `class x1 y1 … conf` (a
/// segment's polygon, which is also its mask), as fractions of the image's size. The class
/// index `k` is category id `k + 1`, or COCO's id of class `k` on COCO ([`CategoryRef::Class`]).
pub(crate) fn yolo_rows(dir: &std::path::Path) -> std::result::Result<(Vec<Row>, Positions), Vec<String>> {
    let files = yolo_label_files(dir).map_err(|e| vec![format!("cannot list {}: {e}", dir.display())])?;
    let mut rows = Vec::new();
    let mut places = Vec::new();
    let mut problems = Vec::new();
    for file in &files {
        let name = file.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let stem = file.file_stem().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
        let text = std::fs::read_to_string(file).map_err(|e| vec![format!("cannot read {name}: {e}")])?;
        for (n, line) in text.lines().enumerate() {
            let at = format!("{name} line {}", n + 1);
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let numbers: std::result::Result<Vec<f64>, _> = line.split_whitespace().map(str::parse::<f64>).collect();
            let numbers = match numbers {
                Ok(numbers) if numbers.iter().all(|v| v.is_finite()) => numbers,
                _ => {
                    problems.push(format!("{at}: {line:?} is not numbers (class cx cy w h conf)"));
                    continue;
                }
            };
            let (class, values) = (numbers[0], &numbers[1..]);
            let category = whole_f64(class).filter(|k| *k >= 0).map(CategoryRef::Class);
            if category.is_none() {
                problems.push(format!("{at}: class {class} is not a class index (0, 1, …)"));
                continue;
            }
            let (bbox, segmentation) = match values.len() {
                5 => (centre_box([values[0], values[1], values[2], values[3]]), None),
                n if n >= 7 && n % 2 == 1 => {
                    let polygons = vec![values[..n - 1].to_vec()];
                    let json = serde_json::to_string(&polygons).expect("numbers serialise");
                    (polygon_box(&polygons[0]), Some((json, Segmentation::Polygons(polygons))))
                }
                n => {
                    let hint = if n == 4 {
                        "no confidence at the end: predict with save_conf=True (mAP ranks detections by it)"
                    } else if n >= 6 && n % 2 == 0 {
                        // A segment without its confidence, or a pose model's line (box,
                        // keypoints, confidence), which a count alone cannot tell apart.
                        "no confidence at the end: predict with save_conf=True (mAP ranks detections by it); \
                         a pose model's keypoint lines are not read: upload its predictions.json \
                         (val(save_json=True)), which carries the keypoints"
                    } else {
                        "a detection is class cx cy w h conf, or class x1 y1 x2 y2 … conf for a segment"
                    };
                    problems.push(format!("{at}: {n} numbers after the class; {hint}"));
                    continue;
                }
            };
            rows.push(Row {
                image: Some(ImageRef::Id(stem.clone())),
                category,
                bbox: bbox.map(Some),
                score: values.last().copied(),
                segmentation,
                box_from_mask: false,
                box_from_keypoints: false,
                normalized: true,
                keypoints: None,
            });
            places.push(at);
            if problems.len() >= MAX_PROBLEMS {
                break;
            }
        }
    }
    if files.is_empty() {
        problems.push(format!("{} holds no .txt label files", dir.display()));
    }
    if problems.is_empty() { Ok((rows, Positions::Named(places))) } else { Err(problems) }
}

/// One COCO result as written; each field is checked by [`coco_rows`].
#[derive(Deserialize)]
struct CocoResult {
    #[serde(default)]
    image_id: Value,
    #[serde(default)]
    category_id: Value,
    #[serde(default)]
    bbox: Option<Value>,
    #[serde(default)]
    score: Value,
    #[serde(default)]
    segmentation: Value,
    /// A pose model's keypoints (`[x1, y1, score1, …]`; null reads as none).
    #[serde(default)]
    keypoints: Option<Value>,
}

/// How the uploaded file's detections are named in a refusal: by the place a person finds
/// them at in the file they wrote.
pub(crate) enum Positions {
    /// `detection #n`, from 0: the index in a COCO results list.
    ListItems,
    /// `row n`, from 1: a table file's rows.
    TableRows,
    /// `line n`, from 1: the line of a JSON-lines file each detection was read from
    /// (blank lines are skipped, so the n-th detection is not always on line n).
    Lines(Vec<usize>),
    /// Each detection's own place (`0042.txt line 3` in a folder of YOLO label files).
    Named(Vec<String>),
}

impl Positions {
    /// Where the `n`-th detection (from 0) is.
    pub(crate) fn at(&self, n: usize) -> String {
        match self {
            Positions::ListItems => format!("detection #{n}"),
            Positions::TableRows => format!("row {}", n + 1),
            Positions::Lines(lines) => format!("line {}", lines[n]),
            Positions::Named(places) => places[n].clone(),
        }
    }
}

/// The rows of a COCO results list (a table of detections goes through [`table_rows`]).
/// Ids may be written as whole floats (`1.0`); anything else malformed is a problem
/// named by the detection's position (`detection #n`, from 0).
/// With `instances`, a result with a mask and no box gets its mask's box.
pub(crate) fn coco_rows(bytes: &[u8], instances: bool) -> std::result::Result<Vec<Row>, Vec<String>> {
    let results: Vec<CocoResult> = serde_json::from_slice(bytes)
        .map_err(|e| vec![format!("not a COCO results file (a list of image_id, category_id, bbox, score): {e}")])?;
    coco_result_rows(results, &Positions::ListItems, instances)
}

/// The non-blank lines of a JSON-lines file, with their line numbers (from 1).
fn json_lines(bytes: &[u8]) -> impl Iterator<Item = (usize, &[u8])> {
    let lines = bytes.split(|&b| b == b'\n').enumerate().map(|(i, line)| (i + 1, line));
    lines.filter(|(_, line)| !line.trim_ascii().is_empty())
}

/// Whether a JSON-lines upload holds COCO results: a line that is a record with a
/// `bbox` or `keypoints`. Other JSON lines are a table of classification predictions (or a file that is
/// not JSON lines, which the table reader names).
pub(crate) fn json_lines_have_boxes(bytes: &[u8]) -> bool {
    json_lines(bytes).any(|(_, line)| serde_json::from_slice::<Probe>(line).is_ok_and(|p| p.is_detection()))
}

/// The rows of COCO results written one record a line (`.jsonl`, as a detector writes
/// them while it runs), named by line.
pub(crate) fn coco_line_rows(bytes: &[u8], instances: bool) -> std::result::Result<(Vec<Row>, Positions), Vec<String>> {
    let mut results = Vec::new();
    let mut lines = Vec::new();
    let mut problems = Vec::new();
    for (number, line) in json_lines(bytes) {
        // serde reads a struct from a JSON array too; a line holds a record.
        let record = if line.trim_ascii_start().starts_with(b"{") {
            serde_json::from_slice::<CocoResult>(line).map_err(|e| e.to_string())
        } else {
            Err("the line is not a JSON object".to_string())
        };
        match record {
            Ok(result) => {
                results.push(result);
                lines.push(number);
            }
            Err(e) => problems.push(format!(
                "line {number}: not a COCO result {{\"image_id\", \"category_id\", \"bbox\", \"score\"}}: {e}"
            )),
        }
        if problems.len() >= MAX_PROBLEMS {
            problems.push(format!("… (stopped after {MAX_PROBLEMS} problems)"));
            break;
        }
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    let positions = Positions::Lines(lines);
    Ok((coco_result_rows(results, &positions, instances)?, positions))
}

/// Checks each field of parsed COCO results, naming a problem by `positions`.
fn coco_result_rows(
    results: Vec<CocoResult>,
    positions: &Positions,
    instances: bool,
) -> std::result::Result<Vec<Row>, Vec<String>> {
    let mut problems = Vec::new();
    let mut rows = Vec::with_capacity(results.len());
    for (n, r) in results.into_iter().enumerate() {
        let at = positions.at(n);
        let image = match r.image_id {
            Value::Null => None,
            Value::Number(v) => match whole_number(&v) {
                Some(id) => Some(ImageRef::Coco(id)),
                None => {
                    problems.push(format!("{at}: image_id {v} is not a whole number"));
                    None
                }
            },
            Value::String(s) => Some(ImageRef::Id(s)),
            other => {
                problems.push(format!("{at}: image_id {other} is not a number or text"));
                None
            }
        };
        let category = match r.category_id {
            Value::Null => None,
            Value::Number(v) => match whole_number(&v) {
                Some(id) => Some(CategoryRef::Id(id)),
                None => {
                    problems.push(format!("{at}: category_id {v} is not a whole number (category ids are integers)"));
                    None
                }
            },
            Value::String(s) => Some(CategoryRef::Name(s)),
            other => {
                problems.push(format!("{at}: category_id {other} is not a number or a category name"));
                None
            }
        };
        let no_box = matches!(r.bbox, None | Some(Value::Null));
        let box_from_mask = no_box && instances && !r.segmentation.is_null();
        // `"keypoints": null` reads as None.
        let keypoints =
            r.keypoints.as_ref().and_then(|k| keypoints_of(k).map_err(|e| problems.push(format!("{at}: {e}"))).ok());
        let bbox = match r.bbox {
            _ if box_from_mask => [None; 4],
            // A pose without a box is boxed by its keypoints' extent, as pycocotools' loadRes does.
            None | Some(Value::Null) if r.keypoints.is_some() => {
                keypoints.as_deref().and_then(keypoint_extent).map_or([None; 4], |b| b.map(Some))
            }
            None | Some(Value::Null) => {
                let hint = if r.segmentation.is_null() {
                    ""
                } else {
                    " (an instance mask without a box: pass --instances to give each its mask's box, as \
                     pycocotools' loadRes does)"
                };
                problems.push(format!("{at}: no \"bbox\" [x, y, width, height]{hint}"));
                [None; 4]
            }
            Some(value) => bbox_of(value).unwrap_or_else(|e| {
                problems.push(format!("{at}: {e}"));
                [None; 4]
            }),
        };
        let score = match r.score {
            Value::Null => None,
            Value::Number(v) => v.as_f64(),
            other => {
                problems.push(format!("{at}: score {other} is not a number"));
                None
            }
        };
        let segmentation = match r.segmentation {
            Value::Null => None,
            value => segmentation_text(value).map_err(|e| problems.push(format!("{at}: {e}"))).ok(),
        };
        let box_from_keypoints = no_box && !box_from_mask && r.keypoints.is_some();
        rows.push(Row {
            image,
            category,
            bbox,
            score,
            segmentation,
            box_from_mask,
            box_from_keypoints,
            normalized: false,
            keypoints,
        });
        if problems.len() >= MAX_PROBLEMS {
            problems.push(format!("… (stopped after {MAX_PROBLEMS} problems)"));
            break;
        }
    }
    if problems.is_empty() { Ok(rows) } else { Err(problems) }
}

/// A COCO `bbox`: four numbers (or nulls, refused later as an incomplete box).
fn bbox_of(value: Value) -> std::result::Result<[Option<f64>; 4], String> {
    match value {
        Value::Array(values) if values.len() == 4 && values.iter().all(|v| v.is_number() || v.is_null()) => {
            Ok([0, 1, 2, 3].map(|k| values[k].as_f64()))
        }
        Value::Array(values) if values.len() != 4 => {
            Err(format!("\"bbox\" must be [x, y, width, height], got {} numbers", values.len()))
        }
        other => Err(format!("\"bbox\" must be four numbers [x, y, width, height], got {other}")),
    }
}

/// Where a table's boxes are: four number columns, or one `bbox` column of `[x, y, w, h]`
/// lists (as `pd.DataFrame(coco_results)` saves them) or of that JSON as text (as CSV
/// holds it).
/// With no box columns at all, the boxes are the masks' (`instances`) or the keypoints'.
enum BoxCells {
    Columns(Box<[Numbers; 4]>),
    Lists(datafusion::arrow::array::ListArray),
    Texts(StringArray),
    Derived,
}

impl BoxCells {
    fn of(table: &RecordBatch, in_bbox: bool, derived: bool) -> std::result::Result<BoxCells, Vec<String>> {
        let number = |name: &str| -> std::result::Result<Numbers, Vec<String>> {
            Ok(number_cells(table, name).map_err(|e| vec![e])?.expect("checked by table_rows"))
        };
        if derived {
            return Ok(BoxCells::Derived);
        }
        if !in_bbox {
            return Ok(BoxCells::Columns(Box::new([number("x")?, number("y")?, number("w")?, number("h")?])));
        }
        let column = table.column_by_name("bbox").expect("checked by table_rows");
        let data_type = column.data_type();
        if matches!(data_type, DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View) {
            let texts = cast(column, &DataType::Utf8).map_err(|e| vec![format!("column \"bbox\": {e}")])?;
            return Ok(BoxCells::Texts(texts.as_string::<i32>().clone()));
        }
        let numbers = match data_type {
            DataType::List(f) | DataType::LargeList(f) | DataType::FixedSizeList(f, _)
                if f.data_type().is_numeric() =>
            {
                cast(column, &DataType::List(Arc::new(Field::new_list_field(DataType::Float64, true)))).ok()
            }
            _ => None,
        };
        let numbers = numbers.ok_or_else(|| {
            vec![format!("column \"bbox\" must hold lists of four numbers [x, y, width, height], not {data_type}")]
        })?;
        Ok(BoxCells::Lists(numbers.as_list::<i32>().clone()))
    }

    /// Row `i`'s box; a malformed one is a problem (the box is then empty).
    fn cell(&self, i: usize, at: &str, problems: &mut Vec<String>) -> [Option<f64>; 4] {
        let mut checked = |bbox: std::result::Result<[Option<f64>; 4], String>| {
            bbox.unwrap_or_else(|e| {
                problems.push(format!("{at}: {e}"));
                [None; 4]
            })
        };
        match self {
            BoxCells::Columns(columns) => [0, 1, 2, 3].map(|k| match columns[k].cell(i) {
                Cell::Text(t) => {
                    problems.push(format!("{at}: {} {t:?} is not a number", ["x", "y", "w", "h"][k]));
                    None
                }
                cell => cell.number(),
            }),
            BoxCells::Lists(lists) if lists.is_valid(i) => {
                let values = lists.value(i);
                let values = values.as_primitive::<Float64Type>();
                checked(if values.len() == 4 {
                    Ok([0, 1, 2, 3].map(|k| values.is_valid(k).then(|| values.value(k))))
                } else {
                    Err(format!("\"bbox\" must be [x, y, width, height], got {} numbers", values.len()))
                })
            }
            BoxCells::Texts(texts) if texts.is_valid(i) => checked(
                serde_json::from_str::<Value>(texts.value(i))
                    .map_err(|_| format!("\"bbox\" must be [x, y, width, height], got {:?}", texts.value(i)))
                    .and_then(bbox_of),
            ),
            BoxCells::Lists(_) | BoxCells::Texts(_) | BoxCells::Derived => [None; 4],
        }
    }
}

/// A table's column of COCO JSON values (`segmentation`, `keypoints`): JSON as text, or
/// Arrow values (a struct of `size` and `counts`, lists of polygons, a list of numbers, as
/// `pd.DataFrame(coco_results)` saves them), which are written back to JSON here.
fn json_cells(table: &RecordBatch, name: &str) -> std::result::Result<Option<Vec<Option<Value>>>, Vec<String>> {
    let Some(column) = table.column_by_name(name) else { return Ok(None) };
    let problem = |e: &dyn std::fmt::Display| vec![format!("column \"{name}\": {e}")];
    if let Ok(texts) = cast(column, &DataType::Utf8) {
        let texts = texts.as_string::<i32>();
        let values = (0..texts.len()).map(|i| {
            texts.is_valid(i).then(|| {
                let text = texts.value(i);
                // A string that is not JSON is refused by segmentation_text, naming it.
                serde_json::from_str(text).unwrap_or_else(|_| Value::String(text.to_string()))
            })
        });
        return Ok(Some(values.collect()));
    }
    let one_column = RecordBatch::try_from_iter([(name, column.clone())]).map_err(|e| problem(&e))?;
    let mut lines = Vec::new();
    let mut writer = datafusion::arrow::json::LineDelimitedWriter::new(&mut lines);
    writer.write(&one_column).map_err(|e| problem(&e))?;
    writer.finish().map_err(|e| problem(&e))?;
    drop(writer);
    let values = lines.split(|&b| b == b'\n').take(table.num_rows()).map(|line| {
        let mut record: serde_json::Map<String, Value> = serde_json::from_slice(line).unwrap_or_default();
        record.remove(name).filter(|v| !v.is_null())
    });
    Ok(Some(values.collect()))
}

/// Reads an already loaded table (CSV/Parquet/JSONL/Arrow) of detections: every column
/// detections need must be there (a table with corner columns is told how to make a
/// width and height of them), and every number must be one, named by row (from 1).
/// With `instances`, a table with masks and no box columns gets its masks' boxes.
pub(crate) fn table_rows(table: &RecordBatch, instances: bool) -> std::result::Result<Vec<Row>, Vec<String>> {
    let names: Vec<String> = table.schema().fields().iter().map(|f| f.name().clone()).collect();
    let has = |c: &str| names.iter().any(|n| n == c);
    let sizes: Vec<&str> = ["x", "y", "w", "h"].into_iter().filter(|c| has(c)).collect();
    if has("bbox") && !sizes.is_empty() {
        return Err(vec![format!(
            "the table gives boxes twice, as a bbox column and as column(s) {}: keep bbox ([x, y, width, height]) \
             or x, y, w, h",
            sizes.join(", ")
        )]);
    }
    let in_bbox = has("bbox");
    let from_masks = instances && !in_bbox && sizes.is_empty() && has(SEGMENTATION_COLUMN);
    let from_keypoints = !from_masks && !in_bbox && sizes.is_empty() && has(KEYPOINTS_COLUMN);
    let derived = from_masks || from_keypoints;
    let needed = [
        ("image_id", has("image_id")),
        ("category (or category_id)", has("category") || has("category_id")),
        ("x", has("x") || in_bbox || derived),
        ("y", has("y") || in_bbox || derived),
        ("w", has("w") || in_bbox || derived),
        ("h", has("h") || in_bbox || derived),
        ("score", has("score")),
    ];
    let missing: Vec<&str> = needed.iter().filter(|(_, there)| !there).map(|(c, _)| *c).collect();
    if !missing.is_empty() {
        let corners: Vec<&String> =
            names.iter().filter(|n| CORNER_COLUMNS.contains(&n.to_ascii_lowercase().as_str())).collect();
        let hint = if !corners.is_empty() && (missing.contains(&"w") || missing.contains(&"h")) {
            format!(
                " (columns {} are not read: a box is x, y (its top-left corner), w and h (its width and height); \
                 from corners, w = x2 - x1 and h = y2 - y1)",
                corners.iter().map(|c| c.as_str()).collect::<Vec<_>>().join(", ")
            )
        } else if box_columns(table).iter().all(|c| ["category", "category_id"].contains(&c.as_str())) {
            " (a table of classification predictions names its label in a predicted column, not category)".to_string()
        } else {
            String::new()
        };
        return Err(vec![format!(
            "these look like detections (columns {}), but a detections table needs image_id, category (or \
             category_id), x, y, w, h (or bbox) and score; missing {}{hint}; the columns are: {}",
            box_columns(table).join(", "),
            missing.join(", "),
            names.join(", ")
        )]);
    }
    let number = |name: &str| -> std::result::Result<Numbers, Vec<String>> {
        Ok(number_cells(table, name).map_err(|e| vec![e])?.expect("checked above"))
    };
    let boxes = BoxCells::of(table, in_bbox, derived)?;
    let mut keypoints = json_cells(table, KEYPOINTS_COLUMN)?;
    let score = number("score")?;
    let image_column = table.column_by_name("image_id").expect("checked");
    let image_ints = image_column.data_type().is_integer();
    let images = cast(image_column, &DataType::Utf8).map_err(|e| vec![format!("column \"image_id\": {e}")])?;
    let images = images.as_string::<i32>();
    let category_names = table.column_by_name("category").map(|c| cast(c, &DataType::Utf8)).transpose();
    let category_names = category_names.map_err(|e| vec![format!("column \"category\": {e}")])?;
    let category_ids = match category_names {
        None => Some(number("category_id")?),
        Some(_) => None,
    };
    let mut masks = json_cells(table, SEGMENTATION_COLUMN)?;
    let mut problems = Vec::new();
    let mut rows = Vec::with_capacity(table.num_rows());
    for i in 0..table.num_rows() {
        let at = format!("row {}", i + 1);
        let mut bbox = boxes.cell(i, &at, &mut problems);
        let pose = keypoints.as_mut().and_then(|k| k[i].take()).and_then(|value| {
            keypoints_of(&value).map_err(|e| problems.push(format!("{at}: column \"{KEYPOINTS_COLUMN}\": {e}"))).ok()
        });
        if from_keypoints && let Some(extent) = pose.as_deref().and_then(keypoint_extent) {
            bbox = extent.map(Some);
        }
        let score = match score.cell(i) {
            Cell::Text(t) => {
                problems.push(format!("{at}: score {t:?} is not a number"));
                None
            }
            cell => cell.number(),
        };
        let category = match (&category_names, &category_ids) {
            (Some(names), _) => {
                let names = names.as_string::<i32>();
                names.is_valid(i).then(|| CategoryRef::Name(names.value(i).to_string()))
            }
            (None, Some(ids)) => match ids.cell(i) {
                Cell::Empty => None,
                Cell::Number(v) => match whole_f64(v) {
                    Some(id) => Some(CategoryRef::Id(id)),
                    None => {
                        problems
                            .push(format!("{at}: category_id {v} is not a whole number (category ids are integers)"));
                        None
                    }
                },
                Cell::Text(t) => {
                    problems.push(format!("{at}: category_id {t:?} is not a number (names go in a category column)"));
                    None
                }
            },
            (None, None) => None,
        };
        rows.push(Row {
            image: images.is_valid(i).then(|| {
                let v = images.value(i);
                match v.parse::<i64>() {
                    Ok(n) if image_ints => ImageRef::Coco(n),
                    _ => ImageRef::Id(v.to_string()),
                }
            }),
            category,
            bbox,
            score,
            segmentation: masks.as_mut().and_then(|m| m[i].take()).and_then(|value| {
                segmentation_text(value)
                    .map_err(|e| problems.push(format!("{at}: column \"{SEGMENTATION_COLUMN}\": {e}")))
                    .ok()
            }),
            box_from_mask: from_masks,
            box_from_keypoints: from_keypoints,
            normalized: false,
            keypoints: pose,
        });
        if problems.len() >= MAX_PROBLEMS {
            problems.push(format!("… (stopped after {MAX_PROBLEMS} problems)"));
            break;
        }
    }
    if problems.is_empty() { Ok(rows) } else { Err(problems) }
}

/// Checked detections, ready to store.
pub(crate) struct CheckedDetections {
    /// Rows in upload order (see [`detections_schema`]).
    pub batch: RecordBatch,
    /// Images of the dataset with no detection at all.
    pub images_without_detections: u64,
}

/// Every problem with the uploaded rows, located by `positions`. A row whose box is its
/// mask's gets it here, where the mask is decoded on its image.
pub(crate) fn validate(
    run: &str,
    rows: &mut [Row],
    positions: &Positions,
    image_ids: &[String],
    coco_ids: Option<&[Option<i64>]>,
    image_sizes: &[[u32; 2]],
    categories: &[Category],
) -> std::result::Result<CheckedDetections, Vec<String>> {
    if rows.is_empty() {
        return Err(vec!["the file holds no detections".into()]);
    }
    let at = |n: usize| positions.at(n);
    // Masks are all or nothing: mask AP over some detections' masks would be no one's number.
    let with_mask = rows.iter().position(|r| r.segmentation.is_some());
    let without_mask = rows.iter().position(|r| r.segmentation.is_none());
    if let (Some(m), Some(n)) = (with_mask, without_mask) {
        return Err(vec![format!(
            "{} has a \"segmentation\" (an instance mask) but {} has none: give every detection its mask, or \
             none (boxes only)",
            at(m),
            at(n)
        )]);
    }
    let by_id: HashMap<&str, usize> = image_ids.iter().enumerate().map(|(i, id)| (id.as_str(), i)).collect();
    let by_coco: HashMap<i64, usize> =
        coco_ids.map(|ids| ids.iter().enumerate().filter_map(|(i, c)| c.map(|c| (c, i))).collect()).unwrap_or_default();
    let category_by_id: HashMap<i64, &Category> = categories.iter().map(|c| (c.id, c)).collect();
    let category_by_name: HashMap<&str, &Category> = categories.iter().map(|c| (c.name.as_str(), c)).collect();
    // A YOLO class is category id `k + 1`, as Ultralytics numbers classes (also when it
    // converts a COCO file to labels), except on a dataset numbered as COCO itself is.
    let mut ids: Vec<i64> = categories.iter().map(|c| c.id).collect();
    ids.sort_unstable();
    let coco_numbered = ids == crate::import::yolo::COCO80_TO_COCO91;
    let class_id = |k: i64| crate::import::yolo::class_category_id(usize::try_from(k).ok()?, coco_numbered);
    let category_list = || categories.iter().map(|c| format!("{} {:?}", c.id, c.name)).collect::<Vec<_>>().join(", ");
    let mut problems = Vec::new();
    let mut unknown_category = false;
    let mut images = Vec::with_capacity(rows.len());
    let mut cats: Vec<&Category> = Vec::with_capacity(rows.len());
    let mut covered = vec![false; image_ids.len()];
    // Ultralytics names an image by its file's stem ("000000000139", or 139 where the stem
    // is all digits): tried when the id is no image's own, and only where one image has it.
    let stems = std::cell::OnceCell::new();
    let by_stem = |key: &str| -> std::result::Result<usize, String> {
        match stems.get_or_init(|| image_stems(image_ids)).get(key).map(Vec::as_slice) {
            Some(&[i]) => Ok(i),
            Some(several) => Err(format!(
                " ({} images have the file name {key:?}, e.g. {:?} and {:?}: name it by its image_id)",
                several.len(),
                image_ids[several[0]],
                image_ids[several[1]]
            )),
            None => Err(String::new()),
        }
    };
    for (n, row) in rows.iter_mut().enumerate() {
        let at = at(n);
        let image = match &row.image {
            None => {
                problems.push(format!("{at}: image_id is empty"));
                None
            }
            Some(ImageRef::Coco(id)) => match by_coco.get(id).or_else(|| by_id.get(id.to_string().as_str())) {
                Some(&i) => Some(i),
                None => match by_stem(&id.to_string()) {
                    Ok(i) => Some(i),
                    Err(stem_hint) => {
                        let hint = if !stem_hint.is_empty() {
                            stem_hint.as_str()
                        } else if coco_ids.is_none() {
                            " (the dataset has no coco_id column)"
                        } else {
                            ""
                        };
                        problems.push(format!("{at}: image_id {id} is not an image of the dataset{hint}"));
                        None
                    }
                },
            },
            Some(ImageRef::Id(id)) => match by_id.get(id.as_str()).copied().ok_or(()).or_else(|_| by_stem(id)) {
                Ok(i) => Some(i),
                Err(stem_hint) => {
                    // A COCO id written as a string ("1007"): numbers are looked up as coco_id.
                    let as_coco = id.trim().parse::<i64>().ok().filter(|n| by_coco.contains_key(n));
                    let hint = as_coco.map_or(stem_hint, |n| {
                        format!(
                            " (the dataset has an image with coco_id {n}: write the id as a number, without quotes)"
                        )
                    });
                    problems.push(format!("{at}: image_id {id:?} is not an image of the dataset{hint}"));
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
                unknown_category = true;
                problems.push(format!("{at}: category id {id} is not a category of the dataset ({})", category_list()));
                None
            }),
            Some(CategoryRef::Class(k)) => class_id(*k).and_then(|id| category_by_id.get(&id)).copied().or_else(|| {
                let numbering = if coco_numbered { "COCO's id of class" } else { "class k is category id k + 1" };
                problems.push(format!(
                    "{at}: class {k} is not a class of the dataset ({numbering}; categories: {})",
                    category_list()
                ));
                None
            }),
            Some(CategoryRef::Name(name)) => category_by_name.get(name.as_str()).copied().or_else(|| {
                // Names are matched exactly; say so when only the case differs ("DOG", "dog").
                let hint = (categories.iter())
                    .find(|c| c.name.eq_ignore_ascii_case(name))
                    .map_or(String::new(), |c| format!("; did you mean {:?}? names are matched exactly", c.name));
                unknown_category |= hint.is_empty();
                problems.push(format!(
                    "{at}: category {name:?} is not a category of the dataset ({}){hint}",
                    category_list()
                ));
                None
            }),
        };
        if let (Some(i), true) = (image, row.normalized) {
            row.in_pixels(image_sizes[i]);
        }
        if let (Some(i), Some((_, segmentation))) = (image, &row.segmentation) {
            // Decoded once here, so that scoring never meets a mask it cannot read.
            let [width, height] = image_sizes[i];
            match segmentation.to_mask(height, width) {
                Ok(mask) if row.box_from_mask => row.bbox = mask.bbox().map(Some),
                Ok(_) => {}
                Err(e) => problems.push(format!("{at}: its mask on image {:?}: {e}", image_ids[i])),
            }
        }
        match row.bbox {
            [Some(x), Some(y), Some(w), Some(h)] if [x, y, w, h].iter().all(|v| v.is_finite()) => {
                if w < 0.0 || h < 0.0 {
                    problems.push(format!("{at}: box [{x}, {y}, {w}, {h}] has a negative width or height"));
                }
            }
            // A box from a mask that could not be read: the mask's problem says why.
            _ if row.box_from_mask => {}
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
    if unknown_category {
        // Usually a detector's class that the ground truth has no box of.
        problems.push(
            "a category with no ground-truth box joins the dataset's category list when the annotations \
             name it: a COCO file's categories, or `ingest --boxes FILE --categories LIST` for a box manifest"
                .to_string(),
        );
    }
    if !problems.is_empty() {
        return Err(problems);
    }
    check_poses(rows, &cats, positions)?;
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
        Arc::new(rows.iter().map(|r| r.segmentation.as_ref().map(|(json, _)| json.as_str())).collect::<StringArray>()),
        Arc::new(
            rows.iter()
                .map(|r| r.keypoints.as_ref().map(|k| serde_json::to_string(k).expect("numbers serialise")))
                .collect::<StringArray>(),
        ),
    ];
    let batch = RecordBatch::try_new(detections_schema(), columns).map_err(|e| vec![e.to_string()])?;
    Ok(CheckedDetections { batch, images_without_detections: covered.iter().filter(|c| !**c).count() as u64 })
}

/// Keypoints are per category all or nothing, of one count: OKS compares keypoint `k` of
/// a detection with keypoint `k` of an object, and keypoint AP over some of a category's
/// detections would be no one's number. `categories` is each row's.
fn check_poses(rows: &[Row], categories: &[&Category], positions: &Positions) -> std::result::Result<(), Vec<String>> {
    let mut first: HashMap<i64, (usize, Option<usize>)> = HashMap::new();
    let mut problems = Vec::new();
    let mut reported = std::collections::HashSet::new();
    for (n, (row, category)) in rows.iter().zip(categories).enumerate() {
        let count = row.keypoints.as_ref().map(|k| k.len() / 3);
        let &mut (m, expected) = first.entry(category.id).or_insert((n, count));
        if expected == count || !reported.insert(category.id) {
            continue;
        }
        let described = |count: Option<usize>| match count {
            None => "no keypoints".to_string(),
            Some(k) => format!("{k} keypoint{}", if k == 1 { "" } else { "s" }),
        };
        let remedy = if expected.is_none() || count.is_none() {
            format!("give every {:?} detection its keypoints, or none", category.name)
        } else {
            "a category's poses have one skeleton".to_string()
        };
        problems.push(format!(
            "{} has {} but {} of the same category ({:?}) has {}: {remedy}",
            positions.at(n),
            described(count),
            positions.at(m),
            category.name,
            described(expected)
        ));
    }
    if problems.is_empty() { Ok(()) } else { Err(problems) }
}

/// The images by file stem (`images/val/0042.jpg` → `0042`, and `42` for a stem of
/// digits), for ids written as Ultralytics writes them; a stem of several images lists
/// them all.
fn image_stems(image_ids: &[String]) -> HashMap<String, Vec<usize>> {
    let mut stems: HashMap<String, Vec<usize>> = HashMap::new();
    for (i, id) in image_ids.iter().enumerate() {
        let name = id.rsplit('/').next().unwrap_or(id);
        let stem = name.rsplit_once('.').map_or(name, |(stem, _)| stem);
        stems.entry(stem.to_string()).or_default().push(i);
        if name != id {
            stems.entry(name.to_string()).or_default().push(i);
        }
        if let Ok(number) = stem.parse::<i64>()
            && stem.bytes().all(|b| b.is_ascii_digit())
            && number.to_string() != stem
        {
            stems.entry(number.to_string()).or_default().push(i);
        }
    }
    stems
}

/// A warning when more than 1 box in 20 reaches past its image by more than 2% of the
/// image's size: what corners [x0, y0, x1, y1] read as [x, y, width, height] look like
/// (about half of such boxes reach past), which would otherwise only show as a mAP near
/// zero. Detectors clip their boxes to the image, or nearly. Only boxes the upload gave
/// (`given`, per row) count: a pose's keypoints, and so the box made of them, may lie
/// past the image.
pub(crate) fn boxes_past_their_images(boxes: &RecordBatch, images: &RecordBatch, given: &[bool]) -> Option<String> {
    let ids = images.column_by_name("image_id")?.as_string_opt::<i32>()?;
    let widths = images.column_by_name("width")?.as_primitive_opt::<Int32Type>()?;
    let heights = images.column_by_name("height")?.as_primitive_opt::<Int32Type>()?;
    let size: HashMap<&str, (f64, f64)> =
        (0..ids.len()).map(|i| (ids.value(i), (f64::from(widths.value(i)), f64::from(heights.value(i))))).collect();
    let column = |name: &str| boxes.column_by_name(name).and_then(|c| c.as_primitive_opt::<Float64Type>());
    let (image, x, y, w, h) = (
        boxes.column_by_name("image_id")?.as_string_opt::<i32>()?,
        column("x")?,
        column("y")?,
        column("w")?,
        column("h")?,
    );
    let past = |edge: f64, extent: f64| edge > extent + (0.02 * extent).max(1.0);
    let total = given.iter().filter(|&&g| g).count();
    let outside = (0..boxes.num_rows())
        .filter(|&i| given[i])
        .filter(|&i| {
            size.get(image.value(i)).is_some_and(|&(width, height)| {
                past(x.value(i) + w.value(i), width) || past(y.value(i) + h.value(i), height)
            })
        })
        .count();
    (outside > 0 && outside * 20 > total).then(|| {
        format!(
            "{outside} of {total} boxes reach past their image (x + width beyond the image's width, or y + height \
             beyond its height): if they are corners [x0, y0, x1, y1], give [x, y, width, height] instead (COCO \
             results), or name a table's columns x1, y1, x2, y2; they were scored as given"
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn corners_given_for_sizes_are_warned_of_and_clipped_boxes_are_not() {
        use datafusion::arrow::array::Int32Array;
        let images = RecordBatch::try_from_iter(vec![
            ("image_id", Arc::new(StringArray::from(vec!["a", "b"])) as ArrayRef),
            ("width", Arc::new(Int32Array::from(vec![100, 200])) as ArrayRef),
            ("height", Arc::new(Int32Array::from(vec![50, 100])) as ArrayRef),
        ])
        .unwrap();
        let boxes = |rows: &[(&str, [f64; 4])]| {
            let float = |k: usize| Arc::new(rows.iter().map(|r| r.1[k]).collect::<Float64Array>()) as ArrayRef;
            let n = rows.len();
            RecordBatch::try_new(
                detections_schema(),
                vec![
                    Arc::new(StringArray::from(vec!["run"; n])),
                    Arc::new(rows.iter().map(|r| Some(r.0)).collect::<StringArray>()),
                    Arc::new(StringArray::from(vec!["dog"; n])),
                    Arc::new(Int64Array::from(vec![1; n])),
                    float(0),
                    float(1),
                    float(2),
                    float(3),
                    Arc::new(Float64Array::from(vec![0.5; n])),
                    Arc::new(StringArray::from(vec![None::<&str>; n])),
                    Arc::new(StringArray::from(vec![None::<&str>; n])),
                ],
            )
            .unwrap()
        };
        // Boxes inside, on the edge, and 1.5 px past a 100 px edge (a detector's rounding).
        let fine =
            boxes(&[("a", [0.0, 0.0, 100.0, 50.0]), ("b", [150.0, 20.0, 50.0, 80.0]), ("a", [60.0, 10.0, 41.5, 20.0])]);
        assert_eq!(boxes_past_their_images(&fine, &images, &[true; 3]), None);
        // The same kind of boxes as corners: x1 = 90 read as a width from x0 = 60.
        let corners = boxes(&[
            ("a", [60.0, 10.0, 90.0, 40.0]),
            ("b", [20.0, 20.0, 60.0, 70.0]),
            ("b", [120.0, 10.0, 190.0, 90.0]),
        ]);
        let warning = boxes_past_their_images(&corners, &images, &[true; 3]).expect("warned");
        assert!(warning.starts_with("2 of 3 boxes reach past their image"), "{warning}");
        assert!(warning.contains("corners [x0, y0, x1, y1]"), "{warning}");
        // Boxes made of poses' keypoints (which may lie past the image) do not count.
        assert_eq!(boxes_past_their_images(&corners, &images, &[false, true, false]), None);
        // One stray box among many is not a pattern.
        let mut rows = vec![("b", [10.0, 10.0, 20.0, 20.0]); 40];
        rows.push(("a", [90.0, 0.0, 50.0, 10.0]));
        assert_eq!(boxes_past_their_images(&boxes(&rows), &images, &vec![true; rows.len()]), None);
    }

    fn category_ids(rows: &[Row]) -> Vec<Option<i64>> {
        rows.iter()
            .map(|r| match r.category {
                Some(CategoryRef::Id(id)) => Some(id),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn whole_float_ids_are_ids_as_pycocotools_reads_them() {
        let rows = coco_rows(
            br#"[{"image_id": 103.0, "category_id": 1.0, "bbox": [1, 2, 3, 4], "score": 0.5},
                 {"image_id": 104, "category_id": 2, "bbox": [1, 2, 3, 4], "score": 0.25}]"#,
            false,
        )
        .unwrap();
        assert_eq!(category_ids(&rows), [Some(1), Some(2)]);
        assert!(matches!(rows[0].image, Some(ImageRef::Coco(103))));

        let problems = coco_rows(
            br#"[{"image_id": 103, "category_id": 1.5, "bbox": [1, 2, 3, 4], "score": 0.5},
                 {"image_id": 103, "category_id": 1, "score": 0.5},
                 {"image_id": 103, "category_id": 1, "bbox": [1, 2, 3], "score": "high"}]"#,
            false,
        )
        .err()
        .unwrap();
        assert_eq!(
            problems,
            [
                "detection #0: category_id 1.5 is not a whole number (category ids are integers)",
                "detection #1: no \"bbox\" [x, y, width, height]",
                "detection #2: \"bbox\" must be [x, y, width, height], got 3 numbers",
                "detection #2: score \"high\" is not a number",
            ]
        );
    }

    #[test]
    fn instance_masks_are_checked_on_their_images_and_stored_as_json() {
        let categories = [Category { id: 1, name: "dog".into() }];
        let ids = ["a.png".to_string(), "b.png".to_string()];
        let sizes = [[4, 3], [2, 2]];
        let check = |json: &str| match coco_rows(json.as_bytes(), false) {
            Ok(mut rows) => {
                validate("r", &mut rows, &Positions::ListItems, &ids, None, &sizes, &categories).map(|c| c.batch)
            }
            Err(problems) => Err(problems),
        };
        // An RLE of a 4 × 3 image (12 pixels: 5 off, 4 on, 3 off) and a polygon.
        let batch = check(
            r#"[{"image_id": "a.png", "category_id": 1, "bbox": [1, 2, 1, 2], "score": 0.5,
                 "segmentation": {"size": [3, 4], "counts": [5, 4, 3]}},
                {"image_id": "b.png", "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.4,
                 "segmentation": [[0, 0, 1, 0, 1, 1]]}]"#,
        )
        .unwrap();
        let masks = batch.column_by_name(SEGMENTATION_COLUMN).unwrap().as_string::<i32>();
        assert_eq!(masks.value(0), r#"{"counts":[5,4,3],"size":[3,4]}"#);
        assert_eq!(masks.value(1), "[[0,0,1,0,1,1]]");
        // Boxes only: the column is there, null.
        let boxes = check(r#"[{"image_id": "a.png", "category_id": 1, "bbox": [1, 2, 1, 2], "score": 0.5}]"#).unwrap();
        assert_eq!(boxes.column_by_name(SEGMENTATION_COLUMN).unwrap().null_count(), 1);
        // Some with a mask, some without: refused whole.
        let mixed = check(
            r#"[{"image_id": "a.png", "category_id": 1, "bbox": [1, 2, 1, 2], "score": 0.5},
                {"image_id": "b.png", "category_id": 1, "bbox": [0, 0, 1, 1], "score": 0.4,
                 "segmentation": [[0, 0, 1, 0, 1, 1]]}]"#,
        );
        assert_eq!(
            mixed.unwrap_err(),
            ["detection #1 has a \"segmentation\" (an instance mask) but detection #0 has none: give every \
              detection its mask, or none (boxes only)"]
        );
        // An RLE of another size than its image's, one that does not add up, and no mask at all.
        let problems = check(
            r#"[{"image_id": "b.png", "category_id": 1, "bbox": [1, 2, 1, 2], "score": 0.5,
                 "segmentation": {"size": [3, 4], "counts": [5, 4, 3]}},
                {"image_id": "a.png", "category_id": 1, "bbox": [1, 2, 1, 2], "score": 0.5,
                 "segmentation": {"size": [3, 4], "counts": [5, 4]}},
                {"image_id": "a.png", "category_id": 1, "bbox": [1, 2, 1, 2], "score": 0.5,
                 "segmentation": "mask.png"}]"#,
        )
        .unwrap_err();
        assert_eq!(
            problems,
            ["detection #2: \"segmentation\" must be an RLE {\"size\": [height, width], \"counts\": …} or a list of \
              polygons, got \"mask.png\""]
        );
        let problems = check(
            r#"[{"image_id": "b.png", "category_id": 1, "bbox": [1, 2, 1, 2], "score": 0.5,
                 "segmentation": {"size": [3, 4], "counts": [5, 4, 3]}},
                {"image_id": "a.png", "category_id": 1, "bbox": [1, 2, 1, 2], "score": 0.5,
                 "segmentation": {"size": [3, 4], "counts": [5, 4]}}]"#,
        )
        .unwrap_err();
        assert_eq!(
            problems,
            [
                "detection #0: its mask on image \"b.png\": the RLE is 4×3 but the image is 2×2",
                "detection #1: its mask on image \"a.png\": the RLE counts cover 9 pixels but the mask is 4×3 (12 \
                 pixels)"
            ]
        );
        // A table's segmentation column holds the same JSON.
        let table = RecordBatch::try_from_iter([
            ("image_id", Arc::new(StringArray::from(vec!["a.png"])) as ArrayRef),
            ("category", Arc::new(StringArray::from(vec!["dog"])) as ArrayRef),
            ("x", Arc::new(Float64Array::from(vec![1.0])) as ArrayRef),
            ("y", Arc::new(Float64Array::from(vec![1.0])) as ArrayRef),
            ("w", Arc::new(Float64Array::from(vec![1.0])) as ArrayRef),
            ("h", Arc::new(Float64Array::from(vec![1.0])) as ArrayRef),
            ("score", Arc::new(Float64Array::from(vec![0.5])) as ArrayRef),
            ("segmentation", Arc::new(StringArray::from(vec![r#"{"size": [3, 4], "counts": "543"}"#])) as ArrayRef),
        ])
        .unwrap();
        let mut rows = table_rows(&table, false).unwrap();
        let batch = validate("r", &mut rows, &Positions::TableRows, &ids, None, &sizes, &categories).unwrap().batch;
        let masks = batch.column_by_name(SEGMENTATION_COLUMN).unwrap().as_string::<i32>();
        assert_eq!(masks.value(0), r#"{"counts":"543","size":[3,4]}"#);
    }

    #[test]
    fn instance_masks_without_boxes_get_their_masks_boxes_when_told_they_are_instances() {
        let categories = [Category { id: 1, name: "dog".into() }];
        let ids = ["a.png".to_string()];
        // A 4 × 3 image: pixels 5..9 column-major are column 1 row 2 and column 2 rows 0-2.
        let rle = r#"{"image_id": "a.png", "category_id": 1, "score": 0.5, "segmentation": {"size": [3, 4], "counts": [5, 4, 3]}}"#;
        let polygon =
            r#"{"image_id": "a.png", "category_id": 1, "score": 0.4, "segmentation": [[1, 0, 3, 0, 3, 2, 1, 2]]}"#;
        let list = format!("[{rle}, {polygon}]");
        // Not told: no box is a problem, with the way out.
        let problems = coco_rows(list.as_bytes(), false).err().unwrap();
        assert_eq!(problems.len(), 2);
        assert!(problems[0].starts_with("detection #0: no \"bbox\" [x, y, width, height] (an instance mask"));
        assert!(problems[0].ends_with("pass --instances to give each its mask's box, as pycocotools' loadRes does)"));
        // Told: the box is the mask's, as pycocotools' toBbox gives it (a run that wraps
        // into the next column spans every row), for an RLE and a polygon alike.
        let mut rows = coco_rows(list.as_bytes(), true).unwrap();
        let batch = validate("r", &mut rows, &Positions::ListItems, &ids, None, &[[4, 3]], &categories).unwrap().batch;
        let column = |name: &str| column_of(&batch, name);
        assert_eq!(
            [column("x"), column("y"), column("w"), column("h")],
            [[1.0, 1.0], [0.0, 0.0], [2.0, 2.0], [3.0, 2.0]]
        );
        // A given box is kept; a record without box or mask is still refused.
        let problems = coco_rows(
            br#"[{"image_id": "a.png", "category_id": 1, "score": 0.5, "bbox": [0, 0, 1, 1], "segmentation": [[1, 0, 3, 0, 3, 2]]},
                 {"image_id": "a.png", "category_id": 1, "score": 0.5}]"#,
            true,
        )
        .err()
        .unwrap();
        assert_eq!(problems, ["detection #1: no \"bbox\" [x, y, width, height]"]);
        let mut rows = coco_rows(
            br#"[{"image_id": "a.png", "category_id": 1, "score": 0.5, "bbox": [0, 0, 1, 1], "segmentation": [[1, 0, 3, 0, 3, 2]]}]"#,
            true,
        )
        .unwrap();
        let batch = validate("r", &mut rows, &Positions::ListItems, &ids, None, &[[4, 3]], &categories).unwrap().batch;
        assert_eq!(column_of(&batch, "w"), [1.0]);
        // A mask that does not fit its image: its problem, and no second one for the box.
        let too_tall = format!("[{}]", rle.replace("[3, 4]", "[4, 4]"));
        let mut rows = coco_rows(too_tall.as_bytes(), true).unwrap();
        let problems =
            validate("r", &mut rows, &Positions::ListItems, &ids, None, &[[4, 3]], &categories).err().unwrap();
        assert_eq!(problems, ["detection #0: its mask on image \"a.png\": the RLE is 4×4 but the image is 4×3"]);
    }

    fn column_of(batch: &RecordBatch, name: &str) -> Vec<f64> {
        batch.column_by_name(name).unwrap().as_primitive::<Float64Type>().values().to_vec()
    }

    #[test]
    fn yolo_prediction_files_are_detections_in_pixels_named_by_file_and_line() {
        // A pose line (box, 17 keypoints with visibility, conf): 56 numbers, refused with both readings.
        let pose = tempfile::tempdir().unwrap();
        std::fs::write(pose.path().join("p.txt"), format!("0 {}\n", vec!["0.5"; 56].join(" "))).unwrap();
        let problems = yolo_rows(pose.path()).err().unwrap();
        assert!(
            problems[0].starts_with("p.txt line 1: 56 numbers after the class; no confidence at the end"),
            "{problems:?}"
        );
        assert!(problems[0].contains("a pose model's keypoint lines are not read"), "{problems:?}");

        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("0042.txt"), "0 0.5 0.5 0.2 0.4 0.9\n1 0.5 0.5 0.5 0.5 0.3\n").unwrap();
        std::fs::write(dir.path().join("b.txt"), "\n").unwrap();
        std::fs::write(dir.path().join("notes.md"), "not read").unwrap();
        assert_eq!(yolo_labels_dir(dir.path()).as_deref(), Some(dir.path()));
        // Ultralytics' predict folder: the drawn images, and the labels below.
        let predict = tempfile::tempdir().unwrap();
        std::fs::create_dir(predict.path().join("labels")).unwrap();
        std::fs::write(predict.path().join("bus.jpg"), b"x").unwrap();
        std::fs::write(predict.path().join("labels/bus.txt"), "0 0.5 0.5 0.1 0.1 0.5\n").unwrap();
        assert_eq!(yolo_labels_dir(predict.path()), Some(predict.path().join("labels")));
        std::fs::write(predict.path().join("labels/mask.png"), b"x").unwrap();
        assert_eq!(yolo_labels_dir(predict.path()), None);
        let categories = [Category { id: 1, name: "cat".into() }, Category { id: 2, name: "dog".into() }];
        // The dataset's images, named by their paths: a file's stem finds its image.
        let ids = ["images/val/0042.jpg".to_string(), "images/val/b.jpg".to_string()];
        let (mut rows, positions) = yolo_rows(dir.path()).unwrap();
        let batch =
            validate("r", &mut rows, &positions, &ids, None, &[[100, 50], [10, 10]], &categories).unwrap().batch;
        let column = |name: &str| column_of(&batch, name);
        assert_eq!(column("x"), [40.0, 25.0]);
        assert_eq!(column("y"), [15.0, 12.5]);
        assert_eq!(column("w"), [20.0, 50.0]);
        assert_eq!(column("h"), [20.0, 25.0]);
        assert_eq!(column("score"), [0.9, 0.3]);
        let categories_of = batch.column_by_name("category").unwrap().as_string::<i32>();
        assert_eq!((categories_of.value(0), categories_of.value(1)), ("cat", "dog"));
        assert_eq!(batch.column_by_name(SEGMENTATION_COLUMN).unwrap().null_count(), 2);
        // A segment's polygon is its mask, in pixels, and its extent the box.
        std::fs::write(dir.path().join("0042.txt"), "1 0.25 0.5 0.75 0.5 0.5 1 0.3\n").unwrap();
        let (mut rows, positions) = yolo_rows(dir.path()).unwrap();
        let batch =
            validate("r", &mut rows, &positions, &ids, None, &[[100, 50], [10, 10]], &categories).unwrap().batch;
        let masks = batch.column_by_name(SEGMENTATION_COLUMN).unwrap().as_string::<i32>();
        assert_eq!(masks.value(0), "[[25.0,25.0,75.0,25.0,50.0,50.0]]");
        assert_eq!([0, 1, 2, 3].map(|k| column_of(&batch, ["x", "y", "w", "h"][k])[0]), [25.0, 25.0, 50.0, 25.0]);

        // Without confidences (save_conf=False), and a stem two images share.
        std::fs::write(dir.path().join("0042.txt"), "0 0.5 0.5 0.2 0.4\n").unwrap();
        assert_eq!(
            yolo_rows(dir.path()).err().unwrap(),
            ["0042.txt line 1: 4 numbers after the class; no confidence at the end: predict with save_conf=True \
              (mAP ranks detections by it)"]
        );
        std::fs::write(dir.path().join("0042.txt"), "0 0.5 0.5 0.2 0.4 0.9\n").unwrap();
        let twice = ["train/0042.jpg".to_string(), "val/0042.jpg".to_string()];
        let (mut rows, positions) = yolo_rows(dir.path()).unwrap();
        let problems = validate("r", &mut rows, &positions, &twice, None, &[[9, 9]; 2], &categories).err().unwrap();
        assert_eq!(
            problems,
            ["0042.txt line 1: image_id \"0042\" is not an image of the dataset (2 images have the file name \
              \"0042\", e.g. \"train/0042.jpg\" and \"val/0042.jpg\": name it by its image_id)"]
        );
    }

    #[test]
    fn poses_are_stored_and_a_pose_without_a_box_gets_its_keypoints_extent() {
        let categories = [Category { id: 1, name: "person".into() }, Category { id: 2, name: "dog".into() }];
        let ids = ["a.png".to_string()];
        let check = |rows: std::result::Result<Vec<Row>, Vec<String>>| {
            validate("r", &mut rows?, &Positions::ListItems, &ids, None, &[[64, 64]], &categories).map(|c| c.batch)
        };
        let batch = check(coco_rows(
            br#"[{"image_id": "a.png", "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5, "keypoints": [1, 2, 0.9, 3, 5, 0.1]},
                 {"image_id": "a.png", "category_id": 1, "score": 0.4, "keypoints": [4, 9, 0.5, 1, 12, 0.5]},
                 {"image_id": "a.png", "category_id": 2, "bbox": [1, 2, 3, 4], "score": 0.3, "keypoints": null}]"#,
            false,
        ))
        .unwrap();
        let poses = batch.column_by_name(KEYPOINTS_COLUMN).unwrap().as_string::<i32>();
        assert_eq!(poses.value(0), "[1.0,2.0,0.9,3.0,5.0,0.1]");
        assert!(poses.is_null(2), "a category without poses stores none");
        // loadRes' box of a pose without one: its keypoints' extent.
        let f = |name: &str| batch.column_by_name(name).unwrap().as_primitive::<Float64Type>().value(1);
        assert_eq!([f("x"), f("y"), f("w"), f("h")], [1.0, 9.0, 3.0, 3.0]);

        // A table (pd.DataFrame(results)): a list column, no box columns.
        let table = RecordBatch::try_from_iter([
            ("image_id", Arc::new(StringArray::from(vec!["a.png"])) as ArrayRef),
            ("category_id", Arc::new(Int64Array::from(vec![1]))),
            ("score", Arc::new(Float64Array::from(vec![0.5]))),
            (
                "keypoints",
                Arc::new(datafusion::arrow::array::ListArray::from_iter_primitive::<Float64Type, _, _>([Some([
                    Some(4.0),
                    Some(9.0),
                    Some(1.0),
                    Some(1.0),
                    Some(12.0),
                    Some(1.0),
                ])])),
            ),
        ])
        .unwrap();
        let batch = check(table_rows(&table, false)).unwrap();
        assert_eq!(
            batch.column_by_name(KEYPOINTS_COLUMN).unwrap().as_string::<i32>().value(0),
            "[4.0,9.0,1.0,1.0,12.0,1.0]"
        );
        assert_eq!(batch.column_by_name("w").unwrap().as_primitive::<Float64Type>().value(0), 3.0);

        // All or nothing per category, one skeleton, COCO's layout.
        let problems = check(coco_rows(
            br#"[{"image_id": "a.png", "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5, "keypoints": [1, 2, 1]},
                 {"image_id": "a.png", "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.4},
                 {"image_id": "a.png", "category_id": 2, "bbox": [1, 2, 3, 4], "score": 0.4, "keypoints": [1, 2, 1]},
                 {"image_id": "a.png", "category_id": 2, "bbox": [1, 2, 3, 4], "score": 0.4, "keypoints": [1, 2, 1, 3, 4, 1]}]"#,
            false,
        ))
        .unwrap_err();
        assert_eq!(
            problems,
            [
                "detection #1 has no keypoints but detection #0 of the same category (\"person\") has 1 keypoint: \
                 give every \"person\" detection its keypoints, or none",
                "detection #3 has 2 keypoints but detection #2 of the same category (\"dog\") has 1 keypoint: a \
                 category's poses have one skeleton",
            ]
        );
        let problems = coco_rows(
            br#"[{"image_id": "a.png", "category_id": 1, "score": 0.5, "keypoints": [[1, 2], [3, 4]]},
                 {"image_id": "a.png", "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5, "keypoints": [1, 2]}]"#,
            false,
        )
        .err()
        .unwrap();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("detection #0: \"keypoints\" must be a list of numbers"), "{problems:?}");
        assert!(problems[1].contains("got 2 numbers (a list of [x, y] pairs is not COCO's layout"), "{problems:?}");
    }

    #[test]
    fn a_yolo_class_is_id_k_plus_1_or_cocos_id_on_coco() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.txt"), "0 0.5 0.5 0.2 0.4 0.9\n11 0.5 0.5 0.2 0.4 0.8\n").unwrap();
        let ids = ["a.jpg".to_string()];
        let named = |categories: &[Category]| -> std::result::Result<Vec<String>, Vec<String>> {
            let (mut rows, positions) = yolo_rows(dir.path()).unwrap();
            let batch = validate("r", &mut rows, &positions, &ids, None, &[[10, 10]], categories)?.batch;
            let names = batch.column_by_name("category").unwrap().as_string::<i32>();
            Ok(names.iter().map(|n| n.unwrap().to_string()).collect())
        };
        // COCO's ids (its JSON, or a YOLO import of coco.yaml): class 11 is "c11", id 13.
        let coco: Vec<Category> = crate::import::yolo::COCO80_TO_COCO91
            .iter()
            .enumerate()
            .map(|(k, &id)| Category { id, name: format!("c{k}") })
            .collect();
        assert_eq!(named(&coco).unwrap(), ["c0", "c11"]);
        // Elsewhere class k is id k + 1, also where a COCO file's id 0 is a supercategory
        // without objects (Roboflow's COCO exports).
        let mut others: Vec<Category> = (0..=12).map(|id| Category { id, name: format!("id{id}") }).collect();
        assert_eq!(named(&others).unwrap(), ["id1", "id12"]);
        others.truncate(12);
        let problems = named(&others).unwrap_err();
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(
            problems[0].starts_with("a.txt line 2: class 11 is not a class of the dataset (class k is category id k + 1; categories: 0 \"id0\""),
            "{problems:?}"
        );
    }

    #[test]
    fn ultralytics_image_ids_are_file_stems_and_numbers() {
        let categories = [Category { id: 1, name: "cat".into() }];
        let ids = ["images/val/000000000139.jpg".to_string(), "images/val/bus.jpg".to_string()];
        let mut rows = coco_rows(
            br#"[{"image_id": 139, "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5},
                 {"image_id": "bus", "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5},
                 {"image_id": "bus.jpg", "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5}]"#,
            false,
        )
        .unwrap();
        let batch =
            validate("r", &mut rows, &Positions::ListItems, &ids, None, &[[9, 9]; 2], &categories).unwrap().batch;
        let images = batch.column_by_name("image_id").unwrap().as_string::<i32>();
        assert_eq!(images.iter().flatten().collect::<Vec<_>>(), [&ids[0], &ids[1], &ids[1]]);
    }

    #[test]
    fn coco_results_one_a_line_are_named_by_line() {
        let categories = [Category { id: 1, name: "dog".into() }];
        let ids = ["a.png".to_string()];
        let lines = b"{\"image_id\": \"a.png\", \"category_id\": 1, \"bbox\": [1, 2, 3, 4], \"score\": 0.5}\n\n\
                      {\"image_id\": \"a.png\", \"category_id\": 1, \"bbox\": [0, 0, 1, 1], \"score\": 0.25}\r\n";
        assert!(json_lines_have_boxes(lines));
        assert!(!json_lines_have_boxes(b"{\"image_id\": \"a.png\", \"predicted\": \"dog\"}\n"));
        let (mut rows, positions) = coco_line_rows(lines, false).unwrap();
        let batch = validate("r", &mut rows, &positions, &ids, None, &[[10, 10]], &categories).unwrap().batch;
        assert_eq!(batch.num_rows(), 2);
        assert_eq!(batch.column_by_name("score").unwrap().as_primitive::<Float64Type>().values(), &[0.5, 0.25]);
        // Problems name the line (a blank line was skipped, so the second detection is line 3).
        let (mut rows, positions) = coco_line_rows(
            b"{\"image_id\": \"a.png\", \"category_id\": 1, \"bbox\": [1, 2, 3, 4], \"score\": 0.5}\n\n\
              {\"image_id\": \"b.png\", \"category_id\": 1, \"bbox\": [0, 0, 1, 1], \"score\": 0.25}\n",
            false,
        )
        .unwrap();
        let problems = validate("r", &mut rows, &positions, &ids, None, &[[10, 10]], &categories).err().unwrap();
        assert_eq!(problems, ["line 3: image_id \"b.png\" is not an image of the dataset"]);
        let problems = coco_line_rows(b"{\"image_id\": 1, \"bbox\": [1, 2, 3]}\n", false).err().unwrap();
        assert_eq!(problems, ["line 1: \"bbox\" must be [x, y, width, height], got 3 numbers"]);
        let problems =
            coco_line_rows(b"{\"image_id\": 1, \"bbox\": [1, 2, 3, 4]}\n[1, 2]\n{\"bbox\": 1\n", false).err().unwrap();
        assert_eq!(problems.len(), 2, "{problems:?}");
        assert!(problems[0].starts_with("line 2: not a COCO result") && problems[0].ends_with("not a JSON object"));
        assert!(problems[1].starts_with("line 3: not a COCO result"), "{problems:?}");
    }

    #[test]
    fn a_table_of_coco_results_has_its_boxes_in_bbox_and_its_masks_as_values() {
        use datafusion::arrow::array::{ListBuilder, StructArray};
        let categories = [Category { id: 1, name: "dog".into() }];
        let ids = ["a.png".to_string(), "b.png".to_string()];
        let sizes = [[4, 3], [2, 2]];
        // What pyarrow makes of pd.DataFrame(coco_results): bbox a list column, an RLE a
        // struct of counts and size.
        let mut bbox = ListBuilder::new(datafusion::arrow::array::Float64Builder::new());
        for b in [[1.0, 2.0, 1.0, 1.0], [0.0, 0.0, 1.0, 1.0]] {
            bbox.values().append_slice(&b);
            bbox.append(true);
        }
        let mut size = ListBuilder::new(datafusion::arrow::array::Int64Builder::new());
        for _ in 0..2 {
            size.values().append_slice(&[3, 4]);
            size.append(true);
        }
        let masks = StructArray::from(vec![
            (
                Arc::new(Field::new("counts", DataType::Utf8, true)),
                Arc::new(StringArray::from(vec!["543", "444"])) as ArrayRef,
            ),
            (
                Arc::new(Field::new_list("size", Field::new_list_field(DataType::Int64, true), true)),
                Arc::new(size.finish()) as ArrayRef,
            ),
        ]);
        let table = |bbox: ArrayRef, masks: ArrayRef| {
            RecordBatch::try_from_iter([
                ("image_id", Arc::new(StringArray::from(vec!["a.png", "a.png"])) as ArrayRef),
                ("category_id", Arc::new(Int64Array::from(vec![1, 1])) as ArrayRef),
                ("bbox", bbox),
                ("score", Arc::new(Float64Array::from(vec![0.5, 0.4])) as ArrayRef),
                ("segmentation", masks),
            ])
            .unwrap()
        };
        let mut rows = table_rows(&table(Arc::new(bbox.finish()), Arc::new(masks)), false).unwrap();
        let batch = validate("r", &mut rows, &Positions::TableRows, &ids, None, &sizes, &categories).unwrap().batch;
        let column = |name: &str| batch.column_by_name(name).unwrap().as_primitive::<Float64Type>().values().to_vec();
        assert_eq!(
            (column("x"), column("y"), column("w"), column("h")),
            (vec![1.0, 0.0], vec![2.0, 0.0], vec![1.0; 2], vec![1.0; 2])
        );
        let masks = batch.column_by_name(SEGMENTATION_COLUMN).unwrap().as_string::<i32>();
        assert_eq!(masks.value(0), r#"{"counts":"543","size":[3,4]}"#);
        // As CSV holds them: JSON text; a box of three numbers and Python's repr are refused by row.
        let texts = |values: [&str; 2]| Arc::new(StringArray::from(values.to_vec())) as ArrayRef;
        let mut rows = table_rows(
            &table(
                texts(["[1, 2, 1, 1]", "[0, 0, 1, 1]"]),
                texts([r#"{"size": [3, 4], "counts": "543"}"#, "[[0, 0, 1, 0, 1, 1]]"]),
            ),
            false,
        )
        .unwrap();
        assert!(validate("r", &mut rows, &Positions::TableRows, &ids, None, &sizes, &categories).is_ok());
        let problems = table_rows(
            &table(
                texts(["[1, 2, 1]", "[0, 0, 1, 1]"]),
                texts([r#"{"size": [3, 4], "counts": "543"}"#, "{'size': [3, 4], 'counts': '543'}"]),
            ),
            false,
        )
        .err()
        .unwrap();
        assert_eq!(problems[0], "row 1: \"bbox\" must be [x, y, width, height], got 3 numbers");
        assert!(
            problems[1].starts_with("row 2: column \"segmentation\": \"segmentation\" must be an RLE"),
            "{problems:?}"
        );
        assert!(problems[1].ends_with("(Python's repr of a dict, not JSON: write each mask with json.dumps)"));
        // Boxes given twice are refused.
        let twice = table(texts(["[1, 2, 1, 1]", "[0, 0, 1, 1]"]), texts(["[[0, 0, 1, 0, 1, 1]]"; 2]));
        let twice = RecordBatch::try_from_iter(
            twice
                .schema()
                .fields()
                .iter()
                .map(|f| f.name().clone())
                .zip(twice.columns().iter().cloned())
                .chain([("w".to_string(), Arc::new(Float64Array::from(vec![1.0, 1.0])) as ArrayRef)]),
        )
        .unwrap();
        assert_eq!(
            table_rows(&twice, false).err().unwrap(),
            ["the table gives boxes twice, as a bbox column and as column(s) w: keep bbox ([x, y, width, height]) or \
              x, y, w, h"]
        );
    }

    #[test]
    fn a_coco_id_in_quotes_and_a_category_in_another_case_get_a_hint() {
        let mut rows = coco_rows(
            br#"[{"image_id": "1007", "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5},
                 {"image_id": "nope.png", "category_id": 1, "bbox": [1, 2, 3, 4], "score": 0.5}]"#,
            false,
        )
        .unwrap();
        let categories = [Category { id: 1, name: "dog".into() }];
        let ids = ["a.png".to_string()];
        let problems =
            validate("r", &mut rows, &Positions::ListItems, &ids, Some(&[Some(1007)]), &[[10, 10]], &categories)
                .err()
                .unwrap();
        assert_eq!(
            problems,
            [
                "detection #0: image_id \"1007\" is not an image of the dataset (the dataset has an image with \
                 coco_id 1007: write the id as a number, without quotes)",
                "detection #1: image_id \"nope.png\" is not an image of the dataset",
            ]
        );
        let table = RecordBatch::try_from_iter([
            ("image_id", Arc::new(StringArray::from(vec!["a.png"])) as ArrayRef),
            ("category", Arc::new(StringArray::from(vec!["DOG"])) as ArrayRef),
            ("x", Arc::new(Float64Array::from(vec![1.0])) as ArrayRef),
            ("y", Arc::new(Float64Array::from(vec![1.0])) as ArrayRef),
            ("w", Arc::new(Float64Array::from(vec![1.0])) as ArrayRef),
            ("h", Arc::new(Float64Array::from(vec![1.0])) as ArrayRef),
            ("score", Arc::new(Float64Array::from(vec![0.5])) as ArrayRef),
        ])
        .unwrap();
        let mut rows = table_rows(&table, false).unwrap();
        let problems =
            validate("r", &mut rows, &Positions::TableRows, &ids, None, &[[10, 10]], &categories).err().unwrap();
        assert_eq!(
            problems,
            ["row 1: category \"DOG\" is not a category of the dataset (1 \"dog\"); did you mean \"dog\"? names are \
              matched exactly"]
        );
    }

    #[test]
    fn a_json_list_is_detections_when_its_records_have_boxes() {
        assert!(has_boxes(br#"[{"image_id": 1, "category_id": 1, "bbox": [0, 0, 1, 1], "score": 1}]"#).unwrap());
        assert!(!has_boxes(br#"[{"image_id": "a", "predicted": "cat"}]"#).unwrap());
        assert_eq!(has_boxes(b"[]").unwrap_err(), "the file holds no predictions: the list is empty");
        assert!(has_boxes(b"{}").unwrap_err().starts_with("a .json file of predictions is a list of records"));
    }

    #[test]
    fn table_numbers_are_checked_by_row() {
        let table = RecordBatch::try_from_iter([
            ("image_id", Arc::new(StringArray::from(vec!["a", "b", "c"])) as ArrayRef),
            ("category_id", Arc::new(Float64Array::from(vec![1.0, 2.5, 3.0])) as ArrayRef),
            ("x", Arc::new(Float64Array::from(vec![1.0, 1.0, 1.0])) as ArrayRef),
            ("y", Arc::new(Float64Array::from(vec![1.0, 1.0, 1.0])) as ArrayRef),
            ("w", Arc::new(StringArray::from(vec!["1", "2", "wide"])) as ArrayRef),
            ("h", Arc::new(Float64Array::from(vec![1.0, 1.0, 1.0])) as ArrayRef),
            ("score", Arc::new(Float64Array::from(vec![0.5, 0.5, 0.5])) as ArrayRef),
        ])
        .unwrap();
        assert_eq!(
            table_rows(&table, false).err().unwrap(),
            [
                "row 2: category_id 2.5 is not a whole number (category ids are integers)",
                "row 3: w \"wide\" is not a number",
            ]
        );
        let only_category = RecordBatch::try_from_iter([
            ("image_id", Arc::new(StringArray::from(vec!["a"])) as ArrayRef),
            ("category", Arc::new(StringArray::from(vec!["cat"])) as ArrayRef),
        ])
        .unwrap();
        let problems = table_rows(&only_category, false).err().unwrap();
        assert!(
            problems[0].contains("missing x, y, w, h, score (a table of classification predictions"),
            "{problems:?}"
        );
    }
}
