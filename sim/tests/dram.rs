//! The DRAM channel model against the analytical formulas it must agree with.

use proptest::prelude::*;
use tessera_sim::dram::{
    ChannelTiming, DramChannel, DramMode, Request, RowOutcome, Served, Stream,
};
use tessera_spec::accel::{Accelerator, Holds, Memory};
use tessera_spec::analytical::{access_bandwidth, row_conflict_latency_ns, streaming_bandwidth};

const QUEUE: usize = 32;

fn hbm(accel: &Accelerator) -> Memory {
    accel.memory_for(Holds::Weights).unwrap().clone()
}

/// A deterministic pseudo-random sequence (xorshift64*), so the test needs no RNG crate.
fn lcg(seed: &mut u64) -> u64 {
    *seed ^= *seed >> 12;
    *seed ^= *seed << 25;
    *seed ^= *seed >> 27;
    seed.wrapping_mul(0x2545_f491_4f6c_dd1d)
}

/// Achieved bytes per second of a batch of requests all queued at time 0.
fn throughput(ch: &mut DramChannel, addrs: impl Iterator<Item = u64>) -> f64 {
    let requests: Vec<Request> = addrs
        .enumerate()
        .map(|(i, addr)| Request {
            tag: i as u64,
            arrival: 0,
            addr,
        })
        .collect();
    let done = ch.serve(&requests);
    assert_eq!(done.len(), requests.len());
    let end = done.iter().map(|c| c.done).max().unwrap();
    (requests.len() as u64 * ch.timing().burst_bytes) as f64 / (end as f64 * 1e-12)
}

#[test]
fn timing_in_picoseconds() {
    let a = Accelerator::preset("u280").unwrap();
    let t = ChannelTiming::of(&hbm(&a));
    assert_eq!(
        (t.t_rcd, t.t_cl, t.t_rp, t.t_ras),
        (14_000, 14_000, 14_000, 33_000)
    );
    // 32 B at 14.375 GB/s.
    assert_eq!(t.t_burst, 2226);
    assert_eq!(t.locate(0), (0, 0));
    assert_eq!(t.locate(1024), (1, 0));
    assert_eq!(t.locate(16 * 1024), (0, 1));
}

#[test]
fn sequential_stream_reaches_the_streaming_formula() {
    for preset in ["u280", "vhk158", "edge-asic", "tiny"] {
        let a = Accelerator::preset(preset).unwrap();
        let mem = hbm(&a);
        let t = ChannelTiming::of(&mem);
        let mut ch = DramChannel::new(t, QUEUE);
        let bytes = 4u64 << 20;
        let achieved = throughput(
            &mut ch,
            (0..bytes / t.burst_bytes).map(|i| i * t.burst_bytes),
        );
        let expected = streaming_bandwidth(&mem).0 / mem.channels() as f64;
        let ratio = achieved / expected;
        assert!(
            (0.99..=1.01).contains(&ratio),
            "{preset}: {achieved:.3e} vs {expected:.3e} B/s ({ratio:.4})"
        );
        let s = ch.stats();
        assert!(s.hits > 10 * (s.misses + s.conflicts), "{preset}: {s:?}");
        assert!(s.refreshes > 0);
    }
}

#[test]
fn dependent_random_reads_pay_the_row_conflict_latency() {
    let a = Accelerator::preset("u280").unwrap();
    let mem = hbm(&a);
    let t = ChannelTiming::of(&mem);
    let mut ch = DramChannel::new(t, QUEUE);
    let mut seed = 0x9e37_79b9_7f4a_7c15;
    // Open a row in every bank first, so every later access is a conflict unless it repeats a row.
    for bank in 0..t.banks {
        ch.serve(&[Request {
            tag: 0,
            arrival: 0,
            addr: bank * t.row_bytes,
        }]);
    }
    let mut now = ch.serve(&[Request {
        tag: 0,
        arrival: 0,
        addr: 0,
    }])[0]
        .done;
    let n = 2000;
    let mut conflict_latencies = Vec::new();
    for i in 0..n {
        let addr = (lcg(&mut seed) % (256 << 20)) / 32 * 32;
        let c = ch.serve(&[Request {
            tag: i,
            arrival: now,
            addr,
        }])[0];
        if c.outcome == RowOutcome::Conflict {
            conflict_latencies.push(c.done - now);
        }
        now = c.done;
    }
    // Refreshes close every row, so some accesses are misses; most are conflicts.
    assert!(
        conflict_latencies.len() > n as usize * 3 / 4,
        "{}",
        conflict_latencies.len()
    );
    conflict_latencies.sort();
    let formula_ps = row_conflict_latency_ns(&mem, 32) * 1000.0;
    // No conflict is faster than the formula; the typical one takes exactly that long (tRAS waits
    // and refreshes only add time).
    assert!(conflict_latencies[0] as f64 >= formula_ps - 1.0);
    let median = conflict_latencies[conflict_latencies.len() / 2] as f64;
    assert!(
        (median - formula_ps).abs() <= 1.0,
        "median {median} ps vs {formula_ps} ps"
    );
}

