//! Cycle agreement: a grid of matrix instructions run on the emitted engine, compared with the
//! golden results and with the cycles the simulator charges the same ISA instruction
//! ([`tessera_spec::analytical::matrix_work_cycles`], the shared tile loop).

use crate::matrix::{
    assemble, matrix_data, matrix_golden, script_case, Command, Geometry, MatrixCase, ReadMap,
    Record,
};
use crate::tools::ToolError;
use crate::verilog_tb::{run_engine_verilog, Simulator};
use serde::Serialize;
use std::path::Path;
use tessera_hdl::{EngineOptions, EngineParams, MatrixEngine};
use tessera_spec::accel::Accelerator;
use tessera_spec::analytical::{matrix_instr_work, matrix_work_cycles};
use tessera_spec::compression::ActivationFormat;
use tessera_spec::isa::{self, Instruction, MatrixOp};

/// The instructions checked: shapes with ragged rows, columns and blocks, every supported N of
/// N:16 and every int8-activation precision of the spec (on its own datapath; a precision at two
/// MACs per DSP packs its dense cases and runs its N:M ones unpacked), symmetric and asymmetric,
/// with and without quantisation groups.
pub fn grid(accel: &Accelerator) -> Vec<MatrixCase> {
    let m = accel.matrix();
    let mut nms: Vec<u32> = m.sparse().nm().to_vec();
    if !nms.contains(&16) {
        nms.push(16);
    }
    let precisions: Vec<(u32, bool, bool)> = m
        .precisions()
        .iter()
        .filter(|p| p.activation() == ActivationFormat::Int8 && p.weight().bits() <= 8)
        .map(|p| (p.weight().bits(), p.shift_add(), p.macs_per_dsp() == 2.0))
        .collect();
    let group = m.group_sizes().iter().copied().min().unwrap_or(0) as usize;
    let shapes = [(1, 1, 16), (1, 7, 48), (3, 5, 40), (2, 9, 64), (5, 3, 32)];
    let mut cases = Vec::new();
    for (i, &(rows, n, k)) in shapes.iter().enumerate() {
        for &nm in &nms {
            for &(bits, shift_add, pack) in &precisions {
                cases.push(MatrixCase {
                    m: rows,
                    n,
                    k,
                    nm,
                    group: if (i + nm as usize) % 2 == 0 { 0 } else { group },
                    weight_bits: bits,
                    shift_add,
                    asymmetric: bits < 8 && (nm as usize + i) % 3 == 0,
                    pack,
                });
            }
        }
    }
    cases
}

/// The case as the ISA's matrix instruction.
pub fn instruction(case: &MatrixCase) -> MatrixOp {
    let sparse = if case.nm < 16 {
        format!(" sparse=nm nm_n={}", case.nm)
    } else {
        String::new()
    };
    let text = format!(
        "matmul a_buffer=0 b_buffer=0 c_buffer=0 m={} n={} k={} weight=int{} act_int8=1 group={}{sparse}",
        case.m, case.n, case.k, case.weight_bits, case.group
    );
    match isa::assemble(&text)
        .expect("grid cases are valid instructions")
        .instructions[0]
    {
        Instruction::Matmul(op) => op,
        _ => unreachable!("a matmul line assembles to a matmul"),
    }
}

/// The cycles the simulator charges the case's matrix instruction for its matrix work
/// (`analytical::matrix_work_cycles`, which `compute_instruction_cycles` bounds below by the
/// operands' buffer-port time; the generated engine's replicated banks have no port limit).
pub fn model_cycles(accel: &Accelerator, case: &MatrixCase) -> u64 {
    matrix_work_cycles(accel.matrix(), &matrix_instr_work(&instruction(case)))
        .expect("the grid uses the spec's precisions")
        .1
}

/// One case that disagreed.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Mismatch {
    /// The instruction.
    pub case: String,
    /// Cycles the model charges.
    pub model_cycles: u64,
    /// Cycles the RTL took.
    pub rtl_cycles: u64,
    /// Whether every result equalled the golden model.
    pub values_equal: bool,
}

/// The outcome on one simulator.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Agreement {
    /// The simulator.
    pub simulator: String,
    /// Instructions run.
    pub instructions: usize,
    /// Cases whose cycles or values differ.
    pub mismatches: Vec<Mismatch>,
}

/// The script of host commands for `cases`, with the read maps and golden results.
pub struct Plan {
    /// The cases.
    pub cases: Vec<MatrixCase>,
    /// Host commands.
    pub script: Vec<Command>,
    maps: Vec<ReadMap>,
    want: Vec<Vec<Vec<i64>>>,
}

impl Plan {
    /// Seeded operands and golden results for `cases` on `engine`.
    pub fn new(engine: &MatrixEngine, cases: Vec<MatrixCase>) -> Plan {
        let g = Geometry::of(engine);
        let mut script = Vec::new();
        let (mut maps, mut want) = (Vec::new(), Vec::new());
        for (i, case) in cases.iter().enumerate() {
            let d = matrix_data(case, 1000 + i as u64);
            maps.push(script_case(g, case, &d, &mut script));
            want.push(matrix_golden(case, &d));
        }
        Plan {
            cases,
            script,
            maps,
            want,
        }
    }

    /// Compares what a run recorded with the golden results and the model's cycles.
    pub fn compare(&self, accel: &Accelerator, simulator: &str, record: &Record) -> Agreement {
        let mut mismatches = Vec::new();
        let mut reads = record.reads.as_slice();
        for (i, case) in self.cases.iter().enumerate() {
            let take = self.maps[i].len().min(reads.len());
            let (mine, rest) = reads.split_at(take);
            reads = rest;
            let values_equal =
                take == self.maps[i].len() && assemble(case, mine, &self.maps[i]) == self.want[i];
            let model = model_cycles(accel, case);
            let rtl = record.cycles.get(i).copied().unwrap_or(0);
            if !values_equal || rtl != model {
                mismatches.push(Mismatch {
                    case: format!("{case:?}"),
                    model_cycles: model,
                    rtl_cycles: rtl,
                    values_equal,
                });
            }
        }
        Agreement {
            simulator: simulator.into(),
            instructions: self.cases.len(),
            mismatches,
        }
    }
}

/// Runs the grid on the emitted engine under `simulator` in `dir` (waveforms with `vcd`).
pub fn run_grid(
    accel: &Accelerator,
    params: &EngineParams,
    options: EngineOptions,
    simulator: Simulator,
    dir: &Path,
    vcd: bool,
) -> Result<Agreement, ToolError> {
    let mut engine = MatrixEngine::new(params, options);
    let plan = Plan::new(&engine, grid(accel));
    let record = run_engine_verilog(&mut engine, &plan.script, simulator, dir, vcd)?;
    Ok(plan.compare(accel, &format!("{simulator:?}").to_lowercase(), &record))
}

/// The `tiny` preset with every precision at two MACs per DSP: the smallest packing engine, for
/// tests (its dense instructions pack two columns per lane, its N:M ones run unpacked).
pub fn packed_tiny() -> Accelerator {
    let text = Accelerator::preset_text("tiny")
        .expect("tiny is a preset")
        .replace("macs_per_dsp = 1.0", "macs_per_dsp = 2.0");
    Accelerator::from_toml_str(&text, "tiny-packed.toml").expect("tiny packed is valid")
}
