//! Compiled decode steps and prefills are free of buffer hazards in the simulator: no instruction
//! writes bytes of a buffer that another instruction in flight reads or writes (dense,
//! grouped-query and MoE models, where experts stream one after another through the same buffer
//! halves; batched decode steps, whose sequences' attentions stream through the same halves;
//! prefill products tiled by rows, attention by query blocks).

use tessera_compiler::frontend::build_graph;
use tessera_compiler::program::compile_pass;
use tessera_sim::hazard::buffer_hazards;
use tessera_sim::simulate;
use tessera_spec::accel::Accelerator;
use tessera_spec::compression;
use tessera_spec::graph::Phase;
use tessera_spec::model;

#[test]
fn compiled_passes_have_no_buffer_hazards() {
    let decode = Phase::Decode { context: 48 };
    for (name, accel, phase, batch) in [
        ("tiny-llama", "u280", decode, 1),
        ("tiny-llama", "vhk158", decode, 1),
        ("mixtral-8x7b", "u280", decode, 1),
        ("tiny-llama", "u280", decode, 3),
        ("mixtral-8x7b", "vhk158", decode, 2),
        ("tiny-llama", "u280", Phase::Prefill { seq: 200 }, 1),
        ("llama2-7b", "u280", Phase::Prefill { seq: 512 }, 1),
        ("mixtral-8x7b", "vhk158", Phase::Prefill { seq: 128 }, 1),
    ] {
        let m = model::preset(name).unwrap();
        let c = compression::preset("w4a8-g128").unwrap();
        let a = Accelerator::preset(accel).unwrap();
        let g = build_graph(&m, &c, phase, batch).unwrap();
        let p = compile_pass(&a, &c, &m, &g, 0).unwrap();
        let r = simulate(&a, &p).unwrap();
        let h = buffer_hazards(&p, &r);
        assert!(
            h.is_empty(),
            "{name} on {accel} ({phase:?}, batch {batch}): {} hazards, first {:?}",
            h.len(),
            h[0]
        );
    }
}

#[test]
fn prefill_query_blocks_fit_the_results_buffer() {
    // A u280 with a 256 KiB results buffer: LLaMA2-7B's blocks of a 512-token prompt must stay
    // below 8 queries (32 heads × 512 keys of fp16 scores each), fewer than the engine's 16 PE
    // rows, for the program to pass the checks and simulate.
    let text = include_str!("../examples/accelerators/u280.toml");
    let small = text.replace("bytes = 2097152   # 2 MiB in BRAM", "bytes = 262144");
    assert_ne!(small, text);
    let a = Accelerator::from_toml_str(&small, "u280-small-results.toml").unwrap();
    let m = model::preset("llama2-7b").unwrap();
    let c = compression::preset("w4a8-g128").unwrap();
    let g = build_graph(&m, &c, Phase::Prefill { seq: 512 }, 1).unwrap();
    let p = compile_pass(&a, &c, &m, &g, 0).unwrap();
    let r = simulate(&a, &p).unwrap();
    assert!(buffer_hazards(&p, &r).is_empty());
}
