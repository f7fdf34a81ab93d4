//! `tessera verilog`: generates the accelerator's matrix engine as Verilog (one file per module),
//! lints it with Verilator, synthesises it with Yosys into a resource report checked against the
//! spec's budget, and optionally runs the cycle-agreement testbenches under Icarus and Verilator.

use crate::{inputs, Verbosity};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use tessera_hdl::{EngineOptions, EngineParams, MatrixEngine};
use tessera_spec::accel::Accelerator;
use tessera_testbench::agreement::{run_grid, Agreement};
use tessera_testbench::synth::{
    lint, split_modules, synthesize, yosys_version, Resources, SynthTarget,
};
use tessera_testbench::verilog_tb::Simulator;

/// Arguments of `tessera verilog`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Accelerator preset name or TOML path.
    #[arg(long, default_value = "tiny")]
    pub accel: String,
    /// Output directory (`rtl/` holds one Verilog file per module).
    #[arg(short, long)]
    pub out: PathBuf,
    /// Words per operand and result bank (a power of two, 2 to 65,536).
    #[arg(long, default_value_t = 256)]
    pub bank_words: usize,
    /// Only write the Verilog: skip the Verilator lint and the Yosys synthesis.
    #[arg(long)]
    pub no_tools: bool,
    /// Also run the cycle-agreement testbenches under Icarus and Verilator (in `tb/`).
    #[arg(long)]
    pub test: bool,
    /// With `--test`, write waveforms (`tb/<simulator>/waves.vcd`).
    #[arg(long, requires = "test")]
    pub vcd: bool,
    /// Print the report as JSON.
    #[arg(long)]
    pub json: bool,
}

/// The engine the generator built.
#[derive(Debug, Serialize)]
struct EngineSummary {
    rows: usize,
    cols: usize,
    lanes: usize,
    segments: usize,
    pipeline_depth: usize,
    bank_words: usize,
    modules: usize,
}

/// Budget use of one resource.
#[derive(Debug, Serialize)]
struct Use {
    resource: &'static str,
    used: f64,
    budget: u64,
    /// `used / budget`; absent when the budget is 0 (then any use does not fit).
    fraction: Option<f64>,
}

impl Use {
    fn fits(&self) -> bool {
        self.fraction.map_or(self.used == 0.0, |f| f <= 1.0)
    }
}

/// What `tessera verilog` reports (also `resources.json`).
#[derive(Debug, Serialize)]
struct Report {
    accelerator: String,
    source: String,
    engine: EngineSummary,
    lint: Option<String>,
    target: Option<SynthTarget>,
    yosys: Option<String>,
    resources: Option<Resources>,
    budget: Vec<Use>,
    fits: Option<bool>,
    agreement: Vec<Agreement>,
}

fn check_options(args: &Args) -> Result<EngineOptions> {
    let w = args.bank_words;
    if !(w.is_power_of_two() && (2..=65536).contains(&w)) {
        bail!("--bank-words {w}: use a power of two from 2 to 65,536");
    }
    Ok(EngineOptions { bank_words: w })
}

fn budget_use(accel: &Accelerator, r: &Resources) -> Vec<Use> {
    let Some(b) = &accel.resources().fpga else {
        return Vec::new();
    };
    [
        ("dsp", r.dsp as f64, b.dsp),
        ("lut", r.lut as f64, b.lut),
        ("ff", r.ff as f64, b.ff),
        ("bram36", r.bram36, b.bram36),
        ("uram", r.uram as f64, b.uram),
    ]
    .into_iter()
    .map(|(resource, used, budget)| Use {
        resource,
        used,
        budget,
        fraction: (budget > 0).then(|| used / budget as f64),
    })
    .collect()
}

fn write(path: &Path, text: &str) -> Result<()> {
    std::fs::write(path, text).with_context(|| format!("cannot write `{}`", path.display()))
}

