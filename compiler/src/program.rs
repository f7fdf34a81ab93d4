//! Whole decode steps: every operator of a decode graph lowered in graph order into one program.
//!
//! - Linear layers (MoE experts hit, LM head) stream their encoded weights from every channel of
//!   the weight memory ([`crate::lower`]); attention scores and values stream each KV head's keys
//!   and values the same way from the KV memory, all query heads of a KV group sharing them
//!   (grouped-query attention); norms, softmax, activations, gated multiplies, rotary and residual
//!   adds run on the special-function unit; the KV append stores the new keys and values; the
//!   embedding gathers its rows.
//! - Operators follow each other through a barrier on the system unit: every terminal instruction
//!   of an operator (the last one of each compute unit, every DMA nobody waits for) gives the
//!   system unit a token, one `nop` takes each, and the last gives a token to the first
//!   instruction of every unit the next operator uses. The next operator's weights therefore do not
//!   prefetch during the previous one's last compute, which keeps the weight buffer's halves
//!   free of overlap at the cost of one DMA latency per operator.
//! - Off-chip bytes equal the graph's: weights, KV cache read and written, embedding rows.

use crate::lower::{
    accel_channels, buffer_named, linear_stream, lower_streamed, memory_channels, BufferRoles,
    LowerError, Streamed, DRAM_ALIGN,
};
use std::collections::BTreeSet;
use tessera_spec::accel::{Accelerator, Holds, SfuOp};
use tessera_spec::compression::{ActivationFormat, Compression, KvFormat};
use tessera_spec::graph::{Graph, Op, OpKind, Phase};
use tessera_spec::isa::{
    BufRef, Dma, Instruction, Loop, Program, SfuInstr, SparseCode, Sync, SysInstr, SysOp, Unit,
    UnitMask, WeightCode,
};
use tessera_spec::model::{Activation, ModelConfig, NormKind};

/// The context length a decode step is compiled for: `context` rounded up to a multiple of
/// `bucket` (at least one bucket), so that one program serves every length in its bucket.
pub fn decode_bucket(context: u64, bucket: u64) -> u64 {
    context.max(1).div_ceil(bucket.max(1)) * bucket.max(1)
}

