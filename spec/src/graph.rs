//! The operator graph: typed operators over typed tensors, with per-operator accounting.
//!
//! Operators are petgraph nodes; an edge carries the [`TensorId`] flowing from its producer to a
//! consumer. Tensors live in an arena indexed by [`TensorId`]. Weights, graph inputs and the KV
//! cache have no producer. The graph is built by `tessera_compiler::frontend`; the scheduler,
//! analytical model and compiler read it.

use crate::accel::SfuOp;
use crate::compression::{OpClass, WeightBytes};
use crate::model::{Activation, NormKind};
use petgraph::graph::{DiGraph, NodeIndex};
use serde::Serialize;
use std::fmt::Write as _;

/// Index of an operator in a [`Graph`].
pub type OpId = NodeIndex<u32>;

/// Index of a tensor in a [`Graph`]'s tensor arena.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
pub struct TensorId(pub u32);

/// Element type of a tensor as stored.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum DType {
    /// 16-bit float.
    Fp16,
    /// 8-bit integer.
    Int8,
    /// 4-bit integer.
    Int4,
    /// 3-bit integer.
    Int3,
    /// 2-bit integer.
    Int2,
    /// 32-bit integer (token ids).
    Int32,
}

impl DType {
    /// The storage type for `bits` bits per element (16 means fp16).
    pub fn from_bits(bits: u32) -> DType {
        match bits {
            8 => DType::Int8,
            4 => DType::Int4,
            3 => DType::Int3,
            2 => DType::Int2,
            32 => DType::Int32,
            _ => DType::Fp16,
        }
    }
    /// Bits per element.
    pub fn bits(&self) -> u32 {
        match self {
            DType::Fp16 => 16,
            DType::Int8 => 8,
            DType::Int4 => 4,
            DType::Int3 => 3,
            DType::Int2 => 2,
            DType::Int32 => 32,
        }
    }
}

/// What a tensor holds, which decides where it lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum TensorKind {
    /// Model parameters (read-only, off-chip).
    Weight,
    /// Intermediate values and graph inputs/outputs.
    Activation,
    /// Key/value cache.
    KvCache,
}

/// A tensor with its stored size.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Tensor {
    /// Unique name (`layer3.attn.q_proj.weight`).
    pub name: String,
    /// Dimensions, outermost first.
    pub shape: Vec<u64>,
    /// Element type.
    pub dtype: DType,
    /// What it holds.
    pub kind: TensorKind,
    /// Stored bytes, including sparse metadata and quantisation scales for weights.
    pub bytes: u64,
    /// Encoded weight bytes by part (weights only).
    pub weight_bytes: Option<WeightBytes>,
    /// Parameters it holds (weights only; dense count, before sparsity).
    pub params: u64,
    /// The operator that writes it, if any.
    #[serde(skip)]
    pub producer: Option<OpId>,
}

impl Tensor {
    /// A non-weight tensor (activation, input or KV cache) with its stored size.
    pub fn data(name: String, shape: Vec<u64>, dtype: DType, kind: TensorKind, bytes: u64) -> Self {
        Tensor {
            name,
            shape,
            dtype,
            kind,
            bytes,
            weight_bytes: None,
            params: 0,
            producer: None,
        }
    }
}

