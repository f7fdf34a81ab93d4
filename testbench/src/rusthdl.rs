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
    for p in x.in_shift_add.iter_mut() {
        p.next = st.shift_add;
    }
    x.in_segment_log2.next = (st.segment_log2 as u64).into();
    for (p, &a) in x.in_act.iter_mut().zip(&st.act) {
        p.next = (a as u8 as u64).into();
    }
    for (p, &w) in x.in_weight.iter_mut().zip(&st.weight) {
        p.next = (w as u8 as u64).into();
    }
    for (p, &w) in x.in_weight_b.iter_mut().zip(&st.weight_b) {
        p.next = (w as u8 as u64).into();
    }
    for (p, &i) in x.in_index.iter_mut().zip(&st.index) {
        p.next = (i as u64).into();
    }
    for ((p, &s), &z) in x.in_scale.iter_mut().zip(&st.scale).zip(&st.zero) {
        p.next = ((z as u8 as u64) << 16 | s as u16 as u64).into();
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

/// Executes a host-command script on a [`tessera_hdl::MatrixEngine`] in rust-hdl's simulator.
pub fn run_engine_script(
    engine: tessera_hdl::MatrixEngine,
    script: Vec<crate::matrix::Command>,
) -> crate::matrix::Record {
    use crate::matrix::{Command, Record};
    use tessera_hdl::MatrixEngine;
    let record = Arc::new(Mutex::new(Record::default()));
    let shared = record.clone();
    let script = Arc::new(script);
    let mut sim = Simulation::new();
    sim.add_clock(5, |x: &mut Box<MatrixEngine>| x.clock.next = !x.clock.val());
    sim.add_testbench(move |mut sim: Sim<MatrixEngine>| {
        let mut x = sim.init()?;
        x.reset.next = true;
        wait_clock_cycle!(sim, clock, x);
        x.reset.next = false;
        for cmd in script.iter() {
            match cmd {
                Command::WriteAct(a, lanes) => {
                    x.host_act_write.next = true;
                    x.host_act_address.next = (*a).into();
                    for (p, &v) in x.host_act_data.iter_mut().zip(lanes) {
                        p.next = v.into();
                    }
                    wait_clock_cycle!(sim, clock, x);
                    x.host_act_write.next = false;
                }
                Command::WriteWeight(a, lanes) => {
                    x.host_weight_write.next = true;
                    x.host_weight_address.next = (*a).into();
                    let n = x.host_weight_data.len();
                    for (p, &v) in x.host_weight_data.iter_mut().zip(lanes) {
                        p.next = v.into();
                    }
                    for (p, &v) in x.host_weight_b_data.iter_mut().zip(&lanes[n..]) {
                        p.next = (v & 0xff).into();
                    }
                    wait_clock_cycle!(sim, clock, x);
                    x.host_weight_write.next = false;
                }
                Command::WriteScale(a, lanes) => {
                    x.host_scale_write.next = true;
                    x.host_scale_address.next = (*a).into();
                    for (p, &v) in x.host_scale_data.iter_mut().zip(lanes) {
                        p.next = v.into();
                    }
                    wait_clock_cycle!(sim, clock, x);
                    x.host_scale_write.next = false;
                }
                Command::Run([m, n, k, nm_log2, group, shift, pack]) => {
                    for p in x.instr_pack.iter_mut() {
                        p.next = *pack == 1;
                    }
                    x.instr_m.next = (*m).into();
                    x.instr_n.next = (*n).into();
                    x.instr_k.next = (*k).into();
                    x.instr_nm_log2.next = (*nm_log2).into();
                    x.instr_group.next = (*group).into();
                    for p in x.instr_shift_add.iter_mut() {
                        p.next = *shift == 1;
                    }
                    x.start.next = true;
                    while !x.ready.val() {
                        wait_clock_cycle!(sim, clock, x);
                    }
                    wait_clock_cycle!(sim, clock, x);
                    x.start.next = false;
                    let mut cycles = 1;
                    while !x.done.val() {
                        wait_clock_cycle!(sim, clock, x);
                        cycles += 1;
                    }
                    wait_clock_cycle!(sim, clock, x);
                    shared.lock().unwrap().cycles.push(cycles);
                }
                Command::Read(pe, a) => {
                    x.host_result_pe.next = (*pe).into();
                    x.host_result_address.next = (*a).into();
                    wait_clock_cycle!(sim, clock, x);
                    let lanes = x
                        .host_result_data
                        .iter()
                        .map(|r| tessera_hdl::golden::sign_extend(bits_value(r.val()), 48))
                        .collect();
                    shared.lock().unwrap().reads.push(lanes);
                }
            }
        }
        sim.done(x)
    });
    sim.run(Box::new(engine), u64::MAX / 2)
        .expect("rust-hdl simulation of the matrix engine failed");
    Arc::try_unwrap(record).unwrap().into_inner().unwrap()
}
