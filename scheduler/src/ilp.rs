//! The ILP in the manner of COSMA, fixed-order mode: for the graph's operator order and a
//! scratchpad budget, which tensors stay resident at each step, which are spilled and which
//! reloaded, minimising non-compulsory off-chip bytes. Built in named steps (variables,
//! constraints, objective, solve, extraction).
//!
//! Per scratchpad tensor `t` and step `s` of its lifetime (producer, or first reader for graph
//! inputs, to last reader):
//! - `r[t,s]` (binary): resident while operator `s` runs; fixed to 1 where `s` reads or writes `t`;
//! - a tensor becomes resident only where it is read (no prefetch): `r[t,s] ≤ r[t,s−1]` elsewhere;
//! - `reload[t,s] ≥ r[t,s] − r[t,s−1]`, and for produced tensors `spill[t] ≥ r[t,s−1] − r[t,s]`
//!   (written to DRAM once, however often evicted);
//! - capacity: `Σ_t bytes(t)·r[t,s] ≤ budget` at every step (in units of the budget);
//! - objective: `Σ_t bytes(t)·(spill[t] + Σ_s reload[t,s])`.
//!
//! Addresses come from realising the residency with first-fit and compaction
//! ([`crate::baseline::realise`]): compaction makes any residency that fits the budget placeable,
//! so the plan never pays more than the ILP's objective; the validator replays it. microlp
//! starts from the Belady baseline's residency; whatever the solver, a time-limited search that
//! ends worse returns the Belady plan, and a solution whose residency does not cost what the solver
//! claims is an error. Joint order + allocation, the address ILP and minimum-peak mode come next.

use crate::baseline::{baseline, realise, Eviction};
use crate::plan::{validate, Plan, PlanError};
use crate::problem::{Problem, ScheduleError};
use good_lp::solvers::Solver as LpSolver;
use good_lp::{
    constraint, microlp, variable, Constraint, Expression, ProblemVariables, ResolutionError,
    Solution, SolutionStatus, SolverModel, Variable, WithInitialSolution, WithTimeLimit,
};
use serde::Serialize;
use std::time::Instant;

/// Largest number of residency variables solved whole.
pub const MAX_BINARIES: usize = 200_000;

/// The MILP solver behind good_lp.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Solver {
    /// microlp: pure Rust, always built.
    Microlp,
    /// COIN-OR CBC (Debian's `coinor-libcbc-dev`); built with the `cbc` feature.
    Cbc,
}

impl Solver {
    /// Every solver, by name.
    pub const ALL: [Solver; 2] = [Solver::Microlp, Solver::Cbc];

    /// Short name.
    pub fn name(self) -> &'static str {
        match self {
            Solver::Microlp => "microlp",
            Solver::Cbc => "cbc",
        }
    }

    /// Whether this build includes it.
    pub fn available(self) -> bool {
        match self {
            Solver::Microlp => true,
            Solver::Cbc => cfg!(feature = "cbc"),
        }
    }
}

/// Why the ILP stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IlpStatus {
    /// Proven optimal.
    Optimal,
    /// The time limit ended the search; the plan is the best found.
    TimeLimit,
}

/// The ILP's plan and how it was found.
#[derive(Debug, Clone, Serialize)]
pub struct IlpOutcome {
    /// The plan (validated).
    pub plan: Plan,
    /// Why the solver stopped.
    pub status: IlpStatus,
    /// Wall-clock seconds in the solver.
    pub solve_seconds: f64,
    /// Binary variables.
    pub binaries: usize,
    /// Constraints.
    pub constraints: usize,
    /// The objective the solver reached, bytes.
    pub objective_bytes: u64,
}

