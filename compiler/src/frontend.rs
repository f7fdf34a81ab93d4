//! Frontend: lowers a [`ModelConfig`] with its [`Compression`] to the operator [`Graph`] of one
//! pass (prefill of a prompt, or one decode step at a given context).
//!
//! Accounting conventions (the tests check them against hand-derived formulas):
//! - MACs are dense counts; sparsity shows up in weight bytes and in the hardware's throughput.
//! - Causal attention scores only the visible query–key pairs (a triangle in prefill); a sliding
//!   window and the streaming heads of a head-wise KV policy cap the visible keys.
//! - Embeddings read only the rows they gather; the LM head of a prefill pass computes logits for
//!   the last token of each sequence only, as generation needs, and the final norm normalises
//!   only the row the head reads (a pooler's or classifier's: the first token's).
//! - MoE experts read the weights of the experts hit: the expected number of distinct experts
//!   among `tokens × top_k` uniform picks, `E · (1 − (1 − k/E)^tokens)`, rounded.
//! - Biases and norm weights are stored as fp16 whatever the weight compression.

use tessera_spec::accel::SfuOp;
use tessera_spec::compression::{Compression, OpClass, WeightBytes};
use tessera_spec::graph::{DType, Graph, Op, OpCost, OpKind, Phase, Tensor, TensorId, TensorKind};
use tessera_spec::model::{Activation, ModelConfig, NormKind, OutputHead, Positions};

/// Why a graph cannot be built.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum FrontendError {
    /// Encoders (BERT, ViT) have no autoregressive decode step.
    #[error("model `{model}` is an encoder: it has no decode phase (use --phase prefill)")]
    NoDecodePhase {
        /// The model.
        model: String,
    },
    /// A zero-length pass.
    #[error("{what} must be at least 1 (got 0)")]
    Empty {
        /// Which quantity was zero.
        what: &'static str,
    },
    /// The pass is too large to account in 64-bit counters.
    #[error(
        "model `{model}` with batch {batch} over {positions} positions needs about {macs:.1e} \
         MACs, more than Tessera counts (limit {limit:.1e}); use a smaller batch or length"
    )]
    TooLarge {
        /// The model.
        model: String,
        /// Sequences.
        batch: u64,
        /// Positions per sequence.
        positions: u64,
        /// Estimated MACs.
        macs: f64,
        /// The limit.
        limit: f64,
    },
    /// The pass needs more positions than the model's learned position table has.
    #[error(
        "model `{model}` has {max} positions; a pass reaching position {needed} needs more \
         (shorten the prompt or the decode length)"
    )]
    TooLong {
        /// The model.
        model: String,
        /// Its position limit.
        max: u64,
        /// Positions the pass needs.
        needed: u64,
    },
}

/// Builds the operator graph of `phase` for `batch` sequences.
///
/// Vision models ignore the requested prefill length: their sequence is the patch count plus the
/// class token.
pub fn build_graph(
    model: &ModelConfig,
    compression: &Compression,
    phase: Phase,
    batch: u64,
) -> Result<Graph, FrontendError> {
    if batch == 0 {
        return Err(FrontendError::Empty { what: "batch" });
    }
    let phase = match (phase, model.vision) {
        (Phase::Prefill { .. }, Some(v)) => Phase::Prefill {
            seq: v.patches() + 1,
        },
        (p, _) => p,
    };
    match phase {
        Phase::Prefill { seq: 0 } => {
            return Err(FrontendError::Empty {
                what: "prefill length",
            })
        }
        Phase::Decode { .. } if !model.is_decoder() => {
            return Err(FrontendError::NoDecodePhase {
                model: model.name.clone(),
            })
        }
        _ => {}
    }
    let last_position = match phase {
        Phase::Prefill { seq } => seq,
        Phase::Decode { context } => context + 1,
    };
    if matches!(model.positions, Positions::Learned { .. }) && last_position > model.max_positions {
        return Err(FrontendError::TooLong {
            model: model.name.clone(),
            max: model.max_positions,
            needed: last_position,
        });
    }
    check_size(model, batch, last_position)?;
    let mut b = Builder {
        model,
        comp: compression,
        graph: Graph::new(model.name.clone(), phase, batch),
        act_dtype: DType::from_bits(compression.activations.bits()),
        tokens: match phase {
            Phase::Prefill { seq } => batch * seq,
            Phase::Decode { .. } => batch,
        },
    };
    b.build();
    Ok(b.graph)
}

