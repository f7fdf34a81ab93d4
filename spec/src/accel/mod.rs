//! Accelerator spec: parsed from TOML, validated once into an immutable [`Accelerator`].
//!
//! The file layout is documented in `examples/accelerators/*.toml`. Parsing goes text →
//! `toml::Value` → serde structs (unknown keys rejected, type errors named by key path) →
//! [`validate`](self) (every range and cross-reference checked, all problems reported at once).
//! The structs' fields are private to the crate: outside code reads them through accessors and
//! can only obtain an [`Accelerator`] that passed validation.

mod validate;

use crate::compression::{ActivationFormat, Sparsity};
use crate::error::{from_toml_value, Problem, SpecError};
use crate::units::{Bytes, BytesPerSecond, Cycles, Hertz, PicoJoules};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::fmt;

/// Names accepted by [`Accelerator::preset`].
pub const PRESET_NAMES: &[&str] = &["u280", "vhk158", "edge-asic", "tiny"];

const PRESET_FILES: &[(&str, &str)] = &[
    (
        "u280",
        include_str!("../../../examples/accelerators/u280.toml"),
    ),
    (
        "vhk158",
        include_str!("../../../examples/accelerators/vhk158.toml"),
    ),
    (
        "edge-asic",
        include_str!("../../../examples/accelerators/edge-asic.toml"),
    ),
    (
        "tiny",
        include_str!("../../../examples/accelerators/tiny.toml"),
    ),
];

/// FPGA or ASIC target.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum TargetKind {
    /// A field-programmable gate array (DSP/BRAM/URAM/LUT budget).
    Fpga,
    /// An application-specific chip (area per component).
    Asic,
}

impl TargetKind {
    /// The name used in TOML files.
    pub fn name(&self) -> &'static str {
        match self {
            TargetKind::Fpga => "fpga",
            TargetKind::Asic => "asic",
        }
    }
}

/// A validated accelerator description.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Accelerator {
    /// The file (or preset file) it was read from, for error messages; not part of the format.
    #[serde(skip)]
    pub(crate) source: String,
    pub(crate) name: String,
    pub(crate) kind: TargetKind,
    pub(crate) clock_mhz: f64,
    pub(crate) matrix: MatrixEngine,
    pub(crate) vector: VectorUnit,
    pub(crate) buffers: Vec<Buffer>,
    pub(crate) memories: Vec<Memory>,
    pub(crate) dma: Dma,
    pub(crate) instruction_memory: InstructionMemory,
    pub(crate) energy: EnergyTable,
    pub(crate) resources: Resources,
    /// The price the user quotes for the board or chip, in US dollars (optional: no price is
    /// built in), for cost efficiency.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub(crate) price_usd: Option<f64>,
}

impl Accelerator {
    /// Parses and validates accelerator TOML text (`file` names it in errors).
    pub fn from_toml_str(text: &str, file: &str) -> Result<Accelerator, SpecError> {
        let value: toml::Value =
            toml::from_str(text).map_err(|e| SpecError::from_toml_syntax(file, text, &e))?;
        Self::from_toml_value(value, file)
    }

    /// Validates an already parsed TOML value (sweeps edit dotted keys on it first).
    pub fn from_toml_value(value: toml::Value, file: &str) -> Result<Accelerator, SpecError> {
        let mut accel: Accelerator = from_toml_value(value, file)?;
        validate::validate(&accel, file)?;
        accel.source = file.to_string();
        Ok(accel)
    }

