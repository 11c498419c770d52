//! A small image classifier (a multilayer perceptron, or softmax regression without hidden
//! layers) trained with AdamW on flat pixel rows, whose every byte is reproducible.
//!
//! The demo trains two of these on Fashion-MNIST and uploads their predictions as runs.
//! "Same inputs, same bytes" is a promise of the product, so nothing here depends on the
//! machine: initial weights and batch order come from one seed, the matrix products sum in
//! an order fixed in the source whatever SIMD path the CPU takes ([`kernel`]), the softmax
//! uses its own exp instead of the C library's (whose implementation glibc chooses by CPU),
//! and threads only ever split independent outputs. A run trained on an AVX-512 Xeon and
//! one trained on an AVX2 laptop, with any thread count, have identical predictions; the
//! tests force each kernel path and compare.

pub mod kernel;

use rayon::prelude::*;

pub use kernel::KernelPath;

/// What to train.
#[derive(Debug, Clone, PartialEq)]
pub struct TrainSettings {
    /// Hidden layer widths; empty means softmax regression (a linear model).
    pub hidden: Vec<usize>,
    /// Passes over the training rows.
    pub epochs: usize,
    /// Rows per optimiser step.
    pub batch: usize,
    /// AdamW's learning rate (β₁ 0.9, β₂ 0.999, ε 1e-8, no weight decay).
    pub learning_rate: f64,
    /// Seeds the initial weights and the batch order.
    pub seed: u64,
    /// Which compiled copy of the matrix product runs (all give the same bytes).
    pub kernel: KernelPath,
}

/// Rows of `features` floats with a class index each.
#[derive(Debug, Clone, Copy)]
pub struct Examples<'a> {
    /// Row-major, `labels.len() × features`.
    pub rows: &'a [f32],
    /// The class of each row, below the number of classes.
    pub labels: &'a [u32],
    /// Floats per row.
    pub features: usize,
}

/// One dense layer, `out = in · wt + bias`.
#[derive(Debug, Clone, PartialEq)]
struct Layer {
    inputs: usize,
    outputs: usize,
    /// inputs × outputs, row-major (the transpose of PyTorch's `weight`).
    wt: Vec<f32>,
    bias: Vec<f32>,
}

/// A trained classifier.
#[derive(Debug, Clone, PartialEq)]
pub struct Mlp {
    layers: Vec<Layer>,
    kernel: KernelPath,
}

/// SplitMix64: a tiny seeded generator, so weights and batch order are a function of the seed.
pub(crate) struct SplitMix64(u64);

impl SplitMix64 {
    pub(crate) fn new(seed: u64, stream: u64) -> Self {
        SplitMix64(seed ^ stream.wrapping_mul(0x9E37_79B9_7F4A_7C15))
    }

    pub(crate) fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in 0..n (n ≥ 1), by Lemire's multiply-shift (bias below 2⁻³²).
    pub(crate) fn below(&mut self, n: usize) -> usize {
        (((self.next() >> 32) * n as u64) >> 32) as usize
    }
}

