//! Lowering of streamed matrix products to ISA programs: a linear layer (or attention over a KV
//! stream) whose weight-like operand streams from every DRAM channel at once, double-buffered
//! through the weight buffer, while the input rows stay in the activation buffer.
//!
//! Plan for `y[m, n] = x[m, k] · Wᵀ`:
//! - `W`'s rows are cut into as few equal waves as the buffer allows (at least [`MIN_WAVES`]);
//!   a wave's rows are encoded together, as the matrix instruction reads them (packed values,
//!   group scales, then N:M indices), and the encoded bytes are cut into `C` equal slices of whole
//!   DMA beats, slice `c` stored contiguously in channel `c` of the weight memory, so every
//!   channel streams the same bytes and `C` loads run in parallel on `C` DMA engines. Loading the
//!   slices side by side rebuilds the wave's operand in the buffer ([`Wave`] says where each slice
//!   lives, so a memory image can be written for functional simulation);
//! - the weight buffer is split in two halves; each half holds one wave;
//! - wave `g`: one load per slice (each gives the system unit a token), a system `nop` per load
//!   that counts it in, then one `matvec` or `matmul` over the wave (released by the last `nop`). Tokens count per
//!   unit pair, not per instruction, so the next wave's first load waits for that last `nop` too
//!   (otherwise a later load could finish into this wave's count); from the third wave on it also
//!   waits for the compute two waves back, which gave the half back. MoE experts hit stream as
//!   one sequence of waves through the same halves.
//! - Rows are stored as the compression encodes them: packed values with group
//!   scales; N:M keeps N of every 16 with a 4-bit index each (after the scales); block skipping stores only kept
//!   blocks and a block bitmap, and the product's reduction drops the skipped blocks; unstructured
//!   weights load compressed (values plus a bit per weight) and are decompressed into the buffer
//!   (loaded sparse, computed dense). The DMA moves the encoded bytes.
//! - A wave's product covers every input row when all results fit the results buffer side by side
//!   (decode, and prefills whose results fit on chip: the results land in place, row-major);
//!   otherwise (a timing model) it is cut into row tiles whose results fill half of the results
//!   buffer, the halves alternating, so the weights still stream once.

use std::ops::Range;
use tessera_spec::accel::{Accelerator, Holds};
use tessera_spec::compression::{
    ActivationFormat, Compression, OpClass, Sparsity, WeightCompression,
};
use tessera_spec::isa::{
    ActCode, BufRef, Dma, Instruction, Loop, MatrixOp, OutCode, Program, SparseCode, Sync,
    SysInstr, SysOp, Unit, UnitMask, WeightCode,
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
    /// Buffers named `weights`, `activations` and `accumulators` (results fall back to
    /// `activations`), as the example accelerators name them; an accelerator without such names
    /// (say, one `scratch` buffer) uses its largest buffer for every role.
    pub fn by_name(accel: &Accelerator, op: &str) -> Result<BufferRoles, LowerError> {
        let largest = largest_buffer(accel).ok_or_else(|| LowerError {
            op: op.to_string(),
            reason: "the accelerator has no on-chip buffer".into(),
            key: "buffers".into(),
        })?;
        let find = |name: &str| buffer_named(accel, name);
        let activations = find("activations").unwrap_or(largest);
        Ok(BufferRoles {
            weights: find("weights").unwrap_or(largest),
            activations,
            results: find("accumulators").unwrap_or(activations),
        })
    }
}

/// Index of the buffer called `name`.
pub(crate) fn buffer_named(accel: &Accelerator, name: &str) -> Option<u8> {
    accel
        .buffers()
        .iter()
        .position(|b| b.name() == name)
        .map(|i| i as u8)
}

/// Index of the largest buffer (the first of equals).
pub(crate) fn largest_buffer(accel: &Accelerator) -> Option<u8> {
    let buffers = accel.buffers();
    (0..buffers.len())
        .max_by_key(|&i| (buffers[i].bytes().0, std::cmp::Reverse(i)))
        .map(|i| i as u8)
}

/// Every off-chip allocation starts on this boundary (a multiple of every preset's DRAM row), so
/// streams begin at a row start.
pub(crate) const DRAM_ALIGN: u64 = 4096;