#[test]
fn random_reads_with_few_banks_are_row_cycle_bound() {
    // Four banks: each new 64-byte row costs a bank tRAS + tRP, well below the bus peak.
    let text = include_str!("../../examples/accelerators/u280.toml").replacen(
        "banks = 16\nrow_bytes = 1024",
        "banks = 4\nrow_bytes = 1024",
        1,
    );
    let a = Accelerator::from_toml_str(&text, "four-banks.toml").unwrap();
    let mem = hbm(&a);
    let t = ChannelTiming::of(&mem);
    let expected = access_bandwidth(&mem, 64).0 / mem.channels() as f64;
    let mut ratios = Vec::new();
    for depth in [QUEUE, 256] {
        let mut ch = DramChannel::new(t, depth);
        let mut seed = 42;
        let addrs: Vec<u64> = (0..4000)
            .flat_map(|_| {
                let base = (lcg(&mut seed) % (256 << 20)) / 64 * 64;
                [base, base + 32]
            })
            .collect();
        ratios.push(throughput(&mut ch, addrs.into_iter()) / expected);
    }
    // The formula assumes every bank always has work; random addresses leave a bank idle now and
    // then, less so with a deeper queue. It is an upper bound the model approaches.
    assert!(ratios.iter().all(|r| *r <= 1.001), "{ratios:?}");
    assert!(ratios[0] >= 0.88, "{ratios:?}");
    assert!(ratios[1] >= ratios[0] && ratios[1] >= 0.95, "{ratios:?}");
}

#[test]
fn serving_is_deterministic() {
    let a = Accelerator::preset("edge-asic").unwrap();
    let t = ChannelTiming::of(&hbm(&a));
    let mut seed = 7;
    let reqs: Vec<Request> = (0..500)
        .map(|i| Request {
            tag: i,
            arrival: lcg(&mut seed) % 100_000,
            addr: lcg(&mut seed) % (64 << 20) / 64 * 64,
        })
        .collect();
    let a1 = DramChannel::new(t, QUEUE).serve(&reqs);
    let a2 = DramChannel::new(t, QUEUE).serve(&reqs);
    assert_eq!(a1, a2);
    // Every request completes after it arrives, and the bus never carries two bursts at once.
    let mut ends: Vec<u64> = a1.iter().map(|c| c.done).collect();
    for c in &a1 {
        assert!(c.done >= reqs[c.tag as usize].arrival + t.t_cl + t.t_burst);
    }
    ends.sort();
    assert!(ends.windows(2).all(|w| w[1] - w[0] >= t.t_burst));
}

/// One memory of each kind the presets use: u280 HBM2 and DDR4, the edge ASIC's LPDDR, `tiny`'s.
fn memories() -> Vec<Memory> {
    let u280 = Accelerator::preset("u280").unwrap();
    let mut out: Vec<Memory> = u280.memories().to_vec();
    for preset in ["edge-asic", "tiny", "vhk158"] {
        out.push(hbm(&Accelerator::preset(preset).unwrap()));
    }
    out
}

