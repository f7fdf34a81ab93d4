//! `tessera compile`: compiles a model's decode steps (one program per context-length bucket)
//! and prefills (one per prompt-length bucket) to ISA programs, and writes each as a binary
//! program and its disassembly.

use crate::{inputs, Verbosity};
use anyhow::{bail, Context, Result};
use serde::Serialize;
use std::path::PathBuf;
use std::process::ExitCode;
use tessera_compiler::frontend::build_graph;
use tessera_compiler::program::{bucket_length, compile_pass};
use tessera_spec::graph::Phase;
use tessera_spec::isa::{disassemble, encode_program};

/// Arguments of `tessera compile`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// Model, accelerator and compression.
    #[command(flatten)]
    pub target: inputs::TargetArgs,
    /// Compile the decode bucket holding this context length.
    #[arg(long, default_value_t = 512, conflicts_with = "max_context")]
    pub context: u64,
    /// Compile every decode bucket up to this context length instead.
    #[arg(long)]
    pub max_context: Option<u64>,
    /// Decode contexts round up to a multiple of this.
    #[arg(long, default_value_t = 16)]
    pub bucket: u64,
    /// Also compile the prefill bucket holding a prompt of this many tokens.
    #[arg(long, conflicts_with = "max_prefill")]
    pub prefill: Option<u64>,
    /// Also compile every prefill bucket up to this prompt length.
    #[arg(long)]
    pub max_prefill: Option<u64>,
    /// Prompts round up to a multiple of this.
    #[arg(long, default_value_t = 128)]
    pub prefill_bucket: u64,
    /// Sequences per batch.
    #[arg(long, default_value_t = 1)]
    pub batch: u64,
    /// Output directory.
    #[arg(short, long)]
    pub output: PathBuf,
    /// With `--max-context` (and `--max-prefill`): also compile every exact length up to it and
    /// write `storage.json`, the instruction storage of the bucketed set against one program per
    /// length.
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

/// One phase's bucketed program set against compiling every exact length.
#[derive(Debug, Serialize)]
pub struct StorageReport {
    /// Lengths round up to a multiple of this.
    pub bucket: u64,
    /// Longest length covered.
    pub max_length: u64,
    /// One program per bucket.
    pub bucketed: Storage,
    /// One program per length 1..=max_length.
    pub exact: Storage,
    /// `exact.bytes / bucketed.bytes`.
    pub exact_over_bucketed: f64,
}

/// `storage.json`: per phase compiled.
#[derive(Debug, Serialize)]
pub struct StorageByPhase {
    /// Decode steps by context length.
    pub decode: StorageReport,
    /// Prefills by prompt length (with `--max-prefill`).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub prefill: Option<StorageReport>,
}

/// One compiled program, as listed in `programs.json`.
#[derive(Debug, Serialize)]
pub struct Compiled {
    /// `decode` or `prefill`.
    pub phase: &'static str,
    /// Length the program is compiled for (the bucket's upper end): a decode step's context, a
    /// prefill's prompt.
    pub tokens: u64,
    /// Binary file name.
    pub file: String,
    /// Instructions.
    pub instructions: usize,
    /// Bytes in instruction memory.
    pub instruction_bytes: u64,
}

/// Every multiple of `bucket` up to the bucket holding `max`.
fn buckets_up_to(max: u64, bucket: u64) -> Vec<u64> {
    (1..=bucket_length(max, bucket) / bucket)
        .map(|i| i * bucket)
        .collect()
}

/// The graph of `phase` at `tokens` (context or prompt).
fn phase_of(phase: &str, tokens: u64) -> Phase {
    if phase == "prefill" {
        Phase::Prefill { seq: tokens }
    } else {
        Phase::Decode { context: tokens }
    }
}

