//! Lowered linear layers run in the simulator, stream every weight byte once, and land close to
//! the analytical model's estimate of the same operator.

use tessera_compiler::frontend::build_graph;
use tessera_compiler::lower::lower_linear;
use tessera_sim::simulate;
use tessera_spec::accel::Accelerator;
use tessera_spec::analytical::AccelModel;
use tessera_spec::compression::{self, OpClass};
use tessera_spec::graph::{OpKind, Phase};
use tessera_spec::model;

#[test]
fn decode_projections_match_the_analytical_model() {
    let accel = Accelerator::preset("u280").unwrap();
    let m = model::preset("llama2-7b").unwrap();
    for comp_name in ["w4a8-g128", "w8a8", "w4a8-nm8"] {
        let comp = compression::preset(comp_name).unwrap();
        let graph = build_graph(&m, &comp, Phase::Decode { context: 128 }, 1).unwrap();
        let am = AccelModel::new(&accel, &comp).unwrap();
        for name in [
            "layer0.attn.q_proj",
            "layer0.ffn.up_proj",
            "layer0.ffn.down_proj",
        ] {
            let op = graph.ops().find(|o| o.name == name).unwrap();
            let OpKind::Linear {
                class,
                m: rows,
                k,
                n,
                ..
            } = op.kind
            else {
                panic!("{name} is a linear")
            };
            let program = lower_linear(&accel, &comp, name, class, (rows, k, n)).unwrap();
            let report = simulate(&accel, &program).unwrap_or_else(|e| panic!("{name}: {e}"));
            // Every weight byte (values, indices, scales) streams exactly once.
            let weight_bytes = op.cost.weight_bytes;
            assert_eq!(report.dram_bytes, weight_bytes, "{comp_name} {name}");
            let estimate = am.op(op);
            let ratio = report.cycles as f64 / estimate.cycles.0 as f64;
            // The roofline overlaps compute and streaming perfectly. The simulation adds the last
            // wave's compute (no load overlaps it), a PE pipeline fill per chunk and DRAM latency:
            // measured 1.16-1.38 here. It can never beat the roofline beyond rounding.
            assert!(
                (0.99..=1.40).contains(&ratio),
                "{comp_name} {name}: simulated {} vs analytical {} cycles ({ratio:.3})",
                report.cycles,
                estimate.cycles.0
            );
        }
    }
}

#[test]
fn batched_decode_uses_the_matrix_unit() {
    let accel = Accelerator::preset("u280").unwrap();
    let comp = compression::preset("w4a8-g128").unwrap();
    let p = lower_linear(&accel, &comp, "fc", OpClass::Ffn, (8, 4096, 4096)).unwrap();
    let r = simulate(&accel, &p).unwrap();
    assert!(r.units["mm"].instructions > 0 && r.units["mv"].instructions == 0);
    let e = lower_linear(&accel, &comp, "fc", OpClass::Ffn, (64, 4096, 4096)).unwrap_err();
    assert!(e.to_string().contains("matrix.rows"), "{e}");
}
