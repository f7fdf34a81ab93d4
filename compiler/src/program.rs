//! Whole passes (a prefill, or one decode step): every operator of the graph lowered in graph
//! order into one program.
//!
//! - Linear layers (MoE experts hit, LM head) stream their encoded weights from every channel of
//!   the weight memory ([`crate::lower`]); prefill products are tiled by input rows through the
//!   results buffer. Sibling projections that read the same input (query/key/value, gate/up) are
//!   fused into one stream.
//! - Decode attention scores and values stream each KV head's cached keys and values the same way
//!   from the KV memory, all query heads of a KV group sharing them (grouped-query attention).
//!   Prefill attention runs in blocks of query tokens, each reading back from the cache, as a
//!   decode step does, the keys and values the KV append stored, up to its last query for causal
//!   models; the block size is the one the shared cost model finds cheapest. The rotary embedding
//!   (or, without one, a `copy` per head and block out of the fused projection's rows) lays the
//!   queries out per block (each query head's rows of the block together), so a KV
//!   head's query rows of a block are one product's rows; a causal softmax (`causal`, one per
//!   block over every head's rows) zeroes each row's later keys; each query head's context rows land in token-major rows.
//! - A decoder's prefill whose tokens see every earlier key computes on data
//!   (`data_semantics`): the final norm normalises each sequence's last row for the head; its
//!   logits and every key and value it stores equal decode steps run token by token
//!   (`sim/tests/decode_step.rs`).
//! - A decode step of several sequences computes every linear layer as one product of `batch`
//!   rows over the shared weights (int8 rows quantised with a scale each); each sequence appends
//!   to and attends over its own cache region, the sequences' attention waves streaming as one.
//! - A linear layer's bias, and an ungated FFN's activation, run in its products' epilogue
//!   (`epilogue_activations`). Norms, softmax, other activations, gated multiplies, rotary and
//!   residual adds run on the special-function unit, in pieces that fit the activation buffer, reading a fused
//!   projection's parts at their row stride; the KV append stores the
//!   new keys and values; the embedding gathers each token's row of every table (token, learned
//!   position) and adds them.
//! - Operators (and prefill attention blocks) follow each other through a barrier on the system
//!   unit: every terminal instruction of an operator (the last one of each compute unit, every
//!   DMA nobody waits for) gives the system unit a token, one `nop` takes each, and the last gives
//!   a token to the first instruction of every unit the next operator uses. The next operator's
//!   weights therefore do not prefetch during the previous one's last compute, which keeps the
//!   weight buffer's halves free of overlap at the cost of one DMA latency per operator.
//! - Off-chip bytes equal the graph's (weights, KV cache read and written, embedding rows), plus,
//!   in prefill, the prompt's keys and values read back by the attention blocks.

use crate::kv::{
    key_counts, kv_precision, visible_keys, AttentionOperands, KvLayout, QuerySplit, RowScales,
    Rows,
};
use crate::lower::{
    accel_channels, buffer_named, linear_stream, lower_streamed, memory_channels, product_unit,
    BufferRoles, Encoding, LowerError, Streamed, DRAM_ALIGN, MIN_WAVES,
};
use crate::place::{MappedLinear, OnChip, ParamLoad, PassMap};
use std::collections::{BTreeMap, BTreeSet};
use tessera_spec::accel::{Accelerator, Holds, SfuOp};
use tessera_spec::analytical::{self, MatrixWork};
use tessera_spec::compression::{ActivationFormat, Compression, KvFormat, OpClass, Sparsity};
use tessera_spec::graph::{Graph, Op, OpKind, Phase, TensorId};
use tessera_spec::isa::{
    ActCode, BufRef, Dma, Instruction, Loop, OutCode, Program, SfuInstr, SparseCode, Sync,
    SysInstr, SysOp, Unit, UnitMask, WeightCode,
};
use tessera_spec::model::{Activation, ModelConfig, NormKind, OutputHead};

/// The length a pass is compiled for (a decode step's context, a prefill's prompt): `length`
/// rounded up to a multiple of `bucket` (at least one bucket), so that one program serves every
/// length in its bucket.
pub fn bucket_length(length: u64, bucket: u64) -> u64 {
    length.max(1).div_ceil(bucket.max(1)) * bucket.max(1)
}

/// Compiles a pass (a prefill or one decode step) of `model` into one program ending in `halt`.
/// The KV cache holds `kv_tokens` tokens per sequence (at least the pass's own), so that every
/// program of a run that passes the same figure places the cache alike ([`KvLayout`]).
pub fn compile_pass(
    accel: &Accelerator,
    comp: &Compression,
    model: &ModelConfig,
    graph: &Graph,
    kv_tokens: u64,
) -> Result<Program, LowerError> {
    compile_pass_mapped(accel, comp, model, graph, kv_tokens).map(|(program, _)| program)
}

/// [`compile_pass`], with where the program keeps its data ([`PassMap`]).
pub fn compile_pass_mapped(
    accel: &Accelerator,
    comp: &Compression,
    model: &ModelConfig,
    graph: &Graph,
    kv_tokens: u64,
) -> Result<(Program, PassMap), LowerError> {
    let mut cursors = vec![0u64; accel_channels(accel) as usize];
    let mut chain = Chain::default();
    let own = match graph.phase {
        Phase::Prefill { seq } => seq,
        Phase::Decode { context } => context + 1,
    };
    let kv = match graph
        .ops()
        .find(|o| matches!(o.kind, OpKind::KvAppend { .. }))
    {
        Some(op) => Some(KvLayout::new(
            accel,
            comp,
            model,
            graph.batch,
            kv_tokens.max(own),
            &op.name,
        )?),
        None => None,
    };
    let mut place = Placement {
        on_chip: OnChip::new(accel, graph),
        map: PassMap {
            kv: kv.clone(),
            ..PassMap::default()
        },
        op: 0,
        params: None,
        data: data_semantics(accel, comp, model, graph).is_ok(),
        row_bytes: BTreeMap::new(),
    };
    let query_block = prefill_query_block(accel, comp, model, graph)?;
    // The operators to lower (siblings fused), each with the index of the first graph operator
    // it covers and of the next.
    let ops: Vec<&Op> = graph.ops().collect();
    let mut lowered = Vec::new();
    let mut next = 0;
    while next < ops.len() {
        let (fused, count) = fuse_siblings(&ops[next..]);
        lowered.push((fused, next, next + count));
        next += count;
    }
    let epilogue_acts = epilogue_activations(lowered.iter().map(|(op, _, _)| op));
    for (fused, first, next) in &lowered {
        place.on_chip.release_before(*first);
        place.op = next - 1;
        let op = fused;
        let ctx = Lowering {
            accel,
            comp,
            model,
            graph,
            kv: kv.as_ref(),
            query_block,
            epilogue_acts: &epilogue_acts,
        };
        let roles = BufferRoles::by_name(accel, &op.name)?;
        // Norm weights, rotary angles and biases are their operator's `aux` operand.
        let param_bytes = match op.kind {
            OpKind::Norm { .. } | OpKind::Rotary { .. } => Some(op.cost.weight_bytes),
            OpKind::Linear { n, bias: true, .. } => Some(2 * n),
            _ => None,
        };
        place.params =
            param_bytes.map(|bytes| place.on_chip.scratch(roles.activations, bytes, place.op));
        let bodies = lower_op(&ctx, op, &mut cursors, &mut place)?;
        // Parameters that are not streamed rows (norm weights, biases, angles) load into the
        // activation buffer before the operator runs.
        let moved: u64 = bodies.iter().flatten().map(dma_bytes).sum();
        let owed = op.cost.weight_bytes + op.cost.kv_write_bytes;
        if owed > moved {
            let at = match place.params {
                Some(at) => at,
                None => place
                    .on_chip
                    .scratch(roles.activations, owed - moved, place.op),
            };
            let (first, _) = memory_channels(accel, Holds::Weights, &op.name)?;
            let loads = dma_spread(
                true,
                (at.buffer, at.addr as u64),
                owed - moved,
                (first, 1),
                &mut cursors,
            );
            place.map.loads.push(ParamLoad {
                op: op.name.clone(),
                pieces: loads.iter().flat_map(dma_pieces).collect(),
            });
            chain.push(loads);
        }
        for body in bodies {
            chain.push(body);
        }
    }
    check_capacity(
        accel,
        &cursors,
        kv.as_ref().map_or(0, KvLayout::area_per_channel),
    )?;
    let mut instructions = chain.finish();
    instructions.push(Instruction::Sys(SysInstr {
        sync: Sync::default(),
        op: SysOp::Halt,
    }));
    let mut map = place.map;
    map.off_chip_bytes = cursors;
    map.tensors = place.on_chip.named(graph);
    map.functional = place.data && place.on_chip.fits;
    Ok((Program { instructions }, map))
}

/// Whether a pass's program computes on real data when its activations fit on chip
/// ([`PassMap::functional`]); otherwise why it is a timing model only.
pub fn data_semantics(
    accel: &Accelerator,
    comp: &Compression,
    model: &ModelConfig,
    graph: &Graph,
) -> Result<(), String> {
    let roles = BufferRoles::by_name(accel, "pass").map_err(|e| e.reason)?;
    let kv_buffer = roles_kv(accel, "pass").map_err(|e| e.reason)?;
    let embedding = comp.weight(OpClass::Embedding);
    let format = embedding.format;
    let rows_alike = ((format.bits == 8 && format.group_size == 0 && format.symmetric)
        || format.bits == 16)
        && embedding.sparsity == Sparsity::Dense;
    let prefill = match graph.phase {
        Phase::Prefill { seq } => Some(seq),
        Phase::Decode { .. } => None,
    };
    // A causal softmax masks a prefix of the keys: every prompt token must see all keys up to
    // its own, as the last one does.
    let prefix = |seq: u64| {
        key_counts(&visible_keys(model, comp, seq.saturating_sub(1)))
            .iter()
            .all(|&count| count == seq)
    };
    let reasons = [
        (
            prefill.is_some() && graph.batch > 1 && !model.final_norm,
            "a prefill of several sequences without a final norm (the head would read each \
             sequence's last row, which are not adjacent)",
        ),
        (
            prefill.is_some() && !model.causal,
            "an encoder's prefill (bidirectional attention into a pooler or classifier, which no \
             reference decoder checks)",
        ),
        (
            prefill.is_some_and(|seq| model.causal && !prefix(seq)),
            "a prefill whose tokens do not see every earlier key (a sliding window or streaming \
             heads; the causal softmax masks a prefix of the keys)",
        ),
        (
            graph.tokens() > 1
                && graph.ops().any(|o| match o.kind {
                    OpKind::Linear { n, .. } => n > u16::MAX as u64,
                    _ => false,
                }),
            "products of several rows with more than 65,535 outputs (a result row's stride \
             does not fit its field)",
        ),
        (
            roles.activations == roles.weights
                || roles.results == roles.weights
                || [roles.activations, roles.results].contains(&kv_buffer),
            "the activation or results buffer is also the weight or KV buffer",
        ),
        (
            comp.kv.format == KvFormat::Int4,
            "an int4 KV cache (the special-function unit quantises rows to int8 only)",
        ),
        (
            !rows_alike,
            "embedding rows that are neither fp16 nor int8 with one scale and no zero point",
        ),
        (
            model.moe.is_some() || model.vision.is_some(),
            "experts or image inputs",
        ),
    ];
    match reasons.iter().find(|(applies, _)| *applies) {
        Some((_, why)) => Err(why.to_string()),
        None => Ok(()),
    }
}

