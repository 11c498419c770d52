//! COCO files in, evaluation inputs out: an instances file (ground truth) and a results
//! file (detections), numbered as pycocotools numbers them (images and categories in
//! ascending id order). Used by the parity tests and the benchmark; the product reads
//! boxes from its own tables.

use std::collections::HashMap;

use serde::Deserialize;

use crate::coco::{Detection, GroundTruth};

#[derive(Deserialize)]
struct Instances {
    images: Vec<IdOnly>,
    categories: Vec<IdOnly>,
    #[serde(default)]
    annotations: Vec<FileAnnotation>,
}

#[derive(Deserialize)]
struct IdOnly {
    id: i64,
}

#[derive(Deserialize)]
struct FileAnnotation {
    image_id: i64,
    category_id: i64,
    bbox: [f64; 4],
    area: Option<f64>,
    #[serde(default)]
    iscrowd: u8,
}

#[derive(Deserialize)]
struct FileResult {
    image_id: i64,
    category_id: i64,
    bbox: [f64; 4],
    score: f64,
}

/// Evaluation inputs read from COCO files.
#[derive(Debug, Clone)]
pub struct CocoInputs {
    /// Image ids, ascending; an image's index is its position here.
    pub image_ids: Vec<i64>,
    /// Category ids, ascending; a category's index is its position here.
    pub category_ids: Vec<i64>,
    /// Ground truth in file order.
    pub ground_truth: Vec<GroundTruth>,
    /// Detections in file order.
    pub detections: Vec<Detection>,
}

/// Reads an instances file and a results file (both as JSON text). A detection on an
/// image or category the instances file lacks is an error, naming the detection.
pub fn read(instances: &str, results: &str) -> std::result::Result<CocoInputs, String> {
    let gt: Instances = serde_json::from_str(instances).map_err(|e| format!("instances file: {e}"))?;
    let dt: Vec<FileResult> = serde_json::from_str(results).map_err(|e| format!("results file: {e}"))?;
    number(
        gt.images.iter().map(|i| i.id),
        gt.categories.iter().map(|c| c.id),
        gt.annotations
            .iter()
            .map(|a| (a.image_id, a.category_id, a.bbox, a.area.unwrap_or(a.bbox[2] * a.bbox[3]), a.iscrowd != 0)),
        dt.iter().map(|d| (d.image_id, d.category_id, d.bbox, d.score)),
    )
}

/// Numbers images and categories in ascending id order and turns boxes into inputs.
pub fn number(
    image_ids: impl Iterator<Item = i64>,
    category_ids: impl Iterator<Item = i64>,
    annotations: impl Iterator<Item = (i64, i64, [f64; 4], f64, bool)>,
    results: impl Iterator<Item = (i64, i64, [f64; 4], f64)>,
) -> std::result::Result<CocoInputs, String> {
    let mut image_ids: Vec<i64> = image_ids.collect();
    image_ids.sort_unstable();
    image_ids.dedup();
    let mut category_ids: Vec<i64> = category_ids.collect();
    category_ids.sort_unstable();
    category_ids.dedup();
    let images: HashMap<i64, u32> = image_ids.iter().enumerate().map(|(i, &id)| (id, i as u32)).collect();
    let categories: HashMap<i64, u32> = category_ids.iter().enumerate().map(|(i, &id)| (id, i as u32)).collect();
    let mut ground_truth = Vec::new();
    for (n, (image_id, category_id, bbox, area, iscrowd)) in annotations.enumerate() {
        let image = *images.get(&image_id).ok_or_else(|| format!("annotation #{n}: unknown image {image_id}"))?;
        let category =
            *categories.get(&category_id).ok_or_else(|| format!("annotation #{n}: unknown category {category_id}"))?;
        ground_truth.push(GroundTruth { image, category, bbox, area, iscrowd });
    }
    let mut detections = Vec::new();
    for (n, (image_id, category_id, bbox, score)) in results.enumerate() {
        let image = *images.get(&image_id).ok_or_else(|| format!("detection #{n}: unknown image {image_id}"))?;
        let category =
            *categories.get(&category_id).ok_or_else(|| format!("detection #{n}: unknown category {category_id}"))?;
        detections.push(Detection { image, category, bbox, score });
    }
    Ok(CocoInputs { image_ids, category_ids, ground_truth, detections })
}
