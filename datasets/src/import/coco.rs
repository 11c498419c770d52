//! COCO-style JSON: `images` (id, file_name), `annotations` (image_id, category_id) and
//! `categories` (id, name). Files resolve against the JSON's folder (or `--root`).
//! `image_id` follows the folder rule (path relative to the root); the COCO id is kept
//! as `coco_id`, and annotations become per-image counts `num_<category>` (category
//! names lowercased, non-alphanumerics turned into `_`), plus `num_annotations`.
//! Annotations with a `bbox` are also kept whole as ground-truth objects (see
//! [`crate::objects`]): box, area, `iscrowd`, id and category, and any other field with
//! a plain value as a column of its own.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;
use std::sync::Arc;

use datafusion::arrow::array::{ArrayRef, Int64Array, RecordBatch};
use datafusion::arrow::datatypes::{DataType, Field, Schema};
use serde::Deserialize;

use super::{
    Candidate, CandidateSet, ImportOptions, OUTSIDE_HINT_ROOT, Rejection, canonical_root, relative_id, resolve_inside,
};
use crate::error::{DatasetError, Result};
use crate::names::identifier;
use crate::objects::{
    Category, ImportedObject, ImportedObjects, KEYPOINTS_COLUMN, NUM_KEYPOINTS_COLUMN, OBJECT_COLUMNS,
    SEGMENTATION_COLUMN,
};

#[derive(Deserialize)]
struct CocoFile {
    images: Vec<CocoImage>,
    #[serde(default)]
    annotations: Vec<CocoAnnotation>,
    #[serde(default)]
    categories: Vec<CocoCategory>,
}

#[derive(Deserialize)]
struct CocoImage {
    id: i64,
    file_name: String,
}

struct CocoAnnotation {
    id: Option<i64>,
    image_id: i64,
    category_id: i64,
    bbox: Option<Vec<f64>>,
    area: Option<f64>,
    iscrowd: Option<u8>,
    /// The instance mask (polygons or RLE) as the file holds it, if the annotation has one.
    segmentation: Option<serde_json::Value>,
    /// A pose (`[x1, y1, v1, …]`) as the file holds it, if the annotation has one.
    keypoints: Option<serde_json::Value>,
    /// How many of its keypoints are labelled, as the file says.
    num_keypoints: Option<serde_json::Value>,
    /// Other fields with plain values, by column name (see [`crate::objects`]).
    extra: BTreeMap<String, serde_json::Value>,
}

impl<'de> Deserialize<'de> for CocoAnnotation {
    fn deserialize<D: serde::Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        struct Visitor;
        impl<'de> serde::de::Visitor<'de> for Visitor {
            type Value = CocoAnnotation;

            fn expecting(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
                f.write_str("a COCO annotation object")
            }

            fn visit_map<A: serde::de::MapAccess<'de>>(
                self,
                mut map: A,
            ) -> std::result::Result<CocoAnnotation, A::Error> {
                use serde::de::Error;
                use serde_json::Value;
                let (mut id, mut image_id, mut category_id) = (None, None, None);
                let (mut bbox, mut area, mut iscrowd, mut segmentation) = (None, None, None, None);
                let (mut keypoints, mut num_keypoints) = (None, None);
                let mut extra = BTreeMap::new();
                while let Some(key) = map.next_key::<String>()? {
                    match key.as_str() {
                        "id" => id = map.next_value()?,
                        "image_id" => image_id = Some(map.next_value()?),
                        "category_id" => category_id = Some(map.next_value()?),
                        "bbox" => bbox = map.next_value()?,
                        "area" => area = map.next_value()?,
                        "iscrowd" => iscrowd = map.next_value()?,
                        "segmentation" => segmentation = Some(map.next_value::<Value>()?).filter(|v| !v.is_null()),
                        "keypoints" => keypoints = Some(map.next_value::<Value>()?).filter(|v| !v.is_null()),
                        "num_keypoints" => num_keypoints = Some(map.next_value::<Value>()?).filter(|v| !v.is_null()),
                        _ => match map.next_value::<Value>()? {
                            Value::Object(fields) => {
                                for (name, value) in fields {
                                    if !(value.is_array() || value.is_object()) {
                                        extra.insert(extra_column_name(&format!("{key}_{name}")), value);
                                    }
                                }
                            }
                            Value::Array(_) => {}
                            value => {
                                extra.insert(extra_column_name(&key), value);
                            }
                        },
                    }
                }
                Ok(CocoAnnotation {
                    id,
                    image_id: image_id.ok_or_else(|| A::Error::missing_field("image_id"))?,
                    category_id: category_id.ok_or_else(|| A::Error::missing_field("category_id"))?,
                    bbox,
                    area,
                    iscrowd,
                    segmentation,
                    keypoints,
                    num_keypoints,
                    extra,
                })
            }
        }
        deserializer.deserialize_map(Visitor)
    }
}