/// `(channel, address, bytes)` of each lane of a DMA without loops.
fn dma_pieces(ins: &Instruction) -> Vec<(u8, u64, u64)> {
    match ins {
        Instruction::Load(d) | Instruction::Store(d) => d
            .lanes()
            .map(|l| (l.channel, l.dram_addr, l.bytes as u64))
            .collect(),
        _ => Vec::new(),
    }
}

/// The placement state of a pass being lowered.
struct Placement {
    on_chip: OnChip,
    map: PassMap,
    /// Index of the (last fused) operator being lowered.
    op: usize,
    /// Where the operator's parameters load, when they are its `aux` operand.
    params: Option<BufRef>,
    /// The pass can compute on real data ([`data_semantics`]).
    data: bool,
    /// Bytes from one token's row to the next of the tensors whose rows are not packed: a fused
    /// linear layer's parts (rows as wide as the fused output) and the rotated queries and keys
    /// (one row of queries then keys per token).
    row_bytes: BTreeMap<TensorId, u64>,
}

impl Placement {
    /// Where `tensor` (an operator's input) is; address 0 of `fallback` for timing models.
    fn input(&self, tensor: Option<&TensorId>, fallback: u8) -> BufRef {
        self.on_chip.at(tensor, fallback)
    }

    /// A region of `bytes` in `buffer` for `outputs`, each `(tensor, offset)`.
    fn output(&mut self, buffer: u8, bytes: u64, outputs: &[(TensorId, u64)]) -> BufRef {
        self.on_chip.place(buffer, bytes, outputs)
    }

    /// A region of `bytes` in `buffer` for the current operator alone.
    fn scratch(&mut self, buffer: u8, bytes: u64) -> BufRef {
        self.on_chip.scratch(buffer, bytes, self.op)
    }

    /// `bytes` as an offset between the rows of a placed tensor; 0 once a tensor found no room
    /// (timing models, whose operands all start at address 0).
    fn stride(&self, bytes: u64) -> u64 {
        if self.on_chip.fits {
            bytes
        } else {
            0
        }
    }

    /// Bytes between the token rows of `tensor`, whose rows hold `packed` bytes each when they
    /// follow each other packed ([`Self::stride`]).
    fn row_stride(&self, tensor: Option<&TensorId>, packed: u64) -> u64 {
        let bytes = tensor.and_then(|t| self.row_bytes.get(t)).copied();
        self.stride(bytes.unwrap_or(packed))
    }
}

/// Checks that a model whose decoder layers all look alike fits off chip, from its pass compiled
/// with one of its `layers` and with `1 + extra` ([`PassMap`]s `one` and `more`): every further
/// layer places as many bytes in each channel, and takes as much KV cache, as the later ones
/// did on average (rounded up).
pub fn check_repeated_layers_fit(
    accel: &Accelerator,
    one: &PassMap,
    more: &PassMap,
    extra: u64,
    layers: u64,
) -> Result<(), LowerError> {
    let grow = |a: u64, b: u64| {
        a + (layers.saturating_sub(1) * b.saturating_sub(a)).div_ceil(extra.max(1))
    };
    let placed: Vec<u64> = one
        .off_chip_bytes
        .iter()
        .zip(&more.off_chip_bytes)
        .map(|(&a, &b)| grow(a, b))
        .collect();
    let cache = |m: &PassMap| m.kv.as_ref().map_or(0, KvLayout::area_per_channel);
    check_capacity(accel, &placed, grow(cache(one), cache(more)))
}

/// Fails when the off-chip data a program places (weights, spilled activations) ends past a
/// channel's share of its memory's capacity, less the KV cache's `cache_per_channel` bytes in
/// the KV memory.
fn check_capacity(
    accel: &Accelerator,
    cursors: &[u64],
    cache_per_channel: u64,
) -> Result<(), LowerError> {
    let mut first = 0;
    for (i, memory) in accel.memories().iter().enumerate() {
        let channels = memory.channels();
        let per_channel = memory.capacity().0 / channels.max(1);
        let cache = if memory.holds(Holds::Kv) {
            cache_per_channel
        } else {
            0
        };
        for c in first..first + channels {
            let used = cursors[c as usize] + cache;
            if used > per_channel {
                return Err(LowerError {
                    op: "program".into(),
                    reason: format!(
                        "its off-chip data (weights, KV cache, spilled activations) take {:.1} MiB \
                         of channel {} of memory `{}`, whose channels hold {:.1} MiB each",
                        used as f64 / MIB,
                        c - first,
                        memory.name(),
                        per_channel as f64 / MIB
                    ),
                    key: format!("memories[{i}].capacity_gib"),
                });
            }
        }
        first += channels;
    }
    Ok(())
}

/// Bytes per MiB, for messages.
pub(crate) const MIB: f64 = 1024.0 * 1024.0;

/// The first operator of `ops`, fused with the linear layers right after it that read the same
/// input with the same shape of reduction, compression class and tokens (query, key and value
/// projections; gate and up projections): one streamed product over all their weight rows, so no
/// barrier and no extra pipeline fills separate them. Returns the operator to lower and how many
/// of `ops` it covers.
fn fuse_siblings(ops: &[&Op]) -> (Op, usize) {
    let first = ops[0];
    let OpKind::Linear {
        class,
        m,
        k,
        weight_copies,
        bias,
        ..
    } = first.kind
    else {
        return (first.clone(), 1);
    };
    let mut fused = first.clone();
    let mut count = 1;
    for op in &ops[1..] {
        let OpKind::Linear {
            class: c,
            m: mm,
            k: kk,
            n: nn,
            weight_copies: w,
            bias: b,
        } = op.kind
        else {
            break;
        };
        // Biased siblings' biases load side by side, as their outputs are.
        if (c, mm, kk, w, b) != (class, m, k, weight_copies, bias)
            || op.inputs.first() != first.inputs.first()
        {
            break;
        }
        if let OpKind::Linear { n, .. } = &mut fused.kind {
            *n += nn;
        }
        let suffix = op.name.rsplit('.').next().unwrap_or(&op.name);
        fused.name = format!("{}+{suffix}", fused.name);
        fused.cost.macs += op.cost.macs;
        fused.cost.weight_bytes += op.cost.weight_bytes;
        fused.cost.vector = match (fused.cost.vector, op.cost.vector) {
            (Some((sfu, a)), Some((_, b))) => Some((sfu, a + b)),
            (one, other) => one.or(other),
        };
        fused.cost.act_out_bytes += op.cost.act_out_bytes;
        fused.outputs.extend(op.outputs.iter().copied());
        count += 1;
    }
    (fused, count)
}

/// Operators' instruction lists joined by barriers on the system unit.
#[derive(Debug, Default)]
struct Chain {
    instructions: Vec<Instruction>,
    /// Units of the tokens the next barrier must take.
    pending: Option<Vec<Unit>>,
}

impl Chain {
    /// Appends one operator's instructions after a barrier on the previous operator's.
    fn push(&mut self, mut body: Vec<Instruction>) {
        if body.is_empty() {
            return;
        }
        if let Some(waits) = self.pending.take() {
            // A unit whose first instruction already waits on the system unit (a wave's compute,
            // released by the nops that count its loads) follows the barrier through the system
            // unit's order; giving it the barrier's token as well would let it take that token
            // in place of its own and start before its operands are in.
            let mut next_units = BTreeSet::new();
            for ins in body.iter() {
                let unit = ins.opcode().unit();
                if !next_units.contains(&unit)
                    && body
                        .iter()
                        .find(|i| i.opcode().unit() == unit)
                        .map(|i| i.sync().wait.units().any(|u| u == Unit::System))
                        == Some(false)
                {
                    next_units.insert(unit);
                }
            }
            self.instructions.extend(barrier(&waits, &next_units));
            for unit in next_units {
                if let Some(first) = body.iter_mut().find(|i| i.opcode().unit() == unit) {
                    add_wait(first, Unit::System);
                }
            }
        }
        self.pending = Some(mark_terminals(&mut body));
        self.instructions.extend(body);
    }

    /// Every instruction, after a last barrier that waits for everything.
    fn finish(mut self) -> Vec<Instruction> {
        if let Some(waits) = self.pending.take() {
            self.instructions.extend(barrier(&waits, &BTreeSet::new()));
        }
        self.instructions
    }
}

/// Bytes a DMA instruction moves (0 for others).
fn dma_bytes(ins: &Instruction) -> u64 {
    match ins {
        Instruction::Load(d) | Instruction::Store(d) => d.total_bytes(),
        _ => 0,
    }
}

/// Gives the system unit a token from every terminal instruction of `body` and returns the unit
/// of each such token, in order.
fn mark_terminals(body: &mut [Instruction]) -> Vec<Unit> {
    let mut last_of_unit = [None; 6];
    for (i, ins) in body.iter().enumerate() {
        last_of_unit[ins.opcode().unit() as usize] = Some(i);
    }
    let mut units = Vec::new();
    for (i, ins) in body.iter_mut().enumerate() {
        let unit = ins.opcode().unit();
        let dma = matches!(unit, Unit::Load | Unit::Store);
        let terminal = if dma {
            ins.sync().release == UnitMask::NONE
        } else {
            last_of_unit[unit as usize] == Some(i)
        };
        if terminal {
            add_release(ins, Unit::System);
            units.push(unit);
        }
    }
    units
}

