//! Ultralytics YOLO datasets: a `data.yaml` naming the classes and the folders (or `.txt`
//! lists) of each split's images, with one label file per image.
//!
//! The rules are Ultralytics' own (`check_det_dataset`, `img2label_paths`,
//! `verify_image_label`), so a dataset that trains there ingests here with the same boxes:
//! - the dataset folder is `--root`, else the yaml's `path` (relative to the yaml's
//!   folder), else the yaml's folder; `train`, `val` and `test` are a folder, a `.txt`
//!   list of image paths, or a list of either, relative to it (a `../x` that does not
//!   exist is read as `x`, as Ultralytics does for Roboflow's exports);
//! - an image's labels are at its path with the last `/images/` turned into `/labels/`
//!   and the extension into `.txt`; no label file means no objects;
//! - a label line is `class cx cy w h` (a box by its centre, as fractions of the image's
//!   width and height) or `class x1 y1 x2 y2 …` (a polygon of 3 or more points, whose
//!   extent is the box); with `kpt_shape: [K, D]` in the yaml (pose), a line is the box
//!   and K keypoints of D numbers (`x y`, or `x y visibility`), kept as the object's COCO
//!   `keypoints` with an area of 0.53 × the box's, the share Ultralytics' OKS takes for a
//!   person's segment. Repeated lines in a file are kept once.
//!
//! `image_id` is the image's path relative to the dataset folder, `split` the yaml key
//! that listed it. A class index `k` is named `names[k]` and numbered as Ultralytics
//! numbers it in `predictions.json` (`val(save_json=True)`): category id `k + 1`, except
//! for COCO itself (80 classes, a `val2017.txt` list under a `coco` path: the test of
//! Ultralytics' validator), whose ids are COCO's own 1–90 ([`COCO80_TO_COCO91`]), as in
//! COCO's annotation files; a YOLO prediction folder's classes are read back by the same
//! rule (`run::detections`). Boxes stay fractions here and become pixels once the images'
//! sizes are read (see [`crate::objects::check_boxes`]).

use std::collections::{HashMap, HashSet};
use std::path::{Path, PathBuf};

use yaml_rust2::{Yaml, YamlLoader};

use super::{Candidate, CandidateSet, ImportOptions, OUTSIDE_HINT_ROOT, Rejection, canonical_root, relative_id};
use crate::error::{DatasetError, Result};
use crate::objects::{Category, ImportedObject, ImportedObjects, SEGMENTATION_COLUMN};
use crate::probe::has_image_extension;

/// The split keys of a `data.yaml`, in the order their images are listed.
const SPLITS: [&str; 3] = ["train", "val", "test"];

/// At most this many label problems are listed in a refusal.
const MAX_PROBLEMS: usize = 20;

/// COCO's category id of each of the 80 classes Ultralytics trains on COCO with, in class
/// order (Ultralytics' `coco80_to_coco91_class`; COCO's ids skip 12, 26, 29, 30, 45, 66,
/// 68, 69, 71 and 83).
pub const COCO80_TO_COCO91: [i64; 80] = [
    1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 27, 28, 31, 32, 33, 34, 35,
    36, 37, 38, 39, 40, 41, 42, 43, 44, 46, 47, 48, 49, 50, 51, 52, 53, 54, 55, 56, 57, 58, 59, 60, 61, 62, 63, 64, 65,
    67, 70, 72, 73, 74, 75, 76, 77, 78, 79, 80, 81, 82, 84, 85, 86, 87, 88, 89, 90,
];

/// The category id of YOLO class `k`: COCO's id of the class on a dataset numbered as COCO
/// is (`coco`), else `k + 1`, as Ultralytics numbers classes; None past COCO's 80 classes.
pub(crate) fn class_category_id(k: usize, coco: bool) -> Option<i64> {
    if coco { COCO80_TO_COCO91.get(k).copied() } else { i64::try_from(k).ok()?.checked_add(1) }
}

