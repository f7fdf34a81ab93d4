//! Joint order + allocation: validated plans never above the fixed-order ILP, equal on small
//! graphs to the best fixed-order plan over every topological order, and a clear refusal for
//! graphs too large to solve whole.

use proptest::prelude::*;
use tessera_compiler::frontend::build_graph;
use tessera_scheduler::ilp::{fixed_order, IlpError, IlpStatus, Solver};
use tessera_scheduler::joint::joint;
use tessera_scheduler::problem::{Buffered, Step};
use tessera_scheduler::{validate, Problem};
use tessera_spec::compression;
use tessera_spec::graph::{Phase, TensorId};
use tessera_spec::model;

fn problem(name: &str, phase: Phase) -> Problem {
    let m = model::preset(name).unwrap();
    let c = compression::preset("w4a8-g128").unwrap();
    Problem::from_graph(&build_graph(&m, &c, phase, 1).unwrap()).unwrap()
}

fn solver() -> Solver {
    if Solver::Cbc.available() {
        Solver::Cbc
    } else {
        Solver::Microlp
    }
}

/// Operator `i` writes tensor `i` of `bytes[i]` bytes and reads the tensors in `reads[i]`, the
/// operators numbered by `order` (a topological order of the graph as given).
fn synthetic(bytes: &[u64], reads: &[Vec<usize>], order: &[usize]) -> Problem {
    let mut at = vec![0; order.len()];
    for (s, &o) in order.iter().enumerate() {
        at[o] = s;
    }
    let mut tensors: Vec<Buffered> = bytes
        .iter()
        .enumerate()
        .map(|(i, &b)| Buffered {
            id: TensorId(i as u32),
            name: format!("t{i}"),
            bytes: b,
            producer: Some(at[i]),
            consumers: Vec::new(),
        })
        .collect();
    let ops = order
        .iter()
        .enumerate()
        .map(|(s, &i)| {
            let mut inputs = reads[i].clone();
            inputs.sort_unstable();
            inputs.dedup();
            for &t in &inputs {
                tensors[t].consumers.push(s);
            }
            Step {
                name: format!("op{i}"),
                inputs,
                outputs: vec![i],
                streamed_bytes: 0,
            }
        })
        .collect();
    Problem { ops, tensors }
}

#[test]
fn reordering_removes_spills() {
    // In the graph's order both big tensors are live at once: one spills, and reading it back
    // evicts the other (40 bytes); interleaving the two branches fits 12 bytes with no spill.
    let reads = [vec![], vec![], vec![0], vec![1], vec![2, 3]];
    let p = synthetic(&[10, 10, 1, 1, 1], &reads, &[0, 1, 2, 3, 4]);
    let j = joint(&p, 12, 10.0, solver()).unwrap();
    assert_eq!(j.fixed_order_bytes, 40);
    assert_eq!(j.non_compulsory_bytes, 0);
    assert_eq!(j.status, IlpStatus::Optimal);
    assert!(!j.fixed_order_kept);
    assert_eq!(validate(&p, 12, &j.plan).unwrap().non_compulsory_bytes, 0);
}

#[test]
fn model_graph_plans_validate() {
    let p = problem("tiny-llama", Phase::Prefill { seq: 32 });
    let m_r = p.min_budget();
    for budget in [m_r, m_r + m_r / 4] {
        let j = joint(&p, budget, 30.0, solver()).unwrap();
        let r = validate(&p, budget, &j.plan).unwrap();
        assert_eq!(r.non_compulsory_bytes, j.non_compulsory_bytes);
        assert!(j.non_compulsory_bytes <= j.fixed_order_bytes);
        assert!(j.lower_bound_bytes <= j.non_compulsory_bytes);
    }
}

#[test]
fn large_graphs_are_refused_clearly() {
    let p = problem("gpt2", Phase::Prefill { seq: 128 });
    let e = joint(&p, p.min_budget() * 2, 10.0, solver()).unwrap_err();
    assert!(matches!(e, IlpError::JointTooLarge { .. }), "{e}");
    assert!(e.to_string().contains("--mode fixed-order"), "{e}");
    let e = joint(&p, p.min_budget() - 1, 10.0, solver()).unwrap_err();
    assert!(e.to_string().contains("smallest feasible budget"), "{e}");
}

/// Every topological order of operators `0..n` reading `reads`.
fn topological_orders(reads: &[Vec<usize>]) -> Vec<Vec<usize>> {
    fn extend(reads: &[Vec<usize>], order: &mut Vec<usize>, out: &mut Vec<Vec<usize>>) {
        if order.len() == reads.len() {
            out.push(order.clone());
            return;
        }
        for o in 0..reads.len() {
            if !order.contains(&o) && reads[o].iter().all(|t| order.contains(t)) {
                order.push(o);
                extend(reads, order, out);
                order.pop();
            }
        }
    }
    let mut out = Vec::new();
    extend(reads, &mut Vec::new(), &mut out);
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(16))]

    /// The joint optimum is the best fixed-order optimum over every topological order.
    #[test]
    fn the_best_order_and_residency(
        bytes in proptest::collection::vec(1u64..20, 3..6),
        edges in proptest::collection::vec((0usize..6, 0usize..6), 0..8),
        slack in 0u64..20,
    ) {
        let n = bytes.len();
        let mut reads = vec![Vec::new(); n];
        for (a, b) in edges {
            let (a, b) = (a % n, b % n);
            if a < b && !reads[b].contains(&a) {
                reads[b].push(a);
            }
        }
        let graph_order: Vec<usize> = (0..n).collect();
        let p = synthetic(&bytes, &reads, &graph_order);
        let budget = p.min_budget() + slack;
        let best = topological_orders(&reads)
            .iter()
            .map(|o| {
                let q = synthetic(&bytes, &reads, o);
                let f = fixed_order(&q, budget, 10.0, solver()).unwrap();
                assert_eq!(f.status, IlpStatus::Optimal);
                validate(&q, budget, &f.plan).unwrap().non_compulsory_bytes
            })
            .min()
            .unwrap();
        let j = joint(&p, budget, 10.0, solver()).unwrap();
        prop_assert_eq!(j.status, IlpStatus::Optimal);
        prop_assert_eq!(validate(&p, budget, &j.plan).unwrap().non_compulsory_bytes, j.non_compulsory_bytes);
        prop_assert_eq!(j.non_compulsory_bytes, best);
    }
}
