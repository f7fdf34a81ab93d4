//! Helpers shared by the scheduler's tests.
#![allow(dead_code)] // Not every test crate uses every helper.

use tessera_compiler::frontend::build_graph;
use tessera_scheduler::ilp::Solver;
use tessera_scheduler::problem::{Buffered, Step};
use tessera_scheduler::Problem;
use tessera_spec::compression;
use tessera_spec::graph::{Phase, TensorId};
use tessera_spec::model;

/// The scratchpad problem of a preset model's pass under w4a8-g128.
pub fn problem(name: &str, phase: Phase) -> Problem {
    let m = model::preset(name).unwrap();
    let c = compression::preset("w4a8-g128").unwrap();
    Problem::from_graph(&build_graph(&m, &c, phase, 1).unwrap()).unwrap()
}

/// Every solver in this build (microlp always; CBC and HiGHS with the `cbc` and `highs`
/// features): the tests run each case with each of them.
pub fn solvers() -> Vec<Solver> {
    Solver::ALL.into_iter().filter(|s| s.available()).collect()
}

/// Operator `i` writes tensor `i` of `bytes[i]` bytes and reads the tensors in `reads[i]`, the
/// operators numbered by `order` (a topological order of the graph as given).
pub fn synthetic(bytes: &[u64], reads: &[Vec<usize>], order: &[usize]) -> Problem {
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

/// Every topological order of operators `0..n` reading `reads`.
pub fn topological_orders(reads: &[Vec<usize>]) -> Vec<Vec<usize>> {
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
