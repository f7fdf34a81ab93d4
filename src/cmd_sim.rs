//! `tessera sim`: runs an ISA program on an accelerator in the cycle-accurate simulator.

use crate::{inputs, Verbosity};
use anyhow::{Context, Result};
use std::fmt::Write as _;
use std::process::ExitCode;
use tessera_sim::{simulate_functional, simulate_with, DataState, DramMode, SimOptions, SimReport};
use tessera_spec::accel::Accelerator;
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
    /// Functional mode: the instructions also compute on the memories' bytes (all zero at the
    /// start, in the operand formats of `tessera_spec::isa::data`); same timing.
    #[arg(long)]
    pub functional: bool,
    /// Before a functional run, write a file's bytes into DRAM: `CHANNEL:ADDR=FILE` (repeatable;
    /// ADDR decimal or 0x hex).
    #[arg(long, value_name = "CHANNEL:ADDR=FILE", requires = "functional")]
    pub load: Vec<String>,
    /// After a functional run, write DRAM bytes to a file: `CHANNEL:ADDR:LEN=FILE` (repeatable).
    #[arg(long, value_name = "CHANNEL:ADDR:LEN=FILE", requires = "functional")]
    pub dump: Vec<String>,
}

/// A DRAM region named on the command line: channel, address, length (dumps) and file.
#[derive(Debug, PartialEq, Eq)]
struct Region {
    channel: u8,
    addr: u64,
    len: Option<u64>,
    file: String,
}

/// Bytes of each DRAM channel, in the numbering of DMA instructions (memories in spec order).
fn channel_bytes(accel: &Accelerator) -> Vec<u64> {
    accel
        .memories()
        .iter()
        .flat_map(|m| std::iter::repeat_n(m.capacity().0 / m.channels(), m.channels() as usize))
        .collect()
}

/// Parses `CHANNEL:ADDR=FILE` (`with_len` false) or `CHANNEL:ADDR:LEN=FILE` for flag `flag`,
/// checking the channel against the accelerator's channels (`channel_bytes` each).
fn parse_region(flag: &str, text: &str, with_len: bool, channel_bytes: &[u64]) -> Result<Region> {
    let channels = channel_bytes.len() as u64;
    let form = if with_len {
        "CHANNEL:ADDR:LEN=FILE"
    } else {
        "CHANNEL:ADDR=FILE"
    };
    let bad = |why: &str| anyhow::anyhow!("{flag} {text}: {why} (expected {form})");
    let (place, file) = text.split_once('=').ok_or_else(|| bad("no `=FILE`"))?;
    if file.is_empty() {
        return Err(bad("empty file name"));
    }
    let parts: Vec<&str> = place.split(':').collect();
    if parts.len() != if with_len { 3 } else { 2 } {
        return Err(bad("wrong number of `:` fields"));
    }
    let number = |what: &str, s: &str| -> Result<u64> {
        let v = match s.strip_prefix("0x") {
            Some(hex) => u64::from_str_radix(hex, 16),
            None => s.parse(),
        };
        v.map_err(|_| bad(&format!("{what} `{s}` is not a number")))
    };
    let channel = number("channel", parts[0])?;
    if channel >= channels {
        return Err(bad(&format!(
            "channel {channel} is not on the accelerator (channels 0 to {})",
            channels - 1
        )));
    }
    let addr = number("address", parts[1])?;
    let len = if with_len {
        Some(number("length", parts[2])?)
    } else {
        None
    };
    let size = channel_bytes[channel as usize];
    if addr.saturating_add(len.unwrap_or(0)) > size {
        return Err(bad(&format!(
            "the region ends past channel {channel}'s {size} bytes"
        )));
    }
    Ok(Region {
        channel: channel as u8,
        addr,
        len,
        file: file.to_string(),
    })
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
        ..SimOptions::default()
    };
    let report = if args.functional {
        let sizes = channel_bytes(&accel);
        let loads = args
            .load
            .iter()
            .map(|t| parse_region("--load", t, false, &sizes))
            .collect::<Result<Vec<_>>>()?;
        let dumps = args
            .dump
            .iter()
            .map(|t| parse_region("--dump", t, true, &sizes))
            .collect::<Result<Vec<_>>>()?;
        let mut data = DataState::new(&accel);
        for r in &loads {
            let bytes = std::fs::read(&r.file)
                .with_context(|| format!("--load: cannot read `{}`", r.file))?;
            let size = sizes[r.channel as usize];
            if r.addr + bytes.len() as u64 > size {
                anyhow::bail!(
                    "--load: `{}` ({} bytes) at {:#x} ends past channel {}'s {size} bytes",
                    r.file,
                    bytes.len(),
                    r.addr,
                    r.channel
                );
            }
            data.write_dram(r.channel, r.addr, &bytes);
        }
        let report = simulate_functional(&accel, &program, options, &mut data)
            .with_context(|| format!("cannot run `{}`", args.program))?;
        for r in &dumps {
            let bytes = data.read_dram(r.channel, r.addr, r.len.unwrap_or(0));
            std::fs::write(&r.file, bytes)
                .with_context(|| format!("--dump: cannot write `{}`", r.file))?;
        }
        report
    } else {
        simulate_with(&accel, &program, options)
            .with_context(|| format!("cannot run `{}`", args.program))?
    };
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
        "{}: {} instructions ({} bytes, {} events), {} cycles = {:.3} µs, {} DRAM bytes, \
         {:.3} µJ (DRAM scheduled {})",
        r.accelerator,
        r.instructions,
        r.instruction_bytes,
        r.events,
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
