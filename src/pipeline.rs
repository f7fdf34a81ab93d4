//! The main job: a model with its compression on an accelerator for a scenario, estimated pass by
//! pass (prefill, then every decode step), beside GPU baselines. Later fidelities (simulation) plug
//! in behind the same [`RunReport`].

use rayon::prelude::*;
use serde::Serialize;
use std::collections::BTreeMap;
use tessera_compiler::frontend::{build_graph, FrontendError};
use tessera_compiler::lower::LowerError;
use tessera_compiler::program::{
    bucket_length, check_repeated_layers_fit, compile_pass, compile_pass_mapped,
};
use tessera_sim::UnitStats;
use tessera_sim::{
    simulate, simulate_with, EnergyReport, ProgramError, Repeat, SimOptions, SimReport,
};
use tessera_spec::accel::Accelerator;
use tessera_spec::analytical::{dominant_bound, AccelModel, Bound, Energy, GpuModel, PassEstimate};
use tessera_spec::compression::validate_for_model;
use tessera_spec::compression::Compression;
use tessera_spec::gpu::{Gpu, ServingStack};
use tessera_spec::graph::Phase;
use tessera_spec::model::{ModelConfig, Positions};
use tessera_spec::scenario::Scenario;
use tessera_spec::units::{Cycles, Hertz};
use tessera_spec::SpecError;

/// Everything a run needs, already validated.
#[derive(Debug, Clone)]
pub struct RunInputs {
    /// The model.
    pub model: ModelConfig,
    /// Its compression.
    pub compression: Compression,
    /// The accelerator.
    pub accel: Accelerator,
    /// Batch and lengths.
    pub scenario: Scenario,
    /// GPUs to compare against.
    pub gpus: Vec<Gpu>,
    /// The serving stack the GPU figures stand for.
    pub stack: ServingStack,
    /// Which model produces the accelerator's decode figures.
    pub fidelity: Fidelity,
}

/// Which model produces the accelerator's decode figures.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Fidelity {
    /// The analytical model, every step.
    #[default]
    Roofline,
    /// Compiled programs in the cycle-accurate simulator: one program per context bucket of
    /// `bucket` tokens, simulated once from an idle accelerator and reused for every step in
    /// its bucket (`bucket = 1` simulates every step's own program).
    Simulation {
        /// Decode contexts round up to a multiple of this.
        bucket: u64,
        /// The prompt rounds up to a multiple of this for the compiled prefill.
        prefill_bucket: u64,
        /// Simulate each pass with one and with three decoder layers and extrapolate to all of
        /// them ([`SimReport::repeat`]) instead of simulating every layer.
        layer_reuse: bool,
    },
}

/// How many of a model's decoder layers a simulated pass ran.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum LayerMode {
    /// Every layer was simulated.
    EveryLayer,
    /// The pass ran with one and with three layers; the figures extend the later layers' mean
    /// cost to every further one ([`SimReport::repeat`]).
    LayerReuse,
}

/// How the simulated prefill figures were produced.
#[derive(Debug, Clone, Serialize)]
pub struct PrefillSimulation {
    /// Prompt bucket (tokens); 1 means the prompt's own length.
    pub bucket: u64,
    /// Prompt length the simulated program was compiled for (the prompt rounded up to the
    /// bucket; vision models' own sequence).
    pub compiled_tokens: u64,
    /// Instructions simulated.
    pub instructions: u64,
    /// Instruction-memory bytes of the program.
    pub instruction_bytes: u64,
    /// Whether every decoder layer was simulated.
    pub layers: LayerMode,
    /// What each unit spent its cycles on.
    pub units: BTreeMap<&'static str, UnitStats>,
}

/// How the simulated decode figures were produced.
#[derive(Debug, Clone, Serialize)]
pub struct DecodeSimulation {
    /// Context bucket (tokens); 1 means every step ran its own program.
    pub bucket: u64,
    /// `bucket-reuse` (a bucket's result serves all its steps) or `every-step`.
    pub mode: &'static str,
    /// Programs compiled and simulated.
    pub programs: u64,
    /// Instructions simulated.
    pub instructions: u64,
    /// Instruction-memory bytes of the bucketed program set.
    pub instruction_bytes: u64,
    /// Whether every decoder layer was simulated.
    pub layers: LayerMode,
    /// Off-chip bandwidth over the last decode step's program, in equal time slices (none with
    /// layer reuse: no run executed the whole program).
    pub last_step_bandwidth: BandwidthTimeline,
    /// What each unit spent its cycles on, over every decode step.
    pub units: BTreeMap<&'static str, UnitStats>,
    /// Each off-chip channel's traffic over every decode step.
    pub channels: Vec<ChannelTotals>,
}