/// The category id of each class (see the module docs): COCO's ids when the dataset is
/// COCO by the test Ultralytics' validator makes before it writes `predictions.json` —
/// 80 classes, and the evaluated split (`val`, else `test`) a path containing `coco` that
/// ends in `/val2017.txt` or `/test-dev2017.txt`, as resolved against the dataset folder —
/// else `k + 1`.
fn category_ids(doc: &Yaml, classes: usize, root_dir: &Path) -> Vec<i64> {
    let evaluated = doc["val"].as_str().or_else(|| doc["test"].as_str());
    let is_coco = evaluated.is_some_and(|entry| {
        // Ultralytics resolves the entry against its datasets folder; the yaml's own
        // `path` (`coco`) is what that path holds, so both are tried.
        let resolved = [root_dir.join(entry), Path::new(doc["path"].as_str().unwrap_or("")).join(entry)];
        resolved.iter().any(|path| {
            let path = path.to_string_lossy().replace('\\', "/");
            path.contains("coco") && (path.ends_with("/val2017.txt") || path.ends_with("/test-dev2017.txt"))
        })
    });
    let coco = is_coco && classes == COCO80_TO_COCO91.len();
    (0..classes).map(|k| class_category_id(k, coco).expect("80 classes on COCO's numbering")).collect()
}

pub(super) fn gather(yaml: &Path, options: &ImportOptions) -> Result<CandidateSet> {
    let bad = |message: String| DatasetError::BadInput { source_path: yaml.to_path_buf(), message };
    let text = std::fs::read_to_string(yaml).map_err(DatasetError::io("reading", yaml))?;
    let docs = YamlLoader::load_from_str(&text).map_err(|e| bad(format!("not a YAML file: {e}")))?;
    let Some(doc) = docs.first().filter(|d| d.is_hash()) else {
        return Err(bad("a YOLO data.yaml is a mapping with names and train / val / test".into()));
    };
    let names = class_names(doc).map_err(&bad)?;
    let pose = keypoint_shape(doc).map_err(&bad)?;
    let yaml_dir = yaml.parent().map(Path::to_path_buf).unwrap_or_default();
    let yaml_dir = if yaml_dir.as_os_str().is_empty() { PathBuf::from(".") } else { yaml_dir };
    let root_dir = match (&options.root, doc["path"].as_str()) {
        (Some(root), _) => root.clone(),
        (None, Some(path)) => yaml_dir.join(path),
        (None, None) => yaml_dir.clone(),
    };
    if !root_dir.is_dir() {
        return Err(bad(format!(
            "the dataset folder {} does not exist (the yaml's path, relative to its folder; Ultralytics may have \
             read it against its datasets_dir setting): pass --root with the folder that holds the images",
            root_dir.display()
        )));
    }
    let root = canonical_root(&root_dir)?;
    let ids = category_ids(doc, names.len(), &root_dir);

    let mut set = CandidateSet::default();
    let mut labels: Vec<PathBuf> = Vec::new();
    let mut split_of: HashMap<String, &str> = HashMap::new();
    let mut any_split = false;
    for split in SPLITS {
        let entries = match &doc[split] {
            Yaml::String(s) => vec![s.clone()],
            Yaml::Array(list) => list.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
            Yaml::Null | Yaml::BadValue => continue,
            other => return Err(bad(format!("{split}: expected a folder or a list of folders, got {other:?}"))),
        };
        any_split = true;
        for entry in entries {
            for file in split_images(&root, &entry).map_err(|e| bad(format!("{split}: {e}")))? {
                let item = file.display().to_string();
                let canonical = match super::resolve_inside(&root, &file, OUTSIDE_HINT_ROOT) {
                    Ok(canonical) => canonical,
                    Err(reason) => {
                        set.rejected.push(Rejection { item, reason });
                        continue;
                    }
                };
                let image_id = relative_id(&root, &canonical).expect("inside the root");
                if let Some(first) = split_of.get(&image_id) {
                    let reason = format!("listed by {first} and again by {split}: it is ingested once, in {first}");
                    set.rejected.push(Rejection { item, reason });
                    continue;
                }
                split_of.insert(image_id.clone(), split);
                labels.push(label_path(&file));
                set.candidates.push(Candidate {
                    uri: canonical.to_string_lossy().into_owned(),
                    image_id,
                    file: canonical,
                    split: Some(split.to_string()),
                    label: None,
                    row: set.candidates.len(),
                    stamp: None,
                });
            }
        }
    }
    if !any_split {
        return Err(bad("the yaml names no split: give train, val or test (a folder of images)".into()));
    }
    if set.candidates.is_empty() && set.rejected.is_empty() {
        return Err(bad(format!("no image files found in the splits under {}", root.display())));
    }

    let mut objects = Vec::new();
    let mut problems = Vec::new();
    for (candidate, label_file) in set.candidates.iter().zip(&labels) {
        let Ok(text) = std::fs::read_to_string(label_file) else { continue }; // no labels: background
        let shown = relative_id(&root, label_file).unwrap_or_else(|| label_file.display().to_string());
        for object in read_labels(&text, &ids, pose, &shown, &mut problems) {
            let LabelObject { category_id, bbox, polygon, keypoints, position } = object;
            let mut extra = std::collections::BTreeMap::new();
            if let Some(polygon) = polygon {
                let json = serde_json::to_string(&[polygon]).expect("numbers serialise");
                extra.insert(SEGMENTATION_COLUMN.to_string(), serde_json::Value::String(json));
            }
            if let Some(keypoints) = keypoints {
                let labelled = slicetest_eval::keypoints::labelled_count(&keypoints);
                crate::objects::insert_pose(&mut extra, &keypoints, labelled.into());
            }
            objects.push(ImportedObject {
                image_id: candidate.image_id.clone(),
                object_id: objects.len() as i64 + 1,
                numbered: true,
                category_id,
                bbox,
                area: None,
                iscrowd: false,
                extra,
                position,
            });
        }
        if problems.len() >= MAX_PROBLEMS {
            break;
        }
    }
    if !problems.is_empty() {
        problems.truncate(MAX_PROBLEMS);
        return Err(bad(format!("YOLO labels rejected, nothing was ingested:\n  - {}", problems.join("\n  - "))));
    }
    let objects = ImportedObjects {
        objects,
        categories: names.iter().zip(&ids).map(|(name, &id)| Category { id, name: name.clone() }).collect(),
        images: set.candidates.iter().map(|c| c.image_id.clone()).collect(),
        numbered_categories: false,
        normalized: true,
    };
    super::attach_objects(&mut set, objects)?;
    Ok(set)
}

