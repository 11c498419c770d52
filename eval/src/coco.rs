//! COCO evaluation of boxes (`iouType='bbox'`) and, through [`Overlap`], of anything
//! else with an IoU such as instance masks (`'segm'`) or a similarity such as keypoints'
//! OKS (`'keypoints'`, [`crate::keypoints`]), with the semantics of pycocotools'
//! `COCOeval` (2.0.x),
//! reproduced bit for bit: the same IoU formula, the same greedy matching (crowds, ignore
//! flags, ties), the same stable score orders, the same `np.linspace` thresholds and the
//! same `np.mean`, so every entry of `precision`, `recall` and `scores` and the 12
//! summary statistics are the reference's own float64 values.
//!
//! The work is split as COCOeval splits it: [`evaluate`] matches detections to ground
//! truth per (image, category) once per run; [`Matching::accumulate`] builds the
//! precision/recall arrays over any subset of images, which is how a slice is scored
//! without matching again.
//!
//! Images and categories are indexes: the caller numbers images in the order
//! pycocotools sorts their ids (ties between images' detections are broken by that
//! order) and categories in category-id order. Within an (image, category) pair the
//! order of the input slices is kept, as pycocotools keeps the file order.
//!
//! Where this differs from pycocotools on purpose: pycocotools raises when `max_dets`
//! has fewer than three entries; here the missing summary statistics are `-1`. And
//! pycocotools treats a match to a ground-truth annotation whose id is 0 as no match
//! (it stores ids and tests them for non-zero); here matches are positions, so an id of
//! 0 means nothing special.

use rayon::prelude::*;

use crate::numpy::{SPACING_1, linspace, mean};

/// A ground-truth box.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroundTruth {
    /// Image index (in image-id order).
    pub image: u32,
    /// Category index (in category-id order).
    pub category: u32,
    /// `[x, y, w, h]`, COCO's top-left corner, width and height.
    pub bbox: [f64; 4],
    /// The annotation's area (its mask's area in COCO), which decides its area range.
    pub area: f64,
    /// A crowd region: ignored, and any number of detections inside it are absorbed.
    pub iscrowd: bool,
}

/// A detected box.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    /// Image index (in image-id order).
    pub image: u32,
    /// Category index (in category-id order).
    pub category: u32,
    /// `[x, y, w, h]`.
    pub bbox: [f64; 4],
    /// Confidence; higher first.
    pub score: f64,
}

/// An area range `[min, max]` (inclusive) with its label.
#[derive(Debug, Clone, PartialEq)]
pub struct AreaRange {
    /// `all`, `small`, `medium`, `large` in COCO.
    pub label: String,
    /// Smallest area in the range.
    pub min: f64,
    /// Largest area in the range.
    pub max: f64,
}

/// Evaluation parameters (COCOeval's `Params` for `iouType='bbox'`).
#[derive(Debug, Clone, PartialEq)]
pub struct Params {
    /// IoU thresholds `T`.
    pub iou_thresholds: Vec<f64>,
    /// Recall thresholds `R`.
    pub recall_thresholds: Vec<f64>,
    /// Detections kept per image and category, ascending; the last one bounds matching.
    pub max_dets: Vec<usize>,
    /// Area ranges `A`.
    pub area_ranges: Vec<AreaRange>,
}

impl Default for Params {
    /// COCO's: IoU `linspace(.5, .95, 10)`, recall `linspace(0, 1, 101)`, max detections
    /// 1/10/100, areas all/small (< 32²)/medium/large (> 96²).
    fn default() -> Self {
        let range = |label: &str, min: f64, max: f64| AreaRange { label: label.into(), min, max };
        Params {
            iou_thresholds: linspace(0.5, 0.95, 10),
            recall_thresholds: linspace(0.0, 1.0, 101),
            max_dets: vec![1, 10, 100],
            area_ranges: vec![
                range("all", 0.0, 1e10),
                range("small", 0.0, 1024.0),
                range("medium", 1024.0, 9216.0),
                range("large", 9216.0, 1e10),
            ],
        }
    }
}

impl Params {
    /// COCO's for keypoints (`Params(iouType='keypoints')`): the same thresholds, 20
    /// detections per image, areas all/medium/large (no small: keypoints of people under
    /// 32² pixels are not labelled in COCO).
    pub fn keypoints() -> Self {
        let mut area_ranges = Params::default().area_ranges;
        area_ranges.remove(1);
        Params { max_dets: vec![20], area_ranges, ..Params::default() }
    }
}

