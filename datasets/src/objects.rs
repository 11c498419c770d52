//! Ground-truth objects: every box annotation of a dataset version, stored as
//! `versions/<n>/objects.parquet` (one row per annotation, in the input's order within
//! each image) with the category list and the file's SHA-256 in `version.json`.
//!
//! Boxes are kept exactly as given: COCO's `[x, y, w, h]` as float64, never converted to
//! corners, so an evaluation sums them as pycocotools does. `area` is the annotation's
//! own area (a mask's area in COCO) or `w * h` when the input has none.
//!
//! Any other field an annotation carries with a plain value (`"occluded": true`,
//! `"truncated": 0.3`, `"source": "vendor-2"`, or one level of an object such as CVAT's
//! `"attributes": {"occluded": false}`, as `attributes_occluded`) becomes a column after the
//! fixed ones, typed from its values: Boolean, Int64, Float64, else Utf8; null where an
//! annotation lacks it.
//!
//! A COCO annotation's `segmentation` (its instance mask: polygons or an RLE) is kept as
//! the column `segmentation`, its compact JSON, for mask AP.
//!
//! An import is the truth for the images it lists: a version's objects are the previous
//! version's objects of images the import did not list, plus the import's objects.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{
    Array, ArrayRef, AsArray, BooleanArray, Float64Array, Int64Array, RecordBatch, StringArray, UInt32Array,
    new_null_array,
};
use datafusion::arrow::compute::{cast, concat_batches, take_record_batch};
use datafusion::arrow::datatypes::{DataType, Field, Float64Type, Int64Type, Schema, SchemaRef};
use serde::{Deserialize, Serialize};

use crate::error::{DatasetError, Result};
use crate::layout::WorkspaceLayout;
use crate::stored::read_checked_parquet;
use crate::version::DatasetVersion;

/// File name of a version's ground-truth objects.
const OBJECTS_FILE: &str = "objects.parquet";

/// A box may reach this far (in pixels) past the image's edge before it is refused:
/// annotation tools round, and COCO's own boxes overshoot by fractions of a pixel.
pub const EDGE_TOLERANCE: f64 = 1.0;

/// An object category.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Category {
    /// The category id (COCO's `categories[].id`).
    pub id: i64,
    /// Its name.
    pub name: String,
}

/// What `version.json` records about a version's objects.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ObjectsInfo {
    /// Number of annotations.
    pub count: u64,
    /// Every category, in id order (including ones without annotations).
    pub categories: Vec<Category>,
    /// SHA-256 of the objects file, checked when it is read back.
    pub parquet_sha256: String,
    /// The objects file's name inside the version directory (`objects.parquet` in
    /// workspaces written before commits were lock-free).
    #[serde(default = "legacy_objects_file")]
    pub file: String,
}

fn legacy_objects_file() -> String {
    OBJECTS_FILE.to_string()
}

/// The objects file of a version that has one.
pub fn objects_file(layout: &WorkspaceLayout, manifest: &DatasetVersion) -> Option<std::path::PathBuf> {
    let info = manifest.objects.as_ref()?;
    Some(layout.version_dir(&manifest.dataset, manifest.version).join(&info.file))
}

/// One annotation as an importer found it.
#[derive(Debug, Clone, PartialEq)]
pub struct ImportedObject {
    /// The image's `image_id` in the dataset.
    pub image_id: String,
    /// The annotation's id in the input (its position + 1 when the input gives none, see
    /// `numbered`).
    pub object_id: i64,
    /// The input gave no id: `object_id` is the annotation's position, and moves past the
    /// dataset's other ids when those already hold it.
    pub numbered: bool,
    /// Its category id.
    pub category_id: i64,
    /// `[x, y, w, h]`.
    pub bbox: [f64; 4],
    /// The annotation's own area, if it has one.
    pub area: Option<f64>,
    /// A crowd region.
    pub iscrowd: bool,
    /// The annotation's other fields with plain values, by column name (see the module
    /// docs); null, string, boolean or number values only.
    pub extra: BTreeMap<String, serde_json::Value>,
    /// Where it is in the input, for errors (`annotation #12 (id 345)`).
    pub position: String,
}

