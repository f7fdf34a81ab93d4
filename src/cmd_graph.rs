//! `tessera graph`: a model's operator graph with its accounting, as a table, JSON or DOT.

use crate::{inputs, Verbosity};
use anyhow::Result;
use serde::Serialize;
use std::collections::BTreeMap;
use std::process::ExitCode;
use tessera_compiler::frontend::build_graph;
use tessera_spec::compression::WeightBytes;
use tessera_spec::graph::{Graph, Phase};

/// Which pass to build.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub enum PhaseArg {
    /// The prompt pass.
    Prefill,
    /// One decode step.
    Decode,
}

/// Which model pass to build: shared by `graph` and `schedule`.
#[derive(Debug, clap::Args)]
pub struct PassArgs {
    /// Model preset name or Hugging Face config.json path.
    #[arg(long, default_value = "llama2-7b")]
    pub model: String,
    /// Compression preset name or TOML path (decides weight and activation bytes).
    #[arg(long, default_value = "w4a8-g128")]
    pub compression: String,
    /// Which pass.
    #[arg(long, value_enum, default_value_t = PhaseArg::Prefill)]
    pub phase: PhaseArg,
    /// Prompt length for prefill.
    #[arg(long, default_value_t = 512)]
    pub seq: u64,
    /// Tokens already in the KV cache for decode.
    #[arg(long, default_value_t = 512)]
    pub context: u64,
    /// Sequences per batch.
    #[arg(long, default_value_t = 1)]
    pub batch: u64,
}

impl PassArgs {
    /// Reads the model and compression and builds the pass's graph.
    pub fn build(&self) -> Result<Graph> {
        let model = inputs::model(&self.model)?;
        let compression = inputs::compression(&self.compression)?;
        let phase = match self.phase {
            PhaseArg::Prefill => Phase::Prefill { seq: self.seq },
            PhaseArg::Decode => Phase::Decode {
                context: self.context,
            },
        };
        Ok(build_graph(&model, &compression, phase, self.batch)?)
    }
}

/// Arguments of `tessera graph`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The pass.
    #[command(flatten)]
    pub pass: PassArgs,
    /// Print JSON.
    #[arg(long, conflicts_with = "dot")]
    pub json: bool,
    /// Print Graphviz DOT.
    #[arg(long)]
    pub dot: bool,
}

/// One operator row of the JSON output.
#[derive(Debug, Serialize)]
pub struct OpRow<'a> {
    /// Operator name.
    pub name: &'a str,
    /// Operator class.
    pub op: &'static str,
    /// Block index.
    pub layer: Option<u32>,
    /// Multiply-accumulates.
    pub macs: u64,
    /// Matrix FLOPs (2 per MAC).
    pub flops: u64,
    /// Vector-unit elements.
    pub vector_elements: u64,
    /// Weight bytes read.
    pub weight_bytes: u64,
    /// KV-cache bytes read.
    pub kv_read_bytes: u64,
    /// KV-cache bytes written.
    pub kv_write_bytes: u64,
    /// Activation bytes read.
    pub act_in_bytes: u64,
    /// Activation bytes written.
    pub act_out_bytes: u64,
}

/// The JSON output.
#[derive(Debug, Serialize)]
pub struct GraphJson<'a> {
    /// Model name.
    pub model: &'a str,
    /// The pass.
    pub phase: Phase,
    /// Sequences per batch.
    pub batch: u64,
    /// Tokens computed in this pass.
    pub tokens: u64,
    /// Parameters.
    pub params: u64,
    /// Stored weight bytes (values + sparse metadata + scales).
    pub weight_bytes: u64,
    /// Weight bytes by part.
    pub weight_bytes_breakdown: WeightBytes,
    /// Matrix FLOPs per computed token.
    pub flops_per_token: f64,
    /// Matrix FLOPs of the pass.
    pub flops: u64,
    /// Operators in the graph.
    pub op_count: usize,
    /// Per-operator rows, in topological order.
    pub ops: Vec<OpRow<'a>>,
}

/// The JSON view of a graph.
pub fn graph_json(g: &Graph) -> GraphJson<'_> {
    let total = g.total_cost();
    GraphJson {
        model: &g.model,
        phase: g.phase,
        batch: g.batch,
        tokens: g.tokens(),
        params: g.params(),
        weight_bytes: g.weight_bytes(),
        weight_bytes_breakdown: g.weight_bytes_by_part(),
        flops_per_token: total.matmul_flops() as f64 / g.tokens() as f64,
        flops: total.matmul_flops(),
        op_count: g.op_count(),
        ops: g
            .ops()
            .map(|op| OpRow {
                name: &op.name,
                op: op.kind.class_name(),
                layer: op.layer,
                macs: op.cost.macs,
                flops: op.cost.matmul_flops(),
                vector_elements: op.cost.vector.map_or(0, |(_, e)| e),
                weight_bytes: op.cost.weight_bytes,
                kv_read_bytes: op.cost.kv_read_bytes,
                kv_write_bytes: op.cost.kv_write_bytes,
                act_in_bytes: op.cost.act_in_bytes,
                act_out_bytes: op.cost.act_out_bytes,
            })
            .collect(),
    }
}

/// Runs the command.
pub fn main(args: &Args, verbosity: Verbosity) -> Result<ExitCode> {
    let graph = args.pass.build()?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&graph_json(&graph))?);
    } else if args.dot {
        print!("{}", graph.to_dot());
    } else if verbosity != Verbosity::Quiet {
        print!("{}", render_table(&graph, verbosity == Verbosity::Verbose));
    }
    Ok(ExitCode::SUCCESS)
}

/// Per-class totals (and with `per_op`, every operator).
pub fn render_table(g: &Graph, per_op: bool) -> String {
    use std::fmt::Write as _;
    let j = graph_json(g);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "{} {} (batch {}, {} tokens): {} ops, {:.4} B params, {:.4} GB weights, {:.4} GFLOP/token",
        g.model,
        g.phase.name(),
        g.batch,
        j.tokens,
        j.op_count,
        j.params as f64 / 1e9,
        j.weight_bytes as f64 / 1e9,
        j.flops_per_token / 1e9
    );
    let mut by_class: BTreeMap<&str, (u64, u64, u64, u64)> = BTreeMap::new();
    for r in &j.ops {
        let e = by_class.entry(r.op).or_default();
        e.0 += 1;
        e.1 += r.flops;
        e.2 += r.weight_bytes;
        e.3 += r.kv_read_bytes + r.kv_write_bytes;
    }
    let _ = writeln!(
        s,
        "\n{:<20}{:>8}{:>16}{:>16}{:>16}",
        "class", "ops", "GFLOP", "weight MB", "KV MB"
    );
    for (class, (n, flops, wb, kv)) in by_class {
        let _ = writeln!(
            s,
            "{:<20}{:>8}{:>16.3}{:>16.3}{:>16.3}",
            class,
            n,
            flops as f64 / 1e9,
            wb as f64 / 1e6,
            kv as f64 / 1e6
        );
    }
    if per_op {
        let _ = writeln!(
            s,
            "\n{:<36}{:<18}{:>16}{:>14}",
            "op", "class", "MACs", "weight B"
        );
        for r in &j.ops {
            let _ = writeln!(
                s,
                "{:<36}{:<18}{:>16}{:>14}",
                r.name, r.op, r.macs, r.weight_bytes
            );
        }
    }
    s
}
