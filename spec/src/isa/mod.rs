//! The instruction set shared by the compiler, the simulator and the RTL controller.
//!
//! Six instruction classes run on decoupled units (load, store, matrix–matrix, matrix–vector,
//! special-function, system) that synchronise by dependency tokens, as in TVM's VTA and FlightLLM:
//! an instruction waits for one token from each unit in its `wait` mask before it starts, and
//! releases one token to each unit in its `release` mask when it finishes. Tokens are counted per
//! ordered pair of units.
//!
//! Every class has a fixed field table ([`layout`]); the binary encoding packs the fields in table
//! order into little-endian 32-bit words, a field never straddling two words. Word 0 starts with
//! the opcode (4 bits), the wait mask (6 bits) and the release mask (6 bits). [`layout_doc`]
//! renders the tables; the text form (`tessera asm` / `tessera disasm`) names the same fields.

pub mod data;
mod encoding;
mod text;

pub use encoding::{
    decode_program, encode_program, words_of, DecodeError, EncodeError, Program, MAGIC,
};
pub use text::{assemble, disassemble, AsmError};

use crate::accel::SfuOp;
use serde::{Deserialize, Serialize};

/// The decoupled execution units, in token-mask bit order.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Unit {
    /// DRAM → buffer transfers.
    Load,
    /// Buffer → DRAM transfers.
    Store,
    /// Matrix–matrix engine.
    Matrix,
    /// Matrix–vector engine.
    Vector,
    /// Special-function unit.
    Sfu,
    /// System unit (barriers, halt).
    System,
}

impl Unit {
    /// Every unit in mask-bit order.
    pub const ALL: [Unit; 6] = [
        Unit::Load,
        Unit::Store,
        Unit::Matrix,
        Unit::Vector,
        Unit::Sfu,
        Unit::System,
    ];

    /// Short name used in the text form.
    pub fn name(&self) -> &'static str {
        match self {
            Unit::Load => "ld",
            Unit::Store => "st",
            Unit::Matrix => "mm",
            Unit::Vector => "mv",
            Unit::Sfu => "sfu",
            Unit::System => "sys",
        }
    }

    /// Bit of this unit in a [`UnitMask`].
    pub fn bit(&self) -> u8 {
        1 << (*self as u8)
    }
}

/// A set of units, one bit each in [`Unit::ALL`] order.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct UnitMask(pub u8);

impl UnitMask {
    /// No unit.
    pub const NONE: UnitMask = UnitMask(0);

    /// The mask of `units`.
    pub fn of(units: &[Unit]) -> UnitMask {
        UnitMask(units.iter().fold(0, |m, u| m | u.bit()))
    }
    /// Whether `u` is in the set.
    pub fn contains(&self, u: Unit) -> bool {
        self.0 & u.bit() != 0
    }
    /// The units in the set, in order.
    pub fn units(&self) -> impl Iterator<Item = Unit> + '_ {
        Unit::ALL.into_iter().filter(|u| self.contains(*u))
    }
}

/// Dependency tokens of one instruction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Sync {
    /// Units whose tokens must be taken before starting.
    pub wait: UnitMask,
    /// Units that receive a token on completion.
    pub release: UnitMask,
}

/// A location in an on-chip buffer: the buffer's index in the accelerator spec and a byte address.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct BufRef {
    /// Index into the accelerator's `buffers`.
    pub buffer: u8,
    /// Byte address inside the buffer.
    pub addr: u32,
}

/// One level of a DMA loop nest: `count` iterations advancing both addresses by their strides.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Loop {
    /// Iterations (0 and 1 both mean once).
    pub count: u16,
    /// DRAM address step per iteration (bytes).
    pub dram_stride: u32,
    /// Buffer address step per iteration (bytes).
    pub buf_stride: u32,
}

/// A DMA transfer between DRAM channels and a buffer: `bytes` per innermost transfer, repeated
/// over up to three loop levels (level 0 innermost), on `lanes` consecutive channels at once.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Dma {
    /// Dependency tokens.
    pub sync: Sync,
    /// Buffer side.
    pub buf: BufRef,
    /// DRAM channel (index over the accelerator's memories' channels in order).
    pub channel: u8,
    /// DRAM byte address inside the channel (40 bits).
    pub dram_addr: u64,
    /// Bytes per innermost transfer (24 bits).
    pub bytes: u32,
    /// Loop nest, innermost first.
    pub loops: [Loop; 3],
    /// Consecutive channels from `channel` that run the same transfer at once, each on a DMA
    /// engine of its own, at the same DRAM addresses (0 and 1 both mean one): a multi-channel
    /// descriptor, as one wave of weights striped over every channel needs.
    pub lanes: u8,
    /// Buffer address step from one lane to the next (bytes). A load's lanes lie side by side
    /// or interleave within one loop level ([`Dma::lanes_disjoint`]).
    pub lane_stride: u32,
}

