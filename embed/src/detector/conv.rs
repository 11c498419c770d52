//! 3×3 (and 1×1) convolutions as im2col followed by the classifier's fixed-order matrix
//! product, and their backward pass.
//!
//! Activations are channels-last (`batch × height × width × channels`, row-major), so a
//! row of the im2col matrix is a run of whole pixel vectors and its columns are ordered
//! (kernel row, kernel column, input channel). A layer's weights are that matrix's
//! right-hand side, `taps × outputs`. Forward is `out = bias + cols · wt`
//! ([`kernel::matmul_blocked_acc`]: the sums of [`kernel::matmul_acc`], register-blocked);
//! backward is `wt_grad = colsᵀ · grad_out` ([`kernel::matmul_tn_acc`]),
//! `bias_grad = Σ_rows grad_out` (in row order) and `grad_in = col2im(grad_out · wtᵀ)`,
//! where col2im adds each column back onto its pixel in one fixed loop order. Threads only ever take whole images (im2col, col2im) or whole
//! output rows (the products), so no sum depends on the thread count.

use rayon::prelude::*;

use crate::classifier::SplitMix64;
use crate::classifier::kernel::{self, KernelPath};

/// The size of a batch of channels-last activations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Shape {
    pub batch: usize,
    pub height: usize,
    pub width: usize,
    pub channels: usize,
}

impl Shape {
    /// Floats per image.
    pub fn image_len(&self) -> usize {
        self.height * self.width * self.channels
    }

    /// Floats in the batch.
    pub fn len(&self) -> usize {
        self.batch * self.image_len()
    }
}

/// One convolution layer with "same" padding (`dilation · (size − 1) / 2` on each side).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Conv {
    pub inputs: usize,
    pub outputs: usize,
    /// Kernel side: 3 or 1.
    pub size: usize,
    pub stride: usize,
    pub dilation: usize,
    /// `taps × outputs`, row-major, taps ordered (kernel row, kernel column, input channel).
    pub wt: Vec<f32>,
    pub bias: Vec<f32>,
}

/// What a layer's forward pass keeps for its backward pass.
pub(crate) struct Forward {
    /// The im2col matrix, `rows × taps`.
    pub cols: Vec<f32>,
    /// The output before any activation function.
    pub out: Vec<f32>,
    pub out_shape: Shape,
}