/// One off-chip channel over every simulated decode step.
#[derive(Debug, Clone, Serialize)]
pub struct ChannelTotals {
    /// Memory name.
    pub memory: String,
    /// Channel index within the memory.
    pub channel: u64,
    /// Bytes moved.
    pub bytes: u64,
    /// Achieved bandwidth over the decode time, GB/s.
    pub achieved_gbps: f64,
    /// Row hits, misses and conflicts.
    pub row_hits: u64,
    /// Row misses.
    pub row_misses: u64,
    /// Row conflicts.
    pub row_conflicts: u64,
}

/// Achieved off-chip bandwidth over one simulated program.
#[derive(Debug, Clone, Serialize)]
pub struct BandwidthTimeline {
    /// Context length of the program.
    pub context: u64,
    /// Seconds per slice.
    pub slice_s: f64,
    /// GB/s in each slice.
    pub gbps: Vec<f64>,
}

/// Slices of [`BandwidthTimeline`].
const BANDWIDTH_SLICES: usize = 100;

/// Why a run failed.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// An input does not fit the others (precision, capacity, ...).
    #[error(transparent)]
    Spec(#[from] SpecError),
    /// The graph cannot be built.
    #[error(transparent)]
    Frontend(#[from] FrontendError),
    /// A decode step cannot be compiled (simulation fidelity).
    #[error(transparent)]
    Lower(#[from] LowerError),
    /// A compiled program cannot be simulated.
    #[error("cannot simulate a compiled program")]
    Program(#[from] ProgramError),
}

/// Prefill results.
#[derive(Debug, Clone, Serialize)]
pub struct PrefillReport {
    /// Which model produced these figures: `roofline` or `simulation`. Breakdowns by operator
    /// class and the bound come from the analytical model in both.
    pub fidelity: &'static str,
    /// With simulation fidelity, how.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub simulation: Option<PrefillSimulation>,
    /// Prompt tokens per sequence (patches + class token for vision models).
    pub tokens: u64,
    /// Seconds for the whole batch's prompt.
    pub latency_s: f64,
    /// Accelerator cycles.
    pub cycles: u64,
    /// Joules.
    pub energy_j: f64,
    /// Off-chip bytes.
    pub dram_bytes: u64,
    /// Achieved off-chip bandwidth, GB/s.
    pub bandwidth_gbps: f64,
    /// What limits most of the time.
    pub bound: Bound,
    /// Energy by part, joules.
    pub energy_breakdown_j: EnergyBreakdown,
    /// Time, energy and traffic by operator class.
    pub by_class: BTreeMap<&'static str, ClassShare>,
}

/// Decode results over all generated tokens.
#[derive(Debug, Clone, Serialize)]
pub struct DecodeReport {
    /// Which model produced these figures: `roofline` or `simulation`. Breakdowns by operator
    /// class and the bound come from the analytical model in both.
    pub fidelity: &'static str,
    /// With simulation fidelity, how.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub simulation: Option<DecodeSimulation>,
    /// Tokens generated per sequence.
    pub tokens: u64,
    /// Generated tokens per second, over the batch.
    pub tokens_per_s: f64,
    /// Seconds per decode step.
    pub latency_per_token_s: f64,
    /// Joules per generated token.
    pub energy_per_token_j: f64,
    /// Generated tokens per joule.
    pub tokens_per_j: f64,
    /// Off-chip bytes per generated token.
    pub dram_bytes_per_token: f64,
    /// What keeping decode activations in the on-chip buffers between operators saves.
    pub activations_on_chip: OnChipActivations,
    /// Achieved off-chip bandwidth, GB/s.
    pub bandwidth_gbps: f64,
    /// Accelerator cycles of all steps.
    pub cycles: u64,
    /// What limits most of the time.
    pub bound: Bound,
    /// Energy by part over all steps, joules.
    pub energy_breakdown_j: EnergyBreakdown,
    /// Time, energy and traffic by operator class, over all steps.
    pub by_class: BTreeMap<&'static str, ClassShare>,
}

/// The off-chip traffic "always-on-chip decode" avoids: the activations every operator reads and
/// writes in the on-chip buffers, which a design keeping no activations on chip between operators
/// would move through the activation memory instead.
#[derive(Debug, Clone, Copy, PartialEq, Serialize)]
pub struct OnChipActivations {
    /// Activation bytes per generated token kept on chip.
    pub bytes_per_token: f64,
    /// Their share of the off-chip traffic that design would have: kept / (kept + off-chip).
    pub traffic_share: f64,
    /// Seconds per token those bytes would take at the activation memory's streaming bandwidth.
    pub off_chip_seconds_per_token: f64,
}

/// One operator class's share of a phase.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct ClassShare {
    /// Seconds spent in operators of the class.
    pub seconds: f64,
    /// Joules they use.
    pub energy_j: f64,
    /// Off-chip bytes they move.
    pub dram_bytes: u64,
    /// Multiply-accumulates they perform (kept weights only under sparsity).
    pub macs: u64,
}

/// Sums per-operator costs of `passes` by operator class.
fn by_class<'a>(
    passes: impl IntoIterator<Item = &'a PassEstimate>,
    clock: Hertz,
) -> BTreeMap<&'static str, ClassShare> {
    let mut cycles: BTreeMap<&'static str, (u64, f64, u64, u64)> = BTreeMap::new();
    for p in passes {
        for op in &p.ops {
            let e = cycles.entry(op.class).or_default();
            e.0 += op.cycles.0;
            e.1 += op.energy.total().joules();
            e.2 += op.dram_bytes;
            e.3 += op.effective_macs;
        }
    }
    cycles
        .into_iter()
        .map(|(class, (c, j, b, m))| {
            (
                class,
                ClassShare {
                    seconds: clock.seconds(Cycles(c)).0,
                    energy_j: j,
                    dram_bytes: b,
                    macs: m,
                },
            )
        })
        .collect()
}

