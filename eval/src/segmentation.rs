//! Semantic segmentation: label maps to pixel statistics and confusion matrices, and a
//! confusion matrix to the metrics of Hugging Face evaluate's `mean_iou` (mmseg's
//! definition).
//!
//! A label map is one class id per pixel in row-major order; `ignore` marks pixels that
//! have no label (255 by convention) and count nowhere. Metrics are computed from a
//! confusion matrix summed over a set of images, never as a mean of per-image IoUs: a
//! slice's IoU for class k is `Σ tp / Σ (tp + fp + fn)` over its images, which is what
//! `mean_iou` reports for the same images.

use serde::Serialize;

use crate::numpy;

/// A class id outside the class list, found in a label map.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct UnknownClass {
    /// The value found.
    pub value: u16,
    /// The first pixel (row-major index) holding it.
    pub pixel: usize,
    /// How many pixels hold a value outside the class list.
    pub count: usize,
}

/// Per class, the number of pixels labelled with it (`ignore` pixels excluded).
pub fn histogram(labels: &[u16], classes: usize, ignore: u16) -> Result<Vec<u64>, UnknownClass> {
    let mut counts = vec![0u64; classes];
    let mut unknown: Option<UnknownClass> = None;
    for (i, &v) in labels.iter().enumerate() {
        if v == ignore {
            continue;
        }
        match counts.get_mut(v as usize) {
            Some(c) => *c += 1,
            None => note_unknown(&mut unknown, v, i),
        }
    }
    unknown.map_or(Ok(counts), Err)
}

fn note_unknown(unknown: &mut Option<UnknownClass>, value: u16, pixel: usize) {
    match unknown {
        Some(u) => u.count += 1,
        None => *unknown = Some(UnknownClass { value, pixel, count: 1 }),
    }
}

/// Per class, the number of connected regions of its pixels (8-connectivity: pixels that
/// touch at an edge or a corner belong to one region), as `scipy.ndimage.label` counts
/// them with a 3×3 structure. Values must be class ids or `ignore` (check with
/// [`histogram`] first); out-of-range values are skipped.
pub fn regions(labels: &[u16], width: usize, height: usize, classes: usize, ignore: u16) -> Vec<u32> {
    assert_eq!(labels.len(), width * height, "a label map has width × height pixels");
    regions_of_runs(&runs(labels), width, height, classes, ignore)
}

/// Per class, the number in pixels labelled with it (`ignore` pixels excluded), of a label
/// map given as [`runs`].
pub fn histogram_of_runs(runs: &[(u16, u32)], classes: usize, ignore: u16) -> Result<Vec<u64>, UnknownClass> {
    let mut counts = vec![0u64; classes];
    let mut unknown: Option<UnknownClass> = None;
    let mut pixel = 0usize;
    for &(v, n) in runs {
        if v != ignore {
            match counts.get_mut(v as usize) {
                Some(c) => *c += n as u64,
                None => match &mut unknown {
                    Some(u) => u.count += n as usize,
                    None => unknown = Some(UnknownClass { value: v, pixel, count: n as usize }),
                },
            }
        }
        pixel += n as usize;
    }
    unknown.map_or(Ok(counts), Err)
}

/// [`regions`] of a label map given as [`runs`] (row-major, covering width × height pixels).
pub fn regions_of_runs(
    image_runs: &[(u16, u32)],
    width: usize,
    height: usize,
    classes: usize,
    ignore: u16,
) -> Vec<u32> {
    assert_eq!(
        image_runs.iter().map(|&(_, n)| n as usize).sum::<usize>(),
        width * height,
        "a label map has width × height pixels"
    );
    // Union-find over row runs (maximal same-class stretches of a row), not pixels: a run
    // joins every run of its class in the row above that overlaps it or touches it at a
    // corner, i.e. that spans any of columns start-1 ..= end. Label maps are mostly long
    // runs, so this touches a few entries per row instead of every pixel.
    struct Run {
        start: usize,
        end: usize,
        class: u16,
    }
    let valid = |v: u16| v != ignore && (v as usize) < classes;
    let mut runs: Vec<Run> = Vec::new();
    let mut parent: Vec<u32> = Vec::new();
    fn find(parent: &mut [u32], mut i: u32) -> u32 {
        while parent[i as usize] != i {
            let up = parent[parent[i as usize] as usize];
            parent[i as usize] = up;
            i = up;
        }
        i
    }
    let mut above = 0..0;
    // The image's runs, cut at row ends.
    let mut pending = image_runs.iter().copied().filter(|&(_, n)| n > 0);
    let mut carried: Option<(u16, usize)> = None;
    for _ in 0..height {
        let first = runs.len();
        let mut x = 0;
        while x < width {
            let (class, n) = match carried.take() {
                Some(c) => c,
                None => {
                    let (v, n) = pending.next().expect("runs cover every row");
                    (v, n as usize)
                }
            };
            let take = n.min(width - x);
            if take < n {
                carried = Some((class, n - take));
            }
            let start = x;
            x += take;
            // Input runs need not be maximal: a run continuing its row neighbour's class extends it.
            let in_row = runs.len() > first;
            match runs.last_mut() {
                Some(last) if in_row && last.class == class && last.end == start => last.end = x,
                _ if valid(class) => {
                    runs.push(Run { start, end: x, class });
                    parent.push((runs.len() - 1) as u32);
                }
                _ => {}
            }
        }
        // Join with the row above: both lists are sorted by start, so one sweep finds the overlaps.
        let mut j = above.start;
        for i in first..runs.len() {
            let (start, end, class) = (runs[i].start, runs[i].end, runs[i].class);
            while j < above.end && runs[j].end < start {
                j += 1;
            }
            let mut k = j;
            while k < above.end && runs[k].start <= end {
                if runs[k].class == class {
                    let (a, b) = (find(&mut parent, i as u32), find(&mut parent, k as u32));
                    if a != b {
                        let (lo, hi) = if a < b { (a, b) } else { (b, a) };
                        parent[hi as usize] = lo;
                    }
                }
                k += 1;
            }
        }
        above = first..runs.len();
    }
    let mut counts = vec![0u32; classes];
    for (i, run) in runs.iter().enumerate() {
        if parent[i] == i as u32 {
            counts[run.class as usize] += 1;
        }
    }
    counts
}

