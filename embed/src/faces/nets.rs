//! P-Net, R-Net and O-Net as in `facenet_pytorch/models/mtcnn.py`, on plain CPU loops.
//!
//! The three networks are tiny (3×3 convolutions with 10 to 128 channels) and run on many
//! small inputs: a dozen pyramid levels per image, hundreds of 24×24 crops. Through candle
//! every layer was a tensor op with its own allocation, layout conversion and thread
//! dispatch, and that overhead dominated the arithmetic. Here every activation is a
//! channels-last (HWC) `Vec<f32>`, and every layer — convolutions and dense layers alike
//! (a dense layer is a 1×1 convolution over a single "pixel") — is one kernel that
//! accumulates a block of output pixels × a block of output channels in registers, with the
//! bias and PReLU fused into the store. Only the weights come through candle (the
//! safetensors loader).

use candle_core::{Result, Tensor};
use candle_nn::VarBuilder;
use rayon::prelude::*;

/// A channels-last activation map: `data[(y·w + x)·c + ch]`.
pub(crate) struct Hwc {
    pub data: Vec<f32>,
    pub h: usize,
    pub w: usize,
    pub c: usize,
}

/// Output length of `nn.MaxPool2d(k, s, ceil_mode=True)` along an axis of `len`.
fn ceil_pool_len(len: usize, k: usize, s: usize) -> usize {
    let mut o = len.saturating_sub(k).div_ceil(s) + 1;
    // PyTorch: the last window must start inside the input.
    if (o - 1) * s >= len {
        o -= 1;
    }
    o
}

/// `nn.MaxPool2d(k, s, ceil_mode=True)`: the last window may hang over the right and bottom
/// edges and then covers only the pixels inside.
fn max_pool_ceil(x: &Hwc, k: usize, s: usize) -> Hwc {
    let (oh, ow, c) = (ceil_pool_len(x.h, k, s), ceil_pool_len(x.w, k, s), x.c);
    let mut data = vec![f32::NEG_INFINITY; oh * ow * c];
    for (oy, out_row) in data.chunks_exact_mut(ow * c).enumerate() {
        let (y0, y1) = (oy * s, (oy * s + k).min(x.h));
        for (ox, dst) in out_row.chunks_exact_mut(c).enumerate() {
            let (x0, x1) = (ox * s, (ox * s + k).min(x.w));
            for y in y0..y1 {
                for src in x.data[(y * x.w + x0) * c..(y * x.w + x1) * c].chunks_exact(c) {
                    for (d, &v) in dst.iter_mut().zip(src) {
                        *d = d.max(v);
                    }
                }
            }
        }
    }
    Hwc { data, h: oh, w: ow, c }
}

/// A k×k convolution (stride 1, no padding) followed by `prelu(x + bias)`; a layer without
/// activation has slopes 1. Output channels are processed in blocks of `cb` (8, 16 or 32)
/// so a block's accumulators stay in vector registers; `weights` holds, per block, the
/// `k·k·cin` rows of `cb` weights (zero-padded past `cout`) in the order of a channels-last
/// patch: row `(ky·k + kx)·cin + ci`. For one output row `ky`, the `k·cin` inputs under the
/// kernel are then contiguous in the input map.
struct Layer {
    k: usize,
    cin: usize,
    cout: usize,
    cb: usize,
    weights: Vec<f32>,
    /// Padded to a whole number of blocks.
    bias: Vec<f32>,
    slopes: Vec<f32>,
}

impl Layer {
    /// `weight(co, r)` gives the weight of output channel `co` for patch row `r`.
    fn pack(
        k: usize,
        cin: usize,
        cout: usize,
        weight: impl Fn(usize, usize) -> f32,
        bias: &[f32],
        slopes: &[f32],
    ) -> Self {
        // Blocks of 8 / 16 / 32 channels; 16 where 32 would leave more than half a block of
        // padding (48 channels = 3 × 16, 10 channels = one 16).
        let cb = if cout <= 8 {
            8
        } else if cout <= 16 || (1..=16).contains(&(cout % 32)) {
            16
        } else {
            32
        };
        let blocks = cout.div_ceil(cb);
        let rows = k * k * cin;
        let mut weights = vec![0f32; blocks * rows * cb];
        for (i, w) in weights.iter_mut().enumerate() {
            let (blk, r, c) = (i / (rows * cb), (i / cb) % rows, i % cb);
            let co = blk * cb + c;
            if co < cout {
                *w = weight(co, r);
            }
        }
        let pad = |v: &[f32]| {
            let mut p = v.to_vec();
            p.resize(blocks * cb, 0.0);
            p
        };
        Layer { k, cin, cout, cb, weights, bias: pad(bias), slopes: pad(slopes) }
    }