impl Mlp {
    /// PyTorch's default Linear initialisation, U(−1/√fan_in, 1/√fan_in), from a seed.
    fn new(widths: &[usize], seed: u64, kernel: KernelPath) -> Self {
        let mut rng = SplitMix64::new(seed, 0);
        let mut uniform = |n: usize, bound: f32| -> Vec<f32> {
            (0..n).map(|_| ((rng.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * bound).collect()
        };
        let layers = widths
            .windows(2)
            .map(|w| {
                let bound = 1.0 / (w[0] as f32).sqrt();
                Layer { inputs: w[0], outputs: w[1], wt: uniform(w[0] * w[1], bound), bias: uniform(w[1], bound) }
            })
            .collect();
        Mlp { layers, kernel }
    }

    /// The number of classes the model predicts.
    pub fn classes(&self) -> usize {
        self.layers.last().map_or(0, |l| l.outputs)
    }

    /// The activations of every layer for `rows` (row-major, `batch × inputs`): the input
    /// itself, each hidden layer after ReLU, and the logits.
    fn forward(&self, rows: &[f32], batch: usize) -> Vec<Vec<f32>> {
        let mut activations = vec![rows.to_vec()];
        for (i, layer) in self.layers.iter().enumerate() {
            let mut out: Vec<f32> = layer.bias.iter().copied().cycle().take(batch * layer.outputs).collect();
            let input = activations.last().expect("the input is first");
            kernel::matmul_acc(self.kernel, &mut out, input, &layer.wt, batch, layer.inputs, layer.outputs);
            if i + 1 < self.layers.len() {
                out.iter_mut().for_each(|x| *x = x.max(0.0));
            }
            activations.push(out);
        }
        activations
    }

    /// Softmax probabilities of every row, row-major (`rows × classes`), in f64.
    pub fn predict_proba(&self, rows: &[f32], features: usize) -> Vec<f64> {
        let n = rows.len().checked_div(features).unwrap_or(0);
        let classes = self.classes();
        let mut out = Vec::with_capacity(n * classes);
        for start in (0..n).step_by(1024) {
            let batch = (n - start).min(1024);
            let logits =
                self.forward(&rows[start * features..(start + batch) * features], batch).pop().expect("logits");
            for row in logits.chunks(classes) {
                out.extend(softmax(row));
            }
        }
        out
    }
}

/// Softmax of one row of logits in f64, with [`exp`] so that it is the same on every CPU.
fn softmax(logits: &[f32]) -> Vec<f64> {
    let max = logits.iter().fold(f64::NEG_INFINITY, |m, &x| m.max(x as f64));
    let exps: Vec<f64> = logits.iter().map(|&x| exp(x as f64 - max)).collect();
    let sum: f64 = exps.iter().sum();
    exps.into_iter().map(|e| e / sum).collect()
}

/// e^x for x ≤ 0 in plain arithmetic: x = k·ln2 + r with |r| ≤ ln2/2, e^r by its Taylor
/// series to r¹⁴ (relative error below 2⁻⁵²), times 2ᵏ. Below −700 it returns 0 (e^−700 is
/// 1e-304, nothing next to the softmax's largest term, which is 1).
pub(crate) fn exp(x: f64) -> f64 {
    if x < -700.0 {
        return 0.0;
    }
    const LN2_HI: f64 = 6.931_471_803_691_238e-1;
    const LN2_LO: f64 = 1.908_214_929_270_587_7e-10;
    let k = (x * std::f64::consts::LOG2_E).round();
    let r = (x - k * LN2_HI) - k * LN2_LO;
    let mut p = 1.0;
    for i in (1..=14).rev() {
        p = 1.0 + p * r / i as f64;
    }
    p * f64::from_bits(((k as i64 + 1023) as u64) << 52)
}

/// Adam's first and second moment estimates of one parameter vector.
struct Moments {
    m: Vec<f32>,
    v: Vec<f32>,
}

/// One AdamW step (PyTorch's and candle's formula, weight decay 0) on `params`.
fn adam_step(params: &mut [f32], grads: &[f32], moments: &mut Moments, lr: f64, step: i32) {
    const BETA1: f32 = 0.9;
    const BETA2: f32 = 0.999;
    const EPS: f32 = 1e-8;
    let correction1 = (1.0 - 0.9f64.powi(step)) as f32;
    let correction2 = (1.0 - 0.999f64.powi(step)) as f32;
    let lr = lr as f32;
    params
        .par_chunks_mut(4096)
        .zip(grads.par_chunks(4096))
        .zip(moments.m.par_chunks_mut(4096))
        .zip(moments.v.par_chunks_mut(4096))
        .for_each(|(((p, g), m), v)| {
            for i in 0..p.len() {
                m[i] = BETA1 * m[i] + (1.0 - BETA1) * g[i];
                v[i] = BETA2 * v[i] + (1.0 - BETA2) * g[i] * g[i];
                let m_hat = m[i] / correction1;
                let v_hat = v[i] / correction2;
                p[i] -= lr * m_hat / (v_hat.sqrt() + EPS);
            }
        });
}

/// Trains a classifier on `train` with `classes` outputs; `on_step(epoch, mean loss so
/// far in the epoch)` is called after every optimiser step (for a progress bar).
pub fn train(
    train: Examples<'_>,
    classes: usize,
    settings: &TrainSettings,
    mut on_step: impl FnMut(usize, f64),
) -> Mlp {
    let n = train.labels.len();
    assert_eq!(train.rows.len(), n * train.features, "rows × features floats");
    let widths: Vec<usize> =
        std::iter::once(train.features).chain(settings.hidden.iter().copied()).chain([classes]).collect();
    let mut mlp = Mlp::new(&widths, settings.seed, settings.kernel);
    let mut moments: Vec<(Moments, Moments)> = mlp
        .layers
        .iter()
        .map(|l| {
            let zeros = |len: usize| Moments { m: vec![0.0; len], v: vec![0.0; len] };
            (zeros(l.wt.len()), zeros(l.bias.len()))
        })
        .collect();
    let mut rng = SplitMix64::new(settings.seed, 1);
    let mut order: Vec<usize> = (0..n).collect();
    let mut step = 0;
    for epoch in 1..=settings.epochs {
        // Fisher–Yates with the seeded generator: the batch order is part of the seed.
        for i in (1..n).rev() {
            order.swap(i, rng.below(i + 1));
        }
        let (mut loss_sum, mut seen) = (0.0, 0usize);
        for chunk in order.chunks(settings.batch.max(1)) {
            step += 1;
            let mut rows = Vec::with_capacity(chunk.len() * train.features);
            for &r in chunk {
                rows.extend_from_slice(&train.rows[r * train.features..(r + 1) * train.features]);
            }
            let labels: Vec<u32> = chunk.iter().map(|&r| train.labels[r]).collect();
            let (grads, loss) = gradients(&mlp, &rows, &labels);
            for ((layer, (wt_grad, bias_grad)), (wt_m, bias_m)) in mlp.layers.iter_mut().zip(&grads).zip(&mut moments) {
                adam_step(&mut layer.wt, wt_grad, wt_m, settings.learning_rate, step);
                adam_step(&mut layer.bias, bias_grad, bias_m, settings.learning_rate, step);
            }
            loss_sum += loss;
            seen += chunk.len();
            on_step(epoch, loss_sum / seen as f64);
        }
    }
    mlp
}

/// One layer's gradients: (weights, bias).
type LayerGradients = (Vec<f32>, Vec<f32>);

/// The gradients of every layer of the mean cross-entropy over a batch, and the batch's
/// summed loss.
fn gradients(mlp: &Mlp, rows: &[f32], labels: &[u32]) -> (Vec<LayerGradients>, f64) {
    let batch = labels.len();
    let activations = mlp.forward(rows, batch);
    let classes = mlp.classes();
    // d(mean loss)/d(logits) = (softmax − one-hot) / batch.
    let mut loss = 0.0;
    let mut delta = Vec::with_capacity(batch * classes);
    for (row, &label) in activations.last().expect("logits").chunks(classes).zip(labels) {
        let probs = softmax(row);
        loss -= probs[label as usize].max(f64::MIN_POSITIVE).ln();
        delta.extend(
            probs.iter().enumerate().map(|(c, &p)| ((p - (c == label as usize) as u8 as f64) / batch as f64) as f32),
        );
    }
    let mut grads = Vec::with_capacity(mlp.layers.len());
    for (i, layer) in mlp.layers.iter().enumerate().rev() {
        let input = &activations[i];
        // wt_grad (inputs × outputs) = inputᵀ · delta; bias_grad = Σ_rows delta.
        let mut wt_grad = vec![0f32; layer.inputs * layer.outputs];
        let input_t = kernel::transpose(input, batch, layer.inputs);
        kernel::matmul_acc(mlp.kernel, &mut wt_grad, &input_t, &delta, layer.inputs, batch, layer.outputs);
        let mut bias_grad = vec![0f32; layer.outputs];
        for row in delta.chunks(layer.outputs) {
            bias_grad.iter_mut().zip(row).for_each(|(g, d)| *g += d);
        }
        if i > 0 {
            // The previous layer's delta: (delta · wtᵀ), through its ReLU.
            let w = kernel::transpose(&layer.wt, layer.inputs, layer.outputs);
            let mut previous = vec![0f32; batch * layer.inputs];
            kernel::matmul_acc(mlp.kernel, &mut previous, &delta, &w, batch, layer.outputs, layer.inputs);
            previous.iter_mut().zip(input).for_each(|(d, &a)| {
                if a <= 0.0 {
                    *d = 0.0;
                }
            });
            delta = previous;
        }
        grads.push((wt_grad, bias_grad));
    }
    grads.reverse();
    (grads, loss)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Three blurry blobs in 64 "pixels": learnable, but not perfectly.
    fn blobs(n: usize, seed: u64) -> (Vec<f32>, Vec<u32>) {
        let mut rng = SplitMix64::new(seed, 9);
        let mut rows = Vec::with_capacity(n * 64);
        let mut labels = Vec::with_capacity(n);
        for _ in 0..n {
            let label = rng.below(3) as u32;
            labels.push(label);
            for p in 0..64usize {
                let centre: usize = 10 + 20 * label as usize;
                let signal = if p.abs_diff(centre) < 8 { 0.6 } else { 0.0 };
                let noise = rng.below(1000) as f32 / 1000.0;
                rows.push(if noise < 0.3 { 0.0 } else { signal + noise * 0.5 });
            }
        }
        (rows, labels)
    }

    fn settings(hidden: Vec<usize>, kernel: KernelPath) -> TrainSettings {
        TrainSettings { hidden, epochs: 3, batch: 32, learning_rate: 1e-2, seed: 7, kernel }
    }

    fn bytes(probs: &[f64]) -> Vec<u8> {
        probs.iter().flat_map(|p| p.to_le_bytes()).collect()
    }

    #[test]
    fn every_kernel_path_trains_the_same_model_to_the_byte() {
        let (rows, labels) = blobs(600, 1);
        let (test_rows, _) = blobs(200, 2);
        let examples = Examples { rows: &rows, labels: &labels, features: 64 };
        for hidden in [vec![], vec![24]] {
            let mut results = Vec::new();
            for path in KernelPath::available() {
                let mlp = train(examples, 3, &settings(hidden.clone(), path), |_, _| {});
                results.push((path, bytes(&mlp.predict_proba(&test_rows, 64))));
            }
            for (path, result) in &results[1..] {
                assert!(result == &results[0].1, "{path:?} predicts different bytes than {:?}", results[0].0);
            }
        }
    }

    #[test]
    fn the_thread_count_does_not_change_a_byte() {
        let (rows, labels) = blobs(400, 3);
        let examples = Examples { rows: &rows, labels: &labels, features: 64 };
        let run = |threads: usize| {
            let pool = rayon::ThreadPoolBuilder::new().num_threads(threads).build().expect("pool");
            pool.install(|| {
                let mlp = train(examples, 3, &settings(vec![16], KernelPath::detect()), |_, _| {});
                bytes(&mlp.predict_proba(&rows, 64))
            })
        };
        assert!(run(1) == run(3));
    }

    #[test]
    fn training_learns_and_is_seeded() {
        let (rows, labels) = blobs(900, 4);
        let (test_rows, test_labels) = blobs(300, 5);
        let examples = Examples { rows: &rows, labels: &labels, features: 64 };
        let mut losses = Vec::new();
        let mlp = train(examples, 3, &settings(vec![16], KernelPath::detect()), |_, loss| losses.push(loss));
        let probs = mlp.predict_proba(&test_rows, 64);
        let correct = probs
            .chunks(3)
            .zip(&test_labels)
            .filter(|(p, l)| p.iter().enumerate().max_by(|a, b| a.1.total_cmp(b.1)).map(|m| m.0) == Some(**l as usize))
            .count();
        assert!(correct as f64 / 300.0 > 0.9, "accuracy {correct}/300");
        assert!(losses.last() < losses.first(), "the loss falls: {losses:?}");
        assert!(probs.chunks(3).all(|p| (p.iter().sum::<f64>() - 1.0).abs() < 1e-12));
        let other_seed =
            train(examples, 3, &TrainSettings { seed: 8, ..settings(vec![16], KernelPath::detect()) }, |_, _| {});
        assert_ne!(other_seed, mlp);
    }

    #[test]
    fn exp_matches_the_standard_library_closely() {
        for i in 0..=70_000 {
            let x = -(i as f64) / 100.0;
            let (ours, std) = (exp(x), x.exp());
            assert!((ours - std).abs() <= 4.0 * f64::EPSILON * std, "exp({x}) = {ours} vs {std}");
        }
        assert_eq!(exp(0.0), 1.0);
        assert_eq!(exp(-800.0), 0.0);
    }

    #[test]
    fn gradients_match_finite_differences() {
        let (rows, labels) = blobs(8, 6);
        let mlp = Mlp::new(&[64, 5, 3], 3, KernelPath::Portable);
        let (grads, _) = gradients(&mlp, &rows, &labels);
        let mean_loss = |m: &Mlp| gradients(m, &rows, &labels).1 / labels.len() as f64;
        for (layer, index) in [(0, 70), (0, 5 * 12 + 3), (1, 4), (1, 14)] {
            // Small enough that no hidden unit crosses its ReLU kink, large enough for f32.
            let h = 1e-3f32;
            let (mut plus, mut minus) = (mlp.clone(), mlp.clone());
            plus.layers[layer].wt[index] += h;
            minus.layers[layer].wt[index] -= h;
            let numeric = (mean_loss(&plus) - mean_loss(&minus)) / (2.0 * h as f64);
            let analytic = grads[layer].0[index] as f64;
            assert!(
                (numeric - analytic).abs() < 5e-5 + 0.01 * analytic.abs(),
                "layer {layer} weight {index}: {numeric} vs {analytic}"
            );
        }
    }
}