/// A pose dataset's `kpt_shape: [K, D]`: K keypoints of D numbers each (2: `x y`, 3: `x y
/// visibility`); None for a dataset without one.
fn keypoint_shape(doc: &Yaml) -> std::result::Result<Option<(usize, usize)>, String> {
    let shape = &doc["kpt_shape"];
    if shape.is_badvalue() || shape.is_null() {
        return Ok(None);
    }
    let numbers: Option<Vec<i64>> = shape.as_vec().map(|v| v.iter().filter_map(Yaml::as_i64).collect());
    match numbers.as_deref() {
        Some(&[k, d]) if k > 0 && (d == 2 || d == 3) => Ok(Some((k as usize, d as usize))),
        _ => Err(format!("kpt_shape must be [keypoints, 2 or 3] (Ultralytics' pose datasets: [17, 3]), got {shape:?}")),
    }
}

/// A pose label's keypoints (fractions, `D` numbers each) as COCO's triples, still
/// fractions: with `x y` only (D = 2) a point is labelled (visibility 2) unless it is
/// `0 0`, as Ultralytics writes an unlabelled one.
fn coco_keypoints(values: &[f64], dims: usize) -> Vec<f64> {
    values
        .chunks(dims)
        .flat_map(|p| {
            let v = if dims == 3 {
                p[2]
            } else if p[0] == 0.0 && p[1] == 0.0 {
                0.0
            } else {
                2.0
            };
            [p[0], p[1], v]
        })
        .collect()
}

