//! The PE against its golden model: in rust-hdl's simulator, and as emitted Verilog under Icarus
//! and Verilator cycle for cycle.

use tessera_hdl::golden::pe_results;
use tessera_hdl::{EngineParams, Pe};
use tessera_spec::accel::Accelerator;
use tessera_testbench::rusthdl::run_pe;
use tessera_testbench::tools::in_test;
use tessera_testbench::vectors::mixed_stream;
use tessera_testbench::verilog_tb::{run_pe_verilog, Simulator};

fn tiny() -> EngineParams {
    EngineParams::from_accel(&Accelerator::preset("tiny").unwrap()).unwrap()
}

#[test]
fn rust_hdl_pe_matches_golden_for_every_n_precision_and_fill() {
    let p = tiny();
    let pe = Pe::new(&p);
    let (lanes, segs) = (pe.lanes(), pe.segments());
    let latency = pe.latency() as u64;
    let (steps, slots) = mixed_stream(7, lanes, segs, 2, 3);
    let run = run_pe(pe, slots, None);
    let want = pe_results(&steps, lanes, segs);
    assert_eq!(want.len(), 36);
    assert!(
        want.iter().flatten().any(|&v| v.abs() > 1 << 30),
        "extreme values reach wide results"
    );
    let got: Vec<Vec<i64>> = run.results.iter().map(|(_, v)| v.clone()).collect();
    assert_eq!(got, want);
    for (last, (cycle, _)) in run.last_steps.iter().zip(&run.results) {
        assert_eq!(cycle - last + 1, latency, "result latency");
    }
}

#[test]
fn icarus_and_verilator_match_golden_and_rust_hdl_cycle_for_cycle() {
    let p = tiny();
    let pe = Pe::new(&p);
    let (lanes, segs) = (pe.lanes(), pe.segments());
    let (steps, slots) = mixed_stream(11, lanes, segs, 3, 2);
    let want = pe_results(&steps, lanes, segs);
    let reference = run_pe(Pe::new(&p), slots.clone(), None);
    assert_eq!(
        reference
            .results
            .iter()
            .map(|(_, v)| v.clone())
            .collect::<Vec<_>>(),
        want
    );
    let root = std::env::temp_dir().join(format!("tessera-pe-tb-{}", std::process::id()));
    for sim in [Simulator::Icarus, Simulator::Verilator] {
        let dir = root.join(format!("{sim:?}"));
        let Some(run) = in_test(run_pe_verilog(&mut Pe::new(&p), &slots, sim, &dir, false)) else {
            continue;
        };
        assert_eq!(run.results.len(), want.len(), "{sim:?} result count");
        assert_eq!(run.results, reference.results, "{sim:?} results and cycles");
    }
    let _ = std::fs::remove_dir_all(&root);
}
