//! Compile speed: every decode bucket (16-token buckets) of LLaMA2-7B up to a 2,048 context on
//! the u280 preset, graph building included. Run with
//! `cargo bench -p tessera-compiler --bench compile`.

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use tessera_compiler::frontend::build_graph;
use tessera_compiler::program::compile_pass;
use tessera_spec::accel::Accelerator;
use tessera_spec::compression;
use tessera_spec::graph::Phase;
use tessera_spec::model;

fn buckets(c: &mut Criterion) {
    let accel = Accelerator::preset("u280").expect("preset");
    let m = model::preset("llama2-7b").expect("preset");
    let comp = compression::preset("w4a8-g128").expect("preset");
    let contexts: Vec<u64> = (1..=2048 / 16).map(|i| i * 16).collect();
    let mut g = c.benchmark_group("llama2-7b-decode-buckets-to-2048");
    g.sample_size(10);
    g.throughput(Throughput::Elements(contexts.len() as u64));
    g.bench_function("compile", |b| {
        b.iter(|| {
            for &context in &contexts {
                let graph = build_graph(&m, &comp, Phase::Decode { context }, 1).expect("graph");
                compile_pass(&accel, &comp, &m, &graph, 0).expect("compiles");
            }
        })
    });
    g.finish();
}

criterion_group!(benches, buckets);
criterion_main!(benches);
