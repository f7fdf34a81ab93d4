//! The analytical timing/energy model: what each operator costs on an accelerator (or a GPU) with
//! no contention. It is the one cost model of Tessera: the compiler tiles with it, the scheduler
//! weighs spills with it, and the simulator's per-instruction latencies must agree with it.
//!
//! Per operator on the accelerator:
//! - matrix work: [`matrix_work_cycles`], the engine's tile loop ([`matrix_tiling`], the loop the
//!   generated hardware runs), where N:M and block-skip sparsity multiply only kept weights
//!   (compressed-load sparsity loads sparse and computes dense) and per-group dequantisation
//!   (MixPE) is pipelined beside the MACs;
//! - vector work: the vector unit's own formula ([`crate::accel::VectorUnit::cycles`]);
//! - memory: weights, KV cache and (when an operator's activations exceed the on-chip buffers)
//!   activations stream from the memories that hold them at the bandwidth their DRAM timing allows
//!   ([`streaming_bandwidth`]); memories work in parallel; attention scores never spill, since
//!   attention is computed tile by tile with a streamed softmax;
//! - the operator takes the longest of the three (compute, vector and memory overlap), and operators
//!   run one after another.
//!
//! Energy per operator: MACs × pJ per MAC of the precision pair, vector elements × pJ per element,
//! bytes through on-chip buffers × the buffers' capacity-weighted mean pJ per byte (operators are
//! not yet mapped to particular buffers at this level), DRAM bits × pJ per bit of the memory kind,
//! plus static power × time.
//!
//! Per instruction (what the simulator charges a compute unit): [`compute_instruction_cycles`],
//! the same matrix and vector formulas, bounded below by the operands' bytes through the buffers'
//! compute ports ([`port_bytes_per_cycle`], [`compute_ports`]).

use crate::accel::{Accelerator, Buffer, Holds, MatrixEngine, Memory, SfuOp};
use crate::compression::{ActivationFormat, Compression, Sparsity};
use crate::error::{Problem, SpecError};
use crate::gpu::{Gpu, ServingStack};
use crate::graph::{Graph, Op, OpKind};
use crate::isa::{data, Instruction, MatrixOp, SfuInstr, SparseCode, WeightCode};
use crate::units::{BytesPerSecond, Cycles, PicoJoules};
use serde::Serialize;
use std::collections::BTreeMap;

/// What limits an operator (or a pass).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Bound {
    /// The matrix engine.
    Compute,
    /// The vector / special-function unit.
    Vector,
    /// Off-chip memory bandwidth.
    Memory,
}

impl Bound {
    /// Lower-case name.
    pub fn name(&self) -> &'static str {
        match self {
            Bound::Compute => "compute",
            Bound::Vector => "vector",
            Bound::Memory => "memory",
        }
    }
}

/// Energy split by where it is spent, in picojoules.
#[derive(Debug, Clone, Copy, Default, PartialEq, Serialize)]
pub struct Energy {
    /// Matrix-engine MACs.
    pub mac: PicoJoules,
    /// Vector-unit element operations.
    pub vector: PicoJoules,
    /// On-chip buffer accesses.
    pub buffer: PicoJoules,
    /// Off-chip memory transfers.
    pub dram: PicoJoules,
    /// Static power over the time taken.
    pub r#static: PicoJoules,
}

impl Energy {
    /// All parts together.
    pub fn total(&self) -> PicoJoules {
        self.mac + self.vector + self.buffer + self.dram + self.r#static
    }
}

impl std::ops::AddAssign for Energy {
    fn add_assign(&mut self, o: Self) {
        self.mac += o.mac;
        self.vector += o.vector;
        self.buffer += o.buffer;
        self.dram += o.dram;
        self.r#static += o.r#static;
    }
}

/// The cost of one operator.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct OpEstimate {
    /// Operator name.
    pub name: String,
    /// Operator class (`linear`, `softmax`, ...).
    pub class: &'static str,
    /// Block index.
    pub layer: Option<u32>,
    /// Cycles the operator takes.
    pub cycles: Cycles,
    /// Matrix-engine cycles.
    pub compute_cycles: Cycles,
    /// Vector-unit cycles.
    pub vector_cycles: Cycles,
    /// Off-chip transfer cycles.
    pub memory_cycles: Cycles,
    /// The longest of the three.
    pub bound: Bound,
    /// MACs actually performed (after sparsity skipping).
    pub effective_macs: u64,
    /// Bytes moved to or from off-chip memory.
    pub dram_bytes: u64,
    /// Activation bytes the operator reads and writes in the on-chip buffers (its inputs and
    /// outputs when they fit): what a design that kept no activations on chip between operators
    /// would move off chip in addition.
    pub act_on_chip_bytes: u64,
    /// Energy.
    pub energy: Energy,
}

/// The cost of a whole pass (one graph).
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct PassEstimate {
    /// Cycles of the pass (operators in sequence).
    pub cycles: Cycles,
    /// Seconds of the pass.
    pub seconds: f64,
    /// Off-chip bytes moved.
    pub dram_bytes: u64,
    /// Activation bytes kept on chip between operators ([`OpEstimate::act_on_chip_bytes`]).
    pub act_on_chip_bytes: u64,
    /// Energy.
    pub energy: Energy,
    /// Cycles spent in operators of each bound.
    pub cycles_by_bound: BTreeMap<Bound, u64>,
    /// Per-operator costs, in graph order.
    pub ops: Vec<OpEstimate>,
}

impl PassEstimate {
    /// The bound that takes most of the pass's time.
    pub fn bound(&self) -> Bound {
        dominant_bound(&self.cycles_by_bound)
    }
}

