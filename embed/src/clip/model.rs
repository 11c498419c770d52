//! CLIP's two towers on candle, weight names as in Hugging Face's `CLIPModel`.
//!
//! Both towers are pre-norm transformers; text attends causally and pools the end-of-text
//! token, vision prepends a class token to the patch embeddings and pools it. Each tower
//! ends with a bias-free projection into the joint space; [`ClipModel::embed_images`] and
//! [`ClipModel::embed_texts`] L2-normalise the result.

use candle_core::{D, DType, Device, IndexOp, Module, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Embedding, LayerNorm, Linear, VarBuilder};

use super::config::{Activation, ClipConfig, TextConfig, VisionConfig};
use super::cpu::{self, CpuKernel, values};
use crate::error::Result;

/// One transformer block's multi-head self-attention.
struct Attention {
    q: Linear,
    k: Linear,
    v: Linear,
    out: Linear,
    heads: usize,
    scale: f64,
}

impl Attention {
    fn new(vb: VarBuilder, hidden: usize, heads: usize) -> Result<Self> {
        Ok(Attention {
            q: candle_nn::linear(hidden, hidden, vb.pp("q_proj"))?,
            k: candle_nn::linear(hidden, hidden, vb.pp("k_proj"))?,
            v: candle_nn::linear(hidden, hidden, vb.pp("v_proj"))?,
            out: candle_nn::linear(hidden, hidden, vb.pp("out_proj"))?,
            heads,
            scale: ((hidden / heads) as f64).powf(-0.5),
        })
    }

    /// `xs`: (batch, tokens, hidden); `mask`: added to the scores, (tokens, tokens).
    fn forward(&self, xs: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let (b, n, hidden) = xs.dims3()?;
        let head_dim = hidden / self.heads;
        let split = |t: Tensor| -> Result<Tensor> {
            Ok(t.reshape((b, n, self.heads, head_dim))?.transpose(1, 2)?.contiguous()?)
        };
        let q = split((self.q.forward(xs)? * self.scale)?)?;
        let k = split(self.k.forward(xs)?)?;
        let v = split(self.v.forward(xs)?)?;
        let mut scores = q.matmul(&k.t()?)?;
        if let Some(mask) = mask {
            scores = scores.broadcast_add(mask)?;
        }
        let weights = candle_nn::ops::softmax_last_dim(&scores)?;
        let context = weights.matmul(&v)?.transpose(1, 2)?.reshape((b, n, hidden))?;
        Ok(self.out.forward(&context)?)
    }
}

/// fc1 → activation → fc2.
struct Mlp {
    fc1: Linear,
    fc2: Linear,
    activation: Activation,
}

impl Mlp {
    fn new(vb: VarBuilder, hidden: usize, intermediate: usize, activation: Activation) -> Result<Self> {
        Ok(Mlp {
            fc1: candle_nn::linear(hidden, intermediate, vb.pp("fc1"))?,
            fc2: candle_nn::linear(intermediate, hidden, vb.pp("fc2"))?,
            activation,
        })
    }

    fn forward(&self, xs: &Tensor) -> Result<Tensor> {
        let xs = self.fc1.forward(xs)?;
        let xs = match self.activation {
            Activation::QuickGelu => (&xs * candle_nn::ops::sigmoid(&(&xs * 1.702)?)?)?,
            Activation::Gelu => xs.gelu_erf()?,
            Activation::GeluTanh => xs.gelu()?,
        };
        Ok(self.fc2.forward(&xs)?)
    }
}

/// Pre-norm block: x + attn(ln1(x)), then x + mlp(ln2(x)).
struct Block {
    ln1: LayerNorm,
    attention: Attention,
    ln2: LayerNorm,
    mlp: Mlp,
}

/// The shape both towers share.
struct EncoderShape {
    hidden: usize,
    intermediate: usize,
    layers: usize,
    heads: usize,
    activation: Activation,
    eps: f64,
}