/// The K×K pixel confusion matrix of one image (row = true class, column = predicted
/// class, row-major), over the pixels whose truth is not `ignore`. A predicted value
/// outside the class list on such a pixel is an error (`UnknownClass` of the prediction);
/// so is a true value outside it.
pub fn confusion(truth: &[u16], predicted: &[u16], classes: usize, ignore: u16) -> Result<Vec<u64>, UnknownClass> {
    assert_eq!(truth.len(), predicted.len(), "truth and prediction cover the same pixels");
    let mut counts = vec![0u64; classes * classes];
    let mut unknown: Option<UnknownClass> = None;
    for (i, (&t, &p)) in truth.iter().zip(predicted).enumerate() {
        if t == ignore {
            continue;
        }
        let (t, p) = (t as usize, p as usize);
        if t < classes && p < classes {
            counts[t * classes + p] += 1;
        } else {
            note_unknown(&mut unknown, if t >= classes { t as u16 } else { p as u16 }, i);
        }
    }
    unknown.map_or(Ok(counts), Err)
}

/// [`confusion`] over run-length encoded label maps: `truth` and `predicted` are
/// (value, run length) pairs covering the same pixels in the same order. Walking both run
/// lists costs one step per run boundary instead of one per pixel.
pub fn confusion_of_runs(
    truth: &[(u16, u32)],
    predicted: &[(u16, u32)],
    classes: usize,
    ignore: u16,
) -> Result<Vec<u64>, UnknownClass> {
    let mut counts = vec![0u64; classes * classes];
    let mut unknown: Option<UnknownClass> = None;
    let (mut t, mut p) = (truth.iter().copied(), predicted.iter().copied());
    let (mut a, mut b) = (t.next(), p.next());
    let mut pixel = 0usize;
    while let (Some((tv, tn)), Some((pv, pn))) = (a, b) {
        let n = tn.min(pn);
        if tv != ignore {
            if (tv as usize) < classes && (pv as usize) < classes {
                counts[tv as usize * classes + pv as usize] += n as u64;
            } else {
                let value = if tv as usize >= classes { tv } else { pv };
                match &mut unknown {
                    Some(u) => u.count += n as usize,
                    None => unknown = Some(UnknownClass { value, pixel, count: n as usize }),
                }
            }
        }
        pixel += n as usize;
        a = if tn > n { Some((tv, tn - n)) } else { t.next() };
        b = if pn > n { Some((pv, pn - n)) } else { p.next() };
    }
    assert!(a.is_none() && b.is_none(), "truth and prediction cover the same pixels");
    unknown.map_or(Ok(counts), Err)
}

/// A label map's runs: (value, length) pairs, row-major, each maximal.
pub fn runs(labels: &[u16]) -> Vec<(u16, u32)> {
    let mut out: Vec<(u16, u32)> = Vec::new();
    let mut rest = labels;
    while let Some(&v) = rest.first() {
        // Skip whole blocks of 16 equal values first (a branch-free compare the compiler
        // vectorises), then find the first differing value in the block that has one.
        let mut n = 0;
        while let Some(block) = rest.get(n..n + 16) {
            if !block.iter().fold(true, |same, &x| same & (x == v)) {
                break;
            }
            n += 16;
        }
        n += rest[n..].iter().position(|&x| x != v).unwrap_or(rest.len() - n);
        out.push((v, n as u32));
        rest = &rest[n..];
    }
    out
}