/// An extra field's column: `column_safe` of its name, prefixed with `ann_` where that
/// is one of the fixed columns or empty.
fn extra_column_name(field: &str) -> String {
    let name = identifier(field);
    if name.is_empty()
        || OBJECT_COLUMNS.iter().any(|(fixed, _)| *fixed == name)
        || [SEGMENTATION_COLUMN, KEYPOINTS_COLUMN, NUM_KEYPOINTS_COLUMN].contains(&name.as_str())
        || name.starts_with(|c: char| c.is_ascii_digit())
    {
        format!("ann_{name}")
    } else {
        name
    }
}

#[derive(Deserialize)]
struct CocoCategory {
    id: i64,
    name: String,
}

pub(super) fn gather(path: &Path, options: &ImportOptions) -> Result<CandidateSet> {
    let bad = |message: String| DatasetError::BadInput { source_path: path.to_path_buf(), message };
    let text = std::fs::read(path).map_err(DatasetError::io("reading", path))?;
    let coco: CocoFile = serde_json::from_slice(&text).map_err(|e| bad(format!("not a COCO JSON file: {e}")))?;
    if coco.images.is_empty() {
        return Err(bad("the \"images\" list is empty".into()));
    }
    let root_dir = options.root.clone().unwrap_or_else(|| path.parent().map(Path::to_path_buf).unwrap_or_default());
    let root = canonical_root(if root_dir.as_os_str().is_empty() { Path::new(".") } else { &root_dir })?;

    let columns = super::count_columns(coco.categories.iter().map(|c| (c.id, c.name.as_str())));
    let image_index: HashMap<i64, usize> = coco.images.iter().enumerate().map(|(i, im)| (im.id, i)).collect();
    let mut counts: HashMap<i64, Vec<i64>> = columns.keys().map(|&c| (c, vec![0; coco.images.len()])).collect();
    let mut totals = vec![0i64; coco.images.len()];
    for (n, ann) in coco.annotations.iter().enumerate() {
        let Some(&img) = image_index.get(&ann.image_id) else {
            return Err(bad(format!("annotation #{n} refers to image id {} which is not in \"images\"", ann.image_id)));
        };
        let Some(col) = counts.get_mut(&ann.category_id) else {
            return Err(bad(format!(
                "annotation #{n} has category id {} which is not in \"categories\"",
                ann.category_id
            )));
        };
        col[img] += 1;
        totals[img] += 1;
    }

    let mut set = CandidateSet::default();
    let mut rows = Vec::new();
    let mut seen = HashMap::new();
    // Dataset image id (the file, relative to the root) → the COCO id that took it: two
    // entries naming one file would make two rows with one image id.
    let mut files: HashMap<String, i64> = HashMap::new();
    for (i, im) in coco.images.iter().enumerate() {
        let item = format!("image id {} ({})", im.id, im.file_name);
        if let Some(prev) = seen.insert(im.id, i) {
            set.rejected
                .push(Rejection { item, reason: format!("duplicate COCO image id (first at position {prev})") });
            continue;
        }
        match resolve_inside(&root, &root.join(&im.file_name), OUTSIDE_HINT_ROOT) {
            Ok(file) => {
                let image_id = relative_id(&root, &file).expect("inside root");
                if let Some(first) = files.get(&image_id) {
                    let reason = format!("the same file as image id {first}: each file may be listed once");
                    set.rejected.push(Rejection { item, reason });
                    continue;
                }
                files.insert(image_id.clone(), im.id);
                set.candidates.push(Candidate {
                    image_id,
                    uri: file.to_string_lossy().into_owned(),
                    file,
                    split: None,
                    label: None,
                    row: rows.len(),
                    stamp: None,
                });
                rows.push(i);
            }
            Err(reason) => set.rejected.push(Rejection { item, reason }),
        }
    }
    if set.candidates.is_empty()
        && let Some(first) = coco.images.first()
        && !root.join(&first.file_name).exists()
    {
        return Err(bad(missing_images(&root, &first.file_name, coco.images.len())));
    }

    let mut fields =
        vec![Field::new("coco_id", DataType::Int64, true), Field::new("num_annotations", DataType::Int64, true)];
    let mut arrays: Vec<ArrayRef> = vec![
        Arc::new(rows.iter().map(|&i| coco.images[i].id).collect::<Int64Array>()),
        Arc::new(rows.iter().map(|&i| totals[i]).collect::<Int64Array>()),
    ];
    for (cat, name) in &columns {
        fields.push(Field::new(name, DataType::Int64, true));
        arrays.push(Arc::new(rows.iter().map(|&i| counts[cat][i]).collect::<Int64Array>()));
    }
    set.extra = Some(RecordBatch::try_new(Arc::new(Schema::new(fields)), arrays)?);
    set.objects = objects(&coco, &set, &bad)?;
    Ok(set)
}