/// One `nop` per token in `waits`; the last releases every unit in `next`.
fn barrier(waits: &[Unit], next: &BTreeSet<Unit>) -> Vec<Instruction> {
    let n = waits.len();
    waits
        .iter()
        .enumerate()
        .map(|(i, w)| {
            let release = if i + 1 == n {
                UnitMask::of(&next.iter().copied().collect::<Vec<_>>())
            } else {
                UnitMask::NONE
            };
            Instruction::Sys(SysInstr {
                sync: Sync {
                    wait: UnitMask::of(&[*w]),
                    release,
                },
                op: SysOp::Nop,
            })
        })
        .collect()
}

fn add_wait(ins: &mut Instruction, unit: Unit) {
    let mut s = ins.sync();
    s.wait = UnitMask::of(&s.wait.units().chain([unit]).collect::<Vec<_>>());
    ins.set_sync(s);
}

fn add_release(ins: &mut Instruction, unit: Unit) {
    let mut s = ins.sync();
    s.release = UnitMask::of(&s.release.units().chain([unit]).collect::<Vec<_>>());
    ins.set_sync(s);
}

/// Special-function instructions `sfu`, then `body`, whose first instruction on `unit` waits
/// for the last of them (which gives `unit` the token).
fn after_sfu(
    mut sfu: Vec<Instruction>,
    mut body: Vec<Instruction>,
    unit: Unit,
) -> Vec<Instruction> {
    let first = body.iter_mut().find(|i| i.opcode().unit() == unit);
    if let (Some(last), Some(first)) = (sfu.last_mut(), first) {
        add_release(last, unit);
        add_wait(first, Unit::Sfu);
    }
    sfu.extend(body);
    sfu
}

/// What lowering an operator needs besides the operator.
struct Lowering<'a> {
    accel: &'a Accelerator,
    comp: &'a Compression,
    model: &'a ModelConfig,
    graph: &'a Graph,
    /// The KV cache's layout, when the pass has one.
    kv: Option<&'a KvLayout>,
    /// Query tokens per block of prefill attention ([`query_block`]; 0 in decode).
    query_block: u64,
    /// Activations that linear layers apply in their products' epilogue
    /// ([`epilogue_activations`]).
    epilogue_acts: &'a BTreeMap<TensorId, (TensorId, ActCode)>,
}

/// The activations that linear layers apply in their products' epilogue (the graph's
/// `epilogue` activations), by the layer's output, among the operators a pass lowers (`ops`,
/// siblings fused): the activation's output and function. The layer's results are then the
/// activation's output, and the activation operator computes nothing. A flagged activation whose
/// input is not a single-output linear layer's runs on the special-function unit.
fn epilogue_activations<'o>(
    ops: impl Iterator<Item = &'o Op> + Clone,
) -> BTreeMap<TensorId, (TensorId, ActCode)> {
    let linear_outputs: BTreeSet<TensorId> = ops
        .clone()
        .filter(|op| {
            matches!(op.kind, OpKind::Linear { weight_copies, .. } if weight_copies <= 1)
                && op.outputs.len() == 1
        })
        .map(|op| op.outputs[0])
        .collect();
    ops.filter_map(|op| {
        let OpKind::Activation {
            function,
            epilogue: true,
            ..
        } = op.kind
        else {
            return None;
        };
        let input = *op.inputs.first().filter(|t| linear_outputs.contains(t))?;
        let act = match function {
            Activation::Silu => ActCode::Silu,
            Activation::Gelu => ActCode::Gelu,
            Activation::Relu => ActCode::Relu,
        };
        Some((input, (*op.outputs.first()?, act)))
    })
    .collect()
}