/// `names` as a list (`[person, car]`) or a mapping from class index (`{0: person}`),
/// which must number the classes 0, 1, …; `nc`, when given, must agree.
fn class_names(doc: &Yaml) -> std::result::Result<Vec<String>, String> {
    let scalar = |v: &Yaml| match v {
        Yaml::String(s) | Yaml::Real(s) => Some(s.clone()),
        Yaml::Integer(i) => Some(i.to_string()),
        Yaml::Boolean(b) => Some(b.to_string()),
        _ => None,
    };
    let names: Vec<String> = match &doc["names"] {
        Yaml::Array(list) => list
            .iter()
            .map(|v| scalar(v).ok_or(format!("names: {v:?} is not a class name")))
            .collect::<std::result::Result<_, _>>()?,
        Yaml::Hash(map) => {
            let mut by_index = Vec::with_capacity(map.len());
            for (key, value) in map {
                let Some(index) = key.as_i64() else { return Err(format!("names: key {key:?} is not a class index")) };
                let name = scalar(value).ok_or(format!("names: {value:?} (class {index}) is not a class name"))?;
                by_index.push((index, name));
            }
            by_index.sort();
            for (position, (index, _)) in by_index.iter().enumerate() {
                if *index != position as i64 {
                    return Err(format!("names: class indexes must be 0, 1, 2, …; class {position} is missing"));
                }
            }
            by_index.into_iter().map(|(_, name)| name).collect()
        }
        Yaml::BadValue | Yaml::Null => {
            return Err("no names: a YOLO data.yaml names its classes (names: [a, b] or names: {0: a})".into());
        }
        other => return Err(format!("names: expected a list or a mapping, got {other:?}")),
    };
    if names.is_empty() {
        return Err("names is empty".into());
    }
    let mut seen = HashSet::new();
    if let Some(name) = names.iter().find(|n| !seen.insert(n.as_str())) {
        return Err(format!("names: {name:?} names two classes"));
    }
    if let Some(nc) = doc["nc"].as_i64()
        && nc != names.len() as i64
    {
        return Err(format!("nc is {nc} but names lists {} classes", names.len()));
    }
    Ok(names)
}

