//! A small CenterNet-style object detector for single-channel square images, trained on
//! the CPU with every byte reproducible, and the synthetic canvases the demo trains it on
//! ([`canvas`]).
//!
//! **Model.** A fully convolutional network with output stride 4 ([`STRIDE`]):
//!
//! | layer | kernel | stride | dilation | output (96×96 input) |
//! |---|---|---|---|---|
//! | conv + ReLU | 3×3 | 2 | 1 | 48×48×`widths[0]` |
//! | conv + ReLU | 3×3 | 1 | 1 | 48×48×`widths[1]` |
//! | conv + ReLU | 3×3 | 2 | 1 | 24×24×`widths[2]` |
//! | conv + ReLU | 3×3 | 1 | 1 | 24×24×`widths[2]` |
//! | conv + ReLU | 3×3 | 1 | 2 | 24×24×`widths[2]` |
//! | conv + ReLU | 3×3 | 1 | 4 | 24×24×`widths[2]` |
//! | head | 1×1 | 1 | 1 | 24×24×(classes + 4) |
//!
//! The dilated layers widen the receptive field to 67 pixels without more downsampling, so
//! a 48-pixel garment is seen whole from its centre cell. The head has CenterNet's three
//! outputs per cell: a heatmap logit per class (sigmoid focal loss against Gaussian
//! targets around each object's centre, α = 2, β = 4, the heatmap bias started at
//! −2.19 so that every cell first predicts 0.1), the box's width and height in cells
//! (L1, weight 0.1) and the centre's sub-cell offset (L1), the last two only at object
//! centres; the losses are divided by the batch's object count. [`Detector::detect`]
//! decodes like CenterNet: peaks of each class's heatmap (a cell at least as high as its
//! eight neighbours: the 3×3 max-pool), the top k by score, a box of the regressed size
//! around the offset centre in input pixels, score = the heatmap's sigmoid.
//!
//! **Training.** AdamW (β₁ 0.9, β₂ 0.999, ε 1e-8, decoupled weight decay on the
//! convolution weights), a linear warm-up over the first steps and a linear decay over the
//! last 40%, He-uniform initial weights.
//!
//! **Same inputs, same bytes.** As for the classifier ([`crate::classifier`]): initial
//! weights and batch order come from the seed (SplitMix64), every convolution is im2col
//! followed by the classifier's matrix products ([`crate::classifier::kernel`]), whose sums
//! run in an order written in the source whatever SIMD path the CPU takes, the losses use
//! this crate's own `exp` and `ln_1p` (no C library function whose implementation glibc
//! picks by CPU), and threads only split independent outputs (whole images, whole output
//! rows). So a detector trained on an AVX-512 Xeon and one trained on an AVX2 laptop, with
//! any number of threads, are the same bytes; the tests force each kernel path and compare.
//! This is also why training does not use candle: its CPU matrix product (the `gemm`
//! crate) picks a microkernel per CPU, and each sums in a different order.
//!
//! **Speed.** On 96×96 canvases with widths `[16, 32, 48]` a training step costs about
//! 165 million multiply-adds per canvas (forward, weight and input gradients), almost all
//! in the products, which keep 4×48 blocks of outputs in registers
//! ([`crate::classifier::kernel::matmul_blocked_acc`], `matmul_tn_acc`): about 10 ms per
//! canvas on 2 cores of an AVX-512 EPYC, so the demo's 3 epochs over 6,000 canvases take
//! about 3 minutes.

pub mod canvas;
mod conv;
mod head;

use rayon::prelude::*;

use crate::classifier::SplitMix64;
pub use crate::classifier::kernel::KernelPath;
use conv::{Conv, Shape};

/// The output stride: one output cell per 4×4 input pixels.
pub const STRIDE: usize = 4;

/// The heatmap logits' initial bias: sigmoid(−2.19) ≈ 0.1, CenterNet's prior.
const HEATMAP_BIAS: f32 = -2.19;

/// A ground-truth box (COCO's `x, y, w, h` in pixels) and its class.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct GroundTruth {
    /// The class index, below the detector's number of classes.
    pub class: u32,
    /// Left edge.
    pub x: f64,
    /// Top edge.
    pub y: f64,
    /// Width.
    pub w: f64,
    /// Height.
    pub h: f64,
}

/// A detected box (COCO's `x, y, w, h` in input pixels), its class and its score in [0, 1].
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Detection {
    /// The class index.
    pub class: u32,
    /// Left edge.
    pub x: f64,
    /// Top edge.
    pub y: f64,
    /// Width.
    pub w: f64,
    /// Height.
    pub h: f64,
    /// The heatmap's sigmoid at the peak.
    pub score: f64,
}

