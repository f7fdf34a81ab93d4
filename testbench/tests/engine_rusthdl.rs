//! The matrix engine in rust-hdl: results equal the golden model and cycles equal the shared
//! tile-loop model the simulator charges.

use tessera_hdl::{EngineOptions, EngineParams, MatrixEngine};
use tessera_spec::accel::Accelerator;
use tessera_spec::analytical::{compute_instruction_cycles, matrix_tiling};
use tessera_testbench::matrix::{
    assemble, matrix_data, matrix_golden, script_case, Geometry, MatrixCase,
};
use tessera_testbench::rusthdl::run_engine_script;

#[test]
fn engine_matches_golden_and_the_cycle_model() {
    let accel = Accelerator::preset("tiny").unwrap();
    let p = EngineParams::from_accel(&accel).unwrap();
    let engine = MatrixEngine::new(&p, EngineOptions { bank_words: 512 });
    let g = Geometry {
        pes: engine.pes(),
        lanes: engine.lanes(),
        segments: engine.segments(),
    };
    let cases = [
        MatrixCase {
            m: 1,
            n: 8,
            k: 64,
            nm: 16,
            group: 32,
            weight_bits: 8,
            shift_add: false,
            asymmetric: false,
        },
        MatrixCase {
            m: 3,
            n: 5,
            k: 40,
            nm: 2,
            group: 0,
            weight_bits: 4,
            shift_add: true,
            asymmetric: true,
        },
        MatrixCase {
            m: 2,
            n: 9,
            k: 32,
            nm: 8,
            group: 32,
            weight_bits: 2,
            shift_add: true,
            asymmetric: false,
        },
    ];
    let mut script = Vec::new();
    let mut maps = Vec::new();
    let mut data = Vec::new();
    for (i, case) in cases.iter().enumerate() {
        let d = matrix_data(case, 100 + i as u64);
        maps.push(script_case(g, case, &d, &mut script));
        data.push(d);
    }
    let record = run_engine_script(engine, script);
    let mut reads = record.reads.as_slice();
    for (i, case) in cases.iter().enumerate() {
        let (mine, rest) = reads.split_at(maps[i].len());
        reads = rest;
        assert_eq!(
            assemble(case, mine, &maps[i]),
            matrix_golden(case, &data[i]),
            "{case:?}"
        );
        let t = matrix_tiling(
            accel.matrix(),
            1.0,
            case.m as u64,
            case.n as u64,
            case.k as u64,
            case.nm,
        );
        assert_eq!(
            record.cycles[i],
            t.steps + accel.matrix().pipeline_depth(),
            "{case:?}"
        );
    }
    let _ = compute_instruction_cycles;
}