/// The objects an import carries: its annotations and categories, and which images it
/// speaks for (including images it lists without any annotation).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ImportedObjects {
    /// Annotations, in input order.
    pub objects: Vec<ImportedObject>,
    /// Categories of the input.
    pub categories: Vec<Category>,
    /// Image ids the input lists.
    pub images: HashSet<String>,
    /// The input named its categories but gave no ids (a box manifest without
    /// `category_id`): slicetest numbered them, and [`merge`] renumbers them so that a
    /// name the dataset has keeps its id there.
    pub numbered_categories: bool,
    /// Boxes and polygon points are fractions of their image's width and height (YOLO
    /// labels): [`check_boxes`] turns them into pixels once the images are probed.
    pub normalized: bool,
}

/// The fixed columns of `objects.parquet` and of the SQL table `objects`, in order, with
/// their types; extra annotation fields follow them and may not take their names.
pub const OBJECT_COLUMNS: [(&str, DataType); 10] = [
    ("image_id", DataType::Utf8),
    ("object_id", DataType::Int64),
    ("category", DataType::Utf8),
    ("category_id", DataType::Int64),
    ("x", DataType::Float64),
    ("y", DataType::Float64),
    ("w", DataType::Float64),
    ("h", DataType::Float64),
    ("area", DataType::Float64),
    ("iscrowd", DataType::Boolean),
];

/// The column holding an annotation's instance mask: its COCO `segmentation` (polygons
/// or an RLE) as compact JSON, null for an object without one; scored by a detection
/// run's masks (mask AP, `iouType='segm'`).
pub const SEGMENTATION_COLUMN: &str = "segmentation";

/// The column holding an annotation's pose: its COCO `keypoints` (`[x1, y1, v1, …]`, `v`
/// 0 not labelled, 1 labelled but hidden, 2 visible) as compact JSON, null for an object
/// without one; scored by a detection run's keypoints (keypoint AP, OKS).
pub const KEYPOINTS_COLUMN: &str = "keypoints";

/// The column holding how many of an annotation's keypoints are labelled (COCO's
/// `num_keypoints`): a person with none is ignored by keypoint AP.
pub const NUM_KEYPOINTS_COLUMN: &str = "num_keypoints";

/// Puts a pose in an object's extra columns: its keypoints as compact JSON and how many
/// are labelled (the two columns above).
pub(crate) fn insert_pose(extra: &mut BTreeMap<String, serde_json::Value>, points: &[f64], labelled: i64) {
    let json = serde_json::to_string(points).expect("numbers serialise");
    extra.insert(KEYPOINTS_COLUMN.to_string(), serde_json::Value::String(json));
    extra.insert(NUM_KEYPOINTS_COLUMN.to_string(), serde_json::Value::from(labelled));
}

/// The schema of the fixed columns ([`OBJECT_COLUMNS`]).
pub fn objects_schema() -> SchemaRef {
    Arc::new(Schema::new(
        OBJECT_COLUMNS.iter().map(|(name, data_type)| Field::new(*name, data_type.clone(), false)).collect::<Vec<_>>(),
    ))
}

/// Checks every box of `imported` against its image's size (`sizes`: image id → (width,
/// height)); objects of images not in `sizes` (rejected files) are left out. All problems
/// are collected, so one error lists them.
pub fn check_boxes(
    imported: &ImportedObjects,
    sizes: &HashMap<&str, (u32, u32)>,
    source: &Path,
) -> Result<Vec<ImportedObject>> {
    let mut problems = Vec::new();
    let mut kept = Vec::new();
    let known: HashSet<i64> = imported.categories.iter().map(|c| c.id).collect();
    for object in &imported.objects {
        let Some(&(width, height)) = sizes.get(object.image_id.as_str()) else { continue };
        let scaled;
        let object = if imported.normalized {
            scaled = in_pixels(object, width, height);
            &scaled
        } else {
            object
        };
        let [x, y, w, h] = object.bbox;
        let at = format!("{} on image {:?}", object.position, object.image_id);
        if !known.contains(&object.category_id) {
            problems.push(format!("{at}: category id {} is not in the category list", object.category_id));
        } else if object.bbox.iter().any(|v| !v.is_finite()) || object.area.is_some_and(|a| !a.is_finite()) {
            problems.push(format!("{at}: box {:?} is not finite", object.bbox));
        } else if w < 0.0 || h < 0.0 {
            problems.push(format!("{at}: box {:?} has a negative width or height", object.bbox));
        } else if x < -EDGE_TOLERANCE
            || y < -EDGE_TOLERANCE
            || x + w > width as f64 + EDGE_TOLERANCE
            || y + h > height as f64 + EDGE_TOLERANCE
        {
            problems.push(format!("{at}: box [x {x}, y {y}, w {w}, h {h}] lies outside the {width}×{height} image"));
        } else if object.area.is_some_and(|a| a < 0.0) {
            problems.push(format!("{at}: area {} is negative", object.area.unwrap_or_default()));
        } else {
            kept.push(object.clone());
        }
    }
    if problems.is_empty() {
        return Ok(kept);
    }
    let headline = format!("{} box annotation(s) rejected, nothing was ingested", problems.len());
    Err(rejected(source, &headline, problems, 20))
}