/// What became of a detection at one IoU threshold and area range.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Outcome {
    /// Matched no ground truth: a false positive.
    FalsePositive = 0,
    /// Matched a ground truth that counts: a true positive.
    TruePositive = 1,
    /// Matched an ignored (crowd or out-of-range) ground truth, or unmatched and itself
    /// out of the area range: neither.
    Ignored = 2,
}

/// The matching of one (category, image) pair that has ground truth or detections.
#[derive(Debug, Clone)]
pub struct Cell {
    image: u32,
    /// Positions in the caller's `detections` slice, best score first, at most the last
    /// `max_dets` of them.
    detections: Vec<u32>,
    scores: Vec<f64>,
    /// `[area][threshold][detection]`.
    outcomes: Vec<Outcome>,
    /// Ground truths that count (not ignored), per area range.
    counted: Vec<u32>,
    /// Positions in the caller's `ground_truth` slice, in input order.
    ground_truth: Vec<u32>,
    /// For the first area range: the ground truth each detection matched, per threshold
    /// (`[threshold][detection]`, an index into `ground_truth`, `u32::MAX` for none), and
    /// its IoU.
    matched: Vec<u32>,
    matched_iou: Vec<f64>,
}

impl Cell {
    /// The image index.
    pub fn image(&self) -> u32 {
        self.image
    }
}

/// A detection's match at one IoU threshold over the first area range (`all`).
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct BoxMatch {
    /// Position of the detection in the input.
    pub detection: u32,
    /// Position of the ground truth it matched in the input, if any.
    pub ground_truth: Option<u32>,
    /// The IoU with that ground truth (0 when unmatched).
    pub iou: f64,
    /// True positive, false positive or ignored.
    pub outcome: Outcome,
}

/// The matches of one (image, category) pair at one IoU threshold.
#[derive(Debug, Clone)]
pub struct CellMatches<'a> {
    /// The image index.
    pub image: u32,
    /// The category index.
    pub category: u32,
    /// Positions of the pair's ground truth in the input, in input order.
    pub ground_truth: &'a [u32],
    /// The pair's detections, best score first.
    pub matches: Vec<BoxMatch>,
}

/// Per-image matching of a whole run: the expensive half of COCOeval, done once.
#[derive(Debug, Clone)]
pub struct Matching {
    params: Params,
    num_images: u32,
    /// Per category, its cells in image order.
    cells: Vec<Vec<Cell>>,
}

/// How detections overlap ground truth: COCOeval's `iouType`. Boxes ([`BoxOverlap`],
/// `bbox`) or anything else with an IoU and an area, such as masks (`segm`). Asked once
/// per (image, category) pair, so that a mask is decoded once and only while its pair is
/// matched.
pub trait Overlap: Sync {
    /// For one pair's detections and ground truth (positions in the caller's slices) and
    /// the ground truths' crowd flags: every IoU, detection-major (`ious[d * G + g]`), an
    /// intersection over the detection's area for a crowd (pycocotools' `iscrowd`); and
    /// each detection's area, which puts an unmatched detection in or out of an area range.
    fn cell(&self, detections: &[u32], ground_truth: &[u32], crowd: &[bool]) -> CellOverlap;

    /// Whether ground truth `ground_truth` (a position in the caller's slice) is ignored
    /// as a crowd is, though it absorbs one detection only: pycocotools' keypoint
    /// evaluation ignores a person with no labelled keypoint (`num_keypoints == 0`).
    fn ignores(&self, _ground_truth: u32) -> bool {
        false
    }
}

/// One (image, category) pair's overlaps (see [`Overlap::cell`]).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct CellOverlap {
    /// `ious[d * G + g]`.
    pub ious: Vec<f64>,
    /// Each detection's area.
    pub detection_areas: Vec<f64>,
}

/// Boxes overlap as pycocotools' `bbIou` says, and a detection's area is its box's.
#[derive(Debug, Clone, Copy)]
pub struct BoxOverlap<'a> {
    /// The ground truth given to [`evaluate_with`].
    pub ground_truth: &'a [GroundTruth],
    /// The detections given to [`evaluate_with`].
    pub detections: &'a [Detection],
}

impl Overlap for BoxOverlap<'_> {
    fn cell(&self, detections: &[u32], ground_truth: &[u32], crowd: &[bool]) -> CellOverlap {
        let boxes = detections.iter().map(|&d| &self.detections[d as usize].bbox);
        CellOverlap {
            ious: boxes
                .clone()
                .flat_map(|d| {
                    (ground_truth.iter().zip(crowd))
                        .map(|(&g, &crowd)| iou(d, &self.ground_truth[g as usize].bbox, crowd))
                })
                .collect(),
            detection_areas: boxes.map(|b| b[2] * b[3]).collect(),
        }
    }
}

