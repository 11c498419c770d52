//! CLIP's `config.json` as Hugging Face writes it, with HF's defaults for missing keys, so
//! any CLIP checkpoint in HF layout loads (ViT-B/32, B/16, L/14, … and tiny test models).

use std::path::Path;

use serde::Deserialize;

use crate::error::{EmbedError, Result};

/// The activation between a transformer block's two MLP layers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
pub enum Activation {
    /// x · σ(1.702 x), OpenAI CLIP's original.
    #[serde(rename = "quick_gelu")]
    QuickGelu,
    /// The exact (erf) GELU.
    #[serde(rename = "gelu")]
    Gelu,
    /// The tanh approximation of GELU.
    #[serde(rename = "gelu_new", alias = "gelu_pytorch_tanh")]
    GeluTanh,
}

/// The text tower's shape.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct TextConfig {
    /// Tokens in the vocabulary.
    pub vocab_size: usize,
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of each MLP's hidden layer.
    pub intermediate_size: usize,
    /// Transformer blocks.
    pub num_hidden_layers: usize,
    /// Attention heads per block.
    pub num_attention_heads: usize,
    /// Context length (77 for every OpenAI CLIP).
    pub max_position_embeddings: usize,
    /// The MLP activation.
    pub hidden_act: Activation,
    /// ε of every layer norm.
    pub layer_norm_eps: f64,
    /// The end-of-text token. Configs written before transformers 4.31 say 2 here; the
    /// pooled token is then found as the position of the largest id, as HF does.
    pub eos_token_id: u32,
}

impl Default for TextConfig {
    fn default() -> Self {
        TextConfig {
            vocab_size: 49408,
            hidden_size: 512,
            intermediate_size: 2048,
            num_hidden_layers: 12,
            num_attention_heads: 8,
            max_position_embeddings: 77,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
            eos_token_id: 49407,
        }
    }
}

/// The vision tower's shape.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct VisionConfig {
    /// Width of the residual stream.
    pub hidden_size: usize,
    /// Width of each MLP's hidden layer.
    pub intermediate_size: usize,
    /// Transformer blocks.
    pub num_hidden_layers: usize,
    /// Attention heads per block.
    pub num_attention_heads: usize,
    /// Input side in pixels.
    pub image_size: usize,
    /// Patch side in pixels.
    pub patch_size: usize,
    /// Input channels.
    pub num_channels: usize,
    /// The MLP activation.
    pub hidden_act: Activation,
    /// ε of every layer norm.
    pub layer_norm_eps: f64,
}

impl Default for VisionConfig {
    fn default() -> Self {
        VisionConfig {
            hidden_size: 768,
            intermediate_size: 3072,
            num_hidden_layers: 12,
            num_attention_heads: 12,
            image_size: 224,
            patch_size: 32,
            num_channels: 3,
            hidden_act: Activation::QuickGelu,
            layer_norm_eps: 1e-5,
        }
    }
}

/// A whole CLIP model: both towers and the shared embedding width.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(default)]
pub struct ClipConfig {
    /// The text tower.
    pub text_config: TextConfig,
    /// The vision tower.
    pub vision_config: VisionConfig,
    /// Dimension of the joint embedding space.
    pub projection_dim: usize,
}

impl Default for ClipConfig {
    fn default() -> Self {
        ClipConfig { text_config: TextConfig::default(), vision_config: VisionConfig::default(), projection_dim: 512 }
    }
}

impl ClipConfig {
    /// Reads and checks `config.json`.
    pub fn from_file(path: &Path) -> Result<Self> {
        let bad = |message: String| EmbedError::Model { path: path.to_path_buf(), message };
        let text = std::fs::read_to_string(path).map_err(|e| bad(format!("reading: {e}")))?;
        let config: ClipConfig = serde_json::from_str(&text).map_err(|e| bad(format!("not a CLIP config: {e}")))?;
        config.check().map_err(bad)?;
        Ok(config)
    }

    fn check(&self) -> std::result::Result<(), String> {
        let (t, v) = (&self.text_config, &self.vision_config);
        for (tower, hidden, heads) in
            [("text", t.hidden_size, t.num_attention_heads), ("vision", v.hidden_size, v.num_attention_heads)]
        {
            if heads == 0 || hidden % heads != 0 {
                return Err(format!("{tower} hidden_size {hidden} is not a multiple of its {heads} attention heads"));
            }
        }
        if v.patch_size == 0 || v.image_size % v.patch_size != 0 {
            return Err(format!("image_size {} is not a multiple of patch_size {}", v.image_size, v.patch_size));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_keys_take_hf_defaults() {
        let c: ClipConfig =
            serde_json::from_str(r#"{"text_config": {"eos_token_id": 2}, "vision_config": {"patch_size": 16}}"#)
                .unwrap();
        assert_eq!(c.text_config.hidden_size, 512);
        assert_eq!(c.text_config.eos_token_id, 2);
        assert_eq!(c.vision_config.patch_size, 16);
        assert_eq!(c.projection_dim, 512);
        assert!(c.check().is_ok());
    }

    #[test]
    fn inconsistent_shapes_are_refused() {
        let c: ClipConfig =
            serde_json::from_str(r#"{"vision_config": {"hidden_size": 100, "num_attention_heads": 12}}"#).unwrap();
        assert!(c.check().unwrap_err().contains("not a multiple"));
    }
}