/// The share of a person's box its segment covers in Ultralytics' OKS (`area = w * h *
/// 0.53`): the area of a pose from YOLO labels, which have no segment.
const POSE_AREA_OF_BOX: f64 = 0.53;

/// A normalized object (see [`ImportedObjects::normalized`]) in pixels of its
/// `width` × `height` image; a polygon's area is its mask's, as COCO's areas are, and a
/// pose's [`POSE_AREA_OF_BOX`] of its box's.
fn in_pixels(object: &ImportedObject, width: u32, height: u32) -> ImportedObject {
    let (w, h) = (f64::from(width), f64::from(height));
    let [x0, y0, bw, bh] = object.bbox;
    let mut object = ImportedObject { bbox: [x0 * w, y0 * h, bw * w, bh * h], ..object.clone() };
    let polygons = object.extra.get(SEGMENTATION_COLUMN).and_then(|v| v.as_str());
    if let Some(Ok(mut polygons)) = polygons.map(serde_json::from_str::<Vec<Vec<f64>>>) {
        crate::import::yolo::polygons_in_pixels(&mut polygons, width, height);
        let segmentation = crate::coco_mask::Segmentation::Polygons(polygons.clone());
        object.area = segmentation.to_mask(height, width).ok().map(|mask| mask.area() as f64);
        let json = serde_json::to_string(&polygons).expect("numbers serialise");
        object.extra.insert(SEGMENTATION_COLUMN.to_string(), serde_json::Value::String(json));
    }
    let keypoints = object.extra.get(KEYPOINTS_COLUMN).and_then(|v| v.as_str());
    if let Some(Ok(mut points)) = keypoints.map(serde_json::from_str::<Vec<f64>>) {
        for point in points.chunks_mut(3) {
            (point[0], point[1]) = (point[0] * w, point[1] * h);
        }
        object.area = Some(object.bbox[2] * object.bbox[3] * POSE_AREA_OF_BOX);
        let json = serde_json::to_string(&points).expect("numbers serialise");
        object.extra.insert(KEYPOINTS_COLUMN.to_string(), serde_json::Value::String(json));
    }
    object
}

/// An import refused for `problems`: the headline, then the first `shown` of them, one a
/// line, and how many more there are.
fn rejected(source: &Path, headline: &str, mut problems: Vec<String>, shown: usize) -> DatasetError {
    let total = problems.len();
    problems.truncate(shown);
    let more = if total > shown { format!("\n  … and {} more", total - shown) } else { String::new() };
    DatasetError::BadInput {
        source_path: source.to_path_buf(),
        message: format!("{headline}:\n  - {}{more}", problems.join("\n  - ")),
    }
}