/// Energy split in joules.
#[derive(Debug, Clone, Copy, Default, Serialize)]
pub struct EnergyBreakdown {
    /// Matrix-engine MACs.
    pub mac: f64,
    /// Vector unit.
    pub vector: f64,
    /// On-chip buffers.
    pub buffer: f64,
    /// Off-chip memory.
    pub dram: f64,
    /// Static power.
    pub r#static: f64,
}

impl From<&EnergyReport> for EnergyBreakdown {
    fn from(e: &EnergyReport) -> Self {
        EnergyBreakdown {
            mac: e.mac,
            vector: e.vector,
            buffer: e.buffer,
            dram: e.dram,
            r#static: e.r#static,
        }
    }
}

impl std::ops::AddAssign for EnergyBreakdown {
    fn add_assign(&mut self, e: Self) {
        self.mac += e.mac;
        self.vector += e.vector;
        self.buffer += e.buffer;
        self.dram += e.dram;
        self.r#static += e.r#static;
    }
}

impl EnergyBreakdown {
    /// Joules over every part.
    pub fn total(&self) -> f64 {
        self.mac + self.vector + self.buffer + self.dram + self.r#static
    }
}

impl From<Energy> for EnergyBreakdown {
    fn from(e: Energy) -> Self {
        Self {
            mac: e.mac.joules(),
            vector: e.vector.joules(),
            buffer: e.buffer.joules(),
            dram: e.dram.joules(),
            r#static: e.r#static.joules(),
        }
    }
}

/// One GPU's figures for the same work.
#[derive(Debug, Clone, Serialize)]
pub struct GpuBaseline {
    /// GPU name.
    pub name: String,
    /// Serving stack the efficiencies stand for.
    pub stack: String,
    /// Prefill seconds.
    pub prefill_latency_s: f64,
    /// Generated tokens per second (absent for encoders).
    pub decode_tokens_per_s: Option<f64>,
    /// Joules per generated token at TDP (absent for encoders).
    pub energy_per_token_j: Option<f64>,
    /// Whether the weights fit one GPU's memory.
    pub fits_in_memory: bool,
    /// Price in US dollars, when given (`tessera run --price`): no price is built in.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price_usd: Option<f64>,
}