impl Dma {
    /// Lanes the transfer runs on (at least one).
    pub fn lane_count(&self) -> u64 {
        self.lanes.max(1) as u64
    }

    /// Bytes one lane moves: `bytes` per innermost transfer times every loop's count (a count of
    /// 0 counts as 1).
    pub fn lane_bytes(&self) -> u64 {
        self.loops
            .iter()
            .fold(self.bytes as u64, |b, l| b * l.count.max(1) as u64)
    }

    /// Bytes the transfer moves over all its lanes.
    pub fn total_bytes(&self) -> u64 {
        self.lane_bytes() * self.lane_count()
    }

    /// Bytes from the first to the last byte one lane touches in the buffer, plus one: `bytes`
    /// plus each loop's last step.
    pub fn lane_extent(&self) -> u64 {
        self.loops.iter().fold(self.bytes as u64, |e, l| {
            e + (l.count.max(1) as u64 - 1) * l.buf_stride as u64
        })
    }

    /// Whether the lanes touch disjoint buffer bytes: side by side (`lane_stride` at least one
    /// lane's extent), or interleaved within a single loop level (each iteration's chunks of
    /// every lane, `lane_stride` apart, fit before the next iteration's, `buf_stride` on). One
    /// lane is always disjoint.
    pub fn lanes_disjoint(&self) -> bool {
        let (lanes, stride) = (self.lane_count(), self.lane_stride as u64);
        if lanes == 1 || stride >= self.lane_extent() {
            return true;
        }
        let [inner, outer @ ..] = self.loops;
        stride >= self.bytes as u64
            && outer.iter().all(|l| l.count <= 1)
            && lanes * stride <= inner.buf_stride as u64
    }

    /// Lane `i` as a one-lane transfer: channel `channel + i`, buffer side `lane_stride · i`
    /// further on.
    pub fn lane(&self, i: u64) -> Dma {
        Dma {
            channel: self.channel + i as u8,
            buf: BufRef {
                buffer: self.buf.buffer,
                addr: self.buf.addr + (i * self.lane_stride as u64) as u32,
            },
            lanes: 1,
            lane_stride: 0,
            ..*self
        }
    }

    /// Every lane as a one-lane transfer, in channel order.
    pub fn lanes(&self) -> impl Iterator<Item = Dma> + '_ {
        (0..self.lane_count()).map(|i| self.lane(i))
    }
}

/// Weight operand type of a matrix instruction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightCode {
    /// 16-bit float.
    #[default]
    Fp16,
    /// 8-bit integer.
    Int8,
    /// 4-bit integer.
    Int4,
    /// 3-bit integer.
    Int3,
    /// 2-bit integer.
    Int2,
}

impl WeightCode {
    const NAMES: &'static [&'static str] = &["fp16", "int8", "int4", "int3", "int2"];
    const ALL: [WeightCode; 5] = [
        WeightCode::Fp16,
        WeightCode::Int8,
        WeightCode::Int4,
        WeightCode::Int3,
        WeightCode::Int2,
    ];
    /// Bits per weight (16 for fp16), as in the compression spec.
    pub fn bits(&self) -> u32 {
        [16, 8, 4, 3, 2][*self as usize]
    }
    /// The code for `bits` bits per weight.
    pub fn from_bits(bits: u32) -> Option<WeightCode> {
        Self::ALL.into_iter().find(|w| w.bits() == bits)
    }
}

/// How a matrix instruction's weights are stored.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SparseCode {
    /// Every weight present.
    #[default]
    Dense,
    /// N of every 16 kept, 4-bit indices at `meta`.
    Nm,
    /// Block-skip list at `meta`.
    Block,
    /// Compressed load: bitmap at `meta`, expanded before compute.
    Unstructured,
}