/// Fewest waves a lowered linear layer is cut into. More waves shorten the last wave's compute,
/// which no load overlaps, but smaller chunks pay the PE pipeline fill more often; 4 measured best
/// on LLaMA2-7B's projections on the u280 preset (see `compiler/tests/lower.rs`).
pub(crate) const MIN_WAVES: u64 = 4;

/// A matrix product whose weight-like operand streams from off-chip memory in rows: a linear
/// layer's weights, or a head's keys (scores) or values (attention-weighted sum).
#[derive(Debug, Clone)]
pub(crate) struct Streamed<'a> {
    /// Operator name, for errors.
    pub name: &'a str,
    /// Rows of the input (tokens).
    pub m: u64,
    /// Reduction length.
    pub k: u64,
    /// Output features: rows of the streamed operand.
    pub n: u64,
    /// Reduction length the engine computes (block skipping drops skipped blocks).
    pub k_computed: u64,
    /// How the streamed rows are stored.
    pub encoding: Encoding,
    /// Precision and storage of the streamed operand.
    pub weight: WeightCode,
    /// Activations are int8.
    pub act_int8: bool,
    /// Sparse storage and kept weights per 16.
    pub sparse: (SparseCode, u8),
    /// Quantisation group.
    pub group: u16,
    /// Buffer the streamed rows go to (split in two halves).
    pub buffer: u8,
    /// Buffer holding the input and buffer receiving the results.
    pub activations: u8,
    /// Results buffer.
    pub results: u8,
    /// Global index of the first channel of the memory the rows live in, and its channel count.
    pub channels: (u64, u64),
    /// Independent copies streamed one after another (MoE experts hit), each `n` rows.
    pub copies: u64,
    /// Where the input rows start in the activation buffer; int8 rows are followed by their
    /// fp16 scales when `a_scaled`.
    pub a_addr: u64,
    /// Int8 input rows carry a scale each (the special-function unit's `quantize` wrote them).
    pub a_scaled: bool,
    /// Where the results start in the results buffer.
    pub c_addr: u64,
    /// The results' format.
    pub out: OutCode,
    /// The products' epilogue ([`MatrixOp::bias`], [`MatrixOp::act`]): where the bias of the
    /// first output feature is (one stream, `copies = 1`), and the activation.
    pub epilogue: (Option<BufRef>, ActCode),
}

/// How a streamed operand's rows are stored.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Encoding {
    /// Every row alike: its encoded bytes and, of those, its values (scales follow them).
    PerRow {
        /// Encoded bytes of one row.
        bytes: u64,
        /// Bytes of its values.
        values: u64,
    },
    /// Weights of `k` columns as the compression encodes a group of rows
    /// ([`WeightCompression::encoded_bytes`]): block bitmaps and compressed values span the rows
    /// of a chunk, N:M indices and scales follow its values.
    Weights {
        /// The class's weight compression.
        wc: WeightCompression,
        /// Reduction length (columns).
        k: u64,
    },
}

impl Encoding {
    /// Encoded bytes of `rows` rows stored together.
    pub(crate) fn bytes(&self, rows: u64) -> u64 {
        match *self {
            Encoding::PerRow { bytes, .. } => rows * bytes,
            Encoding::Weights { wc, k } => wc.encoded_bytes(rows, k).total(),
        }
    }

    /// The dense encoding of `rows` rows of unstructured-sparse weights, which are decompressed
    /// on load (loaded sparse, computed dense); `None` for every other encoding.
    fn decompressed(&self, rows: u64) -> Option<u64> {
        match *self {
            Encoding::Weights { wc, k } if matches!(wc.sparsity, Sparsity::Unstructured { .. }) => {
                let dense = WeightCompression {
                    sparsity: Sparsity::Dense,
                    ..wc
                };
                Some(dense.encoded_bytes(rows, k).total())
            }
            _ => None,
        }
    }

    /// Bytes `rows` rows take in the buffer: their encoding, or for unstructured weights the
    /// decompressed values and scales followed by the compressed bitmap.
    pub(crate) fn buffer_bytes(&self, rows: u64) -> u64 {
        match (self.decompressed(rows), *self) {
            (Some(dense), Encoding::Weights { wc, k }) => {
                dense + wc.encoded_bytes(rows, k).metadata
            }
            _ => self.bytes(rows),
        }
    }