impl Conv {
    /// A layer with He-uniform weights, U(−√(6/fan_in), √(6/fan_in)), and bias `bias`,
    /// drawn from `rng`.
    pub fn new(
        inputs: usize,
        outputs: usize,
        (size, stride, dilation): (usize, usize, usize),
        bias: f32,
        rng: &mut SplitMix64,
    ) -> Self {
        let taps = size * size * inputs;
        let bound = (6.0 / taps as f64).sqrt() as f32;
        let wt = (0..taps * outputs)
            .map(|_| ((rng.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0) * bound)
            .collect();
        Conv { inputs, outputs, size, stride, dilation, wt, bias: vec![bias; outputs] }
    }

    /// Floats in one im2col row.
    pub fn taps(&self) -> usize {
        self.size * self.size * self.inputs
    }

    fn padding(&self) -> usize {
        self.dilation * (self.size - 1) / 2
    }

    /// The output shape for an input of shape `input`.
    pub fn output_shape(&self, input: Shape) -> Shape {
        let span = self.dilation * (self.size - 1);
        let side = |n: usize| (n + 2 * self.padding() - span - 1) / self.stride + 1;
        Shape { batch: input.batch, height: side(input.height), width: side(input.width), channels: self.outputs }
    }

    /// The input pixel a tap reads for an output pixel, if it is inside the image.
    #[inline(always)]
    fn source(&self, out: usize, tap: usize, limit: usize) -> Option<usize> {
        let at = (out * self.stride + tap * self.dilation).checked_sub(self.padding())?;
        (at < limit).then_some(at)
    }

    /// The im2col matrix of `input`: one row per output pixel (image, row, column), the
    /// taps in (kernel row, kernel column, channel) order, zeros where a tap is outside.
    pub fn im2col(&self, input: &[f32], shape: Shape) -> Vec<f32> {
        assert_eq!(input.len(), shape.len(), "input matches its shape");
        assert_eq!(shape.channels, self.inputs, "input channels");
        let out = self.output_shape(shape);
        let (taps, c) = (self.taps(), self.inputs);
        let per_image = out.height * out.width * taps;
        let mut cols = vec![0f32; shape.batch * per_image];
        cols.par_chunks_mut(per_image.max(1)).zip(input.par_chunks(shape.image_len().max(1))).for_each(
            |(cols, image)| {
                for oy in 0..out.height {
                    for ox in 0..out.width {
                        let row = &mut cols[(oy * out.width + ox) * taps..][..taps];
                        for ky in 0..self.size {
                            let Some(iy) = self.source(oy, ky, shape.height) else { continue };
                            for kx in 0..self.size {
                                let Some(ix) = self.source(ox, kx, shape.width) else { continue };
                                row[(ky * self.size + kx) * c..][..c]
                                    .copy_from_slice(&image[(iy * shape.width + ix) * c..][..c]);
                            }
                        }
                    }
                }
            },
        );
        cols
    }

    /// Adds each im2col column of `cols` back onto the input pixel it was read from: the
    /// input gradient from the gradient of the im2col matrix. Per image, pixels and taps in
    /// a fixed order.
    fn col2im(&self, cols: &[f32], shape: Shape) -> Vec<f32> {
        let out = self.output_shape(shape);
        let (taps, c) = (self.taps(), self.inputs);
        let per_image = out.height * out.width * taps;
        let mut grad = vec![0f32; shape.len()];
        grad.par_chunks_mut(shape.image_len().max(1)).zip(cols.par_chunks(per_image.max(1))).for_each(
            |(image, cols)| {
                for oy in 0..out.height {
                    for ox in 0..out.width {
                        let row = &cols[(oy * out.width + ox) * taps..][..taps];
                        for ky in 0..self.size {
                            let Some(iy) = self.source(oy, ky, shape.height) else { continue };
                            for kx in 0..self.size {
                                let Some(ix) = self.source(ox, kx, shape.width) else { continue };
                                let pixel = &mut image[(iy * shape.width + ix) * c..][..c];
                                for (g, &v) in pixel.iter_mut().zip(&row[(ky * self.size + kx) * c..][..c]) {
                                    *g += v;
                                }
                            }
                        }
                    }
                }
            },
        );
        grad
    }

    /// The layer's output (no activation) for `input`, with what backward needs.
    pub fn forward(&self, path: KernelPath, input: &[f32], shape: Shape) -> Forward {
        let out_shape = self.output_shape(shape);
        let cols = self.im2col(input, shape);
        let rows = out_shape.batch * out_shape.height * out_shape.width;
        let mut out: Vec<f32> = self.bias.iter().copied().cycle().take(rows * self.outputs).collect();
        kernel::matmul_blocked_acc(path, &mut out, &cols, &self.wt, rows, self.taps(), self.outputs);
        Forward { cols, out, out_shape }
    }

    /// The gradients of the weights and the bias, and, when `input_grad`, of the input
    /// (of shape `shape`), from the gradient of the output and the forward pass's im2col
    /// matrix.
    pub fn backward(
        &self,
        path: KernelPath,
        cols: &[f32],
        grad_out: &[f32],
        shape: Shape,
        input_grad: bool,
    ) -> (Vec<f32>, Vec<f32>, Option<Vec<f32>>) {
        let taps = self.taps();
        let rows = grad_out.len() / self.outputs;
        let mut bias_grad = vec![0f32; self.outputs];
        for row in grad_out.chunks_exact(self.outputs) {
            bias_grad.iter_mut().zip(row).for_each(|(g, d)| *g += d);
        }
        let mut wt_grad = vec![0f32; taps * self.outputs];
        kernel::matmul_tn_acc(path, &mut wt_grad, cols, grad_out, rows, taps, self.outputs);
        let grad_in = input_grad.then(|| {
            let w = kernel::transpose(&self.wt, taps, self.outputs);
            let mut grad_cols = vec![0f32; rows * taps];
            kernel::matmul_blocked_acc(path, &mut grad_cols, grad_out, &w, rows, self.outputs, taps);
            self.col2im(&grad_cols, shape)
        });
        (wt_grad, bias_grad, grad_in)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(n: usize, seed: u64) -> Vec<f32> {
        let mut rng = SplitMix64::new(seed, 5);
        (0..n).map(|_| (rng.below(2001) as f32 - 1000.0) / 1000.0).collect()
    }

    /// A direct convolution, one output at a time, in f64: what im2col + product must equal.
    fn direct(conv: &Conv, input: &[f32], shape: Shape) -> Vec<f64> {
        let out = conv.output_shape(shape);
        let mut result = Vec::with_capacity(out.len());
        for b in 0..shape.batch {
            for oy in 0..out.height {
                for ox in 0..out.width {
                    for o in 0..conv.outputs {
                        let mut sum = conv.bias[o] as f64;
                        for ky in 0..conv.size {
                            for kx in 0..conv.size {
                                let iy = (oy * conv.stride + ky * conv.dilation) as isize - conv.padding() as isize;
                                let ix = (ox * conv.stride + kx * conv.dilation) as isize - conv.padding() as isize;
                                if iy < 0 || ix < 0 || iy >= shape.height as isize || ix >= shape.width as isize {
                                    continue;
                                }
                                for i in 0..conv.inputs {
                                    let x = input[((b * shape.height + iy as usize) * shape.width + ix as usize)
                                        * shape.channels
                                        + i];
                                    let w = conv.wt[((ky * conv.size + kx) * conv.inputs + i) * conv.outputs + o];
                                    sum += x as f64 * w as f64;
                                }
                            }
                        }
                        result.push(sum);
                    }
                }
            }
        }
        result
    }

    fn layers() -> Vec<(Conv, Shape)> {
        let mut rng = SplitMix64::new(3, 0);
        let shape = |batch, height, width, channels| Shape { batch, height, width, channels };
        vec![
            (Conv::new(2, 3, (3, 1, 1), 0.1, &mut rng), shape(2, 5, 6, 2)),
            (Conv::new(3, 4, (3, 2, 1), -0.2, &mut rng), shape(2, 7, 8, 3)),
            (Conv::new(2, 2, (3, 1, 2), 0.0, &mut rng), shape(1, 6, 5, 2)),
            (Conv::new(4, 3, (1, 1, 1), 0.3, &mut rng), shape(2, 3, 3, 4)),
        ]
    }

    #[test]
    fn output_sizes_follow_same_padding() {
        let mut rng = SplitMix64::new(1, 0);
        let input = Shape { batch: 1, height: 96, width: 96, channels: 1 };
        let down = Conv::new(1, 8, (3, 2, 1), 0.0, &mut rng).output_shape(input);
        assert_eq!((down.height, down.width, down.channels), (48, 48, 8));
        let dilated = Conv::new(8, 8, (3, 1, 4), 0.0, &mut rng).output_shape(down);
        assert_eq!((dilated.height, dilated.width), (48, 48));
    }

    #[test]
    fn im2col_and_the_product_compute_the_convolution() {
        for (conv, shape) in layers() {
            let input = values(shape.len(), 1);
            let forward = conv.forward(KernelPath::Portable, &input, shape);
            let expected = direct(&conv, &input, shape);
            assert_eq!(forward.out.len(), expected.len());
            for (got, want) in forward.out.iter().zip(&expected) {
                assert!((*got as f64 - want).abs() < 1e-5, "{got} vs {want}");
            }
        }
    }

    /// The loss `Σ out · r` for fixed random `r` is linear in the weights, the bias and
    /// the input, so central differences are exact up to f32 rounding.
    #[test]
    fn backward_matches_finite_differences() {
        for (conv, shape) in layers() {
            let input = values(shape.len(), 2);
            let forward = conv.forward(KernelPath::Portable, &input, shape);
            let r = values(forward.out.len(), 3);
            let loss = |conv: &Conv, input: &[f32]| -> f64 {
                let out = conv.forward(KernelPath::Portable, input, shape).out;
                out.iter().zip(&r).map(|(o, r)| *o as f64 * *r as f64).sum()
            };
            let (wt_grad, bias_grad, input_grad) = conv.backward(KernelPath::Portable, &forward.cols, &r, shape, true);
            let input_grad = input_grad.expect("asked for");
            let h = 0.01f32;
            let close = |numeric: f64, analytic: f32, what: &str| {
                assert!(
                    (numeric - analytic as f64).abs() < 2e-3 * (1.0 + numeric.abs()),
                    "{what}: {numeric} vs {analytic}"
                );
            };
            for i in (0..conv.wt.len()).step_by(5) {
                let (mut plus, mut minus) = (conv.clone(), conv.clone());
                plus.wt[i] += h;
                minus.wt[i] -= h;
                close((loss(&plus, &input) - loss(&minus, &input)) / (2.0 * h as f64), wt_grad[i], "weight");
            }
            for (i, &analytic) in bias_grad.iter().enumerate() {
                let (mut plus, mut minus) = (conv.clone(), conv.clone());
                plus.bias[i] += h;
                minus.bias[i] -= h;
                close((loss(&plus, &input) - loss(&minus, &input)) / (2.0 * h as f64), analytic, "bias");
            }
            for i in (0..input.len()).step_by(3) {
                let (mut plus, mut minus) = (input.clone(), input.clone());
                plus[i] += h;
                minus[i] -= h;
                close((loss(&conv, &plus) - loss(&conv, &minus)) / (2.0 * h as f64), input_grad[i], "input");
            }
        }
    }
}
