//! Cycle agreement: the emitted matrix engine under Icarus and Verilator, over the grid of shapes,
//! precisions, N:16 sparsity, zero points and group sizes, against the golden results and the
//! shared tile-loop cycles the simulator charges; the first shape also in rust-hdl.

use tessera_hdl::{EngineOptions, EngineParams, MatrixEngine};
use tessera_spec::accel::Accelerator;
use tessera_testbench::agreement::{grid, run_grid, Plan};
use tessera_testbench::rusthdl::run_engine_script;
use tessera_testbench::tools::in_test;
use tessera_testbench::verilog_tb::Simulator;

const OPTIONS: EngineOptions = EngineOptions { bank_words: 256 };

#[test]
fn emitted_engine_agrees_with_golden_and_cycle_model_in_icarus_and_verilator() {
    let accel = Accelerator::preset("tiny").unwrap();
    let p = EngineParams::from_accel(&accel).unwrap();
    assert_eq!(grid(&accel).len(), 5 * 4 * 3);
    let root = std::env::temp_dir().join(format!("tessera-engine-tb-{}", std::process::id()));
    for sim in [Simulator::Icarus, Simulator::Verilator] {
        let dir = root.join(format!("{sim:?}"));
        if let Some(a) = in_test(run_grid(&accel, &p, OPTIONS, sim, &dir, false)) {
            assert_eq!(a.instructions, 60);
            assert!(a.mismatches.is_empty(), "{sim:?}: {:#?}", a.mismatches);
        }
    }
    let _ = std::fs::remove_dir_all(&root);
}

#[test]
fn rust_hdl_engine_agrees_on_the_smallest_shapes() {
    let accel = Accelerator::preset("tiny").unwrap();
    let p = EngineParams::from_accel(&accel).unwrap();
    let engine = MatrixEngine::new(&p, OPTIONS);
    let cases: Vec<_> = grid(&accel).into_iter().filter(|c| c.m == 1).collect();
    let plan = Plan::new(&engine, cases);
    let record = run_engine_script(engine, plan.script.clone());
    let a = plan.compare(&accel, "rust-hdl", &record);
    assert!(a.mismatches.is_empty(), "{:#?}", a.mismatches);
}

#[test]
fn a_wrong_cycle_model_is_caught() {
    // The same run compared with a spec whose pipeline is one stage deeper than the RTL's.
    let accel = Accelerator::preset("tiny").unwrap();
    let p = EngineParams::from_accel(&accel).unwrap();
    let text = Accelerator::preset_text("tiny")
        .unwrap()
        .replace("pipeline_depth = 12", "pipeline_depth = 13");
    let deeper = Accelerator::from_toml_str(&text, "tiny-deeper.toml").unwrap();
    let engine = MatrixEngine::new(&p, OPTIONS);
    let cases: Vec<_> = grid(&accel).into_iter().take(2).collect();
    let plan = Plan::new(&engine, cases);
    let record = run_engine_script(engine, plan.script.clone());
    assert!(plan
        .compare(&accel, "rust-hdl", &record)
        .mismatches
        .is_empty());
    assert_eq!(
        plan.compare(&deeper, "rust-hdl", &record).mismatches.len(),
        2
    );
}
