//! CLIP's two towers on plain f32 buffers, for the CPU.
//!
//! Through candle each op is its own pass over memory with its own allocation, and the
//! elementwise ones (bias, residual, activation) run on one thread; bench-embed measured
//! that at about half of PyTorch's speed. Here a block is four GEMMs (q/k/v fused into
//! one, out, fc1, fc2), each split into row or column blocks across the rayon threads,
//! with the small work fused between them: bias + residual + layer norm in one pass over
//! a row, bias + activation in one (a vectorised exp, `fastmath`), and attention per
//! (sequence, head) on the q/k/v rows where the GEMM left them. The weights are the
//! candle model's, copied out once at load.
//!
//! The dense layers' GEMM is chosen once per model ([`CpuKernel`]): on AVX-512 CPUs
//! slicetest's own kernel over weights packed at load (`packed.rs`), elsewhere the `gemm`
//! crate (AVX2 + FMA, or SSE).

use candle_core::Tensor;
use candle_nn::{LayerNorm, Linear};
use rayon::prelude::*;

use super::config::Activation;
use super::fastmath;
use crate::error::Result;

/// The GEMM a model's dense layers run on the CPU.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum CpuKernel {
    /// The `gemm` crate, which picks AVX2 + FMA or SSE code at run time (it has AVX-512
    /// code too, but only behind a feature slicetest leaves off: see `packed.rs`).
    Gemm,
    /// slicetest's AVX-512 f32 kernel, weights packed at load.
    Avx512F32,
    /// slicetest's AMX bfloat16 kernel (tile products, f32 sums), weights packed at load:
    /// only when asked for (`--device cpu-bf16`), on CPUs with AMX-BF16 (Intel Xeon since
    /// Sapphire Rapids) whose OS grants the tile state.
    AmxBf16,
    /// slicetest's AVX512_BF16 kernel (`vdpbf16ps`: pairs of bfloat16 products, f32 sums),
    /// weights packed at load: only when asked for (`--device cpu-bf16`), on AMD CPUs with
    /// AVX512_BF16 (Zen 4 and later), where it does twice the f32 kernel's multiply-adds
    /// per cycle. Intel CPUs with AVX512_BF16 but no AMX are not offered it: there it ran
    /// at 0.7× the f32 kernel (`packed.rs`).
    Avx512Bf16,
}

pub use crate::cpu::CPU_KERNEL_VARIABLE;

impl CpuKernel {
    /// The kernel for a model in `bf16` or f32 on this CPU, honouring
    /// [`CPU_KERNEL_VARIABLE`]; `None` when bf16 is asked for on a CPU with neither bf16
    /// kernel.
    pub fn select(bf16: bool) -> Option<CpuKernel> {
        if bf16 {
            return [CpuKernel::AmxBf16, CpuKernel::Avx512Bf16].into_iter().find(|k| k.runs_here());
        }
        let forced_gemm = std::env::var(CPU_KERNEL_VARIABLE).is_ok_and(|v| v == "gemm");
        if !forced_gemm && CpuKernel::Avx512F32.runs_here() {
            return Some(CpuKernel::Avx512F32);
        }
        Some(CpuKernel::Gemm)
    }

    /// Whether this CPU can run the kernel.
    pub fn runs_here(self) -> bool {
        match self {
            CpuKernel::Gemm => true,
            // (AMX comes only with AVX-512: `avx2` rules out both.)
            #[cfg(target_arch = "x86_64")]
            CpuKernel::Avx512F32 => {
                !crate::cpu::avx512_ruled_out() && super::packed::supported(super::packed::Precision::F32)
            }
            #[cfg(target_arch = "x86_64")]
            CpuKernel::AmxBf16 => {
                !crate::cpu::avx512_ruled_out() && super::packed::supported(super::packed::Precision::Bf16)
            }
            #[cfg(target_arch = "x86_64")]
            CpuKernel::Avx512Bf16 => {
                !crate::cpu::avx512_ruled_out()
                    && crate::cpu::is_amd()
                    && super::packed::supported(super::packed::Precision::Bf16Pairs)
            }
            #[cfg(not(target_arch = "x86_64"))]
            CpuKernel::Avx512F32 | CpuKernel::AmxBf16 | CpuKernel::Avx512Bf16 => false,
        }
    }

