//! Compression of a model: weight formats and sparsity per operator class, activation format,
//! KV-cache format and head-wise KV policy, MoE routing.
//!
//! The one formula for how many bytes an encoded weight matrix occupies lives here
//! ([`WeightCompression::encoded_bytes`]); the graph, the analytical model and the compiler call it.

mod parse;

pub use parse::{
    from_toml_str, from_toml_value, preset, preset_text, validate_for_model, PRESET_NAMES,
};

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Classes of weight-carrying operators that can be compressed differently.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum OpClass {
    /// Q, K, V and output projections.
    Attention,
    /// FFN projections (and MoE experts).
    Ffn,
    /// LM head, pooler and classifier.
    Head,
    /// Token, position and patch embeddings.
    Embedding,
    /// MoE router.
    Router,
}

impl OpClass {
    /// Every class, in a fixed order.
    pub const ALL: [OpClass; 5] = [
        OpClass::Attention,
        OpClass::Ffn,
        OpClass::Head,
        OpClass::Embedding,
        OpClass::Router,
    ];
}

/// Storage format of weight values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightFormat {
    /// Bits per value: 16 means fp16; 8, 4, 3, 2 mean integers.
    pub bits: u32,
    /// Values sharing one scale (and zero point); 0 means one scale per output row.
    pub group_size: u32,
    /// Symmetric quantisation (no zero point).
    pub symmetric: bool,
}

impl WeightFormat {
    /// Plain fp16 weights.
    pub const FP16: WeightFormat = WeightFormat {
        bits: 16,
        group_size: 0,
        symmetric: true,
    };

    /// Whether values are integers that need scales.
    pub fn is_quantised(&self) -> bool {
        self.bits < 16
    }
}

/// Which weights are kept.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", tag = "kind", deny_unknown_fields)]
pub enum Sparsity {
    /// Every weight kept.
    Dense,
    /// `n` of every `m` consecutive weights along the reduction dimension kept, with a
    /// `ceil(log2 m)`-bit index per kept value.
    #[serde(rename = "nm")]
    NM {
        /// Kept values per group.
        n: u32,
        /// Group length.
        m: u32,
    },
    /// Square blocks of `block` × `block` weights either kept whole or skipped; one bit per block.
    Block {
        /// Block side.
        block: u32,
        /// Fraction of blocks kept, in (0, 1].
        density: f64,
    },
    /// Unstructured: `density` of the weights kept, stored compressed with a one-bit-per-weight
    /// bitmap (loaded sparse, computed dense).
    Unstructured {
        /// Fraction of weights kept, in (0, 1].
        density: f64,
    },
}

impl Sparsity {
    /// Fraction of weight values that are stored and multiplied.
    pub fn density(&self) -> f64 {
        match *self {
            Sparsity::Dense => 1.0,
            Sparsity::NM { n, m } => n as f64 / m as f64,
            Sparsity::Block { density, .. } | Sparsity::Unstructured { density } => density,
        }
    }

    /// The reduction length the matrix engine computes for a reduction of `k`: block skipping
    /// removes the skipped blocks (`⌈k · density⌉`); N:M and unstructured sparsity compute every
    /// position (N:M multiplies only kept weights within it; unstructured weights are decompressed
    /// on load and computed dense).
    pub fn computed_reduction(&self, k: u64) -> u64 {
        match *self {
            Sparsity::Block { density, .. } => (k as f64 * density).ceil() as u64,
            Sparsity::Dense | Sparsity::NM { .. } | Sparsity::Unstructured { .. } => k,
        }
    }
}

/// Compression of one operator class's weights.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct WeightCompression {
    /// Value format.
    pub format: WeightFormat,
    /// Sparsity pattern.
    pub sparsity: Sparsity,
}

/// Bytes of an encoded weight matrix, split by what they hold.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WeightBytes {
    /// Kept weight values.
    pub values: u64,
    /// Sparse metadata: N:M indices, block bitmaps or the unstructured bitmap.
    pub metadata: u64,
    /// Quantisation scales and zero points (fp16 each).
    pub scales: u64,
}

impl WeightBytes {
    /// All bytes together.
    pub fn total(&self) -> u64 {
        self.values + self.metadata + self.scales
    }
}

impl std::ops::Add for WeightBytes {
    type Output = Self;
    fn add(self, o: Self) -> Self {
        Self {
            values: self.values + o.values,
            metadata: self.metadata + o.metadata,
            scales: self.scales + o.scales,
        }
    }
}

/// Bytes used for one quantisation scale or zero point (fp16).
pub const SCALE_BYTES: u64 = 2;

