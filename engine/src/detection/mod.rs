//! Scoring detection runs: a run's boxes against the dataset's ground-truth objects with
//! COCO evaluation (`slicetest-eval`, pycocotools' semantics bit for bit). Matching is per
//! image, so it is done once per run ([`RunEvaluation::new`]); every slice re-accumulates
//! over its own images, which gives exactly what pycocotools gives when run on just
//! those images with the dataset's category list.
//!
//! Besides the COCO numbers, a run gets one operating point: IoU 0.5 and a score
//! threshold chosen once on the whole run (the one with the best micro F1) and never
//! re-optimised per slice, so a slice's TP/FP/FN, precision, recall and F1 compare across
//! slices.

pub mod cache;
mod confusion;
mod keypoints;
pub mod masks;
pub mod table_function;

use std::collections::HashMap;

use datafusion::arrow::array::{Array, AsArray, RecordBatch};
use datafusion::arrow::datatypes::{Float64Type, Int64Type};
use rayon::prelude::*;
use serde::Serialize;
use slicetest_datasets::WorkspaceLayout;
use slicetest_datasets::objects::{self, Category};
use slicetest_datasets::version::{DatasetVersion, read_image_columns};
use slicetest_eval::coco::{self, Accumulated, Detection, GroundTruth, Matching, Outcome, Params, ScoreOrder};

use crate::bootstrap::{SplitMix64, percentile_interval};
use crate::error::{EngineError, Result};
use crate::scoring::BOOTSTRAP_SEED;

pub use confusion::DetectionConfusion;

/// The IoU of the operating point (TP/FP/FN counts).
pub const OPERATING_IOU: f64 = 0.5;

/// Bootstrap resamples for AP intervals and regressions: each one re-accumulates the
/// whole run, so fewer than the 1,000 of the closed-form metrics.
pub const DETECTION_RESAMPLES: usize = 200;

/// COCO's summary statistics; `None` where pycocotools prints -1 (nothing to average:
/// no ground truth of that kind in the images).
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct CocoStats {
    /// AP averaged over IoU 0.50:0.95 (the headline "mAP").
    pub ap: Option<f64>,
    /// AP at IoU 0.50.
    pub ap50: Option<f64>,
    /// AP at IoU 0.75.
    pub ap75: Option<f64>,
    /// AP of small objects (area < 32²).
    pub ap_small: Option<f64>,
    /// AP of medium objects.
    pub ap_medium: Option<f64>,
    /// AP of large objects (area > 96²).
    pub ap_large: Option<f64>,
    /// Recall with 1 detection per image and class.
    pub ar1: Option<f64>,
    /// Recall with 10.
    pub ar10: Option<f64>,
    /// Recall with 100.
    pub ar100: Option<f64>,
    /// AR100 of small objects.
    pub ar_small: Option<f64>,
    /// AR100 of medium objects.
    pub ar_medium: Option<f64>,
    /// AR100 of large objects.
    pub ar_large: Option<f64>,
    /// AR100 at IoU 0.50.
    pub ar50: Option<f64>,
    /// AR100 at IoU 0.75.
    pub ar75: Option<f64>,
}

/// COCO's keypoint statistics (`COCOeval(iouType='keypoints')`: OKS thresholds 0.50:0.95,
/// 20 detections per image, no small area range); `None` where pycocotools prints -1.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct KeypointStats {
    /// Keypoint AP averaged over OKS 0.50:0.95 (the headline).
    pub ap: Option<f64>,
    /// AP at OKS 0.50.
    pub ap50: Option<f64>,
    /// AP at OKS 0.75.
    pub ap75: Option<f64>,
    /// AP of medium objects (area 32² to 96²).
    pub ap_medium: Option<f64>,
    /// AP of large objects (area > 96²).
    pub ap_large: Option<f64>,
    /// Recall with 20 detections per image.
    pub ar: Option<f64>,
    /// Recall at OKS 0.50.
    pub ar50: Option<f64>,
    /// Recall at OKS 0.75.
    pub ar75: Option<f64>,
    /// Recall of medium objects.
    pub ar_medium: Option<f64>,
    /// Recall of large objects.
    pub ar_large: Option<f64>,
}

/// TP/FP/FN at the run's operating point, with the rates they give.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Counts {
    /// Detections at or above the score threshold matching a ground truth at IoU ≥ 0.5.
    pub tp: u64,
    /// Detections at or above the threshold matching nothing.
    pub fp: u64,
    /// Ground truth (not crowd) that no such detection matched.
    #[serde(rename = "fn")]
    pub fn_: u64,
    /// tp / (tp + fp).
    pub precision: Option<f64>,
    /// tp / (tp + fn).
    pub recall: Option<f64>,
    /// 2·tp / (2·tp + fp + fn).
    pub f1: Option<f64>,
}

impl Counts {
    fn new(tp: u64, fp: u64, fn_: u64) -> Self {
        let ratio = |a: u64, b: u64| (b > 0).then(|| a as f64 / b as f64);
        Counts {
            tp,
            fp,
            fn_,
            precision: ratio(tp, tp + fp),
            recall: ratio(tp, tp + fn_),
            f1: ratio(2 * tp, 2 * tp + fp + fn_),
        }
    }

    fn add(&mut self, other: &Counts) {
        *self = Counts::new(self.tp + other.tp, self.fp + other.fp, self.fn_ + other.fn_);
    }
}