/// What an operator computes, with its shape.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "snake_case", tag = "op")]
pub enum OpKind {
    /// Gathers rows of embedding tables (token, position, token type) and sums them.
    Embedding {
        /// Tokens looked up.
        tokens: u64,
        /// Embedding width.
        width: u64,
        /// Tables summed.
        tables: u64,
    },
    /// `y[m, n] = x[m, k] · W[n, k]ᵀ (+ bias)`; MoE experts and the LM head are linears too.
    Linear {
        /// Which compression class its weight uses.
        class: OpClass,
        /// Rows of the input (tokens, or token-expert pairs for MoE).
        m: u64,
        /// Reduction length.
        k: u64,
        /// Output features.
        n: u64,
        /// Whether a bias is added.
        bias: bool,
        /// Distinct weight matrices read (MoE experts hit; 1 otherwise).
        weight_copies: u64,
    },
    /// Attention scores `Q · Kᵀ` per head.
    AttentionScores {
        /// Query heads.
        heads: u64,
        /// Width of a head.
        head_dim: u64,
        /// Query–key pairs scored, over all heads and sequences (causal masking and KV retention
        /// already applied).
        scores: u64,
    },
    /// Row-wise softmax of the attention scores.
    Softmax {
        /// Score elements.
        elements: u64,
    },
    /// Attention-weighted sum of values per head.
    AttentionValues {
        /// Query heads.
        heads: u64,
        /// Width of a head.
        head_dim: u64,
        /// Query–key pairs weighted, as for the scores.
        scores: u64,
    },
    /// LayerNorm or RMSNorm over rows of `width`.
    Norm {
        /// Kind of normalisation.
        kind: NormKind,
        /// Rows normalised.
        rows: u64,
        /// Row width.
        width: u64,
    },
    /// Point-wise nonlinearity.
    Activation {
        /// The function.
        function: Activation,
        /// Elements.
        elements: u64,
        /// Applied in the epilogue of the linear layer that produces the input (an ungated
        /// FFN's up projection), as the results leave the matrix engine: no pass of its own.
        epilogue: bool,
    },
    /// Gated multiply of a SwiGLU FFN (`act(gate) * up`).
    GatedMultiply {
        /// Elements.
        elements: u64,
    },
    /// Rotary position embedding applied to queries and keys.
    Rotary {
        /// Elements rotated (Q and K together).
        elements: u64,
    },
    /// Residual add.
    ResidualAdd {
        /// Elements.
        elements: u64,
    },
    /// Appends new keys and values to the KV cache.
    KvAppend {
        /// Tokens appended (per batch, all sequences).
        tokens: u64,
    },
    /// Reads the retained KV cache for attention (decode).
    KvRead {
        /// Context length the cache holds.
        context: u64,
    },
    /// MoE router softmax and top-k selection, and dispatch of tokens to experts.
    ExpertDispatch {
        /// Tokens routed.
        tokens: u64,
        /// Experts per layer.
        experts: u64,
        /// Experts per token.
        top_k: u64,
    },
    /// Weighted sum of the experts' outputs per token.
    ExpertCombine {
        /// Elements summed (tokens × top-k × width).
        elements: u64,
    },
}

impl OpKind {
    /// Short class name for tables and grouping (`linear`, `softmax`, ...).
    pub fn class_name(&self) -> &'static str {
        match self {
            OpKind::Embedding { .. } => "embedding",
            OpKind::Linear { .. } => "linear",
            OpKind::AttentionScores { .. } => "attention_scores",
            OpKind::Softmax { .. } => "softmax",
            OpKind::AttentionValues { .. } => "attention_values",
            OpKind::Norm { .. } => "norm",
            OpKind::Activation { .. } => "activation",
            OpKind::GatedMultiply { .. } => "gated_multiply",
            OpKind::Rotary { .. } => "rotary",
            OpKind::ResidualAdd { .. } => "residual_add",
            OpKind::KvAppend { .. } => "kv_append",
            OpKind::KvRead { .. } => "kv_read",
            OpKind::ExpertDispatch { .. } => "expert_dispatch",
            OpKind::ExpertCombine { .. } => "expert_combine",
        }
    }
}

/// The work and traffic of one operator, before any mapping onto hardware.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct OpCost {
    /// Multiply-accumulates on the matrix engine (dense count: sparsity is the hardware's saving).
    pub macs: u64,
    /// Vector / special-function work: the operation and the elements it touches.
    pub vector: Option<(SfuOp, u64)>,
    /// Weight bytes read (encoded; only rows gathered for embeddings; only experts hit for MoE).
    pub weight_bytes: u64,
    /// KV-cache bytes read.
    pub kv_read_bytes: u64,
    /// KV-cache bytes written.
    pub kv_write_bytes: u64,
    /// Activation bytes read (inputs that are not weights or KV cache).
    pub act_in_bytes: u64,
    /// Activation bytes written.
    pub act_out_bytes: u64,
}

