//! The non-neural parts of facenet-pytorch's `detect_face`: area resampling, candidate
//! generation, box regression, square-ing, clipping and the two NMS flavours.
//!
//! Every function mirrors one in `facenet_pytorch/models/utils/detect_face.py` (named in its
//! doc) and keeps that code's float32 arithmetic and operation order, because the pipeline
//! makes discrete decisions (thresholds, `floor`, `trunc`, NMS overlaps) on these numbers:
//! an innocent-looking reordering moves a box by a pixel or flips a candidate.

/// A planar (channels-first) float image, pixel values 0..=255: what facenet-pytorch
/// feeds `imresample` (`imgs.permute(0, 3, 1, 2).float()`).
pub(crate) struct Planar {
    /// 3 × height × width values, channel-major.
    pub data: Vec<f32>,
    pub width: usize,
    pub height: usize,
}

impl Planar {
    /// Splits an RGB image into three planes.
    pub fn from_rgb(image: &image::RgbImage) -> Self {
        let (width, height) = (image.width() as usize, image.height() as usize);
        let plane = width * height;
        let mut data = vec![0f32; 3 * plane];
        for (i, px) in image.as_raw().chunks_exact(3).enumerate() {
            data[i] = f32::from(px[0]);
            data[plane + i] = f32::from(px[1]);
            data[2 * plane + i] = f32::from(px[2]);
        }
        Planar { data, width, height }
    }
}

/// One window of adaptive average pooling along an axis: `[start, end)` with
/// `start = floor(i·in/out)` and `end = ceil((i+1)·in/out)`, as ATen computes it.
fn windows(input: usize, output: usize) -> Vec<(usize, usize)> {
    (0..output).map(|i| ((i * input) / output, ((i + 1) * input).div_ceil(output))).collect()
}

/// `imresample` = `F.interpolate(mode="area")` = `adaptive_avg_pool2d`, applied to the region
/// `rows × cols` of `src`, then normalised with `(x − 127.5) · 0.0078125` as `detect_face`
/// does right after each resample. Writes `out_h` × `out_w` × 3 values into `dst`,
/// channels-last as the networks read them.
///
/// ATen sums the window in float32 and divides by the window height, then by its width
/// (two roundings, checked bit-exact against torch 2.15); the sums of integer pixels are
/// exact in f32, so the summation order does not matter.
pub(crate) fn area_resize_normalised(
    src: &Planar,
    rows: (usize, usize),
    cols: (usize, usize),
    out_h: usize,
    out_w: usize,
    dst: &mut [f32],
) {
    let (in_h, in_w) = (rows.1 - rows.0, cols.1 - cols.0);
    let wy = windows(in_h, out_h);
    let wx = windows(in_w, out_w);
    let plane = src.width * src.height;
    // Per output row, the window's rows are first summed column by column (a vectorised
    // add of whole rows), then each output column sums its window of those column sums.
    // All sums are of integer pixels and stay below 2^24, so they are exact in f32 and
    // this order gives the same bits as ATen's; it reads every input pixel once per output
    // row window instead of once per (output row, output column) window and a short,
    // unvectorised loop each time.
    let mut col_sums = vec![0f32; in_w];
    for c in 0..3 {
        let base = &src.data[c * plane..(c + 1) * plane];
        for (oy, &(y0, y1)) in wy.iter().enumerate() {
            col_sums.fill(0.0);
            for y in y0..y1 {
                let line = &base[(rows.0 + y) * src.width + cols.0..(rows.0 + y) * src.width + cols.1];
                for (acc, &v) in col_sums.iter_mut().zip(line) {
                    *acc += v;
                }
            }
            let kh = (y1 - y0) as f32;
            for (ox, &(x0, x1)) in wx.iter().enumerate() {
                let sum: f32 = col_sums[x0..x1].iter().sum();
                let avg = sum / kh / (x1 - x0) as f32;
                dst[(oy * out_w + ox) * 3 + c] = (avg - 127.5) * 0.0078125;
            }
        }
    }
}

/// A candidate box: corners, score and (until applied) the regression offsets.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Cand {
    pub x1: f32,
    pub y1: f32,
    pub x2: f32,
    pub y2: f32,
    pub score: f32,
    pub reg: [f32; 4],
}