/// Runs the command.
pub fn main(args: &Args, verbosity: Verbosity) -> Result<ExitCode> {
    let accel = inputs::accelerator(&args.accel)?;
    let options = check_options(args)?;
    let params = EngineParams::from_accel(&accel)?;
    let mut engine = MatrixEngine::new(&params, options);
    let (lanes, segments) = (engine.lanes(), engine.segments());
    let verilog = tessera_hdl::verilog::emit(&mut engine)?;
    let rtl = args.out.join("rtl");
    std::fs::create_dir_all(&rtl).with_context(|| format!("cannot create `{}`", rtl.display()))?;
    let modules = split_modules(&verilog);
    let mut files = Vec::new();
    for (name, text) in &modules {
        let file = format!("{name}.v");
        write(&rtl.join(&file), text)?;
        files.push(file);
    }
    write(&rtl.join("files.f"), &(files.join("\n") + "\n"))?;
    let mut report = Report {
        accelerator: accel.name().to_string(),
        source: accel.source().to_string(),
        engine: EngineSummary {
            rows: params.rows,
            cols: params.cols,
            lanes,
            segments,
            pipeline_depth: params.pipeline_depth,
            bank_words: options.bank_words,
            modules: modules.len(),
        },
        lint: None,
        target: None,
        yosys: None,
        resources: None,
        budget: Vec::new(),
        fits: None,
        agreement: Vec::new(),
    };
    if !args.no_tools {
        lint(&rtl, &files).context("Verilator lint of the generated Verilog")?;
        report.lint = Some("verilator --lint-only -Wall: no warnings".into());
        let target = if accel.is_fpga() {
            SynthTarget::XilinxUltrascalePlus
        } else {
            SynthTarget::Generic
        };
        let log = args.out.join("yosys.log");
        let log = std::path::absolute(&log).unwrap_or(log);
        let resources =
            synthesize(&rtl, &files, target, &log.to_string_lossy()).context("Yosys synthesis")?;
        report.budget = budget_use(&accel, &resources);
        report.fits = accel
            .resources()
            .fpga
            .as_ref()
            .map(|_| report.budget.iter().all(Use::fits));
        report.target = Some(target);
        report.yosys = Some(yosys_version()?);
        report.resources = Some(resources);
    }
    if args.test {
        for sim in [Simulator::Icarus, Simulator::Verilator] {
            let dir = args.out.join("tb").join(format!("{sim:?}").to_lowercase());
            let dir = std::path::absolute(&dir).unwrap_or(dir);
            report
                .agreement
                .push(run_grid(&accel, &params, options, sim, &dir, args.vcd)?);
        }
    }
    write(
        &args.out.join("resources.json"),
        &serde_json::to_string_pretty(&report)?,
    )?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if verbosity != Verbosity::Quiet {
        print!("{}", render(&report, &args.out));
    }
    let disagreements: usize = report.agreement.iter().map(|a| a.mismatches.len()).sum();
    if disagreements > 0 {
        bail!("{disagreements} instruction(s) disagree with the golden results or the cycle model (see resources.json)");
    }
    if report.fits == Some(false) {
        bail!("the generated engine exceeds the budget in resources.fpga (see resources.json)");
    }
    Ok(ExitCode::SUCCESS)
}

fn render(r: &Report, out: &Path) -> String {
    use std::fmt::Write as _;
    let mut s = String::new();
    let e = &r.engine;
    let _ = writeln!(
        s,
        "{}: {} × {} PEs, {} lanes, {} segments, pipeline depth {}, {} modules in {}",
        r.accelerator,
        e.rows,
        e.cols,
        e.lanes,
        e.segments,
        e.pipeline_depth,
        e.modules,
        out.join("rtl").display()
    );
    if let Some(l) = &r.lint {
        let _ = writeln!(s, "lint: {l}");
    }
    if let (Some(res), Some(y)) = (&r.resources, &r.yosys) {
        let _ = writeln!(
            s,
            "synthesis ({y}): {} DSP, {} LUT ({} as memory), {} FF, {} BRAM36, {} URAM",
            res.dsp, res.lut, res.lut_memory, res.ff, res.bram36, res.uram
        );
        for u in &r.budget {
            let _ = writeln!(
                s,
                "  {:<7} {:>10} of {:>10} ({})",
                u.resource,
                u.used,
                u.budget,
                u.fraction
                    .map_or("no budget".to_string(), |f| format!("{:.1}%", 100.0 * f))
            );
        }
    }
    for a in &r.agreement {
        let _ = writeln!(
            s,
            "{}: {} instructions, {} disagree with the golden results or the cycle model",
            a.simulator,
            a.instructions,
            a.mismatches.len()
        );
    }
    s
}
