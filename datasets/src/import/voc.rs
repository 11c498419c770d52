//! Pascal VOC: one XML file per image (`<annotation>` with `<filename>` and an `<object>`
//! per box: `<name>`, `<bndbox>` with `xmin ymin xmax ymax`, and flags such as
//! `<difficult>`), as VOC2007/2012, LabelImg and Roboflow's VOC export write them.
//!
//! Rules (docs/formats.md):
//! - the input is a folder; every `.xml` below it is an annotation (hidden names
//!   skipped). The image is the XML's `<filename>` beside the XML, else in a
//!   `JPEGImages` folder beside the XML's folder (VOC's `Annotations/` + `JPEGImages/`),
//!   else the image of the XML's own stem there. The other images of the folders that hold
//!   annotated ones are images without objects;
//! - `split`: VOC's `ImageSets/Main/{train,val,test}.txt` lists ids (XML stems) when the
//!   folder has them, else the nearest split-named folder above the image (Roboflow's
//!   `train/`, `valid/`, `test/`), as for a folder of images;
//! - boxes: VOC corners are 1-based pixel indices, both inclusive, so `[x, y, w, h]` is
//!   `[xmin - 1, ymin - 1, xmax - xmin + 1, ymax - ymin + 1]` — Detectron2's reading
//!   (`load_voc_instances`), where a box from 1 to W covers the whole image;
//! - categories are the names found, numbered 1, 2, … in name order (stable across
//!   ingests, as a box manifest's); `difficult`, `truncated`, `occluded` (0/1) and `pose`
//!   become columns of `objects`. A difficult object stays a ground truth: slice on
//!   `difficult` to set them apart.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use serde::Deserialize;
use walkdir::WalkDir;

use super::{
    Candidate, CandidateSet, ImportOptions, OUTSIDE_HINT_ROOT, Rejection, canonical_root, normalize_split, relative_id,
    resolve_inside,
};
use crate::error::{DatasetError, Result};
use crate::objects::{Category, ImportedObject, ImportedObjects};

/// At most this many annotation problems are listed in a refusal.
const MAX_PROBLEMS: usize = 20;

#[derive(Deserialize)]
struct Annotation {
    filename: Option<String>,
    #[serde(default, rename = "object")]
    objects: Vec<VocObject>,
}

#[derive(Deserialize)]
struct VocObject {
    name: Option<String>,
    bndbox: Option<BndBox>,
    pose: Option<String>,
    truncated: Option<String>,
    difficult: Option<String>,
    occluded: Option<String>,
}

#[derive(Deserialize)]
struct BndBox {
    xmin: String,
    ymin: String,
    xmax: String,
    ymax: String,
}

/// Whether `dir` looks like a VOC folder: an `Annotations` folder, or `.xml` files in it
/// or one folder down (LabelImg's and Roboflow's XML beside each image).
pub(super) fn looks_like_voc(dir: &Path) -> bool {
    let xml_at_top = WalkDir::new(dir)
        .max_depth(2)
        .into_iter()
        .flatten()
        .any(|e| e.file_type().is_file() && e.path().extension().is_some_and(|x| x.eq_ignore_ascii_case("xml")));
    dir.join("Annotations").is_dir() || xml_at_top
}

