//! The PE against its golden model: in rust-hdl's simulator, and as emitted Verilog under Icarus
//! and Verilator cycle for cycle; plain PEs and PEs that pack two columns per DSP.

use tessera_hdl::golden::{pe_results, PeStep};
use tessera_hdl::{EngineParams, Pe};
use tessera_spec::accel::Accelerator;
use tessera_testbench::agreement::packed_tiny;
use tessera_testbench::rusthdl::{run_pe, Slot};
use tessera_testbench::tools::in_test;
use tessera_testbench::vectors::mixed_stream;
use tessera_testbench::verilog_tb::{run_pe_verilog, Simulator};

fn tiny() -> EngineParams {
    EngineParams::from_accel(&Accelerator::preset("tiny").unwrap()).unwrap()
}

/// The 4-lane PE of `tiny` with every precision at two MACs per DSP.
fn tiny_packed() -> EngineParams {
    let p = EngineParams::from_accel(&packed_tiny()).unwrap();
    assert_eq!((p.lanes, p.pack), (4, 2));
    p
}

/// A 16-lane packing PE (u280's chain): its chain sums reach both ends of a packed column's
/// window. Pipeline: operand read 1 + PE 4 + 16 + 2 dequantiser stages = 23, plus one pad.
fn sixteen_packed() -> EngineParams {
    EngineParams {
        lanes: 16,
        pipeline_depth: 24,
        ..tiny_packed()
    }
}

/// Seeded vectors for `p`'s PE and the golden results.
fn stream(p: &EngineParams, seed: u64, shape: (usize, usize)) -> (Vec<Slot>, Vec<Vec<i64>>) {
    let (lanes, segs) = (p.lanes, p.max_segments());
    let (steps, slots) = mixed_stream(seed, (lanes, segs, p.pack), shape.0, shape.1);
    (slots, pe_results(&steps, lanes, segs, p.pack))
}

#[test]
fn rust_hdl_pe_matches_golden_for_every_n_precision_and_fill() {
    for p in [tiny(), tiny_packed()] {
        let pe = Pe::new(&p);
        let latency = pe.latency() as u64;
        let (slots, want) = stream(&p, 7, (2, 3));
        let run = run_pe(pe, slots, None);
        // 4 N × 3 precisions × 5 fills.
        assert_eq!(want.len(), 60);
        assert!(
            want.iter().flatten().any(|&v| v.abs() > 1 << 30),
            "extreme values reach wide results"
        );
        let got: Vec<Vec<i64>> = run.results.iter().map(|(_, v)| v.clone()).collect();
        assert_eq!(got, want, "pack {}", p.pack);
        for (last, (cycle, _)) in run.last_steps.iter().zip(&run.results) {
            assert_eq!(cycle - last + 1, latency, "result latency");
        }
    }
}

#[test]
fn icarus_and_verilator_match_golden_and_rust_hdl_cycle_for_cycle() {
    for p in [tiny(), tiny_packed(), sixteen_packed()] {
        let (slots, want) = stream(&p, 11, (3, 2));
        let reference = run_pe(Pe::new(&p), slots.clone(), None);
        assert_eq!(
            reference
                .results
                .iter()
                .map(|(_, v)| v.clone())
                .collect::<Vec<_>>(),
            want,
            "rust-hdl, {} lanes, pack {}",
            p.lanes,
            p.pack
        );
        let root = std::env::temp_dir().join(format!(
            "tessera-pe-tb-{}-{}-{}",
            std::process::id(),
            p.lanes,
            p.pack
        ));
        for sim in [Simulator::Icarus, Simulator::Verilator] {
            let dir = root.join(format!("{sim:?}"));
            let Some(run) = in_test(run_pe_verilog(&mut Pe::new(&p), &slots, sim, &dir, false))
            else {
                continue;
            };
            assert_eq!(run.results.len(), want.len(), "{sim:?} result count");
            assert_eq!(run.results, reference.results, "{sim:?} results and cycles");
        }
        let _ = std::fs::remove_dir_all(&root);
    }
}

/// The item of `slots` whose first step is the `i`-th item start, as golden steps.
fn items(slots: &[Slot]) -> Vec<Vec<PeStep>> {
    let mut out: Vec<Vec<PeStep>> = Vec::new();
    for st in slots.iter().flatten() {
        if st.first {
            out.push(Vec::new());
        }
        out.last_mut().unwrap().push(st.clone());
    }
    out
}

#[test]
fn a_sixteen_lane_packed_chain_is_exact_at_both_ends_of_the_column_window() {
    // Dense int8 items filled with −128 activations: all-minimum weights give both columns
    // 16 · 128 · 128 = 262144 per step; column A at 127 gives −260096, the window's bottom.
    let p = sixteen_packed();
    let (slots, want) = stream(&p, 5, (1, 1));
    let dense_int8_edges: Vec<usize> = items(&slots)
        .iter()
        .enumerate()
        .filter(|(_, it)| {
            let st = &it[0];
            st.segment_log2 == 4 && !st.shift_add && st.act.iter().all(|&a| a == -128)
        })
        .map(|(i, _)| i)
        .collect();
    assert_eq!(
        dense_int8_edges.len(),
        2,
        "AllMin and Opposed dense int8 items"
    );
    let steps = items(&slots);
    for &i in &dense_int8_edges {
        let st = &steps[i][0];
        let sum = |w: &[i8]| w.iter().map(|&w| -128 * w as i64).sum::<i64>();
        let (a, b) = (sum(&st.weight), sum(&st.weight_b));
        assert!(a == 262144 || a == -260096, "column A at an edge: {a}");
        assert_eq!(b, 262144);
        // One group of one step: result = (sum − zero · Σa) · scale.
        let asum = -128 * 16;
        for (col, s) in [(0, a), (1, b)] {
            let v = (s - st.zero[col] as i64 * asum) * st.scale[col] as i64;
            assert_eq!(want[i][col], v, "golden item {i} column {col}");
        }
    }
    let run = run_pe(Pe::new(&p), slots, None);
    let got: Vec<Vec<i64>> = run.results.iter().map(|(_, v)| v.clone()).collect();
    assert_eq!(got, want);
}

#[test]
fn a_lane_skewed_one_cycle_too_many_breaks_the_cascade_and_the_vectors_catch_it() {
    // Lane j must add the product of the step whose partial sum arrives from lane j − 1; a lane
    // that lags one cycle adds the previous step's product instead.
    for p in [tiny(), tiny_packed()] {
        let (slots, want) = stream(&p, 7, (2, 3));
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
        let dir =
            std::env::temp_dir().join(format!("tessera-pe-skew-{}-{}", std::process::id(), p.pack));
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
}
