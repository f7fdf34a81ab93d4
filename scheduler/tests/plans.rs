//! Baselines produce plans the independent validator accepts, and the validator rejects plans
//! that break the rules.

mod common;
use common::problem;
use proptest::prelude::*;
use tessera_scheduler::{baseline, validate, Eviction, Plan, Problem, ScheduleError};
use tessera_spec::graph::Phase;

#[test]
fn unlimited_budget_needs_no_spills() {
    let p = problem("tiny-llama", Phase::Prefill { seq: 32 });
    for policy in [Eviction::Lru, Eviction::Belady] {
        let plan = baseline(&p, u64::MAX / 4, policy).unwrap();
        let r = validate(&p, u64::MAX / 4, &plan).unwrap();
        assert_eq!(r.non_compulsory_bytes, 0);
        assert!(r.peak_bytes >= p.min_budget());
        assert_eq!(r.compulsory_bytes, p.compulsory_bytes());
    }
}

#[test]
fn tight_budgets_spill_and_stay_valid() {
    for (name, phase) in [
        ("tiny-llama", Phase::Prefill { seq: 64 }),
        ("gpt2", Phase::Prefill { seq: 128 }),
        ("bert-base", Phase::Prefill { seq: 128 }),
        ("tiny-llama", Phase::Decode { context: 100 }),
    ] {
        let p = problem(name, phase);
        let unlimited = validate(
            &p,
            u64::MAX / 4,
            &baseline(&p, u64::MAX / 4, Eviction::Lru).unwrap(),
        )
        .unwrap()
        .peak_bytes;
        let m_r = p.min_budget();
        for budget in [m_r, (m_r + unlimited) / 2, unlimited] {
            for policy in [Eviction::Lru, Eviction::Belady] {
                match baseline(&p, budget, policy) {
                    Ok(plan) => {
                        let r = validate(&p, budget, &plan)
                            .unwrap_or_else(|e| panic!("{name} {budget} {policy:?}: {e}"));
                        assert!(r.peak_bytes <= budget);
                    }
                    // First-fit may fragment at the tightest budget; that is a baseline weakness.
                    Err(ScheduleError::Fragmented { .. }) if budget == m_r => {}
                    Err(e) => panic!("{name} {budget} {policy:?}: {e}"),
                }
            }
        }
    }
}

#[test]
fn budget_below_the_largest_working_set_is_refused() {
    let p = problem("gpt2", Phase::Prefill { seq: 64 });
    let e = baseline(&p, p.min_budget() - 1, Eviction::Belady).unwrap_err();
    assert!(matches!(e, ScheduleError::BudgetTooSmall { .. }));
    assert!(e
        .to_string()
        .contains(&format!("smallest feasible budget is {}", p.min_budget())));
}

/// A valid plan at a tight budget to corrupt.
fn sample() -> (Problem, u64, Plan) {
    let p = problem("tiny-llama", Phase::Prefill { seq: 64 });
    let budget = p.min_budget() * 2;
    let plan = baseline(&p, budget, Eviction::Belady).unwrap();
    validate(&p, budget, &plan).unwrap();
    (p, budget, plan)
}

