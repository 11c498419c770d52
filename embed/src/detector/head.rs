//! The detector's output: CenterNet's training targets and losses, and the decoding of
//! heatmap peaks into boxes.
//!
//! The head's output has `classes + 4` channels per output cell: one heatmap logit per
//! class, then the box's width and height in cells, then the centre's offset inside the
//! cell (x, y). All the arithmetic that feeds training runs in f64 with this crate's own
//! `exp` and `ln_1p`, never the C library's.

use crate::classifier::exp;

use super::{Detection, GroundTruth, STRIDE};

/// Focal loss exponents (CenterNet's α and β).
const ALPHA_POWER: i32 = 2;
const BETA_POWER: i32 = 4;
/// Weights of the size and offset L1 losses (CenterNet's, with sizes in cells).
const SIZE_WEIGHT: f64 = 0.1;
const OFFSET_WEIGHT: f64 = 1.0;

/// ln(1 + t) for t in [0, 1] in plain arithmetic: with s = t / (2 + t),
/// ln(1 + t) = 2·atanh(s) = 2·(s + s³/3 + s⁵/5 + …), and s ≤ 1/3, so 20 terms leave an
/// error below 2⁻⁵³ relative.
pub(crate) fn ln_1p(t: f64) -> f64 {
    let s = t / (2.0 + t);
    let s2 = s * s;
    let mut p = 0.0;
    for n in (0..20).rev() {
        p = 1.0 / (2 * n + 1) as f64 + s2 * p;
    }
    2.0 * s * p
}

/// The logistic function with [`exp`] (only ever of a non-positive number).
pub(crate) fn sigmoid(x: f64) -> f64 {
    if x >= 0.0 {
        1.0 / (1.0 + exp(-x))
    } else {
        let e = exp(x);
        e / (1.0 + e)
    }
}

/// ln(1 + eᶻ), without overflow.
fn softplus(z: f64) -> f64 {
    z.max(0.0) + ln_1p(exp(-z.abs()))
}

/// x to a small positive power by repeated multiplication (the same on every CPU).
fn power(x: f64, n: i32) -> f64 {
    (0..n).fold(1.0, |p, _| p * x)
}

/// One object's place on the output grid: the regression targets at its centre cell.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Centre {
    /// Index of the centre cell, `row · width + column`.
    pub cell: usize,
    pub class: usize,
    /// Width and height in cells.
    pub size: [f64; 2],
    /// The centre's offset inside its cell, in [0, 1).
    pub offset: [f64; 2],
}

/// CenterNet's Gaussian radius (in cells) for a box of `w × h` cells: the largest corner
/// shift that keeps the IoU with the true box at 0.7 or more, by the three quadratics of
/// the reference implementation (kept as written there).
fn gaussian_radius(w: f64, h: f64) -> f64 {
    const MIN_OVERLAP: f64 = 0.7;
    let b1 = h + w;
    let c1 = w * h * (1.0 - MIN_OVERLAP) / (1.0 + MIN_OVERLAP);
    let r1 = (b1 + (b1 * b1 - 4.0 * c1).sqrt()) / 2.0;
    let b2 = 2.0 * (h + w);
    let c2 = (1.0 - MIN_OVERLAP) * w * h;
    let r2 = (b2 + (b2 * b2 - 16.0 * c2).sqrt()) / 2.0;
    let a3 = 4.0 * MIN_OVERLAP;
    let b3 = -2.0 * MIN_OVERLAP * (h + w);
    let c3 = (MIN_OVERLAP - 1.0) * w * h;
    let r3 = (b3 + (b3 * b3 - 4.0 * a3 * c3).sqrt()) / 2.0;
    r1.min(r2).min(r3)
}

