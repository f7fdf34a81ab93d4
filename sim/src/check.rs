//! Static checks of a program against an accelerator, before any simulation: every instruction's
//! buffers, addresses, channels, precisions and sparse modes exist, and every token waited for is
//! released by some instruction.

use tessera_spec::accel::{Accelerator, SfuOp};
use tessera_spec::analytical::{
    matrix_operand_bytes, result_extent, result_row_stride, sfu_operand_extents,
};
use tessera_spec::compression::{ActivationFormat, Sparsity};
use tessera_spec::isa::{BufRef, Instruction, Program, SparseCode, Unit, WeightCode};

/// Why a program cannot run, with the instruction it concerns.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProgramError {
    /// One instruction is ill-formed for this accelerator.
    #[error("instruction {index} ({mnemonic}): {reason}")]
    Instruction {
        /// Index in the program.
        index: usize,
        /// Its mnemonic.
        mnemonic: &'static str,
        /// What is wrong.
        reason: String,
    },
    /// More tokens are waited for than any instruction releases.
    #[error(
        "instruction {index} ({mnemonic}) waits for token {from} → {to}, but only {released} \
         such tokens are ever released and {waited} are waited for"
    )]
    UnreleasedToken {
        /// The first instruction whose wait cannot be satisfied.
        index: usize,
        /// Its mnemonic.
        mnemonic: &'static str,
        /// Releasing unit.
        from: &'static str,
        /// Waiting unit.
        to: &'static str,
        /// Tokens released over the whole program.
        released: usize,
        /// Tokens waited for over the whole program.
        waited: usize,
    },
    /// The units wait on each other with no token that can arrive.
    #[error("deadlock at cycle {cycle}: {}", waiting.join("; "))]
    Deadlock {
        /// Cycle at which nothing could progress.
        cycle: u64,
        /// Each blocked unit, its instruction and the tokens it lacks.
        waiting: Vec<String>,
    },
}

/// Most bytes one DMA instruction may move (1 GiB): larger transfers are split by the compiler.
pub const MAX_DMA_BYTES: u64 = 1 << 30;

/// Bytes one channel holds: its memory's capacity shared evenly by the memory's channels.
/// `channel` counts over all memories in order.
pub fn channel_capacity(accel: &Accelerator, channel: u64) -> u64 {
    let mut first = 0;
    for m in accel.memories() {
        if channel < first + m.channels() {
            return m.capacity().0 / m.channels();
        }
        first += m.channels();
    }
    0
}

/// Total channels over all memories, in memory order.
pub fn channel_count(accel: &Accelerator) -> u64 {
    accel.memories().iter().map(|m| m.channels()).sum()
}

/// Checks `program` for `accel`; the first problem found is returned.
pub fn check_program(accel: &Accelerator, program: &Program) -> Result<(), ProgramError> {
    let mut released = [[0usize; 6]; 6];
    let mut waited = [[0usize; 6]; 6];
    let mut first_wait = [[None::<usize>; 6]; 6];
    let capacities: Vec<u64> = (0..channel_count(accel))
        .map(|c| channel_capacity(accel, c))
        .collect();
    for (index, ins) in program.instructions.iter().enumerate() {
        let op = ins.opcode();
        let err = |reason: String| ProgramError::Instruction {
            index,
            mnemonic: op.mnemonic(),
            reason,
        };
        check_instruction(accel, &capacities, ins).map_err(err)?;
        let me = op.unit() as usize;
        let sync = ins.sync();
        for u in sync.wait.units() {
            waited[u as usize][me] += 1;
            first_wait[u as usize][me].get_or_insert(index);
        }
        for u in sync.release.units() {
            released[me][u as usize] += 1;
        }
    }
    for from in Unit::ALL {
        for to in Unit::ALL {
            let (f, t) = (from as usize, to as usize);
            if waited[f][t] > released[f][t] {
                let index = first_wait[f][t].unwrap_or(0);
                return Err(ProgramError::UnreleasedToken {
                    index,
                    mnemonic: program.instructions[index].opcode().mnemonic(),
                    from: from.name(),
                    to: to.name(),
                    released: released[f][t],
                    waited: waited[f][t],
                });
            }
        }
    }
    Ok(())
}