    /// Whether the rows are asymmetric quantised weights, whose scales each have a zero point.
    fn zero_points(&self) -> bool {
        match *self {
            Encoding::Weights { wc, .. } => wc.format.is_quantised() && !wc.format.symmetric,
            Encoding::PerRow { .. } => false,
        }
    }

    /// Offset of the sparse metadata of `rows` rows in the buffer: after the values and scales
    /// (N:M indices, as [`tessera_spec::isa::data::encode_weights`] lays them out), or after the
    /// decompressed values and scales (unstructured bitmaps).
    pub(crate) fn metadata_offset(&self, rows: u64) -> u64 {
        match (self.decompressed(rows), *self) {
            (Some(dense), _) => dense,
            (None, Encoding::PerRow { values, .. }) => rows * values,
            (None, Encoding::Weights { wc, k }) => {
                let b = wc.encoded_bytes(rows, k);
                b.values + b.scales
            }
        }
    }
}

/// One wave of a streamed operand: which of its rows it holds and where its encoded bytes live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Wave {
    /// The copy (MoE expert hit) the wave belongs to; 0 otherwise.
    pub copy: u64,
    /// The streamed operand's rows (a linear layer's output features) in the wave.
    pub rows: Range<u64>,
    /// Where the wave's operand starts in the weight buffer.
    pub buffer_addr: u64,
    /// The slices of the wave's encoded bytes, in order; loaded side by side they rebuild it.
    pub slices: Vec<Slice>,
}

/// A contiguous piece of a wave's encoded bytes in one DRAM channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Slice {
    /// Global channel (numbered as DMA instructions number them).
    pub channel: u8,
    /// Byte address in the channel.
    pub dram_addr: u64,
    /// Offset of the slice in the wave's encoded bytes.
    pub offset: u64,
    /// Bytes.
    pub bytes: u64,
}

/// A lowered streamed product: its instructions (no `halt`) and where its waves live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Lowered {
    /// The instructions.
    pub instructions: Vec<Instruction>,
    /// The streamed operand's waves, in program order.
    pub waves: Vec<Wave>,
}

/// A lowered linear layer: its program and where its weights' waves live.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LinearProgram {
    /// The program, ending in `halt`.
    pub program: Program,
    /// The weights' waves, in program order.
    pub waves: Vec<Wave>,
}

/// Lowers a linear layer with `m` tokens, weights `n × k` in `class`'s compression, to a program
/// ending in `halt`. Its input rows are read from address 0 of the activation buffer; the
/// instructions' `waves` say where the encoded weights must be in memory.
pub fn lower_linear(
    accel: &Accelerator,
    comp: &Compression,
    name: &str,
    class: OpClass,
    (m, k, n): (u64, u64, u64),
) -> Result<LinearProgram, LowerError> {
    let roles = BufferRoles::by_name(accel, name)?;
    let s = linear_stream(accel, comp, name, class, (m, k, n), roles)?;
    let mut channel_addr = vec![0u64; accel_channels(accel) as usize];
    let Lowered {
        mut instructions,
        waves,
    } = lower_streamed(accel, &s, &mut channel_addr)?;
    instructions.push(Instruction::Sys(SysInstr {
        sync: Sync::default(),
        op: SysOp::Halt,
    }));
    Ok(LinearProgram {
        program: Program { instructions },
        waves,
    })
}

/// Channels of every memory, numbered as DMA instructions number them.
/// The unit that runs products of `rows` activation rows: one row (a token) uses the
/// matrix-vector unit; more use the matrix-matrix unit.
pub(crate) fn product_unit(rows: u64) -> Unit {
    if rows == 1 {
        Unit::Vector
    } else {
        Unit::Matrix
    }
}

pub(crate) fn accel_channels(accel: &Accelerator) -> u64 {
    accel.memories().iter().map(|m| m.channels()).sum()
}