/// One category's numbers on a slice.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassMetrics {
    /// The category's name.
    pub category: String,
    /// Its id.
    pub category_id: i64,
    /// Ground-truth objects (not crowd) of this category in the slice.
    pub objects: u64,
    /// AP over IoU 0.50:0.95 (area all, 100 detections).
    pub ap: Option<f64>,
    /// AP at IoU 0.50.
    pub ap50: Option<f64>,
    /// AP at IoU 0.75.
    pub ap75: Option<f64>,
    /// Mask AP over IoU 0.50:0.95, when the run is scored by masks too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask_ap: Option<f64>,
    /// Keypoint AP over OKS 0.50:0.95, when the run is scored by poses too.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keypoint_ap: Option<f64>,
    /// Counts at the operating point.
    pub counts: Counts,
}

/// A detection run's metrics on one slice (or on all images).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DetectionMetrics {
    /// Images evaluated.
    pub images: u64,
    /// Ground-truth objects (not crowd) in them.
    pub objects: u64,
    /// Detections in them (at most 100 per image and category count).
    pub detections: u64,
    /// COCO's statistics.
    pub coco: CocoStats,
    /// COCO's statistics over instance masks (mask AP, `iouType='segm'`): present when
    /// the run's detections and the ground truth both have masks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask: Option<CocoStats>,
    /// Why a run with masks has no mask statistics (the ground truth lacks masks).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask_note: Option<String>,
    /// COCO's keypoint statistics (keypoint AP by OKS, `iouType='keypoints'`): present
    /// when the run's detections and the ground truth both have poses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keypoints: Option<KeypointStats>,
    /// What of a run's poses is not scored, and why (the ground truth has none; a
    /// category's poses of another skeleton).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keypoint_note: Option<String>,
    /// Per category, in category-id order.
    pub classes: Vec<ClassMetrics>,
    /// IoU of the operating point.
    pub iou: f64,
    /// Score threshold of the operating point (the same on every slice of the run).
    pub score_threshold: f64,
    /// Counts over every category at the operating point (micro).
    pub counts: Counts,
    /// Mean of the categories' F1 where defined (macro).
    pub macro_f1: Option<f64>,
    /// Per category with ground truth, its precision at recall 0, 0.01, …, 1 at IoU 0.5
    /// (COCO's interpolated PR curve), most ground truth first; only on the run's overall
    /// metrics.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub pr_curves: Vec<PrCurve>,
    /// The class confusion matrix at the operating point, with a background row and
    /// column.
    pub confusion: DetectionConfusion,
    /// The slice's worst images (most misses and false detections) with their boxes.
    pub worst_images: Vec<ImageFailures>,
    /// 95% bootstrap interval of `coco.ap` (images resampled, seeded).
    pub ap_interval: Option<[f64; 2]>,
    /// 95% bootstrap interval of `coco.ap50`.
    pub ap50_interval: Option<[f64; 2]>,
    /// 95% bootstrap interval of `mask.ap` (the same resampled images as `ap_interval`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask_ap_interval: Option<[f64; 2]>,
    /// 95% bootstrap interval of `keypoints.ap` (the same resampled images).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keypoint_ap_interval: Option<[f64; 2]>,
}

/// A detection run against a baseline run on the same slice: the boxes' mAP difference
/// and a paired bootstrap test of "this run is worse" (both runs scored on the same
/// resampled images); the same for the instance masks' mAP when both runs have masks, and
/// for keypoint AP when both have poses.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct DetectionRegression {
    /// The boxes' mAP (its fields at the top level of the JSON, as before masks).
    #[serde(flatten)]
    pub boxes: MapChange,
    /// The instance masks' mAP (COCO's `segm`), when both runs were scored with masks.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub mask: Option<MapChange>,
    /// Keypoint AP (COCO's `keypoints`), when both runs were scored with poses.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub keypoints: Option<MapChange>,
}

/// One mAP against the baseline's on a slice.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct MapChange {
    /// The baseline's mAP on the slice.
    pub baseline_map: Option<f64>,
    /// This run's mAP minus the baseline's.
    pub delta: Option<f64>,
    /// Share of resamples in which this run's mAP is not below the baseline's.
    pub p_value: f64,
    /// Whether the drop is significant at the chosen level.
    pub significant: bool,
}

/// One (image, category) pair at the operating IoU: its counted ground truth and its
/// detections' scores and outcomes.
struct Cell {
    image: u32,
    category: u32,
    counted: u32,
    detections: Vec<(f64, Outcome)>,
    /// Per detection (same order): its row in the run's file, and the position of the
    /// ground truth it matched (in `RunEvaluation::objects`) with the IoU.
    matches: Vec<(u32, Option<u32>, f64)>,
    /// Positions of the pair's ground truth in `RunEvaluation::objects`.
    ground_truth: Vec<u32>,
}

/// What became of one box at the run's operating point (IoU 0.5, score at or above the
/// run's threshold): a row of `detection_matches()`.
#[derive(Debug, Clone, PartialEq)]
pub struct BoxOutcome {
    /// The image.
    pub image_id: String,
    /// The category's name.
    pub category: String,
    /// `tp` (a detection matching an object), `fp` (a detection matching none), `fn`
    /// (an object no detection matched), `ignored` (a detection inside a crowd region).
    pub outcome: &'static str,
    /// The detection's row in the run (0-based), None for a missed object.
    pub detection: Option<u32>,
    /// The detection's score.
    pub score: Option<f64>,
    /// The object matched or missed (its `object_id`), None for a false positive.
    pub object_id: Option<i64>,
    /// IoU of the match.
    pub iou: Option<f64>,
}