impl OpCost {
    /// Floating-point operations of the matrix work (2 per MAC).
    pub fn matmul_flops(&self) -> u64 {
        2 * self.macs
    }
    /// Bytes that must come from off-chip memory whatever the schedule: weights and KV cache.
    pub fn compulsory_bytes(&self) -> u64 {
        self.weight_bytes + self.kv_read_bytes + self.kv_write_bytes
    }
}

/// An operator node.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Op {
    /// Unique name (`layer0.attn.q_proj`).
    pub name: String,
    /// What it computes.
    pub kind: OpKind,
    /// Block index, or `None` outside the blocks (embedding, head).
    pub layer: Option<u32>,
    /// Tensors read, in operand order.
    pub inputs: Vec<TensorId>,
    /// Tensors written.
    pub outputs: Vec<TensorId>,
    /// Work and traffic.
    pub cost: OpCost,
}

/// Which pass of inference a graph describes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case", tag = "phase")]
pub enum Phase {
    /// Process a prompt of `seq` tokens per sequence (or one image / sequence for encoders).
    Prefill {
        /// Tokens per sequence.
        seq: u64,
    },
    /// Generate one token per sequence with `context` tokens already cached.
    Decode {
        /// Tokens in the KV cache before this step.
        context: u64,
    },
}

impl Phase {
    /// `prefill` or `decode`.
    pub fn name(&self) -> &'static str {
        match self {
            Phase::Prefill { .. } => "prefill",
            Phase::Decode { .. } => "decode",
        }
    }
}

/// A whole-model operator graph for one pass.
#[derive(Debug, Clone)]
pub struct Graph {
    /// Model name.
    pub model: String,
    /// The pass.
    pub phase: Phase,
    /// Sequences in the batch.
    pub batch: u64,
    ops: DiGraph<Op, TensorId, u32>,
    tensors: Vec<Tensor>,
}

impl Graph {
    /// An empty graph.
    pub fn new(model: impl Into<String>, phase: Phase, batch: u64) -> Self {
        Self {
            model: model.into(),
            phase,
            batch,
            ops: DiGraph::default(),
            tensors: Vec::new(),
        }
    }

    /// Adds a tensor without a producer (weight, input, KV cache) or to be produced later.
    pub fn add_tensor(&mut self, tensor: Tensor) -> TensorId {
        let id = TensorId(self.tensors.len() as u32);
        self.tensors.push(tensor);
        id
    }

    /// Adds an operator; records it as producer of its outputs and adds an edge from the producer
    /// of each input that has one.
    pub fn add_op(&mut self, op: Op) -> OpId {
        let inputs = op.inputs.clone();
        let outputs = op.outputs.clone();
        let id = self.ops.add_node(op);
        for t in outputs {
            self.tensors[t.0 as usize].producer = Some(id);
        }
        for t in inputs {
            if let Some(p) = self.tensors[t.0 as usize].producer {
                self.ops.add_edge(p, id, t);
            }
        }
        id
    }

    /// The tensor with id `id`.
    pub fn tensor(&self, id: TensorId) -> &Tensor {
        &self.tensors[id.0 as usize]
    }

    /// All tensors in creation order.
    pub fn tensors(&self) -> &[Tensor] {
        &self.tensors
    }

    /// The operator with id `id`.
    pub fn op(&self, id: OpId) -> &Op {
        &self.ops[id]
    }

