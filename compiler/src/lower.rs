//! Lowering of operators to ISA programs. Landed so far: a linear layer with few tokens (decode),
//! streamed from every DRAM channel at once and double-buffered through the weight buffer.
//!
//! Plan for `y[m, n] = x[m, k] · Wᵀ` with `m ≤ matrix.rows`:
//! - `W`'s rows are cut into equal chunks of output rows, as few waves of `C` chunks as the buffer
//!   allows, each chunk stored contiguously in one channel of the weight memory (round-robin over
//!   the `C` channels), so every channel streams the same bytes and `C` loads run in parallel on
//!   `C` DMA engines;
//! - the weight buffer is split in two halves; each half holds `C` chunks (one wave);
//! - chunk `j`: `load` (waits for the compute unit once its half is being reused, gives the compute
//!   unit a token) then `matvec` (one token) or `matmul` over that chunk (takes the load's token,
//!   gives the load unit a token back when the half will be reused).

use tessera_spec::accel::{Accelerator, Holds};
use tessera_spec::compression::{Compression, OpClass, Sparsity};
use tessera_spec::isa::{
    BufRef, Dma, Instruction, Loop, MatrixOp, Program, SparseCode, Sync, SysInstr, SysOp, Unit,
    UnitMask, WeightCode,
};

/// Why an operator cannot be lowered onto an accelerator.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot lower `{op}`: {reason} (change `{key}`)")]
pub struct LowerError {
    /// The operator.
    pub op: String,
    /// What does not fit.
    pub reason: String,
    /// The spec key to change.
    pub key: String,
}

/// The buffers a lowering uses, by role (indices into the accelerator's buffers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BufferRoles {
    /// Weight tiles.
    pub weights: u8,
    /// Input activations.
    pub activations: u8,
    /// Results.
    pub results: u8,
}

impl BufferRoles {
    /// Buffers named `weights`, `activations` and `accumulators` (falling back to `activations`
    /// for results), as the example accelerators name them.
    pub fn by_name(accel: &Accelerator, op: &str) -> Result<BufferRoles, LowerError> {
        let find = |name: &str| {
            accel
                .buffers()
                .iter()
                .position(|b| b.name() == name)
                .map(|i| i as u8)
        };
        let missing = |name: &str| LowerError {
            op: op.to_string(),
            reason: format!("the accelerator has no buffer named `{name}`"),
            key: "buffers".into(),
        };
        let activations = find("activations").ok_or_else(|| missing("activations"))?;
        Ok(BufferRoles {
            weights: find("weights").ok_or_else(|| missing("weights"))?,
            activations,
            results: find("accumulators").unwrap_or(activations),
        })
    }
}

/// Fewest waves a lowered linear layer is cut into. More waves shorten the last wave's compute,
/// which no load overlaps, but smaller chunks pay the PE pipeline fill more often; 4 measured best
/// on LLaMA2-7B's projections on the u280 preset (see `compiler/tests/lower.rs`).
const MIN_WAVES: u64 = 4;