/// A box of one cell at the operating point (see [`RunEvaluation::cell_boxes`]).
struct CellBox {
    outcome: &'static str,
    score: Option<f64>,
    /// The detection's row in the run's file.
    detection: Option<u32>,
    /// The object's position in `RunEvaluation::objects`.
    object: Option<u32>,
    iou: Option<f64>,
}

/// A run matched against the ground truth once; slices accumulate from it.
pub struct RunEvaluation {
    matching: Matching,
    /// The same detections matched by their masks (with its score order, for bootstrap
    /// draws), when the run and the ground truth have masks.
    mask_matching: Option<(Matching, ScoreOrder)>,
    /// Why a run with masks has no mask matching.
    mask_note: Option<String>,
    /// The same detections matched by their poses (OKS), when the run and the ground
    /// truth have poses.
    keypoint_matching: Option<(Matching, ScoreOrder)>,
    /// What of the run's poses is not scored.
    keypoint_note: Option<String>,
    order: ScoreOrder,
    image_ids: Vec<String>,
    image_index: HashMap<String, u32>,
    categories: Vec<Category>,
    cells: Vec<Cell>,
    score_threshold: f64,
    /// Ground truth in evaluation order: object id and crowd flag.
    objects: Vec<(i64, bool)>,
    /// Ground-truth boxes in evaluation order.
    object_boxes: Vec<[f64; 4]>,
    /// Every detection's box, by its row in the run's file.
    detection_boxes: Vec<[f64; 4]>,
    /// Width and height of each image, in evaluation order.
    image_sizes: Vec<[u32; 2]>,
    /// The confusion matrix's entries off its diagonal, per image.
    confusions: Vec<confusion::Confusion>,
}

/// Images shown per slice in failure galleries.
pub const GALLERY_SIZE: usize = 12;

/// A category's precision-recall curve.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PrCurve {
    /// The category.
    pub category: String,
    /// Precision at recall thresholds 0, 0.01, …, 1.
    pub precision: Vec<f64>,
}

/// A box to draw on a failure gallery's image.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DrawnBox {
    /// `tp`, `fp`, `fn` or `ignored` (see [`BoxOutcome`]).
    pub outcome: &'static str,
    /// The category.
    pub category: String,
    /// The detection's score (None for a missed object).
    pub score: Option<f64>,
    /// `[x, y, w, h]` in pixels: the detection's box, or the missed object's.
    pub bbox: [f64; 4],
}

/// One of a slice's worst images: its counts and every box at the operating point.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ImageFailures {
    /// The image.
    pub image_id: String,
    /// Its width and height in pixels (the boxes' frame).
    pub size: [u32; 2],
    /// Its counts at the operating point.
    pub counts: Counts,
    /// Its boxes.
    pub boxes: Vec<DrawnBox>,
}

