//! `tessera check`: validates input files and explains every problem found.

use crate::{inputs, Verbosity};
use anyhow::{Context, Result};
use std::process::ExitCode;
use tessera_spec::accel::Accelerator;
use tessera_spec::error::{Problem, SpecError};
use tessera_spec::{compression, model};

/// What kind of file to check.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum Kind {
    /// Accelerator TOML.
    Accelerator,
    /// Compression TOML.
    Compression,
    /// Hugging Face config.json.
    Model,
    /// Sweep spec TOML.
    Sweep,
}

/// Arguments of `tessera check`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Files to check.
    #[arg(required = true)]
    pub files: Vec<String>,
    /// The kind of the files; guessed from the extension and top-level keys when absent.
    #[arg(long, value_enum)]
    pub kind: Option<Kind>,
}

/// Guesses a file's kind: `.json` is a model; a TOML file with `[matrix]` or `[[memories]]` is
/// an accelerator, one with `[weights]`, `[kv]` or `activations` a compression.
fn guess(path: &str, text: &str) -> Result<Kind, SpecError> {
    if path.ends_with(".json") {
        return Ok(Kind::Model);
    }
    let value: toml::Table =
        toml::from_str(text).map_err(|e| SpecError::from_toml_syntax(path, text, &e))?;
    if value.contains_key("axes") {
        Ok(Kind::Sweep)
    } else if value.contains_key("matrix") || value.contains_key("memories") {
        Ok(Kind::Accelerator)
    } else if ["weights", "kv", "activations"]
        .iter()
        .any(|k| value.contains_key(*k))
    {
        Ok(Kind::Compression)
    } else {
        Err(SpecError::one(
            path,
            Problem::new(
                "",
                "cannot tell what kind of file this is",
                "accelerator files have [matrix] and [[memories]], compression files have \
                 [weights], sweep specs have [axes]; or pass --kind",
            ),
        ))
    }
}

/// For an FPGA whose matrix engine the hardware generator builds: the engine's resources as the
/// shipped synthesis calibration estimates them, against the board's (entries above the board
/// marked `over`; the check itself compares DSPs only, the rest of the design is not counted).
fn engine_estimate(a: &Accelerator) -> String {
    let (Some(board), Some(e)) = (
        &a.resources().fpga,
        tessera_spec::resource_model::Calibration::builtin().estimate(a.matrix()),
    ) else {
        return String::new();
    };
    let uses = [
        ("DSP", e.dsp as f64, board.dsp),
        ("LUT", e.lut as f64, board.lut),
        ("FF", e.ff as f64, board.ff),
        ("BRAM36", e.bram36, board.bram36),
    ];
    let parts: Vec<String> = uses
        .iter()
        .map(|&(name, used, has)| {
            let share = 100.0 * used / has.max(1) as f64;
            let over = if used > has as f64 { ", over" } else { "" };
            format!("{name} {used:.0} of {has} ({share:.0}%{over})")
        })
        .collect();
    format!(
        "; generated matrix engine, estimated from synthesis: {}",
        parts.join(", ")
    )
}

fn check_one(path: &str, kind: Option<Kind>) -> Result<String> {
    let text = inputs::read(path)?;
    let kind = match kind {
        Some(k) => k,
        None => guess(path, &text)?,
    };
    Ok(match kind {
        Kind::Accelerator => {
            let a = Accelerator::from_toml_str(&text, path)?;
            format!("accelerator `{}`{}", a.name(), engine_estimate(&a))
        }
        Kind::Compression => {
            let c = compression::from_toml_str(&text, path)?;
            format!("compression `{}`", c.name)
        }
        Kind::Sweep => {
            let spec = crate::sweep::SweepSpec::parse(&text, path)?;
            // Build every point's inputs, so that a bad axis path or value type is found now.
            let points = spec.points();
            for p in &points {
                crate::sweep::point_inputs(&spec, p)
                    .with_context(|| format!("{path}: point {} {:?}", p.index, p.params))?;
            }
            format!("sweep of {} points", points.len())
        }
        Kind::Model => {
            let m = model::from_hf_json(&text, path, path)?;
            format!(
                "{:?} model, {} layers, hidden {}",
                m.architecture, m.layers, m.hidden
            )
        }
    })
}

/// Runs the command: every file is checked; the exit code is non-zero if any has a problem.
pub fn main(args: &Args, verbosity: Verbosity) -> Result<ExitCode> {
    let mut failed = 0;
    for f in &args.files {
        match check_one(f, args.kind) {
            Ok(what) => {
                if verbosity != Verbosity::Quiet {
                    println!("{f}: ok ({what})");
                }
            }
            Err(e) => {
                failed += 1;
                eprint!("{e:#}");
                if !format!("{e:#}").ends_with('\n') {
                    eprintln!();
                }
            }
        }
    }
    Ok(if failed == 0 {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    })
}
