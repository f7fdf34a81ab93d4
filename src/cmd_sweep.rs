//! `tessera sweep` and `tessera merge`: design-space sweeps from the command line.

use crate::sweep::{merge, run_sweep, SweepSpec};
use crate::{inputs, Verbosity};
use anyhow::{bail, Context, Result};
use std::process::ExitCode;

/// Arguments of `tessera sweep`.
#[derive(Debug, clap::Args)]
pub struct SweepArgs {
    /// Sweep spec (TOML).
    pub spec: String,
    /// Results file (JSON lines); an existing one from the same spec is resumed.
    #[arg(short, long)]
    pub output: String,
    /// Run only shard I of N (points whose index modulo N is I), e.g. `--shard 0/4`.
    #[arg(long)]
    pub shard: Option<String>,
}

/// Arguments of `tessera merge`.
#[derive(Debug, clap::Args)]
pub struct MergeArgs {
    /// Shard result files of one spec.
    #[arg(required = true)]
    pub inputs: Vec<String>,
    /// Merged results file.
    #[arg(short, long)]
    pub output: String,
}

fn parse_shard(s: &str) -> Result<(u64, u64)> {
    let parsed = s
        .split_once('/')
        .and_then(|(i, n)| Some((i.parse::<u64>().ok()?, n.parse::<u64>().ok()?)));
    match parsed {
        Some((i, n)) if n > 0 && i < n => Ok((i, n)),
        _ => bail!("--shard `{s}`: expected I/N with 0 <= I < N, e.g. 0/4"),
    }
}

/// Runs `tessera sweep`.
pub fn sweep(args: &SweepArgs, verbosity: Verbosity) -> Result<ExitCode> {
    let spec = SweepSpec::parse(&inputs::read(&args.spec)?, &args.spec)?;
    let shard = match &args.shard {
        Some(s) => parse_shard(s)?,
        None => (0, 1),
    };
    let n = run_sweep(&spec, &args.output, shard, verbosity != Verbosity::Quiet)?;
    if verbosity != Verbosity::Quiet {
        println!("{}: {n} points run", args.output);
    }
    Ok(ExitCode::SUCCESS)
}

/// Runs `tessera merge`.
pub fn merge_cmd(args: &MergeArgs, verbosity: Verbosity) -> Result<ExitCode> {
    let n = merge(&args.inputs, &args.output)?;
    if verbosity != Verbosity::Quiet {
        println!("{}: {n} points", args.output);
    }
    Ok(ExitCode::SUCCESS)
}

/// Arguments of `tessera report`.
#[derive(Debug, clap::Args)]
pub struct ReportArgs {
    /// Sweep results file.
    pub results: String,
    /// Directory for `report.md`, `report.html` (plots embedded as SVG) and `results.csv`.
    #[arg(short, long)]
    pub output: String,
}

/// Runs `tessera report`: Markdown (with the Pareto front), HTML (with its plot) and CSV of a
/// results file.
pub fn report(args: &ReportArgs, verbosity: Verbosity) -> Result<ExitCode> {
    let Some((header, mut records)) = crate::sweep::read_results(&args.results)? else {
        bail!("`{}` is empty or missing", args.results);
    };
    records.sort_by_key(|r| r.index);
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("cannot create `{}`", args.output))?;
    let title = format!(
        "Sweep {} ({} of {} points)",
        std::path::Path::new(&args.results)
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or(&args.results),
        records.len(),
        header.points
    );
    let dir = std::path::Path::new(&args.output);
    std::fs::write(
        dir.join("report.md"),
        tessera_reports::sweep::markdown(&title, &records),
    )?;
    std::fs::write(
        dir.join("results.csv"),
        tessera_reports::sweep::csv(&records),
    )?;
    std::fs::write(
        dir.join("report.html"),
        tessera_reports::sweep::html(&title, &records)?,
    )?;
    if verbosity != Verbosity::Quiet {
        println!("{}: report.md, report.html, results.csv", args.output);
    }
    Ok(ExitCode::SUCCESS)
}