/// What to train.
#[derive(Debug, Clone, PartialEq)]
pub struct DetectorSettings {
    /// Channels of the 48×48 layers (two numbers) and of the 24×24 layers.
    pub widths: [usize; 3],
    /// Passes over the training images.
    pub epochs: usize,
    /// Images per optimiser step.
    pub batch: usize,
    /// AdamW's peak learning rate.
    pub learning_rate: f64,
    /// AdamW's decoupled weight decay (on convolution weights, not biases).
    pub weight_decay: f64,
    /// Seeds the initial weights and the batch order.
    pub seed: u64,
    /// Which compiled copy of the matrix products runs (all give the same bytes).
    pub kernel: KernelPath,
}

/// A training image: `side × side` grayscale pixels and its boxes.
#[derive(Debug, Clone, Copy)]
pub struct Example<'a> {
    /// Row-major pixels, 0–255.
    pub pixels: &'a [u8],
    /// The boxes.
    pub objects: &'a [GroundTruth],
}

/// What [`train`] reports after each optimiser step.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Progress {
    /// The epoch, from 1.
    pub epoch: usize,
    /// Steps done, over all epochs.
    pub step: usize,
    /// Steps in all.
    pub steps: usize,
    /// The mean loss per object over the epoch's steps so far.
    pub loss: f64,
}

/// A trained detector.
#[derive(Debug, Clone, PartialEq)]
pub struct Detector {
    layers: Vec<Conv>,
    classes: usize,
    side: usize,
    kernel: KernelPath,
}

/// One step's forward pass through every layer.
struct Pass {
    shapes: Vec<Shape>,
    forwards: Vec<conv::Forward>,
}

impl Detector {
    fn new(side: usize, classes: usize, settings: &DetectorSettings) -> Self {
        assert!(side > 0 && side.is_multiple_of(STRIDE), "the side is a multiple of {STRIDE}");
        let mut rng = SplitMix64::new(settings.seed, 0);
        let [a, b, c] = settings.widths;
        let layers = vec![
            Conv::new(1, a, (3, 2, 1), 0.0, &mut rng),
            Conv::new(a, b, (3, 1, 1), 0.0, &mut rng),
            Conv::new(b, c, (3, 2, 1), 0.0, &mut rng),
            Conv::new(c, c, (3, 1, 1), 0.0, &mut rng),
            Conv::new(c, c, (3, 1, 2), 0.0, &mut rng),
            Conv::new(c, c, (3, 1, 4), 0.0, &mut rng),
            {
                let mut head = Conv::new(c, classes + 4, (1, 1, 1), 0.0, &mut rng);
                head.bias[..classes].iter_mut().for_each(|b| *b = HEATMAP_BIAS);
                head
            },
        ];
        Detector { layers, classes, side, kernel: settings.kernel }
    }

    /// The number of classes.
    pub fn classes(&self) -> usize {
        self.classes
    }

    /// The input side the detector was trained on.
    pub fn side(&self) -> usize {
        self.side
    }

    /// The number of trained parameters.
    pub fn parameters(&self) -> usize {
        self.layers.iter().map(|l| l.wt.len() + l.bias.len()).sum()
    }

    /// Every layer's output for a batch of images (`batch × side × side` bytes); ReLU is
    /// applied in place to every output but the head's.
    fn forward(&self, pixels: &[u8], batch: usize) -> Pass {
        let image: Vec<f32> = pixels.iter().map(|&p| p as f32 / 255.0).collect();
        let mut shape = Shape { batch, height: self.side, width: self.side, channels: 1 };
        let (mut shapes, mut forwards) = (Vec::new(), Vec::<conv::Forward>::new());
        for (i, layer) in self.layers.iter().enumerate() {
            let input = forwards.last().map_or(image.as_slice(), |f| f.out.as_slice());
            let mut f = layer.forward(self.kernel, input, shape);
            if i + 1 < self.layers.len() {
                f.out.iter_mut().for_each(|x| *x = x.max(0.0));
            }
            shapes.push(shape);
            shape = f.out_shape;
            forwards.push(f);
        }
        Pass { shapes, forwards }
    }