/// A stack of blocks (`encoder.layers.<i>`).
struct Encoder {
    blocks: Vec<Block>,
}

impl Encoder {
    fn new(vb: VarBuilder, s: &EncoderShape) -> Result<Self> {
        let blocks = (0..s.layers)
            .map(|i| {
                let vb = vb.pp(format!("layers.{i}"));
                Ok(Block {
                    ln1: candle_nn::layer_norm(s.hidden, s.eps, vb.pp("layer_norm1"))?,
                    attention: Attention::new(vb.pp("self_attn"), s.hidden, s.heads)?,
                    ln2: candle_nn::layer_norm(s.hidden, s.eps, vb.pp("layer_norm2"))?,
                    mlp: Mlp::new(vb.pp("mlp"), s.hidden, s.intermediate, s.activation)?,
                })
            })
            .collect::<Result<_>>()?;
        Ok(Encoder { blocks })
    }

    fn forward(&self, xs: &Tensor, mask: Option<&Tensor>) -> Result<Tensor> {
        let mut xs = xs.clone();
        for block in &self.blocks {
            let attended = block.attention.forward(&block.ln1.forward(&xs)?, mask)?;
            xs = (xs + attended)?;
            let transformed = block.mlp.forward(&block.ln2.forward(&xs)?)?;
            xs = (xs + transformed)?;
        }
        Ok(xs)
    }
}

/// The text tower (`text_model.*`).
struct TextTower {
    token_embedding: Embedding,
    position_embedding: Tensor,
    encoder: Encoder,
    final_norm: LayerNorm,
    eos_token_id: u32,
}

impl TextTower {
    fn new(vb: VarBuilder, c: &TextConfig) -> Result<Self> {
        let shape = EncoderShape {
            hidden: c.hidden_size,
            intermediate: c.intermediate_size,
            layers: c.num_hidden_layers,
            heads: c.num_attention_heads,
            activation: c.hidden_act,
            eps: c.layer_norm_eps,
        };
        let embeddings = vb.pp("embeddings");
        Ok(TextTower {
            token_embedding: candle_nn::embedding(c.vocab_size, c.hidden_size, embeddings.pp("token_embedding"))?,
            position_embedding: embeddings
                .get((c.max_position_embeddings, c.hidden_size), "position_embedding.weight")?,
            encoder: Encoder::new(vb.pp("encoder"), &shape)?,
            final_norm: candle_nn::layer_norm(c.hidden_size, c.layer_norm_eps, vb.pp("final_layer_norm"))?,
            eos_token_id: c.eos_token_id,
        })
    }

    /// Pooled outputs (batch, hidden) of token sequences padded to one length. Causal
    /// attention means padding after the end-of-text token changes nothing before it.
    fn forward(&self, ids: &[Vec<u32>], device: &Device) -> Result<Tensor> {
        let n = ids.iter().map(Vec::len).max().unwrap_or(0);
        let tokens = Tensor::from_vec(padded(ids, n, self.eos_token_id), (ids.len(), n), device)?;
        let positions = self.position_embedding.i(..n)?;
        let xs = self.token_embedding.forward(&tokens)?.broadcast_add(&positions)?;
        let causal: Vec<f32> =
            (0..n).flat_map(|i| (0..n).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })).collect();
        let mask = Tensor::from_vec(causal, (n, n), device)?.to_dtype(xs.dtype())?;
        let xs = self.final_norm.forward(&self.encoder.forward(&xs, Some(&mask))?)?;
        let pooled: Vec<Tensor> = ids
            .iter()
            .enumerate()
            .map(|(row, tokens)| Ok(xs.i((row, pooled_position(tokens, self.eos_token_id)))?))
            .collect::<Result<_>>()?;
        Ok(Tensor::stack(&pooled, 0)?)
    }
}

/// The vision tower (`vision_model.*`).
struct VisionTower {
    patch_embedding: Conv2d,
    class_embedding: Tensor,
    position_embedding: Tensor,
    pre_norm: LayerNorm,
    encoder: Encoder,
    post_norm: LayerNorm,
}