/// The result of a run. Field names are stable: tools and tests read them.
#[derive(Debug, Clone, Serialize)]
pub struct RunReport {
    /// Model name.
    pub model: String,
    /// Accelerator name.
    pub accelerator: String,
    /// Compression name.
    pub compression: String,
    /// How the figures were produced (`roofline`: the analytical model).
    pub fidelity: &'static str,
    /// The scenario.
    pub scenario: Scenario,
    /// Parameters of the model.
    pub params: u64,
    /// Stored weight bytes under the compression.
    pub weight_bytes: u64,
    /// Datasheet peak bandwidth of the memory holding the weights, GB/s.
    pub peak_bandwidth_gbps: f64,
    /// Bandwidth that memory sustains on long streams under its DRAM timing, GB/s.
    pub streaming_bandwidth_gbps: f64,
    /// Prefill.
    pub prefill: PrefillReport,
    /// Decode (absent for encoders).
    pub decode: Option<DecodeReport>,
    /// GPU baselines.
    pub gpu_baselines: Vec<GpuBaseline>,
    /// The accelerator's price in US dollars, when given (`price_usd` in its file, or
    /// `tessera run --price`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub price_usd: Option<f64>,
}

pub use tessera_reports::tokens_per_s_per_kusd;

fn gbps(bytes: f64, seconds: f64) -> f64 {
    if seconds > 0.0 {
        bytes / seconds / 1e9
    } else {
        0.0
    }
}