pub(super) fn gather(dir: &Path, _options: &ImportOptions) -> Result<CandidateSet> {
    let bad = |message: String| DatasetError::BadInput { source_path: dir.to_path_buf(), message };
    let root = canonical_root(dir)?;
    let xmls: Vec<PathBuf> = super::visible_entries(&root, usize::MAX)
        .flatten()
        .filter(|e| e.file_type().is_file())
        .map(|e| e.into_path())
        .filter(|p| p.extension().is_some_and(|e| e.eq_ignore_ascii_case("xml")))
        .collect();
    if xmls.is_empty() {
        return Err(bad("no .xml annotation files found (looked recursively)".into()));
    }
    let image_sets = image_sets(&root).map_err(&bad)?;

    let mut set = CandidateSet::default();
    let mut parsed: Vec<(usize, PathBuf, Vec<VocObject>)> = Vec::new();
    let mut problems = Vec::new();
    let mut seen: HashMap<String, PathBuf> = HashMap::new();
    for xml in &xmls {
        let shown = relative_id(&root, xml).unwrap_or_else(|| xml.display().to_string());
        let text = std::fs::read_to_string(xml).map_err(DatasetError::io("reading", xml))?;
        let annotation: Annotation = match quick_xml::de::from_str(&text) {
            Ok(a) => a,
            Err(e) => {
                problems.push(format!("{shown}: not a VOC <annotation> ({e})"));
                continue;
            }
        };
        let stem = xml.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
        let Some(image) = find_image(xml, annotation.filename.as_deref(), &stem) else {
            let named = annotation.filename.as_deref().unwrap_or("(no <filename>)");
            set.rejected.push(Rejection {
                item: shown,
                reason: format!("its image {named} is neither beside it nor in a JPEGImages folder beside its folder"),
            });
            continue;
        };
        let file = match resolve_inside(&root, &image, OUTSIDE_HINT_ROOT) {
            Ok(file) => file,
            Err(reason) => {
                set.rejected.push(Rejection { item: shown, reason });
                continue;
            }
        };
        let image_id = relative_id(&root, &file).expect("inside the root");
        if let Some(first) = seen.insert(image_id.clone(), xml.clone()) {
            let first = relative_id(&root, &first).unwrap_or_default();
            set.rejected.push(Rejection { item: shown, reason: format!("{first} annotates the same image") });
            continue;
        }
        parsed.push((set.candidates.len(), xml.clone(), annotation.objects));
        push_image(&mut set, file, image_id, &stem, image_sets.as_ref());
    }

    // The other images of the folders that hold annotated ones are images without objects
    // (LabelImg writes no XML for an image without boxes). Other folders' images are not
    // read: VOC's SegmentationClass/ PNGs are masks, not images.
    let taken: std::collections::HashSet<PathBuf> = set.candidates.iter().map(|c| c.file.clone()).collect();
    let folders: std::collections::BTreeSet<PathBuf> =
        taken.iter().filter_map(|f| f.parent().map(Path::to_path_buf)).collect();
    let entries = folders.iter().flat_map(|folder| super::visible_entries(folder, 1));
    for entry in entries.flatten() {
        if !entry.file_type().is_file() || !crate::probe::has_image_extension(entry.path()) {
            continue;
        }
        let Ok(file) = resolve_inside(&root, entry.path(), OUTSIDE_HINT_ROOT) else { continue };
        if !taken.contains(&file) {
            let image_id = relative_id(&root, &file).expect("inside the root");
            let stem = file.file_stem().map(|s| s.to_string_lossy().into_owned()).unwrap_or_default();
            push_image(&mut set, file, image_id, &stem, image_sets.as_ref());
        }
    }

    let names: std::collections::BTreeSet<String> =
        parsed.iter().flat_map(|(_, _, objects)| objects.iter().filter_map(|o| o.name.clone())).collect();
    let category_of: BTreeMap<String, i64> =
        names.into_iter().enumerate().map(|(i, name)| (name, i as i64 + 1)).collect();
    let mut objects = Vec::new();
    for (row, xml, voc_objects) in parsed {
        let shown = relative_id(&root, &xml).unwrap_or_else(|| xml.display().to_string());
        for (n, object) in voc_objects.into_iter().enumerate() {
            let at = format!("{shown} object #{}", n + 1);
            let Some(name) = object.name.as_deref().map(str::trim).filter(|n| !n.is_empty()) else {
                problems.push(format!("{at}: no <name>"));
                continue;
            };
            let corners = object.bndbox.as_ref().map(|b| {
                [&b.xmin, &b.ymin, &b.xmax, &b.ymax].map(|v| v.trim().parse::<f64>().ok().filter(|v| v.is_finite()))
            });
            let Some([Some(xmin), Some(ymin), Some(xmax), Some(ymax)]) = corners else {
                problems.push(format!("{at}: <bndbox> needs numbers xmin, ymin, xmax and ymax"));
                continue;
            };
            if xmax < xmin || ymax < ymin {
                problems.push(format!("{at}: xmax {xmax} < xmin {xmin} or ymax {ymax} < ymin {ymin}"));
                continue;
            }
            let mut extra = BTreeMap::new();
            for (column, value) in
                [("truncated", &object.truncated), ("difficult", &object.difficult), ("occluded", &object.occluded)]
            {
                if let Some(value) = value.as_deref().map(str::trim) {
                    match value.parse::<i64>() {
                        Ok(flag) => extra.insert(column.to_string(), serde_json::Value::from(flag)),
                        Err(_) => extra.insert(column.to_string(), serde_json::Value::String(value.to_string())),
                    };
                }
            }
            if let Some(pose) = object.pose.as_deref().map(str::trim).filter(|p| !p.is_empty()) {
                extra.insert("pose".to_string(), serde_json::Value::String(pose.to_string()));
            }
            objects.push(ImportedObject {
                image_id: set.candidates[row].image_id.clone(),
                object_id: objects.len() as i64 + 1,
                numbered: true,
                category_id: category_of[name],
                bbox: [xmin - 1.0, ymin - 1.0, xmax - xmin + 1.0, ymax - ymin + 1.0],
                area: None,
                iscrowd: false,
                extra,
                position: at,
            });
        }
        if problems.len() >= MAX_PROBLEMS {
            break;
        }
    }
    if !problems.is_empty() {
        problems.truncate(MAX_PROBLEMS);
        return Err(bad(format!("VOC annotations rejected, nothing was ingested:\n  - {}", problems.join("\n  - "))));
    }
    if set.candidates.is_empty() && set.rejected.is_empty() {
        return Err(bad("no annotated images found".into()));
    }
    let objects = ImportedObjects {
        objects,
        categories: category_of.into_iter().map(|(name, id)| Category { id, name }).collect(),
        images: set.candidates.iter().map(|c| c.image_id.clone()).collect(),
        numbered_categories: true,
        normalized: false,
    };
    super::attach_objects(&mut set, objects)?;
    Ok(set)
}