impl SparseCode {
    const NAMES: &'static [&'static str] = &["dense", "nm", "block", "unstructured"];
    const ALL: [SparseCode; 4] = [
        SparseCode::Dense,
        SparseCode::Nm,
        SparseCode::Block,
        SparseCode::Unstructured,
    ];
}

/// The number format of a matrix instruction's results ([`data`] describes each).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OutCode {
    /// fp32 results.
    #[default]
    Fp32,
    /// fp32 results rounded to fp16, as the special-function unit reads them.
    Fp16,
}

impl OutCode {
    const NAMES: &'static [&'static str] = &["fp32", "fp16"];
    const ALL: [OutCode; 2] = [OutCode::Fp32, OutCode::Fp16];
    /// Bytes per result.
    pub fn bytes(&self) -> u64 {
        match self {
            OutCode::Fp32 => 4,
            OutCode::Fp16 => 2,
        }
    }
}

/// The activation a matrix instruction's epilogue applies to its results: the special-function
/// unit's formula of the same name ([`data::sfu_row`]).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum ActCode {
    /// No activation.
    #[default]
    None,
    /// ReLU.
    Relu,
    /// GELU (tanh form).
    Gelu,
    /// SiLU.
    Silu,
}

impl ActCode {
    const NAMES: &'static [&'static str] = &["none", "relu", "gelu", "silu"];
    const ALL: [ActCode; 4] = [ActCode::None, ActCode::Relu, ActCode::Gelu, ActCode::Silu];
    /// The special-function operation that computes it; `None` for no activation.
    pub fn sfu_op(&self) -> Option<SfuOp> {
        match self {
            ActCode::None => None,
            ActCode::Relu => Some(SfuOp::Relu),
            ActCode::Gelu => Some(SfuOp::Gelu),
            ActCode::Silu => Some(SfuOp::Silu),
        }
    }
}

/// A matrix instruction: `c[m × n] (+)= a[m × k] · b[k × n]` on one tile, `a` activations and `b`
/// weights. Matrix–vector instructions use the same fields with `m = 1`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct MatrixOp {
    /// Dependency tokens.
    pub sync: Sync,
    /// Activations.
    pub a: BufRef,
    /// Weights.
    pub b: BufRef,
    /// Results.
    pub c: BufRef,
    /// Tile rows.
    pub m: u16,
    /// Tile columns (output features).
    pub n: u16,
    /// Reduction length.
    pub k: u16,
    /// Weight type.
    pub weight: WeightCode,
    /// Activations are int8 (else fp16).
    pub act_int8: bool,
    /// int8 activations carry one fp16 scale per row after them, applied to the row's results.
    pub a_scaled: bool,
    /// Result format.
    pub out: OutCode,
    /// Dense fp16 or int8 weights stored by reduction rows (row `p` holds `w(p, 0..n)`) instead
    /// of by columns, int8 rows without scales (each row's scale folded into `a`): a value
    /// cache's token-major rows as the operand of the attention-weighted sum.
    pub b_rows: bool,
    /// Weight storage.
    pub sparse: SparseCode,
    /// Kept weights per 16 for N:M (1..=16).
    pub nm_n: u8,
    /// Sparse metadata (indices, block list or bitmap).
    pub meta: BufRef,
    /// Quantisation group size (0: one scale per row; up to 4096).
    pub group: u16,
    /// Add to `c` instead of overwriting it.
    pub accumulate: bool,
    /// Elements from the start of one result row to the next (0: `n`, rows packed), so that a
    /// tile of columns lands in a wider row-major result.
    pub c_stride: u16,
    /// Independent products of the same shape, one after another in every operand (0 or 1: one):
    /// product `h` reads `a` and `b` (and `meta`) `h` operands further on and writes its rows
    /// `c_batch` elements after the previous product's (attention heads).
    pub batch: u16,
    /// Elements from one product's results to the next's in a batch: 0 for `m · c_stride`
    /// (each product's rows after the previous one's), or a step within the rows (each
    /// product's columns beside the previous one's: query heads' context rows, token-major).
    pub c_batch: u16,
    /// Epilogue: one fp16 row of `n` biases, column `j`'s added to every result of column `j`
    /// (the special-function unit's `add_row`, on the results as they leave the engine).
    pub bias: Option<BufRef>,
    /// Epilogue: the activation applied to every result, after the bias.
    pub act: ActCode,
    /// Integer weights (not `b_rows`) carry an fp16 zero point per scale, after the scales:
    /// asymmetric quantisation ([`data`]).
    pub zero_points: bool,
}