/// The image files of one split entry: every image below a folder (sorted, hidden names
/// skipped), or the paths a `.txt` file lists (relative to its folder).
fn split_images(root: &Path, entry: &str) -> std::result::Result<Vec<PathBuf>, String> {
    let mut path = root.join(entry);
    if !path.exists()
        && let Some(rest) = entry.strip_prefix("../")
    {
        path = root.join(rest);
    }
    if path.is_dir() {
        let mut files = Vec::new();
        for entry in super::visible_entries(&path, usize::MAX) {
            let entry = entry.map_err(|e| format!("cannot walk {}: {e}", path.display()))?;
            if entry.file_type().is_file() && has_image_extension(entry.path()) {
                files.push(entry.into_path());
            }
        }
        return Ok(files);
    }
    if path.is_file() && path.extension().is_some_and(|e| e.eq_ignore_ascii_case("txt")) {
        let text = std::fs::read_to_string(&path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
        let dir = path.parent().unwrap_or(root);
        let lines = text.lines().map(str::trim).filter(|l| !l.is_empty());
        return Ok(lines.map(|l| dir.join(l.strip_prefix("./").unwrap_or(l))).collect());
    }
    Err(format!(
        "{} is neither a folder of images nor a .txt list of image paths (paths are relative to the dataset folder {})",
        path.display(),
        root.display()
    ))
}

/// Where Ultralytics looks for an image's labels: the last `/images/` of its path turned
/// into `/labels/`, the extension into `.txt` (beside the image when the path has no
/// `images` folder).
fn label_path(image: &Path) -> PathBuf {
    let components: Vec<_> = image.components().collect();
    let parents = components.len().saturating_sub(1);
    let images = components[..parents].iter().rposition(|c| c.as_os_str() == "images");
    let mut path: PathBuf = components
        .iter()
        .enumerate()
        .map(|(i, c)| if Some(i) == images { std::ffi::OsStr::new("labels") } else { c.as_os_str() })
        .collect();
    path.set_extension("txt");
    path
}

/// `[x, y, w, h]` of a YOLO box given by its centre, `[cx, cy, w, h]`.
pub(crate) fn centre_box([cx, cy, w, h]: [f64; 4]) -> [f64; 4] {
    [cx - w / 2.0, cy - h / 2.0, w, h]
}

/// `[x, y, w, h]` of a polygon `x1 y1 x2 y2 …`: its extent, as Ultralytics'
/// `segments2boxes` makes a segment's box.
pub(crate) fn polygon_box(points: &[f64]) -> [f64; 4] {
    let (xs, ys): (Vec<f64>, Vec<f64>) = points.chunks(2).map(|p| (p[0], p[1])).unzip();
    let min = |v: &[f64]| v.iter().copied().fold(f64::INFINITY, f64::min);
    let max = |v: &[f64]| v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    let (x0, y0) = (min(&xs), min(&ys));
    [x0, y0, max(&xs) - x0, max(&ys) - y0]
}

/// Polygons of fractions (YOLO's) in pixels of a `width` × `height` image.
pub(crate) fn polygons_in_pixels(polygons: &mut [Vec<f64>], width: u32, height: u32) {
    let (w, h) = (f64::from(width), f64::from(height));
    for points in polygons {
        points.iter_mut().enumerate().for_each(|(i, v)| *v *= if i % 2 == 0 { w } else { h });
    }
}

/// One label line, read.
struct LabelObject {
    category_id: i64,
    /// `[x, y, w, h]` as fractions of the image's width and height.
    bbox: [f64; 4],
    /// The polygon's points as fractions, `x1, y1, x2, y2, …`.
    polygon: Option<Vec<f64>>,
    /// A pose's keypoints as COCO's triples `x, y, visibility`, the points as fractions.
    keypoints: Option<Vec<f64>>,
    position: String,
}

/// The objects of one label file, class `k` given category id `ids[k]`, with keypoints of
/// `pose` (`kpt_shape`) where the dataset has them; each bad line is a problem naming the
/// file and line.
fn read_labels(
    text: &str,
    ids: &[i64],
    pose: Option<(usize, usize)>,
    file: &str,
    problems: &mut Vec<String>,
) -> Vec<LabelObject> {
    let mut objects = Vec::new();
    let mut seen = HashSet::new();
    for (n, line) in text.lines().enumerate() {
        let at = format!("{file} line {}", n + 1);
        let line = line.trim();
        // Ultralytics keeps a repeated line once.
        if line.is_empty() || !seen.insert(line) {
            continue;
        }
        let numbers: std::result::Result<Vec<f64>, _> = line.split_whitespace().map(str::parse::<f64>).collect();
        let Ok(numbers) = numbers else {
            problems.push(format!("{at}: {line:?} is not numbers (class cx cy w h, or class x1 y1 x2 y2 …)"));
            continue;
        };
        let class = numbers[0];
        if class.fract() != 0.0 || class < 0.0 || class >= ids.len() as f64 {
            problems.push(format!("{at}: class {class} is not an index of names (0 to {})", ids.len() - 1));
            continue;
        }
        let values = &numbers[1..];
        if let Some((count, dims)) = pose
            && values.len() != 4 + count * dims
        {
            problems.push(format!(
                "{at}: {} numbers after the class: a pose line is cx cy w h and kpt_shape's {count} keypoints of \
                 {dims} numbers ({})",
                values.len(),
                4 + count * dims
            ));
            continue;
        }
        // A pose line's keypoints carry a visibility (0, 1, 2) after each point, which is
        // not a fraction.
        let is_coordinate = |i: usize| pose.is_none_or(|(_, dims)| i < 4 || (i - 4) % dims < 2);
        if let Some(v) = values
            .iter()
            .enumerate()
            .filter(|&(i, _)| is_coordinate(i))
            .map(|(_, v)| v)
            .find(|v| !(0.0..=1.0).contains(*v))
        {
            problems.push(format!(
                "{at}: {v} is not a fraction in [0, 1]: YOLO labels are fractions of the image's width and height"
            ));
            continue;
        }
        let keypoints = pose.map(|(_, dims)| coco_keypoints(&values[4..], dims));
        let (bbox, polygon) = if values.len() == 4 || pose.is_some() {
            (centre_box([values[0], values[1], values[2], values[3]]), None)
        } else if values.len() >= 6 && values.len() % 2 == 0 {
            (polygon_box(values), Some(values.to_vec()))
        } else {
            problems.push(format!(
                "{at}: {} numbers after the class: a box is cx cy w h (4), a polygon x1 y1 x2 y2 … (3 points or more)",
                values.len()
            ));
            continue;
        };
        objects.push(LabelObject { category_id: ids[class as usize], bbox, polygon, keypoints, position: at });
    }
    objects
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    #[test]
    fn labels_sit_where_ultralytics_looks_for_them() {
        let label = |p: &str| label_path(Path::new(p)).to_string_lossy().into_owned();
        assert_eq!(label("/d/images/val/a.jpg"), "/d/labels/val/a.txt");
        // The last images folder is the one turned.
        assert_eq!(label("/images/d/images/train/b.PNG"), "/images/d/labels/train/b.txt");
        // Without one, beside the image.
        assert_eq!(label("/d/val/c.jpeg"), "/d/val/c.txt");
        // A file named images is not a folder.
        assert_eq!(label("/d/x/images.jpg"), "/d/x/images.txt");
    }

    #[test]
    fn names_are_a_list_or_a_mapping_from_0() {
        let names = |yaml: &str| class_names(&YamlLoader::load_from_str(yaml).unwrap()[0]);
        assert_eq!(names("names: [person, car]").unwrap(), ["person", "car"]);
        assert_eq!(names("nc: 2\nnames:\n  1: car\n  0: person\n").unwrap(), ["person", "car"]);
        // A class named by a number or true stays its text.
        assert_eq!(names("names: ['1', true, 3.5]").unwrap(), ["1", "true", "3.5"]);
        assert_eq!(
            names("names: {0: a, 2: c}").unwrap_err(),
            "names: class indexes must be 0, 1, 2, …; class 1 is missing"
        );
        assert_eq!(names("nc: 3\nnames: [a, b]").unwrap_err(), "nc is 3 but names lists 2 classes");
        assert_eq!(names("names: [a, a]").unwrap_err(), "names: \"a\" names two classes");
        assert!(names("train: x").unwrap_err().starts_with("no names"));
    }

    #[test]
    fn label_lines_are_boxes_polygons_or_poses_and_bad_ones_are_named() {
        let ids = [1, 2];
        let mut problems = Vec::new();
        let text = "0 0.5 0.5 0.2 0.4\n1 0.1 0.1 0.3 0.1 0.2 0.6\n\n0 0.5 0.5 0.2 0.4\n";
        let objects = read_labels(text, &ids, None, "labels/x.txt", &mut problems);
        assert!(problems.is_empty(), "{problems:?}");
        // The repeated line is kept once, as Ultralytics keeps it.
        assert_eq!(objects.len(), 2);
        assert_eq!((objects[0].category_id, objects[0].bbox), (1, [0.4, 0.3, 0.2, 0.4]));
        let polygon = &objects[1];
        assert_eq!(polygon.category_id, 2);
        assert_eq!(polygon.bbox, [0.1, 0.1, 0.3 - 0.1, 0.6 - 0.1]);
        assert_eq!(polygon.polygon.as_deref(), Some(&[0.1, 0.1, 0.3, 0.1, 0.2, 0.6][..]));
        assert_eq!(polygon.position, "labels/x.txt line 2");
        // A pose line: the box, then keypoints with visibilities; or without (kpt_shape
        // [K, 2]), where 0 0 is an unlabelled point.
        let pose = read_labels("0 0.5 0.5 0.2 0.2 0.45 0.5 2 0.55 0.5 1\n", &ids, Some((2, 3)), "p.txt", &mut problems);
        assert_eq!((pose[0].bbox, pose[0].polygon.is_none()), ([0.4, 0.4, 0.2, 0.2], true));
        assert_eq!(pose[0].keypoints.as_deref(), Some(&[0.45, 0.5, 2.0, 0.55, 0.5, 1.0][..]));
        let pose = read_labels("0 0.5 0.5 0.2 0.2 0.45 0.5 0 0\n", &ids, Some((2, 2)), "p.txt", &mut problems);
        assert_eq!(pose[0].keypoints.as_deref(), Some(&[0.45, 0.5, 2.0, 0.0, 0.0, 0.0][..]));
        assert!(problems.is_empty(), "{problems:?}");
        read_labels(
            "0 0.5 0.5 0.2 0.2 0.45 0.5 2\n0 0.5 0.5 0.2 0.2 1.5 0.5 2\n",
            &ids,
            Some((1, 3)),
            "p.txt",
            &mut problems,
        );
        assert_eq!(problems.len(), 1, "{problems:?}");
        assert!(problems[0].starts_with("p.txt line 2: 1.5 is not a fraction"), "{problems:?}");
        problems.clear();
        read_labels("0 0.5 0.5 0.2 0.2 0.45 0.5\n", &ids, Some((1, 3)), "p.txt", &mut problems);
        assert_eq!(
            problems,
            ["p.txt line 1: 6 numbers after the class: a pose line is cx cy w h and kpt_shape's 1 keypoints of 3 \
              numbers (7)"]
        );
        problems.clear();
        read_labels("2 0.5 0.5 0.1 0.1\n0 50 60 10 10\n0 0.5 0.5 0.1\nx 1 2 3 4\n", &ids, None, "y.txt", &mut problems);
        assert_eq!(
            problems,
            [
                "y.txt line 1: class 2 is not an index of names (0 to 1)",
                "y.txt line 2: 50 is not a fraction in [0, 1]: YOLO labels are fractions of the image's width and \
                 height",
                "y.txt line 3: 3 numbers after the class: a box is cx cy w h (4), a polygon x1 y1 x2 y2 … (3 points \
                 or more)",
                "y.txt line 4: \"x 1 2 3 4\" is not numbers (class cx cy w h, or class x1 y1 x2 y2 …)",
            ]
        );
    }

    fn touch(path: &Path, bytes: &[u8]) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, bytes).unwrap();
    }

    #[test]
    fn coco_itself_keeps_cocos_category_ids_as_ultralytics_writes_them() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path().join("coco");
        let names: Vec<String> = (0..80).map(|k| format!("class{k}")).collect();
        let names_yaml = format!("names: [{}]\n", names.join(", "));
        touch(&d.join("images/val2017/a.jpg"), b"x");
        // Class 11 is "stop sign", COCO's id 13; class 79 "toothbrush", id 90.
        touch(&d.join("labels/val2017/a.txt"), b"11 0.5 0.5 0.5 0.5\n79 0.5 0.5 0.1 0.1\n");
        touch(&d.join("val2017.txt"), b"./images/val2017/a.jpg\n");
        touch(&d.join("coco.yaml"), format!("path: .\nval: val2017.txt\n{names_yaml}").as_bytes());
        let objects = gather(&d.join("coco.yaml"), &ImportOptions::default()).unwrap().objects.unwrap();
        let ids: Vec<i64> = objects.categories.iter().map(|c| c.id).collect();
        assert_eq!(ids, COCO80_TO_COCO91);
        assert_eq!((objects.categories[11].id, objects.categories[79].id), (13, 90));
        assert_eq!(objects.objects.iter().map(|o| o.category_id).collect::<Vec<_>>(), [13, 90]);
        // The same images listed by a folder (coco128-style), or another class count: 1..n,
        // as Ultralytics numbers every dataset but COCO.
        touch(&d.join("folder.yaml"), format!("path: .\nval: images/val2017\n{names_yaml}").as_bytes());
        let objects = gather(&d.join("folder.yaml"), &ImportOptions::default()).unwrap().objects.unwrap();
        assert_eq!(objects.categories[11].id, 12);
        touch(&d.join("labels/val2017/a.txt"), b"2 0.5 0.5 0.5 0.5\n");
        touch(&d.join("few.yaml"), b"path: .\nval: val2017.txt\nnames: [a, b, c]\n");
        let objects = gather(&d.join("few.yaml"), &ImportOptions::default()).unwrap().objects.unwrap();
        assert_eq!(objects.categories.iter().map(|c| c.id).collect::<Vec<_>>(), [1, 2, 3]);
        assert_eq!(objects.objects[0].category_id, 3);
    }

    #[test]
    fn splits_come_from_folders_lists_and_roboflow_paths() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // Roboflow's export: the yaml at the root, splits named ../train/images.
        touch(&d.join("train/images/a.jpg"), b"x");
        touch(&d.join("train/labels/a.txt"), b"0 0.5 0.5 0.5 0.5\n");
        touch(&d.join("valid/images/b.jpg"), b"x");
        touch(&d.join("valid/images/.hidden.jpg"), b"x");
        touch(&d.join("test/list.txt"), b"./../train/images/a.jpg\n../valid/images/b.jpg\n");
        touch(
            &d.join("data.yaml"),
            b"train: ../train/images\nval: ../valid/images\ntest: test/list.txt\nnc: 1\nnames: ['crack']\n",
        );
        let set = gather(&d.join("data.yaml"), &ImportOptions::default()).unwrap();
        let ids: Vec<(&str, Option<&str>)> =
            set.candidates.iter().map(|c| (c.image_id.as_str(), c.split.as_deref())).collect();
        assert_eq!(ids, [("train/images/a.jpg", Some("train")), ("valid/images/b.jpg", Some("val"))]);
        // The test list names both again: each image is ingested once, in its first split.
        assert_eq!(set.rejected.len(), 2);
        assert!(set.rejected[0].reason.contains("listed by train and again by test"), "{:?}", set.rejected);
        let objects = set.objects.unwrap();
        assert!(objects.normalized);
        assert_eq!(objects.categories, [Category { id: 1, name: "crack".into() }]);
        assert_eq!(objects.objects.len(), 1);
        // Per-image counts, as a COCO import makes them.
        let extra = set.extra.as_ref().unwrap();
        let count = |name: &str| {
            use datafusion::arrow::array::AsArray;
            extra
                .column_by_name(name)
                .unwrap()
                .as_primitive::<datafusion::arrow::datatypes::Int64Type>()
                .values()
                .to_vec()
        };
        assert_eq!((count("num_annotations"), count("num_crack")), (vec![1, 0], vec![1, 0]));
        assert_eq!(
            (objects.objects[0].image_id.as_str(), objects.objects[0].bbox),
            ("train/images/a.jpg", [0.25, 0.25, 0.5, 0.5])
        );

        // A split that is not there, and a dataset folder that is not there.
        touch(&d.join("bad.yaml"), b"train: nowhere\nnames: [a]\n");
        let err = gather(&d.join("bad.yaml"), &ImportOptions::default()).unwrap_err().to_string();
        assert!(err.contains("train: ") && err.contains("nowhere is neither a folder of images"), "{err}");
        touch(&d.join("far.yaml"), b"path: ../../datasets/far\ntrain: images\nnames: [a]\n");
        let err = gather(&d.join("far.yaml"), &ImportOptions::default()).unwrap_err().to_string();
        assert!(err.contains("does not exist") && err.contains("pass --root"), "{err}");
        // --root stands for the yaml's path.
        let options = ImportOptions { root: Some(d.to_path_buf()), ..Default::default() };
        touch(&d.join("train/images/c.png"), b"x");
        let set = gather(&d.join("far.yaml"), &ImportOptions { root: Some(d.join("train")), ..options }).unwrap();
        assert_eq!(
            set.candidates.iter().map(|c| c.image_id.as_str()).collect::<Vec<_>>(),
            ["images/a.jpg", "images/c.png"]
        );
    }
}