impl VisionTower {
    fn new(vb: VarBuilder, c: &VisionConfig) -> Result<Self> {
        let shape = EncoderShape {
            hidden: c.hidden_size,
            intermediate: c.intermediate_size,
            layers: c.num_hidden_layers,
            heads: c.num_attention_heads,
            activation: c.hidden_act,
            eps: c.layer_norm_eps,
        };
        let embeddings = vb.pp("embeddings");
        let patches = (c.image_size / c.patch_size).pow(2);
        let conv = Conv2dConfig { stride: c.patch_size, ..Default::default() };
        Ok(VisionTower {
            patch_embedding: candle_nn::conv2d_no_bias(
                c.num_channels,
                c.hidden_size,
                c.patch_size,
                conv,
                embeddings.pp("patch_embedding"),
            )?,
            class_embedding: embeddings.get(c.hidden_size, "class_embedding")?,
            position_embedding: embeddings.get((patches + 1, c.hidden_size), "position_embedding.weight")?,
            // "pre_layrnorm" is how HF spells it.
            pre_norm: candle_nn::layer_norm(c.hidden_size, c.layer_norm_eps, vb.pp("pre_layrnorm"))?,
            encoder: Encoder::new(vb.pp("encoder"), &shape)?,
            post_norm: candle_nn::layer_norm(c.hidden_size, c.layer_norm_eps, vb.pp("post_layernorm"))?,
        })
    }

    /// Pooled outputs (batch, hidden) of preprocessed images (batch, channels, side, side).
    fn forward(&self, pixels: &Tensor) -> Result<Tensor> {
        let patches = self.patch_embedding.forward(pixels)?; // (b, hidden, g, g)
        let (b, hidden, _, _) = patches.dims4()?;
        let patches = patches.flatten_from(2)?.transpose(1, 2)?; // (b, g·g, hidden)
        let class = self.class_embedding.reshape((1, 1, hidden))?.broadcast_as((b, 1, hidden))?;
        let xs = Tensor::cat(&[&class, &patches], 1)?.broadcast_add(&self.position_embedding)?;
        let xs = self.encoder.forward(&self.pre_norm.forward(&xs)?, None)?;
        Ok(self.post_norm.forward(&xs.i((.., 0))?)?)
    }
}

/// candle's layers: any device, any dtype.
struct CandleTowers {
    text: TextTower,
    vision: VisionTower,
    text_projection: Linear,
    visual_projection: Linear,
}

/// The same weights on plain f32 buffers with fused passes (see `cpu.rs`).
struct CpuTowers {
    kernel: CpuKernel,
    text: cpu::TextTower,
    vision: cpu::VisionTower,
    text_projection: cpu::Dense,
    visual_projection: cpu::Dense,
}

/// How a model runs its towers.
enum Towers {
    Candle(Box<CandleTowers>),
    Cpu(Box<CpuTowers>),
}

/// A loaded CLIP model.
pub struct ClipModel {
    towers: Towers,
    config: ClipConfig,
    device: Device,
    dtype: DType,
}

impl ClipModel {
    /// Builds the model from weights in HF's `CLIPModel` naming. f32 on the CPU runs on
    /// slicetest's own fused kernels (about twice as fast as through candle), and so does
    /// bf16 on a CPU with a bf16 kernel ([`CpuKernel::select`]); anything else through
    /// candle's ops.
    pub fn new(vb: VarBuilder, config: &ClipConfig) -> Result<Self> {
        let kernel = match vb.dtype() {
            DType::F32 => CpuKernel::select(false),
            DType::BF16 => CpuKernel::select(true),
            _ => None,
        }
        .filter(|_| vb.device().is_cpu());
        match kernel {
            Some(kernel) => Self::with_cpu_kernel(vb, config, kernel),
            None => Self::with_candle_ops(vb, config),
        }
    }