    /// The TOML text of the built-in accelerator called `name`.
    pub fn preset_text(name: &str) -> Option<&'static str> {
        PRESET_FILES
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, t)| *t)
    }

    /// The built-in accelerator called `name` (one of [`PRESET_NAMES`]).
    pub fn preset(name: &str) -> Result<Accelerator, SpecError> {
        match PRESET_FILES.iter().find(|(n, _)| *n == name) {
            Some((n, text)) => {
                Self::from_toml_str(text, &format!("examples/accelerators/{n}.toml"))
            }
            None => Err(SpecError::one(
                format!("preset:{name}"),
                Problem::new(
                    "accel",
                    format!("unknown accelerator preset `{name}`"),
                    format!(
                        "presets: {}; or give a path to a TOML file",
                        PRESET_NAMES.join(", ")
                    ),
                ),
            )),
        }
    }

    /// Display name.
    pub fn name(&self) -> &str {
        &self.name
    }
    /// The file it was read from (`examples/accelerators/NAME.toml` for presets).
    pub fn source(&self) -> &str {
        &self.source
    }
    /// Whether the target is an FPGA.
    pub fn is_fpga(&self) -> bool {
        self.kind == TargetKind::Fpga
    }
    /// The price quoted in the file (`price_usd`), in US dollars.
    pub fn price_usd(&self) -> Option<f64> {
        self.price_usd
    }
    /// Compute clock.
    pub fn clock(&self) -> Hertz {
        Hertz(self.clock_mhz * 1e6)
    }
    /// The matrix engine.
    pub fn matrix(&self) -> &MatrixEngine {
        &self.matrix
    }
    /// The vector / special-function unit.
    pub fn vector(&self) -> &VectorUnit {
        &self.vector
    }
    /// On-chip buffers.
    pub fn buffers(&self) -> &[Buffer] {
        &self.buffers
    }
    /// Total on-chip buffer capacity.
    pub fn on_chip_bytes(&self) -> Bytes {
        self.buffers.iter().map(|b| Bytes(b.bytes)).sum()
    }
    /// Off-chip memories.
    pub fn memories(&self) -> &[Memory] {
        &self.memories
    }
    /// The first memory that holds `what`.
    pub fn memory_for(&self, what: Holds) -> Option<&Memory> {
        self.memories.iter().find(|m| m.holds(what))
    }
    /// DMA engines.
    pub fn dma(&self) -> &Dma {
        &self.dma
    }
    /// Instruction memory.
    pub fn instruction_memory(&self) -> &InstructionMemory {
        &self.instruction_memory
    }
    /// Energy table.
    pub fn energy(&self) -> &EnergyTable {
        &self.energy
    }
    /// Resource budget.
    pub fn resources(&self) -> &Resources {
        &self.resources
    }
}

/// Weight operand types of the matrix engine.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WeightType {
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
}

impl WeightType {
    /// The name used in TOML files.
    pub fn name(&self) -> &'static str {
        match self {
            WeightType::Fp16 => "fp16",
            WeightType::Int8 => "int8",
            WeightType::Int4 => "int4",
            WeightType::Int3 => "int3",
            WeightType::Int2 => "int2",
        }
    }
    /// Bits per weight (16 for fp16), as in `WeightFormat::bits`.
    pub fn bits(&self) -> u32 {
        match self {
            WeightType::Fp16 => 16,
            WeightType::Int8 => 8,
            WeightType::Int4 => 4,
            WeightType::Int3 => 3,
            WeightType::Int2 => 2,
        }
    }
}

/// One supported weight × activation precision pair.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Precision {
    pub(crate) weight: WeightType,
    pub(crate) activation: ActivationFormat,
    pub(crate) macs_per_dsp: f64,
    #[serde(default)]
    pub(crate) shift_add: bool,
}

impl Precision {
    /// Weight operand type.
    pub fn weight(&self) -> WeightType {
        self.weight
    }
    /// Activation operand type.
    pub fn activation(&self) -> ActivationFormat {
        self.activation
    }
    /// MACs one DSP performs per cycle at this precision (operand packing).
    pub fn macs_per_dsp(&self) -> f64 {
        self.macs_per_dsp
    }
    /// Whether low-bit weights use a shift-and-add datapath instead of multipliers (MixPE).
    pub fn shift_add(&self) -> bool {
        self.shift_add
    }
}