    /// Whether the kernel computes in bfloat16.
    pub fn is_bf16(self) -> bool {
        matches!(self, CpuKernel::AmxBf16 | CpuKernel::Avx512Bf16)
    }

    /// A short name for logs and bench output: `gemm`, `avx512-f32`, `amx-bf16`,
    /// `avx512-bf16`.
    pub fn name(self) -> &'static str {
        match self {
            CpuKernel::Gemm => "gemm",
            CpuKernel::Avx512F32 => "avx512-f32",
            CpuKernel::AmxBf16 => "amx-bf16",
            CpuKernel::Avx512Bf16 => "avx512-bf16",
        }
    }
}

/// Weights packed for slicetest's own kernel (x86_64 only; elsewhere never built).
#[cfg(target_arch = "x86_64")]
type Packed = super::packed::PackedWeights;
#[cfg(not(target_arch = "x86_64"))]
type Packed = std::convert::Infallible;

/// Copies a tensor's values out, in row-major order.
pub(super) fn values(t: &Tensor) -> Result<Vec<f32>> {
    Ok(t.flatten_all()?.to_dtype(candle_core::DType::F32)?.to_vec1::<f32>()?)
}

/// A dense layer y = x·Wᵀ (+ b), W as Hugging Face stores it: (outputs, inputs), row-major.
pub(super) struct Dense {
    /// W for the `gemm` crate; empty once packed.
    weight: Vec<f32>,
    /// W packed for slicetest's AVX-512 kernels, if the model runs them.
    packed: Option<Packed>,
    bias: Option<Vec<f32>>,
    inputs: usize,
    outputs: usize,
}

impl Dense {
    pub(super) fn from_linear(linear: &Linear, kernel: CpuKernel) -> Result<Self> {
        let (outputs, inputs) = linear.weight().dims2()?;
        let bias = linear.bias().map(values).transpose()?;
        Ok(Dense { weight: values(linear.weight())?, packed: None, bias, inputs, outputs }.packed_for(kernel))
    }

