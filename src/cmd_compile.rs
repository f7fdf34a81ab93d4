//! `tessera compile`: compiles a model's decode steps to ISA programs, one per context-length
//! bucket, and writes each as a binary program and its disassembly.

use crate::{inputs, Verbosity};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;
use tessera_compiler::frontend::build_graph;
use tessera_compiler::program::{compile_decode_step, decode_bucket};
use tessera_spec::graph::Phase;
use tessera_spec::isa::{disassemble, encode_program};

/// Arguments of `tessera compile`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model, accelerator and compression.
    #[command(flatten)]
    pub target: inputs::TargetArgs,
    /// Compile the bucket holding this context length.
    #[arg(long, default_value_t = 512, conflicts_with = "max_context")]
    pub context: u64,
    /// Compile every bucket up to this context length instead.
    #[arg(long)]
    pub max_context: Option<u64>,
    /// Decode contexts round up to a multiple of this.
    #[arg(long, default_value_t = 16)]
    pub bucket: u64,
    /// Sequences per batch.
    #[arg(long, default_value_t = 1)]
    pub batch: u64,
    /// Output directory.
    #[arg(short, long)]
    pub output: PathBuf,
    /// With `--max-context`: also compile every exact context length up to it and write
    /// `storage.json`, the instruction storage of the bucketed set against one program per length.
    #[arg(long, requires = "max_context")]
    pub exact: bool,
}

/// Instruction storage of a program set.
#[derive(Debug, Serialize)]
pub struct Storage {
    /// Programs.
    pub programs: u64,
    /// Bytes in instruction memory, all programs together.
    pub bytes: u64,
}

/// `storage.json`: the bucketed program set against compiling every exact length.
#[derive(Debug, Serialize)]
pub struct StorageReport {
    /// Decode contexts round up to a multiple of this.
    pub bucket: u64,
    /// Longest context covered.
    pub max_context: u64,
    /// One program per bucket.
    pub bucketed: Storage,
    /// One program per context length 1..=max_context.
    pub exact: Storage,
    /// `exact.bytes / bucketed.bytes`.
    pub exact_over_bucketed: f64,
}

/// One compiled program, as listed in `programs.json`.
#[derive(Debug, Serialize)]
pub struct Compiled {
    /// Context length the program is compiled for (the bucket's upper end).
    pub context: u64,
    /// Binary file name.
    pub file: String,
    /// Instructions.
    pub instructions: usize,
    /// Bytes in instruction memory.
    pub instruction_bytes: u64,
}

/// Runs the command.
pub fn main(args: &Args, verbosity: Verbosity) -> Result<ExitCode> {
    if args.bucket == 0 {
        bail!("--bucket must be at least 1");
    }
    let accel = inputs::accelerator(&args.target.accel)?;
    let model = inputs::model(&args.target.model)?;
    let comp = inputs::compression(&args.target.compression)?;
    let contexts: Vec<u64> = match args.max_context {
        Some(max) => (1..=decode_bucket(max, args.bucket) / args.bucket)
            .map(|i| i * args.bucket)
            .collect(),
        None => vec![decode_bucket(args.context, args.bucket)],
    };
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("cannot create `{}`", args.output.display()))?;
    let mut listed = Vec::new();
    for context in contexts {
        let graph = build_graph(&model, &comp, Phase::Decode { context }, args.batch)?;
        let program = compile_decode_step(&accel, &comp, &model, &graph)?;
        let name = format!("decode-ctx{context}");
        let bin = args.output.join(format!("{name}.bin"));
        let bytes = encode_program(&program).context("cannot encode the program")?;
        std::fs::write(&bin, bytes).with_context(|| format!("cannot write `{}`", bin.display()))?;
        let text = args.output.join(format!("{name}.tasm"));
        std::fs::write(&text, disassemble(&program))
            .with_context(|| format!("cannot write `{}`", text.display()))?;
        if verbosity != Verbosity::Quiet {
            println!(
                "{}: {} instructions, {} bytes",
                bin.display(),
                program.instructions.len(),
                program.storage_bytes()
            );
        }
        listed.push(Compiled {
            context,
            file: format!("{name}.bin"),
            instructions: program.instructions.len(),
            instruction_bytes: program.storage_bytes(),
        });
    }
    let manifest = args.output.join("programs.json");
    std::fs::write(&manifest, serde_json::to_string_pretty(&listed)? + "\n")
        .with_context(|| format!("cannot write `{}`", manifest.display()))?;
    if let (true, Some(max)) = (args.exact, args.max_context) {
        use rayon::prelude::*;
        let exact: Vec<u64> = (1..=max)
            .into_par_iter()
            .map(|context| -> Result<u64> {
                let graph = build_graph(&model, &comp, Phase::Decode { context }, args.batch)?;
                Ok(compile_decode_step(&accel, &comp, &model, &graph)?.storage_bytes())
            })
            .collect::<Result<_>>()?;
        let bucketed = Storage {
            programs: listed.len() as u64,
            bytes: listed.iter().map(|c| c.instruction_bytes).sum(),
        };
        let exact = Storage {
            programs: max,
            bytes: exact.iter().sum(),
        };
        let report = StorageReport {
            bucket: args.bucket,
            max_context: max,
            exact_over_bucketed: exact.bytes as f64 / bucketed.bytes.max(1) as f64,
            bucketed,
            exact,
        };
        let path = args.output.join("storage.json");
        std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("cannot write `{}`", path.display()))?;
        if verbosity != Verbosity::Quiet {
            println!(
                "instruction storage: {} bucketed programs {} bytes, {} exact-length programs {} bytes ({:.1}×)",
                report.bucketed.programs,
                report.bucketed.bytes,
                report.exact.programs,
                report.exact.bytes,
                report.exact_over_bucketed
            );
        }
    }
    Ok(ExitCode::SUCCESS)
}