/// The instructions of one operator (no barrier, no `halt`), as bodies that follow each other
/// through barriers; its outputs are placed on chip and its streamed weights recorded in
/// `place`.
fn lower_op(
    ctx: &Lowering,
    op: &Op,
    cursors: &mut [u64],
    place: &mut Placement,
) -> Result<Vec<Vec<Instruction>>, LowerError> {
    let (accel, comp, model, graph) = (ctx.accel, ctx.comp, ctx.model, ctx.graph);
    let roles = BufferRoles::by_name(accel, &op.name)?;
    let capacity = accel.buffers()[roles.activations as usize].bytes().0;
    let tokens = graph.tokens();
    let input = |place: &Placement, i: usize, fallback: u8| place.input(op.inputs.get(i), fallback);
    let out_tensor = |i: usize| op.outputs.get(i).copied().into_iter();
    // An fp16 output of `elements` in the activation buffer.
    let fp16_out = |place: &mut Placement, elements: u64| -> BufRef {
        let outputs: Vec<(TensorId, u64)> = out_tensor(0).map(|t| (t, 0)).collect();
        place.output(roles.activations, 2 * elements, &outputs)
    };
    let sfu = |code: SfuOp, (rows, cols): (u64, u64), at: SfuOperands| {
        sfu_rows(capacity, code, (rows, cols), at)
    };
    let body = match op.kind {
        OpKind::Linear {
            class,
            m,
            k,
            n,
            weight_copies,
            bias,
        } => {
            let copies = weight_copies.max(1);
            let rows = m.div_ceil(copies).max(1);
            let x = input(place, 0, roles.activations);
            // A prefill's head without a final norm reads its row (of its one sequence: see
            // `data_semantics`).
            let x = match graph.phase {
                Phase::Prefill { seq } if m < tokens && !model.final_norm => offset(
                    x,
                    head_row(model, seq) * place.row_stride(op.inputs.first(), 2 * k),
                ),
                _ => x,
            };
            // The fused layers' outputs side by side in every row of one fp16 tensor; or one
            // layer's results, which are also the output of the activation its epilogue applies.
            let mut parts = Vec::new();
            let mut outputs = Vec::new();
            let mut offset = 0;
            for &t in &op.outputs {
                let features = graph.tensor(t).shape.last().copied().unwrap_or(0);
                parts.push((graph.tensor(t).name.clone(), features));
                outputs.push((t, 2 * offset));
                offset += features;
            }
            let act = match op.outputs[..] {
                [out] => ctx.epilogue_acts.get(&out).copied(),
                _ => None,
            };
            outputs.extend(act.map(|(t, _)| (t, 0)));
            let c = place.output(roles.results, 2 * m * n, &outputs);
            for &(t, _) in &outputs {
                place.row_bytes.insert(t, 2 * n);
            }
            let stream = linear_stream(accel, comp, &op.name, class, (rows, k, n), roles)?;
            // Int8 rows carry their scale.
            let row_bytes = if stream.act_int8 { k + 2 } else { 2 * k };
            // A bias (loaded before the operator, `place.params`) is added by each product's
            // epilogue; by the special-function unit after the products of several copies.
            let bias = bias.then_some(place.params).flatten();
            let s = Streamed {
                copies,
                c_addr: c.addr as u64,
                out: OutCode::Fp16,
                a_addr: x.addr as u64,
                epilogue: (
                    bias.filter(|_| copies == 1),
                    act.map_or(ActCode::None, |(_, code)| code),
                ),
                ..stream
            };
            if copies == 1 && rows * row_bytes > capacity {
                return spilled_linear(accel, op, &s, capacity, cursors);
            }
            // Int8 activations: the special-function unit quantises the rows (with a scale
            // each) first.
            let quantized = s
                .act_int8
                .then(|| place.scratch(roles.activations, rows * (k + 2)));
            // The matrix engine reads fp16 rows where they are (in the results buffer when
            // another product wrote them).
            let s = Streamed {
                a_addr: quantized.map_or(s.a_addr, |q| q.addr as u64),
                activations: quantized.map_or(x.buffer, |q| q.buffer),
                a_scaled: s.act_int8,
                ..s
            };
            let lowered = lower_streamed(accel, &s, cursors)?;
            place.map.linears.push(MappedLinear {
                parts,
                waves: lowered.waves,
            });
            let compute = product_unit(rows);
            let quantize = quantized.map_or(Vec::new(), |q| {
                sfu(SfuOp::Quantize, (rows, k), SfuOperands::new(x, None, q))
            });
            let mut body = after_sfu(quantize, lowered.instructions, compute);
            if let Some(b) = bias.filter(|_| copies > 1) {
                add_bias(accel, &mut body, compute, (c, b), (m, n));
            }
            body
        }
        OpKind::AttentionScores {
            heads, head_dim, ..
        }
        | OpKind::AttentionValues {
            heads, head_dim, ..
        } => {
            let values = matches!(op.kind, OpKind::AttentionValues { .. });
            let context = match graph.phase {
                Phase::Prefill { seq } => {
                    return prefill_attention(ctx, op, place, (seq, heads, head_dim), values);
                }
                Phase::Decode { context } => context,
            };
            let layout = kv_layout(ctx, op)?;
            let keys = visible_keys(model, comp, context);
            let kv_heads = keys.len() as u64;
            let rows = heads / kv_heads.max(1);
            // Scores (every query row against its head's keys) or context rows, fp16.
            let elements = out_tensor(0)
                .map(|t| graph.tensor(t).shape.iter().product::<u64>())
                .sum::<u64>();
            let outputs: Vec<(TensorId, u64)> = out_tensor(0).map(|t| (t, 0)).collect();
            let at = AttentionOperands {
                a: input(place, 0, roles.activations),
                c: place.output(roles.results, 2 * elements, &outputs),
                kv_buffer: roles_kv(accel, &op.name)?,
                split: None,
            };
            let layer = op.layer.unwrap_or(0) as u64;
            // Scores over an integer cache with int8 activations: each KV head's query rows
            // quantised (values, then a scale per row) for the matrix engine.
            let (_, act_int8) = kv_precision(comp);
            let quantize_queries = !values && act_int8 && comp.kv.format != KvFormat::Fp16;
            let compute = product_unit(rows);
            let per_head = rows * (head_dim + 2);
            let batch = graph.batch.max(1);
            // Each sequence's operands: its query rows (a row of the rotated queries, or of the
            // fused projection's output) or probabilities (`rows × keys` per head, heads one
            // after another), and its scores or context rows, packed after the previous
            // sequence's.
            let scores = 2 * rows * key_counts(&keys).iter().sum::<u64>();
            let (a_row, c_row) = match values {
                false => (
                    place.row_stride(op.inputs.first(), 2 * heads * head_dim),
                    scores,
                ),
                true => (place.stride(scores), 2 * heads * head_dim),
            };
            let c_row = place.stride(c_row);
            let mut seqs: Vec<(u64, AttentionOperands)> = (0..batch)
                .map(|seq| {
                    let a = offset(at.a, seq * a_row);
                    let c = offset(at.c, seq * c_row);
                    (seq, AttentionOperands { a, c, ..at })
                })
                .collect();
            let mut quantize = Vec::new();
            if quantize_queries {
                // Every sequence's query rows, quantised one sequence after another.
                let q8 = place.scratch(roles.activations, batch * kv_heads * per_head);
                for (seq, seq_at) in seqs.iter_mut() {
                    let q8 = offset(q8, place.stride(*seq * kv_heads * per_head));
                    for h in 0..kv_heads {
                        let src = offset(seq_at.a, place.stride(h * rows * head_dim * 2));
                        let dst = offset(q8, place.stride(h * per_head));
                        let at = SfuOperands::new(src, None, dst);
                        quantize.extend(sfu(SfuOp::Quantize, (rows, head_dim), at));
                    }
                    seq_at.a = q8;
                }
            }
            // The sequences' waves stream through the KV buffer's halves as one stream.
            let waves =
                layout.attention_batch(accel, comp, layer, rows, &keys, values, &seqs, &op.name)?;
            after_sfu(quantize, waves, compute)
        }
        OpKind::Softmax { elements } => {
            match graph.phase {
                // Each KV head's query rows over its visible keys, heads with as many keys in
                // one instruction.
                Phase::Decode { context } => {
                    let at = SfuOperands::new(
                        input(place, 0, roles.activations),
                        None,
                        fp16_out(place, elements),
                    );
                    let group = model.heads as u64 / model.kv_heads.max(1) as u64;
                    let counts = key_counts(&visible_keys(model, comp, context));
                    let mut body = Vec::new();
                    let mut done = 0;
                    for _ in 0..graph.batch.max(1) {
                        let mut h = 0;
                        while h < counts.len() {
                            let same = counts[h..].iter().take_while(|&&c| c == counts[h]).count();
                            let rows = same as u64 * group;
                            body.extend(sfu(
                                SfuOp::Softmax,
                                (rows, counts[h]),
                                at.offset(place.stride(2 * done)),
                            ));
                            done += rows * counts[h];
                            h += same;
                        }
                    }
                    body
                }
                // Per query block, each query head's rows over the block's keys, each row over
                // the keys up to its own position (causal models).
                Phase::Prefill { seq } => {
                    let heads = model.heads as u64;
                    let per_seq = prefill_scores(ctx, seq);
                    let at = SfuOperands::new(
                        input(place, 0, roles.activations),
                        None,
                        fp16_out(place, graph.batch.max(1) * per_seq / 2),
                    );
                    let mut body = Vec::new();
                    for s in 0..graph.batch.max(1) {
                        for (t0, queries, keys, scores_at) in prefill_blocks(ctx, seq) {
                            let at = at.offset(place.stride(s * per_seq + scores_at));
                            // Every query head's rows of the block at once (as many heads as
                            // the rows field holds), the causal mask restarting per head.
                            let causal = if model.causal { t0 + 1 } else { 0 };
                            let per = (u16::MAX as u64 / queries.max(1)).clamp(1, heads);
                            for j in (0..heads).step_by(per as usize) {
                                let rows = (heads - j).min(per) * queries;
                                let at = at.offset(place.stride(2 * j * queries * keys));
                                body.push(Instruction::Sfu(SfuInstr {
                                    causal: causal as u16,
                                    causal_period: queries as u16,
                                    ..SfuInstr::new(
                                        SfuOp::Softmax,
                                        (at.src, at.src, at.dst),
                                        rows as u16,
                                        keys as u16,
                                    )
                                }));
                            }
                        }
                    }
                    body
                }
            }
        }
        OpKind::Norm { kind, rows, width } => {
            let code = match kind {
                NormKind::LayerNorm => SfuOp::LayerNorm,
                NormKind::RmsNorm => SfuOp::RmsNorm,
            };
            let x = input(place, 0, roles.activations);
            let out = fp16_out(place, rows * width);
            match graph.phase {
                // A prefill's final norm: the row of each sequence the head reads.
                Phase::Prefill { seq } if rows < tokens => {
                    let pick = head_row(model, seq);
                    let row = place.stride(2 * width);
                    (0..rows)
                        .flat_map(|s| {
                            let at = SfuOperands::new(
                                offset(x, (s * seq + pick) * row),
                                place.params,
                                offset(out, s * row),
                            );
                            sfu(code, (1, width), at)
                        })
                        .collect()
                }
                _ => sfu(code, (rows, width), SfuOperands::new(x, place.params, out)),
            }
        }
        // Applied by the epilogue of the linear layer that produced the input, which placed
        // this operator's output.
        OpKind::Activation { .. }
            if op
                .inputs
                .first()
                .is_some_and(|t| ctx.epilogue_acts.contains_key(t)) =>
        {
            Vec::new()
        }
        OpKind::Activation {
            function, elements, ..
        } => {
            let code = match function {
                Activation::Silu => SfuOp::Silu,
                Activation::Gelu => SfuOp::Gelu,
                Activation::Relu => SfuOp::Relu,
            };
            let x = input(place, 0, roles.activations);
            let out = fp16_out(place, elements);
            element_wise(
                place,
                op,
                code,
                (tokens, elements),
                (x, None, out),
                capacity,
            )
        }
        OpKind::Rotary { elements } => {
            // Each token's query and key heads (side by side in the fused projection's rows)
            // rotated by its position's angles, into one row of queries then keys per token.
            let (q_width, kv_width) = (model.q_width(), model.kv_width());
            let head_dim = model.head_dim.max(1);
            let q = input(place, 0, roles.activations);
            if let Phase::Prefill { seq } = graph.phase {
                return Ok(vec![prefill_rotary(ctx, op, place, q, seq)?]);
            }
            let rotated = [(0, 0), (1, 2 * q_width)];
            let outputs: Vec<(TensorId, u64)> = rotated
                .iter()
                .filter_map(|&(i, offset)| op.outputs.get(i).map(|&t| (t, offset)))
                .collect();
            let dst = place.output(roles.activations, 2 * elements, &outputs);
            for &(t, _) in &outputs {
                place.row_bytes.insert(t, 2 * (q_width + kv_width));
            }
            let angles = place.params.unwrap_or(dst);
            let src_row = place.stride(2 * (q_width + 2 * kv_width));
            let dst_row = place.stride(2 * (q_width + kv_width));
            let mut body = Vec::new();
            for t in 0..tokens {
                let at = SfuOperands::new(
                    offset(q, t * src_row),
                    Some(angles),
                    offset(dst, t * dst_row),
                );
                body.extend(sfu(
                    SfuOp::Rotary,
                    ((q_width + kv_width) / head_dim, head_dim),
                    at,
                ));
            }
            body
        }
        OpKind::GatedMultiply { elements }
        | OpKind::ResidualAdd { elements }
        | OpKind::ExpertCombine { elements } => {
            let code = match op.kind {
                OpKind::GatedMultiply { .. } => SfuOp::Mul,
                _ => SfuOp::Add,
            };
            let (a, b) = (
                input(place, 0, roles.activations),
                input(place, 1, roles.activations),
            );
            let out = fp16_out(place, elements);
            element_wise(
                place,
                op,
                code,
                (tokens, elements),
                (a, Some(b), out),
                capacity,
            )
        }
        OpKind::ExpertDispatch {
            tokens, experts, ..
        } => {
            let x = input(place, 0, roles.activations);
            sfu(
                SfuOp::Softmax,
                (tokens, experts),
                SfuOperands::new(x, None, fp16_out(place, tokens * experts)),
            )
        }
        OpKind::KvAppend { .. } => {
            let layout = kv_layout(ctx, op)?;
            let positions = match graph.phase {
                Phase::Prefill { seq } => 0..seq,
                Phase::Decode { context } => context..context + 1,
            };
            // Each token's keys (then values) of every head side by side in the activation
            // buffer; a prompt larger than the buffer stores in buffer-sized pieces of tokens
            // (stores only read the buffer, so the pieces may share it).
            let token_stride = model.kv_heads as u64 * model.head_dim * 2;
            let piece = (capacity / token_stride.max(1)).max(1);
            let layer = op.layer.unwrap_or(0) as u64;
            let (keys, values) = (
                input(place, 0, roles.activations),
                input(place, 1, roles.activations),
            );
            let head_dim = model.head_dim;
            let kv_heads = model.kv_heads as u64;
            let integer = comp.kv.format != KvFormat::Fp16;
            // An integer cache stores rows `quantize` wrote (int8 values, then a scale per row),
            // into a scratch area per keys and values; each piece of tokens then follows the
            // previous through a barrier, so that its quantisation does not overwrite rows still
            // being stored.
            let quantized = integer.then(|| {
                let per_rows = piece.min(positions.end - positions.start) * kv_heads;
                let bytes = per_rows * (head_dim + 2);
                [
                    place.scratch(roles.activations, bytes),
                    place.scratch(roles.activations, bytes),
                ]
            });
            // Each sequence's tokens follow the previous sequence's, rows as the keys' and
            // values' producers left them (the rotated keys' rows hold the queries too; the
            // values are a part of the fused projection's rows).
            let seq_tokens = positions.end - positions.start;
            let key_row = place.row_stride(op.inputs.first(), token_stride);
            let value_row = place.row_stride(op.inputs.get(1), token_stride);
            let mut bodies = Vec::new();
            for seq in 0..graph.batch.max(1) {
                let (keys, values) = (
                    offset(keys, seq * seq_tokens * key_row),
                    offset(values, seq * seq_tokens * value_row),
                );
                for start in positions.clone().step_by(piece as usize) {
                    let part = start..(start + piece).min(positions.end);
                    let tokens = part.end - part.start;
                    let rows = tokens * kv_heads;
                    let mut body = Vec::new();
                    let mut stores = Vec::new();
                    for (i, (values, from)) in
                        [(false, keys), (true, values)].into_iter().enumerate()
                    {
                        // The piece's rows where the producer left them: packed, or (values
                        // in a prefill) a part of each fused projection row.
                        let row = match if values { value_row } else { key_row } {
                            0 => token_stride,
                            row => row,
                        };
                        let from = offset(from, place.stride((start - positions.start) * row));
                        let strided = tokens > 1 && row != token_stride && row / 2 <= 0xffff;
                        let src = match quantized {
                            // Each head's rows of the piece at their stride, quantised into
                            // rows then scales per head.
                            Some(q) if strided => {
                                let per_head = tokens * (head_dim + 2);
                                for h in 0..kv_heads {
                                    let src = offset(from, 2 * h * head_dim);
                                    let dst = offset(q[i], place.stride(h * per_head));
                                    body.push(Instruction::Sfu(SfuInstr {
                                        src_stride: (row / 2) as u16,
                                        ..SfuInstr::new(
                                            SfuOp::Quantize,
                                            (src, from, dst),
                                            tokens as u16,
                                            head_dim as u16,
                                        )
                                    }));
                                }
                                Rows {
                                    buffer: q[i].buffer,
                                    addr: q[i].addr as u64,
                                    token_stride: head_dim,
                                    head_stride: per_head,
                                    scales: Some(RowScales {
                                        addr: q[i].addr as u64 + tokens * head_dim,
                                        token_stride: 2,
                                        head_stride: per_head,
                                    }),
                                }
                            }
                            Some(q) => {
                                let at = SfuOperands::new(from, None, q[i]);
                                body.extend(sfu(SfuOp::Quantize, (rows, head_dim), at));
                                Rows {
                                    buffer: q[i].buffer,
                                    addr: q[i].addr as u64,
                                    token_stride: kv_heads * head_dim,
                                    head_stride: head_dim,
                                    scales: Some(RowScales {
                                        addr: q[i].addr as u64 + rows * head_dim,
                                        token_stride: kv_heads * 2,
                                        head_stride: 2,
                                    }),
                                }
                            }
                            None => Rows {
                                buffer: from.buffer,
                                addr: from.addr as u64,
                                token_stride: row,
                                head_stride: head_dim * 2,
                                scales: None,
                            },
                        };
                        stores.extend(layout.append((seq, layer), part.clone(), src, values));
                    }
                    bodies.push(after_sfu(body, stores, Unit::Store));
                }
            }
            if integer {
                return Ok(bodies);
            }
            bodies.concat()
        }
        OpKind::KvRead { .. } => Vec::new(),
        OpKind::Embedding {
            tokens,
            width,
            tables,
        } => {
            let (first, channels) = memory_channels(accel, Holds::Weights, &op.name)?;
            let per_token = op.cost.weight_bytes / tokens.max(1);
            // A token's rows of every table (token, learned position, token type) lie side by
            // side as the host stages them, each as the table stores it. (An image's embedding
            // gathers other parameters: one piece per token, added as a timing model.)
            let row_bytes = comp
                .weight(OpClass::Embedding)
                .encoded_bytes(1, width)
                .total();
            let tables = if per_token == tables * row_bytes {
                tables
            } else {
                1
            };
            let fp16_rows = row_bytes == 2 * width;
            // Tokens' rows land beside each other: one table's fp16 rows in place, else in a
            // scratch area, int8 rows then dequantised to fp16 (the later tables' into `extra`,
            // `sub` tokens at a time), and the tables' fp16 rows added. More tokens than the
            // activation buffer holds are gathered in blocks, each stored to the activation
            // memory before the next overwrites it.
            let extra_row = match fp16_rows {
                true => 0,
                false => (tables - 1) * 2 * width,
            };
            let sub = match extra_row {
                0 => tokens.max(1),
                _ => DEQUANTIZED_TOKENS.min(tokens.max(1)),
            };
            let room = capacity.saturating_sub(sub * extra_row);
            let block = (room / per_token.max(1)).clamp(1, tokens.max(1));
            let in_place = fp16_rows && tables == 1;
            let raw = (!in_place).then(|| place.scratch(roles.activations, block * per_token));
            let extra = (extra_row > 0).then(|| place.scratch(roles.activations, sub * extra_row));
            let out = fp16_out(place, tokens * width);
            let raw = raw.unwrap_or(out);
            // The gathered rows fit the buffer by construction, wherever they start.
            let (raw_row, out_row) = (per_token, place.stride(2 * width));
            let gather = |range: std::ops::Range<u64>, cursors: &mut [u64]| -> Vec<Instruction> {
                range
                    .flat_map(|t| {
                        dma_spread(
                            true,
                            (raw.buffer, raw.addr as u64 + t % block * raw_row),
                            per_token,
                            (first + t % channels, 1),
                            cursors,
                        )
                    })
                    .collect()
            };
            // Table `i`'s fp16 row of token `t`, and the elements between tokens' rows.
            let fp16_row = |t: u64, i: u64| -> (BufRef, u64) {
                match (i, extra) {
                    (0, _) => (offset(out, t * out_row), out_row / 2),
                    (_, Some(extra)) => (
                        offset(extra, t % block % sub * extra_row + (i - 1) * 2 * width),
                        extra_row / 2,
                    ),
                    (_, None) => (
                        offset(raw, t % block * raw_row + i * row_bytes),
                        raw_row / 2,
                    ),
                }
            };
            let dequantize = |range: std::ops::Range<u64>| -> Vec<Instruction> {
                range
                    .flat_map(|t| (0..tables).map(move |i| (t, i)))
                    .flat_map(|(t, i)| {
                        let at = SfuOperands::new(
                            offset(raw, t % block * raw_row + i * row_bytes),
                            None,
                            fp16_row(t, i).0,
                        );
                        sfu(SfuOp::Dequantize, (1, width), at)
                    })
                    .collect()
            };
            // Every later table's rows added into the first's: one instruction over the tokens'
            // rows at their strides.
            let add_tables = |range: std::ops::Range<u64>| -> Vec<Instruction> {
                let rows = range.end - range.start;
                (1..tables)
                    .flat_map(|i| {
                        // The first addition reads the first table's rows where they were
                        // gathered (fp16 tables) or dequantised.
                        let src = match i == 1 && fp16_rows {
                            true => (offset(raw, range.start % block * raw_row), raw_row / 2),
                            false => fp16_row(range.start, 0),
                        };
                        let aux = Some(fp16_row(range.start, i));
                        let dst = fp16_row(range.start, 0);
                        strided_rows(SfuOp::Add, (rows, width), (src, aux, dst), capacity)
                    })
                    .collect()
            };
            let spill = (block < tokens)
                .then(|| memory_channels(accel, Holds::Activations, &op.name))
                .transpose()?;
            let mut bodies = Vec::new();
            for b in (0..tokens).step_by(block as usize) {
                let end = (b + block).min(tokens);
                let loads = gather(b..end, cursors);
                place.map.loads.push(ParamLoad {
                    op: op.name.clone(),
                    pieces: loads.iter().flat_map(dma_pieces).collect(),
                });
                bodies.push(loads);
                let mut sfu_work = Vec::new();
                for t in (b..end).step_by(sub as usize) {
                    let part = t..(t + sub).min(end);
                    if !fp16_rows {
                        sfu_work.extend(dequantize(part.clone()));
                    }
                    sfu_work.extend(add_tables(part));
                }
                if !sfu_work.is_empty() {
                    bodies.push(sfu_work);
                }
                if let Some(spill) = spill {
                    bodies.push(dma_spread(
                        false,
                        (roles.activations, 0),
                        (end - b) * per_token,
                        spill,
                        cursors,
                    ));
                }
            }
            return Ok(bodies);
        }
    };
    Ok(vec![body])
}

