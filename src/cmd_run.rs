//! `tessera run`: the main job on a model, compression, accelerator and scenario.

use crate::pipeline::{
    run, tokens_per_s_per_kusd, ClassShare, Fidelity, LayerMode, RunInputs, RunReport,
};
use crate::{inputs, Verbosity};
use anyhow::{bail, Result};
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::process::ExitCode;
use tessera_spec::gpu::{Gpu, ServingStack, DEFAULT_GPUS, DEFAULT_STACK};
use tessera_spec::scenario::Scenario;

/// Arguments of `tessera run`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model, accelerator and compression.
    #[command(flatten)]
    pub target: inputs::TargetArgs,
    /// Sequences per batch.
    #[arg(long, default_value_t = 1)]
    pub batch: u64,
    /// Prompt tokens per sequence.
    #[arg(long, default_value_t = 512)]
    pub prefill: u64,
    /// Generated tokens per sequence (every step is evaluated).
    #[arg(long, default_value_t = 512)]
    pub decode: u64,
    /// GPUs to compare against (comma-separated names).
    #[arg(long, value_delimiter = ',', default_values_t = DEFAULT_GPUS.iter().map(|s| s.to_string()))]
    pub gpu: Vec<String>,
    /// Serving stack the GPU figures stand for (`roofline` = datasheet peaks; `tuned`).
    #[arg(long, default_value = DEFAULT_STACK)]
    pub gpu_stack: String,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Prefill and decode figures from the analytical model (`roofline`) or from compiled
    /// programs in the cycle-accurate simulator (`sim`).
    #[arg(long, value_enum, default_value = "roofline")]
    pub fidelity: FidelityArg,
    /// With `--fidelity sim`: decode contexts share one program per bucket of this many tokens
    /// (1 simulates every step's own program).
    #[arg(long, default_value_t = 16)]
    pub bucket: u64,
    /// With `--fidelity sim`: the prompt rounds up to a multiple of this many tokens for the
    /// compiled prefill (1: the prompt's own length).
    #[arg(long, default_value_t = 128)]
    pub prefill_bucket: u64,
    /// With `--fidelity sim`: simulate each program with one and with three decoder layers (more
    /// when short layers need them to span 32 DRAM refresh intervals) and extrapolate to all of
    /// them, instead of simulating every layer (much faster; the layers of a model are alike).
    #[arg(long)]
    pub layer_reuse: bool,
    /// Also write `report.html` (plots embedded as SVG) and `report.json` into this directory.
    #[arg(long)]
    pub report: Option<std::path::PathBuf>,
    /// Write a Chrome trace (one track per unit; open it in Perfetto) of the last decode step's
    /// compiled program in the simulator.
    #[arg(long)]
    pub trace: Option<std::path::PathBuf>,
    /// A machine's price for cost efficiency (decode tokens/s per $1,000): `NAME=USD`, NAME the
    /// accelerator or a GPU of `--gpu` (repeatable; it overrides the accelerator file's
    /// `price_usd`). Tessera ships no prices: give them with their source.
    #[arg(long, value_name = "NAME=USD")]
    pub price: Vec<String>,
}

/// `--fidelity` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum FidelityArg {
    /// The analytical model.
    Roofline,
    /// Compiled programs in the simulator.
    Sim,
}