impl RunEvaluation {
    /// Matches `detections` (a run's stored boxes) to the ground truth of `version`.
    /// Images are numbered by `coco_id` when the dataset has one (pycocotools' order,
    /// which breaks score ties between images), else by `image_id`.
    /// `score_threshold` fixes the operating point (else the best-F1 threshold).
    pub fn new(
        layout: &WorkspaceLayout,
        version: &DatasetVersion,
        detections: &RecordBatch,
        score_threshold: Option<f64>,
    ) -> Result<Self> {
        let Some(info) = &version.objects else {
            return Err(EngineError::InvalidArgument(format!(
                "dataset {:?} version {} has no ground-truth boxes to score a detection run against",
                version.dataset, version.version
            )));
        };
        let categories = info.categories.clone();
        let has_coco = version.columns.iter().any(|c| c.name == "coco_id");
        let columns: &[&str] =
            if has_coco { &["image_id", "width", "height", "coco_id"] } else { &["image_id", "width", "height"] };
        let images = read_image_columns(layout, version, columns)?;
        let sizes = slicetest_datasets::version::image_sizes(&images)?;
        let ids = images.column_by_name("image_id").expect("core column").as_string::<i32>();
        let mut order: Vec<usize> = (0..ids.len()).collect();
        if let Some(coco_ids) = images.column_by_name("coco_id") {
            let coco_ids = coco_ids.as_primitive::<Int64Type>();
            let key = |i: usize| (coco_ids.is_null(i), if coco_ids.is_null(i) { 0 } else { coco_ids.value(i) });
            order.sort_by(|&a, &b| key(a).cmp(&key(b)).then(ids.value(a).cmp(ids.value(b))));
        } else {
            order.sort_by(|&a, &b| ids.value(a).cmp(ids.value(b)));
        }
        let image_ids: Vec<String> = order.iter().map(|&i| ids.value(i).to_string()).collect();
        let image_sizes: Vec<[u32; 2]> = order.iter().map(|&i| sizes[i]).collect();
        let image_index: HashMap<String, u32> =
            image_ids.iter().enumerate().map(|(n, id)| (id.clone(), n as u32)).collect();
        let category_index: HashMap<i64, u32> = categories.iter().enumerate().map(|(k, c)| (c.id, k as u32)).collect();

        let mut ground_truth = Vec::new();
        let mut object_ids = Vec::new();
        let mut object_boxes = Vec::new();
        // Each ground truth's mask and pose (None where it has none), in `ground_truth`'s order.
        let mut object_masks: Vec<Option<&str>> = Vec::new();
        let mut object_poses: Vec<keypoints::StoredPose> = Vec::new();
        let objects = objects::read_objects(layout, version)?;
        if let Some(objects) = &objects {
            let masks = objects.column_by_name(objects::SEGMENTATION_COLUMN).and_then(|c| c.as_string_opt::<i32>());
            let poses = objects.column_by_name(objects::KEYPOINTS_COLUMN).and_then(|c| c.as_string_opt::<i32>());
            let labelled =
                objects.column_by_name(objects::NUM_KEYPOINTS_COLUMN).and_then(|c| c.as_primitive_opt::<Int64Type>());
            for (row, o) in objects::rows(objects).enumerate() {
                let (Some(&image), Some(&category)) = (image_index.get(o.image_id), category_index.get(&o.category_id))
                else {
                    continue;
                };
                ground_truth.push(GroundTruth { image, category, bbox: o.bbox, area: o.area, iscrowd: o.iscrowd });
                object_ids.push((o.object_id, o.iscrowd));
                object_boxes.push(o.bbox);
                object_masks.push(masks.filter(|m| m.is_valid(row)).map(|m| m.value(row)));
                object_poses.push(poses.filter(|p| p.is_valid(row)).and_then(|p| pose(p.value(row))).map(|points| {
                    let counted = slicetest_eval::keypoints::labelled_count(&points);
                    let given = labelled.filter(|l| l.is_valid(row)).map(|l| l.value(row).max(0) as u32);
                    (points, given.unwrap_or(counted))
                }));
            }
        }
        let column = |i: usize| detections.column(i);
        let (run_images, run_categories) = (column(1).as_string::<i32>(), column(3).as_primitive::<Int64Type>());
        let f = |i: usize| column(i).as_primitive::<Float64Type>();
        let (x, y, w, h, score) = (f(4), f(5), f(6), f(7), f(8));
        let mut boxes = Vec::with_capacity(detections.num_rows());
        let mut rows = Vec::with_capacity(detections.num_rows());
        let detection_boxes: Vec<[f64; 4]> =
            (0..detections.num_rows()).map(|i| [x.value(i), y.value(i), w.value(i), h.value(i)]).collect();
        for i in 0..detections.num_rows() {
            let (Some(&image), Some(&category)) =
                (image_index.get(run_images.value(i)), category_index.get(&run_categories.value(i)))
            else {
                continue;
            };
            boxes.push(Detection {
                image,
                category,
                bbox: [x.value(i), y.value(i), w.value(i), h.value(i)],
                score: score.value(i),
            });
            rows.push(i as u32);
        }
        let params = Params::default();
        let matching =
            coco::evaluate(image_index.len() as u32, categories.len() as u32, &ground_truth, &boxes, &params);
        let detection_poses = detections
            .column_by_name(slicetest_datasets::run::detections::KEYPOINTS_COLUMN)
            .and_then(|c| c.as_string_opt::<i32>());
        let found_poses: Vec<Option<Vec<f64>>> = rows
            .iter()
            .map(|&row| detection_poses.filter(|p| p.is_valid(row as usize)).and_then(|p| pose(p.value(row as usize))))
            .collect();
        let (keypoint_matching, keypoint_note) = keypoints::evaluate(
            image_index.len() as u32,
            &categories,
            &ground_truth,
            &object_poses,
            &boxes,
            &found_poses,
        );
        let detection_masks = detections
            .column_by_name(slicetest_datasets::run::detections::SEGMENTATION_COLUMN)
            .and_then(|c| c.as_string_opt::<i32>());
        let (mask_matching, mask_note) = match detection_masks.filter(|m| m.null_count() == 0) {
            None => (None, None),
            Some(found) => match object_masks.iter().filter(|m| m.is_none()).count() {
                0 => {
                    let overlap = masks::MaskOverlap {
                        ground_truth: object_masks
                            .iter()
                            .zip(&ground_truth)
                            .map(|(m, g)| (m.expect("counted"), image_sizes[g.image as usize]))
                            .collect(),
                        detections: rows
                            .iter()
                            .zip(&boxes)
                            .map(|(&row, d)| (found.value(row as usize), image_sizes[d.image as usize]))
                            .collect(),
                    };
                    let (images, classes) = (image_index.len() as u32, categories.len() as u32);
                    let matching = coco::evaluate_with(images, classes, &ground_truth, &boxes, &params, &overlap);
                    let order = matching.score_order();
                    (Some((matching, order)), None)
                }
                missing => (
                    None,
                    Some(format!(
                        "the run's masks are not scored: {missing} of the {} ground-truth objects have no mask (a \
                         COCO annotation's \"segmentation\"; box manifests carry none)",
                        ground_truth.len()
                    )),
                ),
            },
        };
        let t = params.iou_thresholds.iter().position(|&t| t == OPERATING_IOU).expect("COCO thresholds include 0.5");
        let counted: HashMap<(u32, u32), u32> =
            matching.counted_ground_truth().map(|(image, k, n)| ((image, k), n)).collect();
        let cells: Vec<Cell> = matching
            .box_matches(t)
            .map(|cell| Cell {
                image: cell.image,
                category: cell.category,
                counted: counted.get(&(cell.image, cell.category)).copied().unwrap_or(0),
                detections: cell.matches.iter().map(|m| (boxes[m.detection as usize].score, m.outcome)).collect(),
                matches: cell.matches.iter().map(|m| (rows[m.detection as usize], m.ground_truth, m.iou)).collect(),
                ground_truth: cell.ground_truth.to_vec(),
            })
            .collect();
        let score_threshold = score_threshold.unwrap_or_else(|| best_f1_threshold(&cells));
        let order = matching.score_order();
        let mut evaluation = RunEvaluation {
            matching,
            mask_matching,
            mask_note,
            keypoint_matching,
            keypoint_note,
            order,
            image_ids,
            image_index,
            categories,
            cells,
            score_threshold,
            objects: object_ids,
            object_boxes,
            detection_boxes,
            image_sizes,
            confusions: Vec::new(),
        };
        evaluation.confusions = evaluation.find_confusions();
        Ok(evaluation)
    }