    /// Operator ids in insertion order, which is a topological order.
    pub fn op_ids(&self) -> impl Iterator<Item = OpId> + '_ {
        self.ops.node_indices()
    }

    /// Operators in insertion (topological) order.
    pub fn ops(&self) -> impl Iterator<Item = &Op> + '_ {
        self.ops.node_weights()
    }

    /// Number of operators.
    pub fn op_count(&self) -> usize {
        self.ops.node_count()
    }

    /// The underlying petgraph (edges carry the tensor that flows along them).
    pub fn petgraph(&self) -> &DiGraph<Op, TensorId, u32> {
        &self.ops
    }

    /// Total parameters of all weight tensors.
    pub fn params(&self) -> u64 {
        self.weights().map(|t| t.params).sum()
    }

    /// Parameters an operator pass touches: every weight tensor counts in full, except stacks of
    /// MoE experts, which count the fraction of experts the pass reads. For a decode step at batch 1
    /// this is the "active parameters" of a mixture-of-experts model.
    pub fn active_params(&self) -> u64 {
        let mut fraction = vec![(0u64, 1u64); self.tensors.len()];
        for op in self.ops() {
            let copies = match op.kind {
                OpKind::Linear { weight_copies, .. } => weight_copies,
                _ => 1,
            };
            for &t in &op.inputs {
                let tensor = self.tensor(t);
                if tensor.kind != TensorKind::Weight {
                    continue;
                }
                let stored = if tensor.shape.len() == 3 {
                    tensor.shape[0]
                } else {
                    1
                };
                let (num, den) = (copies.min(stored), stored);
                let f = &mut fraction[t.0 as usize];
                // Keep the largest fraction read by any operator (num/den > f.0/f.1).
                if num * f.1 > f.0 * den {
                    *f = (num, den);
                }
            }
        }
        self.tensors
            .iter()
            .zip(fraction)
            .filter(|(t, _)| t.kind == TensorKind::Weight)
            .map(|(t, (num, den))| t.params * num / den)
            .sum()
    }

    /// Stored bytes of all weight tensors.
    pub fn weight_bytes(&self) -> u64 {
        self.weights().map(|t| t.bytes).sum()
    }

    /// Encoded weight bytes of all weight tensors, by part.
    pub fn weight_bytes_by_part(&self) -> WeightBytes {
        self.weights()
            .filter_map(|t| t.weight_bytes)
            .fold(WeightBytes::default(), |a, b| a + b)
    }

    fn weights(&self) -> impl Iterator<Item = &Tensor> + '_ {
        self.tensors.iter().filter(|t| t.kind == TensorKind::Weight)
    }

    /// Sum of the costs of all operators.
    pub fn total_cost(&self) -> OpCost {
        self.ops().fold(OpCost::default(), |mut a, op| {
            let c = op.cost;
            a.macs += c.macs;
            a.weight_bytes += c.weight_bytes;
            a.kv_read_bytes += c.kv_read_bytes;
            a.kv_write_bytes += c.kv_write_bytes;
            a.act_in_bytes += c.act_in_bytes;
            a.act_out_bytes += c.act_out_bytes;
            a
        })
    }

    /// Tokens whose hidden states this pass computes (batch × sequence for prefill, batch for
    /// decode).
    pub fn tokens(&self) -> u64 {
        match self.phase {
            Phase::Prefill { seq } => self.batch * seq,
            Phase::Decode { .. } => self.batch,
        }
    }

    /// Graphviz text: one node per operator, edges labelled with tensor names. Deterministic.
    pub fn to_dot(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "digraph \"{} {}\" {{", self.model, self.phase.name());
        let _ = writeln!(s, "  node [shape=box, fontname=\"monospace\"];");
        for id in self.op_ids() {
            let op = self.op(id);
            let _ = writeln!(
                s,
                "  n{} [label=\"{}\\n{}\"];",
                id.index(),
                op.name,
                op.kind.class_name()
            );
        }
        for e in self.ops.edge_indices() {
            if let Some((a, b)) = self.ops.edge_endpoints(e) {
                let t = self.tensor(self.ops[e]);
                let _ = writeln!(
                    s,
                    "  n{} -> n{} [label=\"{}\"];",
                    a.index(),
                    b.index(),
                    t.name
                );
            }
        }
        s.push_str("}\n");
        s
    }
}