/// `(first global channel, channels)` of the memory holding `holds`.
pub(crate) fn memory_channels(
    accel: &Accelerator,
    holds: Holds,
    op: &str,
) -> Result<(u64, u64), LowerError> {
    let memory = accel.memory_for(holds).ok_or_else(|| LowerError {
        op: op.to_string(),
        reason: format!("no memory holds {}", holds.name()),
        key: "memories".into(),
    })?;
    let first: u64 = accel
        .memories()
        .iter()
        .take_while(|mm| mm.name() != memory.name())
        .map(|mm| mm.channels())
        .sum();
    Ok((first, memory.channels()))
}

/// The streamed-operand description of a linear layer.
pub(crate) fn linear_stream<'a>(
    accel: &Accelerator,
    comp: &Compression,
    name: &'a str,
    class: OpClass,
    (m, k, n): (u64, u64, u64),
    roles: BufferRoles,
) -> Result<Streamed<'a>, LowerError> {
    let err = |reason: String, key: &str| LowerError {
        op: name.to_string(),
        reason,
        key: key.to_string(),
    };
    let wc = comp.weight(class);
    let weight = WeightCode::from_bits(wc.format.bits).ok_or_else(|| {
        err(
            format!("{}-bit weights have no ISA code", wc.format.bits),
            "weights.bits",
        )
    })?;
    let sparse = match wc.sparsity {
        Sparsity::Dense => (SparseCode::Dense, 0),
        Sparsity::NM { n, m: 16 } => (SparseCode::Nm, n as u8),
        Sparsity::Block { .. } => (SparseCode::Block, 0),
        Sparsity::Unstructured { .. } => (SparseCode::Unstructured, 0),
        other => {
            return Err(err(
                format!("sparsity {other:?} has no ISA code (N:M needs M = 16)"),
                "weights.sparsity",
            ))
        }
    };
    Ok(Streamed {
        name,
        m,
        k,
        n,
        k_computed: wc.sparsity.computed_reduction(k),
        encoding: Encoding::Weights { wc, k },
        weight,
        act_int8: comp.activations == tessera_spec::compression::ActivationFormat::Int8,
        sparse,
        group: wc.format.group_size as u16,
        buffer: roles.weights,
        activations: roles.activations,
        results: roles.results,
        channels: memory_channels(accel, Holds::Weights, name)?,
        copies: 1,
        a_addr: 0,
        a_scaled: false,
        c_addr: 0,
        out: OutCode::Fp32,
        epilogue: (None, ActCode::None),
    })
}