#[test]
fn validator_rejects_broken_plans() {
    let (p, budget, plan) = sample();
    // Wrong traffic claim.
    let mut bad = plan.clone();
    bad.non_compulsory_bytes += 1;
    assert!(validate(&p, budget, &bad)
        .unwrap_err()
        .reason
        .contains("claims"));
    // Capacity.
    assert!(validate(&p, p.min_budget() / 2, &plan).is_err());
    // Two operators swapped out of dependency order.
    let mut bad = plan.clone();
    bad.order.swap(1, 2);
    bad.steps.swap(1, 2);
    assert!(validate(&p, budget, &bad).is_err());
    // Overlapping outputs.
    let mut bad = plan.clone();
    let s = bad
        .steps
        .iter()
        .position(|s| s.outputs.len() >= 2)
        .unwrap_or(0);
    if bad.steps[s].outputs.len() >= 2 {
        bad.steps[s].outputs[1].1 = bad.steps[s].outputs[0].1;
        let e = validate(&p, budget, &bad).unwrap_err();
        assert!(e.reason.contains("overlaps"), "{e}");
    }
    // A missing input: drop a load.
    let mut bad = plan.clone();
    if let Some(s) = bad.steps.iter().position(|s| !s.load.is_empty()) {
        bad.steps[s].load.clear();
        assert!(validate(&p, budget, &bad).is_err());
    }
    // Relocating a tensor that is not resident.
    let mut bad = plan.clone();
    bad.steps[0].relocate.push((p.tensors.len() - 1, 0));
    assert!(validate(&p, budget, &bad)
        .unwrap_err()
        .reason
        .contains("relocates"));
    // Running an operator twice.
    let mut bad = plan;
    bad.order[1] = bad.order[0];
    assert!(validate(&p, budget, &bad)
        .unwrap_err()
        .reason
        .contains("twice"));
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]
    /// Every baseline plan at any feasible budget is accepted by the validator.
    #[test]
    fn baselines_always_validate(seq in 1u64..96, slack in 0u64..400, belady: bool) {
        let p = problem("tiny-llama", Phase::Prefill { seq });
        let budget = p.min_budget() + p.min_budget() * slack / 100;
        let policy = if belady { Eviction::Belady } else { Eviction::Lru };
        let plan = baseline(&p, budget, policy);
        prop_assert!(plan.is_ok(), "{:?}", plan);
        let r = validate(&p, budget, &plan.unwrap());
        prop_assert!(r.is_ok(), "{:?}", r);
    }
}

#[test]
fn fragmentation_is_resolved_by_compaction() {
    // GPT-2's 393 KB FFN activations fragment a budget between M_R and the unlimited peak.
    let p = problem("gpt2", Phase::Prefill { seq: 128 });
    let budget = 835_584;
    let plan = baseline(&p, budget, Eviction::Lru).unwrap();
    let r = validate(&p, budget, &plan).unwrap();
    assert!(r.moved_bytes > 0);
    assert!(plan.steps.iter().any(|s| !s.relocate.is_empty()));
}

#[test]
fn the_memory_map_accounts_for_every_byte_resident() {
    use tessera_scheduler::{replay, Arrival};
    let p = problem("gpt2", Phase::Prefill { seq: 128 });
    let unlimited = validate(
        &p,
        u64::MAX / 4,
        &baseline(&p, u64::MAX / 4, Eviction::Lru).unwrap(),
    )
    .unwrap()
    .peak_bytes;
    let budget = (p.min_budget() + unlimited) / 2;
    let plan = baseline(&p, budget, Eviction::Belady).unwrap();
    let (r, map) = replay(&p, budget, &plan).unwrap();
    let steps = plan.order.len();
    // Stays never overlap in address while both are resident, and stay below the budget.
    for (i, a) in map.iter().enumerate() {
        assert!(
            a.from < a.to && a.to <= steps && a.addr + a.bytes <= budget,
            "{a:?}"
        );
        for b in &map[i + 1..] {
            let time = a.from < b.to && b.from < a.to;
            let space = a.addr < b.addr + b.bytes && b.addr < a.addr + a.bytes;
            assert!(
                !(time && space && a.bytes > 0 && b.bytes > 0),
                "{a:?} overlaps {b:?}"
            );
        }
    }
    // The busiest step's resident bytes are the replay's peak.
    let peak = (0..steps)
        .map(|s| {
            map.iter()
                .filter(|x| x.from <= s && s < x.to)
                .map(|x| x.bytes)
                .sum::<u64>()
        })
        .max()
        .unwrap();
    assert_eq!(peak, r.peak_bytes);
    // At this budget something is spilled and read back.
    assert!(map
        .iter()
        .any(|x| x.arrival == Arrival::Loaded && p.tensors[x.tensor].producer.is_some()));
}