/// Runs the analytical model over prefill and every decode step.
pub fn run(inputs: &RunInputs) -> Result<RunReport, RunError> {
    let RunInputs {
        model,
        compression,
        accel,
        scenario,
        ..
    } = inputs;
    // Learned position tables bound the positions a pass may reach; encoders never decode; vision
    // models take their sequence from the image.
    let learned = matches!(model.positions, Positions::Learned { .. });
    let limit = (learned && model.vision.is_none()).then_some(model.max_positions);
    let reached = Scenario {
        decode: if model.is_decoder() {
            scenario.decode
        } else {
            0
        },
        ..*scenario
    };
    reached.validate("command line (--batch, --prefill, --decode)", limit)?;
    validate_for_model(compression, model, &compression.name)?;
    let am = AccelModel::new(accel, compression)?;
    let batch = scenario.batch;
    let prefill_graph = build_graph(
        model,
        compression,
        Phase::Prefill {
            seq: scenario.prefill,
        },
        batch,
    )?;
    am.check_graph(&prefill_graph)?;
    let prefill = am.pass(&prefill_graph);
    let prefill_tokens = prefill_graph.tokens() / batch;

    // The accelerator's analytical decode passes by context: every step's own context, or with
    // simulation fidelity the context of the bucket program simulated for it (the analytical
    // figures then only attribute the simulated time to operator classes and bounds).
    let pass_context = |step: u64| match inputs.fidelity {
        Fidelity::Roofline => scenario.prefill + step,
        Fidelity::Simulation { bucket, .. } => {
            bucket_length(scenario.prefill + step, bucket.max(1))
        }
    };
    let mut decode_passes: BTreeMap<u64, PassEstimate> = BTreeMap::new();
    let mut step_contexts: Vec<u64> = Vec::new();
    let mut gpu_decode = vec![(0.0, 0.0); inputs.gpus.len()];
    let gpu_models: Vec<GpuModel> = inputs
        .gpus
        .iter()
        .map(|&g| GpuModel::new(g, inputs.stack, compression))
        .collect();
    let decode_graph = |context| build_graph(model, compression, Phase::Decode { context }, batch);
    if model.is_decoder() {
        for step in 0..scenario.decode {
            let (own, context) = (scenario.prefill + step, pass_context(step));
            let known = decode_passes.contains_key(&context);
            // GPUs are evaluated at every step's own context.
            let own_graph = if !gpu_models.is_empty() || (!known && context == own) {
                Some(decode_graph(own)?)
            } else {
                None
            };
            if !known {
                let pass = match &own_graph {
                    Some(g) if context == own => am.pass(g),
                    _ => am.pass(&decode_graph(context)?),
                };
                decode_passes.insert(context, pass);
            }
            step_contexts.push(context);
            if let Some(g) = own_graph.filter(|_| !gpu_models.is_empty()) {
                for (acc, gm) in gpu_decode.iter_mut().zip(&gpu_models) {
                    let p = gm.pass(&g);
                    acc.0 += p.seconds;
                    acc.1 += p.joules;
                }
            }
        }
    }
    let step_passes: Vec<&PassEstimate> = step_contexts.iter().map(|c| &decode_passes[c]).collect();
    let mut decode = (!step_passes.is_empty()).then(|| decode_report(&step_passes, batch, accel));
    let mut prefill_report = PrefillReport {
        fidelity: "roofline",
        simulation: None,
        tokens: prefill_tokens,
        latency_s: prefill.seconds,
        cycles: prefill.cycles.0,
        energy_j: prefill.energy.total().joules(),
        dram_bytes: prefill.dram_bytes,
        bandwidth_gbps: gbps(prefill.dram_bytes as f64, prefill.seconds),
        bound: prefill.bound(),
        energy_breakdown_j: prefill.energy.into(),
        by_class: by_class([&prefill], accel.clock()),
    };
    if let Fidelity::Simulation {
        bucket,
        prefill_bucket,
        ..
    } = inputs.fidelity
    {
        let (p, d) = rayon::join(
            || simulate_prefill(inputs, prefill_bucket, &mut prefill_report),
            || {
                decode
                    .as_mut()
                    .map_or(Ok(()), |d| simulate_decode(inputs, bucket, d))
            },
        );
        p?;
        d?;
    }
    let generated = (batch * scenario.decode) as f64;
    let gpu_baselines = gpu_models
        .iter()
        .zip(&gpu_decode)
        .map(|(gm, &(secs, joules))| GpuBaseline {
            name: gm.gpu.name.to_string(),
            stack: gm.stack.name.to_string(),
            prefill_latency_s: gm.pass(&prefill_graph).seconds,
            decode_tokens_per_s: decode.as_ref().map(|_| generated / secs),
            energy_per_token_j: decode.as_ref().map(|_| joules / generated),
            fits_in_memory: gm.fits(&prefill_graph),
            price_usd: None,
        })
        .collect();
    let weight_memory = accel.memory_for(tessera_spec::accel::Holds::Weights);
    let peak_bandwidth_gbps = weight_memory.map_or(0.0, |m| m.peak_bandwidth().gb_per_s());
    let streaming_bandwidth_gbps = weight_memory.map_or(0.0, |m| {
        tessera_spec::analytical::streaming_bandwidth(m).gb_per_s()
    });
    Ok(RunReport {
        model: model.name.clone(),
        accelerator: accel.name().to_string(),
        compression: compression.name.clone(),
        fidelity: match inputs.fidelity {
            Fidelity::Roofline => "roofline",
            Fidelity::Simulation { .. } => "simulation",
        },
        scenario: *scenario,
        params: prefill_graph.params(),
        weight_bytes: prefill_graph.weight_bytes(),
        peak_bandwidth_gbps,
        streaming_bandwidth_gbps,
        prefill: prefill_report,
        decode,
        gpu_baselines,
        price_usd: accel.price_usd(),
    })
}

