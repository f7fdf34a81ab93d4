//! Joint mode: the ILP chooses the operator order (one operator per step, producers first)
//! together with residency, spills and reloads, minimising non-compulsory off-chip bytes under
//! the budget. Solved whole only (graphs up to [`MAX_WHOLE_ORDER_BINARIES`] order binaries);
//! the fixed-order plan is its fallback and bound: the joint plan is kept only if it costs no
//! more.
//!
//! Per operator `o` and step `s`: `y[o,s]` as in [`crate::peak`], `x[o,s] = y[o,s] − y[o,s−1]`
//! (runs at `s`). Per tensor `t` and step `s`: `r[t,s]` (binary, resident during `s`) with
//! - `r[t,s] ≥ x[o,s]` for every operator touching `t` (inputs resident, outputs placed);
//! - `r[t,s] ≤ y[p,s]` (not before its producer `p`; a graph input: not before a reader);
//! - `r[t,s] ≤ r[t,s−1] + Σ_{o touches t} x[o,s]` (no prefetch);
//! - `need[t,s] ≥ 1 − y[c,s−1]` per reader `c`; `spill[t] ≥ r[t,s−1] − r[t,s] − (1 − need[t,s])`
//!   for produced tensors (evicting a tensor still needed writes it to DRAM once);
//! - `up[t,s] ≥ r[t,s] − r[t,s−1] − x[p,s]` (a read from DRAM; a graph input's first is
//!   compulsory, so its reloads are `Σ_s up[t,s] − 1`);
//! - `Σ_t bytes(t)·r[t,s] ≤ budget`.

use crate::baseline::realise_in;
use crate::ilp::{fixed_order, run_milp, with_solver, IlpError, IlpStatus, Milp, Solver};
use crate::peak::{order_binaries, MAX_WHOLE_ORDER_BINARIES};
use crate::plan::{validate, Plan};
use crate::problem::Problem;
use good_lp::solvers::Solver as LpSolver;
use good_lp::{
    constraint, variable, Constraint, Expression, ProblemVariables, ResolutionError, Solution,
    SolverModel, Variable, WithInitialSolution, WithTimeLimit,
};
use serde::Serialize;
use std::time::Instant;

/// The joint plan and how it was found.
#[derive(Debug, Clone, Serialize)]
pub struct JointOutcome {
    /// The plan (validated under the budget).
    pub plan: Plan,
    /// Why the solver stopped.
    pub status: IlpStatus,
    /// Non-compulsory bytes the validator measured.
    pub non_compulsory_bytes: u64,
    /// The fixed-order ILP's non-compulsory bytes (the joint optimum is never above it).
    pub fixed_order_bytes: u64,
    /// The fixed-order plan was better than what the joint search found and is returned.
    pub fixed_order_kept: bool,
    /// The joint optimum when proven, otherwise 0.
    pub lower_bound_bytes: u64,
    /// `(plan − lower bound) / plan`.
    pub gap: f64,
    /// Seconds in the solvers (joint and fixed-order).
    pub solve_seconds: f64,
    /// Binary variables of the joint model.
    pub binaries: usize,
    /// Constraints of the joint model.
    pub constraints: usize,
}