/// Tokens whose int8 embedding rows of the later tables (learned positions, token types) are
/// dequantised before they are added to the first table's: the scratch area their fp16 rows
/// wait in. A design choice: 64 rows of OPT-6.7B's 4,096 elements take 512 KiB.
const DEQUANTIZED_TOKENS: u64 = 64;

/// An element-wise special-function operation over `elements` fp16 values of `tokens` rows
/// (operands `(a, b, out)`), the output packed: one instruction over them all when the inputs'
/// rows are packed, else one over the rows, each input's at its stride (a fused linear layer's
/// parts have rows as wide as the fused output), or one per token row when a stride exceeds its
/// field.
fn element_wise(
    place: &Placement,
    op: &Op,
    code: SfuOp,
    (tokens, elements): (u64, u64),
    (a, b, out): (BufRef, Option<BufRef>, BufRef),
    capacity: u64,
) -> Vec<Instruction> {
    let width = elements / tokens.max(1);
    let packed = 2 * width;
    // Row strides of the inputs; 0 (a timing model's) reads as packed.
    let row = |i: usize| match place.row_stride(op.inputs.get(i), packed) {
        0 => packed,
        bytes => bytes,
    };
    let (a_row, b_row) = (row(0), b.map_or(packed, |_| row(1)));
    // Rows narrower than a stride (operands whose elements are not `tokens` rows of their
    // row stride: a timing model's) read as packed.
    if tokens <= 1 || (a_row == packed && b_row == packed) || a_row < packed || b_row < packed {
        return sfu_rows(capacity, code, (1, elements), SfuOperands::new(a, b, out));
    }
    strided_rows(
        code,
        (tokens, width),
        ((a, a_row / 2), b.map(|b| (b, b_row / 2)), (out, 0)),
        capacity,
    )
}

/// Rows of fp16 values in a buffer: where the first starts, and the elements from one row to the
/// next (0: packed).
type StridedRows = (BufRef, u64);