    /// The layer with W packed for `kernel`, when that is one of slicetest's own.
    fn packed_for(mut self, kernel: CpuKernel) -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            use super::packed::Precision;
            let precision = match kernel {
                CpuKernel::Gemm => return self,
                CpuKernel::Avx512F32 => Precision::F32,
                CpuKernel::AmxBf16 => Precision::Bf16,
                CpuKernel::Avx512Bf16 => Precision::Bf16Pairs,
            };
            self.packed = Some(Packed::new(&self.weight, self.inputs, self.outputs, precision));
            self.weight = Vec::new();
        }
        #[cfg(not(target_arch = "x86_64"))]
        let _ = kernel;
        self
    }

    /// One layer from several with the same inputs, their outputs side by side (fused
    /// q/k/v), each scaled by its factor (weights and bias).
    fn stacked(parts: &[(&Linear, f32)], kernel: CpuKernel) -> Result<Self> {
        let mut weight = Vec::new();
        let mut bias = Vec::new();
        let mut inputs = 0;
        for (linear, scale) in parts {
            let part = Dense::from_linear(linear, CpuKernel::Gemm)?;
            inputs = part.inputs;
            weight.extend(part.weight.iter().map(|w| w * scale));
            let b = part.bias.unwrap_or_else(|| vec![0.0; part.outputs]);
            bias.extend(b.iter().map(|b| b * scale));
        }
        let outputs = bias.len();
        Ok(Dense { weight, packed: None, bias: Some(bias), inputs, outputs }.packed_for(kernel))
    }

    /// `out` (rows × outputs) = `x` (rows × inputs)·Wᵀ, or `out` += that when `accumulate`.
    /// The bias is not added: callers fuse it into their next pass.
    ///
    /// The work is split across the rayon threads, each running a single-threaded GEMM
    /// (which beats gemm's own threading at these sizes, bench-embed). Each GEMM packs the
    /// part of x and of W it reads, so the split is the one that packs less in all: by
    /// rows, every thread packs all of W; by columns, every thread packs all of x.
    fn matmul(&self, x: &[f32], out: &mut [f32], accumulate: bool) {
        let (k, n) = (self.inputs, self.outputs);
        let rows = x.len() / k;
        debug_assert_eq!(out.len(), rows * n);
        let threads = rayon::current_num_threads();
        if threads > 1 && split_by_columns(rows, n) {
            // Blocks of whole 32-column groups (two cache lines of f32, a packed panel),
            // one per thread.
            let block = n.div_ceil(threads).next_multiple_of(32);
            let out = SharedOut(out.as_mut_ptr());
            (0..n.div_ceil(block)).into_par_iter().for_each(|b| {
                let (from, to) = (b * block, ((b + 1) * block).min(n));
                // SAFETY: the blocks' column ranges are disjoint, so no two threads write
                // the same element of out, and `out` outlives this parallel loop.
                unsafe { self.gemm(rows, to - from, x.as_ptr(), out.at(from), from, accumulate) }
            });
        } else {
            let block = rows.div_ceil(threads).max(1);
            out.par_chunks_mut(block * n).zip(x.par_chunks(block * k)).for_each(|(out, x)| {
                // SAFETY: out is (x.len() / k) × n, x is that many rows of k.
                unsafe { self.gemm(x.len() / k, n, x.as_ptr(), out.as_mut_ptr(), 0, accumulate) }
            });
        }
    }

    /// Columns `from..from + n` of x·Wᵀ for `m` rows of x, into `out` (row stride: all
    /// the outputs), single-threaded.
    ///
    /// # Safety
    /// `x` points to m × inputs values, `out` to m rows of the layer's outputs starting at
    /// column `from`, and `from + n` ≤ outputs.
    unsafe fn gemm(&self, m: usize, n: usize, x: *const f32, out: *mut f32, from: usize, accumulate: bool) {
        if let Some(packed) = &self.packed {
            // SAFETY: the weights were packed only for a kernel the CPU runs
            // (`CpuKernel::select`); `from` is a multiple of 32 (`matmul`'s column blocks).
            #[cfg(target_arch = "x86_64")]
            return unsafe { packed.gemm(m, from, from + n, x, out, self.outputs, accumulate) };
            #[cfg(not(target_arch = "x86_64"))]
            match *packed {}
        }
        let k = self.inputs;
        // W (outputs × k, row-major) is read as Wᵀ (k × outputs) through its strides.
        unsafe {
            gemm::gemm(
                m,
                n,
                k,
                out,
                1,
                self.outputs as isize,
                accumulate,
                x,
                1,
                k as isize,
                self.weight.as_ptr().add(from * k),
                k as isize,
                1,
                1.0,
                1.0,
                false,
                false,
                false,
                gemm::Parallelism::None,
            )
        }
    }

    /// `out` = x·Wᵀ + b.
    fn forward(&self, x: &[f32], out: &mut [f32]) {
        match &self.bias {
            Some(bias) => {
                out.par_chunks_mut(self.outputs).for_each(|row| row.copy_from_slice(bias));
                self.matmul(x, out, true);
            }
            None => self.matmul(x, out, false),
        }
    }
}

/// Whether a GEMM of `rows` × `outputs` packs less split by columns than by rows: by
/// columns each thread packs every row of x (rows × inputs) and its share of W (outputs ×
/// inputs); by rows, its share of x and all of W. (t threads: rows + outputs/t against
/// rows/t + outputs.) ViT-B/32 texts, 16 × 12 tokens = 192 rows, ran about 5% faster by
/// columns than by rows in an A/B run; 16 images (800 rows) the same either way.
fn split_by_columns(rows: usize, outputs: usize) -> bool {
    rows < outputs
}

/// The output buffer's base pointer, for threads that write disjoint columns of it.
#[derive(Clone, Copy)]
struct SharedOut(*mut f32);

// SAFETY: each user writes only its own columns (see `Dense::matmul`).
unsafe impl Send for SharedOut {}
unsafe impl Sync for SharedOut {}

impl SharedOut {
    fn at(self, column: usize) -> *mut f32 {
        self.0.wrapping_add(column)
    }
}

/// A layer norm's affine parameters.
pub(super) struct Norm {
    weight: Vec<f32>,
    bias: Vec<f32>,
    eps: f32,
}

