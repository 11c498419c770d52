//! CLIP's two towers on candle, weight names as in Hugging Face's `CLIPModel`.
//!
//! Both towers are pre-norm transformers; text attends causally and pools the end-of-text
//! token, vision prepends a class token to the patch embeddings and pools it. Each tower
//! ends with a bias-free projection into the joint space; [`ClipModel::embed_images`] and
//! [`ClipModel::embed_texts`] L2-normalise the result.

use candle_core::{D, DType, Device, IndexOp, Module, Tensor};
use candle_nn::{Conv2d, Conv2dConfig, Embedding, LayerNorm, Linear, VarBuilder};

use super::config::{Activation, ClipConfig, TextConfig, VisionConfig};
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
        let padded: Vec<u32> = ids
            .iter()
            .flat_map(|row| row.iter().copied().chain(std::iter::repeat_n(self.eos_token_id, n - row.len())))
            .collect();
        let tokens = Tensor::from_vec(padded, (ids.len(), n), device)?;
        let positions = self.position_embedding.i(..n)?;
        let xs = self.token_embedding.forward(&tokens)?.broadcast_add(&positions)?;
        let causal: Vec<f32> =
            (0..n).flat_map(|i| (0..n).map(move |j| if j > i { f32::NEG_INFINITY } else { 0.0 })).collect();
        let mask = Tensor::from_vec(causal, (n, n), device)?.to_dtype(xs.dtype())?;
        let xs = self.final_norm.forward(&self.encoder.forward(&xs, Some(&mask))?)?;
        let pooled: Vec<Tensor> = ids
            .iter()
            .enumerate()
            .map(|(row, tokens)| Ok(xs.i((row, self.pooled_position(tokens)))?))
            .collect::<Result<_>>()?;
        Ok(Tensor::stack(&pooled, 0)?)
    }

    /// Where the end-of-text token is: its first occurrence, or for legacy configs
    /// (eos id 2) the largest id, which is CLIP's end-of-text token.
    fn pooled_position(&self, tokens: &[u32]) -> usize {
        let last = tokens.len().saturating_sub(1);
        if self.eos_token_id == 2 {
            // The first maximum, as torch.argmax returns.
            let max = tokens.iter().copied().max().unwrap_or(0);
            tokens.iter().position(|&t| t == max).unwrap_or(last)
        } else {
            tokens.iter().position(|&t| t == self.eos_token_id).unwrap_or(last)
        }
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

/// A loaded CLIP model.
pub struct ClipModel {
    text: TextTower,
    vision: VisionTower,
    text_projection: Linear,
    visual_projection: Linear,
    config: ClipConfig,
    device: Device,
}

impl ClipModel {
    /// Builds the model from weights in HF's `CLIPModel` naming.
    pub fn new(vb: VarBuilder, config: &ClipConfig) -> Result<Self> {
        let (t, v, p) = (&config.text_config, &config.vision_config, config.projection_dim);
        Ok(ClipModel {
            text: TextTower::new(vb.pp("text_model"), t)?,
            vision: VisionTower::new(vb.pp("vision_model"), v)?,
            text_projection: candle_nn::linear_no_bias(t.hidden_size, p, vb.pp("text_projection"))?,
            visual_projection: candle_nn::linear_no_bias(v.hidden_size, p, vb.pp("visual_projection"))?,
            config: config.clone(),
            device: vb.device().clone(),
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
        let pixels = pixels.to_device(&self.device)?.to_dtype(self.dtype())?;
        Ok(self.visual_projection.forward(&self.vision.forward(&pixels)?)?)
    }

    /// Projected, not normalised, text features of token id sequences (each starting
    /// with the start token and holding an end-of-text token): HF's `get_text_features`.
    pub fn text_features(&self, ids: &[Vec<u32>]) -> Result<Tensor> {
        Ok(self.text_projection.forward(&self.text.forward(ids, &self.device)?)?)
    }

    /// L2-normalised image embeddings, as f32 on the CPU.
    pub fn embed_images(&self, pixels: &Tensor) -> Result<Vec<Vec<f32>>> {
        normalized_rows(&self.image_features(pixels)?)
    }

    /// L2-normalised text embeddings, as f32 on the CPU.
    pub fn embed_texts(&self, ids: &[Vec<u32>]) -> Result<Vec<Vec<f32>>> {
        normalized_rows(&self.text_features(ids)?)
    }

    fn dtype(&self) -> DType {
        self.text.position_embedding.dtype()
    }
}

/// Rows of `features` divided by their L2 norms (computed in f32).
fn normalized_rows(features: &Tensor) -> Result<Vec<Vec<f32>>> {
    let features = features.to_dtype(DType::F32)?.to_device(&Device::Cpu)?;
    let norms = features.sqr()?.sum_keepdim(D::Minus1)?.sqrt()?;
    Ok(features.broadcast_div(&norms)?.to_vec2::<f32>()?)
}
