//! Runs a [`Pe`] in rust-hdl's simulator.

use rust_hdl::prelude::*;
use std::sync::{Arc, Mutex};
use tessera_hdl::golden::PeStep;
use tessera_hdl::pe::bits_value;
use tessera_hdl::Pe;

/// What a PE produced: each result with the cycle it appeared on, and the cycle each item's last
/// step was presented on.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PeRun {
    /// `(cycle, per-segment results)` for every cycle `out_valid` was high.
    pub results: Vec<(u64, Vec<i64>)>,
    /// The cycle each item's last step was presented on.
    pub last_steps: Vec<u64>,
}

/// A slot of the input stream: a step, or an idle cycle.
pub type Slot = Option<PeStep>;

fn drive(x: &mut Pe, slot: &Slot) {
    x.in_valid.next = slot.is_some();
    let Some(st) = slot else { return };
    x.in_first.next = st.first;
    x.in_last.next = st.last;
    x.in_group_first.next = st.group_first;
    x.in_group_last.next = st.group_last;
    x.in_shift_add.next = st.shift_add;
    x.in_segment_log2.next = (st.segment_log2 as u64).into();
    for (p, &a) in x.in_act.iter_mut().zip(&st.act) {
        p.next = (a as u8 as u64).into();
    }
    for (p, &w) in x.in_weight.iter_mut().zip(&st.weight) {
        p.next = (w as u8 as u64).into();
    }
    for (p, &i) in x.in_index.iter_mut().zip(&st.index) {
        p.next = (i as u64).into();
    }
    for (p, &s) in x.in_scale.iter_mut().zip(&st.scale) {
        p.next = (s as u16 as u64).into();
    }
}

/// Simulates `pe` on `slots` (one per cycle after a reset cycle), then lets the pipeline drain.
pub fn run_pe(pe: Pe, slots: Vec<Slot>, vcd: Option<&std::path::Path>) -> PeRun {
    let drain = pe.latency() as u64 + 2;
    let run = Arc::new(Mutex::new(PeRun::default()));
    let shared = run.clone();
    let slots = Arc::new(slots);
    let mut sim = Simulation::new();
    sim.add_clock(5, |x: &mut Box<Pe>| x.clock.next = !x.clock.val());
    sim.add_testbench(move |mut sim: Sim<Pe>| {
        let mut x = sim.init()?;
        x.reset.next = true;
        wait_clock_cycle!(sim, clock, x);
        x.reset.next = false;
        let total = slots.len() as u64 + drain;
        for cycle in 0..total {
            let slot = slots.get(cycle as usize).cloned().flatten();
            drive(&mut x, &slot);
            wait_clock_cycle!(sim, clock, x);
            let mut run = shared.lock().unwrap();
            if slot.as_ref().is_some_and(|s| s.last) {
                run.last_steps.push(cycle);
            }
            if x.out_valid.val() {
                let values = x
                    .out_result
                    .iter()
                    .map(|r| tessera_hdl::golden::sign_extend(bits_value(r.val()), 48))
                    .collect();
                run.results.push((cycle, values));
            }
        }
        sim.done(x)
    });
    let outcome = match vcd {
        Some(path) => sim.run_to_file(Box::new(pe), u64::MAX / 2, &path.to_string_lossy()),
        None => sim.run(Box::new(pe), u64::MAX / 2),
    };
    outcome.expect("rust-hdl simulation of the PE failed");
    Arc::try_unwrap(run).unwrap().into_inner().unwrap()
}