/// Matches `detections` to `ground_truth` per (image, category) by their boxes, as
/// COCOeval's `evaluate()` does with `iouType='bbox'`. Indexes must be below
/// `num_images` / `num_categories`.
pub fn evaluate(
    num_images: u32,
    num_categories: u32,
    ground_truth: &[GroundTruth],
    detections: &[Detection],
    params: &Params,
) -> Matching {
    evaluate_with(
        num_images,
        num_categories,
        ground_truth,
        detections,
        params,
        &BoxOverlap { ground_truth, detections },
    )
}

/// [`evaluate`] with another overlap than the boxes' (masks: `iouType='segm'`). The
/// boxes of `ground_truth` and `detections` are not looked at; their image, category,
/// score, area and crowd flag are.
pub fn evaluate_with(
    num_images: u32,
    num_categories: u32,
    ground_truth: &[GroundTruth],
    detections: &[Detection],
    params: &Params,
    overlap: &dyn Overlap,
) -> Matching {
    assert!(!params.max_dets.is_empty(), "max_dets must not be empty");
    // Group positions by (category, image), keeping input order within each group.
    let mut gt_by_cat: Vec<Vec<u32>> = vec![Vec::new(); num_categories as usize];
    for (i, g) in ground_truth.iter().enumerate() {
        assert!(g.image < num_images && g.category < num_categories, "ground truth #{i} out of range");
        gt_by_cat[g.category as usize].push(i as u32);
    }
    let mut dt_by_cat: Vec<Vec<u32>> = vec![Vec::new(); num_categories as usize];
    for (i, d) in detections.iter().enumerate() {
        assert!(d.image < num_images && d.category < num_categories, "detection #{i} out of range");
        dt_by_cat[d.category as usize].push(i as u32);
    }
    let cells = gt_by_cat
        .into_par_iter()
        .zip(dt_by_cat.into_par_iter())
        .map(|(mut gts, mut dts)| {
            // Stable sorts: input order within an image survives.
            gts.sort_by_key(|&i| ground_truth[i as usize].image);
            dts.sort_by_key(|&i| detections[i as usize].image);
            let (mut g, mut d) = (0, 0);
            let mut cells = Vec::new();
            while g < gts.len() || d < dts.len() {
                let image_of_g = gts.get(g).map(|&i| ground_truth[i as usize].image);
                let image_of_d = dts.get(d).map(|&i| detections[i as usize].image);
                let image = match (image_of_g, image_of_d) {
                    (Some(a), Some(b)) => a.min(b),
                    (Some(a), None) => a,
                    (None, Some(b)) => b,
                    (None, None) => unreachable!(),
                };
                let g_end = g + gts[g..].iter().take_while(|&&i| ground_truth[i as usize].image == image).count();
                let d_end = d + dts[d..].iter().take_while(|&&i| detections[i as usize].image == image).count();
                cells.push(match_cell(
                    image,
                    (&gts[g..g_end], &dts[d..d_end]),
                    ground_truth,
                    detections,
                    params,
                    overlap,
                ));
                (g, d) = (g_end, d_end);
            }
            cells
        })
        .collect();
    Matching { params: params.clone(), num_images, cells }
}

/// pycocotools' `bbIou` of two COCO `[x, y, w, h]` boxes: intersection over union, or
/// over the detection's area for a crowd. Written in the C code's order of operations.
pub fn iou(d: &[f64; 4], g: &[f64; 4], crowd: bool) -> f64 {
    let ga = g[2] * g[3];
    let da = d[2] * d[3];
    let w = (d[2] + d[0]).min(g[2] + g[0]) - d[0].max(g[0]);
    if w <= 0.0 {
        return 0.0;
    }
    let h = (d[3] + d[1]).min(g[3] + g[1]) - d[1].max(g[1]);
    if h <= 0.0 {
        return 0.0;
    }
    let i = w * h;
    let u = if crowd { da } else { da + ga - i };
    i / u
}

