//! A schedule (operator order, scratchpad addresses, spills and reloads) and the independent
//! validator that replays it.
//!
//! Semantics of step `s`, which runs operator `order[s]`:
//! 1. `evict`: listed tensors leave the scratchpad. One with no copy in DRAM is written there
//!    (a spill, non-compulsory traffic); one with a copy (a graph input, or a tensor spilled before)
//!    is dropped for free.
//! 2. `relocate`: listed resident tensors move to new addresses inside the scratchpad (an on-chip
//!    copy that compacts free space; no DRAM traffic, counted as `moved_bytes`).
//! 3. `load`: listed tensors are read from DRAM into the scratchpad at the given addresses. The first
//!    read of a graph input is compulsory; every other read is non-compulsory.
//! 4. The operator runs: every scratchpad tensor it reads must be resident.
//! 5. `outputs`: each output is placed at the given address.
//! 6. Tensors whose last reader has run leave the scratchpad for free; graph outputs (no reader)
//!    are written to DRAM as compulsory traffic and leave too.
//!
//! Resident tensors may never overlap, and every byte must lie below the budget.

use crate::problem::Problem;
use serde::Serialize;

/// What happens around one operator.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize)]
pub struct StepPlan {
    /// Tensors to evict before the operator (problem tensor indices).
    pub evict: Vec<usize>,
    /// Resident tensors moved to new addresses before it (compaction).
    pub relocate: Vec<(usize, u64)>,
    /// Tensors to load before it, with their addresses.
    pub load: Vec<(usize, u64)>,
    /// Addresses of the operator's outputs.
    pub outputs: Vec<(usize, u64)>,
}

/// A complete schedule with the traffic it claims.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    /// Operators (problem indices) in execution order.
    pub order: Vec<usize>,
    /// One entry per position in `order`.
    pub steps: Vec<StepPlan>,
    /// Non-compulsory off-chip bytes the plan claims.
    pub non_compulsory_bytes: u64,
}

/// What the validator measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Replay {
    /// Off-chip bytes no schedule avoids.
    pub compulsory_bytes: u64,
    /// Spill writes and reloads.
    pub non_compulsory_bytes: u64,
    /// Largest scratchpad occupancy, in bytes.
    pub peak_bytes: u64,
    /// Bytes copied inside the scratchpad by relocations.
    pub moved_bytes: u64,
}

/// How a tensor came to occupy its scratchpad range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Arrival {
    /// Written there by its producer.
    Produced,
    /// Read from DRAM.
    Loaded,
    /// Moved there by a relocation.
    Relocated,
}

/// One tensor's stay at one scratchpad address: resident from step `from` to step `to`
/// (exclusive: it is gone before step `to`'s operator runs, or `to` is the plan's length).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Residency {
    /// Problem tensor index.
    pub tensor: usize,
    /// First byte.
    pub addr: u64,
    /// Bytes.
    pub bytes: u64,
    /// First step it is resident at (loads and relocations happen before the step's operator).
    pub from: usize,
    /// Step it has left by.
    pub to: usize,
    /// How it arrived.
    pub arrival: Arrival,
}

/// Why a plan is not realisable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("step {step}: {reason}")]
pub struct PlanError {
    /// Position in the order (or the order's length for whole-plan problems).
    pub step: usize,
    /// What is wrong.
    pub reason: String,
}

/// Replays `plan` on `problem` under `budget` bytes and recomputes its traffic, which must equal
/// what the plan claims.
pub fn validate(problem: &Problem, budget: u64, plan: &Plan) -> Result<Replay, PlanError> {
    replay(problem, budget, plan).map(|(r, _)| r)
}