impl fmt::Display for Precision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}×{}",
            self.weight.name(),
            activation_name(self.activation)
        )
    }
}

/// The TOML name of an activation format (as in `matrix.precisions[].activation`).
pub(crate) fn activation_name(a: ActivationFormat) -> &'static str {
    match a {
        ActivationFormat::Fp16 => "fp16",
        ActivationFormat::Int8 => "int8",
    }
}

/// Sparse modes of the matrix engine.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SparseModes {
    /// Supported N for N:16 structured sparsity (16-wide blocks along the reduction).
    #[serde(default)]
    pub(crate) nm: Vec<u32>,
    /// Side of the square blocks the engine can skip; 0 when block skipping is absent.
    #[serde(default)]
    pub(crate) block_skip: u32,
    /// Whether unstructured sparse weights can be loaded compressed and expanded on chip.
    #[serde(default)]
    pub(crate) compressed_load: bool,
}

/// The matrix engine: `rows × cols` PEs, each a cascade of `chain` DSPs reducing along K.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MatrixEngine {
    pub(crate) rows: u64,
    pub(crate) cols: u64,
    pub(crate) chain: u64,
    pub(crate) pipeline_depth: u64,
    pub(crate) precisions: Vec<Precision>,
    #[serde(default)]
    pub(crate) sparse: SparseModes,
    #[serde(default)]
    pub(crate) group_sizes: Vec<u32>,
    #[serde(default)]
    pub(crate) dequant_cycles_per_group: u64,
}

impl MatrixEngine {
    /// PE rows.
    pub fn rows(&self) -> u64 {
        self.rows
    }
    /// PE columns.
    pub fn cols(&self) -> u64 {
        self.cols
    }
    /// DSPs per PE chain.
    pub fn chain(&self) -> u64 {
        self.chain
    }
    /// Pipeline fill/drain cycles per matrix operation.
    pub fn pipeline_depth(&self) -> u64 {
        self.pipeline_depth
    }
    /// DSPs in the engine (`rows × cols × chain`; saturates instead of overflowing).
    pub fn dsps(&self) -> u64 {
        self.rows
            .saturating_mul(self.cols)
            .saturating_mul(self.chain)
    }
    /// Supported precision pairs.
    pub fn precisions(&self) -> &[Precision] {
        &self.precisions
    }
    /// The precision entry for a weight width (16 = fp16) and activation format.
    pub fn precision(&self, weight_bits: u32, act: ActivationFormat) -> Option<&Precision> {
        self.precisions
            .iter()
            .find(|p| p.weight.bits() == weight_bits && p.activation == act)
    }
    /// Dense MACs per cycle for a precision pair; `None` when unsupported.
    pub fn peak_macs_per_cycle(&self, weight_bits: u32, act: ActivationFormat) -> Option<f64> {
        self.precision(weight_bits, act)
            .map(|p| self.dsps() as f64 * p.macs_per_dsp)
    }
    /// Whether the engine can run weights with this sparsity.
    pub fn supports_sparsity(&self, s: &Sparsity) -> bool {
        match *s {
            Sparsity::Dense => true,
            Sparsity::NM { n, m } => m == 16 && self.sparse.nm.contains(&n),
            Sparsity::Block { block, .. } => {
                self.sparse.block_skip != 0 && self.sparse.block_skip == block
            }
            Sparsity::Unstructured { .. } => self.sparse.compressed_load,
        }
    }
    /// Supported quantisation group sizes (besides 0, one scale per row).
    pub fn group_sizes(&self) -> &[u32] {
        &self.group_sizes
    }
    /// Whether per-group dequantisation supports group size `g` (0, one scale per row, always).
    pub fn supports_group_size(&self, g: u32) -> bool {
        g == 0 || self.group_sizes.contains(&g)
    }
    /// Latency of the pipelined per-group dequantiser (one group sum accepted per cycle); part of
    /// `pipeline_depth`, which the generated hardware meets exactly.
    pub fn dequant_cycles_per_group(&self) -> u64 {
        self.dequant_cycles_per_group
    }
    /// The sparse modes.
    pub fn sparse(&self) -> &SparseModes {
        &self.sparse
    }
}