/// Compiles a decode-step graph of `model` into one program ending in `halt`.
pub fn compile_decode_step(
    accel: &Accelerator,
    comp: &Compression,
    model: &ModelConfig,
    graph: &Graph,
) -> Result<Program, LowerError> {
    let Phase::Decode { .. } = graph.phase else {
        return Err(LowerError {
            op: "graph".into(),
            reason: "only decode steps are compiled to programs so far; prefill uses the \
                     analytical model"
                .into(),
            key: "scenario.prefill".into(),
        });
    };
    let mut cursors = vec![0u64; accel_channels(accel) as usize];
    let mut chain = Chain::default();
    let mut kv_read_bytes = 0;
    for op in graph.ops() {
        if let OpKind::KvRead { .. } = op.kind {
            kv_read_bytes = op.cost.kv_read_bytes;
        }
        let body = lower_op(accel, comp, model, op, kv_read_bytes, &mut cursors)?;
        // Parameters that are not streamed rows (norm weights, biases) load into the activation
        // buffer before the operator runs.
        let moved: u64 = body.iter().map(dma_bytes).sum();
        let owed = op.cost.weight_bytes + op.cost.kv_write_bytes;
        if owed > moved {
            let roles = BufferRoles::by_name(accel, &op.name)?;
            let (first, _) = memory_channels(accel, Holds::Weights, &op.name)?;
            chain.push(dma_spread(
                true,
                roles.activations,
                owed - moved,
                (first, 1),
                &mut cursors,
            ));
        }
        chain.push(body);
    }
    let mut instructions = chain.finish();
    instructions.push(Instruction::Sys(SysInstr {
        sync: Sync::default(),
        op: SysOp::Halt,
    }));
    Ok(Program { instructions })
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
        Instruction::Load(d) | Instruction::Store(d) => d.bytes as u64,
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

/// The instructions of one operator (no barrier, no `halt`).
fn lower_op(
    accel: &Accelerator,
    comp: &Compression,
    model: &ModelConfig,
    op: &Op,
    kv_read_bytes: u64,
    cursors: &mut [u64],
) -> Result<Vec<Instruction>, LowerError> {
    let roles = BufferRoles::by_name(accel, &op.name)?;
    let sfu = |op_code: SfuOp, rows: u64, cols: u64| sfu_rows(roles, op_code, rows, cols);
    Ok(match op.kind {
        OpKind::Linear {
            class,
            m,
            k,
            n,
            weight_copies,
            ..
        } => {
            let copies = weight_copies.max(1);
            let rows = m.div_ceil(copies).max(1);
            let s = Streamed {
                copies,
                ..linear_stream(accel, comp, &op.name, class, (rows, k, n), roles)?
            };
            lower_streamed(accel, &s, cursors)?
        }
        OpKind::AttentionScores {
            heads, head_dim, ..
        }
        | OpKind::AttentionValues {
            heads, head_dim, ..
        } => {
            let values = matches!(op.kind, OpKind::AttentionValues { .. });
            let kv = (kv_read_bytes, head_dim, heads);
            attention(accel, comp, model, op, roles, kv, values, cursors)?
        }
        OpKind::Softmax { elements } => {
            // One row per query head, a batch's sequences side by side.
            let rows = model.heads as u64;
            sfu(SfuOp::Softmax, rows, elements.div_ceil(rows.max(1)))
        }
        OpKind::Norm { kind, rows, width } => {
            let code = match kind {
                NormKind::LayerNorm => SfuOp::LayerNorm,
                NormKind::RmsNorm => SfuOp::RmsNorm,
            };
            sfu(code, rows, width)
        }
        OpKind::Activation { function, elements } => {
            let code = match function {
                Activation::Silu => SfuOp::Silu,
                Activation::Gelu => SfuOp::Gelu,
                Activation::Relu => SfuOp::Relu,
            };
            sfu(code, 1, elements)
        }
        OpKind::GatedMultiply { elements } => sfu(SfuOp::Mul, 1, elements),
        OpKind::Rotary { elements } => sfu(SfuOp::Rotary, 1, elements),
        OpKind::ResidualAdd { elements } | OpKind::ExpertCombine { elements } => {
            sfu(SfuOp::Add, 1, elements)
        }
        OpKind::ExpertDispatch {
            tokens, experts, ..
        } => sfu(SfuOp::Softmax, tokens, experts),
        OpKind::KvAppend { .. } => {
            let kv = roles_kv(accel, &op.name)?;
            let (first, channels) = memory_channels(accel, Holds::Kv, &op.name)?;
            dma_spread(
                false,
                kv,
                op.cost.kv_write_bytes,
                (first, channels),
                cursors,
            )
        }
        OpKind::KvRead { .. } => Vec::new(),
        OpKind::Embedding { tokens, .. } => {
            let (first, channels) = memory_channels(accel, Holds::Weights, &op.name)?;
            let per_token = op.cost.weight_bytes / tokens.max(1);
            (0..tokens)
                .flat_map(|t| {
                    dma_spread(
                        true,
                        roles.activations,
                        per_token,
                        (first + t % channels, 1),
                        cursors,
                    )
                })
                .collect()
        }
    })
}

/// The buffer the KV cache streams through: `kv`, else the weight buffer.
fn roles_kv(accel: &Accelerator, op: &str) -> Result<u8, LowerError> {
    match buffer_named(accel, "kv") {
        Some(b) => Ok(b),
        None => Ok(BufferRoles::by_name(accel, op)?.weights),
    }
}

/// `rows × cols` fp16 elements through the special-function unit, split so that no instruction
/// exceeds 65,535 columns or rows.
fn sfu_rows(roles: BufferRoles, op: SfuOp, rows: u64, cols: u64) -> Vec<Instruction> {
    let mut out = Vec::new();
    let (rows, cols) = (rows.max(1), cols.max(1));
    let col_chunk = cols.min(u16::MAX as u64);
    for r in (0..rows).step_by(u16::MAX as usize) {
        let rows_here = (rows - r).min(u16::MAX as u64);
        let mut c = 0;
        while c < cols {
            let cols_here = col_chunk.min(cols - c);
            out.push(Instruction::Sfu(SfuInstr {
                sync: Sync::default(),
                op,
                src: BufRef {
                    buffer: roles.activations,
                    addr: 0,
                },
                aux: BufRef {
                    buffer: roles.activations,
                    addr: 0,
                },
                dst: BufRef {
                    buffer: roles.activations,
                    addr: 0,
                },
                rows: rows_here as u16,
                cols: cols_here as u16,
            }));
            c += cols_here;
        }
    }
    // Later pieces follow the first through the unit's in-order queue.
    out
}

/// Moves `bytes` between `buffer` and the channels `(first, count)`, evenly, one DMA per channel
/// (each at most 16 MiB - 1, the ISA's transfer field).
fn dma_spread(
    load: bool,
    buffer: u8,
    bytes: u64,
    (first, count): (u64, u64),
    cursors: &mut [u64],
) -> Vec<Instruction> {
    let per = bytes.div_ceil(count.max(1));
    let mut out = Vec::new();
    let mut left = bytes;
    let mut buf_addr = 0u64;
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

/// Attention scores (`values = false`: `q · Kᵀ`, the cached keys streamed as rows) or values
/// (`p · V`, `Vᵀ` streamed as rows) for every KV head, its query heads sharing the rows. The
/// cache read, `kv_read_bytes` (keys then values, every KV head), sets how many keys stream; the
/// step's own key and value are on chip already.
#[allow(clippy::too_many_arguments)]
fn attention(
    accel: &Accelerator,
    comp: &Compression,
    model: &ModelConfig,
    op: &Op,
    roles: BufferRoles,
    (kv_read_bytes, head_dim, heads): (u64, u64, u64),
    values: bool,
    cursors: &mut [u64],
) -> Result<Vec<Instruction>, LowerError> {
    let kv_heads = (model.kv_heads as u64).clamp(1, heads.max(1));
    let group = heads / kv_heads;
    let kv = roles_kv(accel, &op.name)?;
    let bits = comp.kv.format.bits() as u64;
    let (weight, act_int8) = match comp.kv.format {
        KvFormat::Fp16 => (WeightCode::Fp16, false),
        KvFormat::Int8 => (WeightCode::Int8, comp.activations == ActivationFormat::Int8),
        KvFormat::Int4 => (WeightCode::Int4, comp.activations == ActivationFormat::Int8),
    };
    let keys = (kv_read_bytes / 2 / kv_heads * 8) / (head_dim * bits).max(1);
    if keys == 0 {
        return Ok(Vec::new());
    }
    // Scores: rows are keys (head_dim each); values: rows are a head's dimensions (keys each).
    let (k, n) = if values {
        (keys, head_dim)
    } else {
        (head_dim, keys)
    };
    // Integer KV rows carry their fp16 scale.
    let row_bytes = (k * bits).div_ceil(8) + if weight == WeightCode::Fp16 { 0 } else { 2 };
    // One scale per row (per key, or per head dimension).
    let quant_group = 0;
    let s = Streamed {
        name: &op.name,
        m: group,
        k,
        n,
        row_bytes,
        values_per_row: row_bytes,
        weight,
        act_int8,
        sparse: (SparseCode::Dense, 0),
        group: quant_group,
        buffer: kv,
        activations: roles.activations,
        results: roles.results,
        channels: memory_channels(accel, Holds::Kv, &op.name)?,
        copies: 1,
    };
    // Every KV head's rows stream as one operand, so that the chunks are as large as for a
    // linear layer; a chunk's rows may belong to several heads, whose query groups have the same
    // size (`m`), so the MACs and bytes are those of the per-head products.
    let all_heads = Streamed {
        n: n * kv_heads,
        ..s
    };
    lower_streamed(accel, &all_heads, cursors)
}