/// An element-wise special-function operation over `rows × width` fp16 elements whose operands
/// (`src`, an optional same-shape `aux`, `dst`) each have rows `stride` elements apart (0:
/// packed): one instruction when every count fits its field, else one per row.
fn strided_rows(
    code: SfuOp,
    (rows, width): (u64, u64),
    (src, aux, dst): (StridedRows, Option<StridedRows>, StridedRows),
    capacity: u64,
) -> Vec<Instruction> {
    let fits = |v: u64| v <= u16::MAX as u64;
    let aux_stride = aux.map_or(0, |a| a.1);
    if [rows, width, src.1, aux_stride, dst.1]
        .into_iter()
        .all(fits)
    {
        return vec![Instruction::Sfu(SfuInstr {
            src_stride: src.1 as u16,
            aux_stride: aux_stride as u16,
            dst_stride: dst.1 as u16,
            ..SfuInstr::new(
                code,
                (src.0, aux.map_or(src.0, |a| a.0), dst.0),
                rows as u16,
                width as u16,
            )
        })];
    }
    // Row `t` of rows `stride` elements apart (0: packed).
    let row = |(at, stride): StridedRows, t: u64| {
        offset(at, t * 2 * if stride == 0 { width } else { stride })
    };
    (0..rows)
        .flat_map(|t| {
            let at = SfuOperands::new(row(src, t), aux.map(|a| row(a, t)), row(dst, t));
            sfu_rows(capacity, code, (1, width), at)
        })
        .collect()
}

/// A linear layer whose input rows exceed the activation buffer (`capacity` bytes): the rows go
/// in blocks whose input and output each fit it, each block loaded from the activation memory,
/// multiplied by the whole weight stream (read again for every block, from the same addresses)
/// and its results stored back, the three steps of a block following each other through
/// barriers. The spill traffic is the layer's input and output activations, as in the analytical
/// model's spill. The products' epilogue (a bias) applies to every block's results.
fn spilled_linear(
    accel: &Accelerator,
    op: &Op,
    s: &Streamed,
    capacity: u64,
    cursors: &mut [u64],
) -> Result<Vec<Vec<Instruction>>, LowerError> {
    let spill = memory_channels(accel, Holds::Activations, &op.name)?;
    let per_row = (op.cost.act_in_bytes.max(op.cost.act_out_bytes)).div_ceil(s.m.max(1));
    let block_rows = (capacity / per_row.max(1)).clamp(1, u16::MAX as u64);
    let blocks = s.m.div_ceil(block_rows);
    let weights_at = cursors.to_vec();
    let mut streams = Vec::new();
    let mut done = 0;
    for b in 0..blocks {
        let rows = (s.m - done).div_ceil(blocks - b);
        let mut read = weights_at.clone();
        let block = Streamed {
            m: rows,
            ..s.clone()
        };
        let stream = lower_streamed(accel, &block, &mut read)?.instructions;
        streams.push((rows, done, stream));
        for (c, r) in cursors.iter_mut().zip(read) {
            *c = (*c).max(r);
        }
        done += rows;
    }
    // Every block's activations use the same scratch region after the weights.
    let scratch = cursors.to_vec();
    let mut bodies = Vec::new();
    for (rows, done, stream) in streams {
        // This block's share of the layer's input and output bytes (shares add up exactly).
        let share = |bytes: u64| bytes * (done + rows) / s.m - bytes * done / s.m;
        let mut at = scratch.clone();
        bodies.push(dma_spread(
            true,
            (s.activations, 0),
            share(op.cost.act_in_bytes),
            spill,
            &mut at,
        ));
        bodies.push(stream);
        bodies.push(dma_spread(
            false,
            (s.activations, 0),
            share(op.cost.act_out_bytes),
            spill,
            &mut at,
        ));
        for (c, a) in cursors.iter_mut().zip(at) {
            *c = (*c).max(a);
        }
    }
    Ok(bodies)
}

/// Appends to `body` the add of the bias at `b` (loaded before the operator, `place.params`) to
/// each of the `rows × cols` fp16 results at `c`, once `compute`'s last product is done.
fn add_bias(
    accel: &Accelerator,
    body: &mut Vec<Instruction>,
    compute: Unit,
    (c, b): (BufRef, BufRef),
    (rows, cols): (u64, u64),
) {
    if let Some(last) = body.iter_mut().rev().find(|i| i.opcode().unit() == compute) {
        add_release(last, Unit::Sfu);
    }
    let results = accel.buffers()[c.buffer as usize].bytes().0;
    let mut add = sfu_rows(
        results,
        SfuOp::AddRow,
        (rows, cols),
        SfuOperands::new(c, Some(b), c),
    );
    if let Some(first) = add.first_mut() {
        add_wait(first, compute);
    }
    body.extend(add);
}

/// The pass's KV layout; an attention operator or KV append without one is a compiler error.
fn kv_layout<'a>(ctx: &Lowering<'a>, op: &Op) -> Result<&'a KvLayout, LowerError> {
    ctx.kv.ok_or_else(|| LowerError {
        op: op.name.clone(),
        reason: "the pass attends to a KV cache but appends none".into(),
        key: "model".into(),
    })
}

/// The buffer the KV cache streams through: `kv`, else the weight buffer.
fn roles_kv(accel: &Accelerator, op: &str) -> Result<u8, LowerError> {
    match buffer_named(accel, "kv") {
        Some(b) => Ok(b),
        None => Ok(BufferRoles::by_name(accel, op)?.weights),
    }
}

/// The row of a `seq`-token prompt that the model's head reads: the last token's for an LM head,
/// the first (class) token's for a pooler or classifier.
fn head_row(model: &ModelConfig, seq: u64) -> u64 {
    match model.head {
        OutputHead::LmHead => seq.saturating_sub(1),
        OutputHead::Pooler | OutputHead::Classifier { .. } => 0,
    }
}

/// Where a special-function instruction reads and writes.
#[derive(Debug, Clone, Copy)]
struct SfuOperands {
    src: BufRef,
    /// `None` for operations without one (`aux` then names `src`).
    aux: Option<BufRef>,
    dst: BufRef,
}

impl SfuOperands {
    fn new(src: BufRef, aux: Option<BufRef>, dst: BufRef) -> Self {
        SfuOperands { src, aux, dst }
    }

    /// The operands `bytes` further on (the same `aux` when it is shared by every row: only
    /// element-wise operations advance it).
    fn offset(self, bytes: u64) -> Self {
        SfuOperands {
            src: offset(self.src, bytes),
            aux: self.aux,
            dst: offset(self.dst, bytes),
        }
    }
}

/// `at`, `bytes` further on.
fn offset(at: BufRef, bytes: u64) -> BufRef {
    BufRef {
        buffer: at.buffer,
        addr: at.addr + bytes as u32,
    }
}

/// A special-function operation over `rows × cols` elements, split so that no instruction
/// exceeds 65,535 columns or rows, nor `capacity` bytes of fp16: whole rows when they fit, else
/// row by row in pieces of columns (only element-wise operations are that wide). Pieces read and
/// write where their elements are in row-major `src` and `dst` (and a same-shape `aux`; an
/// `add_row` piece reads the bias from its first column on); a
/// `quantize` or `dequantize` that is split writes (or reads) each piece's values and scales
/// after the previous piece's.
fn sfu_rows(
    capacity: u64,
    op: SfuOp,
    (rows, cols): (u64, u64),
    at: SfuOperands,
) -> Vec<Instruction> {
    let mut out = Vec::new();
    let (rows, cols) = (rows.max(1), cols.max(1));
    let elements = (capacity / 2).max(1);
    let col_chunk = cols.min(u16::MAX as u64).min(elements);
    let row_chunk = if col_chunk < cols {
        1
    } else {
        (elements / cols).clamp(1, u16::MAX as u64)
    };
    let element_wise = matches!(op, SfuOp::Add | SfuOp::Mul);
    // Bytes per element of `src` and `dst`; int8 rows carry 2 bytes of scale.
    let (src_bytes, dst_bytes) = match op {
        SfuOp::Quantize => (2, 1),
        SfuOp::Dequantize => (1, 2),
        _ => (2, 2),
    };
    let scale_bytes = |bytes: u64, pieces_rows: u64| if bytes == 1 { 2 * pieces_rows } else { 0 };
    // Operands larger than the buffer belong to timing models: every piece at the same place.
    let advance = rows * cols <= elements;
    let (mut src, mut dst) = (at.src, at.dst);
    let mut aux = at.aux;
    for r in (0..rows).step_by(row_chunk as usize) {
        let rows_here = (rows - r).min(row_chunk);
        let mut c = 0;
        while c < cols {
            let cols_here = col_chunk.min(cols - c);
            let aux_here = match op {
                SfuOp::AddRow if advance => at.aux.map(|a| offset(a, 2 * c)),
                _ => aux,
            };
            out.push(Instruction::Sfu(SfuInstr::new(
                op,
                (src, aux_here.unwrap_or(src), dst),
                rows_here as u16,
                cols_here as u16,
            )));
            let elements = rows_here * cols_here;
            if advance {
                src = offset(
                    src,
                    elements * src_bytes + scale_bytes(src_bytes, rows_here),
                );
                dst = offset(
                    dst,
                    elements * dst_bytes + scale_bytes(dst_bytes, rows_here),
                );
                if element_wise {
                    aux = aux.map(|a| offset(a, 2 * elements));
                }
            }
            c += cols_here;
        }
    }
    // Later pieces follow the first through the unit's in-order queue.
    out
}

/// Moves `bytes` between `buffer` (from byte `start` on) and the channels `(first, count)`,
/// evenly, one DMA per channel (each at most 16 MiB - 1, the ISA's transfer field).
fn dma_spread(
    load: bool,
    (buffer, start): (u8, u64),
    bytes: u64,
    (first, count): (u64, u64),
    cursors: &mut [u64],
) -> Vec<Instruction> {
    let per = bytes.div_ceil(count.max(1));
    let mut out = Vec::new();
    let mut left = bytes;
    let mut buf_addr = start;
    for c in 0..count {
        let mut share = per.min(left);
        left -= share;
        let ch = (first + c) as usize;
        while share > 0 {
            let piece = share.min((1 << 24) - 1);
            let dma = Dma {
                sync: Sync::default(),
                buf: BufRef {
                    buffer,
                    addr: buf_addr as u32,
                },
                channel: ch as u8,
                dram_addr: cursors[ch],
                bytes: piece as u32,
                loops: [Loop::default(); 3],
                lanes: 1,
                lane_stride: 0,
            };
            cursors[ch] = (cursors[ch] + piece).next_multiple_of(DRAM_ALIGN);
            buf_addr += piece;
            share -= piece;
            out.push(if load {
                Instruction::Load(dma)
            } else {
                Instruction::Store(dma)
            });
        }
    }
    out
}