/// A DMA-like stream: `chunks` in up to three loops, contiguous or strided, at a given rate.
fn stream_case() -> impl Strategy<Value = (u64, u64, [(u64, u64); 3], u64, f64)> {
    let chunk = prop_oneof![
        (1u64..=256).prop_map(|k| k * 32),
        1u64..5000,
        Just(4096u64),
        Just(1024u64),
    ];
    (chunk, 0u64..4, 0u64..200, 1u64..=8, 1u64..=4, 1u64..=3).prop_flat_map(
        |(chunk, layout, base_rows, n0, n1, n2)| {
            let stride0 = [chunk, chunk, 2 * chunk, chunk + 96][layout as usize];
            let stride1 = if layout == 1 {
                16 * 1024 * 9
            } else {
                stride0 * n0
            };
            let loops = [
                (n0, stride0),
                (n1, stride1),
                (n2, stride1 * n1 + 64 * layout),
            ];
            (
                Just(chunk),
                prop_oneof![
                    Just(base_rows * 1024),
                    Just(base_rows * 8192 + 32),
                    Just(base_rows * 777)
                ],
                Just(loops),
                prop_oneof![Just(64u64), Just(32), Just(8), Just(128), Just(1)],
                prop_oneof![Just(4444.444), Just(3333.333), Just(1000.0), Just(10_000.0)],
            )
        },
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    /// The fast mode's whole-row advances give exactly the reference's completion times and leave
    /// exactly the same channel state (banks, bus, refresh, counters), over sequences of
    /// streams with varied alignment, chunking, strides, issue rates, gaps and overlaps.
    #[test]
    fn fast_mode_equals_the_reference(
        memory in 0usize..5,
        depth in prop_oneof![Just(1usize), Just(8), Just(32), Just(64)],
        streams in proptest::collection::vec((stream_case(), 0u64..40_000, 1u64..4), 1..5),
        repeat in 1u64..40,
    ) {
        let mem = &memories()[memory];
        let t = ChannelTiming::of(mem);
        let mut fast = DramChannel::new(t, depth);
        let mut reference = DramChannel::new(t, depth);
        let mut start = 0.0;
        for ((chunk, base, mut loops, bpc, period), gap_ns, overlap) in streams {
            // Long streams cross refreshes and run into steady state.
            loops[2].0 *= repeat;
            let s = Stream {
                base: base % (mem.capacity().0 / mem.channels() / 2),
                chunk_bytes: chunk,
                loops,
                start_ps: start,
                period_ps: period,
                bytes_per_cycle: bpc,
            };
            let f = fast.serve_stream(&s, DramMode::Fast);
            let r = reference.serve_stream(&s, DramMode::Reference);
            prop_assert_eq!(f.done_ps, r.done_ps);
            prop_assert_eq!(&fast, &reference);
            // The next stream starts after a gap, or (overlap 1) while this one still runs.
            start = if overlap == 1 { start + gap_ns as f64 } else { r.done_ps as f64 + gap_ns as f64 * 1000.0 };
        }
    }
}

/// A 512 KiB sequential stream on a u280 HBM channel from an engine at `period_ps`, served in
/// fast mode and burst by burst (checked equal): the timing, both outcomes, the reference
/// channel and the stream's bursts.
fn sequential_both_ways(period_ps: f64) -> (ChannelTiming, Served, Served, DramChannel, u64) {
    let a = Accelerator::preset("u280").unwrap();
    let t = ChannelTiming::of(&hbm(&a));
    let s = Stream {
        base: 0,
        chunk_bytes: 4096,
        loops: [(128, 4096), (1, 0), (1, 0)],
        start_ps: 0.0,
        period_ps,
        bytes_per_cycle: a.dma().bytes_per_cycle(),
    };
    let mut fast = DramChannel::new(t, QUEUE);
    let mut reference = DramChannel::new(t, QUEUE);
    let f = fast.serve_stream(&s, DramMode::Fast);
    let r = reference.serve_stream(&s, DramMode::Reference);
    assert_eq!((f.done_ps, &fast), (r.done_ps, &reference));
    (t, f, r, reference, s.bytes() / t.burst_bytes)
}

#[test]
fn fast_mode_advances_long_sequential_streams_row_by_row() {
    let clock = Accelerator::preset("u280").unwrap().clock().0;
    let (_, f, r, reference, bursts) = sequential_both_ways(1e12 / clock);
    assert_eq!(r.advanced_bursts, 0);
    // Only the bursts that meet a refresh go one by one.
    assert!(
        f.advanced_bursts * 1000 >= bursts * 998,
        "{} of {bursts}",
        f.advanced_bursts
    );
    // Most refresh intervals repeat and are crossed at once (all but those whose refresh falls
    // on a row boundary), and the rows around them go in steady-state stretches.
    let refreshes = reference.stats().refreshes;
    assert!(
        f.crossed_refreshes * 10 >= refreshes * 6,
        "{} of {refreshes}",
        f.crossed_refreshes
    );
    assert!(f.jumped_rows > 0);
    assert_eq!((r.jumped_rows, r.crossed_refreshes), (0, 0));
}

#[test]
fn fast_mode_advances_issue_bound_streams_row_by_row() {
    // The u280's DMA engine at 100 MHz issues 6.4 GB/s, far slower than the pseudo-channel's
    // bus: bursts go on the bus as they arrive.
    let (t, f, r, _, bursts) = sequential_both_ways(10_000.0);
    // Only the rows that meet a refresh go burst by burst.
    assert!(
        f.advanced_bursts * 100 >= bursts * 95,
        "{} of {bursts}",
        f.advanced_bursts
    );
    // The stream is issue-bound: it takes longer than the bus needs.
    assert!(r.done_ps > bursts * t.t_burst * 11 / 10);
}