fn decode_report(passes: &[&PassEstimate], batch: u64, accel: &Accelerator) -> DecodeReport {
    let clock = accel.clock();
    let steps = passes.len() as f64;
    let seconds: f64 = passes.iter().map(|p| p.seconds).sum();
    let bytes: u64 = passes.iter().map(|p| p.dram_bytes).sum();
    let kept: u64 = passes.iter().map(|p| p.act_on_chip_bytes).sum();
    let generated = steps * batch as f64;
    let act_bandwidth = accel
        .memory_for(tessera_spec::accel::Holds::Activations)
        .map_or(0.0, |m| tessera_spec::analytical::streaming_bandwidth(m).0);
    let activations_on_chip = OnChipActivations {
        bytes_per_token: kept as f64 / generated,
        traffic_share: kept as f64 / (kept + bytes).max(1) as f64,
        off_chip_seconds_per_token: if act_bandwidth > 0.0 {
            kept as f64 / act_bandwidth / generated
        } else {
            0.0
        },
    };
    let cycles: u64 = passes.iter().map(|p| p.cycles.0).sum();
    let mut energy = Energy::default();
    let mut by_bound = BTreeMap::new();
    for p in passes {
        energy += p.energy;
        for (b, c) in &p.cycles_by_bound {
            *by_bound.entry(*b).or_insert(0u64) += c;
        }
    }
    let mut report = DecodeReport {
        fidelity: "roofline",
        simulation: None,
        tokens: passes.len() as u64,
        tokens_per_s: 0.0,
        latency_per_token_s: 0.0,
        energy_per_token_j: 0.0,
        tokens_per_j: 0.0,
        dram_bytes_per_token: 0.0,
        activations_on_chip,
        bandwidth_gbps: 0.0,
        cycles: 0,
        bound: dominant_bound(&by_bound),
        energy_breakdown_j: energy.into(),
        by_class: by_class(passes.iter().copied(), clock),
    };
    let joules = energy.total().joules();
    report.set_totals(
        steps,
        batch,
        (seconds, bytes, cycles),
        energy.into(),
        joules,
    );
    report
}

impl DecodeReport {
    /// Sets the figures derived from totals over `steps` decode steps of `batch` sequences:
    /// time, off-chip bytes and cycles, and energy by part with its total.
    fn set_totals(
        &mut self,
        steps: f64,
        batch: u64,
        (seconds, bytes, cycles): (f64, u64, u64),
        energy: EnergyBreakdown,
        joules: f64,
    ) {
        let generated = steps * batch as f64;
        self.tokens_per_s = generated / seconds;
        self.latency_per_token_s = seconds / steps;
        self.energy_per_token_j = joules / generated;
        self.tokens_per_j = generated / joules;
        self.dram_bytes_per_token = bytes as f64 / generated;
        self.bandwidth_gbps = gbps(bytes as f64, seconds);
        self.cycles = cycles;
        self.energy_breakdown_j = energy;
    }
}

/// The compiled program of one pass (a prefill, or a decode step).
pub fn pass_program(
    inputs: &RunInputs,
    phase: Phase,
) -> Result<tessera_spec::isa::Program, RunError> {
    let g = build_graph(
        &inputs.model,
        &inputs.compression,
        phase,
        inputs.scenario.batch,
    )?;
    Ok(compile_pass(
        &inputs.accel,
        &inputs.compression,
        &inputs.model,
        &g,
        kv_tokens(inputs),
    )?)
}

/// Decoder layers a pass is simulated with under layer reuse besides the first, at least: two,
/// so that layers whose cost alternates (buffer halves, DRAM banks) average out.
const LATER_LAYERS: u64 = 2;

/// Refresh intervals (the slowest-refreshing memory's `t_refi_ns`) the later layers' sample
/// spans at least. Where a refresh falls in a layer moves from layer to layer, and a layer that
/// meets one more refresh than the mean takes about `t_rfc` longer, so a sample of `N`
/// intervals is off by about `t_rfc / (N · t_refi)` (0.2% for the presets' HBM2 with 32).
const SAMPLE_REFRESHES: f64 = 32.0;

