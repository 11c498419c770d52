//! Object keypoint similarity (OKS): how COCO's keypoint evaluation
//! (`COCOeval(iouType='keypoints')`) compares a detected pose with a labelled one, as an
//! [`Overlap`] for [`crate::coco::evaluate_with`] with [`crate::coco::Params::keypoints`].
//!
//! A pose is COCO's flat list `[x1, y1, v1, x2, y2, v2, …]`. In ground truth `v` is 0
//! (not labelled, the point is usually written as 0, 0), 1 (labelled, not visible) or 2
//! (visible); in a detection it is the keypoint's confidence, which OKS does not use.
//!
//! [`oks`] is pycocotools' `computeOks` in its order of operations, with numpy's pairwise
//! sum. Its `np.exp` may differ from the C library's `exp` in the last bit (numpy has its
//! own AVX-512 kernel), so an OKS can differ from pycocotools' by an ulp; the statistics
//! depend on OKS only through comparisons with the thresholds and agree bit for bit on
//! the reference fixture.

use crate::coco::{CellOverlap, Detection, GroundTruth, Overlap};
use crate::numpy::{SPACING_1, pairwise_sum};

/// COCO's per-keypoint falloffs ×10 for its 17 person keypoints (pycocotools'
/// `kpt_oks_sigmas` before its division by 10), nose to right ankle.
const COCO_SIGMAS_X10: [f64; 17] =
    [0.26, 0.25, 0.25, 0.35, 0.35, 0.79, 0.79, 0.72, 0.72, 0.62, 0.62, 1.07, 1.07, 0.87, 0.87, 0.89, 0.89];

/// The falloff of keypoint `k` of a skeleton of `count`: COCO's for a 17-keypoint
/// skeleton (pycocotools' only case), else `1 / count` for every keypoint, the choice
/// Ultralytics makes for other skeletons (pycocotools cannot evaluate them).
pub fn sigma(k: usize, count: usize) -> f64 {
    if count == COCO_SIGMAS_X10.len() { COCO_SIGMAS_X10[k] / 10.0 } else { 1.0 / count as f64 }
}

/// OKS of a detected pose against a labelled one whose box (`[x, y, w, h]`) and area (its
/// annotation's `area`, the segment's in COCO) are given, as pycocotools' `computeOks`:
/// the mean over labelled keypoints of `exp(-d² / (2 · area · (2σ)²))`; when none is
/// labelled, `d` is each detected keypoint's distance outside the truth's box grown by its
/// size on every side. An empty `truth` counts as nothing labelled. Poses of different
/// lengths, or not triples, do not match (0).
pub fn oks(detected: &[f64], truth: &[f64], truth_box: &[f64; 4], truth_area: f64) -> f64 {
    let count = detected.len() / 3;
    if count == 0 || !detected.len().is_multiple_of(3) || (!truth.is_empty() && truth.len() != detected.len()) {
        return 0.0;
    }
    let labelled = |k: usize| truth.get(3 * k + 2).is_some_and(|&v| v > 0.0);
    let any_labelled = (0..count).any(labelled);
    let [bx, by, bw, bh] = *truth_box;
    let (x0, x1, y0, y1) = (bx - bw, bx + bw * 2.0, by - bh, by + bh * 2.0);
    let mut terms = Vec::with_capacity(count);
    for k in 0..count {
        let (xd, yd) = (detected[3 * k], detected[3 * k + 1]);
        let (dx, dy) = if any_labelled {
            if !labelled(k) {
                continue;
            }
            (xd - truth[3 * k], yd - truth[3 * k + 1])
        } else {
            ((x0 - xd).max(0.0) + (xd - x1).max(0.0), (y0 - yd).max(0.0) + (yd - y1).max(0.0))
        };
        let spread = sigma(k, count) * 2.0;
        let e = (dx * dx + dy * dy) / (spread * spread) / (truth_area + SPACING_1) / 2.0;
        terms.push((-e).exp());
    }
    pairwise_sum(&terms) / terms.len() as f64
}

/// How many keypoints of a labelled pose (`[x1, y1, v1, …]`) are labelled (`v > 0`): COCO's
/// `num_keypoints`, for a file that does not give it.
pub fn labelled_count(points: &[f64]) -> u32 {
    points.iter().skip(2).step_by(3).filter(|&&v| v > 0.0).count() as u32
}

/// A labelled pose for [`KeypointOverlap`].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct TruthKeypoints<'a> {
    /// `[x1, y1, v1, …]`; empty for an object without keypoints.
    pub points: &'a [f64],
    /// COCO's `num_keypoints`, how many are labelled: an object with none is ignored
    /// (it may absorb one detection, never counts).
    pub labelled: u32,
}