/// Merges the previous version's objects with an import's: the import replaces the
/// objects of every image it lists. Categories merge by id; one id with two names is an
/// error. Categories slicetest numbered ([`ImportedObjects::numbered_categories`]) take
/// the earlier version's id of their name, and a new name the next id after the largest
/// in use. `None` when neither side has objects.
pub fn merge(
    previous: Option<(&RecordBatch, &[Category])>,
    mut imported: Option<(&ImportedObjects, Vec<ImportedObject>)>,
    source: &Path,
) -> Result<Option<(RecordBatch, Vec<Category>)>> {
    if previous.is_none() && imported.is_none() {
        return Ok(None);
    }
    let mut categories: BTreeMap<i64, String> = BTreeMap::new();
    if let Some((_, previous)) = previous {
        categories.extend(previous.iter().map(|c| (c.id, c.name.clone())));
    }
    let mut imported_categories = imported.as_ref().map(|(i, _)| i.categories.clone()).unwrap_or_default();
    if let (Some((import, objects)), Some((_, previous))) = (&mut imported, previous)
        && import.numbered_categories
    {
        // Each manifest is numbered on its own (1, 2, … in name order), so a manifest
        // with one more name would give the names after it other ids than the dataset's.
        imported_categories = renumber_categories(&imported_categories, objects, previous);
    }
    if imported.is_some() {
        for c in &imported_categories {
            match categories.get(&c.id) {
                Some(name) if name != &c.name => {
                    return Err(DatasetError::BadInput {
                        source_path: source.to_path_buf(),
                        message: format!(
                            "category id {} is {:?} here but {name:?} in the dataset's earlier version; \
                             category ids must keep their names",
                            c.id, c.name
                        ),
                    });
                }
                _ => {
                    categories.insert(c.id, c.name.clone());
                }
            }
        }
    }
    let mut parts = Vec::new();
    if let Some((batch, _)) = previous {
        let listed = imported.as_ref().map(|(i, _)| &i.images);
        let ids = batch.column(0).as_string::<i32>();
        let keep: Vec<u32> = (0..batch.num_rows())
            .filter(|&i| listed.is_none_or(|listed| !listed.contains(ids.value(i))))
            .map(|i| i as u32)
            .collect();
        parts.push(take_record_batch(batch, &UInt32Array::from(keep))?);
    }
    if let Some((_, objects)) = &mut imported {
        number_after(parts.first(), objects);
        check_unique_ids(parts.first(), objects, source)?;
    }
    if let Some((_, objects)) = &imported {
        parts.push(objects_batch(objects, &categories)?);
    }
    let all = concat_aligned(&parts)?;
    // Image order, and within an image the input's order (a stable sort).
    let ids = all.column(0).as_string::<i32>();
    let mut order: Vec<u32> = (0..all.num_rows() as u32).collect();
    order.sort_by(|&a, &b| ids.value(a as usize).cmp(ids.value(b as usize)));
    let sorted = take_record_batch(&all, &UInt32Array::from(order))?;
    let categories = categories.into_iter().map(|(id, name)| Category { id, name }).collect();
    Ok(Some((sorted, categories)))
}

/// `numbered` (categories slicetest numbered for an import) with the ids of `previous`
/// (the dataset's categories) for the names it has, new names numbered after the largest
/// id in `previous` in name order; `objects` are changed to match.
fn renumber_categories(numbered: &[Category], objects: &mut [ImportedObject], previous: &[Category]) -> Vec<Category> {
    let known: HashMap<&str, i64> = previous.iter().map(|c| (c.name.as_str(), c.id)).collect();
    let mut next = previous.iter().map(|c| c.id).max().unwrap_or(0);
    let mut by_name: Vec<&Category> = numbered.iter().collect();
    by_name.sort_by(|a, b| a.name.cmp(&b.name));
    let mut new_id: HashMap<i64, i64> = HashMap::new();
    let renumbered = by_name
        .into_iter()
        .map(|c| {
            let id = known.get(c.name.as_str()).copied().unwrap_or_else(|| {
                next += 1;
                next
            });
            new_id.insert(c.id, id);
            Category { id, name: c.name.clone() }
        })
        .collect();
    for object in objects.iter_mut() {
        if let Some(&id) = new_id.get(&object.category_id) {
            object.category_id = id;
        }
    }
    renumbered
}

/// Objects the input gave no id keep their position as id unless another object holds
/// one of those ids; then they are numbered after the largest id in use (kept or given),
/// in input order.
fn number_after(kept: Option<&RecordBatch>, objects: &mut [ImportedObject]) {
    let mut taken: HashSet<i64> =
        kept.map_or_else(HashSet::new, |k| k.column(1).as_primitive::<Int64Type>().values().iter().copied().collect());
    taken.extend(objects.iter().filter(|o| !o.numbered).map(|o| o.object_id));
    if !objects.iter().any(|o| o.numbered && taken.contains(&o.object_id)) {
        return;
    }
    let mut next = taken.iter().max().copied().unwrap_or(0);
    for object in objects.iter_mut().filter(|o| o.numbered) {
        next += 1;
        object.object_id = next;
    }
}