/// The label map of [`runs`]' output: each value repeated its run length.
pub fn expand_runs(runs: &[(u16, u32)]) -> Vec<u16> {
    let mut labels = Vec::with_capacity(runs.iter().map(|&(_, n)| n as usize).sum());
    for &(v, n) in runs {
        labels.resize(labels.len() + n as usize, v);
    }
    labels
}

/// One class's pixels and scores over a set of images.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ClassScores {
    /// Pixels of the class predicted as the class.
    pub tp: u64,
    /// Pixels of other classes predicted as the class.
    pub fp: u64,
    /// Pixels of the class predicted as another class.
    #[serde(rename = "fn")]
    pub fn_: u64,
    /// `tp / (tp + fp + fn)`; None when the class is neither true nor predicted anywhere.
    pub iou: Option<f64>,
    /// `tp / (tp + fn)` (the class's recall); None when no pixel is of the class.
    pub accuracy: Option<f64>,
}

/// Hugging Face evaluate's `mean_iou` over a summed confusion matrix.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct SegmentationScores {
    /// Labelled pixels (truth not `ignore`).
    pub pixels: u64,
    /// Per class, in class-id order.
    pub classes: Vec<ClassScores>,
    /// Mean IoU over the classes whose IoU is defined (`np.nanmean`).
    pub mean_iou: Option<f64>,
    /// Mean per-class accuracy over the classes present in the truth (`np.nanmean`).
    pub mean_accuracy: Option<f64>,
    /// Correct pixels over labelled pixels (`overall_accuracy`).
    pub pixel_accuracy: Option<f64>,
}

