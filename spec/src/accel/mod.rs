//! Accelerator spec: parsed from TOML, validated once into an immutable [`Accelerator`].

/// A validated accelerator description.
#[derive(Debug, Clone, PartialEq)]
pub struct Accelerator {}

use serde::{Deserialize, Serialize};

/// Operations of the vector / special-function unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SfuOp {
    /// Row softmax (two passes).
    Softmax,
    /// LayerNorm (two passes).
    LayerNorm,
    /// RMSNorm (two passes).
    RmsNorm,
    /// SiLU.
    Silu,
    /// GELU.
    Gelu,
    /// ReLU.
    Relu,
    /// Rotary position embedding.
    Rotary,
    /// Element-wise add.
    Add,
    /// Element-wise multiply.
    Mul,
}