/// The streamed product of `queries` query rows (a KV group's query heads times tokens) against
/// `keys` cached keys of every one of `kv_heads` heads: scores (`q · Kᵀ`, the keys streamed as
/// rows) or values (`p · V`, `Vᵀ` streamed as rows).
fn kv_stream<'a>(
    accel: &Accelerator,
    comp: &Compression,
    op: &'a Op,
    roles: BufferRoles,
    (queries, keys, head_dim, kv_heads): (u64, u64, u64, u64),
    values: bool,
) -> Result<Streamed<'a>, LowerError> {
    let bits = comp.kv.format.bits() as u64;
    let (weight, act_int8) = kv_precision(comp);
    // Scores: rows are keys (head_dim each); values: rows are a head's dimensions (keys each).
    let (k, n) = if values {
        (keys, head_dim)
    } else {
        (head_dim, keys)
    };
    // Integer KV rows carry their fp16 scale.
    let row_bytes = (k * bits).div_ceil(8) + if weight == WeightCode::Fp16 { 0 } else { 2 };
    // Every KV head's rows stream as one operand, so that the chunks are as large as for a
    // linear layer; a chunk's rows may belong to several heads, whose query groups have the same
    // size (`m`), so the MACs and bytes are those of the per-head products.
    Ok(Streamed {
        name: &op.name,
        m: queries,
        k,
        n: n * kv_heads,
        k_computed: k,
        encoding: Encoding::PerRow {
            bytes: row_bytes,
            values: row_bytes,
        },
        weight,
        act_int8,
        sparse: (SparseCode::Dense, 0),
        // One scale per row (per key, or per head dimension).
        group: 0,
        buffer: roles_kv(accel, &op.name)?,
        activations: roles.activations,
        results: roles.results,
        channels: memory_channels(accel, Holds::Kv, &op.name)?,
        copies: 1,
        a_addr: 0,
        a_scaled: false,
        c_addr: 0,
        out: OutCode::Fp32,
        epilogue: (None, ActCode::None),
    })
}

/// A prefill's rotary embedding: each token's query heads and key heads (side by side in the
/// fused projection's rows at `qkv`) rotated by its position's angles (`aux_stride`: each row
/// its token's), the queries into the block layout prefill attention reads
/// ([`prefill_attention`]: per query block, each query head's rows of the block one after
/// another), the keys into packed token-major rows. One instruction per query head and block,
/// and per key head, each over its head's rows at their stride.
fn prefill_rotary(
    ctx: &Lowering,
    op: &Op,
    place: &mut Placement,
    qkv: BufRef,
    seq: u64,
) -> Result<Vec<Instruction>, LowerError> {
    let (model, graph) = (ctx.model, ctx.graph);
    let (q_width, kv_width) = (model.q_width(), model.kv_width());
    let head_dim = model.head_dim.max(1);
    let kv_heads = kv_width / head_dim;
    let tokens = graph.tokens();
    let queries = 2 * tokens * q_width;
    let outputs: Vec<(TensorId, u64)> = [(0, 0), (1, queries)]
        .iter()
        .filter_map(|&(i, at)| op.outputs.get(i).map(|&t| (t, at)))
        .collect();
    let dst = place.output(qkv.buffer, queries + 2 * tokens * kv_width, &outputs);
    let keys = offset(dst, place.stride(queries));
    let angles = place.params.unwrap_or(dst);
    let src_row = q_width + 2 * kv_width;
    // Each instruction reads its rows at a fused row's stride.
    if src_row > u16::MAX as u64 {
        return Err(LowerError {
            op: op.name.clone(),
            reason: format!(
                "fused q/k/v rows of {src_row} elements exceed the 65,535 a special-function \
                 instruction's row stride holds"
            ),
            key: "model.hidden_size".into(),
        });
    }
    let rotary = |src: BufRef, aux: BufRef, dst: BufRef, rows: u64, strides: (u64, u64)| {
        Instruction::Sfu(SfuInstr {
            src_stride: place.stride(strides.0) as u16,
            dst_stride: place.stride(strides.1) as u16,
            aux_stride: place.stride(head_dim) as u16,
            ..SfuInstr::new(SfuOp::Rotary, (src, aux, dst), rows as u16, head_dim as u16)
        })
    };
    let mut body = Vec::new();
    for s in 0..graph.batch.max(1) {
        let first = offset(qkv, place.stride(2 * s * seq * src_row));
        for (t0, block, _, _) in prefill_blocks(ctx, seq) {
            let aux = offset(angles, place.stride(2 * t0 * head_dim));
            let rows = ((first, src_row), dst);
            body.extend(block_queries(
                ctx,
                place,
                SfuOp::Rotary,
                rows,
                Some(aux),
                (s, seq),
                (t0, block),
            ));
        }
        let keys = offset(keys, place.stride(2 * s * seq * kv_width));
        // Each key head's rows of the prompt, in pieces of at most 65,535 rows.
        for t0 in (0..seq).step_by(u16::MAX as usize) {
            let rows = (seq - t0).min(u16::MAX as u64);
            let aux = offset(angles, place.stride(2 * t0 * head_dim));
            for h in 0..kv_heads {
                let src = offset(
                    first,
                    place.stride(2 * (t0 * src_row + q_width + h * head_dim)),
                );
                let dst = offset(keys, place.stride(2 * (t0 * kv_width + h * head_dim)));
                body.push(rotary(src, aux, dst, rows, (src_row, kv_width)));
            }
        }
    }
    Ok(body)
}

/// The instructions that lay one query block of sequence `s` (of `seq` tokens) out as prefill
/// attention reads it: each query head's `block` rows from token `t0` on, read from the fused
/// projection's rows (`qkv` at its sequence's first row, `src_row` elements apart), written one
/// head after another into the block's place in `dst` (every sequence's queries, block by
/// block). `code` is `rotary` (with the block's first angles row at `aux`) or `copy`. One
/// instruction per query head.
fn block_queries(
    ctx: &Lowering,
    place: &Placement,
    code: SfuOp,
    ((qkv, src_row), dst): ((BufRef, u64), BufRef),
    aux: Option<BufRef>,
    (s, seq): (u64, u64),
    (t0, block): (u64, u64),
) -> Vec<Instruction> {
    let head_dim = ctx.model.head_dim.max(1);
    let q_width = ctx.model.q_width();
    let src = offset(qkv, place.stride(2 * t0 * src_row));
    let base = 2 * (s * seq + t0) * q_width;
    (0..q_width / head_dim)
        .map(|j| {
            let dst = offset(dst, place.stride(base + 2 * j * block * head_dim));
            let src = offset(src, place.stride(2 * j * head_dim));
            Instruction::Sfu(SfuInstr {
                src_stride: place.stride(src_row) as u16,
                dst_stride: place.stride(head_dim) as u16,
                aux_stride: aux.map_or(0, |_| place.stride(head_dim)) as u16,
                ..SfuInstr::new(
                    code,
                    (src, aux.unwrap_or(src), dst),
                    block as u16,
                    head_dim as u16,
                )
            })
        })
        .collect()
}

/// Prefill attention scores or values of every sequence, one body per block of query tokens
/// ([`query_blocks`], of the size [`query_block`] chose): the block's rows attend over the keys
/// and values the KV append stored, read from the cache as a decode step reads them
/// ([`KvLayout::attention_batch`]), up to the block's last query for causal models (the block's
/// masked pairs are computed too; the causal softmax zeroes them). The rotated queries lie per
/// block ([`prefill_queries`]), so that a KV head's query rows of a block follow one another as
/// a decode step's do; the scores and probabilities of a block are every query head's rows over
/// the block's keys, blocks one after another ([`prefill_scores`]); each query head's context
/// rows land in the token-major rows the output projection reads.
fn prefill_attention(
    ctx: &Lowering,
    op: &Op,
    place: &mut Placement,
    (seq, heads, head_dim): (u64, u64, u64),
    values: bool,
) -> Result<Vec<Vec<Instruction>>, LowerError> {
    let (accel, comp, model, graph) = (ctx.accel, ctx.comp, ctx.model, ctx.graph);
    let roles = BufferRoles::by_name(accel, &op.name)?;
    let layout = kv_layout(ctx, op)?;
    let kv_heads = (model.kv_heads as u64).clamp(1, heads.max(1));
    let group = heads / kv_heads;
    let batch = graph.batch.max(1);
    let blocks = prefill_blocks(ctx, seq);
    let per_seq = prefill_scores(ctx, seq);
    let input = place.input(op.inputs.first(), roles.activations);
    let outputs: Vec<(TensorId, u64)> = op.outputs.first().map(|&t| (t, 0)).into_iter().collect();
    let out_bytes = match values {
        false => batch * per_seq,
        true => 2 * batch * seq * heads * head_dim,
    };
    let c = place.output(roles.results, out_bytes, &outputs);
    let (_, act_int8) = kv_precision(comp);
    let quantize_queries = !values && act_int8 && comp.kv.format != KvFormat::Fp16;
    let capacity = accel.buffers()[roles.activations as usize].bytes().0;
    let layer = op.layer.unwrap_or(0) as u64;
    // Every block's query rows quantised (values, then a scale per row) per KV head.
    let q8 = quantize_queries
        .then(|| place.scratch(roles.activations, batch * seq * heads * (head_dim + 2)));
    let kv_buffer = roles_kv(accel, &op.name)?;
    // Without a rotary embedding to lay the queries out per block, the scores' blocks copy them
    // from the fused projection's rows.
    let src_row = place.row_stride(op.inputs.first(), 2 * heads * head_dim) / 2;
    let laid_out = (!values && !graph.ops().any(|o| matches!(o.kind, OpKind::Rotary { .. })))
        .then(|| place.scratch(roles.activations, 2 * batch * seq * heads * head_dim));
    let (qkv, input) = (input, laid_out.unwrap_or(input));
    let mut bodies = Vec::new();
    for s in 0..batch {
        for &(t0, queries, keys, scores_at) in &blocks {
            let rows = group * queries;
            let first = s * seq + t0;
            let mut prepare = match laid_out {
                Some(dst) => {
                    let qkv = offset(qkv, place.stride(2 * s * seq * src_row));
                    let rows = ((qkv, src_row), dst);
                    block_queries(ctx, place, SfuOp::Copy, rows, None, (s, seq), (t0, queries))
                }
                None => Vec::new(),
            };
            let (mut a, c) = match values {
                false => (
                    offset(input, place.stride(2 * first * heads * head_dim)),
                    offset(c, place.stride(s * per_seq + scores_at)),
                ),
                true => (
                    offset(input, place.stride(s * per_seq + scores_at)),
                    offset(c, place.stride(2 * first * heads * head_dim)),
                ),
            };
            if let Some(q8) = q8 {
                let per_head = rows * (head_dim + 2);
                let q8 = offset(q8, place.stride(first * heads * (head_dim + 2)));
                for h in 0..kv_heads {
                    let at = SfuOperands::new(
                        offset(a, place.stride(2 * h * rows * head_dim)),
                        None,
                        offset(q8, place.stride(h * per_head)),
                    );
                    prepare.extend(sfu_rows(capacity, SfuOp::Quantize, (rows, head_dim), at));
                }
                a = q8;
            }
            let at = AttentionOperands {
                a,
                c,
                kv_buffer,
                split: values.then_some(QuerySplit {
                    group,
                    c_row: heads * head_dim,
                }),
            };
            let visible = vec![vec![0..keys]; kv_heads as usize];
            let waves = layout.attention_batch(
                accel,
                comp,
                layer,
                rows,
                &visible,
                values,
                &[(s, at)],
                &op.name,
            )?;
            bodies.push(after_sfu(prepare, waves, product_unit(rows)));
        }
    }
    Ok(bodies)
}