impl SparseModes {
    /// Supported N of N:16.
    pub fn nm(&self) -> &[u32] {
        &self.nm
    }
    /// Block-skip block side, 0 when absent.
    pub fn block_skip(&self) -> u32 {
        self.block_skip
    }
    /// Whether compressed load is supported.
    pub fn compressed_load(&self) -> bool {
        self.compressed_load
    }
}

/// Operations of the vector / special-function unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SfuOp {
    /// Row softmax (two passes): `exp(x − max) / Σ exp(x − max)`. No `aux`.
    Softmax,
    /// LayerNorm (two passes): `(x − mean) / sqrt(var + ε) · γ + β`; `aux` holds `γ` then `β`
    /// (fp16, `cols` each).
    LayerNorm,
    /// RMSNorm (two passes): `x / sqrt(mean(x²) + ε) · γ`; `aux` holds `γ` (fp16, `cols`).
    RmsNorm,
    /// SiLU: `x / (1 + exp(−x))`. No `aux`.
    Silu,
    /// GELU, tanh form: `x/2 · (1 + tanh(sqrt(2/π) · (x + 0.044715 x³)))`. No `aux`.
    Gelu,
    /// ReLU. No `aux`.
    Relu,
    /// Rotary position embedding: each pair `(x₂ᵢ, x₂ᵢ₊₁)` of every row rotated by the angle
    /// whose cosine and sine `aux` holds at the same positions of one row (fp16, `cols`): the
    /// rows of one token's heads share their position's angles.
    Rotary,
    /// Element-wise add of `aux` (same shape).
    Add,
    /// Element-wise multiply by `aux` (same shape).
    Mul,
    /// Per-row int8 quantisation (two passes: `max |x|`, then scale and round): `dst` holds the
    /// `rows × cols` int8 values and then one fp16 scale per row, as scaled int8 activations of
    /// a matrix instruction (`a_scaled`). No `aux`.
    Quantize,
    /// The inverse of `quantize`: `src` holds `rows × cols` int8 values and then one fp16 scale
    /// per row (as `quantize` writes them, or an int8 embedding table's rows); `dst` gets each
    /// value times its row's scale in fp16. No `aux`.
    Dequantize,
    /// Adds `aux`, one row of `cols` (fp16), to every row: a linear layer's bias, read from the
    /// products' results on chip.
    AddRow,
    /// Multiplies every row element by element by `aux`, one row of `cols` (fp16): the value
    /// rows' scales folded into each query's probabilities over an integer KV cache.
    MulRow,
    /// Moves rows unchanged, from `src` rows at their stride to `dst` rows at theirs: lays a
    /// fused projection's query rows out per attention block. No `aux`.
    Copy,
}

impl SfuOp {
    /// Every operation, in a fixed order.
    pub const ALL: [SfuOp; 14] = [
        SfuOp::Softmax,
        SfuOp::LayerNorm,
        SfuOp::RmsNorm,
        SfuOp::Silu,
        SfuOp::Gelu,
        SfuOp::Relu,
        SfuOp::Rotary,
        SfuOp::Add,
        SfuOp::Mul,
        SfuOp::Quantize,
        SfuOp::Dequantize,
        SfuOp::AddRow,
        SfuOp::MulRow,
        SfuOp::Copy,
    ];

    /// The key used in TOML files.
    pub fn name(&self) -> &'static str {
        match self {
            SfuOp::Softmax => "softmax",
            SfuOp::LayerNorm => "layer_norm",
            SfuOp::RmsNorm => "rms_norm",
            SfuOp::Silu => "silu",
            SfuOp::Gelu => "gelu",
            SfuOp::Relu => "relu",
            SfuOp::Rotary => "rotary",
            SfuOp::Add => "add",
            SfuOp::Mul => "mul",
            SfuOp::Quantize => "quantize",
            SfuOp::Dequantize => "dequantize",
            SfuOp::AddRow => "add_row",
            SfuOp::MulRow => "mul_row",
            SfuOp::Copy => "copy",
        }
    }
}

