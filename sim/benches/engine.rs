//! Simulation speed on one LLaMA2-7B decoder layer's decode step
//! (`examples/programs/llama2-7b-layer-decode.tasm`: 333 instructions streaming 101 MB of int4
//! weights over 32 HBM2 pseudo-channels), with DRAM in the default fast mode (whole rows in
//! closed form) and, for comparison, burst by burst. Run with
//! `cargo bench -p tessera-sim --bench engine`; it prints instructions/s and simulated bursts/s.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tessera_sim::{simulate_with, DramMode, SimOptions};
use tessera_spec::accel::Accelerator;
use tessera_spec::isa::assemble;

fn layer(c: &mut Criterion) {
    let accel = Accelerator::preset("u280").expect("preset");
    let program = assemble(include_str!(
        "../../examples/programs/llama2-7b-layer-decode.tasm"
    ))
    .expect("example assembles");
    let fast = SimOptions {
        dram: DramMode::Fast,
    };
    let reference = SimOptions {
        dram: DramMode::Reference,
    };
    let report = simulate_with(&accel, &program, fast).expect("example runs");
    let bursts = report.dram_bytes / 32;
    let mut g = c.benchmark_group("llama2-7b-layer-decode");
    g.sample_size(10);
    g.throughput(Throughput::Elements(report.instructions));
    g.bench_function("instructions", |b| {
        b.iter(|| simulate_with(&accel, &program, fast))
    });
    g.throughput(Throughput::Elements(bursts));
    g.bench_function("dram_bursts", |b| {
        b.iter(|| simulate_with(&accel, &program, fast))
    });
    g.bench_function("dram_bursts_reference", |b| {
        b.iter(|| simulate_with(&accel, &program, reference))
    });
    g.finish();
}

criterion_group!(benches, layer);
criterion_main!(benches);