    /// `nn.Conv2d(cin, cout, k)` named `conv`, then `nn.PReLU(cout)` named `prelu` (if any).
    fn conv(vb: &VarBuilder, conv: &str, prelu: Option<&str>, cin: usize, cout: usize, k: usize) -> Result<Self> {
        // (cout, cin, k, k) in torch order.
        let w = vec1(&vb.pp(conv).get((cout, cin, k, k), "weight")?)?;
        let bias = vec1(&vb.pp(conv).get(cout, "bias")?)?;
        let slopes = slopes(vb, prelu, cout)?;
        let weight = |co: usize, r: usize| {
            let (ky, kx, ci) = (r / (k * cin), (r / cin) % k, r % cin);
            w[((co * cin + ci) * k + ky) * k + kx]
        };
        Ok(Layer::pack(k, cin, cout, weight, &bias, &slopes))
    }

    /// `nn.Linear` named `dense` over the flattened (h, w, c) map of the previous layer,
    /// then `nn.PReLU` named `prelu` (if any). The dense layers were trained on a (W, H, C)
    /// flattening (`x.permute(0, 3, 2, 1)` in facenet-pytorch; the weights come from the
    /// Caffe/MATLAB original), so the input columns are reordered to our (H, W, C) order.
    fn dense(
        vb: &VarBuilder,
        dense: &str,
        prelu: Option<&str>,
        (h, w, c): (usize, usize, usize),
        cout: usize,
    ) -> Result<Self> {
        let cin = h * w * c;
        let wt = vec1(&vb.pp(dense).get((cout, cin), "weight")?)?;
        let bias = vec1(&vb.pp(dense).get(cout, "bias")?)?;
        let slopes = slopes(vb, prelu, cout)?;
        let weight = |co: usize, r: usize| {
            let (y, x, ch) = (r / (w * c), (r / c) % w, r % c);
            wt[co * cin + (x * h + y) * c + ch]
        };
        Ok(Layer::pack(1, cin, cout, weight, &bias, &slopes))
    }

    /// Several heads on the same input (`nn.Conv2d(…, 1)` or `nn.Linear`, no activation)
    /// as one layer whose output channels are the heads' outputs in order.
    fn heads(layers: Vec<Layer>) -> Layer {
        let (k, cin) = (layers[0].k, layers[0].cin);
        let rows = k * k * cin;
        let mut owner = Vec::new();
        for (l, layer) in layers.iter().enumerate() {
            owner.extend((0..layer.cout).map(|co| (l, co)));
        }
        let weight = |co: usize, r: usize| {
            let (l, c) = owner[co];
            let layer = &layers[l];
            layer.weights[((c / layer.cb) * rows + r) * layer.cb + c % layer.cb]
        };
        let bias: Vec<f32> = owner.iter().map(|&(l, c)| layers[l].bias[c]).collect();
        Layer::pack(k, cin, owner.len(), weight, &bias, &vec![1.0; owner.len()])
    }

    /// Applies the layer to `x`; with `parallel`, output rows are spread over rayon (for
    /// the big P-Net maps; crops are parallel one level up instead).
    fn forward(&self, x: &Hwc, parallel: bool) -> Hwc {
        debug_assert_eq!(x.c, self.cin);
        let (oh, ow) = (x.h + 1 - self.k, x.w + 1 - self.k);
        let mut data = vec![0f32; oh * ow * self.cout];
        let row_len = ow * self.cout;
        if parallel {
            // Rows of at least ~100k multiply-adds per task: below that rayon's overhead shows.
            let per_row = ow * self.k * self.k * self.cin * self.cout;
            let min_len = (100_000 / per_row.max(1)).max(1);
            data.par_chunks_mut(row_len).enumerate().with_min_len(min_len).for_each(|(oy, row)| self.row(x, oy, row));
        } else {
            data.chunks_mut(row_len).enumerate().for_each(|(oy, row)| self.row(x, oy, row));
        }
        Hwc { data, h: oh, w: ow, c: self.cout }
    }