/// Poses overlap by their OKS; a detection's area is its box's, as pycocotools' `loadRes`
/// gives it for results with a `bbox` (without one, a detection's box is its keypoints'
/// extent, which the caller builds).
#[derive(Debug, Clone)]
pub struct KeypointOverlap<'a> {
    /// The ground truth given to the evaluation (its boxes and areas are used).
    pub ground_truth: &'a [GroundTruth],
    /// Each ground truth's keypoints, in the same order.
    pub truth: Vec<TruthKeypoints<'a>>,
    /// The detections given to the evaluation (their boxes give their areas).
    pub detections: &'a [Detection],
    /// Each detection's keypoints, in the same order.
    pub detected: Vec<&'a [f64]>,
}

impl Overlap for KeypointOverlap<'_> {
    fn cell(&self, detections: &[u32], ground_truth: &[u32], _crowd: &[bool]) -> CellOverlap {
        let ious = detections
            .iter()
            .flat_map(|&d| {
                ground_truth.iter().map(move |&g| {
                    let truth = &self.ground_truth[g as usize];
                    oks(self.detected[d as usize], self.truth[g as usize].points, &truth.bbox, truth.area)
                })
            })
            .collect();
        let detection_areas = detections.iter().map(|&d| self.detections[d as usize].bbox).map(|b| b[2] * b[3]);
        CellOverlap { ious, detection_areas: detection_areas.collect() }
    }

    fn ignores(&self, ground_truth: u32) -> bool {
        self.truth[ground_truth as usize].labelled == 0
    }
}

/// A detected pose's box when it has none: its keypoints' extent, as pycocotools'
/// `loadRes` boxes results that carry only keypoints (and whose area then decides the
/// detection's area range). `None` for an empty pose.
pub fn keypoint_extent(points: &[f64]) -> Option<[f64; 4]> {
    let (xs, ys) = (points.iter().step_by(3), points.iter().skip(1).step_by(3));
    let (x0, x1) = xs.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &x| (lo.min(x), hi.max(x)));
    let (y0, y1) = ys.fold((f64::INFINITY, f64::NEG_INFINITY), |(lo, hi), &y| (lo.min(y), hi.max(y)));
    (x0 <= x1 && y0 <= y1).then_some([x0, y0, x1 - x0, y1 - y0])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_perfect_pose_is_one_and_a_far_one_near_zero() {
        let truth = [10.0, 10.0, 2.0, 20.0, 10.0, 1.0, 0.0, 0.0, 0.0];
        let bbox = [5.0, 5.0, 20.0, 10.0];
        // Unlabelled keypoints (the third) do not count, wherever they are detected.
        assert_eq!(oks(&[10.0, 10.0, 0.9, 20.0, 10.0, 0.1, 500.0, 500.0, 0.3], &truth, &bbox, 150.0), 1.0);
        assert!(oks(&[110.0, 110.0, 0.9, 120.0, 110.0, 0.1, 0.0, 0.0, 0.3], &truth, &bbox, 150.0) < 1e-6);
        // One keypoint off by d: exp(-d² / (2 area (2σ)²)) averaged with a perfect one.
        let d: f64 = 3.0;
        let expected = (1.0 + (-(d * d) / (2.0f64 / 3.0).powi(2) / 150.0 / 2.0).exp()) / 2.0;
        let got = oks(&[10.0, 10.0, 1.0, 20.0 + d, 10.0, 1.0, 0.0, 0.0, 0.0], &truth, &bbox, 150.0);
        assert!((got - expected).abs() < 1e-15, "{got} vs {expected}");
        // Lengths that differ, or are not triples, do not match.
        assert_eq!(oks(&[10.0, 10.0, 1.0], &truth, &bbox, 150.0), 0.0);
        assert_eq!(oks(&[10.0, 10.0], &[], &bbox, 150.0), 0.0);
    }

    #[test]
    fn without_labelled_keypoints_only_distance_outside_the_grown_box_counts() {
        // The box grown by its width/height on each side: x in [-15, 45], y in [-5, 25].
        let bbox = [5.0, 5.0, 20.0, 10.0];
        let inside = [-15.0, 25.0, 0.5, 45.0, -5.0, 0.5];
        assert_eq!(oks(&inside, &[], &bbox, 150.0), 1.0);
        assert_eq!(oks(&inside, &[0.0; 6], &bbox, 150.0), 1.0);
        assert!(oks(&[-16.0, 25.0, 0.5, 45.0, -5.0, 0.5], &[], &bbox, 150.0) < 1.0);
    }

    #[test]
    fn the_extent_is_loadres_box() {
        assert_eq!(keypoint_extent(&[4.0, 9.0, 0.1, 1.0, 12.0, 0.5, 3.0, 10.0, 0.0]), Some([1.0, 9.0, 3.0, 3.0]));
        assert_eq!(keypoint_extent(&[]), None);
    }
}