impl MatrixOp {
    /// Products the instruction computes (`batch`, at least 1).
    pub fn products(&self) -> u64 {
        self.batch.max(1) as u64
    }

    /// The special-function operations the epilogue applies, in order: `add_row` for a bias,
    /// then the activation.
    pub fn epilogue(&self) -> impl Iterator<Item = SfuOp> {
        let bias = self.bias.map(|_| SfuOp::AddRow);
        bias.into_iter().chain(self.act.sfu_op())
    }
}

/// A special-function instruction over `rows × cols` elements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SfuInstr {
    /// Dependency tokens.
    pub sync: Sync,
    /// The function.
    pub op: SfuOp,
    /// Input.
    pub src: BufRef,
    /// Second operand (add/mul) or parameters (norm weights).
    pub aux: BufRef,
    /// Output.
    pub dst: BufRef,
    /// Rows (softmax and norms work per row).
    pub rows: u16,
    /// Elements per row.
    pub cols: u16,
    /// Elements from the start of one `src` row to the next; 0: `cols`, rows packed. fp16
    /// sources only (not `dequantize`).
    pub src_stride: u16,
    /// Elements from the start of one `aux` row to the next: of a same-shape operand (`add`,
    /// `mul`; 0: `cols`, packed), or of the angles (`rotary`: row `r` rotated by row `r`'s
    /// angles; 0: one row of angles for every row). Other operations: 0.
    pub aux_stride: u16,
    /// Elements from the start of one `dst` row to the next; 0: `cols`, rows packed. fp16
    /// results only (not `quantize`).
    pub dst_stride: u16,
    /// `softmax` only: row `r` is taken over its first `causal + r mod causal_period` elements
    /// (at most `cols`) and the rest are written 0, a causal mask whose first row sees `causal`
    /// keys, restarting every `causal_period` rows (0: never; one block of query rows per
    /// head); 0: every element.
    pub causal: u16,
    /// Rows after which the causal mask restarts (0: never).
    pub causal_period: u16,
}

impl SfuInstr {
    /// `op` over `rows × cols` packed elements (no strides, no mask) and no tokens.
    pub fn new(op: SfuOp, (src, aux, dst): (BufRef, BufRef, BufRef), rows: u16, cols: u16) -> Self {
        SfuInstr {
            sync: Sync::default(),
            op,
            src,
            aux,
            dst,
            rows,
            cols,
            src_stride: 0,
            dst_stride: 0,
            aux_stride: 0,
            causal: 0,
            causal_period: 0,
        }
    }
}

/// System operations.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum SysOp {
    /// Only synchronises.
    #[default]
    Nop,
    /// Ends the program once every unit is idle.
    Halt,
}

impl SysOp {
    const NAMES: &'static [&'static str] = &["nop", "halt"];
    const ALL: [SysOp; 2] = [SysOp::Nop, SysOp::Halt];
}

/// A system instruction.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct SysInstr {
    /// Dependency tokens.
    pub sync: Sync,
    /// The operation.
    pub op: SysOp,
}

/// One instruction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase", tag = "class")]
pub enum Instruction {
    /// DRAM → buffer.
    Load(Dma),
    /// Buffer → DRAM.
    Store(Dma),
    /// Matrix–matrix tile.
    Matmul(MatrixOp),
    /// Matrix–vector tile.
    Matvec(MatrixOp),
    /// Special function.
    Sfu(SfuInstr),
    /// System.
    Sys(SysInstr),
}

/// Instruction classes, numbered as their opcodes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Opcode {
    /// [`Instruction::Load`].
    Load = 1,
    /// [`Instruction::Store`].
    Store = 2,
    /// [`Instruction::Matmul`].
    Matmul = 3,
    /// [`Instruction::Matvec`].
    Matvec = 4,
    /// [`Instruction::Sfu`].
    Sfu = 5,
    /// [`Instruction::Sys`].
    Sys = 6,
}

