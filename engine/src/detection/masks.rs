//! Mask AP: a detection run whose detections carry instance masks, against ground truth
//! whose objects carry theirs (a COCO file's `segmentation`), matched by mask IoU as
//! pycocotools' `COCOeval(iouType='segm')` matches them. Everything else about a run
//! (operating point, confusions, galleries) stays with its boxes.
//!
//! A detection's area, which decides its area range when unmatched, is its mask's pixel
//! count, as in pycocotools' `loadRes` for results without a `bbox`; Detectron2 drops the
//! boxes before evaluating masks for that reason. A ground truth's is its annotation's
//! `area`, as for boxes.

use slicetest_datasets::coco_mask::{BinaryMask, Segmentation};
use slicetest_eval::coco::{CellOverlap, Overlap};

/// A mask to decode when its (image, category) pair is matched: its `segmentation` JSON
/// and its image's `[width, height]`.
pub type StoredMask<'a> = (&'a str, [u32; 2]);

/// Masks overlap by their shared pixels (see [`BinaryMask::iou`]). Public for
/// `bench-masks`, which times it against pycocotools on the same files.
pub struct MaskOverlap<'a> {
    /// Per ground truth, in the order given to the evaluation.
    pub ground_truth: Vec<StoredMask<'a>>,
    /// Per detection, in the order given to the evaluation.
    pub detections: Vec<StoredMask<'a>>,
}

/// A stored mask's pixels. Both sides were decoded when they were stored (the ingest's
/// check of a COCO file's masks, the upload's of a run's), so a failure here means a
/// file changed under its hash check; it counts as an empty mask.
fn decode((json, [width, height]): StoredMask<'_>) -> BinaryMask {
    let mask = serde_json::from_str::<Segmentation>(json).ok().and_then(|s| s.to_mask(height, width).ok());
    mask.unwrap_or(BinaryMask { height, width, ranges: Vec::new() })
}

impl Overlap for MaskOverlap<'_> {
    fn cell(&self, detections: &[u32], ground_truth: &[u32], crowd: &[bool]) -> CellOverlap {
        let truth: Vec<BinaryMask> = ground_truth.iter().map(|&g| decode(self.ground_truth[g as usize])).collect();
        let found: Vec<BinaryMask> = detections.iter().map(|&d| decode(self.detections[d as usize])).collect();
        CellOverlap {
            ious: found.iter().flat_map(|d| truth.iter().zip(crowd).map(|(g, &c)| d.iou(g, c))).collect(),
            detection_areas: found.iter().map(|d| d.area() as f64).collect(),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use sha2::{Digest, Sha256};
    use slicetest_eval::coco::{Accumulated, Params, STAT_NAMES, evaluate_with};
    use slicetest_eval::coco_files;

    use super::*;

    fn fixture(name: &str) -> serde_json::Value {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/coco_segm").join(name);
        serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
    }

    fn digest(values: &[f64]) -> String {
        let mut hash = Sha256::new();
        values.iter().for_each(|v| hash.update(v.to_le_bytes()));
        hex::encode(hash.finalize())
    }

    /// Every stat bit for bit and the whole precision / recall / scores arrays.
    fn check(what: &str, got: &Accumulated, expected: &serde_json::Value) {
        let stats = got.stats();
        for (i, bits) in expected["stats_bits"].as_array().unwrap().iter().enumerate() {
            let want = f64::from_bits(u64::from_str_radix(bits.as_str().unwrap(), 16).unwrap());
            assert_eq!(
                stats[i].to_bits(),
                want.to_bits(),
                "{what}: {} is {} but pycocotools gives {want}",
                STAT_NAMES[i],
                stats[i]
            );
        }
        assert_eq!(digest(&got.precision), expected["precision_sha256"], "{what}: the precision array differs");
        assert_eq!(digest(&got.recall), expected["recall_sha256"], "{what}: the recall array differs");
        assert_eq!(digest(&got.scores), expected["scores_sha256"], "{what}: the scores array differs");
    }

    /// Mask AP equals pycocotools' `COCOeval(iouType='segm')` on `fixtures/coco_segm`
    /// (made by its `make_reference.py`): polygons of one or two parts reaching past the
    /// image, crowds as uncompressed RLE, compressed-RLE detections, score ties; on every
    /// image and on a slice of them.
    #[test]
    fn mask_ap_matches_pycocotools_segm() {
        let (instances, results) = (fixture("instances.json"), fixture("results.json"));
        let inputs = coco_files::read(&instances.to_string(), &results.to_string()).unwrap();
        let size = |coco_id: &serde_json::Value| {
            let image = instances["images"].as_array().unwrap().iter().find(|im| im["id"] == *coco_id).unwrap();
            [image["width"].as_u64().unwrap() as u32, image["height"].as_u64().unwrap() as u32]
        };
        let texts = |list: &serde_json::Value| -> Vec<(String, [u32; 2])> {
            let list = list.as_array().unwrap();
            list.iter().map(|a| (a["segmentation"].to_string(), size(&a["image_id"]))).collect()
        };
        let (truth, found) = (texts(&instances["annotations"]), texts(&results));
        assert!(truth.iter().any(|(t, _)| t.contains("counts")), "the fixture has crowd RLEs");
        let overlap = MaskOverlap {
            ground_truth: truth.iter().map(|(t, s)| (t.as_str(), *s)).collect(),
            detections: found.iter().map(|(t, s)| (t.as_str(), *s)).collect(),
        };
        let (images, categories) = (inputs.image_ids.len() as u32, inputs.category_ids.len() as u32);
        let params = Params::default();
        let matching = evaluate_with(images, categories, &inputs.ground_truth, &inputs.detections, &params, &overlap);
        let expected = fixture("expected.json");
        check("every image", &matching.accumulate(), &expected["all"]);
        let slice: Vec<bool> = inputs.image_ids.iter().map(|id| id % 3 == 0).collect();
        check("images with id % 3 == 0", &matching.accumulate_images(&slice), &expected["ids_divisible_by_3"]);
        // A mask's box is pycocotools' toBbox of it (the fixture's boxes are toBbox's).
        for (n, result) in results.as_array().unwrap().iter().enumerate() {
            let segmentation: Segmentation = serde_json::from_value(result["segmentation"].clone()).unwrap();
            let Segmentation::Rle { size: [h, w], .. } = segmentation else { panic!("results are RLEs") };
            let expected: Vec<f64> = serde_json::from_value(result["bbox"].clone()).unwrap();
            assert_eq!(segmentation.to_mask(h, w).unwrap().bbox().to_vec(), expected, "result #{n}");
        }
        // The boxes of the same files give other numbers: the masks are what was scored.
        let boxes =
            slicetest_eval::coco::evaluate(images, categories, &inputs.ground_truth, &inputs.detections, &params);
        assert_ne!(boxes.accumulate().stats()[0], matching.accumulate().stats()[0]);
    }
}