/// Largest MAC count a pass may reach, leaving headroom below 2^64 ≈ 1.8e19 for FLOPs (2 per MAC)
/// and for sums over many decode steps.
const MAX_MACS: f64 = 1e18;

/// Rejects passes whose counters could overflow, from a floating-point upper bound of the work.
fn check_size(model: &ModelConfig, batch: u64, positions: u64) -> Result<(), FrontendError> {
    let h = model.hidden as f64;
    let experts = model.moe.map_or(1.0, |m| m.experts as f64);
    let width = (model.q_width().max(model.kv_width()) as f64).max(h);
    let per_token = model.layers as f64
        * (4.0 * h * width
            + 3.0 * h * model.ffn_hidden as f64 * experts
            + 2.0 * width * positions as f64)
        + h * (model.vocab as f64).max(h);
    let macs = batch as f64 * positions as f64 * per_token;
    if macs > MAX_MACS {
        return Err(FrontendError::TooLarge {
            model: model.name.clone(),
            batch,
            positions,
            macs,
            limit: MAX_MACS,
        });
    }
    Ok(())
}

struct Builder<'a> {
    model: &'a ModelConfig,
    comp: &'a Compression,
    graph: Graph,
    act_dtype: DType,
    /// Tokens whose hidden state this pass computes.
    tokens: u64,
}

/// Sum over query positions `1..=s` of the keys visible to each, `min(i, limit)`.
fn visible_pairs(s: u64, limit: u64) -> u64 {
    if s <= limit {
        s * (s + 1) / 2
    } else {
        limit * (limit + 1) / 2 + (s - limit) * limit
    }
}

/// The vector-unit operation and element count of an element-wise operator kind.
fn vector_work(kind: &OpKind) -> Option<(SfuOp, u64)> {
    match *kind {
        OpKind::Softmax { elements } => Some((SfuOp::Softmax, elements)),
        OpKind::Activation {
            function, elements, ..
        } => Some((activation_op(function), elements)),
        OpKind::GatedMultiply { elements } | OpKind::ExpertCombine { elements } => {
            Some((SfuOp::Mul, elements))
        }
        OpKind::Rotary { elements } => Some((SfuOp::Rotary, elements)),
        OpKind::ResidualAdd { elements } => Some((SfuOp::Add, elements)),
        // Router softmax over the experts, then top-k.
        OpKind::ExpertDispatch {
            tokens, experts, ..
        } => Some((SfuOp::Softmax, tokens * experts)),
        _ => None,
    }
}

fn activation_op(a: Activation) -> SfuOp {
    match a {
        Activation::Silu => SfuOp::Silu,
        Activation::Gelu => SfuOp::Gelu,
        Activation::Relu => SfuOp::Relu,
    }
}

fn bytes_of(elements: u64, dtype: DType) -> u64 {
    (elements * dtype.bits() as u64).div_ceil(8)
}

