//! Compiled decode steps are free of buffer hazards in the simulator: no instruction writes bytes
//! of a buffer that another instruction in flight reads or writes (dense, grouped-query and MoE
//! models, where experts stream one after another through the same buffer halves).

use tessera_compiler::frontend::build_graph;
use tessera_compiler::program::compile_decode_step;
use tessera_sim::hazard::buffer_hazards;
use tessera_sim::simulate;
use tessera_spec::accel::Accelerator;
use tessera_spec::compression;
use tessera_spec::graph::Phase;
use tessera_spec::model;

#[test]
fn compiled_decode_steps_have_no_buffer_hazards() {
    for (name, accel) in [
        ("tiny-llama", "u280"),
        ("tiny-llama", "vhk158"),
        ("mixtral-8x7b", "u280"),
    ] {
        let m = model::preset(name).unwrap();
        let c = compression::preset("w4a8-g128").unwrap();
        let a = Accelerator::preset(accel).unwrap();
        let g = build_graph(&m, &c, Phase::Decode { context: 48 }, 1).unwrap();
        let p = compile_decode_step(&a, &c, &m, &g).unwrap();
        let r = simulate(&a, &p).unwrap();
        let h = buffer_hazards(&p, &r);
        assert!(
            h.is_empty(),
            "{name} on {accel}: {} hazards, first {:?}",
            h.len(),
            h[0]
        );
    }
}