    /// Every box's outcome at the operating point: detections at or above the score
    /// threshold (tp, fp or ignored) and objects no such detection matched (fn), by image
    /// and category; detections below the threshold are not listed.
    pub fn box_outcomes(&self) -> Vec<BoxOutcome> {
        let mut out = Vec::new();
        for cell in &self.cells {
            let image_id = &self.image_ids[cell.image as usize];
            let category = &self.categories[cell.category as usize].name;
            out.extend(self.cell_boxes(cell).into_iter().map(|b| BoxOutcome {
                image_id: image_id.clone(),
                category: category.clone(),
                outcome: b.outcome,
                detection: b.detection,
                score: b.score,
                object_id: b.object.map(|g| self.objects[g as usize].0),
                iou: b.iou,
            }));
        }
        out
    }

    /// One cell's boxes at the operating point: its detections at or above the score
    /// threshold, then its objects (not crowds) that none of them found.
    fn cell_boxes(&self, cell: &Cell) -> Vec<CellBox> {
        let mut boxes = Vec::new();
        let mut found = std::collections::HashSet::new();
        for (&(score, outcome), &(row, matched, iou)) in cell.detections.iter().zip(&cell.matches) {
            if score < self.score_threshold {
                continue;
            }
            if outcome == Outcome::TruePositive
                && let Some(g) = matched
            {
                found.insert(g);
            }
            let outcome = match outcome {
                Outcome::TruePositive => "tp",
                Outcome::FalsePositive => "fp",
                Outcome::Ignored => "ignored",
            };
            boxes.push(CellBox {
                outcome,
                score: Some(score),
                detection: Some(row),
                object: matched,
                iou: matched.map(|_| iou),
            });
        }
        for &g in &cell.ground_truth {
            if !self.objects[g as usize].1 && !found.contains(&g) {
                boxes.push(CellBox { outcome: "fn", score: None, detection: None, object: Some(g), iou: None });
            }
        }
        boxes
    }

    /// The score threshold of the run's operating point.
    pub fn score_threshold(&self) -> f64 {
        self.score_threshold
    }

    /// Every image with its counts at the operating point (all categories together).
    pub fn per_image(&self) -> Vec<(&str, Counts)> {
        let mut counts = vec![(0u64, 0u64, 0u64); self.image_ids.len()];
        for cell in &self.cells {
            let (tp, fp) = self.cell_counts(cell);
            let c = &mut counts[cell.image as usize];
            *c = (c.0 + tp, c.1 + fp, c.2 + cell.counted as u64 - tp);
        }
        self.image_ids.iter().zip(counts).map(|(id, (tp, fp, fn_))| (id.as_str(), Counts::new(tp, fp, fn_))).collect()
    }

    /// The included images with the most misses and false detections (at least one),
    /// worst first, with their boxes; at most [`GALLERY_SIZE`].
    pub fn worst_images(&self, include: &[bool]) -> Vec<ImageFailures> {
        let mut worst: Vec<(u32, Counts)> = self
            .per_image()
            .into_iter()
            .enumerate()
            .filter(|(i, (_, c))| include[*i] && c.fp + c.fn_ > 0)
            .map(|(i, (_, c))| (i as u32, c))
            .collect();
        worst.sort_by(|a, b| (b.1.fp + b.1.fn_).cmp(&(a.1.fp + a.1.fn_)).then(a.0.cmp(&b.0)));
        worst.truncate(GALLERY_SIZE);
        self.drawn(worst)
    }

    /// Image `image_id` with its counts and every box at the operating point; None when
    /// the dataset has no such image.
    pub fn image_boxes(&self, image_id: &str) -> Option<ImageFailures> {
        let &i = self.image_index.get(image_id)?;
        let counts = self.per_image()[i as usize].1;
        self.drawn(vec![(i, counts)]).pop()
    }