/// The bound with the most cycles (ties go to the earlier of compute, vector, memory); memory when
/// empty.
pub fn dominant_bound(cycles_by_bound: &BTreeMap<Bound, u64>) -> Bound {
    cycles_by_bound
        .iter()
        .max_by_key(|(b, c)| (**c, std::cmp::Reverse(**b)))
        .map(|(b, _)| *b)
        .unwrap_or(Bound::Memory)
}

/// Bandwidth a memory sustains when every access of `access_bytes` opens a new row, over all its
/// channels: the peak, capped by how fast each bank can cycle rows (`banks × access_bytes` per row
/// cycle `tRAS + tRP`), times the fraction of time not spent refreshing (`1 − tRFC / tREFI`).
/// Assumes enough requests in flight to keep every bank busy.
pub fn access_bandwidth(memory: &Memory, access_bytes: u64) -> BytesPerSecond {
    let t = memory.timing();
    let peak = memory.channel_bandwidth().0;
    let row_cycle_s = (t.t_ras_ns + t.t_rp_ns) * 1e-9;
    let row_limited = t.banks as f64 * access_bytes as f64 / row_cycle_s;
    let refresh_factor = 1.0 - t.t_rfc_ns / t.t_refi_ns;
    BytesPerSecond(peak.min(row_limited) * refresh_factor * memory.channels() as f64)
}

/// Bandwidth a memory sustains on long sequential streams: [`access_bandwidth`] with whole rows.
pub fn streaming_bandwidth(memory: &Memory) -> BytesPerSecond {
    access_bandwidth(memory, memory.timing().row_bytes)
}

/// Nanoseconds from issuing a read of `bytes` that misses an open row in its bank (a row
/// conflict) to its last data beat: precharge, activate, CAS latency, then the bursts.
pub fn row_conflict_latency_ns(memory: &Memory, bytes: u64) -> f64 {
    let t = memory.timing();
    let bursts = bytes.div_ceil(memory.burst_bytes()).max(1);
    let burst_ns = memory.burst_bytes() as f64 / memory.channel_bandwidth().0 * 1e9;
    t.t_rp_ns + t.t_rcd_ns + t.t_cl_ns + bursts as f64 * burst_ns
}

/// Matrix-engine work: one operator or one matrix instruction.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct MatrixWork {
    /// Dense multiply-accumulates.
    pub macs: u64,
    /// Output rows (tokens); 0 with `n` and `k` when the work has no single shape (attention over
    /// varying context), which is then costed at the engine's full rate.
    pub m: u64,
    /// Output columns.
    pub n: u64,
    /// Reduction length as computed (block-skipped blocks already removed).
    pub k: u64,
    /// Weight bits (16 = fp16).
    pub weight_bits: u32,
    /// Activation format.
    pub act: ActivationFormat,
    /// Kept weights per 16-wide block along the reduction (N of N:16; 16 when dense).
    pub nm: u32,
    /// Fraction of the dense MACs performed (`nm / 16`, or the kept-block fraction).
    pub density: f64,
    /// Quantisation group size when the weights are quantised (0: one scale per row).
    pub group: Option<u32>,
}

/// How the matrix engine runs a matrix of work: the tile loop the hardware controller executes
/// (`tessera_hdl::engine`), one step per cycle.
///
/// Each PE's chain has `lanes` DSP multipliers and reads one 16-wide block of activations per
/// step: `lanes = chain` at one or more MACs per DSP, `⌊chain × macs_per_dsp⌋` (at least 1) below
/// one (an fp16 MAC spread over several DSPs). With N kept per block and `N < lanes`, reduction
/// nodes cut the chain into `lanes / N` parts, one output column each; otherwise a block takes
/// `⌈N / lanes⌉` steps.
///
/// DSP packing (AMD WP486, "Deep Learning with INT8 Optimization on Xilinx Devices": two int8
/// weights of a DSP48E2's 27-bit port share the activation on its 18-bit port) multiplies one
/// activation by two weights, so both must sit at the same reduction index: two output columns
/// whose kept positions coincide. Only dense weights (`N = 16`) guarantee that, so
/// `pack = ⌊macs_per_dsp⌋` for dense weights and 1 for N:M sparse ones (whose columns keep
/// different positions); a fractional part buys nothing (a DSP packs whole columns). The
/// hardware generator builds `macs_per_dsp` 1 and 2 only. A chain then computes
/// `segments = pack × max(1, lanes / N)` columns at once.
///
/// An *item* is one output row and a *column group* of `segments` columns. The PEs of one PE row
/// share one activation bank (a broadcast), so they work on one output row at a time: a *slot*
/// is an output row and `cols` consecutive column groups, one per PE of a PE row (the last slot
/// of a row may leave PEs idle). Slots go to the `rows` PE rows in passes, row by row of the
/// output; every pass steps through all `⌈k / 16⌉` blocks. A matrix-vector product (`m = 1`)
/// takes `⌈groups / (rows × cols)⌉` passes, as if every PE took any item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatrixTiling {
    /// DSP multipliers of a PE's chain, each taking one kept position per step.
    pub lanes: u64,
    /// Output columns sharing each multiplier (2 for DSP-packed dense int8, else 1).
    pub pack: u64,
    /// Output columns a PE computes at once: `pack × max(1, lanes / N)`.
    pub segments: u64,
    /// Steps per 16-wide block: `⌈N / lanes⌉`.
    pub steps_per_block: u64,
    /// 16-wide blocks along the reduction.
    pub blocks: u64,
    /// Column groups of `segments` output columns: `⌈n / segments⌉`.
    pub groups: u64,
    /// Slots: output rows × `⌈groups / cols⌉`, each `cols` column groups of one row.
    pub slots: u64,
    /// Passes of `rows` slots: `⌈slots / rows⌉`.
    pub passes: u64,
    /// Steps (cycles of issue): `passes × blocks × steps_per_block`.
    pub steps: u64,
}