    /// Builds the model on the CPU's fused path with the given dense-layer kernel (f32
    /// weights; bfloat16 kernels round them when packing): to compare kernels on one
    /// machine. Fails when this CPU cannot run `kernel`.
    pub fn with_cpu_kernel(vb: VarBuilder, config: &ClipConfig, kernel: CpuKernel) -> Result<Self> {
        if !kernel.runs_here() || !vb.device().is_cpu() {
            let cpu = crate::cpu::describe();
            return Err(
                candle_core::Error::Msg(format!("the {} kernel does not run here ({cpu})", kernel.name())).into()
            );
        }
        let mut model = Self::with_candle_ops(vb, config)?;
        if let Towers::Candle(towers) = &model.towers {
            model.towers = Towers::Cpu(Box::new(cpu_towers(towers, config, kernel)?));
        }
        Ok(model)
    }

    /// The GEMM the model's dense layers run on the CPU; `None` when it runs through
    /// candle's ops (a GPU, or [`ClipModel::with_candle_ops`]).
    pub fn cpu_kernel(&self) -> Option<CpuKernel> {
        match &self.towers {
            Towers::Cpu(t) => Some(t.kernel),
            Towers::Candle(_) => None,
        }
    }

    /// Builds the model to run every op through candle, also on the CPU: the path GPUs
    /// take, kept reachable on the CPU so tests can hold both to the reference.
    pub fn with_candle_ops(vb: VarBuilder, config: &ClipConfig) -> Result<Self> {
        let (t, v, p) = (&config.text_config, &config.vision_config, config.projection_dim);
        let towers = CandleTowers {
            text: TextTower::new(vb.pp("text_model"), t)?,
            vision: VisionTower::new(vb.pp("vision_model"), v)?,
            text_projection: candle_nn::linear_no_bias(t.hidden_size, p, vb.pp("text_projection"))?,
            visual_projection: candle_nn::linear_no_bias(v.hidden_size, p, vb.pp("visual_projection"))?,
        };
        Ok(ClipModel {
            towers: Towers::Candle(Box::new(towers)),
            config: config.clone(),
            device: vb.device().clone(),
            dtype: vb.dtype(),
        })
    }

    /// The model's configuration.
    pub fn config(&self) -> &ClipConfig {
        &self.config
    }

    /// The device the weights live on.
    pub fn device(&self) -> &Device {
        &self.device
    }

    /// Projected, not normalised, image features (batch, projection_dim) of preprocessed
    /// pixels (batch, 3, side, side): HF's `get_image_features`.
    pub fn image_features(&self, pixels: &Tensor) -> Result<Tensor> {
        match &self.towers {
            Towers::Candle(t) => {
                let pixels = pixels.to_device(&self.device)?.to_dtype(self.dtype)?;
                Ok(t.visual_projection.forward(&t.vision.forward(&pixels)?)?)
            }
            Towers::Cpu(t) => {
                let (batch, channels, side, width) = pixels.dims4()?;
                let v = &self.config.vision_config;
                if channels != v.num_channels || side != v.image_size || width != side {
                    return Err(candle_core::Error::Msg(format!(
                        "pixels are {channels} x {side} x {width}; the model takes {} x {} x {}",
                        v.num_channels, v.image_size, v.image_size
                    ))
                    .into());
                }
                let values = pixels.to_dtype(DType::F32)?.flatten_all()?.to_vec1::<f32>()?;
                let pooled = t.vision.forward(&values, batch, side);
                let features = cpu::project(&t.visual_projection, &pooled);
                Ok(Tensor::from_vec(features, (batch, self.config.projection_dim), &Device::Cpu)?)
            }
        }
    }