    /// The images (by position, with their counts) with their boxes drawn.
    fn drawn(&self, images: Vec<(u32, Counts)>) -> Vec<ImageFailures> {
        let wanted: HashMap<u32, usize> = images.iter().enumerate().map(|(n, (i, _))| (*i, n)).collect();
        let mut boxes: Vec<Vec<DrawnBox>> = vec![Vec::new(); images.len()];
        for cell in self.cells.iter() {
            let Some(&n) = wanted.get(&cell.image) else { continue };
            let category = &self.categories[cell.category as usize].name;
            boxes[n].extend(self.cell_boxes(cell).into_iter().map(|b| DrawnBox {
                outcome: b.outcome,
                category: category.clone(),
                score: b.score,
                bbox: match (b.detection, b.object) {
                    (Some(row), _) => self.detection_boxes[row as usize],
                    (None, Some(g)) => self.object_boxes[g as usize],
                    (None, None) => unreachable!("a box is a detection or an object"),
                },
            }));
        }
        images
            .into_iter()
            .zip(boxes)
            .map(|((i, counts), boxes)| ImageFailures {
                image_id: self.image_ids[i as usize].clone(),
                size: self.image_sizes[i as usize],
                counts,
                boxes,
            })
            .collect()
    }

    /// A cell's true and false positives at or above the score threshold.
    fn cell_counts(&self, cell: &Cell) -> (u64, u64) {
        let kept = cell.detections.iter().filter(|(s, _)| *s >= self.score_threshold);
        let tp = kept.clone().filter(|(_, o)| *o == Outcome::TruePositive).count() as u64;
        let fp = kept.filter(|(_, o)| *o == Outcome::FalsePositive).count() as u64;
        (tp, fp)
    }

    /// Metrics over the images with these ids (ids not in the dataset are passed over).
    pub fn slice<'a>(&self, image_ids: impl IntoIterator<Item = &'a str>) -> DetectionMetrics {
        self.metrics(&self.membership(image_ids))
    }

    /// Which images the ids name.
    pub fn membership<'a>(&self, image_ids: impl IntoIterator<Item = &'a str>) -> Vec<bool> {
        let mut include = vec![false; self.image_index.len()];
        for id in image_ids {
            if let Some(&i) = self.image_index.get(id) {
                include[i as usize] = true;
            }
        }
        include
    }

    /// Every image.
    pub fn everything(&self) -> Vec<bool> {
        vec![true; self.image_index.len()]
    }

    /// (AP, AP50) on each of [`DETECTION_RESAMPLES`] seeded resamples of the included
    /// images; NaN where undefined. The same resamples for every run of a dataset, so two
    /// runs' draws pair up.
    fn resampled_ap(&self, include: &[bool]) -> Vec<(f64, f64)> {
        resampled_ap(&self.matching, &self.order, include)
    }

    /// Scores the included images: their metrics (with the categories' PR curves when
    /// `curves`), and with a baseline run the paired bootstrap test of a mAP drop at level
    /// `alpha`. The accumulation and this run's bootstrap draws serve all three.
    pub fn score(
        &self,
        include: &[bool],
        baseline: Option<&RunEvaluation>,
        alpha: f64,
        curves: bool,
    ) -> (DetectionMetrics, Option<DetectionRegression>) {
        let accumulated = self.matching.accumulate_images(include);
        let draws = self.resampled_ap(include);
        let mut metrics = self.metrics_from(include, &accumulated, &draws);
        let mut mask_draws = Vec::new();
        if let Some((masks, order)) = &self.mask_matching {
            let accumulated = masks.accumulate_images(include);
            metrics.mask = Some(coco_stats(&accumulated));
            mask_draws = resampled_ap(masks, order, include);
            metrics.mask_ap_interval = interval(&mask_draws, |d| d.0);
            for (k, class) in metrics.classes.iter_mut().enumerate() {
                class.mask_ap = Some(accumulated.category_ap(k, None)).filter(|&v| v > -1.0);
            }
        }
        let mut keypoint_draws = Vec::new();
        if let Some((poses, order)) = &self.keypoint_matching {
            let accumulated = poses.accumulate_images(include);
            metrics.keypoints = Some(keypoint_stats(&accumulated));
            keypoint_draws = resampled_ap(poses, order, include);
            metrics.keypoint_ap_interval = interval(&keypoint_draws, |d| d.0);
            for (k, class) in metrics.classes.iter_mut().enumerate() {
                class.keypoint_ap = Some(accumulated.category_ap(k, None)).filter(|&v| v > -1.0);
            }
        }
        if curves {
            metrics.pr_curves = self.pr_curves(&accumulated, &metrics.classes);
        }
        // Draws pair up only when both runs resample the same image list.
        let baseline = baseline.filter(|b| b.image_ids == self.image_ids);
        let regression = baseline.and_then(|b| {
            let base_draws = b.resampled_ap(include);
            let base = coco_stats(&b.matching.accumulate_images(include)).ap;
            let boxes = map_change(metrics.coco.ap, base, &draws, &base_draws, alpha)?;
            // The baseline's AP over its own masks or poses (all thresholds, area `all`, its
            // largest max-detections: what `mask.ap` and `keypoints.ap` are).
            let change = |ours: bool, theirs: &Option<(Matching, ScoreOrder)>, new_ap, draws: &[(f64, f64)]| {
                let (matching, order) = theirs.as_ref().filter(|_| ours)?;
                let accumulated = matching.accumulate_images(include);
                let dets = *matching.params().max_dets.last().expect("not empty");
                let base = Some(accumulated.summarize(true, None, "all", dets)).filter(|&v| v > -1.0);
                map_change(new_ap, base, draws, &resampled_ap(matching, order, include), alpha)
            };
            let mask =
                change(self.mask_matching.is_some(), &b.mask_matching, metrics.mask.and_then(|m| m.ap), &mask_draws);
            let keypoints = change(
                self.keypoint_matching.is_some(),
                &b.keypoint_matching,
                metrics.keypoints.and_then(|k| k.ap),
                &keypoint_draws,
            );
            Some(DetectionRegression { boxes, mask, keypoints })
        });
        (metrics, regression)
    }

    /// Metrics over the included images.
    pub fn metrics(&self, include: &[bool]) -> DetectionMetrics {
        self.score(include, None, 0.0, false).0
    }

    /// Every category's PR curve at the operating IoU, most ground truth first (the
    /// report draws the first few).
    fn pr_curves(&self, accumulated: &Accumulated, classes: &[ClassMetrics]) -> Vec<PrCurve> {
        let mut curves: Vec<(u64, PrCurve)> = (0..self.categories.len())
            .filter_map(|k| {
                let precision = accumulated.pr_curve(k, OPERATING_IOU)?;
                Some((classes[k].objects, PrCurve { category: self.categories[k].name.clone(), precision }))
            })
            .collect();
        curves.sort_by_key(|(objects, _)| std::cmp::Reverse(*objects));
        curves.into_iter().map(|(_, curve)| curve).collect()
    }

    /// Metrics over the included images from their accumulation and bootstrap draws.
    fn metrics_from(&self, include: &[bool], accumulated: &Accumulated, draws: &[(f64, f64)]) -> DetectionMetrics {
        let coco = coco_stats(accumulated);
        let mut per_class = vec![Counts::default(); self.categories.len()];
        let mut objects = vec![0u64; self.categories.len()];
        let mut detections = 0u64;
        for cell in self.cells.iter().filter(|c| include[c.image as usize]) {
            let k = cell.category as usize;
            objects[k] += cell.counted as u64;
            detections += cell.detections.len() as u64;
            let (tp, fp) = self.cell_counts(cell);
            per_class[k].add(&Counts::new(tp, fp, cell.counted as u64 - tp));
        }
        let mut counts = Counts::default();
        per_class.iter().for_each(|c| counts.add(c));
        let f1s: Vec<f64> = per_class.iter().filter_map(|c| c.f1).collect();
        let macro_f1 = (!f1s.is_empty()).then(|| f1s.iter().sum::<f64>() / f1s.len() as f64);
        let defined = |v: f64| (v > -1.0).then_some(v);
        let classes = self
            .categories
            .iter()
            .enumerate()
            .map(|(k, c)| ClassMetrics {
                category: c.name.clone(),
                category_id: c.id,
                objects: objects[k],
                ap: defined(accumulated.category_ap(k, None)),
                ap50: defined(accumulated.category_ap(k, Some(0.5))),
                ap75: defined(accumulated.category_ap(k, Some(0.75))),
                mask_ap: None,
                keypoint_ap: None,
                counts: per_class[k],
            })
            .collect();
        let true_positives: Vec<u64> = per_class.iter().map(|c| c.tp).collect();
        DetectionMetrics {
            pr_curves: Vec::new(),
            confusion: self.confusion(include, &true_positives),
            worst_images: self.worst_images(include),
            ap_interval: interval(draws, |d| d.0),
            ap50_interval: interval(draws, |d| d.1),
            mask_ap_interval: None,
            keypoint_ap_interval: None,
            images: include.iter().filter(|&&i| i).count() as u64,
            objects: objects.iter().sum(),
            detections,
            coco,
            mask: None,
            mask_note: self.mask_note.clone(),
            keypoints: None,
            keypoint_note: self.keypoint_note.clone(),
            classes,
            iou: OPERATING_IOU,
            score_threshold: self.score_threshold,
            counts,
            macro_f1,
        }
    }
}