/// The tile loop of an `m × n × k` matrix with N = `nm` kept per block on `matrix` at a precision
/// of `macs_per_dsp` MACs per DSP.
pub fn matrix_tiling(
    matrix: &MatrixEngine,
    macs_per_dsp: f64,
    m: u64,
    n: u64,
    k: u64,
    nm: u32,
) -> MatrixTiling {
    let chain = matrix.chain();
    let lanes = if macs_per_dsp >= 1.0 {
        chain
    } else {
        ((chain as f64 * macs_per_dsp).floor() as u64).max(1)
    };
    let nm = (nm as u64).clamp(1, 16);
    let pack = if nm == 16 {
        (macs_per_dsp.floor() as u64).max(1)
    } else {
        1
    };
    let segments = pack * (lanes / nm).max(1);
    let steps_per_block = nm.div_ceil(lanes);
    let blocks = k.div_ceil(16);
    let groups = n.div_ceil(segments);
    let slots = m * groups.div_ceil(matrix.cols());
    let passes = slots.div_ceil(matrix.rows());
    MatrixTiling {
        lanes,
        pack,
        segments,
        steps_per_block,
        blocks,
        groups,
        slots,
        passes,
        steps: passes * blocks * steps_per_block,
    }
}

/// Cycles of matrix work on the engine, and the MACs actually performed: the tile loop's steps
/// ([`matrix_tiling`]) plus the pipeline depth, which includes the per-group dequantiser
/// (pipelined beside the MACs, MixPE). Work without a single shape runs at the tile loop's rate:
/// `⌈MACs × density / (PEs × lanes × pack)⌉ + pipeline depth` (no packing for N:M weights).
/// `None` when the engine lacks the precision pair.
/// Zero MACs cost nothing.
pub fn matrix_work_cycles(matrix: &MatrixEngine, w: &MatrixWork) -> Option<(u64, u64)> {
    let precision = matrix.precision(w.weight_bits, w.act)?;
    if w.macs == 0 {
        return Some((0, 0));
    }
    let eff = (w.macs as f64 * w.density).ceil() as u64;
    let steps = if w.m == 0 || w.n == 0 || w.k == 0 {
        // Kept weights the array multiplies per step: every PE's multipliers, each with its
        // packed columns (none for N:M weights).
        let t = matrix_tiling(matrix, precision.macs_per_dsp(), 1, 1, 16, w.nm);
        let peak = (matrix.rows() * matrix.cols() * t.lanes * t.pack).max(1) as f64;
        (eff as f64 / peak).ceil() as u64
    } else {
        matrix_tiling(matrix, precision.macs_per_dsp(), w.m, w.n, w.k, w.nm).steps
    };
    Some((eff, steps + matrix.pipeline_depth()))
}

/// The matrix work of one matrix instruction: a batch of products counts as one product of all
/// their rows (each row an item of its own product).
pub fn matrix_instr_work(m: &MatrixOp) -> MatrixWork {
    let (mm, n, k) = (m.m as u64 * m.products(), m.n as u64, m.k as u64);
    let nm = match m.sparse {
        SparseCode::Nm => m.nm_n as u32,
        _ => 16,
    };
    MatrixWork {
        macs: mm * n * k,
        m: mm,
        n,
        k,
        weight_bits: m.weight.bits(),
        act: if m.act_int8 {
            ActivationFormat::Int8
        } else {
            ActivationFormat::Fp16
        },
        nm,
        density: nm as f64 / 16.0,
        // Int8 `b_rows` weights carry no scales (`isa::data`).
        group: (m.weight.bits() < 16 && !m.b_rows).then_some(m.group as u32),
    }
}

/// Bytes a matrix instruction moves through its buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MatrixOperandBytes {
    /// Activations `a` (`m × k`, and the row scales of scaled int8 activations).
    pub a: u64,
    /// Weights `b` (`k × n` as stored: only kept values for N:M).
    pub b: u64,
    /// Results `c` (`m × n` in the `out` format, read as well as written when accumulating).
    pub c: u64,
    /// Sparse metadata: a 4-bit index per kept weight for N:M, one bit per 16 × 16 block for
    /// block skipping, one bit per weight for compressed load.
    pub meta: u64,
    /// The epilogue's bias row (`n` fp16 values, shared by every product of a batch).
    pub bias: u64,
}

/// The bytes a matrix instruction moves through its buffers: every product's
/// ([`matrix_product_bytes`] × `batch`), which is also each operand's extent.
pub fn matrix_operand_bytes(m: &MatrixOp) -> MatrixOperandBytes {
    let one = matrix_product_bytes(m);
    let b = m.products();
    MatrixOperandBytes {
        a: one.a * b,
        b: one.b * b,
        c: one.c * b,
        meta: one.meta * b,
        bias: one.bias,
    }
}