/// [`validate`], also returning every tensor's stays in the scratchpad (the memory map), in the
/// order they ended.
pub fn replay(
    problem: &Problem,
    budget: u64,
    plan: &Plan,
) -> Result<(Replay, Vec<Residency>), PlanError> {
    let n = problem.ops.len();
    let fail = |step: usize, reason: String| PlanError { step, reason };
    if plan.order.len() != n || plan.steps.len() != n {
        return Err(fail(
            n,
            format!("the plan has {} steps for {n} operators", plan.order.len()),
        ));
    }
    let mut position = vec![usize::MAX; n];
    for (s, &o) in plan.order.iter().enumerate() {
        if o >= n || position[o] != usize::MAX {
            return Err(fail(
                s,
                format!("operator {o} is out of range or runs twice"),
            ));
        }
        position[o] = s;
    }
    let t_count = problem.tensors.len();
    // Remaining readers per tensor, to free tensors after their last use.
    let mut readers_left: Vec<usize> = problem.tensors.iter().map(|t| t.consumers.len()).collect();
    let mut resident: Vec<Option<u64>> = vec![None; t_count];
    let mut in_dram: Vec<bool> = problem
        .tensors
        .iter()
        .map(|t| t.producer.is_none())
        .collect();
    let mut read_once: Vec<bool> = vec![false; t_count];
    let mut since: Vec<(usize, Arrival)> = vec![(0, Arrival::Produced); t_count];
    let mut map: Vec<Residency> = Vec::new();
    let leave = |map: &mut Vec<Residency>,
                 t: usize,
                 addr: u64,
                 (from, arrival): (usize, Arrival),
                 to: usize| {
        map.push(Residency {
            tensor: t,
            addr,
            bytes: problem.tensors[t].bytes,
            from,
            to,
            arrival,
        })
    };
    let mut produced: Vec<bool> = vec![false; t_count];
    let (mut non_compulsory, mut peak, mut moved) = (0u64, 0u64, 0u64);
    let name = |t: usize| problem.tensors[t].name.as_str();

    let place =
        |resident: &Vec<Option<u64>>, t: usize, addr: u64, step: usize| -> Result<(), PlanError> {
            let size = problem.tensors[t].bytes;
            if addr + size > budget {
                return Err(fail(
                    step,
                    format!(
                        "`{}` at {addr}..{} exceeds the budget of {budget} bytes",
                        name(t),
                        addr + size
                    ),
                ));
            }
            for (other, a) in resident.iter().enumerate() {
                if let Some(a) = *a {
                    let b = a + problem.tensors[other].bytes;
                    if other != t && addr < b && a < addr + size && size > 0 && b > a {
                        return Err(fail(
                            step,
                            format!(
                                "`{}` at {addr}..{} overlaps `{}` at {a}..{b}",
                                name(t),
                                addr + size,
                                name(other)
                            ),
                        ));
                    }
                }
            }
            Ok(())
        };

    for (s, (&o, sp)) in plan.order.iter().zip(&plan.steps).enumerate() {
        let op = &problem.ops[o];
        for &t in &sp.evict {
            let Some(addr) = resident.get(t).copied().flatten() else {
                return Err(fail(s, format!("evicts tensor {t}, which is not resident")));
            };
            leave(&mut map, t, addr, since[t], s);
            resident[t] = None;
            if !in_dram[t] {
                non_compulsory += problem.tensors[t].bytes;
                in_dram[t] = true;
            }
        }
        for &(t, _) in &sp.relocate {
            let Some(old) = resident.get(t).copied().flatten() else {
                return Err(fail(
                    s,
                    format!("relocates tensor {t}, which is not resident"),
                ));
            };
            leave(&mut map, t, old, since[t], s);
            resident[t] = None;
        }
        for &(t, addr) in &sp.relocate {
            place(&resident, t, addr, s)?;
            resident[t] = Some(addr);
            since[t] = (s, Arrival::Relocated);
            moved += problem.tensors[t].bytes;
        }
        for &(t, addr) in &sp.load {
            if t >= t_count || resident[t].is_some() || !in_dram[t] {
                return Err(fail(
                    s,
                    format!("loads tensor {t}, which is resident or has no DRAM copy"),
                ));
            }
            place(&resident, t, addr, s)?;
            resident[t] = Some(addr);
            since[t] = (s, Arrival::Loaded);
            if problem.tensors[t].producer.is_none() && !read_once[t] {
                read_once[t] = true; // the compulsory first read of a graph input
            } else {
                non_compulsory += problem.tensors[t].bytes;
            }
        }
        for &t in &op.inputs {
            if let Some(p) = problem.tensors[t].producer {
                if position[p] >= s {
                    return Err(fail(
                        s,
                        format!(
                            "`{}` reads `{}` before `{}` writes it",
                            op.name,
                            name(t),
                            problem.ops[p].name
                        ),
                    ));
                }
            }
            if resident[t].is_none() {
                return Err(fail(
                    s,
                    format!("`{}` reads `{}`, which is not resident", op.name, name(t)),
                ));
            }
        }
        let mut placed: Vec<usize> = sp.outputs.iter().map(|&(t, _)| t).collect();
        placed.sort_unstable();
        let mut expected = op.outputs.clone();
        expected.sort_unstable();
        if placed != expected {
            return Err(fail(
                s,
                format!(
                    "`{}` has outputs {expected:?}, the plan places {placed:?}",
                    op.name
                ),
            ));
        }
        for &(t, addr) in &sp.outputs {
            place(&resident, t, addr, s)?;
            resident[t] = Some(addr);
            since[t] = (s, Arrival::Produced);
            produced[t] = true;
        }
        let occupied: u64 = resident
            .iter()
            .enumerate()
            .filter(|(_, a)| a.is_some())
            .map(|(t, _)| problem.tensors[t].bytes)
            .sum();
        peak = peak.max(occupied);
        for &t in &op.inputs {
            readers_left[t] -= 1;
        }
        for t in op.inputs.iter().chain(&op.outputs) {
            if readers_left[*t] == 0 {
                if let Some(addr) = resident[*t].take() {
                    leave(&mut map, *t, addr, since[*t], s + 1);
                }
            }
        }
    }
    for (t, a) in resident.iter().enumerate() {
        if let Some(addr) = *a {
            leave(&mut map, t, addr, since[t], n);
        }
    }
    debug_assert!(produced
        .iter()
        .zip(&problem.tensors)
        .all(|(p, t)| *p || t.producer.is_none()));
    if plan.non_compulsory_bytes != non_compulsory {
        return Err(fail(
            n,
            format!(
                "the plan claims {} non-compulsory bytes, the replay measures {non_compulsory}",
                plan.non_compulsory_bytes
            ),
        ));
    }
    let replay = Replay {
        compulsory_bytes: problem.compulsory_bytes(),
        non_compulsory_bytes: non_compulsory,
        peak_bytes: peak,
        moved_bytes: moved,
    };
    Ok((replay, map))
}