/// Why no image of a COCO file was found, and where the first one is when it lies in a
/// folder beside the JSON or beside the JSON's folder (COCO's own layout keeps
/// `annotations/instances_val2017.json` beside `val2017/`).
fn missing_images(root: &Path, file_name: &str, images: usize) -> String {
    let folders = |dir: &Path| -> Vec<std::path::PathBuf> {
        let entries = std::fs::read_dir(dir).into_iter().flatten().flatten();
        let mut folders: Vec<_> = entries.map(|e| e.path()).filter(|p| p.is_dir()).collect();
        folders.sort();
        folders
    };
    let mut places = folders(root);
    places.extend(root.parent().map(folders).unwrap_or_default());
    let found = places.into_iter().find(|dir| dir.join(file_name).is_file());
    let remedy = match found {
        Some(dir) => format!("{file_name} is in {}: pass --root {0}", dir.display()),
        None => "pass --root with the folder that holds the images".to_string(),
    };
    format!(
        "none of the {images} images' files is found: a COCO file's file_name is relative to --root (by default \
         the JSON's folder, {}), and {} does not exist; {remedy}",
        root.display(),
        root.join(file_name).display()
    )
}

/// The annotations as ground-truth objects, keyed by the dataset's image ids; `None` when
/// no annotation has a box (a file of labels only).
fn objects(
    coco: &CocoFile,
    set: &CandidateSet,
    bad: &dyn Fn(String) -> DatasetError,
) -> Result<Option<ImportedObjects>> {
    if coco.annotations.iter().all(|a| a.bbox.is_none()) {
        return Ok(None);
    }
    // COCO id → dataset image id, for the images that became candidates.
    let coco_ids = coco_ids(set);
    let image_ids: HashMap<i64, &str> = set.candidates.iter().map(|c| (coco_ids[c.row], c.image_id.as_str())).collect();
    let mut objects = Vec::with_capacity(coco.annotations.len());
    let mut ids = HashMap::new();
    for (n, ann) in coco.annotations.iter().enumerate() {
        let object_id = ann.id.unwrap_or(n as i64 + 1);
        let position = format!("annotation #{n} (id {object_id})");
        let Some(bbox) = &ann.bbox else {
            return Err(bad(format!("{position} has no \"bbox\" while others do")));
        };
        let &[x, y, w, h] = bbox.as_slice() else {
            return Err(bad(format!("{position}: \"bbox\" must be [x, y, width, height], got {} numbers", bbox.len())));
        };
        if let Some(previous) = ids.insert(object_id, n) {
            return Err(bad(format!("{position}: annotation id {object_id} is also annotation #{previous}'s")));
        }
        let Some(&image_id) = image_ids.get(&ann.image_id) else { continue }; // its file was rejected
        let mut extra = ann.extra.clone();
        if let Some(segmentation) = &ann.segmentation {
            // Checked here so that scoring never meets a mask it cannot read.
            if let Err(e) = crate::coco_mask::Segmentation::deserialize(segmentation) {
                return Err(bad(format!(
                    "{position}: \"segmentation\" is neither a list of polygons nor {{\"counts\", \"size\"}} ({e})"
                )));
            }
            extra.insert(SEGMENTATION_COLUMN.to_string(), serde_json::Value::String(segmentation.to_string()));
        }
        if let Some(keypoints) = &ann.keypoints {
            let (points, labelled) =
                checked_pose(keypoints, ann.num_keypoints.as_ref()).map_err(|e| bad(format!("{position}: {e}")))?;
            crate::objects::insert_pose(&mut extra, &points, labelled);
        }
        objects.push(ImportedObject {
            image_id: image_id.to_string(),
            object_id,
            numbered: ann.id.is_none(),
            category_id: ann.category_id,
            bbox: [x, y, w, h],
            area: ann.area,
            iscrowd: ann.iscrowd.unwrap_or(0) != 0,
            extra,
            position,
        });
    }
    Ok(Some(ImportedObjects {
        objects,
        categories: coco.categories.iter().map(|c| Category { id: c.id, name: c.name.clone() }).collect(),
        images: set.candidates.iter().map(|c| c.image_id.clone()).collect(),
        numbered_categories: false,
        normalized: false,
    }))
}