impl Norm {
    pub(super) fn from_layer_norm(norm: &LayerNorm, eps: f64) -> Result<Self> {
        let weight = values(norm.weight())?;
        let bias = match norm.bias() {
            Some(b) => values(b)?,
            None => vec![0.0; weight.len()],
        };
        Ok(Norm { weight, bias, eps: eps as f32 })
    }

    /// `out` = the normalised `row`, two-pass mean and variance as PyTorch computes them.
    fn apply(&self, row: &[f32], out: &mut [f32]) {
        let n = row.len() as f32;
        let mean = sum_of(row, |x| x) / n;
        let var = sum_of(row, |x| (x - mean) * (x - mean)) / n;
        let inv = 1.0 / (var + self.eps).sqrt();
        for (((o, x), w), b) in out.iter_mut().zip(row).zip(&self.weight).zip(&self.bias) {
            *o = (x - mean) * inv * w + b;
        }
    }

    /// Every row of `xs` (rows × width) normalised in place.
    fn apply_in_place(&self, xs: &mut [f32]) {
        let width = self.weight.len();
        xs.par_chunks_mut(width).for_each(|row| {
            let copy = row.to_vec();
            self.apply(&copy, row);
        });
    }
}

/// The sum of f(x) over `xs` in eight running sums: one sum is a chain of dependent adds
/// that the compiler may not reorder, so it neither vectorises nor pipelines.
#[inline(always)]
fn sum_of(xs: &[f32], f: impl Fn(f32) -> f32) -> f32 {
    let mut lanes = [0f32; 8];
    let chunks = xs.chunks_exact(8);
    let rest: f32 = chunks.remainder().iter().map(|&x| f(x)).sum();
    for chunk in chunks {
        lanes.iter_mut().zip(chunk).for_each(|(l, &x)| *l += f(x));
    }
    lanes.iter().sum::<f32>() + rest
}

/// `xs` += bias (row-wise) when there is one, then `normed` = norm(xs), in one pass.
fn add_bias_then_norm(xs: &mut [f32], bias: Option<&[f32]>, norm: &Norm, normed: &mut [f32]) {
    let width = norm.weight.len();
    xs.par_chunks_mut(width).zip(normed.par_chunks_mut(width)).for_each(|(row, out)| {
        if let Some(bias) = bias {
            row.iter_mut().zip(bias).for_each(|(x, b)| *x += b);
        }
        norm.apply(row, out);
    });
}

fn add_bias(xs: &mut [f32], bias: Option<&[f32]>) {
    if let Some(bias) = bias {
        xs.par_chunks_mut(bias.len()).for_each(|row| row.iter_mut().zip(bias).for_each(|(x, b)| *x += b));
    }
}

impl Activation {
    fn apply(self, x: f32) -> f32 {
        match self {
            Activation::QuickGelu => x / (1.0 + (-1.702 * x).exp()),
            Activation::Gelu => 0.5 * x * (1.0 + candle_core::cpu::erf::erf_f32(x * std::f32::consts::FRAC_1_SQRT_2)),
            Activation::GeluTanh => {
                let inner = (2.0 / std::f32::consts::PI).sqrt() * (x + 0.044715 * x * x * x);
                0.5 * x * (1.0 + inner.tanh())
            }
        }
    }
}

/// One pre-norm transformer block.
pub(super) struct Block {
    norm1: Norm,
    qkv: Dense,
    out: Dense,
    norm2: Norm,
    fc1: Dense,
    fc2: Dense,
}

impl Block {
    /// The block from candle's layers; `scale` (head_dim^-½) is folded into q.
    #[allow(clippy::too_many_arguments)]
    pub(super) fn new(
        norms: (&LayerNorm, &LayerNorm),
        eps: f64,
        q: &Linear,
        k: &Linear,
        v: &Linear,
        out: &Linear,
        fc1: &Linear,
        fc2: &Linear,
        scale: f32,
        kernel: CpuKernel,
    ) -> Result<Self> {
        Ok(Block {
            norm1: Norm::from_layer_norm(norms.0, eps)?,
            qkv: Dense::stacked(&[(q, scale), (k, 1.0), (v, 1.0)], kernel)?,
            out: Dense::from_linear(out, kernel)?,
            norm2: Norm::from_layer_norm(norms.1, eps)?,
            fc1: Dense::from_linear(fc1, kernel)?,
            fc2: Dense::from_linear(fc2, kernel)?,
        })
    }
}

