//! `tessera sim`: runs an ISA program on an accelerator in the cycle-accurate simulator.

use crate::{inputs, Verbosity};
use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::process::ExitCode;
use tessera_sim::{simulate_with, DramMode, SimOptions, SimReport};
use tessera_spec::isa::{assemble, decode_program, Program, MAGIC};

/// Arguments of `tessera sim`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Program: a binary program file, or the text form.
    pub program: String,
    /// Accelerator preset name or TOML path.
    #[arg(long, default_value = "u280")]
    pub accel: String,
    /// Print one JSON object instead of tables.
    #[arg(long)]
    pub json: bool,
    /// Write a Chrome trace-event JSON (one track per unit) that Perfetto opens.
    #[arg(long)]
    pub trace: Option<String>,
    /// DRAM scheduling: `fast` advances rows that stream back to back in closed form,
    /// `reference` schedules every burst; both give the same results.
    #[arg(long, value_enum, default_value = "fast")]
    pub dram: DramArg,
}

/// `--dram` values.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum DramArg {
    /// Closed-form whole-row advances where exact.
    Fast,
    /// Burst by burst.
    Reference,
}

impl From<DramArg> for DramMode {
    fn from(a: DramArg) -> Self {
        match a {
            DramArg::Fast => DramMode::Fast,
            DramArg::Reference => DramMode::Reference,
        }
    }
}

/// Reads a program file in either form (binary files start with the magic `TSRA`).
pub fn read_program(path: &str) -> Result<Program> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read `{path}`"))?;
    if bytes.starts_with(MAGIC) {
        decode_program(&bytes).with_context(|| format!("cannot decode `{path}`"))
    } else {
        let text = String::from_utf8(bytes)
            .with_context(|| format!("`{path}` is neither a program file nor text"))?;
        assemble(&text).with_context(|| format!("cannot assemble `{path}`"))
    }
}

/// Runs the command.
pub fn main(args: &Args, verbosity: Verbosity) -> Result<ExitCode> {
    let accel = inputs::accelerator(&args.accel)?;
    let program = read_program(&args.program)?;
    let options = SimOptions {
        dram: args.dram.into(),
    };
    let report = simulate_with(&accel, &program, options)
        .with_context(|| format!("cannot run `{}`", args.program))?;
    if let Some(path) = &args.trace {
        let trace = report.chrome_trace(&program, accel.clock().0);
        std::fs::write(path, serde_json::to_string(&trace)?)
            .with_context(|| format!("cannot write `{path}`"))?;
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else if verbosity != Verbosity::Quiet {
        print!("{}", render(&report));
    }
    Ok(ExitCode::SUCCESS)
}

/// The human-readable summary of a simulation.
pub fn render(r: &SimReport) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{}: {} instructions ({} bytes), {} cycles = {:.3} µs, {} DRAM bytes, {:.3} µJ \
         (DRAM scheduled {})",
        r.accelerator,
        r.instructions,
        r.instruction_bytes,
        r.cycles,
        r.seconds * 1e6,
        r.dram_bytes,
        r.energy_j.total * 1e6,
        r.dram_mode.name()
    );
    let _ = writeln!(
        s,
        "\n{:<6}{:>8}{:>12}{:>14}{:>14}{:>14}",
        "unit", "instr", "busy", "token stall", "PE stall", "port stall"
    );
    for (name, u) in &r.units {
        let _ = writeln!(
            s,
            "{:<6}{:>8}{:>12}{:>14}{:>14}{:>14}",
            name,
            u.instructions,
            u.busy_cycles,
            u.stall_token_cycles,
            u.stall_resource_cycles,
            u.stall_port_cycles
        );
    }
    let _ = writeln!(s, "\n{:<28}{:>14}", "energy", "µJ");
    for (place, j) in &r.energy_j.by_place {
        let _ = writeln!(s, "{place:<28}{:>14.3}", j * 1e6);
    }
    if !r.channels.is_empty() {
        let _ = writeln!(
            s,
            "\n{:<12}{:>14}{:>12}{:>12}{:>20}",
            "channel", "bytes", "GB/s", "peak", "hit/miss/conflict"
        );
        for c in &r.channels {
            let _ = writeln!(
                s,
                "{:<12}{:>14}{:>12.2}{:>12.2}{:>20}",
                format!("{}[{}]", c.memory, c.channel),
                c.bytes,
                c.achieved_gbps,
                c.peak_gbps,
                format!("{}/{}/{}", c.row_hits, c.row_misses, c.row_conflicts)
            );
        }
    }
    s
}