/// The scores of a K×K confusion matrix (row = truth, column = prediction).
pub fn scores(confusion: &[u64], classes: usize) -> SegmentationScores {
    assert_eq!(confusion.len(), classes * classes, "a K×K matrix");
    let mut per_class = Vec::with_capacity(classes);
    let (mut pixels, mut correct) = (0u64, 0u64);
    for k in 0..classes {
        let row: u64 = confusion[k * classes..(k + 1) * classes].iter().sum();
        let column: u64 = (0..classes).map(|t| confusion[t * classes + k]).sum();
        let tp = confusion[k * classes + k];
        pixels += row;
        correct += tp;
        let union = row + column - tp;
        per_class.push(ClassScores {
            tp,
            fp: column - tp,
            fn_: row - tp,
            iou: (union > 0).then(|| tp as f64 / union as f64),
            accuracy: (row > 0).then(|| tp as f64 / row as f64),
        });
    }
    SegmentationScores {
        pixels,
        mean_iou: numpy::nanmean(per_class.iter().map(|c| c.iou)),
        mean_accuracy: numpy::nanmean(per_class.iter().map(|c| c.accuracy)),
        pixel_accuracy: (pixels > 0).then(|| correct as f64 / pixels as f64),
        classes: per_class,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regions_join_diagonal_neighbours() {
        #[rustfmt::skip]
        let labels = [
            1, 0, 0, 2,
            0, 1, 0, 2,
            0, 0, 0, 9,
            1, 1, 9, 2,
        ];
        // Class 1: the diagonal pair is one region, the bottom pair another; class 0 is
        // one region (its pixels all touch); class 2: the top pair, and the corner pixel
        // cut off by ignore (9) on both sides.
        assert_eq!(regions(&labels, 4, 4, 3, 9), [1, 2, 2]);
    }

    #[test]
    fn a_region_that_wraps_around_is_counted_once() {
        // A U shape: its two arms meet only at the bottom row, after both were labelled.
        #[rustfmt::skip]
        let labels = [
            1, 0, 1,
            1, 0, 1,
            1, 1, 1,
        ];
        assert_eq!(regions(&labels, 3, 3, 2, 255), [1, 1]);
    }

    /// Regions by flood fill, pixel by pixel: what the run-based union-find must count.
    fn regions_by_flood_fill(labels: &[u16], w: usize, h: usize, classes: usize, ignore: u16) -> Vec<u32> {
        let mut seen = vec![false; labels.len()];
        let mut counts = vec![0u32; classes];
        for start in 0..labels.len() {
            let v = labels[start];
            if seen[start] || v == ignore || v as usize >= classes {
                continue;
            }
            counts[v as usize] += 1;
            let mut stack = vec![start];
            seen[start] = true;
            while let Some(i) = stack.pop() {
                let (x, y) = ((i % w) as i64, (i / w) as i64);
                for (dx, dy) in [(-1, -1), (0, -1), (1, -1), (-1, 0), (1, 0), (-1, 1), (0, 1), (1, 1)] {
                    let (nx, ny) = (x + dx, y + dy);
                    if nx < 0 || ny < 0 || nx >= w as i64 || ny >= h as i64 {
                        continue;
                    }
                    let j = ny as usize * w + nx as usize;
                    if !seen[j] && labels[j] == v {
                        seen[j] = true;
                        stack.push(j);
                    }
                }
            }
        }
        counts
    }

    proptest::proptest! {
        #[test]
        fn regions_equal_a_flood_fill(w in 1usize..12, h in 1usize..12, seed in proptest::prelude::any::<u64>()) {
            // Few classes and some ignore pixels, so regions meet at corners and wrap around.
            let mut state = seed;
            let labels: Vec<u16> = (0..w * h)
                .map(|_| {
                    state = state.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
                    match (state >> 33) % 7 { 6 => 9, v => (v % 3) as u16 }
                })
                .collect();
            proptest::prop_assert_eq!(regions(&labels, w, h, 3, 9), regions_by_flood_fill(&labels, w, h, 3, 9));
            // Runs cut anywhere (not maximal, as a painter may give them) count the same.
            let cut: Vec<(u16, u32)> = labels.iter().map(|&v| (v, 1)).collect();
            proptest::prop_assert_eq!(regions_of_runs(&cut, w, h, 3, 9), regions_by_flood_fill(&labels, w, h, 3, 9));
            proptest::prop_assert_eq!(histogram_of_runs(&cut, 3, 9).unwrap(), histogram(&labels, 3, 9).unwrap());
        }
    }

    #[test]
    fn runs_are_maximal_across_block_boundaries() {
        let mut labels = vec![3u16; 40];
        labels[16] = 1;
        labels.extend([2; 33]);
        assert_eq!(runs(&labels), [(3, 16), (1, 1), (3, 23), (2, 33)]);
        assert_eq!(runs(&[]), []);
        assert_eq!(runs(&[7; 32]), [(7, 32)]);
        assert_eq!(expand_runs(&runs(&labels)), labels);
    }

    proptest::proptest! {
        #[test]
        fn confusion_of_runs_equals_the_pixel_confusion(
            pairs in proptest::collection::vec((0u16..4, 0u16..3), 0..200),
        ) {
            // Value 3 of the truth is the ignore index; runs come from repeated values.
            let (truth, predicted): (Vec<u16>, Vec<u16>) = pairs.into_iter().unzip();
            proptest::prop_assert_eq!(
                confusion_of_runs(&runs(&truth), &runs(&predicted), 3, 3).unwrap(),
                confusion(&truth, &predicted, 3, 3).unwrap()
            );
        }
    }

    #[test]
    fn histogram_and_confusion_skip_ignore_and_report_unknown_ids() {
        let truth = [0, 1, 255, 1, 2];
        let predicted = [0, 2, 7, 1, 2];
        assert_eq!(histogram(&truth, 3, 255).unwrap(), [1, 2, 1]);
        assert_eq!(confusion(&truth, &predicted, 3, 255).unwrap(), [1, 0, 0, 0, 1, 1, 0, 0, 1]);
        let err = histogram(&[0, 5, 5, 255], 3, 255).unwrap_err();
        assert_eq!(err, UnknownClass { value: 5, pixel: 1, count: 2 });
        let err = confusion(&[0, 1], &[0, 3], 3, 255).unwrap_err();
        assert_eq!((err.value, err.pixel), (3, 1));
    }

    #[test]
    fn scores_follow_mean_iou() {
        // Class 2 is only predicted: IoU 0, accuracy undefined. Class 3 is nowhere: both undefined.
        let classes = 4;
        let mut m = vec![0u64; 16];
        let mut put = |t: usize, p: usize, n: u64| m[t * classes + p] = n;
        put(0, 0, 6);
        put(0, 1, 2);
        put(1, 1, 3);
        put(1, 2, 1);
        let s = scores(&m, classes);
        assert_eq!(s.pixels, 12);
        assert_eq!(s.classes[0], ClassScores { tp: 6, fp: 0, fn_: 2, iou: Some(0.75), accuracy: Some(0.75) });
        assert_eq!(s.classes[1].iou, Some(0.5));
        assert_eq!((s.classes[2].iou, s.classes[2].accuracy), (Some(0.0), None));
        assert_eq!((s.classes[3].iou, s.classes[3].accuracy), (None, None));
        assert_eq!(s.mean_iou, Some((0.75 + 0.5 + 0.0) / 3.0));
        assert_eq!(s.mean_accuracy, Some((0.75 + 0.75) / 2.0));
        assert_eq!(s.pixel_accuracy, Some(9.0 / 12.0));
        let empty = scores(&[0; 4], 2);
        assert_eq!((empty.mean_iou, empty.pixel_accuracy), (None, None));
    }
}