/// Runs the command.
pub fn main(args: &Args, verbosity: Verbosity) -> Result<ExitCode> {
    if args.bucket == 0 {
        bail!("--bucket must be at least 1 (1 simulates every decode step's own program)");
    }
    if args.prefill_bucket == 0 {
        bail!("--prefill-bucket must be at least 1 (1 compiles the prompt's own length)");
    }
    let gpus = args
        .gpu
        .iter()
        .map(|g| Gpu::by_name(g))
        .collect::<Result<Vec<_>, _>>()?;
    let inputs = RunInputs {
        model: inputs::model(&args.target.model)?,
        compression: inputs::compression(&args.target.compression)?,
        accel: inputs::accelerator(&args.target.accel)?,
        scenario: Scenario {
            batch: args.batch,
            prefill: args.prefill,
            decode: args.decode,
        },
        gpus,
        stack: ServingStack::by_name(&args.gpu_stack)?,
        fidelity: match args.fidelity {
            FidelityArg::Roofline => Fidelity::Roofline,
            FidelityArg::Sim => Fidelity::Simulation {
                bucket: args.bucket,
                prefill_bucket: args.prefill_bucket,
                layer_reuse: args.layer_reuse,
            },
        },
    };
    let mut report = run(&inputs)?;
    for p in &args.price {
        set_price(&mut report, p)?;
    }
    if let Some(path) = &args.trace {
        use anyhow::Context as _;
        let context = crate::pipeline::last_decode_context(&inputs, args.bucket);
        let phase = tessera_spec::graph::Phase::Decode { context };
        let program = crate::pipeline::pass_program(&inputs, phase)
            .context("--trace simulates the last decode step")?;
        let sim = tessera_sim::simulate(&inputs.accel, &program)
            .with_context(|| format!("cannot simulate the decode step at context {context}"))?;
        let trace = sim.chrome_trace(&program, inputs.accel.clock().0);
        std::fs::write(path, serde_json::to_string(&trace)?)
            .with_context(|| format!("cannot write `{}`", path.display()))?;
    }
    if let Some(dir) = &args.report {
        write_report(dir, &inputs, &report)?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if verbosity != Verbosity::Quiet {
        print!("{}", render_table(&report));
        if verbosity == Verbosity::Verbose {
            print!("{}", render_classes(&report));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Applies one `--price NAME=USD` to the report's accelerator or GPU named NAME.
fn set_price(report: &mut RunReport, text: &str) -> Result<()> {
    let (name, usd) = text
        .split_once('=')
        .ok_or_else(|| anyhow::anyhow!("--price {text}: expected NAME=USD"))?;
    let usd: f64 = usd
        .parse()
        .ok()
        .filter(|v: &f64| v.is_finite() && *v > 0.0)
        .ok_or_else(|| {
            anyhow::anyhow!("--price {text}: the price must be a positive number of US dollars")
        })?;
    if name == report.accelerator {
        report.price_usd = Some(usd);
        return Ok(());
    }
    match report.gpu_baselines.iter_mut().find(|g| g.name == name) {
        Some(g) => {
            g.price_usd = Some(usd);
            Ok(())
        }
        None => {
            let names: Vec<&str> = std::iter::once(report.accelerator.as_str())
                .chain(report.gpu_baselines.iter().map(|g| g.name.as_str()))
                .collect();
            bail!(
                "--price {text}: `{name}` is not a machine of this run (one of: {})",
                names.join(", ")
            )
        }
    }
}

/// Writes `report.html` and `report.json` for one run into `dir`.
pub fn write_report(dir: &std::path::Path, inputs: &RunInputs, r: &RunReport) -> Result<()> {
    use anyhow::Context as _;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create `{}`", dir.display()))?;
    let html = tessera_reports::run::html(&run_view(inputs, r))?;
    std::fs::write(dir.join("report.html"), html)
        .with_context(|| format!("cannot write `{}`", dir.join("report.html").display()))?;
    std::fs::write(
        dir.join("report.json"),
        serde_json::to_string_pretty(r)? + "\n",
    )
    .with_context(|| format!("cannot write `{}`", dir.join("report.json").display()))?;
    Ok(())
}

/// What the report page shows, from a run's report and inputs.
pub fn run_view(inputs: &RunInputs, r: &RunReport) -> tessera_reports::run::RunView {
    use tessera_reports::plots::Roof;
    use tessera_reports::run::{ClassView, MachineRow, PhaseView, RunView};
    use tessera_spec::compression::{ActivationFormat, OpClass};
    let accel = &inputs.accel;
    let act = inputs.compression.activations;
    let bits = inputs.compression.weight(OpClass::Ffn).format.bits;
    let peak_macs = accel.matrix().peak_macs_per_cycle(bits, act).unwrap_or(0.0);
    let mut roofs = vec![Roof {
        name: r.accelerator.clone(),
        peak_ops: 2.0 * peak_macs * accel.clock().0,
        bandwidth: r.streaming_bandwidth_gbps * 1e9,
    }];
    for g in &inputs.gpus {
        let tera = match (act, g.int8_tops) {
            (ActivationFormat::Int8, Some(t)) => t,
            _ => g.fp16_tflops,
        };
        roofs.push(Roof {
            name: g.name.to_string(),
            peak_ops: tera * 1e12,
            bandwidth: g.bandwidth_gbps * 1e9,
        });
    }
    let classes = |m: &BTreeMap<&'static str, ClassShare>| -> Vec<ClassView> {
        m.iter()
            .map(|(k, c)| ClassView {
                class: k.to_string(),
                seconds: c.seconds,
                energy_j: c.energy_j,
                dram_bytes: c.dram_bytes,
                macs: c.macs,
            })
            .collect()
    };
    let parts = |e: &crate::pipeline::EnergyBreakdown| -> Vec<(String, f64)> {
        vec![
            ("mac".into(), e.mac),
            ("vector".into(), e.vector),
            ("buffer".into(), e.buffer),
            ("dram".into(), e.dram),
            ("static".into(), e.r#static),
        ]
    };
    let mut phases = vec![PhaseView {
        name: "prefill".into(),
        fidelity: r.prefill.fidelity.into(),
        classes: classes(&r.prefill.by_class),
        energy_parts: parts(&r.prefill.energy_breakdown_j),
    }];
    let mut machines = vec![MachineRow {
        name: r.accelerator.clone(),
        prefill_s: r.prefill.latency_s,
        decode_tokens_per_s: r.decode.as_ref().map_or(0.0, |d| d.tokens_per_s),
        energy_per_token_j: r.decode.as_ref().map_or(0.0, |d| d.energy_per_token_j),
        fits: true,
        tokens_per_s_per_kusd: tokens_per_s_per_kusd(
            r.decode.as_ref().map(|d| d.tokens_per_s),
            r.price_usd,
        ),
    }];
    let mut bandwidth = None;
    let mut units = None;
    if let Some(d) = &r.decode {
        phases.push(PhaseView {
            name: "decode".into(),
            fidelity: d.fidelity.into(),
            classes: classes(&d.by_class),
            energy_parts: parts(&d.energy_breakdown_j),
        });
        if let Some(s) = &d.simulation {
            let t = &s.last_step_bandwidth;
            bandwidth = (!t.gbps.is_empty()).then(|| {
                (
                    t.context,
                    t.slice_s,
                    t.gbps.clone(),
                    r.streaming_bandwidth_gbps,
                )
            });
            let rows = s
                .units
                .iter()
                .map(|(name, u)| tessera_reports::run::UnitRow {
                    unit: name.to_string(),
                    instructions: u.instructions,
                    busy_cycles: u.busy_cycles,
                    stall_token_cycles: u.stall_token_cycles,
                    stall_resource_cycles: u.stall_resource_cycles,
                    stall_port_cycles: u.stall_port_cycles,
                })
                .collect();
            units = Some((d.cycles, rows));
        }
    }
    machines.extend(r.gpu_baselines.iter().map(|g| MachineRow {
        name: format!("{} ({})", g.name, g.stack),
        prefill_s: g.prefill_latency_s,
        decode_tokens_per_s: g.decode_tokens_per_s.unwrap_or(0.0),
        energy_per_token_j: g.energy_per_token_j.unwrap_or(0.0),
        fits: g.fits_in_memory,
        tokens_per_s_per_kusd: tokens_per_s_per_kusd(g.decode_tokens_per_s, g.price_usd),
    }));
    let sc = &r.scenario;
    RunView {
        title: format!("{} on {} ({})", r.model, r.accelerator, r.compression),
        scenario: format!(
            "Batch {}, {} prompt tokens, {} generated tokens; accelerator figures by {} fidelity.",
            sc.batch, r.prefill.tokens, sc.decode, r.fidelity
        ),
        machines,
        roofs,
        phases,
        bandwidth,
        units,
    }
}

fn si(x: f64, unit: &str) -> String {
    let (v, p) = match x.abs() {
        a if a >= 1e9 => (x / 1e9, "G"),
        a if a >= 1e6 => (x / 1e6, "M"),
        a if a >= 1e3 => (x / 1e3, "k"),
        a if a >= 1.0 || a == 0.0 => (x, ""),
        a if a >= 1e-3 => (x * 1e3, "m"),
        a if a >= 1e-6 => (x * 1e6, "µ"),
        _ => (x * 1e9, "n"),
    };
    format!("{v:.3} {p}{unit}")
}

/// The human-readable summary of a run.
pub fn render_table(r: &RunReport) -> String {
    let mut s = String::new();
    let sc = &r.scenario;
    let reused = r
        .prefill
        .simulation
        .as_ref()
        .is_some_and(|p| p.layers == LayerMode::LayerReuse);
    let _ = writeln!(
        s,
        "{} on {} ({}), batch {}, prefill {}, decode {} [fidelity: {}{}]",
        r.model,
        r.accelerator,
        r.compression,
        sc.batch,
        r.prefill.tokens,
        sc.decode,
        r.fidelity,
        if reused { ", layer reuse" } else { "" }
    );
    let _ = writeln!(
        s,
        "params {:.3} B, weights {:.3} GB, weight memory {:.1} GB/s peak, {:.1} GB/s streaming\n",
        r.params as f64 / 1e9,
        r.weight_bytes as f64 / 1e9,
        r.peak_bandwidth_gbps,
        r.streaming_bandwidth_gbps
    );
    let p = &r.prefill;
    let mut rows = vec![
        ("prefill latency", si(p.latency_s, "s")),
        ("prefill energy", si(p.energy_j, "J")),
        (
            "prefill bandwidth used",
            format!("{:.1} GB/s", p.bandwidth_gbps),
        ),
        ("prefill bound", p.bound.name().to_string()),
    ];
    if let Some(d) = &r.decode {
        rows.extend([
            ("decode tokens/s", format!("{:.2}", d.tokens_per_s)),
            ("decode latency/token", si(d.latency_per_token_s, "s")),
            ("decode tokens/J", format!("{:.3}", d.tokens_per_j)),
            (
                "decode bandwidth used",
                format!("{:.1} GB/s", d.bandwidth_gbps),
            ),
            ("decode bound", d.bound.name().to_string()),
            (
                "decode acts kept on chip",
                format!(
                    "{}/tok, {:.2}%",
                    si(d.activations_on_chip.bytes_per_token, "B"),
                    100.0 * d.activations_on_chip.traffic_share
                ),
            ),
        ]);
    }
    for (label, value) in rows {
        let _ = writeln!(s, "{label:<28}{value:>16}");
    }
    let _ = writeln!(s);
    // The cost column appears when some machine has a price.
    let priced = r.price_usd.is_some() || r.gpu_baselines.iter().any(|g| g.price_usd.is_some());
    let cost = |tokens: Option<f64>, price: Option<f64>| -> String {
        if !priced {
            return String::new();
        }
        let v = tokens_per_s_per_kusd(tokens, price).map_or("-".into(), |v| format!("{v:.3}"));
        format!("{v:>16}")
    };
    let _ = writeln!(
        s,
        "{:<18}{:<10}{:>14}{:>14}{:>14}{:>8}{}",
        "target",
        "stack",
        "prefill",
        "decode tok/s",
        "tokens/J",
        "fits",
        if priced {
            format!("{:>16}", "tok/s per $1k")
        } else {
            String::new()
        }
    );
    let tokens = r.decode.as_ref().map(|d| d.tokens_per_s);
    let _ = writeln!(
        s,
        "{:<18}{:<10}{:>14}{:>14}{:>14}{:>8}{}",
        r.accelerator,
        "-",
        si(p.latency_s, "s"),
        tokens.map_or("-".into(), |t| format!("{t:.2}")),
        r.decode
            .as_ref()
            .map_or("-".into(), |d| format!("{:.3}", d.tokens_per_j)),
        "yes",
        cost(tokens, r.price_usd)
    );
    for g in &r.gpu_baselines {
        let _ = writeln!(
            s,
            "{:<18}{:<10}{:>14}{:>14}{:>14}{:>8}{}",
            g.name,
            g.stack,
            si(g.prefill_latency_s, "s"),
            g.decode_tokens_per_s
                .map_or("-".into(), |t| format!("{t:.2}")),
            g.energy_per_token_j
                .map_or("-".into(), |e| format!("{:.3}", 1.0 / e)),
            if g.fits_in_memory { "yes" } else { "no" },
            cost(g.decode_tokens_per_s, g.price_usd)
        );
    }
    s
}

/// Per-operator-class time, energy and traffic of each phase.
pub fn render_classes(r: &RunReport) -> String {
    let mut s = String::new();
    let mut phase = |name: &str, classes: &BTreeMap<&'static str, ClassShare>| {
        let total: f64 = classes.values().map(|c| c.seconds).sum();
        let _ = writeln!(
            s,
            "\n{name} by operator class\n{:<20}{:>14}{:>8}{:>14}{:>14}",
            "class", "time", "share", "energy", "DRAM bytes"
        );
        for (class, c) in classes {
            let _ = writeln!(
                s,
                "{:<20}{:>14}{:>7.1}%{:>14}{:>14}",
                class,
                si(c.seconds, "s"),
                100.0 * c.seconds / total.max(f64::MIN_POSITIVE),
                si(c.energy_j, "J"),
                si(c.dram_bytes as f64, "B")
            );
        }
    };
    phase("prefill", &r.prefill.by_class);
    if let Some(d) = &r.decode {
        phase("decode (all steps)", &d.by_class);
    }
    s
}