fn check_buf(accel: &Accelerator, what: &str, r: BufRef, extent: u64) -> Result<(), String> {
    let buffers = accel.buffers();
    let Some(b) = buffers.get(r.buffer as usize) else {
        return Err(format!(
            "{what} names buffer {} but the accelerator has {} (0 ..= {})",
            r.buffer,
            buffers.len(),
            buffers.len().saturating_sub(1)
        ));
    };
    let end = r.addr as u64 + extent;
    if end > b.bytes().0 {
        return Err(format!(
            "{what} spans bytes {}..{end} of buffer `{}`, which holds {} bytes",
            r.addr,
            b.name(),
            b.bytes().0
        ));
    }
    Ok(())
}

/// Checks one instruction; `capacities` holds each channel's [`channel_capacity`].
fn check_instruction(
    accel: &Accelerator,
    capacities: &[u64],
    ins: &Instruction,
) -> Result<(), String> {
    match ins {
        Instruction::Load(d) | Instruction::Store(d) => {
            let engines = accel.dma().engines();
            if d.lane_count() > engines {
                return Err(format!(
                    "runs on {} channels at once, one DMA engine each; dma.engines is {engines}",
                    d.lane_count()
                ));
            }
            let channels = capacities.len() as u64;
            let last = d.channel as u64 + d.lane_count() - 1;
            if last >= channels {
                return Err(format!(
                    "channel {last} does not exist; the memories have {channels} channels (0 ..= {})",
                    channels - 1
                ));
            }
            if d.bytes == 0 {
                return Err("moves 0 bytes".into());
            }
            let (total, extent) = (d.lane_bytes(), d.lane_extent());
            if total > MAX_DMA_BYTES {
                return Err(format!(
                    "moves {total} bytes per channel; one DMA instruction moves at most {MAX_DMA_BYTES}"
                ));
            }
            let load = matches!(ins, Instruction::Load(_));
            if load && !d.lanes_disjoint() {
                return Err(format!(
                    "lane_stride {} is below one lane's buffer extent {extent} and the lanes do not interleave within one loop level (lane_stride ≥ bytes, lanes × lane_stride ≤ loops[0].buf_stride, no outer loop): lanes would write the same bytes",
                    d.lane_stride
                ));
            }
            for lane in d.lanes() {
                let capacity = capacities[lane.channel as usize];
                let dram_end = lane.dram_addr
                    + lane.bytes as u64
                    + lane
                        .loops
                        .iter()
                        .map(|l| (l.count.max(1) as u64 - 1) * l.dram_stride as u64)
                        .sum::<u64>();
                if dram_end > capacity {
                    return Err(format!(
                        "spans DRAM bytes {}..{dram_end} of channel {}, which holds {capacity} bytes",
                        lane.dram_addr, lane.channel
                    ));
                }
                check_buf(accel, "the buffer side", lane.buf, extent)?;
            }
            Ok(())
        }
        Instruction::Matmul(m) | Instruction::Matvec(m) => {
            let act = if m.act_int8 {
                ActivationFormat::Int8
            } else {
                ActivationFormat::Fp16
            };
            let matrix = accel.matrix();
            if matrix.peak_macs_per_cycle(m.weight.bits(), act).is_none() {
                return Err(format!(
                    "{}-bit weights × {act:?} activations are not in matrix.precisions",
                    m.weight.bits()
                ));
            }
            if m.a_scaled && !m.act_int8 {
                return Err("a_scaled needs int8 activations (act_int8=1)".into());
            }
            if m.b_rows && !matches!(m.weight, WeightCode::Fp16 | WeightCode::Int8) {
                let weight = format!("{:?}", m.weight).to_lowercase();
                return Err(format!(
                    "b_rows needs int8 or fp16 weights (weight=int8 or weight=fp16), not weight={weight}"
                ));
            }
            if m.b_rows && m.sparse != SparseCode::Dense {
                let sparse = format!("{:?}", m.sparse).to_lowercase();
                return Err(format!(
                    "b_rows needs dense weights (sparse=dense), not sparse={sparse}"
                ));
            }
            if m.c_stride != 0 && m.c_stride < m.n {
                return Err(format!(
                    "c_stride {} is below n = {}: result rows would overlap (use 0 or at least n)",
                    m.c_stride, m.n
                ));
            }
            // A batch's products one after another, or side by side within the rows.
            let (step, row) = (m.c_batch as u64, result_row_stride(m));
            let after = step >= m.m as u64 * row;
            let beside = step >= m.n as u64 && m.products() * step <= row;
            if m.products() > 1 && step != 0 && !after && !beside {
                return Err(format!(
                    "c_batch {step} overlaps the products' results: use 0, at least m × c_stride \
                     = {}, or at least n = {} with batch × c_batch ≤ c_stride",
                    m.m as u64 * row,
                    m.n
                ));
            }
            if matches!(ins, Instruction::Matvec(_)) && m.m > 1 {
                return Err(format!("matvec needs m = 1 (got {})", m.m));
            }
            let sparsity = match m.sparse {
                SparseCode::Dense => Sparsity::Dense,
                SparseCode::Nm => Sparsity::NM {
                    n: m.nm_n as u32,
                    m: 16,
                },
                SparseCode::Block => Sparsity::Block {
                    block: matrix.sparse().block_skip(),
                    density: 1.0,
                },
                SparseCode::Unstructured => Sparsity::Unstructured { density: 1.0 },
            };
            if !matrix.supports_sparsity(&sparsity) {
                return Err(format!(
                    "sparse mode {:?} (n = {}) is not in matrix.sparse",
                    m.sparse, m.nm_n
                ));
            }
            // Int8 `b_rows` weights have no scales, so no groups.
            if m.weight.bits() < 16 && !m.b_rows && !matrix.supports_group_size(m.group as u32) {
                return Err(format!(
                    "group size {} is not in matrix.group_sizes",
                    m.group
                ));
            }
            let o = matrix_operand_bytes(m);
            check_buf(accel, "operand a", m.a, o.a)?;
            check_buf(accel, "operand b", m.b, o.b)?;
            check_buf(accel, "sparse metadata", m.meta, o.meta)?;
            if m.zero_points && (m.weight.bits() >= 16 || m.b_rows) {
                return Err(
                    "zero points need integer weights stored by columns (not b_rows)".into(),
                );
            }
            if m.epilogue().next().is_some() && (m.accumulate || m.products() > 1) {
                return Err(
                    "an epilogue (bias, act) on accumulated results or on a batch of products"
                        .into(),
                );
            }
            if let Some(bias) = m.bias {
                check_buf(accel, "bias", bias, o.bias)?;
            }
            check_buf(accel, "result c", m.c, result_extent(m))
        }
        Instruction::Sfu(s) => {
            let narrow = |stride: u16| stride != 0 && stride < s.cols;
            if narrow(s.src_stride) || narrow(s.aux_stride) || narrow(s.dst_stride) {
                return Err(format!(
                    "row strides (src {}, aux {}, dst {}) below the row's {} elements (0: packed)",
                    s.src_stride, s.aux_stride, s.dst_stride, s.cols
                ));
            }
            if s.aux_stride != 0 && !matches!(s.op, SfuOp::Add | SfuOp::Mul | SfuOp::Rotary) {
                return Err(format!(
                    "aux_stride = {} on `{}`: only add, mul and rotary read aux rows",
                    s.aux_stride,
                    s.op.name()
                ));
            }
            if (s.op == SfuOp::Dequantize && s.src_stride != 0)
                || (s.op == SfuOp::Quantize && s.dst_stride != 0)
            {
                return Err(format!(
                    "`{}` has int8 rows and row scales, which are packed (stride 0)",
                    s.op.name()
                ));
            }
            if s.op != SfuOp::Softmax && (s.causal != 0 || s.causal_period != 0) {
                return Err(format!(
                    "causal = {} (period {}) on `{}`: only softmax masks",
                    s.causal,
                    s.causal_period,
                    s.op.name()
                ));
            }
            let (src, aux, dst) = sfu_operand_extents(s);
            check_buf(accel, "src", s.src, src)?;
            check_buf(accel, "aux", s.aux, aux)?;
            check_buf(accel, "dst", s.dst, dst)
        }
        Instruction::Sys(_) => Ok(()),
    }
}