/// Object ids are unique within a dataset version (`detection_matches()` and joins name
/// objects by them): an import may not repeat one, nor reuse one that an object of another
/// image kept from an earlier import holds.
fn check_unique_ids(kept: Option<&RecordBatch>, objects: &[ImportedObject], source: &Path) -> Result<()> {
    let mut holder: HashMap<i64, String> = HashMap::new();
    if let Some(kept) = kept {
        let (images, ids) = (kept.column(0).as_string::<i32>(), kept.column(1).as_primitive::<Int64Type>());
        for i in 0..kept.num_rows() {
            holder.insert(ids.value(i), format!("an object of image {:?} from an earlier import", images.value(i)));
        }
    }
    let mut problems = Vec::new();
    for object in objects {
        let this = format!("{} on image {:?}", object.position, object.image_id);
        match holder.get(&object.object_id) {
            Some(other) => problems.push(format!("{this}: object id {} is already {other}'s", object.object_id)),
            None => {
                holder.insert(object.object_id, this);
            }
        }
    }
    if problems.is_empty() {
        return Ok(());
    }
    let headline = format!(
        "{} object id(s) are not unique in the dataset, nothing was ingested (object ids name objects in joins and \
         detection_matches(); give this file's annotations ids no other image uses, e.g. offset them, or ingest \
         it as a dataset of its own)",
        problems.len()
    );
    Err(rejected(source, &headline, problems, 10))
}

fn objects_batch(objects: &[ImportedObject], categories: &BTreeMap<i64, String>) -> Result<RecordBatch> {
    let float =
        |f: &dyn Fn(&ImportedObject) -> f64| -> ArrayRef { Arc::new(objects.iter().map(f).collect::<Float64Array>()) };
    let mut columns: Vec<ArrayRef> = vec![
        Arc::new(objects.iter().map(|o| Some(o.image_id.as_str())).collect::<StringArray>()),
        Arc::new(objects.iter().map(|o| o.object_id).collect::<Int64Array>()),
        Arc::new(objects.iter().map(|o| categories.get(&o.category_id).map(String::as_str)).collect::<StringArray>()),
        Arc::new(objects.iter().map(|o| o.category_id).collect::<Int64Array>()),
        float(&|o| o.bbox[0]),
        float(&|o| o.bbox[1]),
        float(&|o| o.bbox[2]),
        float(&|o| o.bbox[3]),
        float(&|o| o.area.unwrap_or(o.bbox[2] * o.bbox[3])),
        Arc::new(objects.iter().map(|o| Some(o.iscrowd)).collect::<BooleanArray>()),
    ];
    let mut fields: Vec<Field> = objects_schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    let names: BTreeSet<&str> = objects.iter().flat_map(|o| o.extra.keys().map(String::as_str)).collect();
    for name in names {
        let values: Vec<Option<&serde_json::Value>> =
            objects.iter().map(|o| o.extra.get(name).filter(|v| !v.is_null())).collect();
        let (data_type, array) = extra_column(&values);
        fields.push(Field::new(name, data_type, true));
        columns.push(array);
    }
    Ok(RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)?)
}

/// One extra annotation field as a column: Boolean when every value is a boolean, Int64
/// when every one is an integer, Float64 when every one is a number, else Utf8.
fn extra_column(values: &[Option<&serde_json::Value>]) -> (DataType, ArrayRef) {
    use serde_json::Value;
    let present = || values.iter().flatten();
    if present().all(|v| v.is_boolean()) {
        let array: BooleanArray = values.iter().map(|v| v.and_then(Value::as_bool)).collect();
        (DataType::Boolean, Arc::new(array))
    } else if present().all(|v| v.is_i64()) {
        let array: Int64Array = values.iter().map(|v| v.and_then(Value::as_i64)).collect();
        (DataType::Int64, Arc::new(array))
    } else if present().all(|v| v.is_number()) {
        let array: Float64Array = values.iter().map(|v| v.and_then(Value::as_f64)).collect();
        (DataType::Float64, Arc::new(array))
    } else {
        let text = |v: &Value| match v {
            Value::String(s) => s.clone(),
            other => other.to_string(),
        };
        let array: StringArray = values.iter().map(|v| v.map(text)).collect();
        (DataType::Utf8, Arc::new(array))
    }
}