fn match_cell(
    image: u32,
    (gts, dts): (&[u32], &[u32]),
    ground_truth: &[GroundTruth],
    detections: &[Detection],
    params: &Params,
    overlap: &dyn Overlap,
) -> Cell {
    let max_det = *params.max_dets.last().expect("checked");
    // Best score first; a stable sort, so equal scores keep input order (numpy's mergesort).
    let mut order: Vec<u32> = dts.to_vec();
    order.sort_by(|&a, &b| detections[b as usize].score.total_cmp(&detections[a as usize].score));
    order.truncate(max_det);
    let scores: Vec<f64> = order.iter().map(|&i| detections[i as usize].score).collect();
    let num_d = order.len();
    let num_g = gts.len();
    let t_count = params.iou_thresholds.len();
    let a_count = params.area_ranges.len();

    let crowd: Vec<bool> = gts.iter().map(|&i| ground_truth[i as usize].iscrowd).collect();
    // ious[d * G + g], g in input order.
    let CellOverlap { ious, detection_areas } = overlap.cell(&order, gts, &crowd);
    debug_assert_eq!((ious.len(), detection_areas.len()), (num_d * num_g, num_d));

    let mut outcomes = Vec::with_capacity(a_count * t_count * num_d);
    let mut counted = Vec::with_capacity(a_count);
    let mut matched = vec![u32::MAX; t_count * num_d];
    let mut matched_iou = vec![0.0; t_count * num_d];
    let mut gt_matched = vec![false; num_g];
    for (a, range) in params.area_ranges.iter().enumerate() {
        let outside = |area: f64| area < range.min || area > range.max;
        // COCOeval sets `ignore = iscrowd`, then ignores what lies outside the range too.
        let ignored: Vec<bool> = gts
            .iter()
            .map(|&i| {
                let g = &ground_truth[i as usize];
                g.iscrowd || overlap.ignores(i) || outside(g.area)
            })
            .collect();
        // Ground truth that counts first, ignored last; stable.
        let mut gt_order: Vec<usize> = (0..num_g).collect();
        gt_order.sort_by_key(|&g| ignored[g]);
        counted.push(ignored.iter().filter(|&&i| !i).count() as u32);
        for (t, &threshold) in params.iou_thresholds.iter().enumerate() {
            gt_matched.iter_mut().for_each(|m| *m = false);
            for di in 0..num_d {
                let mut best_iou = threshold.min(1.0 - 1e-10);
                let mut best: Option<usize> = None;
                if num_g > 0 {
                    for &g in &gt_order {
                        if gt_matched[g] && !crowd[g] {
                            continue;
                        }
                        // Matched a ground truth that counts and reached the ignored ones: stop.
                        if let Some(m) = best
                            && !ignored[m]
                            && ignored[g]
                        {
                            break;
                        }
                        let value = ious[di * num_g + g];
                        if value < best_iou {
                            continue;
                        }
                        best_iou = value;
                        best = Some(g);
                    }
                }
                let outcome = match best {
                    Some(g) => {
                        gt_matched[g] = true;
                        if a == 0 {
                            matched[t * num_d + di] = g as u32;
                            matched_iou[t * num_d + di] = ious[di * num_g + g];
                        }
                        if ignored[g] { Outcome::Ignored } else { Outcome::TruePositive }
                    }
                    None if outside(detection_areas[di]) => Outcome::Ignored,
                    None => Outcome::FalsePositive,
                };
                outcomes.push(outcome);
            }
        }
    }
    Cell { image, detections: order, scores, outcomes, counted, ground_truth: gts.to_vec(), matched, matched_iou }
}

/// COCOeval's `eval` dictionary: `precision[T,R,K,A,M]`, `recall[T,K,A,M]` and
/// `scores[T,R,K,A,M]` as flat arrays in C order, `-1` where a category has no ground
/// truth that counts (or nothing at all) in the images accumulated.
#[derive(Debug, Clone, PartialEq)]
pub struct Accumulated {
    params: Params,
    num_categories: usize,
    /// `precision[t][r][k][a][m]`, C order.
    pub precision: Vec<f64>,
    /// `recall[t][k][a][m]`, C order.
    pub recall: Vec<f64>,
    /// `scores[t][r][k][a][m]`, C order: the score at which each precision was reached.
    pub scores: Vec<f64>,
}

impl Matching {
    /// The parameters the matching used.
    pub fn params(&self) -> &Params {
        &self.params
    }

    /// Number of images.
    pub fn num_images(&self) -> u32 {
        self.num_images
    }

    /// Number of categories.
    pub fn num_categories(&self) -> usize {
        self.cells.len()
    }