/// Adds the image `file` as the next candidate; its split is the one VOC's lists give
/// `stem`, or, without lists, its folders'.
fn push_image(
    set: &mut CandidateSet,
    file: PathBuf,
    image_id: String,
    stem: &str,
    image_sets: Option<&HashMap<String, String>>,
) {
    let split = match image_sets {
        Some(sets) => sets.get(stem).cloned(),
        None => super::folder::split_and_label(&image_id).0,
    };
    let row = set.candidates.len();
    let uri = file.to_string_lossy().into_owned();
    set.candidates.push(Candidate { uri, image_id, file, split, label: None, row, stamp: None });
}

/// The image an annotation names: `<filename>` beside the XML, else in `JPEGImages`
/// beside the XML's folder; failing both, an image of the XML's stem there.
fn find_image(xml: &Path, filename: Option<&str>, stem: &str) -> Option<PathBuf> {
    let dir = xml.parent()?;
    let mut places = vec![dir.to_path_buf()];
    if let Some(parent) = dir.parent() {
        places.push(parent.join("JPEGImages"));
    }
    let named = filename.map(str::trim).filter(|f| !f.is_empty());
    let by_name = named.and_then(|name| places.iter().map(|p| p.join(name)).find(|p| p.is_file()));
    by_name.or_else(|| {
        places.iter().find_map(|place| {
            crate::probe::IMAGE_EXTENSIONS.iter().map(|ext| place.join(format!("{stem}.{ext}"))).find(|p| p.is_file())
        })
    })
}