impl Opcode {
    /// Every opcode.
    pub const ALL: [Opcode; 6] = [
        Opcode::Load,
        Opcode::Store,
        Opcode::Matmul,
        Opcode::Matvec,
        Opcode::Sfu,
        Opcode::Sys,
    ];
    /// The mnemonic of the text form.
    pub fn mnemonic(&self) -> &'static str {
        match self {
            Opcode::Load => "load",
            Opcode::Store => "store",
            Opcode::Matmul => "matmul",
            Opcode::Matvec => "matvec",
            Opcode::Sfu => "sfu",
            Opcode::Sys => "sys",
        }
    }
    /// The opcode numbered `n`.
    pub fn from_number(n: u32) -> Option<Opcode> {
        Self::ALL.into_iter().find(|o| *o as u32 == n)
    }
    /// The unit that executes this class.
    pub fn unit(&self) -> Unit {
        match self {
            Opcode::Load => Unit::Load,
            Opcode::Store => Unit::Store,
            Opcode::Matmul => Unit::Matrix,
            Opcode::Matvec => Unit::Vector,
            Opcode::Sfu => Unit::Sfu,
            Opcode::Sys => Unit::System,
        }
    }
}

/// How a field's value reads in the text form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FieldKind {
    /// An unsigned number (decimal or 0x hex).
    Int,
    /// A set of units (`mm,sfu` or `-`).
    Mask,
    /// One of the names, numbered from 0.
    Enum(&'static [&'static str]),
    /// `0` or `1`.
    Flag,
}

/// One field of an instruction's binary layout.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Field {
    /// Name in the text form and the documentation.
    pub name: &'static str,
    /// Width in bits (at most 32).
    pub bits: u32,
    /// Text representation.
    pub kind: FieldKind,
}

const fn int(name: &'static str, bits: u32) -> Field {
    Field {
        name,
        bits,
        kind: FieldKind::Int,
    }
}

const HEADER: [Field; 3] = [
    int("opcode", 4),
    Field {
        name: "wait",
        bits: 6,
        kind: FieldKind::Mask,
    },
    Field {
        name: "release",
        bits: 6,
        kind: FieldKind::Mask,
    },
];

const SFU_NAMES: &[&str] = &[
    "softmax",
    "layer_norm",
    "rms_norm",
    "silu",
    "gelu",
    "relu",
    "rotary",
    "add",
    "mul",
    "quantize",
    "dequantize",
    "add_row",
    "mul_row",
    "copy",
];

const DMA: &[Field] = &[
    int("buffer", 4),
    int("channel", 8),
    int("buf_addr", 32),
    int("dram_addr_lo", 32),
    int("dram_addr_hi", 8),
    int("bytes", 24),
    int("n0", 16),
    int("n1", 16),
    int("n2", 16),
    int("lanes", 8),
    int("dram_stride0", 32),
    int("dram_stride1", 32),
    int("dram_stride2", 32),
    int("buf_stride0", 32),
    int("buf_stride1", 32),
    int("buf_stride2", 32),
    int("lane_stride", 32),
];

const MATRIX: &[Field] = &[
    int("a_buffer", 4),
    int("b_buffer", 4),
    int("c_buffer", 4),
    int("meta_buffer", 4),
    int("a_addr", 32),
    int("b_addr", 32),
    int("c_addr", 32),
    int("meta_addr", 32),
    int("m", 16),
    int("n", 16),
    int("k", 16),
    Field {
        name: "weight",
        bits: 3,
        kind: FieldKind::Enum(WeightCode::NAMES),
    },
    Field {
        name: "act_int8",
        bits: 1,
        kind: FieldKind::Flag,
    },
    Field {
        name: "sparse",
        bits: 2,
        kind: FieldKind::Enum(SparseCode::NAMES),
    },
    int("nm_n", 5),
    Field {
        name: "accumulate",
        bits: 1,
        kind: FieldKind::Flag,
    },
    Field {
        name: "a_scaled",
        bits: 1,
        kind: FieldKind::Flag,
    },
    Field {
        name: "out",
        bits: 1,
        kind: FieldKind::Enum(OutCode::NAMES),
    },
    Field {
        name: "b_rows",
        bits: 1,
        kind: FieldKind::Flag,
    },
    Field {
        name: "bias",
        bits: 1,
        kind: FieldKind::Flag,
    },
    int("group", 13),
    int("c_stride", 16),
    Field {
        name: "act",
        bits: 2,
        kind: FieldKind::Enum(ActCode::NAMES),
    },
    Field {
        name: "zero_points",
        bits: 1,
        kind: FieldKind::Flag,
    },
    int("batch", 16),
    int("c_batch", 16),
    int("bias_buffer", 4),
    int("bias_addr", 32),
];