/// A stack of blocks and what they share.
pub(super) struct Encoder {
    pub(super) blocks: Vec<Block>,
    pub(super) heads: usize,
    pub(super) activation: Activation,
}

/// Reused work buffers of one forward pass.
struct Scratch {
    normed: Vec<f32>,
    qkv: Vec<f32>,
    context: Vec<f32>,
    hidden: Vec<f32>,
}

impl Encoder {
    /// Runs every block over `xs`, `sequences` × `tokens` rows of `width` (the residual
    /// stream), and returns the rows at `pooled` (indices into all rows), the only ones the towers
    /// read. `causal`: a token attends only to itself and earlier ones (the text tower).
    ///
    /// Past the last block's attention every op is per row, so the rest of that block
    /// runs on the pooled rows alone: three quarters of its GEMM work, about 6% of the
    /// whole, is never done for rows nobody reads.
    pub(super) fn forward(
        &self,
        mut xs: Vec<f32>,
        width: usize,
        tokens: usize,
        causal: bool,
        pooled: &[usize],
    ) -> Vec<f32> {
        let Some(first) = self.blocks.first() else { return gather(&xs, pooled, width) };
        let rows = xs.len() / width;
        let mut s = Scratch {
            normed: vec![0.0; rows * width],
            qkv: vec![0.0; rows * 3 * width],
            context: vec![0.0; rows * width],
            hidden: vec![0.0; rows * first.fc1.outputs],
        };
        let mut pending_bias: Option<&[f32]> = None;
        for (i, block) in self.blocks.iter().enumerate() {
            // The previous block's fc2 bias is added in the same pass as this norm.
            add_bias_then_norm(&mut xs, pending_bias, &block.norm1, &mut s.normed);
            block.qkv.forward(&s.normed, &mut s.qkv);
            attention(&s.qkv, &mut s.context, width, tokens, self.heads, causal);
            if i + 1 == self.blocks.len() {
                xs = gather(&xs, pooled, width);
                s.context = gather(&s.context, pooled, width);
                s.normed.truncate(xs.len());
                s.hidden.truncate(pooled.len() * block.fc1.outputs);
            }
            self.finish_block(block, &mut xs, &mut s);
            pending_bias = block.fc2.bias.as_deref();
        }
        add_bias(&mut xs, pending_bias);
        xs
    }

    /// A block after its attention: out projection onto the residual, norm, MLP onto the
    /// residual (fc2's bias left for the next pass over `xs`).
    fn finish_block(&self, block: &Block, xs: &mut [f32], s: &mut Scratch) {
        block.out.matmul(&s.context, xs, true);
        add_bias_then_norm(xs, block.out.bias.as_deref(), &block.norm2, &mut s.normed);
        block.fc1.matmul(&s.normed, &mut s.hidden, false);
        let (bias, activation) = (block.fc1.bias.as_deref(), self.activation);
        s.hidden.par_chunks_mut(block.fc1.outputs).for_each(|row| match (activation, bias) {
            (Activation::QuickGelu, _) => fastmath::bias_quick_gelu(row, bias),
            (_, Some(bias)) => row.iter_mut().zip(bias).for_each(|(x, b)| *x = activation.apply(*x + b)),
            (_, None) => row.iter_mut().for_each(|x| *x = activation.apply(*x)),
        });
        block.fc2.matmul(&s.hidden, xs, true);
    }
}

/// Rows `at` of `xs` (rows of `width`), in that order.
fn gather(xs: &[f32], at: &[usize], width: usize) -> Vec<f32> {
    at.iter().flat_map(|&row| &xs[row * width..][..width]).copied().collect()
}