/// The bytes one product of a matrix instruction moves through its buffers (product `h` of a
/// batch reads its operands `h` times these further on).
pub fn matrix_product_bytes(m: &MatrixOp) -> MatrixOperandBytes {
    let act_bytes = if m.act_int8 { 1 } else { 2 };
    let (mm, n, k) = (m.m as u64, m.n as u64, m.k as u64);
    let kept = match m.sparse {
        SparseCode::Nm => k.div_ceil(16) * m.nm_n as u64,
        _ => k,
    };
    let meta = match m.sparse {
        SparseCode::Dense => 0,
        SparseCode::Nm => (kept * n * 4).div_ceil(8),
        SparseCode::Block => (k.div_ceil(16) * n.div_ceil(16)).div_ceil(8),
        SparseCode::Unstructured => (k * n).div_ceil(8),
    };
    // Integer weights carry their fp16 group scales after them, except int8 `b_rows` weights,
    // whose row scales are folded into the activations (`isa::data`).
    let scales = if m.weight == WeightCode::Fp16 || m.b_rows {
        0
    } else {
        // Asymmetric weights carry a zero point per scale.
        data::weight_scale_bytes(n, k, m.group as u64) * if m.zero_points { 2 } else { 1 }
    };
    // Scaled int8 activations carry one fp16 scale per row after them.
    let row_scales = if m.act_int8 && m.a_scaled { 2 * mm } else { 0 };
    MatrixOperandBytes {
        a: mm * k * act_bytes + row_scales,
        b: data::weight_scales_offset(kept * n, m.weight.bits()) + scales,
        c: result_bytes(m) * if m.accumulate { 2 } else { 1 },
        meta,
        bias: m.bias.map_or(0, |_| 2 * n),
    }
}

/// Bytes of one product's results (`m × n` in the `out` format).
pub fn result_bytes(m: &MatrixOp) -> u64 {
    m.m as u64 * m.n as u64 * m.out.bytes()
}

/// Elements from one result row's start to the next: `c_stride`, or `n` when it is 0.
pub fn result_row_stride(m: &MatrixOp) -> u64 {
    if m.c_stride == 0 {
        m.n as u64
    } else {
        m.c_stride as u64
    }
}

/// Elements from one product's results to the next's in a batch: `c_batch`, or when it is 0
/// `m` rows of `c_stride`.
pub fn result_batch_stride(m: &MatrixOp) -> u64 {
    match m.c_batch {
        0 => m.m as u64 * result_row_stride(m),
        step => step as u64,
    }
}

/// Bytes of buffer a matrix instruction's results span from `c`: `m` rows of every product,
/// `c_stride` apart, products `c_batch` apart.
pub fn result_extent(m: &MatrixOp) -> u64 {
    match (m.m as u64, m.products()) {
        (0, _) => 0,
        (rows, products) => {
            let last = (products - 1) * result_batch_stride(m) + (rows - 1) * result_row_stride(m);
            (last + m.n as u64) * m.out.bytes()
        }
    }
}

/// Bytes of buffer a special-function instruction's operands span from `src`, `aux` and `dst`:
/// [`sfu_operand_bytes`], with strided rows (`src_stride`, `aux_stride`, `dst_stride`) spanning
/// from the first row's start to the last row's end.
pub fn sfu_operand_extents(s: &SfuInstr) -> (u64, u64, u64) {
    let (src, aux, dst) = sfu_operand_bytes(s);
    let (rows, cols) = (s.rows as u64, s.cols as u64);
    let span = |bytes: u64, stride: u16| match (stride, rows) {
        (0, _) | (_, 0) => bytes,
        (stride, _) => 2 * ((rows - 1) * stride as u64 + cols),
    };
    let aux = match s.op {
        SfuOp::Add | SfuOp::Mul => span(aux, s.aux_stride),
        SfuOp::Rotary if s.aux_stride != 0 => span(2 * s.rows as u64 * s.cols as u64, s.aux_stride),
        _ => aux,
    };
    (span(src, s.src_stride), aux, span(dst, s.dst_stride))
}

/// Bytes a special-function instruction reads (`src`, and `aux` for add, mul, rotary and norms)
/// and writes (`dst`): fp16 elements, except the int8 values and fp16 row scales that
/// `quantize` writes and `dequantize` reads.
pub fn sfu_operand_bytes(s: &SfuInstr) -> (u64, u64, u64) {
    let bytes = 2 * s.rows as u64 * s.cols as u64;
    let scaled_int8 = s.rows as u64 * (s.cols as u64 + 2);
    let aux = match s.op {
        SfuOp::Add | SfuOp::Mul => bytes,
        SfuOp::Rotary if s.aux_stride != 0 => bytes,
        SfuOp::LayerNorm => 4 * s.cols as u64,
        SfuOp::RmsNorm | SfuOp::Rotary | SfuOp::AddRow | SfuOp::MulRow => 2 * s.cols as u64,
        _ => 0,
    };
    match s.op {
        SfuOp::Quantize => (bytes, aux, scaled_int8),
        SfuOp::Dequantize => (scaled_int8, aux, bytes),
        _ => (bytes, aux, bytes),
    }
}

/// How a program's instructions reach the units.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct InstructionFetch {
    /// Instruction bytes delivered per cycle.
    pub bytes_per_cycle: f64,
    /// Index (in `accel.memories()`) of the memory the program streams from when it does not fit
    /// the on-chip instruction memory; `None` when it fits.
    pub streamed_from: Option<usize>,
}