/// Lowers a linear layer with `m` tokens (`m ≤ matrix.rows`), weights `n × k` in `class`'s
/// compression, to a program ending in `halt`.
pub fn lower_linear(
    accel: &Accelerator,
    comp: &Compression,
    name: &str,
    class: OpClass,
    (m, k, n): (u64, u64, u64),
) -> Result<Program, LowerError> {
    let err = |reason: String, key: &str| LowerError {
        op: name.to_string(),
        reason,
        key: key.to_string(),
    };
    let roles = BufferRoles::by_name(accel, name)?;
    let wc = comp.weight(class);
    let weight = WeightCode::from_bits(wc.format.bits).ok_or_else(|| {
        err(
            format!("{}-bit weights have no ISA code", wc.format.bits),
            "weights.bits",
        )
    })?;
    let (sparse, nm_n) = match wc.sparsity {
        Sparsity::Dense => (SparseCode::Dense, 0),
        Sparsity::NM { n, m: 16 } => (SparseCode::Nm, n as u8),
        other => {
            return Err(err(
                format!("sparsity {other:?} is not lowered yet"),
                "weights.sparsity",
            ))
        }
    };
    if m > accel.matrix().rows() {
        return Err(err(
            format!(
                "{m} tokens exceed the {} PE rows of a decode tile",
                accel.matrix().rows()
            ),
            "matrix.rows",
        ));
    }
    let memory = accel
        .memory_for(Holds::Weights)
        .ok_or_else(|| err("no memory holds weights".into(), "memories"))?;
    let first_channel: u64 = accel
        .memories()
        .iter()
        .take_while(|mm| mm.name() != memory.name())
        .map(|mm| mm.channels())
        .sum();
    let channels = memory.channels();
    let row_bytes = wc.encoded_bytes(1, k).total();
    let half = accel.buffers()[roles.weights as usize].bytes().0 / 2;
    let max_rows = (half / channels / row_bytes).min(u16::MAX as u64);
    if max_rows == 0 {
        return Err(err(
            format!(
                "one output row of weights ({row_bytes} bytes) does not fit a {channels}-channel wave in half the weight buffer ({half} bytes)"
            ),
            "buffers.bytes",
        ));
    }
    // At least `MIN_WAVES` waves, more when the buffer requires; rows spread evenly so that every
    // channel streams the same number of bytes.
    let waves = n
        .div_ceil(channels * max_rows)
        .max(MIN_WAVES.min(n.div_ceil(channels)));
    let rows_per_chunk = n.div_ceil(waves * channels);
    let chunk_bytes = rows_per_chunk * row_bytes;
    let chunks = n.div_ceil(rows_per_chunk);
    let wave = channels; // chunks per buffer half
    if k > u16::MAX as u64 {
        return Err(err(
            format!("a reduction of {k} exceeds one instruction's 65,535"),
            "model",
        ));
    }
    let act_int8 = comp.activations == tessera_spec::compression::ActivationFormat::Int8;
    // One token uses the matrix-vector unit; a few use the matrix-matrix unit.
    let compute_unit = if m == 1 { Unit::Vector } else { Unit::Matrix };
    let values_per_row = wc.encoded_bytes(1, k).values;
    let mut instructions = Vec::new();
    let mut channel_addr = vec![0u64; channels as usize];
    for j in 0..chunks {
        let rows = rows_per_chunk.min(n - j * rows_per_chunk);
        let bytes = rows * row_bytes;
        let ch = j % channels;
        let slot = j % (2 * wave);
        let buf_addr = (slot / wave) * half + (slot % wave) * chunk_bytes;
        let load_wait = if j >= 2 * wave {
            UnitMask::of(&[compute_unit])
        } else {
            UnitMask::NONE
        };
        instructions.push(Instruction::Load(Dma {
            sync: Sync {
                wait: load_wait,
                release: UnitMask::of(&[compute_unit]),
            },
            buf: BufRef {
                buffer: roles.weights,
                addr: buf_addr as u32,
            },
            channel: (first_channel + ch) as u8,
            dram_addr: channel_addr[ch as usize],
            bytes: bytes as u32,
            loops: [Loop::default(); 3],
        }));
        channel_addr[ch as usize] += bytes;
        let release = if j + 2 * wave < chunks {
            UnitMask::of(&[Unit::Load])
        } else {
            UnitMask::NONE
        };
        let op = MatrixOp {
            sync: Sync {
                wait: UnitMask::of(&[Unit::Load]),
                release,
            },
            a: BufRef {
                buffer: roles.activations,
                addr: 0,
            },
            b: BufRef {
                buffer: roles.weights,
                addr: buf_addr as u32,
            },
            c: BufRef {
                buffer: roles.results,
                addr: (j * rows_per_chunk * m * 4) as u32,
            },
            m: m as u16,
            n: rows as u16,
            k: k as u16,
            weight,
            act_int8,
            sparse,
            nm_n,
            // N:M indices follow the chunk's kept values in the buffer.
            meta: BufRef {
                buffer: roles.weights,
                addr: (buf_addr + rows * values_per_row) as u32,
            },
            group: wc.format.group_size as u16,
            accumulate: false,
        };
        instructions.push(if m == 1 {
            Instruction::Matvec(op)
        } else {
            Instruction::Matmul(op)
        });
    }
    instructions.push(Instruction::Sys(SysInstr {
        sync: Sync::default(),
        op: SysOp::Halt,
    }));
    Ok(Program { instructions })
}
