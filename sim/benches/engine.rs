//! Simulation speed on compiled LLaMA2-7B programs (u280, `w4a8-g128`): one decode step at a
//! 512-token context (all 32 decoder layers) and a 512-token prefill, with DRAM in the default
//! fast mode; and, for the DRAM model alone, one hand-written decoder layer
//! (`examples/programs/llama2-7b-layer-decode.tasm`: 333 instructions streaming 101 MB of int4
//! weights over 32 HBM2 pseudo-channels) in fast mode and burst by burst. Run with
//! `cargo bench -p tessera-sim --bench engine`; it prints instructions/s and simulated bursts/s.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tessera_compiler::frontend::build_graph;
use tessera_compiler::program::compile_pass;
use tessera_sim::{simulate_with, DramMode, SimOptions};
use tessera_spec::accel::Accelerator;
use tessera_spec::graph::Phase;
use tessera_spec::isa::{assemble, Program};
use tessera_spec::{compression, model};

const FAST: SimOptions = SimOptions {
    dram: DramMode::Fast,
    fetch_as_bytes: None,
};

/// LLaMA2-7B's `phase` compiled for the u280.
fn compiled(accel: &Accelerator, phase: Phase) -> Program {
    let m = model::preset("llama2-7b").expect("preset");
    let comp = compression::preset("w4a8-g128").expect("preset");
    let graph = build_graph(&m, &comp, phase, 1).expect("graph");
    compile_pass(accel, &comp, &m, &graph, 0).expect("compiles")
}

fn compiled_passes(c: &mut Criterion) {
    let accel = Accelerator::preset("u280").expect("preset");
    let mut g = c.benchmark_group("llama2-7b-compiled");
    g.sample_size(10);
    for (name, phase) in [
        ("decode_step_ctx512", Phase::Decode { context: 512 }),
        ("prefill_512", Phase::Prefill { seq: 512 }),
    ] {
        let program = compiled(&accel, phase);
        let report = simulate_with(&accel, &program, FAST).expect("compiled programs run");
        // Events per second are these figures scaled by the ratio printed here.
        println!(
            "{name}: {} instructions, {} engine events, {} DRAM bursts",
            report.instructions,
            report.events,
            report
                .channels
                .iter()
                .map(|c| c.row_hits + c.row_misses + c.row_conflicts)
                .sum::<u64>()
        );
        g.throughput(Throughput::Elements(program.instructions.len() as u64));
        g.bench_function(name, |b| b.iter(|| simulate_with(&accel, &program, FAST)));
    }
    g.finish();
}

fn dram_layer(c: &mut Criterion) {
    let accel = Accelerator::preset("u280").expect("preset");
    let program = assemble(include_str!(
        "../../examples/programs/llama2-7b-layer-decode.tasm"
    ))
    .expect("example assembles");
    let reference = SimOptions {
        dram: DramMode::Reference,
        ..FAST
    };
    let report = simulate_with(&accel, &program, FAST).expect("example runs");
    let bursts = report.dram_bytes / 32;
    let mut g = c.benchmark_group("llama2-7b-layer-decode");
    g.sample_size(10);
    g.throughput(Throughput::Elements(bursts));
    g.bench_function("dram_bursts", |b| {
        b.iter(|| simulate_with(&accel, &program, FAST))
    });
    g.bench_function("dram_bursts_reference", |b| {
        b.iter(|| simulate_with(&accel, &program, reference))
    });
    g.finish();
}

criterion_group!(benches, compiled_passes, dram_layer);
criterion_main!(benches);