/// Instruction fetch for a program of `program_bytes`: from the on-chip instruction memory at
/// `instruction_memory.fetch_bytes_per_cycle` when the program fits it; otherwise streamed from
/// the memory that holds instructions, at the lower of that rate and the memory's streaming
/// bandwidth (as FlightLLM keeps its instructions in DDR).
pub fn instruction_fetch(accel: &Accelerator, program_bytes: u64) -> InstructionFetch {
    let fetch = accel.instruction_memory().fetch_bytes_per_cycle().max(1) as f64;
    if program_bytes <= accel.instruction_memory().bytes().0 {
        return InstructionFetch {
            bytes_per_cycle: fetch,
            streamed_from: None,
        };
    }
    match accel
        .memories()
        .iter()
        .position(|m| m.holds(Holds::Instructions))
    {
        Some(i) => {
            let dram = streaming_bandwidth(&accel.memories()[i]).0 / accel.clock().0;
            InstructionFetch {
                bytes_per_cycle: fetch.min(dram),
                streamed_from: Some(i),
            }
        }
        None => InstructionFetch {
            bytes_per_cycle: fetch,
            streamed_from: None,
        },
    }
}

/// Bytes one port of a buffer moves per cycle, reaching every bank at once: `banks × word`.
///
/// Port model (shared with the simulator): port 0 of every buffer is its DMA port, which the DMA
/// engines share by time division ([`dma_bytes_per_cycle`]); the other ports serve the matrix and
/// special-function units ([`compute_ports`]), one operand per port. A single-port buffer's one
/// port does both, so DMAs and compute instructions on it take turns.
pub fn port_bytes_per_cycle(b: &Buffer) -> u64 {
    (b.banks() * (b.word_bits() / 8)).max(1)
}

/// Bytes a buffer serves per cycle over all its ports.
pub fn buffer_bytes_per_cycle(b: &Buffer) -> u64 {
    port_bytes_per_cycle(b) * b.ports().max(1)
}

/// Ports of a buffer that serve compute operands: all but the DMA port, or the only one.
pub fn compute_ports(b: &Buffer) -> u64 {
    b.ports().saturating_sub(1).max(1)
}

/// Bytes per cycle one DMA engine moves to or from `buffer`: its own rate, or its time-division
/// share of the buffer's DMA port if that is smaller.
pub fn dma_bytes_per_cycle(accel: &Accelerator, buffer: &Buffer) -> u64 {
    let dma = accel.dma();
    let share = port_bytes_per_cycle(buffer) / dma.engines().max(1);
    dma.bytes_per_cycle().min(share).max(1)
}

/// Compute ports an instruction holds in each buffer it touches, for operands `accesses`
/// (buffer index, bytes): one per operand, at most the buffer's [`compute_ports`].
pub fn ports_held(accel: &Accelerator, accesses: &[(u8, u64)]) -> BTreeMap<u8, u64> {
    let mut held: BTreeMap<u8, u64> = BTreeMap::new();
    for &(b, bytes) in accesses {
        if bytes > 0 {
            *held.entry(b).or_default() += 1;
        }
    }
    for (b, n) in held.iter_mut() {
        if let Some(buf) = accel.buffers().get(*b as usize) {
            *n = (*n).min(compute_ports(buf));
        }
    }
    held
}

/// Cycles for `accesses` (buffer index, bytes) through the compute ports: each operand streams
/// through its own port, and operands beyond a buffer's compute ports share them.
fn buffer_cycles(accel: &Accelerator, accesses: &[(u8, u64)]) -> u64 {
    let mut per_buffer: BTreeMap<u8, (u64, u64)> = BTreeMap::new();
    for &(b, bytes) in accesses {
        let e = per_buffer.entry(b).or_default();
        e.0 += bytes;
        e.1 = e.1.max(bytes);
    }
    per_buffer
        .into_iter()
        .filter_map(|(b, (total, largest))| {
            let buf = accel.buffers().get(b as usize)?;
            let port = port_bytes_per_cycle(buf);
            let shared = total.div_ceil(port * compute_ports(buf));
            Some(largest.div_ceil(port).max(shared))
        })
        .max()
        .unwrap_or(0)
}

/// Cycles of a matrix instruction whose products take `work` cycles, with its epilogue (bias,
/// activation: [`MatrixOp::epilogue`]). The epilogue is the vector unit's element-wise datapath
/// at the engine's output, at the vector unit's rates ([`crate::accel::VectorUnit`]): it adds
/// each operation's pipeline latency, and holds the instruction longer only when the results
/// come faster than it streams them (`m × n` per product at the slowest operation's rate).
pub fn matrix_epilogue_cycles(accel: &Accelerator, m: &MatrixOp, work: u64) -> u64 {
    let vector = accel.vector();
    let results = m.m as u64 * m.n as u64 * m.products();
    m.epilogue()
        .filter_map(|op| vector.cost(op))
        .fold(work, |cycles, cost| {
            let per_cycle = vector.lanes() as f64 * cost.elements_per_lane_per_cycle();
            let stream = (results as f64 / per_cycle).ceil() as u64;
            cycles.max(stream) + cost.latency()
        })
}

/// The (buffer, bytes) operand accesses of a matrix or special-function instruction.
pub fn operand_accesses(ins: &Instruction) -> Vec<(u8, u64)> {
    match ins {
        Instruction::Matmul(m) | Instruction::Matvec(m) => {
            let o = matrix_operand_bytes(m);
            vec![
                (m.a.buffer, o.a),
                (m.b.buffer, o.b),
                (m.c.buffer, o.c),
                (m.meta.buffer, o.meta),
                (m.bias.unwrap_or_default().buffer, o.bias),
            ]
        }
        Instruction::Sfu(s) => {
            let (src, aux, dst) = sfu_operand_bytes(s);
            vec![
                (s.src.buffer, src),
                (s.aux.buffer, aux),
                (s.dst.buffer, dst),
            ]
        }
        _ => Vec::new(),
    }
}