    /// Projected, not normalised, text features of token id sequences (each starting
    /// with the start token and holding an end-of-text token): HF's `get_text_features`.
    pub fn text_features(&self, ids: &[Vec<u32>]) -> Result<Tensor> {
        match &self.towers {
            Towers::Candle(t) => Ok(t.text_projection.forward(&t.text.forward(ids, &self.device)?)?),
            Towers::Cpu(t) => {
                let c = &self.config.text_config;
                let length = ids.iter().map(Vec::len).max().unwrap_or(0);
                if length > c.max_position_embeddings {
                    return Err(candle_core::Error::Msg(format!(
                        "{length} tokens; the model takes at most {}",
                        c.max_position_embeddings
                    ))
                    .into());
                }
                if let Some(bad) = ids.iter().flatten().find(|&&id| id as usize >= c.vocab_size) {
                    return Err(candle_core::Error::Msg(format!(
                        "token id {bad} is outside the vocabulary of {}",
                        c.vocab_size
                    ))
                    .into());
                }
                let tokens = padded(ids, length, c.eos_token_id);
                let pooled: Vec<usize> = ids.iter().map(|row| pooled_position(row, c.eos_token_id)).collect();
                let pooled = t.text.forward(&tokens, length, &pooled);
                let features = cpu::project(&t.text_projection, &pooled);
                Ok(Tensor::from_vec(features, (ids.len(), self.config.projection_dim), &Device::Cpu)?)
            }
        }
    }

    /// L2-normalised image embeddings, as f32 on the CPU.
    pub fn embed_images(&self, pixels: &Tensor) -> Result<Vec<Vec<f32>>> {
        normalized_rows(&self.image_features(pixels)?)
    }

    /// L2-normalised text embeddings, as f32 on the CPU.
    pub fn embed_texts(&self, ids: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        normalized_rows(&self.text_features(ids)?)
    }
}

/// The candle towers' weights, copied onto plain buffers.
fn cpu_towers(t: &CandleTowers, config: &ClipConfig, kernel: CpuKernel) -> Result<CpuTowers> {
    let (tc, vc) = (&config.text_config, &config.vision_config);
    let vision = &t.vision;
    let (hidden, patch) = (vc.hidden_size, vc.patch_size);
    let patch_weight = vision.patch_embedding.weight().reshape((hidden, vc.num_channels * patch * patch))?;
    Ok(CpuTowers {
        kernel,
        text: cpu::TextTower {
            token_embedding: values(t.text.token_embedding.embeddings())?,
            positions: values(&t.text.position_embedding)?,
            encoder: cpu_encoder(&t.text.encoder, tc.num_attention_heads, tc.hidden_act, tc.layer_norm_eps, kernel)?,
            final_norm: cpu::Norm::from_layer_norm(&t.text.final_norm, tc.layer_norm_eps)?,
            width: tc.hidden_size,
        },
        vision: cpu::VisionTower {
            patch: cpu::Dense::from_linear(&Linear::new(patch_weight, None), kernel)?,
            class: values(&vision.class_embedding)?,
            positions: values(&vision.position_embedding)?,
            pre_norm: cpu::Norm::from_layer_norm(&vision.pre_norm, vc.layer_norm_eps)?,
            encoder: cpu_encoder(&vision.encoder, vc.num_attention_heads, vc.hidden_act, vc.layer_norm_eps, kernel)?,
            post_norm: cpu::Norm::from_layer_norm(&vision.post_norm, vc.layer_norm_eps)?,
            patch_size: patch,
            channels: vc.num_channels,
        },
        text_projection: cpu::Dense::from_linear(&t.text_projection, kernel)?,
        visual_projection: cpu::Dense::from_linear(&t.visual_projection, kernel)?,
    })
}

fn cpu_encoder(
    encoder: &Encoder,
    heads: usize,
    activation: Activation,
    eps: f64,
    kernel: CpuKernel,
) -> Result<cpu::Encoder> {
    let blocks = encoder
        .blocks
        .iter()
        .map(|b| {
            let a = &b.attention;
            let (fc1, fc2) = (&b.mlp.fc1, &b.mlp.fc2);
            cpu::Block::new((&b.ln1, &b.ln2), eps, &a.q, &a.k, &a.v, &a.out, fc1, fc2, a.scale as f32, kernel)
        })
        .collect::<Result<_>>()?;
    Ok(cpu::Encoder { blocks, heads, activation })
}