    /// The detections of each image (`side × side` bytes each), at most `top_k` each, best
    /// first.
    pub fn detect(&self, images: &[&[u8]], top_k: usize) -> Vec<Vec<Detection>> {
        let mut found = Vec::with_capacity(images.len());
        for chunk in images.chunks(32) {
            let pixels: Vec<u8> = chunk.iter().flat_map(|p| p.iter().copied()).collect();
            assert_eq!(pixels.len(), chunk.len() * self.side * self.side, "images are side × side");
            let pass = self.forward(&pixels, chunk.len());
            let last = pass.forwards.last().expect("a head");
            let shape = last.out_shape;
            found.par_extend(
                last.out
                    .par_chunks(shape.image_len())
                    .map(|out| head::decode(out, self.classes, shape.height, shape.width, self.side, top_k)),
            );
        }
        found
    }

    /// The summed loss of a batch and the gradients of its mean per object.
    fn gradients(&self, pixels: &[u8], objects: &[&[GroundTruth]]) -> (Vec<LayerGradients>, f64, usize) {
        let batch = objects.len();
        let pass = self.forward(pixels, batch);
        let last = pass.forwards.last().expect("a head");
        let shape = last.out_shape;
        let count: usize = objects.iter().map(|o| o.len()).sum();
        let normaliser = count.max(1) as f64;
        let mut delta = vec![0f32; last.out.len()];
        let losses: Vec<f64> = last
            .out
            .par_chunks(shape.image_len())
            .zip(delta.par_chunks_mut(shape.image_len()))
            .zip(objects.par_iter())
            .map(|((out, grad), objects)| {
                let (heat, centres) = head::targets(objects, self.classes, shape.height, shape.width);
                head::loss(out, &heat, &centres, self.classes, normaliser, grad)
            })
            .collect();
        let loss = losses.iter().sum();
        let mut grads = Vec::with_capacity(self.layers.len());
        for (i, layer) in self.layers.iter().enumerate().rev() {
            let f = &pass.forwards[i];
            let (wt, bias, input) = layer.backward(self.kernel, &f.cols, &delta, pass.shapes[i], i > 0);
            grads.push((wt, bias));
            if let Some(mut input) = input {
                // Through the previous layer's ReLU.
                input.par_chunks_mut(4096).zip(pass.forwards[i - 1].out.par_chunks(4096)).for_each(|(d, a)| {
                    d.iter_mut().zip(a).for_each(|(d, &a)| {
                        if a <= 0.0 {
                            *d = 0.0;
                        }
                    })
                });
                delta = input;
            }
        }
        grads.reverse();
        (grads, loss, count)
    }
}

/// One layer's gradients: (weights, bias).
type LayerGradients = (Vec<f32>, Vec<f32>);

/// Adam's moment estimates of one parameter vector.
struct Moments {
    m: Vec<f32>,
    v: Vec<f32>,
}

impl Moments {
    fn new(len: usize) -> Self {
        Moments { m: vec![0.0; len], v: vec![0.0; len] }
    }
}

/// One AdamW step (PyTorch's formula) on `params`; `corrections` are 1 − β₁ᵗ and 1 − β₂ᵗ.
fn adam_step(params: &mut [f32], grads: &[f32], moments: &mut Moments, lr: f64, decay: f64, corrections: (f64, f64)) {
    const BETA1: f32 = 0.9;
    const BETA2: f32 = 0.999;
    const EPS: f32 = 1e-8;
    let (c1, c2) = (corrections.0 as f32, corrections.1 as f32);
    let (lr, shrink) = (lr as f32, (1.0 - lr * decay) as f32);
    params
        .par_chunks_mut(4096)
        .zip(grads.par_chunks(4096))
        .zip(moments.m.par_chunks_mut(4096))
        .zip(moments.v.par_chunks_mut(4096))
        .for_each(|(((p, g), m), v)| {
            for i in 0..p.len() {
                p[i] *= shrink;
                m[i] = BETA1 * m[i] + (1.0 - BETA1) * g[i];
                v[i] = BETA2 * v[i] + (1.0 - BETA2) * g[i] * g[i];
                p[i] -= lr * (m[i] / c1) / ((v[i] / c2).sqrt() + EPS);
            }
        });
}

/// The learning rate at `step` (from 1) of `steps`: linear warm-up over the first 5% (at
/// most 100 steps), constant, then a linear decay to 5% over the last 40%.
fn learning_rate(peak: f64, step: usize, steps: usize) -> f64 {
    let warmup = (steps / 20).clamp(1, 100);
    let decay_from = steps - steps * 2 / 5;
    let warm = (step as f64 / warmup as f64).min(1.0);
    let decay =
        if step > decay_from { 1.0 - 0.95 * (step - decay_from) as f64 / (steps - decay_from) as f64 } else { 1.0 };
    peak * warm * decay
}