/// One pass compiled and simulated from an idle accelerator: its report, the program when the
/// whole of it ran, and how many layers ran. With layer reuse the pass is compiled and simulated
/// with one and with `1 + extra` decoder layers, both fetching instructions as the whole program
/// would, and [`SimReport::repeat`] extends the later layers' mean cost to every further one;
/// `extra` starts at [`LATER_LAYERS`] and grows (to an even count) until the later layers span
/// [`SAMPLE_REFRESHES`] refresh intervals. A model no longer than its sample is simulated whole.
/// The whole model's off-chip footprint is checked from the samples
/// ([`check_repeated_layers_fit`]).
fn simulate_pass(
    inputs: &RunInputs,
    phase: Phase,
) -> Result<(SimReport, Option<tessera_spec::isa::Program>, LayerMode), RunError> {
    let layers = inputs.model.layers as u64;
    let reuse = matches!(
        inputs.fidelity,
        Fidelity::Simulation {
            layer_reuse: true,
            ..
        }
    );
    let whole = || {
        let program = pass_program(inputs, phase)?;
        let report = simulate(&inputs.accel, &program)?;
        Ok((report, Some(program), LayerMode::EveryLayer))
    };
    if !reuse || layers <= 1 + LATER_LAYERS {
        return whole();
    }
    let with_layers = |n: u64| {
        let model = ModelConfig {
            layers: n as u32,
            ..inputs.model.clone()
        };
        let g = build_graph(&model, &inputs.compression, phase, inputs.scenario.batch)?;
        Ok::<_, RunError>(compile_pass_mapped(
            &inputs.accel,
            &inputs.compression,
            &model,
            &g,
            kv_tokens(inputs),
        )?)
    };
    let needed_ns = SAMPLE_REFRESHES
        * inputs
            .accel
            .memories()
            .iter()
            .map(|m| m.timing().t_refi_ns)
            .fold(0.0, f64::max);
    let (one, one_map) = with_layers(1)?;
    let mut extra = LATER_LAYERS;
    loop {
        if 1 + extra >= layers {
            return whole();
        }
        let (more, more_map) = with_layers(1 + extra)?;
        check_repeated_layers_fit(&inputs.accel, &one_map, &more_map, extra, layers)?;
        let repeat = Repeat {
            extra,
            times: layers,
        };
        let options = SimOptions {
            fetch_as_bytes: Some(repeat.count(one.storage_bytes(), more.storage_bytes())),
            ..SimOptions::default()
        };
        let r1 = simulate_with(&inputs.accel, &one, options)?;
        let r2 = simulate_with(&inputs.accel, &more, options)?;
        let span_ns = (r2.seconds - r1.seconds) * 1e9;
        if span_ns >= needed_ns {
            return Ok((
                SimReport::repeat(&r1, &r2, repeat),
                None,
                LayerMode::LayerReuse,
            ));
        }
        let per_layer = (span_ns / extra as f64).max(f64::MIN_POSITIVE);
        let wanted = (needed_ns / per_layer).ceil() as u64;
        extra = wanted.max(extra + 1).next_multiple_of(2);
    }
}

/// Tokens per sequence the KV cache holds in every program of a run: the longest pass compiled,
/// the prompt's bucket or the last decode step's context bucket and its own token.
fn kv_tokens(inputs: &RunInputs) -> u64 {
    let s = &inputs.scenario;
    let (bucket, prefill_bucket) = match inputs.fidelity {
        Fidelity::Roofline => (1, 1),
        Fidelity::Simulation {
            bucket,
            prefill_bucket,
            ..
        } => (bucket, prefill_bucket),
    };
    let last = (s.prefill + s.decode).saturating_sub(1);
    bucket_length(s.prefill, prefill_bucket).max(bucket_length(last, bucket) + 1)
}

/// Replaces `p`'s time, traffic and energy with a simulation of the compiled prefill of the
/// prompt rounded up to `bucket` tokens, from an idle accelerator.
fn simulate_prefill(
    inputs: &RunInputs,
    bucket: u64,
    p: &mut PrefillReport,
) -> Result<(), RunError> {
    let bucket = bucket.max(1);
    let seq = bucket_length(inputs.scenario.prefill, bucket);
    let (r, _, layers) = simulate_pass(inputs, Phase::Prefill { seq })?;
    let energy = EnergyBreakdown::from(&r.energy_j);
    p.fidelity = "simulation";
    p.simulation = Some(PrefillSimulation {
        bucket,
        compiled_tokens: if inputs.model.vision.is_some() {
            p.tokens
        } else {
            seq
        },
        instructions: r.instructions,
        instruction_bytes: r.instruction_bytes,
        layers,
        units: r.units.clone(),
    });
    p.latency_s = r.seconds;
    p.cycles = r.cycles;
    p.energy_j = energy.total();
    p.energy_breakdown_j = energy;
    p.dram_bytes = r.dram_bytes;
    p.bandwidth_gbps = gbps(r.dram_bytes as f64, r.seconds);
    Ok(())
}