/// Cycles a matrix or special-function instruction takes with no contention: the longer of its
/// compute ([`matrix_work_cycles`] with its epilogue, [`matrix_epilogue_cycles`], or
/// [`crate::accel::VectorUnit::cycles`]) and its operands at the buffers' port bandwidth. `None`
/// for other classes or an unsupported precision.
pub fn compute_instruction_cycles(accel: &Accelerator, ins: &Instruction) -> Option<u64> {
    let compute = match ins {
        Instruction::Matmul(m) | Instruction::Matvec(m) => {
            let work = matrix_work_cycles(accel.matrix(), &matrix_instr_work(m))?.1;
            matrix_epilogue_cycles(accel, m, work)
        }
        Instruction::Sfu(s) => accel.vector().cycles(s.op, s.rows as u64 * s.cols as u64).0,
        _ => return None,
    };
    Some(compute.max(buffer_cycles(accel, &operand_accesses(ins))))
}

/// The analytical model of one accelerator running one compression: checked once, then cheap to
/// evaluate per operator.
#[derive(Debug, Clone)]
pub struct AccelModel<'a> {
    accel: &'a Accelerator,
    comp: &'a Compression,
    /// Streaming bandwidth and pJ/bit of the memory holding each kind of data.
    weights_mem: MemoryRole,
    kv_mem: MemoryRole,
    act_mem: MemoryRole,
    buffer_pj_per_byte: f64,
}

#[derive(Debug, Clone, Copy)]
struct MemoryRole {
    index: usize,
    bandwidth: BytesPerSecond,
    pj_per_bit: f64,
}

impl<'a> AccelModel<'a> {
    /// Prepares the model: finds the memory holding each kind of data and its energy per bit.
    pub fn new(accel: &'a Accelerator, comp: &'a Compression) -> Result<Self, SpecError> {
        let mut problems = Vec::new();
        let mut role = |h: Holds| -> Option<MemoryRole> {
            let Some((index, m)) = accel
                .memories()
                .iter()
                .enumerate()
                .find(|(_, m)| m.holds(h))
            else {
                problems.push(Problem::new(
                    "memories",
                    format!("no memory holds {}", h.name()),
                    format!("add \"{}\" to some memory's `holds`", h.name()),
                ));
                return None;
            };
            let Some(pj_per_bit) = accel.energy().memory_pj_per_bit(m.kind()) else {
                problems.push(Problem::new(
                    "energy.memory",
                    format!("no energy entry for memory kind {}", m.kind().name()),
                    "add an energy.memory entry for it",
                ));
                return None;
            };
            Some(MemoryRole {
                index,
                bandwidth: streaming_bandwidth(m),
                pj_per_bit,
            })
        };
        let roles = (
            role(Holds::Weights),
            role(Holds::Kv),
            role(Holds::Activations),
        );
        SpecError::check(accel.source(), problems)?;
        let (Some(weights_mem), Some(kv_mem), Some(act_mem)) = roles else {
            return Err(SpecError::one(
                accel.source(),
                Problem::new(
                    "memories",
                    "a memory role is missing",
                    "see the problems above",
                ),
            ));
        };
        Ok(Self {
            accel,
            comp,
            weights_mem,
            kv_mem,
            act_mem,
            buffer_pj_per_byte: buffer_pj_per_byte(accel),
        })
    }

    /// The accelerator.
    pub fn accelerator(&self) -> &Accelerator {
        self.accel
    }

    /// The weight × activation precision a matrix operator runs at: the weight class's format for
    /// linears, the activation format on both sides for attention.
    fn op_precision(&self, op: &Op) -> Option<(u32, ActivationFormat)> {
        let act = self.comp.activations;
        match op.kind {
            OpKind::Linear { class, .. } => Some((self.comp.weight(class).format.bits, act)),
            OpKind::AttentionScores { .. } | OpKind::AttentionValues { .. } => {
                Some((act.bits(), act))
            }
            _ => None,
        }
    }

    /// Checks that the accelerator can run every operator of `graph` (precisions, sparse modes,
    /// group sizes) and that the weights fit the memory holding them. Problems name the key to
    /// change.
    pub fn check_graph(&self, graph: &Graph) -> Result<(), SpecError> {
        let matrix = self.accel.matrix();
        let mut problems = Vec::new();
        let mut seen = std::collections::BTreeSet::new();
        for op in graph.ops() {
            let Some((bits, act)) = self.op_precision(op) else {
                continue;
            };
            let class = match op.kind {
                OpKind::Linear { class, .. } => Some(class),
                _ => None,
            };
            if !seen.insert((class, bits)) {
                continue;
            }
            if matrix.peak_macs_per_cycle(bits, act).is_none() {
                let supported: Vec<String> =
                    matrix.precisions().iter().map(|p| p.to_string()).collect();
                problems.push(Problem::new(
                    "matrix.precisions",
                    format!(
                        "operator `{}` needs {}-bit weights × {:?} activations (compression `{}`), \
                         which the matrix engine does not support",
                        op.name, bits, act, self.comp.name
                    ),
                    format!(
                        "add the pair to matrix.precisions; supported: {}",
                        supported.join(", ")
                    ),
                ));
            }
            let Some(class) = class else { continue };
            let wc = self.comp.weight(class);
            if !matrix.supports_sparsity(&wc.sparsity) {
                problems.push(Problem::new(
                    "matrix.sparse",
                    format!(
                        "operator `{}` uses {:?} sparsity (compression `{}`), which the matrix \
                         engine does not support",
                        op.name, wc.sparsity, self.comp.name
                    ),
                    "enable the mode in matrix.sparse (nm for N:16, block_skip, compressed_load)",
                ));
            }
            if wc.format.is_quantised() && !matrix.supports_group_size(wc.format.group_size) {
                problems.push(Problem::new(
                    "matrix.group_sizes",
                    format!(
                        "operator `{}` uses quantisation groups of {} (compression `{}`), which \
                         the matrix engine does not support",
                        op.name, wc.format.group_size, self.comp.name
                    ),
                    "add the group size to matrix.group_sizes",
                ));
            }
        }
        SpecError::check(self.accel.source(), problems)?;
        let mem = &self.accel.memories()[self.weights_mem.index];
        let need = graph.weight_bytes();
        if need > mem.capacity().0 {
            return Err(SpecError::one(
                self.accel.source(),
                Problem::new(
                    format!("memories[{}].capacity_gib", self.weights_mem.index),
                    format!(
                        "model `{}` needs {:.2} GiB of weights under compression `{}`, but memory \
                         `{}` holds {:.2} GiB",
                        graph.model,
                        need as f64 / GIB,
                        self.comp.name,
                        mem.name(),
                        mem.capacity().0 as f64 / GIB
                    ),
                    "use a larger memory, or compress the weights further (fewer bits, sparsity)",
                ),
            ));
        }
        Ok(())
    }