/// Why the ILP gave no plan.
#[derive(Debug, thiserror::Error)]
pub enum IlpError {
    /// The problem itself is unusable (empty graph, budget below the largest working set).
    #[error(transparent)]
    Problem(#[from] ScheduleError),
    /// The time limit is not a positive number of seconds.
    #[error("time limit {0} s: give a positive number of seconds (at most 86400)")]
    TimeLimit(f64),
    /// Too large to solve whole.
    #[error(
        "{binaries} residency variables exceed the {MAX_BINARIES} solved whole; plan a block at a \
         time"
    )]
    TooLarge {
        /// Variables the problem needs.
        binaries: usize,
    },
    /// The solver failed.
    #[error("the solver failed: {0}")]
    Solver(String),
    /// The solver is not in this build.
    #[error("this build has no {0} solver: build with `--features cbc` (needs Debian's coinor-libcbc-dev)")]
    Unavailable(&'static str),
    /// The realised plan failed validation (a bug: reported, never hidden).
    #[error("the ILP's plan does not validate: {0}")]
    Invalid(#[from] PlanError),
}

/// One residency entry: fixed (the operator at that step touches the tensor) or a variable.
#[derive(Debug, Clone, Copy)]
enum Residency {
    Fixed,
    Free(Variable),
}

impl Residency {
    fn expr(self) -> Expression {
        match self {
            Residency::Fixed => Expression::from(1.0),
            Residency::Free(v) => Expression::from(v),
        }
    }
}

/// The model's variables.
struct Vars {
    /// Per tensor: first step of its lifetime and its residency per step from there.
    residency: Vec<(usize, Vec<Residency>)>,
    spill: Vec<Option<Variable>>,
    reload: Vec<Vec<Variable>>,
    binaries: usize,
}

/// Plans `problem` in the graph's order under `budget` bytes, within `time_limit_s` seconds, with
/// `solver`.
pub fn fixed_order(
    problem: &Problem,
    budget: u64,
    time_limit_s: f64,
    solver: Solver,
) -> Result<IlpOutcome, IlpError> {
    if !solver.available() {
        return Err(IlpError::Unavailable(solver.name()));
    }
    if !(time_limit_s > 0.0 && time_limit_s <= 86_400.0) {
        return Err(IlpError::TimeLimit(time_limit_s));
    }
    problem.check_budget(budget)?;
    let mut pv = ProblemVariables::new();
    let vars = variables(problem, &mut pv);
    if vars.binaries > MAX_BINARIES {
        return Err(IlpError::TooLarge {
            binaries: vars.binaries,
        });
    }
    let warm = baseline(problem, budget, Eviction::Belady)?;
    let start = warm_start(problem, &vars, &warm);
    let constraints = constraints_of(problem, budget, &vars);
    let constraint_count = constraints.len();
    let goal = objective(problem, &vars);
    let began = Instant::now();
    let (status, found) = match solver {
        Solver::Microlp => solve(
            microlp,
            problem,
            &vars,
            pv,
            goal,
            constraints,
            Some(start),
            time_limit_s,
        )?,
        Solver::Cbc => solve_cbc(problem, &vars, pv, goal, constraints, time_limit_s)?,
    };
    let solve_seconds = began.elapsed().as_secs_f64();
    // The best incumbent: a time-limited search that ends worse than the Belady plan returns
    // that plan.
    let start_resident = residency_of(problem, &warm);
    let found_bytes = objective_value(problem, &found);
    let start_bytes = objective_value(problem, &start_resident);
    let (resident, objective_bytes) = if found_bytes <= start_bytes {
        (found, found_bytes)
    } else if status == IlpStatus::TimeLimit {
        (start_resident, start_bytes)
    } else {
        return Err(IlpError::Solver(format!(
            "claimed optimal at {found_bytes} bytes, above the {start_bytes} bytes of the Belady \
             plan"
        )));
    };
    let plan = realise(problem, budget, &resident)?;
    validate(problem, budget, &plan)?;
    Ok(IlpOutcome {
        plan,
        status,
        solve_seconds,
        binaries: vars.binaries,
        constraints: constraint_count,
        objective_bytes,
    })
}

/// Solves the model with `solver` (from `start` if given) and rounds the residency, checking
/// that it costs what the solver claims.
#[allow(clippy::too_many_arguments)]
fn solve<S>(
    solver: S,
    problem: &Problem,
    vars: &Vars,
    pv: ProblemVariables,
    goal: Expression,
    constraints: Vec<Constraint>,
    start: Option<Vec<(Variable, f64)>>,
    time_limit_s: f64,
) -> Result<(IlpStatus, Vec<Vec<bool>>), IlpError>
where
    S: LpSolver,
    S::Model: WithTimeLimit + WithInitialSolution,
    <S::Model as SolverModel>::Error: Into<ResolutionError>,
{
    let check = goal.clone();
    let mut model = pv
        .minimise(goal)
        .using(solver)
        .with_time_limit(time_limit_s);
    if let Some(start) = start {
        model = model.with_initial_solution(start);
    }
    for c in constraints {
        model.add_constraint(c);
    }
    let solution = model.solve().map_err(|e| match e.into() {
        ResolutionError::Infeasible => IlpError::Solver(
            "infeasible, although every operator's working set fits the budget".into(),
        ),
        other => IlpError::Solver(other.to_string()),
    })?;
    let status = match solution.status() {
        SolutionStatus::Optimal => IlpStatus::Optimal,
        SolutionStatus::TimeLimit | SolutionStatus::GapLimit => IlpStatus::TimeLimit,
    };
    // Never trust solver output: the rounded residency must cost what the solver claims.
    let resident = extract(problem, vars, &solution);
    let claimed = solution.eval(&check);
    let actual = objective_value(problem, &resident) as f64 / MIB;
    if (claimed - actual).abs() > 1e-6 * actual.max(1.0) {
        return Err(IlpError::Solver(format!(
            "returned an inconsistent solution (objective {claimed:.3} MiB; its residency costs \
             {actual:.3} MiB)"
        )));
    }
    Ok((status, resident))
}

/// CBC, quiet and single-threaded. It starts cold: after a MIP start it returned columns
/// inconsistent with its own objective on some of our models (LLaMA2-7B prefill at M_P).
#[cfg(feature = "cbc")]
fn solve_cbc(
    problem: &Problem,
    vars: &Vars,
    pv: ProblemVariables,
    goal: Expression,
    constraints: Vec<Constraint>,
    time_limit_s: f64,
) -> Result<(IlpStatus, Vec<Vec<bool>>), IlpError> {
    let quiet = |p: good_lp::variable::UnsolvedProblem| {
        let mut m = good_lp::coin_cbc(p);
        m.set_parameter("log", "0");
        m.set_parameter("threads", "1");
        m
    };
    solve(
        quiet,
        problem,
        vars,
        pv,
        goal,
        constraints,
        None,
        time_limit_s,
    )
}

#[cfg(not(feature = "cbc"))]
fn solve_cbc(
    _: &Problem,
    _: &Vars,
    _: ProblemVariables,
    _: Expression,
    _: Vec<Constraint>,
    _: f64,
) -> Result<(IlpStatus, Vec<Vec<bool>>), IlpError> {
    Err(IlpError::Unavailable(Solver::Cbc.name()))
}

/// Steps `[first, last]` a tensor lives through in the graph's order.
fn lifetime(problem: &Problem, t: usize) -> (usize, usize) {
    let tensor = &problem.tensors[t];
    let first_read = tensor.consumers.iter().copied().min();
    let last_read = tensor.consumers.iter().copied().max();
    let first = tensor.producer.or(first_read).unwrap_or(0);
    (first, last_read.unwrap_or(first).max(first))
}

/// Steps `s` at which operator `s` reads or writes `t`.
fn touches(problem: &Problem, t: usize, s: usize) -> bool {
    let op = &problem.ops[s];
    op.inputs.contains(&t) || op.outputs.contains(&t)
}

fn variables(problem: &Problem, pv: &mut ProblemVariables) -> Vars {
    let mut binaries = 0;
    let mut residency = Vec::new();
    let mut spill = Vec::new();
    let mut reload = Vec::new();
    for t in 0..problem.tensors.len() {
        let (first, last) = lifetime(problem, t);
        let r: Vec<Residency> = (first..=last)
            .map(|s| {
                if touches(problem, t, s) {
                    Residency::Fixed
                } else {
                    binaries += 1;
                    Residency::Free(pv.add(variable().binary()))
                }
            })
            .collect();
        let produced = problem.tensors[t].producer.is_some();
        spill.push((produced && last > first).then(|| pv.add(variable().min(0).max(1))));
        reload.push(
            (first + 1..=last)
                .map(|_| pv.add(variable().min(0).max(1)))
                .collect(),
        );
        residency.push((first, r));
    }
    Vars {
        residency,
        spill,
        reload,
        binaries,
    }
}

fn constraints_of(problem: &Problem, budget: u64, v: &Vars) -> Vec<good_lp::Constraint> {
    let mut out = Vec::new();
    let steps = problem.ops.len();
    let mut capacity: Vec<Expression> = vec![Expression::from(0.0); steps];
    for (t, (first, r)) in v.residency.iter().enumerate() {
        // Capacity rows in units of the budget keep coefficients near 1 for the solver.
        let bytes = problem.tensors[t].bytes as f64 / budget as f64;
        for (i, &cur) in r.iter().enumerate() {
            let s = first + i;
            capacity[s] += bytes * cur.expr();
            if i == 0 {
                continue;
            }
            let prev = r[i - 1].expr();
            if !touches(problem, t, s) {
                // No prefetch: residency only begins where the tensor is read.
                out.push(constraint!(cur.expr() <= prev.clone()));
            }
            let reload = v.reload[t][i - 1];
            out.push(constraint!(reload >= cur.expr() - prev.clone()));
            if let Some(spill) = v.spill[t] {
                out.push(constraint!(spill >= prev - cur.expr()));
            }
        }
    }
    for c in capacity {
        out.push(constraint!(c <= 1.0));
    }
    out
}

/// Bytes per objective unit (MiB keeps coefficients near 1).
const MIB: f64 = (1u64 << 20) as f64;

fn objective(problem: &Problem, v: &Vars) -> Expression {
    let mut e = Expression::from(0.0);
    for (t, tensor) in problem.tensors.iter().enumerate() {
        let mib = tensor.bytes as f64 / MIB;
        if let Some(spill) = v.spill[t] {
            e += mib * spill;
        }
        for &reload in &v.reload[t] {
            e += mib * reload;
        }
    }
    e
}

/// Residency of a plan replayed step by step (`[tensor][step]`).
fn residency_of(problem: &Problem, plan: &Plan) -> Vec<Vec<bool>> {
    let steps = problem.ops.len();
    let mut r = vec![vec![false; steps]; problem.tensors.len()];
    let mut resident = vec![false; problem.tensors.len()];
    let mut readers_left: Vec<usize> = problem.tensors.iter().map(|t| t.consumers.len()).collect();
    for (s, sp) in plan.steps.iter().enumerate() {
        let op = &problem.ops[plan.order[s]];
        for &t in &sp.evict {
            resident[t] = false;
        }
        for &(t, _) in sp.load.iter().chain(&sp.outputs) {
            resident[t] = true;
        }
        for (t, on) in resident.iter().enumerate() {
            r[t][s] = *on;
        }
        for &t in &op.inputs {
            readers_left[t] -= 1;
        }
        for &t in op.inputs.iter().chain(&op.outputs) {
            if readers_left[t] == 0 {
                resident[t] = false;
            }
        }
    }
    r
}

/// The solver's starting point: the residency of `plan`, with its spills and reloads.
fn warm_start(problem: &Problem, v: &Vars, plan: &Plan) -> Vec<(Variable, f64)> {
    let r = residency_of(problem, plan);
    let mut start = Vec::new();
    for (t, (first, res)) in v.residency.iter().enumerate() {
        let on = |i: usize| r[t][first + i] || matches!(res[i], Residency::Fixed);
        let mut spilled = false;
        for (i, cell) in res.iter().enumerate() {
            if let Residency::Free(var) = cell {
                start.push((*var, f64::from(u8::from(on(i)))));
            }
            if i > 0 {
                let (prev, cur) = (on(i - 1), on(i));
                start.push((v.reload[t][i - 1], f64::from(u8::from(cur && !prev))));
                spilled |= prev && !cur;
            }
        }
        if let Some(spill) = v.spill[t] {
            start.push((spill, f64::from(u8::from(spilled))));
        }
    }
    start
}

/// Binary residency from the solution, rounded at 0.5 (`[tensor][step]`, false outside a
/// lifetime).
fn extract(problem: &Problem, v: &Vars, solution: &impl Solution) -> Vec<Vec<bool>> {
    let steps = problem.ops.len();
    let mut r = vec![vec![false; steps]; problem.tensors.len()];
    for (t, (first, res)) in v.residency.iter().enumerate() {
        for (i, cell) in res.iter().enumerate() {
            r[t][first + i] = match cell {
                Residency::Fixed => true,
                Residency::Free(var) => solution.value(*var) > 0.5,
            };
        }
    }
    r
}

/// Spill and reload bytes of a residency, as the objective counts them.
fn objective_value(problem: &Problem, r: &[Vec<bool>]) -> u64 {
    let mut bytes = 0;
    for (t, tensor) in problem.tensors.iter().enumerate() {
        let (first, last) = lifetime(problem, t);
        let mut spilled = false;
        for s in first + 1..=last {
            if r[t][s] && !r[t][s - 1] {
                bytes += tensor.bytes;
            }
            spilled |= r[t][s - 1] && !r[t][s];
        }
        if spilled && tensor.producer.is_some() {
            bytes += tensor.bytes;
        }
    }
    bytes
}