/// The instructions of a streamed matrix product (no `halt`) and its waves, placing its rows at
/// `channel_addr[channel]` and advancing those cursors.
pub(crate) fn lower_streamed(
    accel: &Accelerator,
    s: &Streamed,
    channel_addr: &mut [u64],
) -> Result<Lowered, LowerError> {
    let err = |reason: String, key: &str| LowerError {
        op: s.name.to_string(),
        reason,
        key: key.to_string(),
    };
    let (m, k, n, copies) = (s.m, s.k, s.n, s.copies.max(1));
    let act = if s.act_int8 {
        ActivationFormat::Int8
    } else {
        ActivationFormat::Fp16
    };
    if accel
        .matrix()
        .peak_macs_per_cycle(s.weight.bits(), act)
        .is_none()
    {
        return Err(err(
            format!(
                "{}-bit × {act:?} products are not in the matrix engine's precisions",
                s.weight.bits()
            ),
            "matrix.precisions",
        ));
    }
    let (first_channel, channels) = s.channels;
    // Rows encode together in at most the bytes of as many single rows; slices round up to whole
    // DMA beats, which may take up to a beat per channel more.
    let row_bytes = s.encoding.buffer_bytes(1).max(1);
    let half = accel.buffers()[s.buffer as usize].bytes().0 / 2;
    let beat = accel.dma().bytes_per_cycle().max(1);
    let max_rows = (half.saturating_sub(channels * beat) / row_bytes).min(u16::MAX as u64);
    if max_rows < channels.min(n) {
        return Err(err(
            format!(
                "a {channels}-channel wave of the streamed operand ({} rows of {row_bytes} bytes) does not fit half of buffer `{}` ({half} bytes)",
                channels.min(n),
                accel.buffers()[s.buffer as usize].name()
            ),
            "buffers.bytes",
        ));
    }
    // At least `MIN_WAVES` waves (of at least one row per channel), more when the buffer requires.
    let waves_per_copy = n
        .div_ceil(max_rows)
        .max(MIN_WAVES.min(n.div_ceil(channels)));
    let wave_rows = n.div_ceil(waves_per_copy);
    let waves_per_copy = n.div_ceil(wave_rows);
    if k > u16::MAX as u64 {
        return Err(err(
            format!("a reduction of {k} exceeds one instruction's 65,535"),
            "model",
        ));
    }
    let decompressed = s.encoding.buffer_bytes(wave_rows) != s.encoding.bytes(wave_rows);
    let tiles = row_tiles(accel, s, wave_rows)?;
    let out_bytes = s.out.bytes();
    let compute_unit = product_unit(m);
    let mut tile_count = 0u64;
    let mut instructions = Vec::new();
    let mut placed = Vec::new();
    // Copies (MoE experts hit) stream one after another as one sequence of waves, so buffer
    // halves alternate and are handed over by tokens across copies too.
    let total = waves_per_copy * copies;
    for g in 0..total {
        let w = g % waves_per_copy;
        let first_row = w * wave_rows;
        let rows = wave_rows.min(n - first_row);
        let half_addr = (g % 2) * half;
        // The wave's encoded bytes in equal slices, one per channel, side by side in its buffer
        // half (unstructured weights decompress into equal parts of the decompressed wave).
        let bytes = s.encoding.bytes(rows);
        let per = bytes.div_ceil(channels).next_multiple_of(beat);
        let buffer_per = s.encoding.buffer_bytes(rows).div_ceil(channels);
        let mut slices = Vec::new();
        for c in 0..bytes.div_ceil(per) {
            let ch = (first_channel + c) as usize;
            let offset = c * per;
            let slice = Slice {
                channel: ch as u8,
                dram_addr: channel_addr[ch],
                offset,
                bytes: per.min(bytes - offset),
            };
            channel_addr[ch] = (channel_addr[ch] + slice.bytes).next_multiple_of(DRAM_ALIGN);
            slices.push(slice);
        }
        // The loads, one multi-channel load per run of alike slices. The first waits until the
        // previous wave's loads are all counted in (tokens count per unit pair, so a later wave's
        // load must not finish into an earlier wave's count) and, from the third wave on, until
        // the compute two waves back has released the half; the load queue is in order, so the
        // others wait behind it.
        let at = |c: usize| {
            if decompressed {
                c as u64 * buffer_per.max(per)
            } else {
                slices[c].offset
            }
        };
        let slice_dmas = slices
            .iter()
            .enumerate()
            .map(|(c, slice)| {
                vec![Dma {
                    sync: Sync::default(),
                    buf: BufRef {
                        buffer: s.buffer,
                        addr: (half_addr + at(c)) as u32,
                    },
                    channel: slice.channel,
                    dram_addr: slice.dram_addr,
                    bytes: slice.bytes as u32,
                    loops: [Loop::default(); 3],
                    lanes: 1,
                    lane_stride: 0,
                }]
            })
            .collect();
        let runs = join_lanes(slice_dmas, accel.dma().engines());
        for (r, dma) in runs.iter().enumerate() {
            let load_wait = match (r, g) {
                (1.., _) | (0, 0) => UnitMask::NONE,
                (0, 1) => UnitMask::of(&[Unit::System]),
                (0, _) => UnitMask::of(&[Unit::System, compute_unit]),
            };
            instructions.push(Instruction::Load(Dma {
                sync: Sync {
                    wait: load_wait,
                    release: UnitMask::of(&[Unit::System]),
                },
                ..*dma
            }));
        }
        // The system unit counts the wave's loads in, then lets one matrix instruction consume
        // the whole wave (one pipeline fill per wave, not per slice) and the next wave's loads go.
        for r in 0..runs.len() {
            instructions.push(Instruction::Sys(SysInstr {
                sync: Sync {
                    wait: UnitMask::of(&[Unit::Load]),
                    release: match (r + 1 == runs.len(), g + 1 < total) {
                        (true, true) => UnitMask::of(&[compute_unit, Unit::Load]),
                        (true, false) => UnitMask::of(&[compute_unit]),
                        (false, _) => UnitMask::NONE,
                    },
                },
                op: SysOp::Nop,
            }));
        }
        placed.push(Wave {
            copy: g / waves_per_copy,
            rows: first_row..first_row + rows,
            buffer_addr: half_addr,
            slices,
        });
        // The wave's products, one per row tile: the first waits for the wave's loads, the last
        // gives the half back.
        let tiles_here = tiles.count();
        for t in 0..tiles_here {
            let (tile_rows, a_addr) = tiles.tile(t);
            let (c_addr, c_stride) = match tiles.results_half {
                // All results in one row-major `m × n` tensor: the wave's columns at their
                // offset in every row.
                None if m > 1 && n <= u16::MAX as u64 => (first_row * out_bytes, n as u16),
                // A single row, or rows too wide for the stride field: the wave's rows packed
                // after the previous waves'.
                None => (first_row * m * out_bytes, 0),
                // Row tiles alternate between the results buffer's halves.
                Some(half) => ((tile_count % 2) * half, 0),
            };
            tile_count += 1;
            let wait = if t == 0 {
                UnitMask::of(&[Unit::System])
            } else {
                UnitMask::NONE
            };
            let release = if t + 1 == tiles_here && g + 2 < total {
                UnitMask::of(&[Unit::Load])
            } else {
                UnitMask::NONE
            };
            let op = MatrixOp {
                sync: Sync { wait, release },
                a: BufRef {
                    buffer: s.activations,
                    addr: (s.a_addr + a_addr) as u32,
                },
                b: BufRef {
                    buffer: s.buffer,
                    addr: half_addr as u32,
                },
                c: BufRef {
                    buffer: s.results,
                    addr: (s.c_addr + c_addr) as u32,
                },
                m: tile_rows as u16,
                n: rows as u16,
                k: s.k_computed as u16,
                weight: s.weight,
                act_int8: s.act_int8,
                sparse: s.sparse.0,
                nm_n: s.sparse.1,
                // N:M indices follow the wave's kept values in the buffer.
                meta: BufRef {
                    buffer: s.buffer,
                    addr: (half_addr + s.encoding.metadata_offset(rows)) as u32,
                },
                group: s.group,
                accumulate: false,
                a_scaled: s.a_scaled,
                out: s.out,
                b_rows: false,
                c_stride,
                batch: 0,
                c_batch: 0,
                // The wave's output features' biases.
                bias: s.epilogue.0.map(|b| BufRef {
                    buffer: b.buffer,
                    addr: b.addr + 2 * first_row as u32,
                }),
                act: s.epilogue.1,
                zero_points: s.encoding.zero_points(),
            };
            instructions.push(if m == 1 {
                Instruction::Matvec(op)
            } else {
                Instruction::Matmul(op)
            });
        }
    }
    Ok(Lowered {
        instructions,
        waves: placed,
    })
}