/// Multi-head attention over fused q/k/v rows (q already scaled): `context` (rows × width)
/// gets, per sequence of `tokens` rows and per head, softmax(q·kᵀ)·v.
///
/// Both products are GEMMs that read q, k and v where the q/k/v GEMM left them (through
/// strides, no copies). As a loop of dot products and row updates it was 5.6% of an
/// image forward pass's perf samples; as GEMMs it no longer shows apart from the kernel.
fn attention(qkv: &[f32], context: &mut [f32], width: usize, tokens: usize, heads: usize, causal: bool) {
    let head_dim = width / heads;
    let stride = 3 * width as isize;
    context.par_chunks_mut(tokens * width).zip(qkv.par_chunks(tokens * 3 * width)).for_each(|(out, qkv)| {
        let mut probabilities = vec![0f32; tokens * tokens];
        for head in 0..heads {
            let [q, k, v] = [0, 1, 2].map(|part| qkv[part * width + head * head_dim..].as_ptr());
            // SAFETY: q, k and v are `tokens` rows `stride` apart of head_dim values each,
            // inside this sequence's qkv; `probabilities` is tokens × tokens; `out` holds
            // `tokens` rows of `width`, this head's head_dim columns written.
            unsafe {
                // scores = q·kᵀ, kᵀ read through k's strides.
                #[rustfmt::skip]
                gemm::gemm(tokens, tokens, head_dim, probabilities.as_mut_ptr(), 1, tokens as isize, false,
                    q, 1, stride, k, stride, 1, 0.0, 1.0, false, false, false, gemm::Parallelism::None);
            }
            for (i, row) in probabilities.chunks_mut(tokens).enumerate() {
                let seen = if causal { i + 1 } else { tokens };
                let (attended, masked) = row.split_at_mut(seen);
                let max = attended.iter().copied().fold(f32::NEG_INFINITY, f32::max);
                let scale = 1.0 / fastmath::exp_shifted(attended, max);
                attended.iter_mut().for_each(|p| *p *= scale);
                masked.fill(0.0);
            }
            unsafe {
                // context[head] = probabilities·v.
                #[rustfmt::skip]
                gemm::gemm(tokens, head_dim, tokens, out[head * head_dim..].as_mut_ptr(), 1, width as isize, false,
                    probabilities.as_ptr(), 1, tokens as isize, v, 1, stride, 0.0, 1.0, false, false, false,
                    gemm::Parallelism::None);
            }
        }
    });
}

/// The vision tower: patches → class token + positions → pre-norm → encoder → post-norm
/// of the class token.
pub(super) struct VisionTower {
    pub(super) patch: Dense,
    pub(super) class: Vec<f32>,
    pub(super) positions: Vec<f32>,
    pub(super) pre_norm: Norm,
    pub(super) encoder: Encoder,
    pub(super) post_norm: Norm,
    pub(super) patch_size: usize,
    pub(super) channels: usize,
}

impl VisionTower {
    /// Pooled outputs (batch × hidden) of `pixels` (batch × channels × side × side).
    pub(super) fn forward(&self, pixels: &[f32], batch: usize, side: usize) -> Vec<f32> {
        let (p, c, width) = (self.patch_size, self.channels, self.patch.outputs);
        let grid = side / p;
        let tokens = grid * grid + 1;
        // im2col: one row per patch, (channel, y, x) order as the conv weight's.
        let mut patches = vec![0f32; batch * grid * grid * c * p * p];
        patches.par_chunks_mut(c * p * p).enumerate().for_each(|(i, row)| {
            let (b, gy, gx) = (i / (grid * grid), (i / grid) % grid, i % grid);
            for ch in 0..c {
                for y in 0..p {
                    let src = ((b * c + ch) * side + gy * p + y) * side + gx * p;
                    row[(ch * p + y) * p..][..p].copy_from_slice(&pixels[src..][..p]);
                }
            }
        });
        let mut embedded = vec![0f32; batch * grid * grid * width];
        self.patch.matmul(&patches, &mut embedded, false);
        let mut xs = vec![0f32; batch * tokens * width];
        xs.par_chunks_mut(tokens * width).enumerate().for_each(|(b, seq)| {
            seq[..width].copy_from_slice(&self.class);
            seq[width..].copy_from_slice(&embedded[b * (tokens - 1) * width..][..(tokens - 1) * width]);
            seq.iter_mut().zip(&self.positions).for_each(|(x, pos)| *x += pos);
        });
        self.pre_norm.apply_in_place(&mut xs);
        let class_rows: Vec<usize> = (0..batch).map(|b| b * tokens).collect();
        let mut pooled = self.encoder.forward(xs, width, tokens, false, &class_rows);
        self.post_norm.apply_in_place(&mut pooled);
        pooled
    }
}