/// Timing of one vector-unit operation.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SfuCost {
    pub(crate) latency: u64,
    pub(crate) elements_per_lane_per_cycle: f64,
    #[serde(default = "one")]
    pub(crate) passes: u64,
}

fn one() -> u64 {
    1
}

impl SfuCost {
    /// Pipeline latency in cycles per pass.
    pub fn latency(&self) -> u64 {
        self.latency
    }
    /// Elements each lane completes per cycle.
    pub fn elements_per_lane_per_cycle(&self) -> f64 {
        self.elements_per_lane_per_cycle
    }
    /// Passes over the data (2 for softmax and norms: statistics, then normalisation).
    pub fn passes(&self) -> u64 {
        self.passes
    }
}

/// The vector / special-function unit.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectorUnit {
    pub(crate) lanes: u64,
    pub(crate) ops: BTreeMap<SfuOp, SfuCost>,
}

impl VectorUnit {
    /// Parallel lanes.
    pub fn lanes(&self) -> u64 {
        self.lanes
    }
    /// Timing of `op` (present for every op after validation).
    pub fn cost(&self, op: SfuOp) -> Option<&SfuCost> {
        self.ops.get(&op)
    }
    /// Cycles for `op` over `elements`:
    /// `passes × (latency + ceil(elements / (lanes × elements_per_lane_per_cycle)))`; 0 for none.
    pub fn cycles(&self, op: SfuOp, elements: u64) -> Cycles {
        match self.ops.get(&op) {
            Some(c) if elements > 0 => {
                let per_cycle = self.lanes as f64 * c.elements_per_lane_per_cycle;
                let stream = (elements as f64 / per_cycle).ceil() as u64;
                Cycles(c.passes.saturating_mul(c.latency.saturating_add(stream)))
            }
            _ => Cycles(0),
        }
    }
}

/// An on-chip buffer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Buffer {
    pub(crate) name: String,
    pub(crate) bytes: u64,
    pub(crate) banks: u64,
    pub(crate) ports: u64,
    pub(crate) word_bits: u64,
}

impl Buffer {
    /// Name (unique).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Capacity.
    pub fn bytes(&self) -> Bytes {
        Bytes(self.bytes)
    }
    /// Independent banks.
    pub fn banks(&self) -> u64 {
        self.banks
    }
    /// Ports per bank.
    pub fn ports(&self) -> u64 {
        self.ports
    }
    /// Bits per word (one access).
    pub fn word_bits(&self) -> u64 {
        self.word_bits
    }
}

/// Off-chip memory technology.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MemoryKind {
    /// HBM2.
    Hbm2,
    /// HBM2e.
    Hbm2e,
    /// HBM3.
    Hbm3,
    /// DDR4.
    Ddr4,
    /// DDR5.
    Ddr5,
    /// LPDDR4.
    Lpddr4,
    /// LPDDR5.
    Lpddr5,
}

impl MemoryKind {
    /// The name used in TOML files.
    pub fn name(&self) -> &'static str {
        match self {
            MemoryKind::Hbm2 => "hbm2",
            MemoryKind::Hbm2e => "hbm2e",
            MemoryKind::Hbm3 => "hbm3",
            MemoryKind::Ddr4 => "ddr4",
            MemoryKind::Ddr5 => "ddr5",
            MemoryKind::Lpddr4 => "lpddr4",
            MemoryKind::Lpddr5 => "lpddr5",
        }
    }
}

/// What a memory stores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Holds {
    /// Model weights.
    Weights,
    /// KV cache.
    Kv,
    /// Activations that do not fit on chip.
    Activations,
    /// Instruction programs.
    Instructions,
}