/// Token sequences padded with `pad` to `length`, row-major.
fn padded(ids: &[Vec<u32>], length: usize, pad: u32) -> Vec<u32> {
    ids.iter().flat_map(|row| row.iter().copied().chain(std::iter::repeat_n(pad, length - row.len()))).collect()
}

/// Where the end-of-text token is: its first occurrence, or for legacy configs (eos id
/// 2) the largest id, which is CLIP's end-of-text token.
fn pooled_position(tokens: &[u32], eos_token_id: u32) -> usize {
    let last = tokens.len().saturating_sub(1);
    if eos_token_id == 2 {
        // The first maximum, as torch.argmax returns.
        let max = tokens.iter().copied().max().unwrap_or(0);
        tokens.iter().position(|&t| t == max).unwrap_or(last)
    } else {
        tokens.iter().position(|&t| t == eos_token_id).unwrap_or(last)
    }
}

/// Rows of `features` divided by their L2 norms (computed in f32).
fn normalized_rows(features: &Tensor) -> Result<Vec<Vec<f32>>> {
    let features = features.to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
    let norms = features.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    Ok(features.broadcast_div(&norms)?.to_vec2::<f32>()?)
}

#[cfg(test)]
mod tests {
    use candle_nn::VarMap;

    use super::*;

    fn tiny(activation: Activation) -> ClipConfig {
        ClipConfig {
            text_config: TextConfig {
                vocab_size: 100,
                hidden_size: 32,
                intermediate_size: 64,
                num_hidden_layers: 2,
                num_attention_heads: 4,
                max_position_embeddings: 16,
                hidden_act: activation,
                layer_norm_eps: 1e-5,
                eos_token_id: 99,
            },
            vision_config: VisionConfig {
                hidden_size: 48,
                intermediate_size: 96,
                num_hidden_layers: 2,
                num_attention_heads: 4,
                image_size: 32,
                patch_size: 8,
                num_channels: 3,
                hidden_act: activation,
                layer_norm_eps: 1e-5,
            },
            projection_dim: 24,
        }
    }

    /// The same random weights run through candle's ops and through the fused CPU path.
    fn both(config: &ClipConfig) -> (ClipModel, ClipModel) {
        let varmap = VarMap::new();
        let vb = VarBuilder::from_varmap(&varmap, DType::F32, &Device::Cpu);
        let candle = ClipModel::with_candle_ops(vb.clone(), config).unwrap();
        // Every weight random (VarMap starts some at zero or one), shared by both models.
        for (i, var) in varmap.all_vars().iter().enumerate() {
            let random = Tensor::randn(0f32, 0.5, var.shape(), &Device::Cpu).unwrap();
            var.set(&((random + (i % 3) as f64 * 0.1).unwrap())).unwrap();
        }
        let fused = ClipModel::new(vb, config).unwrap();
        assert!(matches!(fused.towers, Towers::Cpu(_)) && matches!(candle.towers, Towers::Candle(_)));
        (candle, fused)
    }

    /// The candle model's weights on the fused CPU path with `kernel`.
    fn fused_with(candle: &ClipModel, kernel: CpuKernel) -> ClipModel {
        let Towers::Candle(t) = &candle.towers else { panic!("a candle model") };
        let towers = cpu_towers(t, &candle.config, kernel).unwrap();
        ClipModel {
            towers: Towers::Cpu(Box::new(towers)),
            config: candle.config.clone(),
            device: Device::Cpu,
            dtype: DType::F32,
        }
    }

    /// The f32 kernels this CPU runs: the `gemm` crate's always, slicetest's AVX-512 one
    /// where there is AVX-512.
    fn f32_kernels() -> Vec<CpuKernel> {
        let mut kernels = vec![CpuKernel::Gemm];
        kernels.extend(CpuKernel::select(false).filter(|k| *k != CpuKernel::Gemm));
        kernels
    }