    /// Output row `oy` into `out` (`ow · cout` values). Dispatches to the kernel for this
    /// layer's block width, compiled for AVX2 when the CPU has it: candle's gemm did the
    /// same runtime selection, and without it the kernels run at half the vector width.
    fn row(&self, x: &Hwc, oy: usize, out: &mut [f32]) {
        #[cfg(target_arch = "x86_64")]
        if std::is_x86_feature_detected!("avx2") {
            // SAFETY: the CPU supports AVX2, checked just above.
            unsafe { row_avx2(self, x, oy, out) };
            return;
        }
        row_dispatch(self, x, oy, out);
    }
}

/// [`row_dispatch`] compiled with AVX2 enabled (the generic kernels are inlined into it).
#[cfg(target_arch = "x86_64")]
#[target_feature(enable = "avx2")]
fn row_avx2(layer: &Layer, x: &Hwc, oy: usize, out: &mut [f32]) {
    row_dispatch(layer, x, oy, out)
}

/// Picks the kernel instance: `CB` output channels × `PB` output pixels per register
/// block, 8 vector accumulators with AVX.
#[inline(always)]
fn row_dispatch(layer: &Layer, x: &Hwc, oy: usize, out: &mut [f32]) {
    match layer.cb {
        8 => conv_row::<8, 8>(layer, x, oy, out),
        16 => conv_row::<16, 4>(layer, x, oy, out),
        _ => conv_row::<32, 2>(layer, x, oy, out),
    }
}

/// One output row of `layer` over `x`: for each block of `CB` channels, pixel blocks of
/// `PB`, then the leftover pixels one at a time.
#[inline(always)]
fn conv_row<const CB: usize, const PB: usize>(layer: &Layer, x: &Hwc, oy: usize, out: &mut [f32]) {
    let (k, cin, cout) = (layer.k, layer.cin, layer.cout);
    let ow = x.w + 1 - k;
    let rows = k * k * cin;
    for (blk, w) in layer.weights.chunks_exact(rows * CB).enumerate() {
        let c0 = blk * CB;
        let bias: &[f32; CB] = layer.bias[c0..c0 + CB].try_into().expect("padded bias");
        let slopes = &layer.slopes[c0..c0 + CB];
        let n = (cout - c0).min(CB);
        let mut ox = 0;
        while ox < ow {
            if ox + PB <= ow {
                let acc = pixels::<CB, PB>(w, x, k, oy, ox, bias);
                store(&acc, slopes, n, &mut out[ox * cout + c0..], cout);
                ox += PB;
            } else {
                let acc = pixels::<CB, 1>(w, x, k, oy, ox, bias);
                store(&acc, slopes, n, &mut out[ox * cout + c0..], cout);
                ox += 1;
            }
        }
    }
}

/// The register block: outputs `(oy, ox..ox + PB)` × one block of `CB` channels, starting
/// from the bias. `w` is that channel block's packed weights.
#[inline(always)]
fn pixels<const CB: usize, const PB: usize>(
    w: &[f32],
    x: &Hwc,
    k: usize,
    oy: usize,
    ox: usize,
    bias: &[f32; CB],
) -> [[f32; CB]; PB] {
    let cin = x.c;
    let seg = k * cin;
    let mut acc = [*bias; PB];
    for ky in 0..k {
        // The k·cin inputs under kernel row ky, for each of the PB pixels.
        let base = ((oy + ky) * x.w + ox) * cin;
        let xs: [&[f32]; PB] = std::array::from_fn(|p| &x.data[base + p * cin..base + p * cin + seg]);
        let ws = &w[ky * seg * CB..(ky + 1) * seg * CB];
        for (j, wr) in ws.chunks_exact(CB).enumerate() {
            let wr: &[f32; CB] = wr.try_into().expect("CB weights");
            for p in 0..PB {
                let v = xs[p][j];
                for c in 0..CB {
                    acc[p][c] += v * wr[c];
                }
            }
        }
    }
    acc
}

/// Writes the first `n` channels of each pixel's accumulator through the PReLU into `out`
/// (pixel stride `cout`).
#[inline(always)]
fn store<const CB: usize, const PB: usize>(
    acc: &[[f32; CB]; PB],
    slopes: &[f32],
    n: usize,
    out: &mut [f32],
    cout: usize,
) {
    for (p, a) in acc.iter().enumerate() {
        for ((d, &v), &s) in out[p * cout..p * cout + n].iter_mut().zip(a).zip(slopes) {
            *d = if v > 0.0 { v } else { s * v };
        }
    }
}

