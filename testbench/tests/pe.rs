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

#[test]
fn a_lane_skewed_one_cycle_too_many_breaks_the_cascade_and_the_vectors_catch_it() {
    // Lane j must add the product of the step whose partial sum arrives from lane j − 1; a lane
    // that lags one cycle adds the previous step's product instead.
    let p = tiny();
    let (steps, slots) = mixed_stream(7, p.lanes, p.max_segments(), 2, 3);
    let want = pe_results(&steps, p.lanes, p.max_segments());
    for lane in [0, 1, p.lanes - 1] {
        let run = run_pe(Pe::with_skew_error(&p, lane, 1), slots.clone(), None);
        let got: Vec<Vec<i64>> = run.results.iter().map(|(_, v)| v.clone()).collect();
        assert_eq!(
            got.len(),
            want.len(),
            "lane {lane}: the latency is unchanged"
        );
        assert_ne!(
            got, want,
            "lane {lane} skewed one cycle too many went unnoticed"
        );
    }
    // The emitted Verilog of a broken chain is caught the same way.
    let dir = std::env::temp_dir().join(format!("tessera-pe-skew-{}", std::process::id()));
    let mut broken = Pe::with_skew_error(&p, 2, 1);
    if let Some(run) = in_test(run_pe_verilog(
        &mut broken,
        &slots,
        Simulator::Verilator,
        &dir,
        false,
    )) {
        let got: Vec<Vec<i64>> = run.results.iter().map(|(_, v)| v.clone()).collect();
        assert_eq!(got.len(), want.len());
        assert_ne!(got, want);
    }
    let _ = std::fs::remove_dir_all(&dir);
}
