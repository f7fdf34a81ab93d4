//! Cycle agreement: the emitted matrix engine under Icarus and Verilator, over the grid of shapes,
//! precisions, N:16 sparsity, zero points and group sizes, against the golden results and the
//! shared tile-loop cycles the simulator charges; the first shape also in rust-hdl. Both a plain
//! engine (`tiny`), one whose precisions pack two MACs per DSP (dense instructions pack, N:M
//! ones do not) and one of 2 × 3 PEs (a PE row's slot of three column groups).

use tessera_hdl::{EngineOptions, EngineParams, MatrixEngine};
use tessera_spec::accel::Accelerator;
use tessera_testbench::agreement::{grid, model_cycles, packed_tiny, run_grid, Plan};
use tessera_testbench::rusthdl::run_engine_script;
use tessera_testbench::tools::in_test;
use tessera_testbench::verilog_tb::Simulator;

const OPTIONS: EngineOptions = EngineOptions { bank_words: 256 };

fn engines() -> [Accelerator; 3] {
    [
        Accelerator::preset("tiny").unwrap(),
        packed_tiny(),
        tiny_2x3(),
    ]
}

/// `tiny` with three PEs per PE row.
fn tiny_2x3() -> Accelerator {
    let text = Accelerator::preset_text("tiny")
        .unwrap()
        .replace("cols = 2", "cols = 3")
        .replace("dsp = 64", "dsp = 96");
    Accelerator::from_toml_str(&text, "tiny-2x3.toml").unwrap()
}

#[test]
fn emitted_engine_agrees_with_golden_and_cycle_model_in_icarus_and_verilator() {
    for accel in engines() {
        let p = EngineParams::from_accel(&accel).unwrap();
        assert_eq!(grid(&accel).len(), 5 * 4 * 3);
        let root = std::env::temp_dir().join(format!(
            "tessera-engine-tb-{}-{}-{}",
            std::process::id(),
            p.pack,
            p.cols
        ));
        for sim in [Simulator::Icarus, Simulator::Verilator] {
            let dir = root.join(format!("{sim:?}"));
            if let Some(a) = in_test(run_grid(&accel, &p, OPTIONS, sim, &dir, false)) {
                assert_eq!(a.instructions, 60);
                assert!(
                    a.mismatches.is_empty(),
                    "pack {} {sim:?}: {:#?}",
                    p.pack,
                    a.mismatches
                );
            }
        }
        let _ = std::fs::remove_dir_all(&root);
    }
}

#[test]
fn rust_hdl_engine_agrees_on_the_smallest_shapes() {
    for accel in engines() {
        let p = EngineParams::from_accel(&accel).unwrap();
        let engine = MatrixEngine::new(&p, OPTIONS);
        let cases: Vec<_> = grid(&accel).into_iter().filter(|c| c.m == 1).collect();
        let plan = Plan::new(&engine, cases);
        let record = run_engine_script(engine, plan.script.clone());
        let a = plan.compare(&accel, "rust-hdl", &record);
        assert!(
            a.mismatches.is_empty(),
            "pack {}: {:#?}",
            p.pack,
            a.mismatches
        );
    }
}

#[test]
fn packing_halves_the_steps_of_dense_instructions_only() {
    // The grid's (3 × 5 × 40) int8 cases on the 4-lane chain of 2 × 2 PEs: dense packs two
    // columns per lane, ⌈5/2⌉ = 3 column groups, 2 slots of 2 PEs per output row, 6 slots on 2
    // PE rows in 3 passes of 3 blocks × 4 steps = 36 steps against 5 groups, 3 slots per row, 9
    // slots in 5 passes = 60 unpacked; N:2 runs 2 segments a step either way (3 passes × 3
    // blocks = 9 steps). Plus the 12-cycle pipeline.
    let plain = Accelerator::preset("tiny").unwrap();
    let packed = packed_tiny();
    let case = |accel: &Accelerator, nm: u32| {
        grid(accel)
            .into_iter()
            .find(|c| (c.m, c.n, c.k, c.nm, c.weight_bits) == (3, 5, 40, nm, 8))
            .unwrap()
    };
    assert_eq!(model_cycles(&plain, &case(&plain, 16)), 60 + 12);
    assert_eq!(model_cycles(&packed, &case(&packed, 16)), 36 + 12);
    assert_eq!(model_cycles(&plain, &case(&plain, 2)), 9 + 12);
    assert_eq!(model_cycles(&packed, &case(&packed, 2)), 9 + 12);
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