fn bits_to_bytes(bits: u64) -> u64 {
    bits.div_ceil(8)
}

impl WeightCompression {
    /// Uncompressed fp16.
    pub const FP16_DENSE: WeightCompression = WeightCompression {
        format: WeightFormat::FP16,
        sparsity: Sparsity::Dense,
    };

    /// Encoded bytes of a `rows` (output features) × `cols` (reduction) weight matrix.
    ///
    /// Kept values are `ceil(rows * cols * density)`; N:M stores a `ceil(log2 m)`-bit index per kept
    /// value; block sparsity one bit per block; unstructured one bit per weight. Quantised formats
    /// store one fp16 scale per group of `group_size` values along the reduction dimension (per row
    /// when 0), plus an fp16 zero point when asymmetric. Groups count dense positions, so scales do
    /// not shrink with sparsity.
    pub fn encoded_bytes(&self, rows: u64, cols: u64) -> WeightBytes {
        let elements = rows * cols;
        let kept = match self.sparsity {
            Sparsity::Dense => elements,
            Sparsity::NM { n, m } => rows * cols.div_ceil(m as u64) * n as u64,
            Sparsity::Block { density, .. } | Sparsity::Unstructured { density } => {
                (elements as f64 * density).ceil() as u64
            }
        };
        let values = bits_to_bytes(kept * self.format.bits as u64);
        let metadata = match self.sparsity {
            Sparsity::Dense => 0,
            Sparsity::NM { m, .. } => {
                let index_bits = (m as f64).log2().ceil() as u64;
                bits_to_bytes(kept * index_bits)
            }
            Sparsity::Block { block, .. } => {
                let b = block as u64;
                bits_to_bytes(rows.div_ceil(b) * cols.div_ceil(b))
            }
            Sparsity::Unstructured { .. } => bits_to_bytes(elements),
        };
        let scales = if self.format.is_quantised() {
            let groups_per_row = if self.format.group_size == 0 {
                1
            } else {
                cols.div_ceil(self.format.group_size as u64)
            };
            let per_group = if self.format.symmetric { 1 } else { 2 };
            rows * groups_per_row * per_group * SCALE_BYTES
        } else {
            0
        };
        WeightBytes {
            values,
            metadata,
            scales,
        }
    }
}

/// Format of activations between operators.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActivationFormat {
    /// 16-bit floating point.
    Fp16,
    /// 8-bit integers (per-token scale).
    Int8,
}

impl ActivationFormat {
    /// Bits per element.
    pub fn bits(&self) -> u32 {
        match self {
            ActivationFormat::Fp16 => 16,
            ActivationFormat::Int8 => 8,
        }
    }
}

/// Storage format of the KV cache.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum KvFormat {
    /// 16-bit floating point.
    Fp16,
    /// 8-bit integers.
    Int8,
    /// 4-bit integers.
    Int4,
}

impl KvFormat {
    /// Bits per stored element.
    pub fn bits(&self) -> u32 {
        match self {
            KvFormat::Fp16 => 16,
            KvFormat::Int8 => 8,
            KvFormat::Int4 => 4,
        }
    }

    /// Bytes of one cached row (one token's key or value of one head) of `dims` elements:
    /// fp16 values, or the packed integers followed by their row's fp16 scale, as the special-
    /// function unit's `quantize` gives it (`isa::data`). The graph's KV traffic and the cache's
    /// layout both count rows with this.
    pub fn row_bytes(&self, dims: u64) -> u64 {
        (dims * self.bits() as u64).div_ceil(8) + self.row_scale_bytes()
    }

    /// Bytes of the scale stored with each cached row: one fp16 scale for integer formats, none
    /// for fp16.
    pub fn row_scale_bytes(&self) -> u64 {
        match self {
            KvFormat::Fp16 => 0,
            KvFormat::Int8 | KvFormat::Int4 => 2,
        }
    }
}

/// Head-wise KV policy in the manner of DuoAttention / RazorAttention: a fraction of heads keep the
/// full context, the rest ("streaming heads") keep only `sink` initial tokens plus a recent
/// `window`.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KvPolicy {
    /// Fraction of KV heads that are streaming heads, in [0, 1].
    pub streaming_fraction: f64,
    /// Attention-sink tokens a streaming head keeps.
    pub sink: u64,
    /// Recent tokens a streaming head keeps.
    pub window: u64,
}

impl KvPolicy {
    /// Every head keeps the full context.
    pub const FULL: KvPolicy = KvPolicy {
        streaming_fraction: 0.0,
        sink: 0,
        window: 0,
    };