/// An annotation's pose: its `keypoints` and its `num_keypoints` (counted from the
/// visibility flags when the file has none). Checked here so that scoring never meets a
/// pose it cannot read.
fn checked_pose(
    keypoints: &serde_json::Value,
    num_keypoints: Option<&serde_json::Value>,
) -> std::result::Result<(Vec<f64>, i64), String> {
    let points: Vec<f64> = serde_json::from_value(keypoints.clone())
        .map_err(|_| format!("\"keypoints\" must be a list of numbers [x1, y1, v1, …], got {keypoints}"))?;
    if !points.len().is_multiple_of(3) || points.iter().any(|v| !v.is_finite()) {
        return Err(format!("\"keypoints\" must be finite (x, y, visibility) triples, got {} numbers", points.len()));
    }
    let visible = i64::from(slicetest_eval::keypoints::labelled_count(&points));
    let labelled = match num_keypoints {
        None => visible,
        Some(value) => value
            .as_f64()
            .filter(|v| v.fract() == 0.0 && *v >= 0.0)
            .map(|v| v as i64)
            .ok_or_else(|| format!("\"num_keypoints\" must be a whole number, got {value}"))?,
    };
    Ok((points, labelled))
}

/// The `coco_id` column of the candidates' extra columns, by row.
fn coco_ids(set: &CandidateSet) -> &[i64] {
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::Int64Type;
    let extra = set.extra.as_ref().expect("set before objects are gathered");
    extra.column_by_name("coco_id").expect("coco_id column").as_primitive::<Int64Type>().values()
}

#[cfg(test)]
mod tests {
    use super::*;
    use datafusion::arrow::array::AsArray;
    use datafusion::arrow::datatypes::Int64Type;

    #[test]
    fn category_names_become_column_names() {
        assert_eq!(identifier("traffic light"), "traffic_light");
        assert_eq!(identifier(" Hair-Drier!"), "hair_drier");
    }

    #[test]
    fn images_beside_the_annotations_folder_are_pointed_to() {
        // COCO's own layout: annotations/instances_val.json beside val/.
        let dir = tempfile::tempdir().unwrap();
        for folder in ["annotations", "val"] {
            std::fs::create_dir(dir.path().join(folder)).unwrap();
        }
        std::fs::write(dir.path().join("val/1.jpg"), b"x").unwrap();
        let json = r#"{"images":[{"id":1,"file_name":"1.jpg"}],"annotations":[],"categories":[]}"#;
        let path = dir.path().join("annotations/instances_val.json");
        std::fs::write(&path, json).unwrap();
        let err = gather(&path, &ImportOptions::default()).unwrap_err().to_string();
        let root = dir.path().canonicalize().unwrap();
        assert!(err.contains("none of the 1 images' files is found"), "{err}");
        assert!(err.ends_with(&format!("1.jpg is in {}: pass --root {0}", root.join("val").display())), "{err}");
        // Nowhere near: only the remedy.
        std::fs::remove_file(dir.path().join("val/1.jpg")).unwrap();
        let err = gather(&path, &ImportOptions::default()).unwrap_err().to_string();
        assert!(err.ends_with("pass --root with the folder that holds the images"), "{err}");
        // Given the right root, the image is found.
        std::fs::write(dir.path().join("val/1.jpg"), b"x").unwrap();
        let options = ImportOptions { root: Some(dir.path().join("val")), ..Default::default() };
        assert_eq!(gather(&path, &options).unwrap().candidates.len(), 1);
    }