    fn max_diff(a: &Tensor, b: &Tensor) -> f32 {
        (a - b).unwrap().abs().unwrap().flatten_all().unwrap().max(0).unwrap().to_scalar::<f32>().unwrap()
    }

    #[test]
    fn the_fused_cpu_path_equals_candle_for_every_activation_and_kernel() {
        for activation in [Activation::QuickGelu, Activation::Gelu, Activation::GeluTanh] {
            let config = tiny(activation);
            let (candle, _) = both(&config);
            for kernel in f32_kernels() {
                let fused = fused_with(&candle, kernel);
                let pixels = Tensor::randn(0f32, 1.0, (3, 3, 32, 32), &Device::Cpu).unwrap();
                let (a, b) = (candle.image_features(&pixels).unwrap(), fused.image_features(&pixels).unwrap());
                assert!(max_diff(&a, &b) <= 1e-4, "{activation:?} {kernel:?} images: {}", max_diff(&a, &b));
                // Unequal lengths: padded, pooled at each sequence's end-of-text token.
                let ids = vec![vec![98, 5, 7, 99], vec![98, 3, 99], vec![98, 1, 2, 3, 4, 5, 6, 99]];
                let (a, b) = (candle.text_features(&ids).unwrap(), fused.text_features(&ids).unwrap());
                assert!(max_diff(&a, &b) <= 1e-4, "{activation:?} {kernel:?} texts: {}", max_diff(&a, &b));
            }
        }
    }

    #[test]
    fn the_bf16_kernel_keeps_embeddings_close_to_f32_where_the_cpu_has_it() {
        let Some(bf16) = CpuKernel::select(true) else {
            eprintln!("skipped: this CPU has no bf16 kernel");
            return;
        };
        let (candle, _) = both(&tiny(Activation::QuickGelu));
        let fused = fused_with(&candle, bf16);
        let pixels = Tensor::randn(0f32, 1.0, (3, 3, 32, 32), &Device::Cpu).unwrap();
        let ids = vec![vec![98, 5, 7, 99], vec![98, 3, 99]];
        let cosines = |a: Vec<Vec<f32>>, b: Vec<Vec<f32>>| -> Vec<f32> {
            a.iter().zip(&b).map(|(a, b)| a.iter().zip(b).map(|(x, y)| x * y).sum()).collect()
        };
        let images = cosines(candle.embed_images(&pixels).unwrap(), fused.embed_images(&pixels).unwrap());
        let texts = cosines(candle.embed_texts(&ids).unwrap(), fused.embed_texts(&ids).unwrap());
        for cosine in images.iter().chain(&texts) {
            assert!(*cosine > 0.99, "bf16 vs f32 cosine {cosine} (images {images:?}, texts {texts:?})");
        }
        assert!(images.iter().chain(&texts).any(|c| *c < 1.0 - 1e-7), "bf16 changed nothing: not the bf16 kernel");
    }

    #[test]
    fn the_fused_path_refuses_what_the_model_cannot_take() {
        let (_, fused) = both(&tiny(Activation::QuickGelu));
        let wrong_side = Tensor::zeros((1, 3, 40, 40), DType::F32, &Device::Cpu).unwrap();
        assert!(fused.image_features(&wrong_side).unwrap_err().to_string().contains("takes 3 x 32 x 32"));
        let too_long = vec![vec![1; 17]];
        assert!(fused.text_features(&too_long).unwrap_err().to_string().contains("at most 16"));
        let unknown = vec![vec![98, 100, 99]];
        assert!(fused.text_features(&unknown).unwrap_err().to_string().contains("token id 100"));
        let empty = fused.image_features(&Tensor::zeros((0, 3, 32, 32), DType::F32, &Device::Cpu).unwrap()).unwrap();
        assert_eq!(empty.dims(), &[0, 24]);
    }
}
