//! Cycle agreement: the emitted matrix engine under Icarus and Verilator, over a grid of shapes,
//! precisions, N:16 sparsity and group sizes, against the golden results and the shared tile-loop
//! model the simulator charges (`tessera_spec::analytical::matrix_tiling`).

use tessera_hdl::{EngineOptions, EngineParams, MatrixEngine};
use tessera_spec::accel::{Accelerator, WeightType};
use tessera_spec::analytical::matrix_tiling;
use tessera_testbench::matrix::{
    assemble, matrix_data, matrix_golden, script_case, Geometry, MatrixCase,
};
use tessera_testbench::rusthdl::run_engine_script;
use tessera_testbench::tools::in_test;
use tessera_testbench::verilog_tb::{run_engine_verilog, Simulator};

fn grid() -> Vec<MatrixCase> {
    let shapes = [(1, 1, 16), (1, 7, 48), (3, 5, 40), (2, 9, 64), (5, 3, 32)];
    let mut cases = Vec::new();
    for (i, &(m, n, k)) in shapes.iter().enumerate() {
        for nm in [2, 4, 8, 16] {
            for (bits, shift) in [(8, false), (4, true), (2, true)] {
                let group = if (i + nm as usize) % 2 == 0 { 0 } else { 32 };
                let asymmetric = bits < 8 && (nm as usize + i) % 3 == 0;
                cases.push(MatrixCase {
                    m,
                    n,
                    k,
                    nm,
                    group,
                    weight_bits: bits,
                    shift_add: shift,
                    asymmetric,
                });
            }
        }
    }
    cases
}

#[test]
fn emitted_engine_agrees_with_golden_and_cycle_model_in_icarus_and_verilator() {
    let accel = Accelerator::preset("tiny").unwrap();
    let p = EngineParams::from_accel(&accel).unwrap();
    let options = EngineOptions { bank_words: 256 };
    let probe = MatrixEngine::new(&p, options);
    let g = Geometry {
        pes: probe.pes(),
        lanes: probe.lanes(),
        segments: probe.segments(),
    };
    let cases = grid();
    let mut script = Vec::new();
    let mut maps = Vec::new();
    let mut want = Vec::new();
    let mut want_cycles = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        assert_eq!(
            EngineParams::uses_shift_add(&accel, weight_type(case.weight_bits)),
            case.shift_add
        );
        let d = matrix_data(case, 1000 + i as u64);
        maps.push(script_case(g, case, &d, &mut script));
        want.push(matrix_golden(case, &d));
        let t = matrix_tiling(
            accel.matrix(),
            1.0,
            case.m as u64,
            case.n as u64,
            case.k as u64,
            case.nm,
        );
        want_cycles.push(t.steps + accel.matrix().pipeline_depth());
    }
    let check = |label: &str, record: &tessera_testbench::matrix::Record| {
        assert_eq!(
            record.cycles, want_cycles,
            "{label}: cycles per instruction"
        );
        let mut reads = record.reads.as_slice();
        for (i, case) in cases.iter().enumerate() {
            let (mine, rest) = reads.split_at(maps[i].len());
            reads = rest;
            assert_eq!(assemble(case, mine, &maps[i]), want[i], "{label}: {case:?}");
        }
    };
    // rust-hdl on the first shape's cases (its simulator is slow), the Verilog tools on all.
    let first: usize = cases.iter().take_while(|c| c.m == 1 && c.n == 1).count();
    let prefix: usize = maps[..first].iter().map(|m| m.len()).sum::<usize>();
    let rust = run_engine_script(
        MatrixEngine::new(&p, options),
        script[..script_len(&script, first)].to_vec(),
    );
    assert_eq!(rust.cycles, want_cycles[..first]);
    assert_eq!(rust.reads.len(), prefix);
    let root = std::env::temp_dir().join(format!("tessera-engine-tb-{}", std::process::id()));
    for sim in [Simulator::Icarus, Simulator::Verilator] {
        let dir = root.join(format!("{sim:?}"));
        let mut engine = MatrixEngine::new(&p, options);
        if let Some(record) = in_test(run_engine_verilog(&mut engine, &script, sim, &dir, false)) {
            check(&format!("{sim:?}"), &record);
        }
    }
    let _ = std::fs::remove_dir_all(&root);
}

/// Commands up to the end of the first `cases` cases (each ends with its reads).
fn script_len(script: &[tessera_testbench::matrix::Command], cases: usize) -> usize {
    use tessera_testbench::matrix::Command;
    let mut runs = 0;
    for (i, c) in script.iter().enumerate() {
        if matches!(c, Command::Run(_)) {
            runs += 1;
            if runs == cases + 1 {
                // Back up to the first write of this case.
                let mut j = i;
                while j > 0 && !matches!(script[j - 1], Command::Read(..)) {
                    j -= 1;
                }
                return j;
            }
        }
    }
    script.len()
}

fn weight_type(bits: u32) -> WeightType {
    match bits {
        8 => WeightType::Int8,
        4 => WeightType::Int4,
        _ => WeightType::Int2,
    }
}
