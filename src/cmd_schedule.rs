//! `tessera schedule`: plans scratchpad use for a model's graph and reports the off-chip traffic of
//! each planner, every plan checked by the independent validator.

use crate::{inputs, Verbosity};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::fmt::Write as _;
use std::process::ExitCode;
use std::time::Instant;
use tessera_reports::plots::{memory_map, MapBlock};
use tessera_scheduler::ilp::{
    binaries, blocks, divided, fixed_order, IlpStatus, Part, PartOutcome, Solver, MAX_BINARIES,
};
use tessera_scheduler::joint::joint;
use tessera_scheduler::peak::{min_peak, order_binaries, PeakPart, MAX_WHOLE_ORDER_BINARIES};
use tessera_scheduler::{baseline, replay, validate, Arrival, Eviction, Problem};
use tessera_spec::graph::Phase;

use crate::cmd_graph::PassArgs;

/// Arguments of `tessera schedule`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pass to plan.
    #[command(flatten)]
    pub pass: PassArgs,
    /// Scratchpad budget in bytes.
    #[arg(long, conflicts_with = "accel")]
    pub budget: Option<u64>,
    /// Take the budget from an accelerator's on-chip buffers (preset name or TOML path).
    #[arg(long)]
    pub accel: Option<String>,
    /// Print one JSON object.
    #[arg(long)]
    pub json: bool,
    /// ILP mode: `fixed-order` (the graph's operator order, least off-chip traffic within the
    /// budget), `joint` (order and residency chosen together; small graphs only) or `peak` (the
    /// operator order with the smallest footprint and no spill).
    #[arg(long, value_enum, default_value = "fixed-order")]
    pub mode: Mode,
    /// Divide and conquer: `auto` solves the graph whole unless its model exceeds the largest
    /// one solved whole, then a transformer block at a time; `block` always divides; `none`
    /// never does (CBC checks the time limit between branch-and-bound nodes, so a large whole
    /// model can overrun it).
    #[arg(long, value_enum, default_value = "auto")]
    pub divide: Divide,
    /// Seconds the ILP may search before it returns its best plan (divided: shared equally by
    /// the parts).
    #[arg(long, default_value_t = 10.0)]
    pub time_limit: f64,
    /// MILP solver: `highs` (built with `--features highs`, and then the default), `cbc` (built
    /// with `--features cbc`; the default when built without `highs`) or `microlp` (pure Rust,
    /// always built; the default otherwise).
    #[arg(long, value_enum, default_value = DEFAULT_SOLVER)]
    pub solver: SolverArg,
    /// Write the ILP plan's scratchpad memory map (address against step, one rectangle per
    /// tensor's stay, coloured by how it arrived) as an SVG file.
    #[arg(long)]
    pub plot: Option<std::path::PathBuf>,
}

/// The default `--solver`: the strongest in the build. HiGHS and CBC proved every fixed-order
/// benchmark budget (BERT, ViT, GPT-2, LLaMA2-7B prefill) optimal in well under a second where
/// microlp often stopped at the time limit; HiGHS also proved the joint TinyLLaMA models optimal
/// in about 1 s where CBC stopped at the time limit, and solved the minimum-peak models fastest
/// (README, schedule section). Single-threaded, each gives the same plan on every run.
const DEFAULT_SOLVER: &str = if cfg!(feature = "highs") {
    "highs"
} else if cfg!(feature = "cbc") {
    "cbc"
} else {
    "microlp"
};

/// `--solver` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum SolverArg {
    /// microlp.
    Microlp,
    /// COIN-OR CBC.
    Cbc,
    /// HiGHS.
    Highs,
}

/// `--mode` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum Mode {
    /// Operators in the graph's order; the ILP decides residency, spills and reloads.
    FixedOrder,
    /// The ILP chooses the operator order together with residency, spills and reloads.
    Joint,
    /// The ILP chooses the operator order for the smallest scratchpad footprint without spills.
    Peak,
}