impl Builder<'_> {
    fn build(&mut self) {
        let mut x = self.embed();
        for layer in 0..self.model.layers {
            x = self.block(layer, x);
        }
        self.head(x);
    }

    fn layer_name(layer: Option<u32>, name: &str) -> String {
        match layer {
            Some(l) => format!("layer{l}.{name}"),
            None => name.to_string(),
        }
    }

    fn activation(&mut self, name: String, shape: Vec<u64>) -> TensorId {
        let elements: u64 = shape.iter().product();
        let dtype = self.act_dtype;
        let bytes = bytes_of(elements, dtype);
        self.graph.add_tensor(Tensor::data(
            name,
            shape,
            dtype,
            TensorKind::Activation,
            bytes,
        ))
    }

    /// A weight matrix of `copies` × `n` × `k`, encoded with `class`'s compression.
    fn weight(&mut self, name: String, class: OpClass, copies: u64, n: u64, k: u64) -> TensorId {
        let wc = self.comp.weight(class);
        let one = wc.encoded_bytes(n, k);
        let wb = WeightBytes {
            values: one.values * copies,
            metadata: one.metadata * copies,
            scales: one.scales * copies,
        };
        let shape = if copies > 1 {
            vec![copies, n, k]
        } else {
            vec![n, k]
        };
        self.graph.add_tensor(Tensor {
            name,
            shape,
            dtype: DType::from_bits(wc.format.bits),
            kind: TensorKind::Weight,
            bytes: wb.total(),
            weight_bytes: Some(wb),
            params: copies * n * k,
            producer: None,
        })
    }

    /// An fp16 vector parameter (bias, norm weight).
    fn vector_param(&mut self, name: String, len: u64) -> TensorId {
        let bytes = bytes_of(len, DType::Fp16);
        self.graph.add_tensor(Tensor {
            name,
            shape: vec![len],
            dtype: DType::Fp16,
            kind: TensorKind::Weight,
            bytes,
            weight_bytes: Some(WeightBytes {
                values: bytes,
                metadata: 0,
                scales: 0,
            }),
            params: len,
            producer: None,
        })
    }

    fn act_bytes(&self, ids: &[TensorId]) -> u64 {
        ids.iter()
            .map(|&t| self.graph.tensor(t))
            .filter(|t| t.kind == TensorKind::Activation)
            .map(|t| t.bytes)
            .sum()
    }

    /// Adds an op whose activation traffic is derived from its tensors.
    fn op(
        &mut self,
        layer: Option<u32>,
        name: &str,
        kind: OpKind,
        inputs: Vec<TensorId>,
        outputs: Vec<TensorId>,
        mut cost: OpCost,
    ) {
        cost.act_in_bytes = self.act_bytes(&inputs);
        cost.act_out_bytes = self.act_bytes(&outputs);
        self.graph.add_op(Op {
            name: Self::layer_name(layer, name),
            kind,
            layer,
            inputs,
            outputs,
            cost,
        });
    }

    /// A vector-unit op with one output of `shape` over the inputs; its work follows from `kind`.
    fn vector_op(
        &mut self,
        layer: Option<u32>,
        name: &str,
        kind: OpKind,
        inputs: Vec<TensorId>,
        shape: Vec<u64>,
    ) -> TensorId {
        let vector = vector_work(&kind);
        let out = self.activation(Self::layer_name(layer, name), shape);
        self.op(
            layer,
            name,
            kind,
            inputs,
            vec![out],
            OpCost {
                vector,
                ..OpCost::default()
            },
        );
        out
    }

    /// A linear layer `x[m, k] → y[m, n]`, with a new weight unless `shared` is given.
    #[allow(clippy::too_many_arguments)]
    fn linear(
        &mut self,
        layer: Option<u32>,
        name: &str,
        class: OpClass,
        x: TensorId,
        m: u64,
        k: u64,
        n: u64,
        bias: bool,
        shared: Option<TensorId>,
    ) -> TensorId {
        let w = match shared {
            Some(w) => w,
            None => self.weight(
                Self::layer_name(layer, &format!("{name}.weight")),
                class,
                1,
                n,
                k,
            ),
        };
        let mut inputs = vec![x, w];
        let mut weight_bytes = self.graph.tensor(w).bytes;
        if bias {
            let b = self.vector_param(Self::layer_name(layer, &format!("{name}.bias")), n);
            weight_bytes += self.graph.tensor(b).bytes;
            inputs.push(b);
        }
        let y = self.activation(Self::layer_name(layer, name), vec![m, n]);
        self.op(
            layer,
            name,
            OpKind::Linear {
                class,
                m,
                k,
                n,
                bias,
                weight_copies: 1,
            },
            inputs,
            vec![y],
            OpCost {
                macs: m * k * n,
                // The bias is added to every output row by the special-function unit.
                vector: bias.then_some((SfuOp::AddRow, m * n)),
                weight_bytes,
                ..OpCost::default()
            },
        );
        y
    }

    fn norm(&mut self, layer: Option<u32>, name: &str, x: TensorId, rows: u64) -> TensorId {
        let h = self.model.hidden;
        let kind = self.model.norm;
        let mut inputs = vec![
            x,
            self.vector_param(Self::layer_name(layer, &format!("{name}.weight")), h),
        ];
        if kind == NormKind::LayerNorm {
            inputs.push(self.vector_param(Self::layer_name(layer, &format!("{name}.bias")), h));
        }
        let weight_bytes = inputs[1..]
            .iter()
            .map(|&t| self.graph.tensor(t).bytes)
            .sum();
        let sfu = match kind {
            NormKind::LayerNorm => SfuOp::LayerNorm,
            NormKind::RmsNorm => SfuOp::RmsNorm,
        };
        let out = self.activation(Self::layer_name(layer, name), vec![rows, h]);
        self.op(
            layer,
            name,
            OpKind::Norm {
                kind,
                rows,
                width: h,
            },
            inputs,
            vec![out],
            OpCost {
                vector: Some((sfu, rows * h)),
                weight_bytes,
                ..OpCost::default()
            },
        );
        out
    }

    fn residual(&mut self, layer: Option<u32>, name: &str, a: TensorId, b: TensorId) -> TensorId {
        let elements = self.tokens * self.model.hidden;
        self.vector_op(
            layer,
            name,
            OpKind::ResidualAdd { elements },
            vec![a, b],
            vec![self.tokens, self.model.hidden],
        )
    }

    fn embed(&mut self) -> TensorId {
        let m = self.model;
        let t = self.tokens;
        let h = m.hidden;
        if let Some(v) = m.vision {
            let images = self.graph.batch;
            let pixels = self.graph.add_tensor(Tensor::data(
                "pixels".into(),
                vec![images, v.channels, v.image_size, v.image_size],
                self.act_dtype,
                TensorKind::Activation,
                bytes_of(
                    images * v.channels * v.image_size * v.image_size,
                    self.act_dtype,
                ),
            ));
            let k = v.channels * v.patch_size * v.patch_size;
            let patches = self.linear(
                None,
                "patch_embed",
                OpClass::Embedding,
                pixels,
                images * v.patches(),
                k,
                h,
                true,
                None,
            );
            let cls = self.vector_param("cls_token".into(), h);
            let pos = self.weight(
                "position_embedding".into(),
                OpClass::Embedding,
                1,
                v.patches() + 1,
                h,
            );
            let weight_bytes = self.graph.tensor(cls).bytes + self.graph.tensor(pos).bytes;
            let out = self.activation("embeddings".into(), vec![t, h]);
            self.op(
                None,
                "embeddings",
                OpKind::Embedding {
                    tokens: t,
                    width: h,
                    tables: 2,
                },
                vec![patches, cls, pos],
                vec![out],
                OpCost {
                    vector: Some((SfuOp::Add, t * h)),
                    weight_bytes,
                    ..OpCost::default()
                },
            );
            return out;
        }
        let ids = self.graph.add_tensor(Tensor::data(
            "token_ids".into(),
            vec![t],
            DType::Int32,
            TensorKind::Activation,
            bytes_of(t, DType::Int32),
        ));
        let mut tables =
            vec![self.weight("token_embedding".into(), OpClass::Embedding, 1, m.vocab, h)];
        if let Positions::Learned { table_rows } = m.positions {
            tables.push(self.weight(
                "position_embedding".into(),
                OpClass::Embedding,
                1,
                table_rows,
                h,
            ));
        }
        if m.token_types > 0 {
            tables.push(self.weight(
                "token_type_embedding".into(),
                OpClass::Embedding,
                1,
                m.token_types,
                h,
            ));
        }
        // Each table contributes one gathered row per token.
        let row_bytes = self
            .comp
            .weight(OpClass::Embedding)
            .encoded_bytes(1, h)
            .total();
        let n_tables = tables.len() as u64;
        let out = self.activation("embeddings".into(), vec![t, h]);
        let mut inputs = vec![ids];
        inputs.extend(tables);
        self.op(
            None,
            "embeddings",
            OpKind::Embedding {
                tokens: t,
                width: h,
                tables: n_tables,
            },
            inputs,
            vec![out],
            OpCost {
                vector: (n_tables > 1).then_some((SfuOp::Add, t * h * (n_tables - 1))),
                weight_bytes: t * n_tables * row_bytes,
                ..OpCost::default()
            },
        );
        if m.embedding_norm {
            self.norm(None, "embedding_norm", out, t)
        } else {
            out
        }
    }

    fn block(&mut self, layer: u32, x: TensorId) -> TensorId {
        let l = Some(layer);
        let t = self.tokens;
        if self.model.pre_norm {
            let h = self.norm(l, "attn_norm", x, t);
            let a = self.attention(layer, h);
            let x = self.residual(l, "attn_residual", x, a);
            let h = self.norm(l, "ffn_norm", x, t);
            let f = self.ffn(layer, h);
            self.residual(l, "ffn_residual", x, f)
        } else {
            let a = self.attention(layer, x);
            let x = self.residual(l, "attn_residual", x, a);
            let x = self.norm(l, "attn_norm", x, t);
            let f = self.ffn(layer, x);
            let x2 = self.residual(l, "ffn_residual", x, f);
            self.norm(l, "ffn_norm", x2, t)
        }
    }

    /// Keys visible to one query position, for full and streaming heads.
    fn key_limits(&self) -> (u64, u64) {
        let full = self.model.sliding_window.unwrap_or(u64::MAX);
        let p = self.comp.kv.policy;
        let streaming = full.min(p.sink + p.window);
        (full, streaming)
    }

    fn attention(&mut self, layer: u32, x: TensorId) -> TensorId {
        let m = self.model;
        let l = Some(layer);
        let t = self.tokens;
        let batch = self.graph.batch;
        let (qw, kvw, hd) = (m.q_width(), m.kv_width(), m.head_dim);
        let q = self.linear(
            l,
            "attn.q_proj",
            OpClass::Attention,
            x,
            t,
            m.hidden,
            qw,
            m.qkv_bias,
            None,
        );
        let k = self.linear(
            l,
            "attn.k_proj",
            OpClass::Attention,
            x,
            t,
            m.hidden,
            kvw,
            m.qkv_bias,
            None,
        );
        let v = self.linear(
            l,
            "attn.v_proj",
            OpClass::Attention,
            x,
            t,
            m.hidden,
            kvw,
            m.qkv_bias,
            None,
        );
        let (q, k) = if matches!(m.positions, Positions::Rotary { .. }) {
            let elements = t * (qw + kvw);
            let q_rot = self.activation(Self::layer_name(l, "attn.q_rot"), vec![t, qw]);
            let k_rot = self.activation(Self::layer_name(l, "attn.k_rot"), vec![t, kvw]);
            // One row of angles (a cosine and a sine per pair of dimensions) per position; the
            // sequences of a batch share their positions.
            let positions = match self.graph.phase {
                Phase::Prefill { seq } => seq,
                Phase::Decode { .. } => 1,
            };
            self.op(
                l,
                "attn.rotary",
                OpKind::Rotary { elements },
                vec![q, k],
                vec![q_rot, k_rot],
                OpCost {
                    vector: vector_work(&OpKind::Rotary { elements }),
                    weight_bytes: positions * bytes_of(hd, DType::Fp16),
                    ..OpCost::default()
                },
            );
            (q_rot, k_rot)
        } else {
            (q, k)
        };

        // KV retention: full heads keep every visible key, streaming heads sink + window.
        let full_kv = self.comp.kv.policy.full_heads(m.kv_heads) as u64;
        let stream_kv = m.kv_heads as u64 - full_kv;
        let group = (m.heads / m.kv_heads) as u64;
        let (full_limit, stream_limit) = self.key_limits();
        let kv_dtype = DType::from_bits(self.comp.kv.format.bits());
        // A key row and a value row per token and head, integer rows with their scale.
        let kv_bytes =
            |tokens_times_heads: u64| 2 * tokens_times_heads * self.comp.kv.format.row_bytes(hd);
        let retained = |ctx: u64| full_kv * ctx.min(full_limit) + stream_kv * ctx.min(stream_limit);
        // The retained cache of every sequence at `ctx` tokens, as a tensor.
        let kv_cache = |name: &str, ctx: u64| {
            Tensor::data(
                Self::layer_name(l, name),
                vec![batch, 2, m.kv_heads as u64, ctx, hd],
                kv_dtype,
                TensorKind::KvCache,
                batch * kv_bytes(retained(ctx)),
            )
        };

        let (scores, kv_in, kv_written_tokens, end_context) = match self.graph.phase {
            Phase::Prefill { seq } => {
                let pairs = if m.causal {
                    group
                        * (full_kv * visible_pairs(seq, full_limit)
                            + stream_kv * visible_pairs(seq, stream_limit))
                } else {
                    m.heads as u64 * seq * seq
                };
                (batch * pairs, vec![k, v], retained(seq), seq)
            }
            Phase::Decode { context } => {
                let cache = self.graph.add_tensor(kv_cache("kv_cache", context));
                // The cache streams through the attention operators; it is KV data, not an
                // activation that could spill. The step's own key and value are read back with
                // it, after the append stores them (every visible key comes from the cache).
                let past = self.graph.add_tensor(kv_cache("attn.past_kv", context + 1));
                let read_bytes = self.graph.tensor(past).bytes;
                self.op(
                    l,
                    "attn.kv_read",
                    OpKind::KvRead { context },
                    vec![cache],
                    vec![past],
                    OpCost {
                        kv_read_bytes: read_bytes,
                        ..OpCost::default()
                    },
                );
                let pairs = group * retained(context + 1);
                (
                    batch * pairs,
                    vec![k, v, past],
                    m.kv_heads as u64,
                    context + 1,
                )
            }
        };

        let appended = self
            .graph
            .add_tensor(kv_cache("kv_cache.appended", end_context));
        let appended_tokens = match self.graph.phase {
            Phase::Prefill { seq } => seq,
            Phase::Decode { .. } => 1,
        };
        self.op(
            l,
            "attn.kv_append",
            OpKind::KvAppend {
                tokens: batch * appended_tokens,
            },
            vec![k, v],
            vec![appended],
            OpCost {
                kv_write_bytes: batch * kv_bytes(kv_written_tokens),
                ..OpCost::default()
            },
        );

        let heads = m.heads as u64;
        let s = self.activation(Self::layer_name(l, "attn.scores"), vec![scores]);
        let mut score_inputs = vec![q];
        score_inputs.extend(kv_in.iter().copied().filter(|&id| id != v));
        self.op(
            l,
            "attn.scores",
            OpKind::AttentionScores {
                heads,
                head_dim: hd,
                scores,
            },
            score_inputs,
            vec![s],
            OpCost {
                macs: scores * hd,
                ..OpCost::default()
            },
        );
        let p = self.vector_op(
            l,
            "attn.softmax",
            OpKind::Softmax { elements: scores },
            vec![s],
            vec![scores],
        );
        let ctx = self.activation(Self::layer_name(l, "attn.context"), vec![t, qw]);
        let mut value_inputs = vec![p];
        value_inputs.extend(kv_in.iter().copied().filter(|&id| id != k));
        self.op(
            l,
            "attn.values",
            OpKind::AttentionValues {
                heads,
                head_dim: hd,
                scores,
            },
            value_inputs,
            vec![ctx],
            OpCost {
                macs: scores * hd,
                ..OpCost::default()
            },
        );
        self.linear(
            l,
            "attn.o_proj",
            OpClass::Attention,
            ctx,
            t,
            qw,
            m.hidden,
            m.out_bias,
            None,
        )
    }

    fn ffn(&mut self, layer: u32, x: TensorId) -> TensorId {
        let m = self.model;
        if let Some(moe) = m.moe {
            return self.moe_ffn(
                layer,
                x,
                moe.experts as u64,
                self.comp.moe_top_k.unwrap_or(moe.top_k) as u64,
            );
        }
        let l = Some(layer);
        let t = self.tokens;
        let (h, f, bias) = (m.hidden, m.ffn_hidden, m.ffn_bias);
        let act = m.activation;
        let inner = if m.gated_ffn {
            let g = self.linear(l, "ffn.gate_proj", OpClass::Ffn, x, t, h, f, bias, None);
            let u = self.linear(l, "ffn.up_proj", OpClass::Ffn, x, t, h, f, bias, None);
            let a = self.vector_op(
                l,
                "ffn.act",
                OpKind::Activation {
                    function: act,
                    elements: t * f,
                    epilogue: false,
                },
                vec![g],
                vec![t, f],
            );
            self.vector_op(
                l,
                "ffn.gated_mul",
                OpKind::GatedMultiply { elements: t * f },
                vec![a, u],
                vec![t, f],
            )
        } else {
            // The up projection's only reader: its products apply it as they finish.
            let u = self.linear(l, "ffn.up_proj", OpClass::Ffn, x, t, h, f, bias, None);
            self.vector_op(
                l,
                "ffn.act",
                OpKind::Activation {
                    function: act,
                    elements: t * f,
                    epilogue: true,
                },
                vec![u],
                vec![t, f],
            )
        };
        self.linear(l, "ffn.down_proj", OpClass::Ffn, inner, t, f, h, bias, None)
    }

    /// Expected distinct experts hit by `tokens × top_k` uniform picks among `experts`.
    fn experts_hit(experts: u64, top_k: u64, tokens: u64) -> u64 {
        let e = experts as f64;
        let miss_one = 1.0 - top_k as f64 / e;
        let hit = (e * (1.0 - miss_one.powf(tokens as f64))).round() as u64;
        hit.clamp(top_k.min(experts), experts)
    }

    fn moe_ffn(&mut self, layer: u32, x: TensorId, experts: u64, top_k: u64) -> TensorId {
        let m = self.model;
        let l = Some(layer);
        let t = self.tokens;
        let (h, f) = (m.hidden, m.ffn_hidden);
        let logits = self.linear(
            l,
            "moe.router",
            OpClass::Router,
            x,
            t,
            h,
            experts,
            false,
            None,
        );
        let routed = self.vector_op(
            l,
            "moe.dispatch",
            OpKind::ExpertDispatch {
                tokens: t,
                experts,
                top_k,
            },
            vec![logits, x],
            vec![t * top_k, h],
        );
        let rows = t * top_k;
        let hit = Self::experts_hit(experts, top_k, t);
        let expert_linear = |b: &mut Self, name: &str, input: TensorId, k: u64, n: u64| {
            let w = b.weight(
                Self::layer_name(l, &format!("{name}.weight")),
                OpClass::Ffn,
                experts,
                n,
                k,
            );
            let per_expert = b.graph.tensor(w).bytes / experts;
            let y = b.activation(Self::layer_name(l, name), vec![rows, n]);
            b.op(
                l,
                name,
                OpKind::Linear {
                    class: OpClass::Ffn,
                    m: rows,
                    k,
                    n,
                    bias: false,
                    weight_copies: hit,
                },
                vec![input, w],
                vec![y],
                OpCost {
                    macs: rows * k * n,
                    weight_bytes: hit * per_expert,
                    ..OpCost::default()
                },
            );
            y
        };
        let g = expert_linear(self, "moe.experts.gate_proj", routed, h, f);
        let u = expert_linear(self, "moe.experts.up_proj", routed, h, f);
        let act = m.activation;
        let a = self.vector_op(
            l,
            "moe.experts.act",
            OpKind::Activation {
                function: act,
                elements: rows * f,
                epilogue: false,
            },
            vec![g],
            vec![rows, f],
        );
        let gm = self.vector_op(
            l,
            "moe.experts.gated_mul",
            OpKind::GatedMultiply { elements: rows * f },
            vec![a, u],
            vec![rows, f],
        );
        let d = expert_linear(self, "moe.experts.down_proj", gm, f, h);
        self.vector_op(
            l,
            "moe.combine",
            OpKind::ExpertCombine { elements: rows * h },
            vec![d, logits],
            vec![t, h],
        )
    }

    fn head(&mut self, x: TensorId) {
        let m = self.model;
        let t = self.tokens;
        let batch = self.graph.batch;
        // The final norm of the rows the head reads: one per sequence (the last token's for a
        // language-model head, the first's for a pooler or classifier).
        let x = if m.final_norm {
            self.norm(None, "final_norm", x, batch.min(t))
        } else {
            x
        };
        match m.head {
            OutputHead::LmHead => {
                let shared = if m.tied_embeddings {
                    self.graph
                        .tensors()
                        .iter()
                        .position(|t| t.name == "token_embedding")
                        .map(|i| TensorId(i as u32))
                } else {
                    None
                };
                // A tied head multiplies by the embedding table, in the embedding's format.
                let class = if shared.is_some() {
                    OpClass::Embedding
                } else {
                    OpClass::Head
                };
                self.linear(
                    None, "lm_head", class, x, batch, m.hidden, m.vocab, false, shared,
                );
            }
            OutputHead::Pooler => {
                self.linear(
                    None,
                    "pooler",
                    OpClass::Head,
                    x,
                    batch,
                    m.hidden,
                    m.hidden,
                    true,
                    None,
                );
            }
            OutputHead::Classifier { classes } => {
                self.linear(
                    None,
                    "classifier",
                    OpClass::Head,
                    x,
                    batch,
                    m.hidden,
                    classes,
                    true,
                    None,
                );
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn visible_pairs_closed_form() {
        for s in 0..40u64 {
            for limit in 1..45u64 {
                let brute: u64 = (1..=s).map(|i| i.min(limit)).sum();
                assert_eq!(visible_pairs(s, limit), brute, "s={s} limit={limit}");
            }
        }
        assert_eq!(visible_pairs(10, u64::MAX), 55);
    }

    #[test]
    fn experts_hit_bounds() {
        assert_eq!(Builder::experts_hit(8, 2, 1), 2);
        assert_eq!(Builder::experts_hit(8, 2, 4096), 8);
        let mid = Builder::experts_hit(8, 2, 3);
        assert!((2..=8).contains(&mid));
    }
}