/// Plans `problem` under `budget` bytes choosing order and residency together, within
/// `time_limit_s` seconds (half for the fixed-order plan it starts from, half for the joint
/// model).
pub fn joint(
    problem: &Problem,
    budget: u64,
    time_limit_s: f64,
    solver: Solver,
) -> Result<JointOutcome, IlpError> {
    let n = problem.ops.len();
    let began = Instant::now();
    let fixed = fixed_order(problem, budget, time_limit_s / 2.0, solver)?;
    if order_binaries(n) > MAX_WHOLE_ORDER_BINARIES {
        return Err(IlpError::JointTooLarge {
            ops: n,
            binaries: order_binaries(n),
        });
    }
    let model = Model::new(problem, budget);
    let binaries = model.binaries;
    let constraints = model.constraints.len();
    let (status, order, resident, claimed) =
        with_solver!(solver, |s| run(s, &model, problem, time_limit_s / 2.0))?;
    let solve_seconds = began.elapsed().as_secs_f64();
    let fixed_bytes = validate(problem, budget, &fixed.plan)?.non_compulsory_bytes;
    let found = match order {
        Some(order) => {
            let plan = realise_in(problem, budget, &order, &resident)?;
            let r = validate(problem, budget, &plan)?;
            if r.non_compulsory_bytes > claimed {
                return Err(IlpError::Solver(format!(
                    "the joint residency costs {} bytes when replayed, the solver claims {claimed}",
                    r.non_compulsory_bytes
                )));
            }
            Some((plan, r.non_compulsory_bytes))
        }
        None => None,
    };
    let (plan, bytes, kept) = match found {
        Some((plan, bytes)) if bytes <= fixed_bytes => (plan, bytes, false),
        _ => (fixed.plan, fixed_bytes, true),
    };
    // A claim of optimality above the fixed-order plan is wrong (as `ilp::fixed_order` treats
    // one above the Belady plan): the kept plan is valid but not proven optimal.
    let status = if kept && status == IlpStatus::Optimal {
        IlpStatus::Feasible
    } else {
        status
    };
    // No plan spills less than nothing: a plan without spills is optimal whatever stopped the
    // search.
    let status = if bytes == 0 {
        IlpStatus::Optimal
    } else {
        status
    };
    let lower_bound_bytes = if status == IlpStatus::Optimal {
        bytes
    } else {
        0
    };
    Ok(JointOutcome {
        plan,
        status,
        non_compulsory_bytes: bytes,
        fixed_order_bytes: fixed_bytes,
        fixed_order_kept: kept,
        lower_bound_bytes,
        gap: if bytes == 0 {
            0.0
        } else {
            (bytes - lower_bound_bytes) as f64 / bytes as f64
        },
        solve_seconds,
        binaries,
        constraints,
    })
}

/// The joint model.
struct Model {
    /// `y[o][s]`; `None` at the last step (fixed to 1).
    y: Vec<Vec<Option<Variable>>>,
    /// `r[t][s]`.
    r: Vec<Vec<Variable>>,
    goal: Expression,
    /// Bytes per objective unit and the objective's constant (graph inputs' compulsory reads).
    offset: f64,
    pv: ProblemVariables,
    constraints: Vec<Constraint>,
    binaries: usize,
}

/// Bytes per objective unit (MiB keeps coefficients near 1).
const MIB: f64 = (1u64 << 20) as f64;

impl Model {
    fn new(problem: &Problem, budget: u64) -> Model {
        let n = problem.ops.len();
        let mut pv = ProblemVariables::new();
        let y: Vec<Vec<Option<Variable>>> = (0..n)
            .map(|_| {
                (0..n)
                    .map(|s| (s + 1 < n).then(|| pv.add(variable().binary())))
                    .collect()
            })
            .collect();
        let ran = |o: usize, s: Option<usize>| -> Expression {
            match s {
                None => Expression::from(0.0),
                Some(s) => y[o][s].map_or(Expression::from(1.0), Expression::from),
            }
        };
        let runs = |o: usize, s: usize| ran(o, Some(s)) - ran(o, s.checked_sub(1));
        let mut rows = Vec::new();
        for o in 0..n {
            for s in 0..n - 1 {
                rows.push(constraint!(ran(o, Some(s)) <= ran(o, Some(s + 1))));
            }
            for &t in &problem.ops[o].inputs {
                if let Some(p) = problem.tensors[t].producer.filter(|&p| p != o) {
                    for s in 0..n {
                        rows.push(constraint!(ran(o, Some(s)) <= ran(p, s.checked_sub(1))));
                    }
                }
            }
        }
        for s in 0..n - 1 {
            let sum: Expression = (0..n).map(|o| ran(o, Some(s))).sum();
            rows.push(constraint!(sum == (s + 1) as f64));
        }
        let r: Vec<Vec<Variable>> = problem
            .tensors
            .iter()
            .map(|_| (0..n).map(|_| pv.add(variable().binary())).collect())
            .collect();
        let mut goal = Expression::from(0.0);
        let mut offset = 0.0;
        let mut capacity = vec![Expression::from(0.0); n];
        for (t, tensor) in problem.tensors.iter().enumerate() {
            let mib = tensor.bytes as f64 / MIB;
            let touching: Vec<usize> = tensor
                .producer
                .into_iter()
                .chain(tensor.consumers.iter().copied())
                .collect();
            let spill = tensor.producer.map(|_| pv.add(variable().min(0).max(1)));
            if let Some(spill) = spill {
                goal += mib * spill;
            }
            if tensor.producer.is_none() && !tensor.consumers.is_empty() {
                offset += mib;
            }
            for s in 0..n {
                let cur = r[t][s];
                capacity[s] += (tensor.bytes as f64 / budget as f64) * cur;
                let prev = s
                    .checked_sub(1)
                    .map_or(Expression::from(0.0), |p| Expression::from(r[t][p]));
                let mut touched = Expression::from(0.0);
                for &o in &touching {
                    rows.push(constraint!(cur >= runs(o, s)));
                    touched += runs(o, s);
                }
                let started: Expression = match tensor.producer {
                    Some(p) => ran(p, Some(s)),
                    None => tensor.consumers.iter().map(|&c| ran(c, Some(s))).sum(),
                };
                rows.push(constraint!(cur <= started));
                rows.push(constraint!(cur <= prev.clone() + touched));
                let up = pv.add(variable().min(0).max(1));
                goal += mib * up;
                let made = tensor
                    .producer
                    .map_or(Expression::from(0.0), |p| runs(p, s));
                rows.push(constraint!(up >= cur - prev.clone() - made));
                if let (Some(spill), true) = (spill, s > 0) {
                    let need = pv.add(variable().min(0).max(1));
                    for &c in &tensor.consumers {
                        rows.push(constraint!(need >= 1.0 - ran(c, Some(s - 1))));
                    }
                    rows.push(constraint!(spill >= prev - cur - (1.0 - need)));
                }
            }
        }
        for c in capacity {
            rows.push(constraint!(c <= 1.0));
        }
        Model {
            y,
            r,
            goal,
            offset,
            pv,
            constraints: rows,
            binaries: order_binaries(n) + problem.tensors.len() * n,
        }
    }
}