/// Trains a detector with `classes` classes on `examples` (all `side × side`, `side` a
/// multiple of [`STRIDE`]); `on_step` is called after every optimiser step.
pub fn train(
    examples: &[Example<'_>],
    side: usize,
    classes: usize,
    settings: &DetectorSettings,
    mut on_step: impl FnMut(Progress),
) -> Detector {
    let mut detector = Detector::new(side, classes, settings);
    let mut moments: Vec<(Moments, Moments)> =
        detector.layers.iter().map(|l| (Moments::new(l.wt.len()), Moments::new(l.bias.len()))).collect();
    let n = examples.len();
    let batch = settings.batch.max(1);
    let steps = settings.epochs * n.div_ceil(batch);
    let mut rng = SplitMix64::new(settings.seed, 1);
    let mut order: Vec<usize> = (0..n).collect();
    let (mut step, mut beta1_power, mut beta2_power) = (0, 1.0f64, 1.0f64);
    for epoch in 1..=settings.epochs {
        // Fisher–Yates with the seeded generator: the batch order is part of the seed.
        for i in (1..n).rev() {
            order.swap(i, rng.below(i + 1));
        }
        let (mut loss_sum, mut objects_seen) = (0.0, 0usize);
        for chunk in order.chunks(batch) {
            step += 1;
            let mut pixels = Vec::with_capacity(chunk.len() * side * side);
            for &i in chunk {
                assert_eq!(examples[i].pixels.len(), side * side, "example {i} is {side} × {side}");
                pixels.extend_from_slice(examples[i].pixels);
            }
            let objects: Vec<&[GroundTruth]> = chunk.iter().map(|&i| examples[i].objects).collect();
            let (grads, loss, count) = detector.gradients(&pixels, &objects);
            let lr = learning_rate(settings.learning_rate, step, steps);
            beta1_power *= 0.9;
            beta2_power *= 0.999;
            let corrections = (1.0 - beta1_power, 1.0 - beta2_power);
            for ((layer, (wt_grad, bias_grad)), (wt_m, bias_m)) in
                detector.layers.iter_mut().zip(&grads).zip(&mut moments)
            {
                adam_step(&mut layer.wt, wt_grad, wt_m, lr, settings.weight_decay, corrections);
                adam_step(&mut layer.bias, bias_grad, bias_m, lr, 0.0, corrections);
            }
            loss_sum += loss;
            objects_seen += count;
            on_step(Progress { epoch, step, steps, loss: loss_sum / objects_seen.max(1) as f64 });
        }
    }
    detector
}

#[cfg(test)]
mod tests {
    use super::canvas::{Canvas, CanvasSpec, Garment, generate};
    use super::*;

    /// Four 28×28 shapes a small network tells apart: a square, a bar, a ring, a cross.
    fn shapes() -> Vec<Vec<u8>> {
        (0..4)
            .map(|g| {
                (0..28 * 28i32)
                    .map(|i| {
                        let (x, y) = (i % 28 - 14, i / 28 - 14);
                        let inside = match g {
                            0 => x.abs() < 12 && y.abs() < 12,
                            1 => x.abs() < 4 && y.abs() < 13,
                            2 => (64..144).contains(&(x * x + y * y)),
                            _ => (x.abs() < 3 || y.abs() < 3) && x.abs() < 13 && y.abs() < 13,
                        };
                        if inside { 220 } else { 0 }
                    })
                    .collect()
            })
            .collect()
    }

    fn canvases(count: usize, seed: u64) -> Vec<Canvas> {
        let pixels = shapes();
        let pool: Vec<Garment<'_>> =
            pixels.iter().enumerate().map(|(i, p)| Garment { pixels: p, side: 28, class: i as u32 }).collect();
        let spec = CanvasSpec { side: 32, objects: (1, 2), sizes: (10, 20), max_cover: 0.2 };
        generate(&pool, count, &spec, seed)
    }

    fn examples(canvases: &[Canvas]) -> Vec<Example<'_>> {
        canvases.iter().map(|c| Example { pixels: &c.pixels, objects: &c.objects }).collect()
    }

    fn settings(kernel: KernelPath) -> DetectorSettings {
        DetectorSettings {
            widths: [4, 8, 8],
            epochs: 2,
            batch: 4,
            learning_rate: 3e-3,
            weight_decay: 1e-4,
            seed: 11,
            kernel,
        }
    }

    fn bytes(found: &[Vec<Detection>]) -> Vec<u8> {
        found
            .iter()
            .flatten()
            .flat_map(|d| {
                [d.class as f64, d.x, d.y, d.w, d.h, d.score].into_iter().flat_map(f64::to_le_bytes).collect::<Vec<_>>()
            })
            .collect()
    }

    #[test]
    fn every_kernel_path_trains_the_same_detector_to_the_byte() {
        let (train_set, test_set) = (canvases(24, 1), canvases(8, 2));
        let images: Vec<&[u8]> = test_set.iter().map(|c| c.pixels.as_slice()).collect();
        let mut results = Vec::new();
        for path in KernelPath::available() {
            let detector = train(&examples(&train_set), 32, 4, &settings(path), |_| {});
            results.push((path, detector.clone(), bytes(&detector.detect(&images, 10))));
        }
        for (path, detector, found) in &results[1..] {
            assert!(found == &results[0].2, "{path:?} detects different bytes than {:?}", results[0].0);
            assert!(detector.layers == results[0].1.layers, "{path:?} trains different weights");
        }
    }

    #[test]
    fn the_thread_count_does_not_change_a_byte() {
        let train_set = canvases(16, 3);
        let images: Vec<&[u8]> = train_set.iter().map(|c| c.pixels.as_slice()).collect();
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
            pool.install(|| {
                let detector = train(&examples(&train_set), 32, 4, &settings(KernelPath::detect()), |_| {});
                bytes(&detector.detect(&images, 10))
            })
        };
        assert!(run(1) == run(3));
    }

    #[test]
    fn training_lowers_the_loss_and_is_seeded() {
        let train_set = canvases(64, 4);
        let mut losses = Vec::new();
        let s = DetectorSettings { epochs: 6, ..settings(KernelPath::detect()) };
        let detector = train(&examples(&train_set), 32, 4, &s, |p| {
            if p.step % 16 == 0 {
                losses.push(p.loss)
            }
        });
        assert!(losses.last() < losses.first(), "the loss falls: {losses:?}");
        let again = train(&examples(&train_set), 32, 4, &s, |_| {});
        assert_eq!(again, detector);
        let other = train(&examples(&train_set), 32, 4, &DetectorSettings { seed: 12, ..s }, |_| {});
        assert_ne!(other, detector);
        let found = detector.detect(&[train_set[0].pixels.as_slice()], 5);
        assert!(found[0].iter().all(|d| (0.0..=1.0).contains(&d.score) && d.x + d.w <= 32.0 && d.y + d.h <= 32.0));
        assert!(found[0].windows(2).all(|w| w[0].score >= w[1].score));
    }

    /// The whole network's gradient (conv stack, ReLUs, head loss) against central
    /// differences of the loss, for a few weights of every layer.
    #[test]
    fn network_gradients_match_finite_differences() {
        let set = canvases(2, 5);
        let detector = Detector::new(32, 4, &settings(KernelPath::Portable));
        let mut pixels = set[0].pixels.clone();
        pixels.extend_from_slice(&set[1].pixels);
        let objects = [set[0].objects.as_slice(), set[1].objects.as_slice()];
        let (grads, _, count) = detector.gradients(&pixels, &objects);
        let mean_loss = |d: &Detector| d.gradients(&pixels, &objects).1 / count as f64;
        for (layer, (wt_grad, _)) in grads.iter().enumerate() {
            // The weight with the largest gradient: well above f32 noise.
            let index =
                (0..wt_grad.len()).max_by(|&a, &b| wt_grad[a].abs().total_cmp(&wt_grad[b].abs())).expect("weights");
            // A step may move a ReLU or an L1 term across its kink, which a smaller step
            // avoids and f32 rounding punishes: the closest of a few steps must agree.
            let analytic = wt_grad[index] as f64;
            let numeric = [1e-2f32, 3e-3, 1e-3, 3e-4, 1e-4]
                .into_iter()
                .map(|h| {
                    let (mut plus, mut minus) = (detector.clone(), detector.clone());
                    plus.layers[layer].wt[index] += h;
                    minus.layers[layer].wt[index] -= h;
                    (mean_loss(&plus) - mean_loss(&minus)) / (2.0 * h as f64)
                })
                .min_by(|a, b| (a - analytic).abs().total_cmp(&(b - analytic).abs()))
                .expect("steps");
            assert!(
                (numeric - analytic).abs() < 0.01 * analytic.abs() + 1e-3,
                "layer {layer} weight {index}: {numeric} vs {analytic}"
            );
        }
    }
}