/// The heatmap targets of one image (`height × width × classes`, a Gaussian around each
/// object's centre cell, 1 exactly at the cell, the maximum where two overlap) and its
/// objects' centres.
pub(crate) fn targets(objects: &[GroundTruth], classes: usize, height: usize, width: usize) -> (Vec<f64>, Vec<Centre>) {
    let mut heat = vec![0f64; height * width * classes];
    let mut centres = Vec::with_capacity(objects.len());
    let stride = STRIDE as f64;
    for object in objects {
        let class = object.class as usize;
        assert!(class < classes, "class {class} of {classes}");
        let (cx, cy) = ((object.x + object.w / 2.0) / stride, (object.y + object.h / 2.0) / stride);
        let (col, row) = ((cx.floor() as usize).min(width - 1), (cy.floor() as usize).min(height - 1));
        let (w, h) = (object.w / stride, object.h / stride);
        let radius = gaussian_radius(w, h).max(0.0).floor() as usize;
        let sigma = (2 * radius + 1) as f64 / 6.0;
        for y in row.saturating_sub(radius)..(row + radius + 1).min(height) {
            for x in col.saturating_sub(radius)..(col + radius + 1).min(width) {
                let (dx, dy) = (x.abs_diff(col) as f64, y.abs_diff(row) as f64);
                let g = if dx == 0.0 && dy == 0.0 { 1.0 } else { exp(-(dx * dx + dy * dy) / (2.0 * sigma * sigma)) };
                // CenterNet drops the Gaussian's negligible tail.
                if g >= f64::EPSILON {
                    let t = &mut heat[(y * width + x) * classes + class];
                    *t = t.max(g);
                }
            }
        }
        centres.push(Centre {
            cell: row * width + col,
            class,
            size: [w, h],
            offset: [cx - col as f64, cy - row as f64],
        });
    }
    (heat, centres)
}

/// CenterNet's loss for one image's head output (`cells × (classes + 4)`), as sums to be
/// divided by the batch's object count: the focal loss over every heatmap logit, and the
/// L1 losses of size and offset at each object's centre cell. Adds the gradient of those
/// sums divided by `normaliser` into `grad` and returns the summed loss.
pub(crate) fn loss(
    output: &[f32],
    heat: &[f64],
    centres: &[Centre],
    classes: usize,
    normaliser: f64,
    grad: &mut [f32],
) -> f64 {
    let channels = classes + 4;
    let mut total = 0.0;
    for ((out, target), g) in
        output.chunks_exact(channels).zip(heat.chunks_exact(classes)).zip(grad.chunks_exact_mut(channels))
    {
        for c in 0..classes {
            let x = out[c] as f64;
            let p = sigmoid(x);
            let (value, slope) = if target[c] == 1.0 {
                // −(1 − p)^α · ln p, with ln p = −softplus(−x).
                let ln_p = -softplus(-x);
                let value = -power(1.0 - p, ALPHA_POWER) * ln_p;
                (value, 2.0 * p * power(1.0 - p, 2) * ln_p - power(1.0 - p, 3))
            } else {
                // −(1 − y)^β · p^α · ln(1 − p), with ln(1 − p) = −softplus(x).
                let weight = power(1.0 - target[c], BETA_POWER);
                let ln_q = -softplus(x);
                let value = -weight * power(p, ALPHA_POWER) * ln_q;
                (value, -weight * (2.0 * p * p * (1.0 - p) * ln_q - power(p, 3)))
            };
            total += value;
            g[c] += (slope / normaliser) as f32;
        }
    }
    for centre in centres {
        let out = &output[centre.cell * channels..][..channels];
        let g = &mut grad[centre.cell * channels..][..channels];
        for (i, (target, weight)) in [
            (centre.size[0], SIZE_WEIGHT),
            (centre.size[1], SIZE_WEIGHT),
            (centre.offset[0], OFFSET_WEIGHT),
            (centre.offset[1], OFFSET_WEIGHT),
        ]
        .into_iter()
        .enumerate()
        {
            let diff = out[classes + i] as f64 - target;
            total += weight * diff.abs();
            let sign = if diff > 0.0 {
                1.0
            } else if diff < 0.0 {
                -1.0
            } else {
                0.0
            };
            g[classes + i] += (weight * sign / normaliser) as f32;
        }
    }
    total
}