/// Concatenates objects tables whose extra columns may differ (an earlier version's and
/// an import's): every column of any part, null where a part lacks it; a column typed
/// differently in two parts becomes Float64 (Int64 and Float64) or Utf8.
fn concat_aligned(parts: &[RecordBatch]) -> Result<RecordBatch> {
    let mut fields: Vec<Field> = objects_schema().fields().iter().map(|f| f.as_ref().clone()).collect();
    for part in parts {
        for field in part.schema().fields().iter().skip(OBJECT_COLUMNS.len()) {
            match fields.iter_mut().find(|f| f.name() == field.name()) {
                None => fields.push(field.as_ref().clone()),
                Some(known) if known.data_type() == field.data_type() => {}
                Some(known) => {
                    let numbers = [DataType::Int64, DataType::Float64];
                    let wider = if numbers.contains(known.data_type()) && numbers.contains(field.data_type()) {
                        DataType::Float64
                    } else {
                        DataType::Utf8
                    };
                    *known = Field::new(known.name(), wider, true);
                }
            }
        }
    }
    let schema = Arc::new(Schema::new(fields));
    let mut aligned = Vec::with_capacity(parts.len());
    for part in parts {
        let columns = schema
            .fields()
            .iter()
            .map(|field| match part.column_by_name(field.name()) {
                Some(column) if column.data_type() == field.data_type() => Ok(column.clone()),
                Some(column) => cast(column, field.data_type()),
                None => Ok(new_null_array(field.data_type(), part.num_rows())),
            })
            .collect::<std::result::Result<Vec<_>, _>>()?;
        aligned.push(RecordBatch::try_new(schema.clone(), columns)?);
    }
    Ok(concat_batches(&schema, &aligned)?)
}

/// Reads a version's objects (checked against the SHA-256 in its manifest); `None` when
/// the version has none.
pub fn read_objects(layout: &WorkspaceLayout, manifest: &DatasetVersion) -> Result<Option<RecordBatch>> {
    let (Some(info), Some(path)) = (&manifest.objects, objects_file(layout, manifest)) else { return Ok(None) };
    let expected = &info.parquet_sha256;
    let altered = |actual: &str| {
        format!("the file was modified after it was published (sha256 {actual}, manifest says {expected})")
    };
    read_checked_parquet(layout.storage(), &path, expected, "ground-truth objects", altered, None).map(Some)
}

/// A stored objects table as plain values, for evaluation.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredObject<'a> {
    /// The image.
    pub image_id: &'a str,
    /// The annotation id.
    pub object_id: i64,
    /// The category's name.
    pub category: &'a str,
    /// The category id.
    pub category_id: i64,
    /// `[x, y, w, h]`.
    pub bbox: [f64; 4],
    /// The annotation's area.
    pub area: f64,
    /// A crowd region.
    pub iscrowd: bool,
}

/// Iterates over the rows of an objects table read by [`read_objects`].
pub fn rows(batch: &RecordBatch) -> impl Iterator<Item = StoredObject<'_>> {
    let ids = batch.column(0).as_string::<i32>();
    let object_ids = batch.column(1).as_primitive::<Int64Type>();
    let categories = batch.column(2).as_string::<i32>();
    let category_ids = batch.column(3).as_primitive::<Int64Type>();
    let f = |i: usize| batch.column(i).as_primitive::<Float64Type>();
    let (x, y, w, h, area) = (f(4), f(5), f(6), f(7), f(8));
    let crowd = batch.column(9).as_boolean();
    (0..batch.num_rows()).map(move |i| StoredObject {
        image_id: ids.value(i),
        object_id: object_ids.value(i),
        category: categories.value(i),
        category_id: category_ids.value(i),
        bbox: [x.value(i), y.value(i), w.value(i), h.value(i)],
        area: area.value(i),
        iscrowd: crowd.value(i) && !crowd.is_null(i),
    })
}
