//! The `tessera` command-line tool.

use clap::{Parser, Subcommand};
use std::process::ExitCode;
use tessera::{
    cmd_asm, cmd_calibrate, cmd_check, cmd_compile, cmd_graph, cmd_run, cmd_schedule, cmd_sim,
    cmd_sweep, cmd_verilog,
};

/// Design transformer inference accelerators: estimate, simulate, generate hardware, sweep.
#[derive(Debug, Parser)]
#[command(name = "tessera", version, about)]
struct Cli {
    /// More detail (per-operator breakdowns).
    #[arg(short, long, global = true, conflicts_with = "quiet")]
    verbose: bool,
    /// Print only results requested explicitly (JSON, DOT) and errors.
    #[arg(short, long, global = true)]
    quiet: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Estimate a model on an accelerator (prefill and decode) beside GPU baselines.
    Run(cmd_run::Args),
    /// Show a model's operator graph and its accounting.
    Graph(cmd_graph::Args),
    /// Validate accelerator, compression, model or sweep files and explain every problem.
    Check(cmd_check::Args),
    /// Assemble an ISA text program into a binary program file.
    Asm(cmd_asm::AsmArgs),
    /// Print the text form of a binary program file.
    Disasm(cmd_asm::DisasmArgs),
    /// Run an ISA program in the cycle-accurate simulator.
    Sim(cmd_sim::Args),
    /// Compile a model's decode steps to ISA programs, one per context-length bucket.
    Compile(cmd_compile::Args),
    /// Plan scratchpad use (order, addresses, spills) and report each planner's traffic.
    Schedule(cmd_schedule::Args),
    /// Run (or resume) a design-space sweep into a JSON-lines results file.
    Sweep(cmd_sweep::SweepArgs),
    /// Join sweep shard results into one file.
    Merge(cmd_sweep::MergeArgs),
    /// Render a sweep results file as Markdown, HTML (with plots) and CSV.
    Report(cmd_sweep::ReportArgs),
    /// Generate the matrix engine as Verilog, lint and synthesise it, report its resources.
    Verilog(cmd_verilog::Args),
    /// Synthesise the generated engine over a grid and write the resource calibration.
    Calibrate(cmd_calibrate::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let verbosity = if cli.quiet {
        tessera::Verbosity::Quiet
    } else if cli.verbose {
        tessera::Verbosity::Verbose
    } else {
        tessera::Verbosity::Normal
    };
    let result = match cli.command {
        Command::Run(a) => cmd_run::main(&a, verbosity),
        Command::Graph(a) => cmd_graph::main(&a, verbosity),
        Command::Check(a) => cmd_check::main(&a, verbosity),
        Command::Asm(a) => cmd_asm::asm(&a, verbosity),
        Command::Disasm(a) => cmd_asm::disasm(&a, verbosity),
        Command::Sim(a) => cmd_sim::main(&a, verbosity),
        Command::Compile(a) => cmd_compile::main(&a, verbosity),
        Command::Schedule(a) => cmd_schedule::main(&a, verbosity),
        Command::Sweep(a) => cmd_sweep::sweep(&a, verbosity),
        Command::Merge(a) => cmd_sweep::merge_cmd(&a, verbosity),
        Command::Report(a) => cmd_sweep::report(&a, verbosity),
        Command::Verilog(a) => cmd_verilog::main(&a, verbosity),
        Command::Calibrate(a) => cmd_calibrate::main(&a, verbosity),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}