    #[test]
    fn annotations_become_per_image_counts() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("imgs")).unwrap();
        for f in ["a.jpg", "b.jpg"] {
            std::fs::write(dir.path().join("imgs").join(f), b"x").unwrap();
        }
        let json = r#"{"images":[{"id":1,"file_name":"imgs/a.jpg"},{"id":2,"file_name":"imgs/b.jpg"},
            {"id":3,"file_name":"../escape.jpg"},{"id":4,"file_name":"imgs/./a.jpg"}],
            "annotations":[{"image_id":1,"category_id":1},{"image_id":1,"category_id":1},{"image_id":2,"category_id":3}],
            "categories":[{"id":1,"name":"person"},{"id":3,"name":"traffic light"}]}"#;
        std::fs::write(dir.path().join("c.json"), json).unwrap();
        let set = gather(&dir.path().join("c.json"), &ImportOptions::default()).unwrap();
        assert_eq!(set.candidates.len(), 2);
        assert_eq!(set.candidates[0].image_id, "imgs/a.jpg");
        assert_eq!(set.rejected.len(), 2);
        // A second entry for a file already listed would be a second row with its image id.
        assert_eq!(set.rejected[1].item, "image id 4 (imgs/./a.jpg)");
        assert!(set.rejected[1].reason.contains("the same file as image id 1"), "{}", set.rejected[1].reason);
        let extra = set.extra.unwrap();
        let col = |n: &str| extra.column_by_name(n).unwrap().as_primitive::<Int64Type>().values().to_vec();
        assert_eq!(col("num_person"), vec![2, 0]);
        assert_eq!(col("num_traffic_light"), vec![0, 1]);
        assert_eq!(col("num_annotations"), vec![2, 1]);
    }

    #[test]
    fn poses_are_kept_with_their_labelled_count() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("a.jpg"), b"x").unwrap();
        let file = |annotations: &str| {
            let json = format!(
                r#"{{"images":[{{"id":1,"file_name":"a.jpg"}}],"categories":[{{"id":1,"name":"person"}}],
                "annotations":[{annotations}]}}"#
            );
            std::fs::write(dir.path().join("c.json"), json).unwrap();
            gather(&dir.path().join("c.json"), &ImportOptions::default())
        };
        let set = file(
            r#"{"id":1,"image_id":1,"category_id":1,"bbox":[1,2,3,4],"keypoints":[2,3,2,0,0,0,3,4,1],"num_keypoints":2},
               {"id":2,"image_id":1,"category_id":1,"bbox":[1,2,3,4],"keypoints":[2,3,2,0,0,0]},
               {"id":3,"image_id":1,"category_id":1,"bbox":[1,2,3,4]}"#,
        )
        .unwrap();
        let objects = set.objects.unwrap().objects;
        let column = |n: usize, name: &str| objects[n].extra.get(name).cloned();
        assert_eq!(column(0, KEYPOINTS_COLUMN), Some("[2.0,3.0,2.0,0.0,0.0,0.0,3.0,4.0,1.0]".into()));
        assert_eq!(column(0, NUM_KEYPOINTS_COLUMN), Some(2.into()));
        assert_eq!(column(1, NUM_KEYPOINTS_COLUMN), Some(1.into()), "counted where the file has none");
        assert_eq!((column(2, KEYPOINTS_COLUMN), column(2, NUM_KEYPOINTS_COLUMN)), (None, None));
        let err = file(r#"{"id":7,"image_id":1,"category_id":1,"bbox":[1,2,3,4],"keypoints":[2,3]}"#).unwrap_err();
        assert!(
            err.to_string().contains(
                "annotation #0 (id 7): \"keypoints\" must be finite (x, y, visibility) triples, got 2 numbers"
            ),
            "{err}"
        );
        let err =
            file(r#"{"id":7,"image_id":1,"category_id":1,"bbox":[1,2,3,4],"keypoints":[2,3,1],"num_keypoints":"one"}"#)
                .unwrap_err();
        assert!(err.to_string().contains("\"num_keypoints\" must be a whole number, got \"one\""), "{err}");
    }

    #[test]
    fn dangling_annotations_are_a_clear_error() {
        let dir = tempfile::tempdir().unwrap();
        let json = r#"{"images":[{"id":1,"file_name":"a.jpg"}],"annotations":[{"image_id":9,"category_id":1}],
            "categories":[{"id":1,"name":"person"}]}"#;
        std::fs::write(dir.path().join("c.json"), json).unwrap();
        let err = gather(&dir.path().join("c.json"), &ImportOptions::default()).unwrap_err().to_string();
        assert!(err.contains("refers to image id 9"), "{err}");
    }
}