/// VOC's split lists, `ImageSets/Main/{train,val,test}.txt` (an id a line; `trainval` is
/// their union and not read): id → split. `None` when the folder has none.
fn image_sets(root: &Path) -> std::result::Result<Option<HashMap<String, String>>, String> {
    let main = root.join("ImageSets").join("Main");
    let mut sets = HashMap::new();
    let mut any = false;
    for split in ["train", "val", "test"] {
        let path = main.join(format!("{split}.txt"));
        let Ok(text) = std::fs::read_to_string(&path) else { continue };
        any = true;
        for id in text.lines().filter_map(|l| l.split_whitespace().next()) {
            if let Some(first) = sets.insert(id.to_string(), normalize_split(split))
                && first != split
            {
                return Err(format!("{id} is listed by ImageSets/Main/{first}.txt and {split}.txt"));
            }
        }
    }
    Ok(any.then_some(sets))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;

    fn touch(path: &Path, text: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, text).unwrap();
    }

    fn annotation(filename: &str, objects: &[(&str, [u32; 4], u8)]) -> String {
        let objects: String = objects
            .iter()
            .map(|(name, [x0, y0, x1, y1], difficult)| {
                format!(
                    "<object><name>{name}</name><pose>Left</pose><truncated>0</truncated>\
                     <difficult>{difficult}</difficult><bndbox><xmin>{x0}</xmin><ymin>{y0}</ymin>\
                     <xmax>{x1}</xmax><ymax>{y1}</ymax></bndbox><part><name>head</name></part></object>"
                )
            })
            .collect();
        format!(
            "<annotation><folder>VOC2012</folder><filename>{filename}</filename><size><width>40</width>\
             <height>30</height><depth>3</depth></size><segmented>0</segmented>{objects}</annotation>"
        )
    }

    #[test]
    fn voc_folders_give_images_splits_and_detectron2_boxes() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        touch(&d.join("Annotations/2007_000027.xml"), &annotation("2007_000027.jpg", &[("person", [1, 1, 40, 30], 0)]));
        touch(
            &d.join("Annotations/2007_000032.xml"),
            &annotation("2007_000032.jpg", &[("aeroplane", [11, 6, 20, 15], 1), ("person", [3, 4, 5, 6], 0)]),
        );
        // An annotation whose <filename> is wrong finds the image of its own stem.
        touch(&d.join("Annotations/2007_000033.xml"), &annotation("renamed.jpg", &[]));
        touch(&d.join("Annotations/2007_000099.xml"), &annotation("gone.jpg", &[]));
        for id in ["2007_000027", "2007_000032", "2007_000033", "2007_000040"] {
            touch(&d.join(format!("JPEGImages/{id}.jpg")), "x");
        }
        touch(&d.join("ImageSets/Main/train.txt"), "2007_000027\n2007_000033\n");
        // A mask is not an image of the dataset.
        touch(&d.join("SegmentationClass/2007_000032.png"), "x");
        touch(&d.join("ImageSets/Main/val.txt"), "2007_000032\n");
        touch(&d.join("ImageSets/Main/trainval.txt"), "2007_000027\n2007_000032\n2007_000033\n");
        assert!(looks_like_voc(d));
        let set = gather(d, &ImportOptions::default()).unwrap();
        let images: Vec<(&str, Option<&str>)> =
            set.candidates.iter().map(|c| (c.image_id.as_str(), c.split.as_deref())).collect();
        assert_eq!(
            images,
            [
                ("JPEGImages/2007_000027.jpg", Some("train")),
                ("JPEGImages/2007_000032.jpg", Some("val")),
                ("JPEGImages/2007_000033.jpg", Some("train")),
                // No XML: an image without objects, in no split list.
                ("JPEGImages/2007_000040.jpg", None)
            ]
        );
        assert_eq!(set.rejected.len(), 1);
        assert!(set.rejected[0].reason.starts_with("its image gone.jpg is neither beside it"), "{:?}", set.rejected);
        let objects = set.objects.unwrap();
        assert_eq!(
            objects.categories,
            [Category { id: 1, name: "aeroplane".into() }, Category { id: 2, name: "person".into() }]
        );
        // 1-based inclusive corners: a box from 1 to W covers the whole image.
        let boxes: Vec<(i64, [f64; 4])> = objects.objects.iter().map(|o| (o.category_id, o.bbox)).collect();
        assert_eq!(boxes, [(2, [0.0, 0.0, 40.0, 30.0]), (1, [10.0, 5.0, 10.0, 10.0]), (2, [2.0, 3.0, 3.0, 3.0])]);
        let flags = &objects.objects[1].extra;
        assert_eq!(flags["difficult"], 1);
        assert_eq!(flags["pose"], "Left");
        assert_eq!(objects.objects[1].position, "Annotations/2007_000032.xml object #1");
    }

    #[test]
    fn xml_beside_images_takes_the_split_of_its_folder_and_bad_boxes_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // Roboflow's VOC export: train/, valid/, each image with its XML.
        touch(&d.join("train/a.jpg"), "x");
        touch(&d.join("train/a.xml"), &annotation("a.jpg", &[("crack", [5, 5, 9, 9], 0)]));
        touch(&d.join("valid/b.jpg"), "x");
        touch(&d.join("valid/b.xml"), &annotation("b.jpg", &[("crack", [5, 5, 9, 9], 0)]));
        assert!(looks_like_voc(d));
        let set = gather(d, &ImportOptions::default()).unwrap();
        let images: Vec<(&str, Option<&str>)> =
            set.candidates.iter().map(|c| (c.image_id.as_str(), c.split.as_deref())).collect();
        assert_eq!(images, [("train/a.jpg", Some("train")), ("valid/b.jpg", Some("val"))]);
        touch(
            &d.join("valid/b.xml"),
            &annotation("b.jpg", &[("crack", [9, 5, 5, 9], 0)]).replace("<name>crack", "<name>"),
        );
        touch(
            &d.join("train/a.xml"),
            "<annotation><filename>a.jpg</filename><object><name>x</name><bndbox><xmin>one</xmin><ymin>1</ymin><xmax>2</xmax><ymax>2</ymax></bndbox></object></annotation>",
        );
        let err = gather(d, &ImportOptions::default()).unwrap_err().to_string();
        assert!(err.contains("train/a.xml object #1: <bndbox> needs numbers xmin, ymin, xmax and ymax"), "{err}");
        assert!(err.contains("valid/b.xml object #1: no <name>"), "{err}");
    }
}
