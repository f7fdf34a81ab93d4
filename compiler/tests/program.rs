//! Whole decode steps compile to programs that the simulator accepts, move exactly the graph's
//! off-chip bytes and never beat the analytical model.

use tessera_compiler::frontend::build_graph;
use tessera_compiler::program::compile_decode_step;
use tessera_sim::simulate;
use tessera_spec::accel::Accelerator;
use tessera_spec::analytical::AccelModel;
use tessera_spec::compression;
use tessera_spec::graph::Phase;
use tessera_spec::model;

fn step(model_name: &str, comp_name: &str, accel_name: &str, context: u64) -> (u64, u64, f64, f64) {
    let accel = Accelerator::preset(accel_name).unwrap();
    let m = model::preset(model_name).unwrap();
    let comp = compression::preset(comp_name).unwrap();
    let graph = build_graph(&m, &comp, Phase::Decode { context }, 1).unwrap();
    let program = compile_decode_step(&accel, &comp, &m, &graph).unwrap();
    let report = simulate(&accel, &program).unwrap_or_else(|e| panic!("{model_name}: {e}"));
    let compulsory: u64 = graph.ops().map(|o| o.cost.compulsory_bytes()).sum();
    let estimate = AccelModel::new(&accel, &comp).unwrap().pass(&graph);
    (
        report.dram_bytes,
        compulsory,
        report.seconds,
        estimate.seconds,
    )
}

#[test]
fn buckets_round_contexts_up() {
    use tessera_compiler::program::decode_bucket;
    assert_eq!(
        [0, 1, 16, 17, 500].map(|c| decode_bucket(c, 16)),
        [16, 16, 16, 32, 512]
    );
}

#[test]
fn unsupported_passes_name_the_key() {
    let accel = Accelerator::preset("u280").unwrap();
    let m = model::preset("tiny-llama").unwrap();
    let comp = compression::preset("w4a8-g128").unwrap();
    let graph = build_graph(&m, &comp, Phase::Prefill { seq: 16 }, 1).unwrap();
    let e = compile_decode_step(&accel, &comp, &m, &graph).unwrap_err();
    assert!(e.to_string().contains("scenario.prefill"), "{e}");
}

#[test]
fn decode_steps_move_the_graphs_bytes() {
    for (model_name, context) in [("tiny-llama", 100), ("llama2-7b", 512), ("gpt2", 64)] {
        let (moved, compulsory, simulated, roofline) =
            step(model_name, "w4a8-g128", "u280", context);
        assert_eq!(moved, compulsory, "{model_name}");
        let ratio = simulated / roofline;
        assert!(ratio >= 0.99, "{model_name}: {ratio}");
        // A large model streams near the roofline (measured 1.13); small ones pay fixed DRAM and
        // pipeline latencies the roofline ignores.
        if model_name == "llama2-7b" {
            assert!(ratio <= 1.25, "{model_name}: {ratio}");
        }
    }
}

#[test]
fn a_wave_loads_only_after_the_previous_wave_is_counted_in() {
    // Tokens count per unit pair, so a wave's loads must not run while the system unit is still
    // counting the previous wave's: the first load after a compute on the same buffer waits on
    // the system unit (whose last counting nop releases it).
    use std::collections::BTreeMap;
    use tessera_spec::isa::{Instruction, Unit};
    for (name, accel) in [("tiny-llama", "u280"), ("mixtral-8x7b", "u280")] {
        let m = model::preset(name).unwrap();
        let c = compression::preset("w4a8-g128").unwrap();
        let a = Accelerator::preset(accel).unwrap();
        let g = build_graph(&m, &c, Phase::Decode { context: 48 }, 1).unwrap();
        let p = compile_decode_step(&a, &c, &m, &g).unwrap();
        let mut computed_since_load: BTreeMap<u8, bool> = BTreeMap::new();
        let mut checked = 0;
        for (i, ins) in p.instructions.iter().enumerate() {
            match ins {
                Instruction::Matvec(op) | Instruction::Matmul(op) => {
                    computed_since_load.insert(op.b.buffer, true);
                }
                Instruction::Load(d) => {
                    let after_compute =
                        computed_since_load.insert(d.buf.buffer, false) == Some(true);
                    if after_compute {
                        assert!(
                            d.sync.wait.units().any(|u| u == Unit::System),
                            "{name}: load {i} overtakes the previous wave's count"
                        );
                        checked += 1;
                    }
                }
                _ => {}
            }
        }
        assert!(checked > 10, "{name}: {checked} wave boundaries");
    }
}