impl Holds {
    /// The key used in TOML files.
    pub fn name(&self) -> &'static str {
        match self {
            Holds::Weights => "weights",
            Holds::Kv => "kv",
            Holds::Activations => "activations",
            Holds::Instructions => "instructions",
        }
    }
}

/// DRAM timing of one channel, in nanoseconds where a time.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DramTiming {
    /// Banks per channel.
    pub banks: u64,
    /// Row (page) size in bytes.
    pub row_bytes: u64,
    /// Activate to read/write (ns).
    pub t_rcd_ns: f64,
    /// Read command to data (CAS latency, ns).
    pub t_cl_ns: f64,
    /// Precharge (ns).
    pub t_rp_ns: f64,
    /// Activate to precharge, minimum (ns).
    pub t_ras_ns: f64,
    /// Beats per burst.
    pub burst_length: u64,
    /// Average refresh interval (ns).
    pub t_refi_ns: f64,
    /// Refresh cycle time (ns).
    pub t_rfc_ns: f64,
}

/// An off-chip memory of identical channels.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Memory {
    pub(crate) name: String,
    pub(crate) kind: MemoryKind,
    pub(crate) channels: u64,
    pub(crate) channel_gbps: f64,
    pub(crate) capacity_gib: f64,
    pub(crate) bus_bits: u64,
    pub(crate) holds: Vec<Holds>,
    pub(crate) timing: DramTiming,
}

impl Memory {
    /// Name (unique).
    pub fn name(&self) -> &str {
        &self.name
    }
    /// Technology.
    pub fn kind(&self) -> MemoryKind {
        self.kind
    }
    /// Independent channels (HBM pseudo-channels).
    pub fn channels(&self) -> u64 {
        self.channels
    }
    /// Peak bandwidth of one channel.
    pub fn channel_bandwidth(&self) -> BytesPerSecond {
        BytesPerSecond(self.channel_gbps * 1e9)
    }
    /// Peak bandwidth of all channels.
    pub fn peak_bandwidth(&self) -> BytesPerSecond {
        BytesPerSecond(self.channel_gbps * 1e9 * self.channels as f64)
    }
    /// Total capacity.
    pub fn capacity(&self) -> Bytes {
        Bytes((self.capacity_gib * (1u64 << 30) as f64) as u64)
    }
    /// DRAM timing of each channel.
    pub fn timing(&self) -> &DramTiming {
        &self.timing
    }
    /// Data bus width of one channel.
    pub fn bus_bits(&self) -> u64 {
        self.bus_bits
    }
    /// Whether it stores `h`.
    pub fn holds(&self, h: Holds) -> bool {
        self.holds.contains(&h)
    }
    /// Bytes one burst carries (`bus_bits / 8 × burst_length`).
    pub fn burst_bytes(&self) -> u64 {
        self.bus_bits / 8 * self.timing.burst_length
    }
}

/// DMA engines moving data between memories and buffers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Dma {
    pub(crate) engines: u64,
    pub(crate) bytes_per_cycle: u64,
    pub(crate) max_outstanding: u64,
}

impl Dma {
    /// Engines.
    pub fn engines(&self) -> u64 {
        self.engines
    }
    /// Bytes per cycle per engine.
    pub fn bytes_per_cycle(&self) -> u64 {
        self.bytes_per_cycle
    }
    /// Outstanding requests per engine.
    pub fn max_outstanding(&self) -> u64 {
        self.max_outstanding
    }
}

/// Where instructions are fetched from on chip.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InstructionMemory {
    pub(crate) bytes: u64,
    pub(crate) fetch_bytes_per_cycle: u64,
}

impl InstructionMemory {
    /// Capacity.
    pub fn bytes(&self) -> Bytes {
        Bytes(self.bytes)
    }
    /// Fetch bandwidth.
    pub fn fetch_bytes_per_cycle(&self) -> u64 {
        self.fetch_bytes_per_cycle
    }
}