/// Runs the command.
pub fn main(args: &Args, verbosity: Verbosity) -> Result<ExitCode> {
    if args.bucket == 0 {
        bail!("--bucket must be at least 1");
    }
    if args.prefill_bucket == 0 {
        bail!("--prefill-bucket must be at least 1");
    }
    let accel = inputs::accelerator(&args.target.accel)?;
    let model = inputs::model(&args.target.model)?;
    let comp = inputs::compression(&args.target.compression)?;
    let mut wanted: Vec<(&'static str, u64)> = match args.max_context {
        Some(max) => buckets_up_to(max, args.bucket),
        None => vec![bucket_length(args.context, args.bucket)],
    }
    .into_iter()
    .map(|c| ("decode", c))
    .collect();
    let prefills = match (args.max_prefill, args.prefill) {
        (Some(max), _) => buckets_up_to(max, args.prefill_bucket),
        (None, Some(p)) => vec![bucket_length(p, args.prefill_bucket)],
        (None, None) => Vec::new(),
    };
    wanted.extend(prefills.into_iter().map(|p| ("prefill", p)));
    // Every program places the KV cache alike: sized for the longest pass compiled.
    let kv_tokens = wanted
        .iter()
        .map(|&(phase, tokens)| {
            if phase == "prefill" {
                tokens
            } else {
                tokens + 1
            }
        })
        .max()
        .unwrap_or(1);
    let compile = |phase: &str, tokens: u64| -> Result<tessera_spec::isa::Program> {
        let graph = build_graph(&model, &comp, phase_of(phase, tokens), args.batch)?;
        Ok(compile_pass(&accel, &comp, &model, &graph, kv_tokens)?)
    };
    std::fs::create_dir_all(&args.output)
        .with_context(|| format!("cannot create `{}`", args.output.display()))?;
    // Buckets compile (and their files are written) in parallel; the listing keeps their order.
    let one = |&(phase, tokens): &(&'static str, u64)| -> Result<Compiled> {
        let program = compile(phase, tokens)?;
        let name = match phase {
            "prefill" => format!("prefill-seq{tokens}"),
            _ => format!("decode-ctx{tokens}"),
        };
        let bin = args.output.join(format!("{name}.bin"));
        let bytes = encode_program(&program).context("cannot encode the program")?;
        std::fs::write(&bin, bytes).with_context(|| format!("cannot write `{}`", bin.display()))?;
        let text = args.output.join(format!("{name}.tasm"));
        std::fs::write(&text, disassemble(&program))
            .with_context(|| format!("cannot write `{}`", text.display()))?;
        Ok(Compiled {
            phase,
            tokens,
            file: format!("{name}.bin"),
            instructions: program.instructions.len(),
            instruction_bytes: program.storage_bytes(),
        })
    };
    let listed: Vec<Compiled> = {
        use rayon::prelude::*;
        // The first failing bucket in order is the one reported, whatever the thread count.
        let results: Vec<Result<Compiled>> = wanted.par_iter().map(one).collect();
        results.into_iter().collect::<Result<_>>()?
    };
    if verbosity != Verbosity::Quiet {
        for c in &listed {
            println!(
                "{}: {} instructions, {} bytes",
                args.output.join(&c.file).display(),
                c.instructions,
                c.instruction_bytes
            );
        }
    }
    let manifest = args.output.join("programs.json");
    std::fs::write(&manifest, serde_json::to_string_pretty(&listed)? + "\n")
        .with_context(|| format!("cannot write `{}`", manifest.display()))?;
    if let (true, Some(max)) = (args.exact, args.max_context) {
        let storage = |phase: &'static str, max: u64, bucket: u64| -> Result<StorageReport> {
            use rayon::prelude::*;
            let exact: Vec<u64> = (1..=max)
                .into_par_iter()
                .map(|tokens| Ok(compile(phase, tokens)?.storage_bytes()))
                .collect::<Result<_>>()?;
            let mine = listed.iter().filter(|c| c.phase == phase);
            let bucketed = Storage {
                programs: mine.clone().count() as u64,
                bytes: mine.map(|c| c.instruction_bytes).sum(),
            };
            let exact = Storage {
                programs: max,
                bytes: exact.iter().sum(),
            };
            Ok(StorageReport {
                bucket,
                max_length: max,
                exact_over_bucketed: exact.bytes as f64 / bucketed.bytes.max(1) as f64,
                bucketed,
                exact,
            })
        };
        let report = StorageByPhase {
            decode: storage("decode", max, args.bucket)?,
            prefill: args
                .max_prefill
                .map(|max| storage("prefill", max, args.prefill_bucket))
                .transpose()?,
        };
        let path = args.output.join("storage.json");
        std::fs::write(&path, serde_json::to_string_pretty(&report)? + "\n")
            .with_context(|| format!("cannot write `{}`", path.display()))?;
        if verbosity != Verbosity::Quiet {
            for (phase, r) in [
                ("decode", Some(&report.decode)),
                ("prefill", report.prefill.as_ref()),
            ] {
                let Some(r) = r else { continue };
                println!(
                    "{phase} instruction storage: {} bucketed programs {} bytes, {} exact-length programs {} bytes ({:.1}×)",
                    r.bucketed.programs,
                    r.bucketed.bytes,
                    r.exact.programs,
                    r.exact.bytes,
                    r.exact_over_bucketed
                );
            }
        }
    }
    Ok(ExitCode::SUCCESS)
}