const SFU: &[Field] = &[
    Field {
        name: "op",
        bits: 4,
        kind: FieldKind::Enum(SFU_NAMES),
    },
    int("src_buffer", 4),
    int("aux_buffer", 4),
    int("dst_buffer", 4),
    int("src_addr", 32),
    int("aux_addr", 32),
    int("dst_addr", 32),
    int("rows", 16),
    int("cols", 16),
    int("src_stride", 16),
    int("dst_stride", 16),
    int("aux_stride", 16),
    int("causal", 16),
    int("causal_period", 16),
];

const SYS: &[Field] = &[Field {
    name: "op",
    bits: 4,
    kind: FieldKind::Enum(SysOp::NAMES),
}];

/// The fields of a class after the common header (`opcode`, `wait`, `release`), in encoding order.
pub fn layout(op: Opcode) -> &'static [Field] {
    match op {
        Opcode::Load | Opcode::Store => DMA,
        Opcode::Matmul | Opcode::Matvec => MATRIX,
        Opcode::Sfu => SFU,
        Opcode::Sys => SYS,
    }
}

/// The header fields every instruction starts with.
pub fn header() -> &'static [Field] {
    &HEADER
}

/// Markdown tables of every class's binary layout: word, bit range, field.
pub fn layout_doc() -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    for op in Opcode::ALL {
        let words = encoding::words_of(op);
        let _ = writeln!(
            s,
            "\n### `{}` (opcode {}, unit `{}`, {} words)\n\n| word | bits | field |\n|---|---|---|",
            op.mnemonic(),
            op as u32,
            op.unit().name(),
            words
        );
        for &(word, lo, f) in encoding::placements(op) {
            let _ = writeln!(s, "| {word} | {}..{} | `{}` |", lo, lo + f.bits - 1, f.name);
        }
    }
    s
}

impl Instruction {
    /// The class.
    pub fn opcode(&self) -> Opcode {
        match self {
            Instruction::Load(_) => Opcode::Load,
            Instruction::Store(_) => Opcode::Store,
            Instruction::Matmul(_) => Opcode::Matmul,
            Instruction::Matvec(_) => Opcode::Matvec,
            Instruction::Sfu(_) => Opcode::Sfu,
            Instruction::Sys(_) => Opcode::Sys,
        }
    }

    /// Dependency tokens.
    pub fn sync(&self) -> Sync {
        match self {
            Instruction::Load(d) | Instruction::Store(d) => d.sync,
            Instruction::Matmul(m) | Instruction::Matvec(m) => m.sync,
            Instruction::Sfu(s) => s.sync,
            Instruction::Sys(s) => s.sync,
        }
    }

    /// Replaces the dependency tokens.
    pub fn set_sync(&mut self, sync: Sync) {
        match self {
            Instruction::Load(d) | Instruction::Store(d) => d.sync = sync,
            Instruction::Matmul(m) | Instruction::Matvec(m) => m.sync = sync,
            Instruction::Sfu(s) => s.sync = sync,
            Instruction::Sys(s) => s.sync = sync,
        }
    }

    /// Field values after the header, in [`layout`] order.
    pub fn fields(&self) -> Vec<u64> {
        match self {
            Instruction::Load(d) | Instruction::Store(d) => {
                let l = &d.loops;
                vec![
                    d.buf.buffer as u64,
                    d.channel as u64,
                    d.buf.addr as u64,
                    d.dram_addr & 0xffff_ffff,
                    d.dram_addr >> 32,
                    d.bytes as u64,
                    l[0].count as u64,
                    l[1].count as u64,
                    l[2].count as u64,
                    d.lanes as u64,
                    l[0].dram_stride as u64,
                    l[1].dram_stride as u64,
                    l[2].dram_stride as u64,
                    l[0].buf_stride as u64,
                    l[1].buf_stride as u64,
                    l[2].buf_stride as u64,
                    d.lane_stride as u64,
                ]
            }
            Instruction::Matmul(m) | Instruction::Matvec(m) => vec![
                m.a.buffer as u64,
                m.b.buffer as u64,
                m.c.buffer as u64,
                m.meta.buffer as u64,
                m.a.addr as u64,
                m.b.addr as u64,
                m.c.addr as u64,
                m.meta.addr as u64,
                m.m as u64,
                m.n as u64,
                m.k as u64,
                m.weight as u64,
                m.act_int8 as u64,
                m.sparse as u64,
                m.nm_n as u64,
                m.accumulate as u64,
                m.a_scaled as u64,
                m.out as u64,
                m.b_rows as u64,
                m.bias.is_some() as u64,
                m.group as u64,
                m.c_stride as u64,
                m.act as u64,
                m.zero_points as u64,
                m.batch as u64,
                m.c_batch as u64,
                m.bias.map_or(0, |b| b.buffer as u64),
                m.bias.map_or(0, |b| b.addr as u64),
            ],
            Instruction::Sfu(s) => vec![
                s.op as u64,
                s.src.buffer as u64,
                s.aux.buffer as u64,
                s.dst.buffer as u64,
                s.src.addr as u64,
                s.aux.addr as u64,
                s.dst.addr as u64,
                s.rows as u64,
                s.cols as u64,
                s.src_stride as u64,
                s.dst_stride as u64,
                s.aux_stride as u64,
                s.causal as u64,
                s.causal_period as u64,
            ],
            Instruction::Sys(s) => vec![s.op as u64],
        }
    }