/// (AP, AP50) of `matching` on each of [`DETECTION_RESAMPLES`] seeded resamples of the
/// included images; NaN where undefined. The same resamples for every run of a dataset
/// (and for a run's boxes and masks), so draws pair up.
fn resampled_ap(matching: &Matching, order: &ScoreOrder, include: &[bool]) -> Vec<(f64, f64)> {
    let included: Vec<u32> = (0..include.len() as u32).filter(|&i| include[i as usize]).collect();
    if included.is_empty() {
        return Vec::new();
    }
    (0..DETECTION_RESAMPLES)
        .into_par_iter()
        .map_init(
            || vec![0u32; include.len()],
            |weights, b| {
                weights.fill(0);
                let mut rng = SplitMix64::for_resample(BOOTSTRAP_SEED, b);
                for _ in 0..included.len() {
                    weights[included[rng.below(included.len())] as usize] += 1;
                }
                let (ap, ap50) = matching.weighted_ap(order, weights, OPERATING_IOU);
                (ap.unwrap_or(f64::NAN), ap50.unwrap_or(f64::NAN))
            },
        )
        .collect()
}

/// A mAP (`new`, bootstrap `draws`) against the baseline's (`base`, `base_draws`, drawn on
/// the same resampled images): the difference and the paired bootstrap test of a drop at
/// level `alpha`. None when either mAP is undefined.
fn map_change(
    new: Option<f64>,
    base: Option<f64>,
    draws: &[(f64, f64)],
    base_draws: &[(f64, f64)],
    alpha: f64,
) -> Option<MapChange> {
    let (Some(new_ap), Some(base_ap)) = (new, base) else { return None };
    let deltas: Vec<f64> = draws.iter().zip(base_draws).map(|(n, b)| n.0 - b.0).filter(|d| !d.is_nan()).collect();
    if deltas.is_empty() {
        return None;
    }
    let p_value = deltas.iter().filter(|&&d| d >= 0.0).count() as f64 / deltas.len() as f64;
    let delta = new_ap - base_ap;
    Some(MapChange { baseline_map: base, delta: Some(delta), p_value, significant: delta < 0.0 && p_value < alpha })
}