/// Transfers of consecutive channels (`per_channel`, each channel's in order) joined into
/// multi-channel transfers: a channel whose transfers are those of the run before it on the next
/// channel, at the next lane's buffer addresses, runs as one lane more of them (at most
/// `most_lanes`, one DMA engine each, and 255, the `lanes` field; the lanes touching disjoint
/// buffer bytes: [`Dma::lanes_disjoint`]).
pub(crate) fn join_lanes(per_channel: Vec<Vec<Dma>>, most_lanes: u64) -> Vec<Dma> {
    let most = most_lanes.clamp(1, u8::MAX as u64);
    let mut runs: Vec<Vec<Dma>> = Vec::new();
    let mut lanes = 1u64;
    for dmas in per_channel {
        if let Some(run) = runs.last_mut() {
            let joined: Option<Vec<Dma>> = (lanes < most && run.len() == dmas.len())
                .then(|| {
                    run.iter()
                        .zip(&dmas)
                        .map(|(r, d)| as_lane(r, d, lanes))
                        .collect()
                })
                .flatten();
            if let Some(joined) = joined {
                *run = joined;
                lanes += 1;
                continue;
            }
        }
        runs.push(dmas);
        lanes = 1;
    }
    runs.into_iter().flatten().collect()
}

/// `run` (of `lanes` lanes) with `next` as one lane more, when `next` is the same transfer on
/// the next channel at the next lane's buffer address and the lanes stay disjoint.
fn as_lane(run: &Dma, next: &Dma, lanes: u64) -> Option<Dma> {
    let step = next.buf.addr.checked_sub(run.buf.addr)? as u64;
    let same = Dma {
        channel: run.channel,
        buf: run.buf,
        lanes: run.lanes,
        lane_stride: run.lane_stride,
        ..*next
    };
    let stride = if lanes == 1 {
        step
    } else {
        run.lane_stride as u64
    };
    let joined = Dma {
        lanes: (lanes + 1) as u8,
        lane_stride: u32::try_from(stride).ok()?,
        ..*run
    };
    (same == *run
        && next.channel as u64 == run.channel as u64 + lanes
        && step == lanes * stride
        && stride > 0
        && joined.lanes_disjoint())
    .then_some(joined)
}

