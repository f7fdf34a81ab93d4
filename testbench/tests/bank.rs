//! The scratchpad bank in rust-hdl's simulator against a golden model: a dual-port RAM whose
//! reads return the word before a same-cycle write, and whose out-of-range addresses read zero
//! and ignore writes.

use rust_hdl::prelude::*;
use std::sync::{Arc, Mutex};
use tessera_hdl::bank::{Bank, RamStyle};
use tessera_hdl::pe::bits_value;
use tessera_sim::golden::Rng;

const WORDS: usize = 8;
const LANES: usize = 3;

#[derive(Clone, Copy, Debug)]
struct Cycle {
    write: Option<(u64, [u64; LANES])>,
    read: u64,
}

#[test]
fn bank_matches_a_dual_port_ram() {
    let mut rng = Rng::new(3);
    let cycles: Vec<Cycle> = (0..200)
        .map(|_| Cycle {
            write: (rng.int(0, 2) > 0).then(|| {
                (
                    rng.int(0, WORDS as i32 + 2) as u64,
                    [0; LANES].map(|_| rng.next_u64() & 0xfff),
                )
            }),
            read: rng.int(0, WORDS as i32 + 2) as u64,
        })
        .collect();
    // Golden: read data appears after the edge and is the word before that edge's write.
    let mut memory = [[0u64; LANES]; WORDS];
    let mut want = Vec::new();
    for c in &cycles {
        want.push(if (c.read as usize) < WORDS {
            memory[c.read as usize]
        } else {
            [0; LANES]
        });
        if let Some((a, data)) = c.write {
            if (a as usize) < WORDS {
                memory[a as usize] = data;
            }
        }
    }
    let got = Arc::new(Mutex::new(Vec::new()));
    let shared = got.clone();
    let script = Arc::new(cycles);
    let mut sim = Simulation::new();
    sim.add_clock(5, |x: &mut Box<Bank<12>>| x.clock.next = !x.clock.val());
    sim.add_testbench(move |mut sim: Sim<Bank<12>>| {
        let mut x = sim.init()?;
        for c in script.iter() {
            x.write_enable.next = c.write.is_some();
            if let Some((a, data)) = c.write {
                x.write_address.next = a.into();
                for (p, v) in x.write_data.iter_mut().zip(data) {
                    p.next = v.into();
                }
            }
            x.read_address.next = c.read.into();
            wait_clock_cycle!(sim, clock, x);
            let lanes: Vec<u64> = x.read_data.iter().map(|r| bits_value(r.val())).collect();
            shared.lock().unwrap().push(lanes);
        }
        sim.done(x)
    });
    sim.run(
        Box::new(Bank::<12>::new(WORDS, LANES, RamStyle::Block)),
        1_000_000,
    )
    .unwrap();
    let got = got.lock().unwrap().clone();
    let want: Vec<Vec<u64>> = want.iter().map(|w| w.to_vec()).collect();
    assert_eq!(got, want);
    assert!(
        want.iter().any(|w| w.iter().any(|&v| v != 0)),
        "the stream reads written words"
    );
}
