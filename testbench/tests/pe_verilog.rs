//! The emitted PE Verilog under Icarus and Verilator, against the golden model and rust-hdl.

use tessera_hdl::golden::pe_results;
use tessera_hdl::{EngineParams, Pe};
use tessera_sim::golden::Rng;
use tessera_spec::accel::Accelerator;
use tessera_testbench::rusthdl::{run_pe, Slot};
use tessera_testbench::tools::in_test;
use tessera_testbench::vectors::{item, Fill, ItemShape};
use tessera_testbench::verilog_tb::{run_pe_verilog, Simulator};

fn stream(lanes: usize, segs: usize) -> (Vec<tessera_hdl::golden::PeStep>, Vec<Slot>) {
    let mut rng = Rng::new(11);
    let (mut steps, mut slots) = (Vec::new(), Vec::new());
    for n in [2, 4, 8, 16] {
        for (bits, shift) in [(8, false), (4, true), (2, true)] {
            for fill in [Fill::Random, Fill::Extremes, Fill::ZeroGroups] {
                let shape = ItemShape {
                    n,
                    groups: 3,
                    steps_per_group: 2,
                    weight_bits: bits,
                    shift_add: shift,
                    asymmetric: bits < 8,
                };
                for st in item(&mut rng, shape, fill, lanes, segs) {
                    steps.push(st.clone());
                    slots.push(Some(st));
                    if rng.int(0, 4) == 0 {
                        slots.push(None);
                    }
                }
            }
        }
    }
    (steps, slots)
}

#[test]
fn icarus_and_verilator_match_golden_and_rust_hdl_cycle_for_cycle() {
    let p = EngineParams::from_accel(&Accelerator::preset("tiny").unwrap()).unwrap();
    let pe = Pe::new(&p);
    let (lanes, segs) = (pe.lanes(), pe.segments());
    let (steps, slots) = stream(lanes, segs);
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