/// `generateBoundingBox`: every P-Net cell with face probability ≥ `threshold` becomes a
/// 12×12 box in input-image coordinates. `prob` and `reg` are the P-Net output maps
/// (h × w, row-major). Cells are visited row-major, as `nonzero()` does.
pub(crate) fn generate(prob: &[f32], reg: &[[f32; 4]], h: usize, w: usize, scale: f64, threshold: f32) -> Vec<Cand> {
    // torch divides the float32 tensor by the Python float `scale` cast to float32.
    let scale = scale as f32;
    let mut out = Vec::new();
    for y in 0..h {
        for x in 0..w {
            let i = y * w + x;
            let score = prob[i];
            if score >= threshold {
                let (bx, by) = (x as f32, y as f32);
                out.push(Cand {
                    x1: ((2.0 * bx + 1.0) / scale).floor(),
                    y1: ((2.0 * by + 1.0) / scale).floor(),
                    x2: ((2.0 * bx + 12.0) / scale).floor(),
                    y2: ((2.0 * by + 12.0) / scale).floor(),
                    score,
                    reg: reg[i],
                });
            }
        }
    }
    out
}

/// torchvision `nms` (what `batched_nms` reduces to for one image): visit boxes by score,
/// descending (a stable sort, so ties keep their order), drop every later box whose IoU
/// with a kept one is above `threshold`. Areas without the +1 of the MATLAB code. Returns
/// the kept indices in visiting order.
pub(crate) fn nms_torchvision(boxes: &[Cand], threshold: f64) -> Vec<usize> {
    let mut order: Vec<usize> = (0..boxes.len()).collect();
    order.sort_by(|&a, &b| boxes[b].score.total_cmp(&boxes[a].score));
    let area: Vec<f32> = boxes.iter().map(|b| (b.x2 - b.x1) * (b.y2 - b.y1)).collect();
    let mut suppressed = vec![false; boxes.len()];
    let mut keep = Vec::new();
    for (oi, &i) in order.iter().enumerate() {
        if suppressed[i] {
            continue;
        }
        keep.push(i);
        let a = &boxes[i];
        for &j in &order[oi + 1..] {
            if suppressed[j] {
                continue;
            }
            let b = &boxes[j];
            let w = (a.x2.min(b.x2) - a.x1.max(b.x1)).max(0.0);
            let h = (a.y2.min(b.y2) - a.y1.max(b.y1)).max(0.0);
            let inter = w * h;
            let iou = inter / (area[i] + area[j] - inter);
            // The C++ kernel compares the float IoU with the double threshold.
            if f64::from(iou) > threshold {
                suppressed[j] = true;
            }
        }
    }
    keep
}

/// `nms_numpy(..., 'Min')`, used after the O-Net: overlap = intersection / smaller area,
/// areas with +1, a box survives while overlap ≤ `threshold`. numpy compares float32
/// arrays with a Python float in float32 (NEP 50), hence the f32 threshold. Boxes are
/// visited by descending score; `np.argsort` is not stable, so exact score ties may be
/// visited in another order than numpy's (they never occur in practice).
pub(crate) fn nms_min(boxes: &[Cand], threshold: f32) -> Vec<usize> {
    let mut order: Vec<usize> = (0..boxes.len()).collect();
    order.sort_by(|&a, &b| boxes[b].score.total_cmp(&boxes[a].score));
    let area: Vec<f32> = boxes.iter().map(|b| (b.x2 - b.x1 + 1.0) * (b.y2 - b.y1 + 1.0)).collect();
    let mut keep = Vec::new();
    while let Some((&i, rest)) = order.split_first() {
        keep.push(i);
        let a = &boxes[i];
        order = rest
            .iter()
            .copied()
            .filter(|&j| {
                let b = &boxes[j];
                let w = (a.x2.min(b.x2) - a.x1.max(b.x1) + 1.0).max(0.0);
                let h = (a.y2.min(b.y2) - a.y1.max(b.y1) + 1.0).max(0.0);
                let o = (w * h) / area[i].min(area[j]);
                o <= threshold
            })
            .collect();
    }
    keep
}