    /// Rebuilds an instruction from its class, tokens and field values (as [`Instruction::fields`]
    /// returns them). Values must already fit their fields; enumerations must be in range.
    pub fn from_fields(op: Opcode, sync: Sync, f: &[u64]) -> Option<Instruction> {
        if f.len() != layout(op).len() {
            return None;
        }
        let buf = |b: u64, a: u64| BufRef {
            buffer: b as u8,
            addr: a as u32,
        };
        Some(match op {
            Opcode::Load | Opcode::Store => {
                let lp = |i: usize| Loop {
                    count: f[6 + i] as u16,
                    dram_stride: f[10 + i] as u32,
                    buf_stride: f[13 + i] as u32,
                };
                let d = Dma {
                    sync,
                    buf: buf(f[0], f[2]),
                    channel: f[1] as u8,
                    dram_addr: f[3] | (f[4] << 32),
                    bytes: f[5] as u32,
                    loops: [lp(0), lp(1), lp(2)],
                    lanes: f[9] as u8,
                    lane_stride: f[16] as u32,
                };
                if op == Opcode::Load {
                    Instruction::Load(d)
                } else {
                    Instruction::Store(d)
                }
            }
            Opcode::Matmul | Opcode::Matvec => {
                let m = MatrixOp {
                    sync,
                    a: buf(f[0], f[4]),
                    b: buf(f[1], f[5]),
                    c: buf(f[2], f[6]),
                    meta: buf(f[3], f[7]),
                    m: f[8] as u16,
                    n: f[9] as u16,
                    k: f[10] as u16,
                    weight: *WeightCode::ALL.get(f[11] as usize)?,
                    act_int8: f[12] != 0,
                    sparse: *SparseCode::ALL.get(f[13] as usize)?,
                    nm_n: f[14] as u8,
                    accumulate: f[15] != 0,
                    a_scaled: f[16] != 0,
                    out: *OutCode::ALL.get(f[17] as usize)?,
                    b_rows: f[18] != 0,
                    bias: (f[19] != 0).then(|| buf(f[26], f[27])),
                    group: f[20] as u16,
                    c_stride: f[21] as u16,
                    act: *ActCode::ALL.get(f[22] as usize)?,
                    zero_points: f[23] != 0,
                    batch: f[24] as u16,
                    c_batch: f[25] as u16,
                };
                if op == Opcode::Matmul {
                    Instruction::Matmul(m)
                } else {
                    Instruction::Matvec(m)
                }
            }
            Opcode::Sfu => Instruction::Sfu(SfuInstr {
                sync,
                op: *SfuOp::ALL.get(f[0] as usize)?,
                src: buf(f[1], f[4]),
                aux: buf(f[2], f[5]),
                dst: buf(f[3], f[6]),
                rows: f[7] as u16,
                cols: f[8] as u16,
                src_stride: f[9] as u16,
                dst_stride: f[10] as u16,
                aux_stride: f[11] as u16,
                causal: f[12] as u16,
                causal_period: f[13] as u16,
            }),
            Opcode::Sys => Instruction::Sys(SysInstr {
                sync,
                op: *SysOp::ALL.get(f[0] as usize)?,
            }),
        })
    }
}