/// The text tower: token + position embeddings → causal encoder → final norm of each
/// sequence's pooled (end-of-text) token.
pub(super) struct TextTower {
    pub(super) token_embedding: Vec<f32>,
    pub(super) positions: Vec<f32>,
    pub(super) encoder: Encoder,
    pub(super) final_norm: Norm,
    pub(super) width: usize,
}

impl TextTower {
    /// Pooled outputs (sequences × hidden) of `tokens` (sequences × length, padded), the
    /// pooled token of each sequence at `pooled[i]`.
    pub(super) fn forward(&self, tokens: &[u32], length: usize, pooled: &[usize]) -> Vec<f32> {
        let width = self.width;
        let mut xs = vec![0f32; tokens.len() * width];
        xs.par_chunks_mut(width).zip(tokens.par_iter()).enumerate().for_each(|(i, (row, &id))| {
            let token = &self.token_embedding[id as usize * width..][..width];
            let position = &self.positions[(i % length) * width..][..width];
            row.iter_mut().zip(token.iter().zip(position)).for_each(|(x, (t, p))| *x = t + p);
        });
        let rows: Vec<usize> = pooled.iter().enumerate().map(|(s, &at)| s * length + at).collect();
        let mut out = self.encoder.forward(xs, width, length, true, &rows);
        self.final_norm.apply_in_place(&mut out);
        out
    }
}

/// Projects pooled rows into the joint space (no bias).
pub(super) fn project(projection: &Dense, pooled: &[f32]) -> Vec<f32> {
    let rows = pooled.len() / projection.inputs;
    let mut out = vec![0f32; rows * projection.outputs];
    projection.matmul(pooled, &mut out, false);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// x·Wᵀ + b the slow way.
    fn reference(weight: &[f32], bias: &[f32], x: &[f32]) -> Vec<f32> {
        let (k, n) = (weight.len() / bias.len(), bias.len());
        x.chunks(k)
            .flat_map(|row| (0..n).map(move |o| bias[o] + (0..k).map(|i| row[i] * weight[o * k + i]).sum::<f32>()))
            .collect()
    }

    #[test]
    fn dense_layers_split_by_rows_or_by_columns_match_the_plain_product_on_every_kernel() {
        let values = |count: usize, seed: usize| {
            (0..count).map(|i| (((i * 7919 + seed) % 1000) as f32 / 500.0) - 1.0).collect::<Vec<_>>()
        };
        // 37 outputs: column blocks of 32 and 5; 3 rows: by columns; 90 rows: by rows.
        let (inputs, outputs) = (19, 37);
        let (weight, bias) = (values(inputs * outputs, 1), values(outputs, 2));
        let pool = rayon::ThreadPoolBuilder::new().num_threads(2).build().unwrap();
        let mut kernels = vec![(CpuKernel::Gemm, 1e-4)];
        kernels.extend(CpuKernel::select(false).filter(|k| *k != CpuKernel::Gemm).map(|k| (k, 1e-4)));
        // bfloat16 inputs: 19 products each off by up to 2⁻⁷ relative.
        kernels.extend(CpuKernel::select(true).map(|k| (k, 19.0 * 2f32.powi(-7))));
        for (kernel, tolerance) in kernels {
            let layer = Dense { weight: weight.clone(), packed: None, bias: Some(bias.clone()), inputs, outputs }
                .packed_for(kernel);
            for rows in [1, 3, 90] {
                let x = values(rows * inputs, rows);
                let mut out = vec![0.0; rows * outputs];
                pool.install(|| layer.forward(&x, &mut out));
                for (got, want) in out.iter().zip(reference(&weight, &bias, &x)) {
                    assert!((got - want).abs() < tolerance, "{kernel:?}, {rows} rows: {got} vs {want}");
                }
            }
        }
    }
}