/// The 95% percentile interval of one statistic of bootstrap draws; None when undefined.
fn interval(draws: &[(f64, f64)], pick: fn(&(f64, f64)) -> f64) -> Option<[f64; 2]> {
    let [low, high] = percentile_interval(draws.iter().map(pick).collect());
    (!low.is_nan()).then_some([low, high])
}

fn coco_stats(a: &Accumulated) -> CocoStats {
    let s = a.stats();
    let v = |x: f64| (x > -1.0).then_some(x);
    CocoStats {
        ap: v(s[0]),
        ap50: v(s[1]),
        ap75: v(s[2]),
        ap_small: v(s[3]),
        ap_medium: v(s[4]),
        ap_large: v(s[5]),
        ar1: v(s[6]),
        ar10: v(s[7]),
        ar100: v(s[8]),
        ar_small: v(s[9]),
        ar_medium: v(s[10]),
        ar_large: v(s[11]),
        ar50: v(a.summarize(false, Some(0.5), "all", 100)),
        ar75: v(a.summarize(false, Some(0.75), "all", 100)),
    }
}

fn keypoint_stats(a: &Accumulated) -> KeypointStats {
    let s = a.keypoint_stats();
    let v = |x: f64| (x > -1.0).then_some(x);
    KeypointStats {
        ap: v(s[0]),
        ap50: v(s[1]),
        ap75: v(s[2]),
        ap_medium: v(s[3]),
        ap_large: v(s[4]),
        ar: v(s[5]),
        ar50: v(s[6]),
        ar75: v(s[7]),
        ar_medium: v(s[8]),
        ar_large: v(s[9]),
    }
}

/// A stored pose (`[x1, y1, v1, …]` as JSON). Both sides were checked when they were
/// stored (the ingest's, the upload's), so a failure here means a file changed under its
/// hash check; it reads as no pose.
fn pose(json: &str) -> Option<Vec<f64>> {
    serde_json::from_str(json).ok()
}

/// The score threshold with the best micro F1 over the whole run (detections at or above
/// it count); among equal F1s the highest threshold. 1.0 when nothing was detected.
fn best_f1_threshold(cells: &[Cell]) -> f64 {
    let total: u64 = cells.iter().map(|c| c.counted as u64).sum();
    let mut scored: Vec<(f64, Outcome)> =
        cells.iter().flat_map(|c| c.detections.iter().copied()).filter(|(_, o)| *o != Outcome::Ignored).collect();
    scored.sort_by(|a, b| b.0.total_cmp(&a.0));
    let (mut tp, mut fp) = (0u64, 0u64);
    let (mut best, mut best_f1) = (1.0, -1.0);
    let mut i = 0;
    while i < scored.len() {
        let threshold = scored[i].0;
        // Everything at this score goes in together.
        while i < scored.len() && scored[i].0 == threshold {
            match scored[i].1 {
                Outcome::TruePositive => tp += 1,
                _ => fp += 1,
            }
            i += 1;
        }
        let f1 = 2.0 * tp as f64 / (2 * tp + fp + (total - tp)).max(1) as f64;
        if f1 > best_f1 {
            (best, best_f1) = (threshold, f1);
        }
    }
    best
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cell(counted: u32, detections: &[(f64, Outcome)]) -> Cell {
        let matches = detections.iter().map(|_| (0, None, 0.0)).collect();
        Cell { image: 0, category: 0, counted, detections: detections.to_vec(), matches, ground_truth: Vec::new() }
    }

    #[test]
    fn the_operating_threshold_maximises_f1_and_prefers_the_higher_score() {
        use Outcome::*;
        // 3 objects; detections 0.9 TP, 0.8 FP, 0.7 TP, 0.6 TP, 0.5 FP.
        let cells = [
            cell(3, &[(0.9, TruePositive), (0.8, FalsePositive), (0.7, TruePositive)]),
            cell(0, &[(0.6, TruePositive), (0.5, FalsePositive), (0.95, Ignored)]),
        ];
        // F1 at 0.9: 2/(2+0+2)=.5; 0.8: 2/(2+1+2)=.4; 0.7: 4/(4+1+1)=.667; 0.6: 6/(6+1+0)=.857; 0.5: 6/8=.75
        assert_eq!(best_f1_threshold(&cells), 0.6);
        assert_eq!(best_f1_threshold(&[cell(2, &[])]), 1.0);
        // Equal F1 at 0.9 and 0.8 (one TP then one FP with 1 object…): the higher wins.
        let tie = [cell(1, &[(0.9, TruePositive), (0.8, Ignored)])];
        assert_eq!(best_f1_threshold(&tie), 0.9);
    }

    #[test]
    fn counts_give_their_rates() {
        let c = Counts::new(3, 1, 2);
        assert_eq!((c.precision, c.recall), (Some(0.75), Some(0.6)));
        assert_eq!(c.f1, Some(6.0 / 9.0));
        assert_eq!(Counts::new(0, 0, 0).f1, None);
    }
}