fn vec1(t: &Tensor) -> Result<Vec<f32>> {
    t.flatten_all()?.to_vec1()
}

/// The PReLU slopes named `prelu`, or ones (identity) for a layer without activation.
fn slopes(vb: &VarBuilder, prelu: Option<&str>, cout: usize) -> Result<Vec<f32>> {
    match prelu {
        Some(name) => vec1(&vb.pp(name).get(cout, "weight")?),
        None => Ok(vec![1.0; cout]),
    }
}

/// Probability of the "face" class: softmax over the 2 logits, class 1 (as torch computes
/// it, with the max subtracted).
fn face_prob(l0: f32, l1: f32) -> f32 {
    let m = l0.max(l1);
    let (e0, e1) = ((l0 - m).exp(), (l1 - m).exp());
    e1 / (e0 + e1)
}

/// The proposal network, fully convolutional.
pub(crate) struct PNet {
    conv1: Layer,
    conv2: Layer,
    conv3: Layer,
    /// conv4_1 (2 face logits) and conv4_2 (4 regression offsets).
    heads: Layer,
}

impl PNet {
    pub fn new(vb: VarBuilder) -> Result<Self> {
        Ok(PNet {
            conv1: Layer::conv(&vb, "conv1", Some("prelu1"), 3, 10, 3)?,
            conv2: Layer::conv(&vb, "conv2", Some("prelu2"), 10, 16, 3)?,
            conv3: Layer::conv(&vb, "conv3", Some("prelu3"), 16, 32, 3)?,
            heads: Layer::heads(vec![
                Layer::conv(&vb, "conv4_1", None, 32, 2, 1)?,
                Layer::conv(&vb, "conv4_2", None, 32, 4, 1)?,
            ]),
        })
    }

    /// (H, W, 3) → face probability (h × w) and regression offsets per cell, and (h, w).
    pub fn forward(&self, x: &Hwc) -> (Vec<f32>, Vec<[f32; 4]>, usize, usize) {
        let x = max_pool_ceil(&self.conv1.forward(x, true), 2, 2);
        let x = self.conv3.forward(&self.conv2.forward(&x, true), true);
        let out = self.heads.forward(&x, true);
        let prob = out.data.chunks_exact(6).map(|o| face_prob(o[0], o[1])).collect();
        let reg = out.data.chunks_exact(6).map(|o| [o[2], o[3], o[4], o[5]]).collect();
        (prob, reg, out.h, out.w)
    }
}

/// The refinement network on 24×24 crops.
pub(crate) struct RNet {
    conv1: Layer,
    conv2: Layer,
    conv3: Layer,
    dense4: Layer,
    /// dense5_1 (2 face logits) and dense5_2 (4 regression offsets).
    heads: Layer,
}

impl RNet {
    pub fn new(vb: VarBuilder) -> Result<Self> {
        Ok(RNet {
            conv1: Layer::conv(&vb, "conv1", Some("prelu1"), 3, 28, 3)?,
            conv2: Layer::conv(&vb, "conv2", Some("prelu2"), 28, 48, 3)?,
            conv3: Layer::conv(&vb, "conv3", Some("prelu3"), 48, 64, 2)?,
            dense4: Layer::dense(&vb, "dense4", Some("prelu4"), (3, 3, 64), 128)?,
            heads: Layer::heads(vec![
                Layer::dense(&vb, "dense5_1", None, (1, 1, 128), 2)?,
                Layer::dense(&vb, "dense5_2", None, (1, 1, 128), 4)?,
            ]),
        })
    }

    /// One (24, 24, 3) crop → (face probability, regression offsets).
    pub fn forward(&self, x: Hwc) -> (f32, [f32; 4]) {
        let x = max_pool_ceil(&self.conv1.forward(&x, false), 3, 2);
        let x = max_pool_ceil(&self.conv2.forward(&x, false), 3, 2);
        let x = flat(self.conv3.forward(&x, false));
        let o = self.heads.forward(&self.dense4.forward(&x, false), false).data;
        (face_prob(o[0], o[1]), [o[2], o[3], o[4], o[5]])
    }
}

