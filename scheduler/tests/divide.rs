//! Divide and conquer: stitched plans that the validator approves, never worse than the better
//! baseline, bounded below by the relaxed parts, and the same plan on every run.

use proptest::prelude::*;
mod common;
use common::{problem, solvers};
use tessera_scheduler::ilp::{blocks, divided, fixed_order, IlpError, IlpStatus, Part};
use tessera_scheduler::{baseline, validate, Eviction, Problem};
use tessera_spec::graph::Phase;
use tessera_spec::model;

fn budgets(p: &Problem) -> [u64; 3] {
    let peak = validate(
        p,
        u64::MAX / 4,
        &baseline(p, u64::MAX / 4, Eviction::Belady).unwrap(),
    )
    .unwrap()
    .peak_bytes;
    let m_r = p.min_budget();
    [m_r, (m_r + peak) / 2, peak]
}

fn best_baseline(p: &Problem, budget: u64) -> u64 {
    [Eviction::Lru, Eviction::Belady]
        .into_iter()
        .filter_map(|e| baseline(p, budget, e).ok())
        .map(|plan| validate(p, budget, &plan).unwrap().non_compulsory_bytes)
        .min()
        .unwrap()
}

#[test]
fn blocks_follow_the_layers() {
    let p = problem("tiny-llama", Phase::Prefill { seq: 32 });
    let parts = blocks(&p);
    let layers = model::preset("tiny-llama").unwrap().layers as usize;
    assert_eq!(parts.len(), layers);
    assert_eq!(parts[0].first, 0);
    assert_eq!(parts.last().unwrap().last, p.ops.len() - 1);
    for (i, part) in parts.iter().enumerate() {
        assert_eq!(part.name, format!("layer{i}"));
        if i > 0 {
            assert_eq!(part.first, parts[i - 1].last + 1);
        }
    }
}

#[test]
fn stitched_plans_validate_and_are_bounded() {
    for (name, phase) in [
        ("tiny-llama", Phase::Prefill { seq: 64 }),
        ("gpt2", Phase::Prefill { seq: 128 }),
        ("tiny-llama", Phase::Decode { context: 100 }),
    ] {
        let p = problem(name, phase);
        let parts = blocks(&p);
        for budget in budgets(&p) {
            for solver in solvers() {
                let at = format!("{name} at {budget} with {}", solver.name());
                let d = divided(&p, budget, 20.0, solver, &parts).unwrap();
                let r = validate(&p, budget, &d.plan).unwrap();
                assert_eq!(r.non_compulsory_bytes, d.objective_bytes, "{at}");
                assert_eq!(d.parts.len(), parts.len());
                let charged: u64 = d.parts.iter().map(|x| x.objective_bytes).sum();
                if !d.baseline_kept {
                    assert_eq!(
                        charged, d.objective_bytes,
                        "{at}: the parts' charges add up"
                    );
                }
                assert!(r.non_compulsory_bytes <= best_baseline(&p, budget), "{at}");
                let whole = fixed_order(&p, budget, 20.0, solver).unwrap();
                if whole.status == IlpStatus::Optimal {
                    assert!(
                        d.lower_bound_bytes <= whole.objective_bytes
                            && whole.objective_bytes <= d.objective_bytes,
                        "{at}: bound {} ≤ whole {} ≤ divided {}",
                        d.lower_bound_bytes,
                        whole.objective_bytes,
                        d.objective_bytes
                    );
                }
                assert!((0.0..=1.0).contains(&d.gap), "{at}");
                if d.status == IlpStatus::Optimal {
                    assert_eq!(d.lower_bound_bytes, d.objective_bytes, "{at}");
                }
                let again = divided(&p, budget, 20.0, solver, &parts).unwrap();
                assert_eq!(again.plan, d.plan, "{at}: deterministic");
            }
        }
    }
}

#[test]
fn parts_with_nothing_to_decide() {
    // A chain cut after every operator: each relaxed part's model has no variable at all (every
    // live tensor is touched), which HiGHS refuses as an empty model; it needs no solver.
    let p = common::synthetic(
        &[4, 4, 4, 4],
        &[vec![], vec![0], vec![1], vec![2]],
        &[0, 1, 2, 3],
    );
    let parts: Vec<Part> = (0..4)
        .map(|i| Part {
            name: format!("op{i}"),
            first: i,
            last: i,
        })
        .collect();
    for solver in solvers() {
        let d = divided(&p, p.min_budget(), 10.0, solver, &parts).unwrap();
        assert_eq!(
            validate(&p, p.min_budget(), &d.plan)
                .unwrap()
                .non_compulsory_bytes,
            0
        );
        assert_eq!(d.status, IlpStatus::Optimal, "{}", solver.name());
    }
}

#[test]
fn parts_must_cover_the_graph() {
    let p = problem("tiny-llama", Phase::Prefill { seq: 16 });
    let n = p.ops.len();
    let part = |first, last| Part {
        name: "p".into(),
        first,
        last,
    };
    for solver in solvers() {
        for bad in [
            vec![],
            vec![part(0, n - 2)],
            vec![part(1, n - 1)],
            vec![part(0, 3), part(5, n - 1)],
            vec![part(0, 3), part(3, n - 1)],
        ] {
            let e = divided(&p, p.min_budget(), 10.0, solver, &bad).unwrap_err();
            assert!(matches!(e, IlpError::Parts(_)), "{e}");
        }
        let e = divided(&p, p.min_budget() - 1, 10.0, solver, &blocks(&p)).unwrap_err();
        assert!(e.to_string().contains("smallest feasible budget"), "{e}");
        let e = divided(&p, p.min_budget(), f64::NAN, solver, &blocks(&p)).unwrap_err();
        assert!(e.to_string().contains("positive number of seconds"), "{e}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Any cut of the operator sequence gives a plan the validator approves, no worse than the
    /// better baseline and bounded by the whole-graph optimum.
    #[test]
    fn any_cut_is_sound(cuts in proptest::collection::btree_set(1usize..60, 0..6), pick in 0usize..3) {
        let p = problem("tiny-llama", Phase::Prefill { seq: 48 });
        let n = p.ops.len();
        let mut starts: Vec<usize> = cuts.into_iter().filter(|&c| c < n).collect();
        starts.insert(0, 0);
        let parts: Vec<Part> = starts
            .iter()
            .enumerate()
            .map(|(i, &first)| Part {
                name: format!("part{i}"),
                first,
                last: starts.get(i + 1).map_or(n - 1, |&next| next - 1),
            })
            .collect();
        let budget = budgets(&p)[pick];
        for solver in solvers() {
            let d = divided(&p, budget, 20.0, solver, &parts).unwrap();
            let r = validate(&p, budget, &d.plan).unwrap();
            prop_assert_eq!(r.non_compulsory_bytes, d.objective_bytes);
            prop_assert!(r.non_compulsory_bytes <= best_baseline(&p, budget));
            let whole = fixed_order(&p, budget, 20.0, solver).unwrap();
            prop_assert_eq!(whole.status, IlpStatus::Optimal, "{}", solver.name());
            prop_assert!(d.lower_bound_bytes <= whole.objective_bytes);
            prop_assert!(whole.objective_bytes <= d.objective_bytes);
        }
    }
}