    /// Every detection's match at IoU threshold `t` (an index into the thresholds) over
    /// the first area range, per image and category in image order; detections beyond
    /// the largest `max_dets` of their image and category are not listed.
    pub fn box_matches(&self, t: usize) -> impl Iterator<Item = CellMatches<'_>> + '_ {
        self.cells.iter().enumerate().flat_map(move |(k, cells)| {
            cells.iter().map(move |cell| {
                let num_d = cell.detections.len();
                let matches = (0..num_d)
                    .map(|d| {
                        let g = cell.matched[t * num_d + d];
                        BoxMatch {
                            detection: cell.detections[d],
                            ground_truth: (g != u32::MAX).then(|| cell.ground_truth[g as usize]),
                            iou: cell.matched_iou[t * num_d + d],
                            outcome: cell.outcomes[t * num_d + d],
                        }
                    })
                    .collect();
                CellMatches { image: cell.image, category: k as u32, ground_truth: &cell.ground_truth, matches }
            })
        })
    }

    /// Ground truth that counts (not crowd) over the first area range, per (image, category).
    pub fn counted_ground_truth(&self) -> impl Iterator<Item = (u32, u32, u32)> + '_ {
        self.cells
            .iter()
            .enumerate()
            .flat_map(|(k, cells)| cells.iter().map(move |c| (c.image, k as u32, c.counted[0])))
    }

    /// COCOeval's `accumulate()` over all images.
    pub fn accumulate(&self) -> Accumulated {
        self.accumulate_images(&vec![true; self.num_images as usize])
    }

    /// COCOeval's `accumulate()` over the images whose `include` entry is true (indexed
    /// by image), exactly what pycocotools gives with `params.imgIds` set to those images
    /// (and the same categories). A mask rather than a closure: nothing here is generic,
    /// so it is compiled (and optimised) once, in this crate.
    pub fn accumulate_images(&self, include: &[bool]) -> Accumulated {
        assert_eq!(include.len(), self.num_images as usize, "one entry per image");
        let shape = Shape::of(&self.params, self.cells.len());
        let per_category: Vec<CategoryCurves> =
            self.cells.par_iter().map(|cells| self.accumulate_category(cells, include)).collect();
        let mut precision = vec![-1.0; shape.t * shape.r * shape.k * shape.a * shape.m];
        let mut scores = precision.clone();
        let mut recall = vec![-1.0; shape.t * shape.k * shape.a * shape.m];
        for (k, curves) in per_category.iter().enumerate() {
            for ((a, m), per_t) in curves {
                let (a, m) = (*a, *m);
                for (t, (q, ss, rc)) in per_t.iter().enumerate() {
                    recall[shape.recall(t, k, a, m)] = *rc;
                    for r in 0..shape.r {
                        let at = shape.precision(t, r, k, a, m);
                        precision[at] = q[r];
                        scores[at] = ss[r];
                    }
                }
            }
        }
        Accumulated { params: self.params.clone(), num_categories: shape.k, precision, recall, scores }
    }

    fn accumulate_category(&self, cells: &[Cell], include: &[bool]) -> CategoryCurves {
        let p = &self.params;
        let cells: Vec<&Cell> = cells.iter().filter(|c| include[c.image as usize]).collect();
        let mut out = Vec::new();
        if cells.is_empty() {
            return out;
        }
        // All detections in image order, then one stable sort by score: a subset (the
        // top `m` of each image) sorted stably is this order filtered, so one sort serves
        // every max_dets.
        let mut entries: Vec<(f64, u32, u32)> = Vec::new(); // (score, cell, rank in cell)
        for (c, cell) in cells.iter().enumerate() {
            for (d, &score) in cell.scores.iter().enumerate() {
                entries.push((score, c as u32, d as u32));
            }
        }
        entries.sort_by(|a, b| b.0.total_cmp(&a.0));
        let scores: Vec<f64> = entries.iter().map(|e| e.0).collect();
        let t_count = p.iou_thresholds.len();
        // The outcomes of one area range, entry by entry in score order, all thresholds of
        // an entry side by side: the curves below then read memory in order.
        let mut outcomes = vec![Outcome::Ignored; entries.len() * t_count];
        for a in 0..p.area_ranges.len() {
            let counted: u64 = cells.iter().map(|c| c.counted[a] as u64).sum();
            if counted == 0 {
                continue;
            }
            for (e, &(_, c, d)) in entries.iter().enumerate() {
                let cell = cells[c as usize];
                let num_d = cell.detections.len();
                for t in 0..t_count {
                    outcomes[e * t_count + t] = cell.outcomes[(a * t_count + t) * num_d + d as usize];
                }
            }
            for (m, &max_det) in p.max_dets.iter().enumerate() {
                // Entries within the image's top `max_det`, in score order.
                let kept: Vec<usize> = (0..entries.len()).filter(|&e| (entries[e].2 as usize) < max_det).collect();
                let per_t = (0..t_count)
                    .map(|t| {
                        curve(
                            kept.iter().map(|&e| outcomes[e * t_count + t]),
                            kept.iter().map(|&e| scores[e]),
                            counted,
                            &p.recall_thresholds,
                        )
                    })
                    .collect();
                out.push(((a, m), per_t));
            }
        }
        out
    }
}