/// The context the last decode step's program is compiled for (its bucket).
pub fn last_decode_context(inputs: &RunInputs, bucket: u64) -> u64 {
    let s = &inputs.scenario;
    bucket_length(s.prefill + s.decode.max(1) - 1, bucket.max(1))
}

/// Replaces `d`'s time, traffic and energy with simulations of compiled decode programs, one per
/// context bucket, simulated in parallel and reused for every step of the bucket.
fn simulate_decode(inputs: &RunInputs, bucket: u64, d: &mut DecodeReport) -> Result<(), RunError> {
    let scenario = &inputs.scenario;
    let bucket = bucket.max(1);
    let contexts: Vec<u64> = (0..scenario.decode)
        .map(|step| bucket_length(scenario.prefill + step, bucket))
        .collect();
    let mut distinct = contexts.clone();
    distinct.dedup();
    let last = contexts.last().copied().unwrap_or(0);
    let runs: Vec<(u64, SimReport, Option<Vec<f64>>, LayerMode)> = distinct
        .par_iter()
        .map(|&context| {
            let (report, program, layers) = simulate_pass(inputs, Phase::Decode { context })?;
            let traffic = program
                .filter(|_| context == last)
                .map(|p| report.dram_traffic(&p, BANDWIDTH_SLICES));
            Ok((context, report, traffic, layers))
        })
        .collect::<Result<_, RunError>>()?;
    let by_context: BTreeMap<u64, &SimReport> = runs.iter().map(|(c, r, _, _)| (*c, r)).collect();
    let last_step_bandwidth = runs
        .iter()
        .find_map(|(c, r, t, _)| {
            let slice_s = r.seconds / BANDWIDTH_SLICES as f64;
            t.as_ref().map(|t| BandwidthTimeline {
                context: *c,
                slice_s,
                gbps: t.iter().map(|&b| gbps(b, slice_s)).collect(),
            })
        })
        .unwrap_or(BandwidthTimeline {
            context: last,
            slice_s: 0.0,
            gbps: Vec::new(),
        });
    let (mut seconds, mut bytes, mut cycles) = (0.0, 0u64, 0u64);
    let mut energy = EnergyBreakdown::default();
    let mut units: BTreeMap<&'static str, UnitStats> = BTreeMap::new();
    let mut channels: Vec<ChannelTotals> = Vec::new();
    for c in &contexts {
        let r = by_context[c];
        for (name, u) in &r.units {
            *units.entry(name).or_default() += *u;
        }
        if channels.is_empty() {
            channels = r
                .channels
                .iter()
                .map(|ch| ChannelTotals {
                    memory: ch.memory.clone(),
                    channel: ch.channel,
                    bytes: 0,
                    achieved_gbps: 0.0,
                    row_hits: 0,
                    row_misses: 0,
                    row_conflicts: 0,
                })
                .collect();
        }
        for (t, ch) in channels.iter_mut().zip(&r.channels) {
            t.bytes += ch.bytes;
            t.row_hits += ch.row_hits;
            t.row_misses += ch.row_misses;
            t.row_conflicts += ch.row_conflicts;
        }
        seconds += r.seconds;
        bytes += r.dram_bytes;
        cycles += r.cycles;
        energy += EnergyBreakdown::from(&r.energy_j);
    }
    for ch in &mut channels {
        ch.achieved_gbps = gbps(ch.bytes as f64, seconds);
    }
    d.fidelity = "simulation";
    d.simulation = Some(DecodeSimulation {
        bucket,
        mode: if bucket == 1 {
            "every-step"
        } else {
            "bucket-reuse"
        },
        programs: runs.len() as u64,
        instructions: runs.iter().map(|(_, r, _, _)| r.instructions).sum(),
        instruction_bytes: runs.iter().map(|(_, r, _, _)| r.instruction_bytes).sum(),
        layers: runs
            .first()
            .map_or(LayerMode::EveryLayer, |(_, _, _, layers)| *layers),
        last_step_bandwidth,
        units,
        channels,
    });
    let steps = contexts.len() as f64;
    let joules = energy.total();
    d.set_totals(
        steps,
        scenario.batch,
        (seconds, bytes, cycles),
        energy,
        joules,
    );
    Ok(())
}