/// The stage-1 regression (inline in `detect_face`): offsets scaled by the box size
/// *without* +1, unlike [`bbreg`].
pub(crate) fn regress_stage1(b: &Cand) -> Cand {
    let (w, h) = (b.x2 - b.x1, b.y2 - b.y1);
    Cand {
        x1: b.x1 + b.reg[0] * w,
        y1: b.y1 + b.reg[1] * h,
        x2: b.x2 + b.reg[2] * w,
        y2: b.y2 + b.reg[3] * h,
        score: b.score,
        reg: [0.0; 4],
    }
}

/// `bbreg`: offsets scaled by the box size with +1.
pub(crate) fn bbreg(b: &Cand, reg: [f32; 4]) -> Cand {
    let (w, h) = (b.x2 - b.x1 + 1.0, b.y2 - b.y1 + 1.0);
    Cand { x1: b.x1 + reg[0] * w, y1: b.y1 + reg[1] * h, x2: b.x2 + reg[2] * w, y2: b.y2 + reg[3] * h, ..*b }
}

/// `rerec`: grow the box to a square around its centre, side = the longer side.
pub(crate) fn rerec(b: &Cand) -> Cand {
    let h = b.y2 - b.y1;
    let w = b.x2 - b.x1;
    let l = w.max(h);
    let x1 = b.x1 + w * 0.5 - l * 0.5;
    let y1 = b.y1 + h * 0.5 - l * 0.5;
    Cand { x1, y1, x2: x1 + l, y2: y1 + l, ..*b }
}

/// `pad`: truncate the corners toward zero (`trunc().int()`), clamp the top-left to ≥ 1 and
/// the bottom-right to ≤ the image size. The crop is then rows `y−1..ey`, columns `x−1..ex`
/// (1-based, inclusive, MATLAB heritage). Returns that half-open region, or `None` when it
/// is empty (facenet-pytorch skips such a crop and then fails on the mismatched batch; a
/// box entirely outside the image cannot be a face, so it is dropped here).
pub(crate) fn crop_region(b: &Cand, w: usize, h: usize) -> Option<((usize, usize), (usize, usize))> {
    // `as i64` truncates toward zero and saturates, like `trunc().int()` for sane values.
    let x = (b.x1.trunc() as i64).max(1);
    let y = (b.y1.trunc() as i64).max(1);
    let ex = (b.x2.trunc() as i64).min(w as i64);
    let ey = (b.y2.trunc() as i64).min(h as i64);
    if ey > y - 1 && ex > x - 1 {
        Some((((y - 1) as usize, ey as usize), ((x - 1) as usize, ex as usize)))
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cand(x1: f32, y1: f32, x2: f32, y2: f32, score: f32) -> Cand {
        Cand { x1, y1, x2, y2, score, reg: [0.0; 4] }
    }

    #[test]
    fn area_resize_is_block_mean() {
        let src = Planar { data: (0..3 * 16).map(|v| v as f32).collect(), width: 4, height: 4 };
        let mut dst = vec![0f32; 3 * 4];
        area_resize_normalised(&src, (0, 4), (0, 4), 2, 2, &mut dst);
        // top-left 2×2 block of plane 0: 0, 1, 4, 5 → 2.5
        assert_eq!(dst[0], (2.5 - 127.5) * 0.0078125);
        // upsampling repeats pixels
        let mut up = vec![0f32; 3 * 64];
        area_resize_normalised(&src, (1, 3), (1, 3), 8, 8, &mut up);
        assert_eq!(up[0], (5.0 - 127.5) * 0.0078125);
    }

    #[test]
    fn nms_keeps_best_of_overlapping() {
        let boxes =
            [cand(0.0, 0.0, 10.0, 10.0, 0.8), cand(1.0, 1.0, 11.0, 11.0, 0.9), cand(50.0, 50.0, 60.0, 60.0, 0.7)];
        assert_eq!(nms_torchvision(&boxes, 0.5), vec![1, 2]);
        assert_eq!(nms_min(&boxes, 0.7), vec![1, 2]);
    }

    #[test]
    fn crop_region_clamps_and_rejects_outside() {
        let b = cand(-5.7, 3.9, 20.2, 500.0, 1.0);
        assert_eq!(crop_region(&b, 100, 100), Some(((2, 100), (0, 20))));
        assert_eq!(crop_region(&cand(200.0, 0.0, 220.0, 10.0, 1.0), 100, 100), None);
    }
}