/// Energy of one MAC at a precision pair.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MacEnergy {
    pub(crate) weight: WeightType,
    pub(crate) activation: ActivationFormat,
    pub(crate) pj: f64,
    pub(crate) source: String,
}

/// Energy of one access (one word) to a buffer.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BufferEnergy {
    pub(crate) name: String,
    pub(crate) pj_per_access: f64,
    pub(crate) source: String,
}

/// Energy per bit moved for a memory kind.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MemoryEnergy {
    pub(crate) kind: MemoryKind,
    pub(crate) pj_per_bit: f64,
    pub(crate) source: String,
}

/// Energy of one vector-unit element operation.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct VectorEnergy {
    pub(crate) pj_per_element_op: f64,
    pub(crate) source: String,
}

/// Static (leakage and idle) power.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticPower {
    pub(crate) watts: f64,
    pub(crate) source: String,
}

/// The energy table; every entry carries its source.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EnergyTable {
    pub(crate) mac: Vec<MacEnergy>,
    pub(crate) buffer: Vec<BufferEnergy>,
    pub(crate) memory: Vec<MemoryEnergy>,
    pub(crate) vector: VectorEnergy,
    pub(crate) static_power: StaticPower,
}

impl EnergyTable {
    /// pJ per MAC at a precision pair.
    pub fn mac(&self, weight_bits: u32, act: ActivationFormat) -> Option<PicoJoules> {
        self.mac
            .iter()
            .find(|e| e.weight.bits() == weight_bits && e.activation == act)
            .map(|e| PicoJoules(e.pj))
    }
    /// pJ per access (one word) to the named buffer.
    pub fn buffer_access(&self, buffer: &str) -> Option<PicoJoules> {
        self.buffer
            .iter()
            .find(|e| e.name == buffer)
            .map(|e| PicoJoules(e.pj_per_access))
    }
    /// pJ per bit moved to or from a memory kind.
    pub fn memory_pj_per_bit(&self, kind: MemoryKind) -> Option<f64> {
        self.memory
            .iter()
            .find(|e| e.kind == kind)
            .map(|e| e.pj_per_bit)
    }
    /// pJ per vector-unit element operation.
    pub fn vector_per_element(&self) -> PicoJoules {
        PicoJoules(self.vector.pj_per_element_op)
    }
    /// Static power in watts.
    pub fn static_watts(&self) -> f64 {
        self.static_power.watts
    }
}

/// FPGA board budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FpgaBudget {
    /// Board name.
    pub board: String,
    /// DSP slices.
    pub dsp: u64,
    /// 36 Kb block RAMs.
    pub bram36: u64,
    /// UltraRAM blocks.
    pub uram: u64,
    /// Look-up tables.
    pub lut: u64,
    /// Flip-flops.
    pub ff: u64,
    /// Where the figures come from.
    pub source: String,
}

/// Area of one ASIC component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AreaEntry {
    /// Component name.
    pub component: String,
    /// Area in mm².
    pub mm2: f64,
    /// Where the figure comes from.
    pub source: String,
}

/// ASIC area budget.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AsicBudget {
    /// Process node in nm.
    pub node_nm: u64,
    /// Area per component.
    pub area: Vec<AreaEntry>,
}

/// Resources: an FPGA board budget or ASIC areas (exactly one, matching `kind`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Resources {
    /// FPGA budget.
    #[serde(default)]
    pub fpga: Option<FpgaBudget>,
    /// ASIC areas.
    #[serde(default)]
    pub asic: Option<AsicBudget>,
}

impl Resources {
    /// Total ASIC area in mm² (0 for FPGAs).
    pub fn area_mm2(&self) -> f64 {
        self.asic
            .as_ref()
            .map_or(0.0, |a| a.area.iter().map(|e| e.mm2).sum())
    }
}