/// Per-part results: traffic parts (fixed-order) or peak parts.
#[derive(Debug, Serialize)]
#[serde(untagged)]
pub enum Parts {
    /// Fixed-order parts.
    Traffic(Vec<PartOutcome>),
    /// Minimum-peak parts.
    Peak(Vec<PeakPart>),
}

/// `--divide` values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Divide {
    /// Whole when the model is small enough, by blocks otherwise.
    Auto,
    /// One part per transformer block.
    Block,
    /// Always whole.
    None,
}

/// The ILP's result.
#[derive(Debug, Serialize)]
pub struct IlpResult {
    /// `fixed-order`, `joint` or `peak`.
    pub mode: &'static str,
    /// The MILP solver.
    pub solver: Solver,
    /// `optimal`, `time_limit`, or `feasible` (divided, optimality not proven).
    pub status: IlpStatus,
    /// Whether the graph was divided into parts.
    pub divided: bool,
    /// Proven lower bound on what the mode minimises: non-compulsory bytes (0 where none is
    /// known), or in peak mode the peak (M_R where none better is known).
    pub lower_bound_bytes: u64,
    /// `(result − lower bound) / result` for what the mode minimises.
    pub gap: f64,
    /// Peak mode: the peak footprint of the graph's own order, for comparison.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub graph_order_peak_bytes: Option<u64>,
    /// The scratchpad the plan was validated in: the budget, or in peak mode its own peak.
    pub plan_budget: u64,
    /// The Belady plan (joint mode: the fixed-order ILP's) beat the solver's and is the one
    /// reported.
    pub baseline_kept: bool,
    /// Off-chip bytes no schedule avoids.
    pub compulsory_bytes: u64,
    /// Spill writes and reloads.
    pub non_compulsory_bytes: u64,
    /// Largest scratchpad occupancy.
    pub peak_bytes: u64,
    /// Bytes moved inside the scratchpad by compaction.
    pub moved_bytes: u64,
    /// Seconds in the solver.
    pub solve_seconds: f64,
    /// Binary variables.
    pub binaries: usize,
    /// Constraints.
    pub constraints: usize,
    /// The parts, when divided.
    pub parts: Parts,
}

/// What either mode returns, for the report.
struct Outcome {
    plan: tessera_scheduler::Plan,
    plan_budget: u64,
    status: IlpStatus,
    divided: bool,
    lower_bound_bytes: u64,
    gap: f64,
    baseline_kept: bool,
    graph_order_peak_bytes: Option<u64>,
    solve_seconds: f64,
    binaries: usize,
    constraints: usize,
    parts: Parts,
}

/// One planner's result.
#[derive(Debug, Serialize)]
pub struct PlannerResult {
    /// Planner name.
    pub name: &'static str,
    /// Off-chip bytes no schedule avoids.
    pub compulsory_bytes: u64,
    /// Spill writes and reloads.
    pub non_compulsory_bytes: u64,
    /// Largest scratchpad occupancy.
    pub peak_bytes: u64,
    /// Bytes moved inside the scratchpad by compaction.
    pub moved_bytes: u64,
    /// Seconds the planner took.
    pub solve_seconds: f64,
}

/// The JSON output.
#[derive(Debug, Serialize)]
pub struct ScheduleReport {
    /// Model.
    pub model: String,
    /// Pass.
    pub phase: Phase,
    /// Budget in bytes.
    pub budget: u64,
    /// The largest operator working set (no plan fits below it).
    pub min_budget: u64,
    /// Operators.
    pub ops: usize,
    /// The ILP.
    pub ilp: IlpResult,
    /// Baseline planners.
    pub baselines: Vec<PlannerResult>,
}