/// The `top_k` highest heatmap peaks of one image's head output (`height × width ×
/// (classes + 4)`) as boxes in input pixels, clipped to the `side × side` input, best
/// first. A peak is a cell whose score is at least each of its eight neighbours' in the
/// same class (CenterNet's 3×3 max-pool); ties in score keep (class, row, column) order.
pub(crate) fn decode(
    output: &[f32],
    classes: usize,
    height: usize,
    width: usize,
    side: usize,
    top_k: usize,
) -> Vec<Detection> {
    let channels = classes + 4;
    let logit = |y: usize, x: usize, c: usize| output[(y * width + x) * channels + c];
    let mut peaks: Vec<(f32, usize, usize, usize)> = Vec::new();
    for c in 0..classes {
        for y in 0..height {
            for x in 0..width {
                let v = logit(y, x, c);
                let mut is_peak = true;
                'neighbours: for ny in y.saturating_sub(1)..(y + 2).min(height) {
                    for nx in x.saturating_sub(1)..(x + 2).min(width) {
                        if logit(ny, nx, c) > v {
                            is_peak = false;
                            break 'neighbours;
                        }
                    }
                }
                if is_peak {
                    peaks.push((v, c, y, x));
                }
            }
        }
    }
    // The sigmoid is monotone, so peaks and their order are the logits'.
    peaks.sort_by(|a, b| b.0.total_cmp(&a.0).then((a.1, a.2, a.3).cmp(&(b.1, b.2, b.3))));
    peaks.truncate(top_k);
    let (stride, side) = (STRIDE as f64, side as f64);
    peaks
        .into_iter()
        .map(|(v, class, y, x)| {
            let cell = &output[(y * width + x) * channels + classes..][..4];
            let (w, h) = ((cell[0] as f64).max(0.0) * stride, (cell[1] as f64).max(0.0) * stride);
            let (cx, cy) = ((x as f64 + cell[2] as f64) * stride, (y as f64 + cell[3] as f64) * stride);
            let (x0, y0) = ((cx - w / 2.0).clamp(0.0, side), (cy - h / 2.0).clamp(0.0, side));
            let (x1, y1) = ((cx + w / 2.0).clamp(0.0, side), (cy + h / 2.0).clamp(0.0, side));
            Detection { class: class as u32, x: x0, y: y0, w: x1 - x0, h: y1 - y0, score: sigmoid(v as f64) }
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ln_1p_and_sigmoid_match_the_standard_library_closely() {
        for i in 0..=10_000 {
            let t = i as f64 / 10_000.0;
            let (ours, std) = (ln_1p(t), t.ln_1p());
            assert!(
                (ours - std).abs() <= 4.0 * f64::EPSILON * std.max(f64::MIN_POSITIVE),
                "ln_1p({t}) = {ours} vs {std}"
            );
        }
        assert_eq!(ln_1p(0.0), 0.0);
        for i in -4000..=4000 {
            let x = i as f64 / 100.0;
            let std = 1.0 / (1.0 + (-x).exp());
            assert!((sigmoid(x) - std).abs() <= 1e-15, "sigmoid({x})");
        }
    }

    #[test]
    fn targets_peak_at_the_centre_cell() {
        let object = GroundTruth { class: 1, x: 20.0, y: 8.0, w: 24.0, h: 16.0 };
        let (heat, centres) = targets(&[object], 2, 12, 12);
        // Centre (32, 16) in pixels is (8, 4) in cells.
        assert_eq!(centres, [Centre { cell: 4 * 12 + 8, class: 1, size: [6.0, 4.0], offset: [0.0, 0.0] }]);
        assert_eq!(heat[(4 * 12 + 8) * 2 + 1], 1.0);
        assert!(heat[(4 * 12 + 9) * 2 + 1] > 0.0 && heat[(4 * 12 + 9) * 2 + 1] < 1.0);
        assert!(heat.iter().step_by(2).all(|&v| v == 0.0), "class 0 has no object");
        assert_eq!(heat.iter().filter(|&&v| v == 1.0).count(), 1);
    }

    #[test]
    fn the_loss_gradient_matches_finite_differences() {
        let classes = 2;
        let channels = classes + 4;
        let objects = [GroundTruth { class: 0, x: 3.0, y: 5.0, w: 14.0, h: 9.0 }];
        let (heat, centres) = targets(&objects, classes, 4, 4);
        let output: Vec<f32> = (0..16 * channels).map(|i| ((i * 37 % 23) as f32 - 11.0) / 5.0).collect();
        let mut grad = vec![0f32; output.len()];
        loss(&output, &heat, &centres, classes, 2.0, &mut grad);
        for i in 0..output.len() {
            let h = 1e-3f32;
            let (mut plus, mut minus) = (output.clone(), output.clone());
            plus[i] += h;
            minus[i] -= h;
            let mut scratch = vec![0f32; output.len()];
            let numeric = (loss(&plus, &heat, &centres, classes, 2.0, &mut scratch)
                - loss(&minus, &heat, &centres, classes, 2.0, &mut scratch))
                / (2.0 * h as f64)
                / 2.0;
            let analytic = grad[i] as f64;
            assert!((numeric - analytic).abs() < 1e-3 * (1.0 + analytic.abs()), "output {i}: {numeric} vs {analytic}");
        }
    }

    #[test]
    fn decoding_finds_the_peaks_of_a_hand_made_heatmap() {
        let (classes, height, width) = (2, 6, 6);
        let channels = classes + 4;
        let mut output = vec![-9f32; height * width * channels];
        let mut set = |y: usize, x: usize, c: usize, v: f32| output[(y * width + x) * channels + c] = v;
        // Class 0: a peak at (1, 1) with a lower shoulder next to it, which is no peak.
        set(1, 1, 0, 2.0);
        set(1, 2, 0, 1.0);
        // Class 1: a peak at (4, 3) and a weaker one far away at (0, 5).
        set(4, 3, 1, 0.0);
        set(0, 5, 1, -1.0);
        // Box regressions at the peaks: 3×2 cells with centre offset (0.5, 0.25).
        for (y, x) in [(1, 1), (4, 3), (0, 5)] {
            for (i, v) in [3.0, 2.0, 0.5, 0.25].into_iter().enumerate() {
                set(y, x, classes + i, v);
            }
        }
        let found = decode(&output, classes, height, width, 24, 3);
        assert_eq!(found.len(), 3);
        assert_eq!((found[0].class, found[1].class, found[2].class), (0, 1, 1));
        assert!((found[0].score - sigmoid(2.0)).abs() < 1e-15 && found[1].score == 0.5);
        // (1, 1): centre ((1 + 0.5)·4, (1 + 0.25)·4) = (6, 5), 12×8 px.
        let d = &found[0];
        assert_eq!((d.x, d.y, d.w, d.h), (0.0, 1.0, 12.0, 8.0));
        // (4, 3): centre (14, 17), inside the 24 px image.
        let d = &found[1];
        assert_eq!((d.x, d.y, d.w, d.h), (8.0, 13.0, 12.0, 8.0));
        // (0, 5): centre (22, 1), clipped at the right and top edges.
        let d = &found[2];
        assert_eq!((d.x, d.y, d.w, d.h), (16.0, 0.0, 8.0, 5.0));
        // A flat −9 cell is a peak too unless it borders a higher one: 36 − 12 + 1 cells of
        // class 0 (the 3×4 block around its two raised cells), 36 − 9 − 4 + 2 of class 1.
        assert_eq!(decode(&output, classes, height, width, 24, 100).len(), 25 + 25);
    }
}
