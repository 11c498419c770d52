//! The class confusion matrix of a detection run at its operating point, with a
//! background row and column.
//!
//! COCO matches a detection only to objects of its own category, so a shirt detected as a
//! T-shirt counts as a missed shirt *and* a false T-shirt. The matrix puts such pairs
//! back together: within an image, the operating point's false detections and missed
//! objects of *different* categories that overlap at IoU ≥ 0.5 are paired greedily
//! (highest IoU first, then the higher score), as YOLO-style confusion matrices do. What
//! stays unpaired is a false detection of the background (a false positive from nothing)
//! or an object missed into the background. The diagonal is the operating point's true
//! positives, so a category's row sums to its objects (TP + FN) and its column to its
//! detections (TP + FP): the matrix and the per-category table always agree.

use std::collections::HashMap;

use serde::Serialize;
use slicetest_eval::coco;

use super::{OPERATING_IOU, RunEvaluation};

/// Rows are the true category, columns the predicted one; the last row and column are the
/// background.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct DetectionConfusion {
    /// Row and column labels: the dataset's categories in id order, then `background`.
    pub labels: Vec<String>,
    /// `counts[true][predicted]`. `counts[k][background]` are objects of `k` no detection
    /// found or mistook; `counts[background][k]` are detections of `k` on no object.
    pub counts: Vec<Vec<u64>>,
}

impl DetectionConfusion {
    /// The `n` largest cells off the diagonal as (true, predicted, count), largest first
    /// (ties in label order); `background` as the predicted label is a missed object, as
    /// the true label a false detection.
    pub fn top_confusions(&self, n: usize) -> Vec<(&str, &str, u64)> {
        let mut cells: Vec<(&str, &str, u64)> = Vec::new();
        for (i, row) in self.counts.iter().enumerate() {
            for (j, &count) in row.iter().enumerate() {
                if i != j && count > 0 {
                    cells.push((&self.labels[i], &self.labels[j], count));
                }
            }
        }
        cells.sort_by_key(|c| std::cmp::Reverse(c.2));
        cells.truncate(n);
        cells
    }
}

/// One off-diagonal entry of the matrix, found once per run: on `image`, an object of
/// category `truth` (or the background, `categories.len()`) met a detection of `predicted`
/// (or none, the background).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Confusion {
    pub image: u32,
    pub truth: u32,
    pub predicted: u32,
}

impl RunEvaluation {
    /// Pairs every image's false detections with its missed objects of other categories
    /// (see the module docs). Run once, after the operating point is fixed.
    pub(super) fn find_confusions(&self) -> Vec<Confusion> {
        let background = self.categories.len() as u32;
        // Per image: missed objects (category, object position) and false detections
        // (category, file row, score).
        let mut missed: HashMap<u32, Vec<(u32, u32)>> = HashMap::new();
        let mut false_detections: HashMap<u32, Vec<(u32, u32, f64)>> = HashMap::new();
        for cell in &self.cells {
            for b in self.cell_boxes(cell) {
                match (b.outcome, b.detection, b.object) {
                    ("fn", _, Some(g)) => missed.entry(cell.image).or_default().push((cell.category, g)),
                    ("fp", Some(row), _) => false_detections.entry(cell.image).or_default().push((
                        cell.category,
                        row,
                        b.score.unwrap_or(0.0),
                    )),
                    _ => {}
                }
            }
        }
        let mut images: Vec<u32> = missed.keys().chain(false_detections.keys()).copied().collect();
        images.sort_unstable();
        images.dedup();
        let mut out = Vec::new();
        for image in images {
            let objects = missed.remove(&image).unwrap_or_default();
            let detections = false_detections.remove(&image).unwrap_or_default();
            let mut pairs: Vec<(f64, f64, u32, u32, usize, usize)> = Vec::new();
            for (o, &(truth, g)) in objects.iter().enumerate() {
                for (d, &(predicted, row, score)) in detections.iter().enumerate() {
                    if truth == predicted {
                        continue;
                    }
                    let iou = coco::iou(&self.detection_boxes[row as usize], &self.object_boxes[g as usize], false);
                    if iou >= OPERATING_IOU {
                        pairs.push((iou, score, row, g, o, d));
                    }
                }
            }
            // Highest IoU first, then the higher score; rows and objects break exact ties
            // so the matrix does not depend on hashing.
            pairs.sort_by(|a, b| b.0.total_cmp(&a.0).then(b.1.total_cmp(&a.1)).then(a.2.cmp(&b.2)).then(a.3.cmp(&b.3)));
            let (mut object_used, mut detection_used) = (vec![false; objects.len()], vec![false; detections.len()]);
            for &(_, _, _, _, o, d) in &pairs {
                if object_used[o] || detection_used[d] {
                    continue;
                }
                (object_used[o], detection_used[d]) = (true, true);
                out.push(Confusion { image, truth: objects[o].0, predicted: detections[d].0 });
            }
            for (&(truth, _), used) in objects.iter().zip(&object_used) {
                if !used {
                    out.push(Confusion { image, truth, predicted: background });
                }
            }
            for (&(predicted, _, _), used) in detections.iter().zip(&detection_used) {
                if !used {
                    out.push(Confusion { image, truth: background, predicted });
                }
            }
        }
        out
    }

    /// The matrix over the included images; `true_positives[k]` fills the diagonal.
    pub(super) fn confusion(&self, include: &[bool], true_positives: &[u64]) -> DetectionConfusion {
        let n = self.categories.len() + 1;
        let mut counts = vec![vec![0u64; n]; n];
        for (k, &tp) in true_positives.iter().enumerate() {
            counts[k][k] = tp;
        }
        for c in self.confusions.iter().filter(|c| include[c.image as usize]) {
            counts[c.truth as usize][c.predicted as usize] += 1;
        }
        let labels =
            self.categories.iter().map(|c| c.name.clone()).chain(std::iter::once("background".into())).collect();
        DetectionConfusion { labels, counts }
    }
}