/// How a streamed product's input rows are cut into the products of one wave.
#[derive(Debug, Clone, Copy)]
struct RowTiles {
    /// Input rows.
    m: u64,
    /// Rows per product.
    rows: u64,
    /// Bytes of one input row.
    row_bytes: u64,
    /// `Some(half)` when the results of a wave do not fit beside every other wave's: each product
    /// writes into one half of the results buffer, alternately.
    results_half: Option<u64>,
}

impl RowTiles {
    fn count(&self) -> u64 {
        self.m.div_ceil(self.rows)
    }

    /// Rows and input address of product `t`.
    fn tile(&self, t: u64) -> (u64, u64) {
        let first = t * self.rows;
        ((self.m - first).min(self.rows), first * self.row_bytes)
    }
}

/// The row tiles of `s`, whose waves hold at most `wave_rows` streamed rows. When all results fit
/// the results buffer side by side from `c_addr` (decode, or a prefill whose results fit on
/// chip), one product per wave covers every input row and its results land in place; otherwise
/// (a prefill GEMM too large for the results buffer, a timing model) a product covers as many
/// input rows as half of the results buffer holds for a wave, the halves alternating, and a
/// tile of scaled int8 rows does not find its rows' scales (they follow all `m` rows). The input
/// rows stay in the activations buffer throughout; an input larger than that buffer is refused.
fn row_tiles(accel: &Accelerator, s: &Streamed, wave_rows: u64) -> Result<RowTiles, LowerError> {
    let err = |reason: String, key: &str| LowerError {
        op: s.name.to_string(),
        reason,
        key: key.to_string(),
    };
    let m = s.m.max(1);
    let row_bytes = s.k * if s.act_int8 { 1 } else { 2 };
    let activations = &accel.buffers()[s.activations as usize];
    // Scaled int8 rows are followed by a scale each.
    let input = m * row_bytes + if s.a_scaled { 2 * m } else { 0 };
    if s.a_addr + input > activations.bytes().0 {
        return Err(err(
            format!(
                "its input ({m} × {} = {input} bytes from byte {}) exceeds buffer `{}` ({} \
                 bytes); input tiles that spill off chip are not lowered",
                s.k,
                s.a_addr,
                activations.name(),
                activations.bytes().0
            ),
            "buffers.bytes",
        ));
    }
    let results = accel.buffers()[s.results as usize].bytes().0;
    let out_bytes = s.out.bytes();
    let all_results = m * s.n * out_bytes;
    // Results that fit where they go land in place, every row of a wave in one product (decode
    // rows up to the PE rows, and any rows whose whole result fits from `c_addr`: the engine
    // tiles them in time).
    let in_place =
        m <= accel.matrix().rows() || (m <= u16::MAX as u64 && s.c_addr + all_results <= results);
    if all_results <= results && in_place {
        return Ok(RowTiles {
            m,
            rows: m,
            row_bytes,
            results_half: None,
        });
    }
    let half = results / 2;
    let rows = (half / (wave_rows.max(1) * out_bytes))
        .min(m)
        .min(u16::MAX as u64);
    if rows == 0 {
        return Err(err(
            format!(
                "one input row's results for a wave of {wave_rows} streamed rows ({} bytes) \
                 exceed half of buffer `{}` ({half} bytes)",
                wave_rows * out_bytes,
                accel.buffers()[s.results as usize].name()
            ),
            "buffers.bytes",
        ));
    }
    Ok(RowTiles {
        m,
        rows,
        row_bytes,
        results_half: Some(half),
    })
}
