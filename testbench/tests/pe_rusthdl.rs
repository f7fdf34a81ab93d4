//! rust-hdl simulation of the PE against the golden model.

use tessera_hdl::golden::pe_results;
use tessera_hdl::{EngineParams, Pe};
use tessera_sim::golden::Rng;
use tessera_spec::accel::Accelerator;
use tessera_testbench::rusthdl::{run_pe, Slot};
use tessera_testbench::vectors::{item, Fill, ItemShape};

fn tiny() -> EngineParams {
    EngineParams::from_accel(&Accelerator::preset("tiny").unwrap()).unwrap()
}

#[test]
fn pe_matches_golden_for_every_n_precision_and_fill() {
    let p = tiny();
    let pe = Pe::new(&p);
    let (lanes, segs) = (pe.lanes(), pe.segments());
    let latency = pe.latency() as u64;
    let mut rng = Rng::new(7);
    let mut steps = Vec::new();
    let mut slots: Vec<Slot> = Vec::new();
    for n in [2, 4, 8, 16] {
        for (bits, shift) in [(8, false), (4, true), (2, true)] {
            for fill in [Fill::Random, Fill::Extremes, Fill::ZeroGroups] {
                let shape = ItemShape {
                    n,
                    groups: 2,
                    steps_per_group: 3,
                    weight_bits: bits,
                    shift_add: shift,
                    asymmetric: bits < 8,
                };
                for st in item(&mut rng, shape, fill, lanes, segs) {
                    steps.push(st.clone());
                    slots.push(Some(st));
                    if rng.int(0, 3) == 0 {
                        slots.push(None);
                    }
                }
            }
        }
    }
    let run = run_pe(pe, slots, None);
    let want = pe_results(&steps, lanes, segs);
    let got: Vec<Vec<i64>> = run.results.iter().map(|(_, v)| v.clone()).collect();
    assert_eq!(want.len(), 36);
    assert!(
        want.iter().flatten().any(|&v| v.abs() > 1 << 30),
        "extreme values reach wide results"
    );
    assert_eq!(got, want);
    for (last, (cycle, _)) in run.last_steps.iter().zip(&run.results) {
        assert_eq!(cycle - last + 1, latency, "result latency");
    }
}