    /// The cost of one operator.
    pub fn op(&self, op: &Op) -> OpEstimate {
        let accel = self.accel;
        let matrix = accel.matrix();
        let energy_table = accel.energy();

        let work = self
            .op_precision(op)
            .map(|(weight_bits, act)| match op.kind {
                OpKind::Linear { class, m, k, n, .. } => {
                    let wc = self.comp.weight(class);
                    // N:M keeps N of every 16-wide block; block skipping removes whole blocks
                    // from the reduction; unstructured weights load compressed and compute dense.
                    let nm = match wc.sparsity {
                        Sparsity::NM { n, .. } => n,
                        _ => 16,
                    };
                    let k_computed = wc.sparsity.computed_reduction(k);
                    MatrixWork {
                        macs: op.cost.macs,
                        m,
                        n,
                        k: k_computed,
                        weight_bits,
                        act,
                        nm,
                        density: match wc.sparsity {
                            Sparsity::NM { .. } | Sparsity::Block { .. } => wc.sparsity.density(),
                            Sparsity::Dense | Sparsity::Unstructured { .. } => 1.0,
                        },
                        group: wc.format.is_quantised().then_some(wc.format.group_size),
                    }
                }
                _ => MatrixWork {
                    macs: op.cost.macs,
                    m: 0,
                    n: 0,
                    k: 0,
                    weight_bits,
                    act,
                    nm: 16,
                    density: 1.0,
                    group: None,
                },
            });
        // `check_graph` rejects graphs with unsupported precisions, so `None` is only reachable
        // for unchecked graphs, which then cost no matrix time.
        let (effective_macs, compute_cycles, mac_pj) = work
            .and_then(|w| {
                let (eff, cycles) = matrix_work_cycles(matrix, &w)?;
                Some((eff, cycles, self.mac_pj(w.weight_bits, w.act) * eff as f64))
            })
            .unwrap_or((0, 0, 0.0));

        // An epilogue activation streams while its linear layer's products run: it adds its
        // pipeline latency, as `matrix_epilogue_cycles` charges the products.
        let epilogue = matches!(op.kind, OpKind::Activation { epilogue: true, .. });
        let (vector_cycles, vector_pj) = match op.cost.vector {
            Some((sfu, elements)) => (
                match epilogue {
                    true => accel.vector().cost(sfu).map_or(0, |c| c.latency()),
                    false => accel.vector().cycles(sfu, elements).0,
                },
                energy_table.vector_per_element().0 * elements as f64,
            ),
            None => (0, 0.0),
        };

        // Activations stay on chip when the operator's inputs and outputs fit the buffers.
        // Attention is computed tile by tile with a streamed softmax, so its scores never spill.
        let act_bytes = op.cost.act_in_bytes + op.cost.act_out_bytes;
        let tiled_attention = matches!(
            op.kind,
            OpKind::AttentionScores { .. }
                | OpKind::Softmax { .. }
                | OpKind::AttentionValues { .. }
        );
        let act_spill = if !tiled_attention && act_bytes > accel.on_chip_bytes().0 {
            act_bytes
        } else {
            0
        };
        let kv_bytes = op.cost.kv_read_bytes + op.cost.kv_write_bytes;
        let mut per_memory: BTreeMap<usize, (u64, BytesPerSecond)> = BTreeMap::new();
        for (role, bytes) in [
            (self.weights_mem, op.cost.weight_bytes),
            (self.kv_mem, kv_bytes),
            (self.act_mem, act_spill),
        ] {
            let e = per_memory.entry(role.index).or_insert((0, role.bandwidth));
            e.0 += bytes;
        }
        let memory_seconds = per_memory
            .values()
            .map(|(bytes, bw)| bw.seconds_for(crate::units::Bytes(*bytes)).0)
            .fold(0.0, f64::max);
        let memory_cycles = accel
            .clock()
            .cycles_for(crate::units::Seconds(memory_seconds))
            .0;
        let dram_bytes = op.cost.weight_bytes + kv_bytes + act_spill;
        let dram_pj = 8.0
            * (op.cost.weight_bytes as f64 * self.weights_mem.pj_per_bit
                + kv_bytes as f64 * self.kv_mem.pj_per_bit
                + act_spill as f64 * self.act_mem.pj_per_bit);
        // Off-chip bytes are written into a buffer and read out once; activations are read and
        // written once each.
        let buffer_bytes = 2 * (op.cost.weight_bytes + kv_bytes) + act_bytes;
        let buffer_pj = buffer_bytes as f64 * self.buffer_pj_per_byte;

        let (cycles, bound) = [
            (compute_cycles, Bound::Compute),
            (vector_cycles, Bound::Vector),
            (memory_cycles, Bound::Memory),
        ]
        .into_iter()
        .max_by_key(|(c, b)| (*c, std::cmp::Reverse(*b)))
        .unwrap_or((0, Bound::Memory));
        let seconds = accel.clock().seconds(Cycles(cycles)).0;
        OpEstimate {
            name: op.name.clone(),
            class: op.kind.class_name(),
            layer: op.layer,
            cycles: Cycles(cycles),
            compute_cycles: Cycles(compute_cycles),
            vector_cycles: Cycles(vector_cycles),
            memory_cycles: Cycles(memory_cycles),
            bound,
            effective_macs,
            dram_bytes,
            act_on_chip_bytes: act_bytes - act_spill,
            energy: Energy {
                mac: PicoJoules(mac_pj),
                vector: PicoJoules(vector_pj),
                buffer: PicoJoules(buffer_pj),
                dram: PicoJoules(dram_pj),
                r#static: PicoJoules(energy_table.static_watts() * seconds * 1e12),
            },
        }
    }