/// Every category's detections in one fixed score order (best first, stable: image order
/// then rank within the image), for re-weighting images without sorting again.
#[derive(Debug, Clone)]
pub struct ScoreOrder {
    /// Per category: (cell index, rank in the cell).
    per_category: Vec<Vec<(u32, u32)>>,
}

impl Matching {
    /// The score order [`Matching::weighted_ap`] walks.
    pub fn score_order(&self) -> ScoreOrder {
        let per_category = self
            .cells
            .par_iter()
            .map(|cells| {
                let mut entries: Vec<(f64, u32, u32)> = Vec::new();
                for (c, cell) in cells.iter().enumerate() {
                    for (d, &score) in cell.scores.iter().enumerate() {
                        entries.push((score, c as u32, d as u32));
                    }
                }
                entries.sort_by(|a, b| b.0.total_cmp(&a.0));
                entries.into_iter().map(|(_, c, d)| (c, d)).collect()
            })
            .collect();
        ScoreOrder { per_category }
    }

    /// AP (area `all`, i.e. the first range, and the largest max-detections) with every
    /// image counted `weights[image]` times: over all IoU thresholds, and at the one equal
    /// to `iou`. This is for bootstrap intervals: a resampled image's detections are
    /// repeated in place in the run's score order (not re-sorted as pycocotools would sort
    /// duplicated images, which differs only in the order of equal scores), and the mean
    /// is a plain one. `None` where nothing is defined.
    pub fn weighted_ap(&self, order: &ScoreOrder, weights: &[u32], iou: f64) -> (Option<f64>, Option<f64>) {
        let p = &self.params;
        let t_count = p.iou_thresholds.len();
        let (mut all, mut all_n, mut at, mut at_n) = (0.0, 0usize, 0.0, 0usize);
        for (cells, entries) in self.cells.iter().zip(&order.per_category) {
            let counted: u64 = cells.iter().map(|c| c.counted[0] as u64 * weights[c.image as usize] as u64).sum();
            if counted == 0 {
                continue;
            }
            for t in 0..t_count {
                let outcomes = entries.iter().flat_map(|&(c, d)| {
                    let cell = &cells[c as usize];
                    let outcome = cell.outcomes[t * cell.detections.len() + d as usize];
                    std::iter::repeat_n(outcome, weights[cell.image as usize] as usize)
                });
                let scores = std::iter::repeat(0.0);
                let (q, _, _) = curve(outcomes, scores, counted, &p.recall_thresholds);
                let sum: f64 = q.iter().sum();
                all += sum;
                all_n += q.len();
                if p.iou_thresholds[t] == iou {
                    at += sum;
                    at_n += q.len();
                }
            }
        }
        let mean = |s: f64, n: usize| (n > 0).then(|| s / n as f64);
        (mean(all, all_n), mean(at, at_n))
    }
}

/// Per (area, max_dets): per threshold (precision at each recall threshold, the scores
/// there, the final recall).
type CategoryCurves = Vec<((usize, usize), Vec<(Vec<f64>, Vec<f64>, f64)>)>;