/// Runs the command.
pub fn main(args: &Args, verbosity: Verbosity) -> Result<ExitCode> {
    let budget = match (args.budget, &args.accel) {
        (Some(b), _) => b,
        (None, Some(a)) => inputs::accelerator(a)?.on_chip_bytes().0,
        (None, None) => bail!("give a scratchpad budget: --budget BYTES or --accel ACCEL"),
    };
    let graph = args.pass.build()?;
    let problem = Problem::from_graph(&graph)?;
    let mut baselines = Vec::new();
    for policy in [Eviction::Lru, Eviction::Belady] {
        let start = Instant::now();
        let plan = baseline(&problem, budget, policy)?;
        let solve_seconds = start.elapsed().as_secs_f64();
        let r = validate(&problem, budget, &plan)
            .with_context(|| format!("the {} plan failed validation", policy.name()))?;
        baselines.push(PlannerResult {
            name: policy.name(),
            compulsory_bytes: r.compulsory_bytes,
            non_compulsory_bytes: r.non_compulsory_bytes,
            peak_bytes: r.peak_bytes,
            moved_bytes: r.moved_bytes,
            solve_seconds,
        });
    }
    let solver = match args.solver {
        SolverArg::Microlp => Solver::Microlp,
        SolverArg::Cbc => Solver::Cbc,
        SolverArg::Highs => Solver::Highs,
    };
    let parts = blocks(&problem);
    let whole = [Part {
        name: "whole".into(),
        first: 0,
        last: problem.ops.len() - 1,
    }];
    let outcome = match args.mode {
        Mode::FixedOrder => {
            let divide = match args.divide {
                Divide::Auto => binaries(&problem) > MAX_BINARIES,
                Divide::Block => true,
                Divide::None => false,
            };
            let o = if divide {
                divided(&problem, budget, args.time_limit, solver, &parts)?
            } else {
                fixed_order(&problem, budget, args.time_limit, solver)?
            };
            Outcome {
                plan: o.plan,
                plan_budget: budget,
                status: o.status,
                divided: divide,
                lower_bound_bytes: o.lower_bound_bytes,
                gap: o.gap,
                baseline_kept: o.baseline_kept,
                graph_order_peak_bytes: None,
                solve_seconds: o.solve_seconds,
                binaries: o.binaries,
                constraints: o.constraints,
                parts: Parts::Traffic(o.parts),
            }
        }
        Mode::Joint => {
            if args.divide == Divide::Block {
                bail!(
                    "joint mode solves whole graphs only; --divide block needs --mode fixed-order"
                );
            }
            let o = joint(&problem, budget, args.time_limit, solver)?;
            Outcome {
                plan: o.plan,
                plan_budget: budget,
                status: o.status,
                divided: false,
                lower_bound_bytes: o.lower_bound_bytes,
                gap: o.gap,
                baseline_kept: o.fixed_order_kept,
                graph_order_peak_bytes: None,
                solve_seconds: o.solve_seconds,
                binaries: o.binaries,
                constraints: o.constraints,
                parts: Parts::Traffic(Vec::new()),
            }
        }
        Mode::Peak => {
            let divide = match args.divide {
                Divide::Auto => order_binaries(problem.ops.len()) > MAX_WHOLE_ORDER_BINARIES,
                Divide::Block => true,
                Divide::None => false,
            };
            let chosen: &[Part] = if divide { &parts } else { &whole };
            let o = min_peak(&problem, args.time_limit, solver, chosen)?;
            Outcome {
                plan: o.plan,
                plan_budget: o.peak_bytes,
                status: o.status,
                divided: divide,
                lower_bound_bytes: o.lower_bound_bytes,
                gap: o.gap,
                baseline_kept: false,
                graph_order_peak_bytes: Some(o.graph_order_peak_bytes),
                solve_seconds: o.solve_seconds,
                binaries: o.binaries,
                constraints: o.constraints,
                parts: Parts::Peak(if divide { o.parts } else { Vec::new() }),
            }
        }
    };
    let budget_used = outcome.plan_budget;
    let (r, map) =
        replay(&problem, budget_used, &outcome.plan).context("the ILP plan failed validation")?;
    if let Some(path) = &args.plot {
        let blocks: Vec<MapBlock> = map
            .iter()
            .map(|x| MapBlock {
                from: x.from,
                to: x.to,
                addr: x.addr,
                bytes: x.bytes,
                kind: match x.arrival {
                    Arrival::Produced => "produced",
                    Arrival::Loaded => "loaded from DRAM",
                    Arrival::Relocated => "relocated",
                }
                .into(),
            })
            .collect();
        let title = format!(
            "{} {}: scratchpad of {budget_used} bytes (ILP plan)",
            graph.model,
            graph.phase.name()
        );
        let svg = memory_map(&title, &blocks, outcome.plan.order.len(), budget_used)?;
        std::fs::write(path, svg).with_context(|| format!("cannot write `{}`", path.display()))?;
    }
    let ilp = IlpResult {
        mode: match args.mode {
            Mode::FixedOrder => "fixed-order",
            Mode::Joint => "joint",
            Mode::Peak => "peak",
        },
        solver,
        status: outcome.status,
        divided: outcome.divided,
        lower_bound_bytes: outcome.lower_bound_bytes,
        gap: outcome.gap,
        graph_order_peak_bytes: outcome.graph_order_peak_bytes,
        plan_budget: outcome.plan_budget,
        baseline_kept: outcome.baseline_kept,
        compulsory_bytes: r.compulsory_bytes,
        non_compulsory_bytes: r.non_compulsory_bytes,
        peak_bytes: r.peak_bytes,
        moved_bytes: r.moved_bytes,
        solve_seconds: outcome.solve_seconds,
        binaries: outcome.binaries,
        constraints: outcome.constraints,
        parts: outcome.parts,
    };
    let report = ScheduleReport {
        model: graph.model.clone(),
        phase: graph.phase,
        budget,
        min_budget: problem.min_budget(),
        ops: problem.ops.len(),
        ilp,
        baselines,
    };
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if verbosity != Verbosity::Quiet {
        print!("{}", render(&report));
    }
    Ok(ExitCode::SUCCESS)
}