/// The query blocks of a `seq`-token prefill: `(first token, queries, keys, scores offset)`,
/// the offset in bytes from the sequence's first block's scores (fp16, every query head's
/// `queries` rows over `keys` keys per block).
fn prefill_blocks(ctx: &Lowering, seq: u64) -> Vec<(u64, u64, u64, u64)> {
    let mut at = 0;
    query_blocks(ctx.model.causal, seq, ctx.query_block)
        .enumerate()
        .map(|(b, (queries, keys))| {
            let block = (b as u64 * ctx.query_block.max(1), queries, keys, at);
            at += block_scores(ctx, queries, keys);
            block
        })
        .collect()
}

/// Bytes of one query block's scores: every query head's `queries` rows over `keys` keys, fp16.
fn block_scores(ctx: &Lowering, queries: u64, keys: u64) -> u64 {
    2 * ctx.model.heads as u64 * queries * keys
}

/// Bytes of one sequence's prefill scores (or probabilities): every block's ([`prefill_blocks`]).
fn prefill_scores(ctx: &Lowering, seq: u64) -> u64 {
    prefill_blocks(ctx, seq)
        .last()
        .map_or(0, |&(_, queries, keys, at)| {
            at + block_scores(ctx, queries, keys)
        })
}

/// The query block size of a prefill's attention ([`query_block`], from its first attention
/// operator); 0 in decode and without attention.
fn prefill_query_block(
    accel: &Accelerator,
    comp: &Compression,
    model: &ModelConfig,
    graph: &Graph,
) -> Result<u64, LowerError> {
    let Phase::Prefill { seq } = graph.phase else {
        return Ok(0);
    };
    let Some(op) = graph
        .ops()
        .find(|o| matches!(o.kind, OpKind::AttentionScores { .. }))
    else {
        return Ok(0);
    };
    let OpKind::AttentionScores {
        heads, head_dim, ..
    } = op.kind
    else {
        return Ok(0);
    };
    // A block's softmax rows span every key up to its last query: a 16-bit field.
    if seq > u16::MAX as u64 {
        return Err(LowerError {
            op: op.name.clone(),
            reason: format!(
                "a prompt of {seq} tokens: softmax rows over more than 65,535 keys do not fit \
                 a special-function instruction"
            ),
            key: "scenario.prefill".into(),
        });
    }
    let roles = BufferRoles::by_name(accel, &op.name)?;
    let kv_heads = (model.kv_heads as u64).clamp(1, heads.max(1));
    let shape = (heads / kv_heads, head_dim, kv_heads);
    query_block(accel, comp, model, op, roles, seq, shape)
}

/// `(queries, keys)` of each block of `block` query tokens of a `seq`-token prompt.
fn query_blocks(causal: bool, seq: u64, block: u64) -> impl Iterator<Item = (u64, u64)> {
    let block = block.max(1);
    (0..seq.div_ceil(block)).map(move |b| {
        let last = ((b + 1) * block).min(seq);
        (last - b * block, if causal { last } else { seq })
    })
}

/// The query block size for prefill attention that the shared cost model finds cheapest: for
/// every candidate (the PE rows doubled up to the prompt, within what the instructions' fields
/// hold and with a block's scores within the results buffer), each block costs the longer of its
/// matrix work ([`analytical::matrix_work_cycles`]) and its KV stream at the KV memory's streaming
/// bandwidth, plus its first wave's arrival, a pipeline fill per wave and the fetch of its
/// instructions ([`analytical::instruction_fetch`]); smaller blocks compute less of the masked
/// diagonal, larger ones stream the keys fewer times and issue fewer instructions. Ties go to the
/// larger block.
fn query_block(
    accel: &Accelerator,
    comp: &Compression,
    model: &ModelConfig,
    op: &Op,
    roles: BufferRoles,
    seq: u64,
    (group, head_dim, kv_heads): (u64, u64, u64),
) -> Result<u64, LowerError> {
    let memory_spec = accel.memory_for(Holds::Kv).ok_or_else(|| LowerError {
        op: op.name.clone(),
        reason: "no memory holds the KV cache".into(),
        key: "memories".into(),
    })?;
    let channels = memory_spec.channels();
    let bytes_per_cycle = analytical::streaming_bandwidth(memory_spec).0 / accel.clock().0;
    // A block's query rows of one head lie `block · head_dim` elements apart (the rotary's
    // `dst_stride`) and a KV head's rows are a product's `m`: both 16-bit fields. A block's
    // scores (fp16, every query head's rows over up to `seq` keys) land in the results buffer.
    let results = accel.buffers()[roles.results as usize].bytes().0;
    let scores_row = 2 * group * kv_heads * seq.max(1);
    if scores_row > results {
        return Err(LowerError {
            op: op.name.clone(),
            reason: format!(
                "one query token's scores over the prompt's {seq} keys ({scores_row} bytes, \
                 every head) exceed the results buffer `{}` ({results} bytes)",
                accel.buffers()[roles.results as usize].name()
            ),
            key: "buffers.bytes".into(),
        });
    }
    let most = (u16::MAX as u64 / head_dim.max(1))
        .min(u16::MAX as u64 / group.max(1))
        .min(results / scores_row);
    let top = seq.clamp(1, most.max(1));
    let mut candidates = Vec::new();
    let mut b = accel.matrix().rows().clamp(1, top);
    while b < top {
        candidates.push(b);
        b *= 2;
    }
    candidates.push(top);
    let mut best: Option<(u64, u64)> = None;
    for &block in candidates.iter().rev() {
        let mut cycles = 0u64;
        for (queries, keys) in query_blocks(model.causal, seq, block) {
            for values in [false, true] {
                let shape = (group * queries, keys, head_dim, kv_heads);
                let s = kv_stream(accel, comp, op, roles, shape, values)?;
                let work = MatrixWork {
                    macs: s.m * s.n * s.k,
                    m: s.m,
                    n: s.n,
                    k: s.k,
                    weight_bits: s.weight.bits(),
                    act: if s.act_int8 {
                        ActivationFormat::Int8
                    } else {
                        ActivationFormat::Fp16
                    },
                    nm: 16,
                    density: 1.0,
                    group: None,
                };
                let (_, compute) =
                    analytical::matrix_work_cycles(accel.matrix(), &work).unwrap_or((0, 0));
                let bytes = s.encoding.bytes(s.n);
                let memory = bytes as f64 / bytes_per_cycle;
                // The block's first wave arrives before any compute (a barrier separates
                // blocks), and every wave fills the pipeline.
                let first_wave = bytes.div_ceil(MIN_WAVES * channels);
                let first_wave_ns = analytical::row_conflict_latency_ns(memory_spec, first_wave);
                let first_wave_cycles = first_wave_ns * 1e-9 * accel.clock().0;
                // Its instructions are fetched too (not overlapped, conservatively).
                let mut scratch = vec![0; accel_channels(accel) as usize];
                let program = Program {
                    instructions: lower_streamed(accel, &s, &mut scratch)?.instructions,
                };
                let bytes = program.storage_bytes();
                let fetch = analytical::instruction_fetch(accel, bytes).bytes_per_cycle;
                cycles += ((compute as f64).max(memory) + first_wave_cycles + bytes as f64 / fetch)
                    .ceil() as u64
                    + MIN_WAVES * accel.matrix().pipeline_depth();
            }
        }
        if best.is_none_or(|(c, _)| cycles < c) {
            best = Some((cycles, block));
        }
    }
    Ok(best.map_or(seq.max(1), |(_, b)| b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::frontend::build_graph;
    use tessera_spec::compression;
    use tessera_spec::model;

    #[test]
    fn sibling_projections_fuse_and_others_do_not() {
        let m = model::preset("tiny-llama").unwrap();
        let c = compression::preset("w4a8-g128").unwrap();
        let g = build_graph(&m, &c, Phase::Decode { context: 8 }, 1).unwrap();
        let ops: Vec<&Op> = g.ops().collect();
        let at = |name: &str| ops.iter().position(|o| o.name == name).unwrap();
        let (qkv, n) = fuse_siblings(&ops[at("layer0.attn.q_proj")..]);
        assert_eq!(n, 3);
        assert_eq!(qkv.name, "layer0.attn.q_proj+k_proj+v_proj");
        let parts = &ops[at("layer0.attn.q_proj")..][..3];
        let sum = |f: fn(&Op) -> u64| parts.iter().map(|o| f(o)).sum::<u64>();
        assert_eq!(qkv.cost.weight_bytes, sum(|o| o.cost.weight_bytes));
        assert_eq!(qkv.cost.macs, sum(|o| o.cost.macs));
        let (gate_up, n) = fuse_siblings(&ops[at("layer0.ffn.gate_proj")..]);
        assert_eq!(
            (n, gate_up.name.as_str()),
            (2, "layer0.ffn.gate_proj+up_proj")
        );
        // The output projection reads the attention's context alone; the down projection follows
        // the gated multiply.
        assert_eq!(fuse_siblings(&ops[at("layer0.attn.o_proj")..]).1, 1);
        assert_eq!(fuse_siblings(&ops[at("layer0.ffn.down_proj")..]).1, 1);
    }
}