/// One precision/recall curve, as COCOeval's accumulate loop computes it.
fn curve(
    outcomes: impl Iterator<Item = Outcome>,
    sorted_scores: impl Iterator<Item = f64>,
    counted: u64,
    recall_thresholds: &[f64],
) -> (Vec<f64>, Vec<f64>, f64) {
    let npig = counted as f64;
    let (mut tp, mut fp) = (0u64, 0u64);
    let mut rc = Vec::new();
    let mut pr = Vec::new();
    for outcome in outcomes {
        match outcome {
            Outcome::TruePositive => tp += 1,
            Outcome::FalsePositive => fp += 1,
            Outcome::Ignored => {}
        }
        let (tp, fp) = (tp as f64, fp as f64);
        rc.push(tp / npig);
        pr.push(tp / (fp + tp + SPACING_1));
    }
    let nd = rc.len();
    let scores: Vec<f64> = sorted_scores.take(nd).collect();
    let recall = if nd > 0 { rc[nd - 1] } else { 0.0 };
    // The precision envelope: never lower than at any higher recall.
    for i in (1..nd).rev() {
        if pr[i] > pr[i - 1] {
            pr[i - 1] = pr[i];
        }
    }
    let mut q = vec![0.0; recall_thresholds.len()];
    let mut ss = vec![0.0; recall_thresholds.len()];
    // np.searchsorted(rc, recThrs, side='left'); the first index past the end stops the fill.
    let mut i = 0;
    for (r, &threshold) in recall_thresholds.iter().enumerate() {
        while i < nd && rc[i] < threshold {
            i += 1;
        }
        if i >= nd {
            break;
        }
        q[r] = pr[i];
        ss[r] = scores[i];
    }
    (q, ss, recall)
}

/// Names of the 12 COCO summary statistics, in `stats` order.
pub const STAT_NAMES: [&str; 12] =
    ["AP", "AP50", "AP75", "APs", "APm", "APl", "AR1", "AR10", "AR100", "ARs", "ARm", "ARl"];

/// Names of the 10 COCO keypoint statistics, in `stats` order (see
/// [`Accumulated::keypoint_stats`]).
pub const KEYPOINT_STAT_NAMES: [&str; 10] = ["AP", "AP50", "AP75", "APm", "APl", "AR", "AR50", "AR75", "ARm", "ARl"];

/// The dimensions of COCOeval's arrays and where an entry sits in their flat C order.
#[derive(Debug, Clone, Copy)]
struct Shape {
    t: usize,
    r: usize,
    k: usize,
    a: usize,
    m: usize,
}

impl Shape {
    fn of(params: &Params, categories: usize) -> Self {
        Shape {
            t: params.iou_thresholds.len(),
            r: params.recall_thresholds.len(),
            k: categories,
            a: params.area_ranges.len(),
            m: params.max_dets.len(),
        }
    }

    /// Index of `precision[t][r][k][a][m]` (and of `scores`).
    fn precision(&self, t: usize, r: usize, k: usize, a: usize, m: usize) -> usize {
        (((t * self.r + r) * self.k + k) * self.a + a) * self.m + m
    }

    /// Index of `recall[t][k][a][m]`.
    fn recall(&self, t: usize, k: usize, a: usize, m: usize) -> usize {
        ((t * self.k + k) * self.a + a) * self.m + m
    }
}

impl Accumulated {
    fn shape(&self) -> Shape {
        Shape::of(&self.params, self.num_categories)
    }