fn render(r: &ScheduleReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} {}: {} ops, budget {} bytes (smallest feasible {})\n",
        r.model,
        r.phase.name(),
        r.ops,
        r.budget,
        r.min_budget
    );
    let _ = writeln!(
        s,
        "{:<24}{:>16}{:>18}{:>14}{:>14}{:>10}",
        "planner", "compulsory B", "non-compulsory B", "peak B", "moved B", "time s"
    );
    let i = &r.ilp;
    let _ = writeln!(
        s,
        "{:<24}{:>16}{:>18}{:>14}{:>14}{:>10.3}  {:?}",
        format!(
            "ilp ({}{})",
            i.mode,
            if i.divided { ", by blocks" } else { "" }
        ),
        i.compulsory_bytes,
        i.non_compulsory_bytes,
        i.peak_bytes,
        i.moved_bytes,
        i.solve_seconds,
        i.status
    );
    let _ = writeln!(
        s,
        "{:<24}{:>34}  gap {:.1}%{}",
        "  lower bound",
        i.lower_bound_bytes,
        100.0 * i.gap,
        if i.baseline_kept {
            "  (a baseline plan was better and is kept)"
        } else {
            ""
        }
    );
    if let Some(g) = i.graph_order_peak_bytes {
        let _ = writeln!(s, "{:<24}{:>62}", "  graph-order peak B", g);
    }
    for b in &r.baselines {
        let _ = writeln!(
            s,
            "{:<24}{:>16}{:>18}{:>14}{:>14}{:>10.3}",
            b.name,
            b.compulsory_bytes,
            b.non_compulsory_bytes,
            b.peak_bytes,
            b.moved_bytes,
            b.solve_seconds
        );
    }
    s
}
