//! `tessera calibrate`: synthesises the generated matrix engine over a grid of sizes and
//! datapaths with Yosys and writes the resource calibration the spec's resource model fits
//! (`spec/data/resources-yosys-xcup.json` is the shipped one).

use crate::Verbosity;
use anyhow::{Context, Result};
use std::path::PathBuf;
use std::process::ExitCode;
use tessera_testbench::calibrate::{calibrate, default_grid};

/// Arguments of `tessera calibrate`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Calibration file to write (JSON).
    #[arg(short, long)]
    pub out: PathBuf,
    /// Directory for the synthesised points (Verilog and Yosys logs).
    #[arg(long, default_value = "target/calibration")]
    pub work: PathBuf,
    /// Yosys runs at once.
    #[arg(long, default_value_t = 2)]
    pub jobs: usize,
    /// A calibration whose points (by the same Yosys) are copied instead of synthesised again,
    /// e.g. the shipped one when the grid grows.
    #[arg(long)]
    pub reuse: Option<PathBuf>,
}

/// Runs the command.
pub fn main(args: &Args, verbosity: Verbosity) -> Result<ExitCode> {
    let grid = default_grid();
    if verbosity != Verbosity::Quiet {
        eprintln!(
            "synthesising {} engines, {} at a time, in {}",
            grid.len(),
            args.jobs,
            args.work.display()
        );
    }
    let work = std::path::absolute(&args.work).unwrap_or(args.work.clone());
    let reuse = match &args.reuse {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("cannot read `{}`", path.display()))?;
            Some(
                serde_json::from_str::<tessera_spec::resource_model::Calibration>(&text)
                    .with_context(|| format!("`{}` is not a calibration", path.display()))?,
            )
        }
        None => None,
    };
    let cal =
        calibrate(&grid, &work, args.jobs, reuse.as_ref()).context("calibration synthesis")?;
    std::fs::write(&args.out, serde_json::to_string_pretty(&cal)? + "\n")
        .with_context(|| format!("cannot write `{}`", args.out.display()))?;
    if verbosity != Verbosity::Quiet {
        println!(
            "{} points by {} written to {}",
            cal.points.len(),
            cal.yosys,
            args.out.display()
        );
    }
    Ok(ExitCode::SUCCESS)
}