/// The output network on 48×48 crops, with landmarks.
pub(crate) struct ONet {
    conv1: Layer,
    conv2: Layer,
    conv3: Layer,
    conv4: Layer,
    dense5: Layer,
    /// dense6_1 (2 face logits), dense6_2 (4 regression offsets), dense6_3 (10 landmarks).
    heads: Layer,
}

impl ONet {
    pub fn new(vb: VarBuilder) -> Result<Self> {
        Ok(ONet {
            conv1: Layer::conv(&vb, "conv1", Some("prelu1"), 3, 32, 3)?,
            conv2: Layer::conv(&vb, "conv2", Some("prelu2"), 32, 64, 3)?,
            conv3: Layer::conv(&vb, "conv3", Some("prelu3"), 64, 64, 3)?,
            conv4: Layer::conv(&vb, "conv4", Some("prelu4"), 64, 128, 2)?,
            dense5: Layer::dense(&vb, "dense5", Some("prelu5"), (3, 3, 128), 256)?,
            heads: Layer::heads(vec![
                Layer::dense(&vb, "dense6_1", None, (1, 1, 256), 2)?,
                Layer::dense(&vb, "dense6_2", None, (1, 1, 256), 4)?,
                Layer::dense(&vb, "dense6_3", None, (1, 1, 256), 10)?,
            ]),
        })
    }

    /// One (48, 48, 3) crop → (face probability, regression offsets, landmarks: 5 x then 5 y).
    pub fn forward(&self, x: Hwc) -> (f32, [f32; 4], [f32; 10]) {
        let x = max_pool_ceil(&self.conv1.forward(&x, false), 3, 2);
        let x = max_pool_ceil(&self.conv2.forward(&x, false), 3, 2);
        let x = max_pool_ceil(&self.conv3.forward(&x, false), 2, 2);
        let x = flat(self.conv4.forward(&x, false));
        let o = self.heads.forward(&self.dense5.forward(&x, false), false).data;
        (face_prob(o[0], o[1]), [o[2], o[3], o[4], o[5]], std::array::from_fn(|i| o[6 + i]))
    }
}

/// The map as one pixel with all its values as channels, the input of a dense layer.
fn flat(x: Hwc) -> Hwc {
    Hwc { c: x.data.len(), data: x.data, h: 1, w: 1 }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ceil_pool_covers_the_tail() {
        // 5 wide, window 2 stride 2: windows [0,2), [2,4), [4,5).
        let x = Hwc { data: (0..5).map(|v| v as f32).collect(), h: 1, w: 5, c: 1 };
        let p = max_pool_ceil(&x, 2, 2);
        assert_eq!((p.h, p.w), (1, 3));
        assert_eq!(p.data, vec![1.0, 3.0, 4.0]);
    }

    #[test]
    fn conv_matches_direct_sum() {
        // 2 input channels, 20 output channels (two blocks of 16), 3×3 over 4×11.
        let (cin, cout, k, h, w) = (2, 20, 3, 4, 11);
        let wt = |co: usize, ci: usize, ky: usize, kx: usize| ((co * 7 + ci * 5 + ky * 3 + kx) % 11) as f32 - 5.0;
        let bias: Vec<f32> = (0..cout).map(|c| c as f32 * 0.5).collect();
        let slopes = vec![0.25; cout];
        let layer = Layer::pack(k, cin, cout, |co, r| wt(co, r % cin, r / (k * cin), (r / cin) % k), &bias, &slopes);
        let x = Hwc { data: (0..h * w * cin).map(|v| ((v * 13) % 17) as f32 - 8.0).collect(), h, w, c: cin };
        let out = layer.forward(&x, false);
        for oy in 0..h - 2 {
            for ox in 0..w - 2 {
                for (co, &b) in bias.iter().enumerate() {
                    let mut s = b;
                    for ky in 0..k {
                        for kx in 0..k {
                            for ci in 0..cin {
                                s += x.data[((oy + ky) * w + ox + kx) * cin + ci] * wt(co, ci, ky, kx);
                            }
                        }
                    }
                    let want = if s > 0.0 { s } else { 0.25 * s };
                    assert_eq!(out.data[(oy * (w - 2) + ox) * cout + co], want, "({oy}, {ox}, {co})");
                }
            }
        }
    }
}