    /// KV heads that keep the full context, out of `kv_heads` (streaming heads rounded down).
    pub fn full_heads(&self, kv_heads: u32) -> u32 {
        kv_heads - (kv_heads as f64 * self.streaming_fraction).floor() as u32
    }

    /// Tokens a streaming head keeps at `context` tokens.
    pub fn streaming_tokens(&self, context: u64) -> u64 {
        context.min(self.sink + self.window)
    }
}

/// KV-cache compression.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct KvCache {
    /// Element format.
    pub format: KvFormat,
    /// Head-wise retention policy.
    pub policy: KvPolicy,
}

/// A model's compression, validated.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Compression {
    /// Display name (preset or file).
    pub name: String,
    /// Weight compression per operator class (every class present).
    pub weights: BTreeMap<OpClass, WeightCompression>,
    /// Activation format.
    pub activations: ActivationFormat,
    /// KV cache.
    pub kv: KvCache,
    /// Overrides the model's MoE top-k when set.
    pub moe_top_k: Option<u32>,
}

impl Compression {
    /// Weight compression of one operator class.
    pub fn weight(&self, class: OpClass) -> WeightCompression {
        self.weights
            .get(&class)
            .copied()
            .unwrap_or(WeightCompression::FP16_DENSE)
    }

    /// Uncompressed fp16 everything.
    pub fn fp16() -> Compression {
        Compression {
            name: "fp16".into(),
            weights: OpClass::ALL
                .iter()
                .map(|&c| (c, WeightCompression::FP16_DENSE))
                .collect(),
            activations: ActivationFormat::Fp16,
            kv: KvCache {
                format: KvFormat::Fp16,
                policy: KvPolicy::FULL,
            },
            moe_top_k: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wc(bits: u32, group: u32, symmetric: bool, sparsity: Sparsity) -> WeightCompression {
        WeightCompression {
            format: WeightFormat {
                bits,
                group_size: group,
                symmetric,
            },
            sparsity,
        }
    }

    #[test]
    fn fp16_dense_is_two_bytes_per_weight() {
        let b = WeightCompression::FP16_DENSE.encoded_bytes(4096, 4096);
        assert_eq!(b.total(), 4096 * 4096 * 2);
        assert_eq!(b.metadata + b.scales, 0);
    }

    #[test]
    fn int4_group128_scales() {
        let b = wc(4, 128, true, Sparsity::Dense).encoded_bytes(4096, 4096);
        assert_eq!(b.values, 4096 * 4096 / 2);
        assert_eq!(b.scales, 4096 * 32 * 2);
        let asym = wc(4, 128, false, Sparsity::Dense).encoded_bytes(4096, 4096);
        assert_eq!(asym.scales, 2 * b.scales);
        let per_row = wc(8, 0, true, Sparsity::Dense).encoded_bytes(10, 100);
        assert_eq!(per_row.scales, 10 * 2);
    }

    #[test]
    fn n_m_keeps_n_values_and_indices() {
        // 4:16 of a 16x32 int8 matrix: 16 rows * 2 groups * 4 kept = 128 values, 4-bit indices.
        let b = wc(8, 0, true, Sparsity::NM { n: 4, m: 16 }).encoded_bytes(16, 32);
        assert_eq!(b.values, 128);
        assert_eq!(b.metadata, 64);
        // 2:4 uses 2-bit indices.
        let b = wc(16, 0, true, Sparsity::NM { n: 2, m: 4 }).encoded_bytes(8, 8);
        assert_eq!(b.values, 8 * 4 * 2);
        assert_eq!(b.metadata, 8 * 4 * 2 / 8);
    }

    #[test]
    fn block_and_unstructured_metadata() {
        let b = wc(
            16,
            0,
            true,
            Sparsity::Block {
                block: 64,
                density: 0.5,
            },
        )
        .encoded_bytes(128, 256);
        assert_eq!(b.values, 128 * 256);
        assert_eq!(b.metadata, 1);
        let u = wc(16, 0, true, Sparsity::Unstructured { density: 0.25 }).encoded_bytes(64, 64);
        assert_eq!(u.values, 64 * 64 / 4 * 2);
        assert_eq!(u.metadata, 64 * 64 / 8);
    }

    #[test]
    fn kv_policy_heads_and_tokens() {
        let p = KvPolicy {
            streaming_fraction: 0.5,
            sink: 4,
            window: 256,
        };
        assert_eq!(p.full_heads(32), 16);
        assert_eq!(p.streaming_tokens(100), 100);
        assert_eq!(p.streaming_tokens(4096), 260);
        assert_eq!(KvPolicy::FULL.full_heads(8), 8);
    }
}
