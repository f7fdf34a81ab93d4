//! Transformer model description, normalised from Hugging Face `config.json` files or presets.
//!
//! [`ModelConfig`] is architecture-neutral: everything the graph builder needs to know about a
//! model's shapes, with no per-family special cases left for later stages to rediscover.

mod hf;
mod presets;

pub use hf::from_hf_json;
pub use presets::{preset, PRESET_NAMES};

use serde::{Deserialize, Serialize};

/// Model families Tessera can import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Architecture {
    /// LLaMA 1/2/3 (RMSNorm, rotary, SwiGLU, optional GQA).
    Llama,
    /// Mistral (as LLaMA, with GQA and sliding-window attention).
    Mistral,
    /// Mixtral (Mistral with a mixture-of-experts FFN).
    Mixtral,
    /// OPT (LayerNorm, learned positions, ReLU FFN).
    Opt,
    /// GPT-2 (LayerNorm, learned positions, GELU FFN, fused QKV).
    Gpt2,
    /// BERT encoder (post-norm, learned positions, token types, pooler).
    Bert,
    /// Vision Transformer encoder (patch embedding, class token, classifier head).
    Vit,
}

/// Point-wise nonlinearity of the FFN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Activation {
    /// SiLU / swish.
    Silu,
    /// GELU (exact or tanh approximation; same cost class).
    Gelu,
    /// ReLU.
    Relu,
}

/// Normalisation layer kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NormKind {
    /// LayerNorm with weight and bias.
    LayerNorm,
    /// RMSNorm with weight only.
    RmsNorm,
}

/// How token positions enter the model.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "kind")]
pub enum Positions {
    /// Rotary embeddings applied to Q and K (no parameters).
    Rotary {
        /// Rotary base frequency.
        theta: f64,
    },
    /// A learned table of `table_rows` position vectors (OPT keeps 2 extra rows).
    Learned {
        /// Rows in the position table.
        table_rows: u64,
    },
}

/// Mixture-of-experts FFN.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Moe {
    /// Experts per layer.
    pub experts: u32,
    /// Experts each token is routed to.
    pub top_k: u32,
}

/// Image input of a vision transformer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct VisionInput {
    /// Image side in pixels.
    pub image_size: u64,
    /// Patch side in pixels.
    pub patch_size: u64,
    /// Input channels.
    pub channels: u64,
}

impl VisionInput {
    /// Patches per image (excluding the class token).
    pub fn patches(&self) -> u64 {
        (self.image_size / self.patch_size).pow(2)
    }
}

/// A transformer, normalised. All dimensions are element counts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelConfig {
    /// Display name (preset name or the file it came from).
    pub name: String,
    /// Family it was imported as.
    pub architecture: Architecture,
    /// Decoder/encoder blocks.
    pub layers: u32,
    /// Model (residual stream) width.
    pub hidden: u64,
    /// Query heads.
    pub heads: u32,
    /// Key/value heads (`< heads` for grouped-query attention).
    pub kv_heads: u32,
    /// Width of one head.
    pub head_dim: u64,
    /// FFN inner width (per expert for MoE).
    pub ffn_hidden: u64,
    /// FFN nonlinearity.
    pub activation: Activation,
    /// Gated FFN (SwiGLU-style: gate and up projections, then down).
    pub gated_ffn: bool,
    /// Normalisation kind.
    pub norm: NormKind,
    /// Pre-norm (norm before attention/FFN) or post-norm (BERT).
    pub pre_norm: bool,
    /// A final norm after the last block (pre-norm models).
    pub final_norm: bool,
    /// A LayerNorm right after the embeddings (BERT).
    pub embedding_norm: bool,
    /// Vocabulary size (0 for vision models).
    pub vocab: u64,
    /// Longest context the model was trained for.
    pub max_positions: u64,
    /// Position encoding.
    pub positions: Positions,
    /// Token-type (segment) embedding rows (BERT: 2, others 0).
    pub token_types: u64,
    /// Q/K/V projections carry a bias.
    pub qkv_bias: bool,
    /// The attention output projection carries a bias.
    pub out_bias: bool,
    /// FFN projections carry a bias.
    pub ffn_bias: bool,
    /// Causal (decoder) attention; false for encoders.
    pub causal: bool,
    /// Sliding attention window, if any (Mistral).
    pub sliding_window: Option<u64>,
    /// The LM head shares the embedding table (no extra parameters).
    pub tied_embeddings: bool,
    /// Output head: LM head over the vocabulary, pooler, or classifier.
    pub head: OutputHead,
    /// Mixture of experts, if the FFN is one.
    pub moe: Option<Moe>,
    /// Image input, for vision models.
    pub vision: Option<VisionInput>,
}

/// What sits on top of the last block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind")]
pub enum OutputHead {
    /// Projection to vocabulary logits (decoders).
    LmHead,
    /// BERT pooler: dense + tanh on the first token.
    Pooler,
    /// Classifier on the class token with `classes` outputs (ViT).
    Classifier {
        /// Output classes.
        classes: u64,
    },
}

impl ModelConfig {
    /// Total query width (`heads * head_dim`).
    pub fn q_width(&self) -> u64 {
        self.heads as u64 * self.head_dim
    }
    /// Total key (and value) width (`kv_heads * head_dim`).
    pub fn kv_width(&self) -> u64 {
        self.kv_heads as u64 * self.head_dim
    }
    /// Whether this model generates tokens autoregressively (has a decode phase).
    pub fn is_decoder(&self) -> bool {
        self.causal && self.head == OutputHead::LmHead
    }
}