    /// The IoU thresholds' indexes: all, or those equal to `iou` (as `np.where(iouThr ==
    /// p.iouThrs)` picks them).
    fn thresholds(&self, iou: Option<f64>) -> impl Iterator<Item = usize> + '_ {
        let thresholds = &self.params.iou_thresholds;
        (0..thresholds.len()).filter(move |&t| iou.is_none_or(|v| thresholds[t] == v))
    }

    /// COCOeval's `_summarize`: the mean of `precision` (`ap`) or `recall` entries above
    /// -1 at one area range and max-detections value, over all IoU thresholds or the one
    /// equal to `iou`; -1 when there are none.
    pub fn summarize(&self, ap: bool, iou: Option<f64>, area: &str, max_dets: usize) -> f64 {
        let p = &self.params;
        let (Some(a), Some(m)) =
            (p.area_ranges.iter().position(|r| r.label == area), p.max_dets.iter().position(|&d| d == max_dets))
        else {
            return -1.0;
        };
        let shape = self.shape();
        let mut values = Vec::new();
        for t in self.thresholds(iou) {
            if ap {
                for r in 0..shape.r {
                    for k in 0..shape.k {
                        values.push(self.precision[shape.precision(t, r, k, a, m)]);
                    }
                }
            } else {
                for k in 0..shape.k {
                    values.push(self.recall[shape.recall(t, k, a, m)]);
                }
            }
        }
        values.retain(|&v| v > -1.0);
        mean(&values).unwrap_or(-1.0)
    }

    /// The 12 statistics of COCOeval's `summarize()` (see [`STAT_NAMES`]).
    pub fn stats(&self) -> [f64; 12] {
        let dets = |i: usize| self.params.max_dets.get(i).copied().unwrap_or(usize::MAX);
        [
            self.summarize(true, None, "all", 100),
            self.summarize(true, Some(0.5), "all", dets(2)),
            self.summarize(true, Some(0.75), "all", dets(2)),
            self.summarize(true, None, "small", dets(2)),
            self.summarize(true, None, "medium", dets(2)),
            self.summarize(true, None, "large", dets(2)),
            self.summarize(false, None, "all", dets(0)),
            self.summarize(false, None, "all", dets(1)),
            self.summarize(false, None, "all", dets(2)),
            self.summarize(false, None, "small", dets(2)),
            self.summarize(false, None, "medium", dets(2)),
            self.summarize(false, None, "large", dets(2)),
        ]
    }

    /// The 10 statistics of COCOeval's `summarize()` for keypoints (`_summarizeKps`, see
    /// [`KEYPOINT_STAT_NAMES`]), all at 20 detections per image (the largest
    /// max-detections value of [`Params::keypoints`]).
    pub fn keypoint_stats(&self) -> [f64; 10] {
        let dets = *self.params.max_dets.last().expect("max_dets is not empty");
        [
            self.summarize(true, None, "all", dets),
            self.summarize(true, Some(0.5), "all", dets),
            self.summarize(true, Some(0.75), "all", dets),
            self.summarize(true, None, "medium", dets),
            self.summarize(true, None, "large", dets),
            self.summarize(false, None, "all", dets),
            self.summarize(false, Some(0.5), "all", dets),
            self.summarize(false, Some(0.75), "all", dets),
            self.summarize(false, None, "medium", dets),
            self.summarize(false, None, "large", dets),
        ]
    }

    /// The precision-recall curve of category `k` at IoU threshold `iou` (area `all`, the
    /// largest max-detections): precision at each recall threshold, as in `precision`;
    /// None when the category has no ground truth here or no threshold equals `iou`.
    pub fn pr_curve(&self, k: usize, iou: f64) -> Option<Vec<f64>> {
        let t = self.params.iou_thresholds.iter().position(|&v| v == iou)?;
        let shape = self.shape();
        let curve: Vec<f64> = (0..shape.r).map(|r| self.precision[shape.precision(t, r, k, 0, shape.m - 1)]).collect();
        (curve[0] > -1.0).then_some(curve)
    }

    /// Average precision of category `k` over area `all` and the largest max-detections,
    /// at every IoU threshold (`None`) or the one equal to `iou`; -1 without ground truth.
    pub fn category_ap(&self, k: usize, iou: Option<f64>) -> f64 {
        let shape = self.shape();
        let mut values = Vec::new();
        for t in self.thresholds(iou) {
            for r in 0..shape.r {
                values.push(self.precision[shape.precision(t, r, k, 0, shape.m - 1)]);
            }
        }
        values.retain(|&v| v > -1.0);
        mean(&values).unwrap_or(-1.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::synthetic::{Spec, generate};

    #[test]
    fn weighted_ap_with_unit_weights_is_the_coco_ap() {
        let inputs = generate(Spec::coco_like(9, 300)).inputs();
        let n = inputs.image_ids.len();
        let matching = evaluate(
            n as u32,
            inputs.category_ids.len() as u32,
            &inputs.ground_truth,
            &inputs.detections,
            &Params::default(),
        );
        let order = matching.score_order();
        let stats = matching.accumulate().stats();
        let (ap, ap50) = matching.weighted_ap(&order, &vec![1; n], 0.5);
        assert!((ap.unwrap() - stats[0]).abs() < 1e-12 && (ap50.unwrap() - stats[1]).abs() < 1e-12);
        // 0/1 weights are a subset of images, exactly as accumulate_images sees it.
        let weights: Vec<u32> = (0..n).map(|i| (i % 3 == 0) as u32).collect();
        let mask: Vec<bool> = (0..n).map(|i| i % 3 == 0).collect();
        let subset = matching.accumulate_images(&mask).stats();
        let (ap, ap50) = matching.weighted_ap(&order, &weights, 0.5);
        assert!((ap.unwrap() - subset[0]).abs() < 1e-12 && (ap50.unwrap() - subset[1]).abs() < 1e-12);
        // Doubling every image changes nothing but the ties' order.
        let (ap, _) = matching.weighted_ap(&order, &vec![2; n], 0.5);
        assert!((ap.unwrap() - stats[0]).abs() < 1e-3, "{ap:?} vs {}", stats[0]);
        assert_eq!(matching.weighted_ap(&order, &vec![0; n], 0.5), (None, None));
    }
}