    fn mac_pj(&self, bits: u32, act: ActivationFormat) -> f64 {
        self.accel
            .energy()
            .mac(bits, act)
            .map(|e| e.0)
            .unwrap_or(0.0)
    }

    /// The cost of a whole pass.
    pub fn pass(&self, graph: &Graph) -> PassEstimate {
        let ops: Vec<OpEstimate> = graph.ops().map(|op| self.op(op)).collect();
        summarise(ops, |c| self.accel.clock().seconds(c).0)
    }
}

const GIB: f64 = (1u64 << 30) as f64;

/// Mean pJ per byte of the on-chip buffers, weighted by capacity.
fn buffer_pj_per_byte(accel: &Accelerator) -> f64 {
    let mut weighted = 0.0;
    let mut total = 0.0;
    for b in accel.buffers() {
        if let Some(pj) = accel.energy().buffer_access(b.name()) {
            let word_bytes = (b.word_bits() as f64 / 8.0).max(1.0);
            weighted += pj.0 / word_bytes * b.bytes().0 as f64;
            total += b.bytes().0 as f64;
        }
    }
    if total > 0.0 {
        weighted / total
    } else {
        0.0
    }
}

fn summarise(ops: Vec<OpEstimate>, seconds_of: impl Fn(Cycles) -> f64) -> PassEstimate {
    let mut cycles = Cycles(0);
    let mut dram_bytes = 0;
    let mut act_on_chip_bytes = 0;
    let mut energy = Energy::default();
    let mut cycles_by_bound = BTreeMap::new();
    for e in &ops {
        cycles += e.cycles;
        dram_bytes += e.dram_bytes;
        act_on_chip_bytes += e.act_on_chip_bytes;
        energy += e.energy;
        *cycles_by_bound.entry(e.bound).or_insert(0) += e.cycles.0;
    }
    PassEstimate {
        cycles,
        seconds: seconds_of(cycles),
        dram_bytes,
        act_on_chip_bytes,
        energy,
        cycles_by_bound,
        ops,
    }
}

/// The analytical model of a GPU: per operator, the longer of matrix work at the stack's share of
/// peak tensor throughput and weight/KV traffic at its share of peak bandwidth; activations are
/// assumed to stay in the GPU's caches and vector work to hide under the rest (both favour the
/// GPU). Energy is board power (TDP) × time.
#[derive(Debug, Clone, Copy)]
pub struct GpuModel {
    /// The GPU.
    pub gpu: Gpu,
    /// The serving stack the efficiencies stand for.
    pub stack: ServingStack,
    int8: bool,
}

/// A GPU's cost of one pass.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct GpuPass {
    /// Seconds.
    pub seconds: f64,
    /// Joules (TDP × time).
    pub joules: f64,
    /// Bytes read from GPU memory.
    pub bytes: u64,
    /// The bound taking most of the time.
    pub bound: Bound,
}

impl GpuModel {
    /// A GPU running `comp` (int8 tensor cores are used when activations are int8).
    pub fn new(gpu: Gpu, stack: ServingStack, comp: &Compression) -> Self {
        Self {
            gpu,
            stack,
            int8: comp.activations == ActivationFormat::Int8,
        }
    }

    /// The cost of one pass.
    pub fn pass(&self, graph: &Graph) -> GpuPass {
        let ops_per_s = self.gpu.peak_ops(self.int8) * self.stack.compute_efficiency;
        let bytes_per_s = self.gpu.bandwidth().0 * self.stack.bandwidth_efficiency;
        let (mut seconds, mut compute_s, mut memory_s, mut bytes) = (0.0, 0.0, 0.0, 0);
        for op in graph.ops() {
            let c = op.cost.matmul_flops() as f64 / ops_per_s;
            let m = op.cost.compulsory_bytes() as f64 / bytes_per_s;
            bytes += op.cost.compulsory_bytes();
            if c > m {
                compute_s += c;
            } else {
                memory_s += m;
            }
            seconds += c.max(m);
        }
        GpuPass {
            seconds,
            joules: seconds * self.gpu.tdp_watts,
            bytes,
            bound: if compute_s > memory_s {
                Bound::Compute
            } else {
                Bound::Memory
            },
        }
    }

    /// Whether the graph's weights fit in one GPU's memory.
    pub fn fits(&self, graph: &Graph) -> bool {
        graph.weight_bytes() <= self.gpu.memory_bytes()
    }
}