/// What a solve gives: status, the order (`None` if the solver's is not one, or it gave no
/// solution), residency per step, and the non-compulsory bytes it claims.
type Found = (IlpStatus, Option<Vec<usize>>, Vec<Vec<bool>>, u64);

/// Solves `model` with `solver` and reads back the order, the residency and the claimed bytes.
fn run<S>(solver: S, model: &Model, problem: &Problem, time_limit_s: f64) -> Result<Found, IlpError>
where
    S: LpSolver,
    S::Model: WithTimeLimit + WithInitialSolution,
    <S::Model as SolverModel>::Error: Into<ResolutionError>,
{
    let (status, solution) = match run_milp(
        solver,
        model.pv.clone(),
        model.goal.clone(),
        model.constraints.clone(),
        None,
        time_limit_s,
    )? {
        Milp::Solved(status, solution) => (status, solution),
        // No solution from the solver: the fixed-order plan stands.
        Milp::Fallback(status) => return Ok((status, None, Vec::new(), u64::MAX)),
    };
    let n = problem.ops.len();
    // Binaries rounded at 0.5; operator o runs at the first step where y[o][s] is 1.
    let mut at: Vec<(usize, usize)> = model
        .y
        .iter()
        .enumerate()
        .map(|(o, row)| {
            let s = row
                .iter()
                .position(|v| v.is_none_or(|v| solution.value(v) > 0.5))
                .unwrap_or(n - 1);
            (s, o)
        })
        .collect();
    at.sort_unstable();
    let order: Vec<usize> = at.iter().map(|&(_, o)| o).collect();
    let mut position = vec![0; n];
    for (s, &o) in order.iter().enumerate() {
        position[o] = s;
    }
    let valid = at.iter().enumerate().all(|(s, &(step, _))| step == s)
        && (0..n).all(|c| {
            problem.ops[c].inputs.iter().all(|&t| {
                problem.tensors[t]
                    .producer
                    .is_none_or(|p| position[p] < position[c])
            })
        });
    let resident: Vec<Vec<bool>> = model
        .r
        .iter()
        .map(|row| row.iter().map(|&v| solution.value(v) > 0.5).collect())
        .collect();
    let claimed = ((solution.eval(&model.goal) - model.offset).max(0.0) * MIB).round() as u64;
    Ok((status, valid.then_some(order), resident, claimed))
}
