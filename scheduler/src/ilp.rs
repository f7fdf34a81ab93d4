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
//! so the plan never pays more than the ILP's objective; the validator replays it. microlp and
//! HiGHS start from the Belady baseline's residency (CBC starts cold, [`Solver`]); whatever the
//! solver, a time-limited search that ends worse, or gives no solution at all, returns the Belady
//! plan, and a solution whose residency does not cost what the solver claims is an error. The
//! three modes (this one, [`crate::peak`], [`crate::joint`]) share the solver dispatch and set-up:
//! quiet, single-threaded, time-limited, stop reasons mapped to [`IlpStatus`].
//!
//! Divide and conquer ([`divided`], parts from [`blocks`]) solves the same model a window of
//! steps at a time, each window starting from the residency the windows before it chose, and
//! bounds the result from below by relaxed windows. The order is chosen in [`crate::peak`]
//! (minimum footprint) and [`crate::joint`] (with residency); the address ILP comes next.

use crate::baseline::{baseline, realise, Eviction};
use crate::plan::{validate, Plan, PlanError};
use crate::problem::{Problem, ScheduleError};
use good_lp::solvers::Solver as LpSolver;
use good_lp::{
    constraint, variable, Constraint, Expression, ProblemVariables, ResolutionError, Solution,
    SolutionStatus, SolverModel, Variable, WithInitialSolution, WithTimeLimit,
};
use serde::Serialize;
use std::time::Instant;

/// Largest number of residency variables one fixed-order model may have (the whole graph, or one
/// part when divided).
pub const MAX_BINARIES: usize = 200_000;

/// The MILP solver behind good_lp. Every mode builds its model once, solver-independent, and
/// solves it with the one chosen; the ones other than microlp are cargo features.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Solver {
    /// microlp: pure Rust, always built.
    Microlp,
    /// COIN-OR CBC (Debian's `coinor-libcbc-dev`); built with the `cbc` feature.
    Cbc,
    /// HiGHS, compiled from C++ source by `highs-sys` (needs `cmake` and `libclang-dev`); built
    /// with the `highs` feature.
    Highs,
}

impl Solver {
    /// Every solver, by name.
    pub const ALL: [Solver; 3] = [Solver::Microlp, Solver::Cbc, Solver::Highs];

    /// Short name.
    pub fn name(self) -> &'static str {
        match self {
            Solver::Microlp => "microlp",
            Solver::Cbc => "cbc",
            Solver::Highs => "highs",
        }
    }

    /// Whether this build includes it.
    pub fn available(self) -> bool {
        match self {
            Solver::Microlp => true,
            Solver::Cbc => cfg!(feature = "cbc"),
            Solver::Highs => cfg!(feature = "highs"),
        }
    }

    /// The cargo feature that builds it (of this crate and of the `tessera` binary), and what that
    /// build needs beyond the Rust toolchain; `None` for microlp, always built.
    pub fn feature(self) -> Option<(&'static str, &'static str)> {
        match self {
            Solver::Microlp => None,
            Solver::Cbc => Some(("cbc", "needs Debian's coinor-libcbc-dev")),
            Solver::Highs => Some((
                "highs",
                "compiles HiGHS from source: needs cmake, a C++ compiler and libclang-dev",
            )),
        }
    }

    /// Whether the fixed-order models (whole, or each part's) start from the Belady plan's
    /// residency, so that the search always holds a feasible plan. CBC starts cold: after a MIP
    /// start it returned columns inconsistent with its own objective on some of our models
    /// (LLaMA2-7B prefill at M_P).
    fn warm_starts(self) -> bool {
        match self {
            Solver::Microlp | Solver::Highs => true,
            Solver::Cbc => false,
        }
    }
}

/// Runs `$body` with `$s` bound to the good_lp solver `$solver` names, set up as every mode uses
/// it (quiet, single-threaded; [`quiet_cbc`], [`quiet_highs`]), or evaluates to
/// `Err(IlpError::Unavailable)` when this build lacks it. A macro because `$body` is generic over
/// the solver's model type; the modes' solve functions are written once, generic over it.
macro_rules! with_solver {
    ($solver:expr, |$s:ident| $body:expr) => {
        match $solver {
            $crate::ilp::Solver::Microlp => {
                let $s = good_lp::microlp;
                $body
            }
            #[cfg(feature = "cbc")]
            $crate::ilp::Solver::Cbc => {
                let $s = $crate::ilp::quiet_cbc;
                $body
            }
            #[cfg(feature = "highs")]
            $crate::ilp::Solver::Highs => {
                let $s = $crate::ilp::quiet_highs;
                $body
            }
            #[allow(unreachable_patterns)]
            other => Err($crate::ilp::IlpError::Unavailable(other)),
        }
    };
}
pub(crate) use with_solver;

/// Why the ILP stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum IlpStatus {
    /// Proven optimal.
    Optimal,
    /// The time limit ended the search; the plan is the best found.
    TimeLimit,
    /// Valid but not proven optimal: divide and conquer (every part solved to optimality given
    /// the parts before it; the gap to the lower bound says how far it can be), a solver that
    /// claimed optimality above the Belady plan, whose plan is then kept, or a solver that stopped
    /// at its MIP gap tolerance without closing the gap exactly.
    Feasible,
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
    /// A proven lower bound on the non-compulsory bytes of any plan in the graph's order: the
    /// optimum when proven, the sum of the parts' relaxed optima when divided, otherwise 0 (no
    /// plan avoids the compulsory bytes, and none can do better than no spill at all).
    pub lower_bound_bytes: u64,
    /// `(plan − lower bound) / plan` in non-compulsory bytes (0 when the plan spills nothing).
    pub gap: f64,
    /// The Belady plan was better than what the solver found within the time limit and is the
    /// plan returned.
    pub baseline_kept: bool,
    /// The parts, when divided; empty when solved whole.
    pub parts: Vec<PartOutcome>,
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
        "{binaries} residency variables exceed the {MAX_BINARIES} one model may have; divide the \
         graph (`--divide block`), or it is too large even a block at a time"
    )]
    TooLarge {
        /// Variables the problem needs.
        binaries: usize,
    },
    /// Joint mode solves whole graphs only, and this one is too large.
    #[error(
        "joint order + allocation solves whole graphs only: {ops} operators need {binaries} order \
         binaries, above the {} solved whole; use --mode fixed-order, which divides by blocks",
        crate::peak::MAX_WHOLE_ORDER_BINARIES
    )]
    JointTooLarge {
        /// Operators.
        ops: usize,
        /// Order binaries they need.
        binaries: usize,
    },
    /// The parts given to [`divided`] do not cover the operators in order.
    #[error("the parts must cover operators 0..{0} in order, each part non-empty")]
    Parts(usize),
    /// The solver failed.
    #[error("the solver failed: {0}")]
    Solver(String),
    /// The solver is not in this build; the message names the feature to build with.
    #[error(
        "this build has no {} solver: build with `--features {}` ({})",
        .0.name(),
        .0.feature().map_or("", |f| f.0),
        .0.feature().map_or("", |f| f.1)
    )]
    Unavailable(Solver),
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

/// Steps `first..=last` of the graph's order that one model covers, and what is known about the
/// tensors live when it opens. The whole graph is one window; divide and conquer solves one
/// window per part.
#[derive(Debug, Clone)]
struct Window {
    first: usize,
    last: usize,
    entry: Entry,
}

/// The state of the tensors live when a window opens.
#[derive(Debug, Clone)]
enum Entry {
    /// Decided by the plan of the steps before: per tensor, resident after step `first − 1`, and
    /// already written to DRAM (spilled, or a graph input).
    Decided {
        resident: Vec<bool>,
        in_dram: Vec<bool>,
    },
    /// The relaxation behind divide and conquer's lower bound: tensors live when the window opens
    /// start resident or not at no cost, and only tensors produced inside it pay for a spill.
    Relaxed,
}

impl Window {
    /// The whole graph.
    fn whole(problem: &Problem) -> Window {
        Window {
            first: 0,
            last: problem.ops.len() - 1,
            entry: Entry::Decided {
                resident: vec![false; problem.tensors.len()],
                in_dram: vec![false; problem.tensors.len()],
            },
        }
    }
}

/// The model's variables.
struct Vars {
    /// Per tensor: first step of its lifetime inside the window and its residency per step from
    /// there (empty if it is not live in the window).
    residency: Vec<(usize, Vec<Residency>)>,
    /// Per tensor: its residency before the window, where decided and it is live across the
    /// window's start.
    before: Vec<Option<bool>>,
    spill: Vec<Option<Variable>>,
    /// Per tensor: `(step, reload variable)`.
    reload: Vec<Vec<(usize, Variable)>>,
    binaries: usize,
}

impl Vars {
    /// Residency of `t` before its `i`-th step in the window, as an expression of `r`'s cells, if
    /// the model knows it.
    fn previous(&self, t: usize, i: usize) -> Option<Expression> {
        let (_, r) = &self.residency[t];
        if i > 0 {
            Some(r[i - 1].expr())
        } else {
            self.before[t].map(|b| Expression::from(f64::from(u8::from(b))))
        }
    }
}

/// Residency variables of the whole graph's model: what [`MAX_BINARIES`] is compared with.
pub fn binaries(problem: &Problem) -> usize {
    let mut pv = ProblemVariables::new();
    variables(problem, &Window::whole(problem), &mut pv).binaries
}

/// Plans `problem` in the graph's order under `budget` bytes, within `time_limit_s` seconds, with
/// `solver`, as one model ([`IlpError::TooLarge`] above [`MAX_BINARIES`]).
pub fn fixed_order(
    problem: &Problem,
    budget: u64,
    time_limit_s: f64,
    solver: Solver,
) -> Result<IlpOutcome, IlpError> {
    check(problem, budget, time_limit_s, solver)?;
    let window = Window::whole(problem);
    let mut pv = ProblemVariables::new();
    let vars = variables(problem, &window, &mut pv);
    if vars.binaries > MAX_BINARIES {
        return Err(IlpError::TooLarge {
            binaries: vars.binaries,
        });
    }
    let warm = baseline(problem, budget, Eviction::Belady)?;
    let belady = residency_of(problem, &warm);
    let mut found = vec![vec![false; problem.ops.len()]; problem.tensors.len()];
    let began = Instant::now();
    let solved = solve_window(
        problem,
        budget,
        &window,
        vars,
        pv,
        &belady,
        time_limit_s,
        solver,
        &mut found,
    )?;
    let solve_seconds = began.elapsed().as_secs_f64();
    let lower_bound_bytes = if solved.status == IlpStatus::Optimal {
        solved.objective_bytes
    } else {
        0
    };
    finish(
        problem,
        budget,
        &warm,
        solved.found.then_some(found),
        solved.status,
        lower_bound_bytes,
        Vec::new(),
        Measured {
            solve_seconds,
            binaries: solved.binaries,
            constraints: solved.constraints,
        },
    )
}

/// One part of a divided graph: a run of consecutive operators.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Part {
    /// What the part is (`layer3`, or `whole` for a graph without layers).
    pub name: String,
    /// First operator (problem index, which is also its step in the graph's order).
    pub first: usize,
    /// Last operator, inclusive.
    pub last: usize,
}

/// The graph cut into transformer blocks: a part per layer, named by the `layer{N}.` prefix the
/// frontend gives operator names. Operators outside any layer (embedding, final norm, head) join
/// the block next to them.
pub fn blocks(problem: &Problem) -> Vec<Part> {
    let layer = |name: &str| {
        name.strip_prefix("layer")
            .and_then(|rest| rest.split_once('.'))
            .and_then(|(n, _)| n.parse::<u32>().ok())
    };
    let mut parts: Vec<(Option<u32>, Part)> = Vec::new();
    for (o, op) in problem.ops.iter().enumerate() {
        let l = layer(&op.name);
        match parts.last_mut() {
            Some((current, part)) if l.is_none() || *current == l || current.is_none() => {
                if current.is_none() && l.is_some() {
                    *current = l;
                }
                part.last = o;
            }
            _ => parts.push((
                l,
                Part {
                    name: String::new(),
                    first: o,
                    last: o,
                },
            )),
        }
    }
    parts
        .into_iter()
        .map(|(l, mut part)| {
            part.name = l.map_or_else(|| "whole".to_string(), |l| format!("layer{l}"));
            part
        })
        .collect()
}

/// How one part of a divided plan was solved.
#[derive(Debug, Clone, Serialize)]
pub struct PartOutcome {
    /// The part.
    #[serde(flatten)]
    pub part: Part,
    /// Why the solver stopped on the part, given the plan before it.
    pub status: IlpStatus,
    /// Spill and reload bytes charged to the part (reloads inside it; spills of tensors first
    /// evicted inside it).
    pub objective_bytes: u64,
    /// The relaxed part's optimum ([`divided`] explains the relaxation); 0 where the solver did
    /// not prove it.
    pub lower_bound_bytes: u64,
    /// Binary variables of the part's model.
    pub binaries: usize,
    /// Seconds in the solver for the part (both models).
    pub solve_seconds: f64,
}

/// Divide and conquer in the graph's order: solves `parts` one after another, each model starting
/// from the residency the parts before it chose (tensors live across a cut stay resident, or are
/// spilled and reloaded, at the cost the model charges), stitches the residency, realises it as
/// one plan and has the validator replay it. Each part gets an equal share of `time_limit_s`, half
/// for its plan and half for its bound.
///
/// The lower bound: each part is solved a second time relaxed (tensors live across its start may
/// start resident or not for free; only tensors produced in it pay for a spill). Restricted to a
/// part, the whole-graph optimum is feasible for the relaxed part and costs at least its relaxed
/// cost, and every byte of the whole optimum is charged to at most one part, so the sum of the
/// proven relaxed optima bounds the whole-graph fixed-order optimum from below. A part whose
/// relaxed model stops at the time limit contributes 0.
pub fn divided(
    problem: &Problem,
    budget: u64,
    time_limit_s: f64,
    solver: Solver,
    parts: &[Part],
) -> Result<IlpOutcome, IlpError> {
    check(problem, budget, time_limit_s, solver)?;
    let n = problem.ops.len();
    if !covers(parts, n) {
        return Err(IlpError::Parts(n));
    }
    let warm = baseline(problem, budget, Eviction::Belady)?;
    let belady = residency_of(problem, &warm);
    let share = time_limit_s / (2 * parts.len()) as f64;
    let mut found = vec![vec![false; n]; problem.tensors.len()];
    let mut scratch = found.clone();
    let mut outcomes = Vec::with_capacity(parts.len());
    let (mut binaries, mut constraints) = (0, 0);
    let began = Instant::now();
    for part in parts {
        let part_began = Instant::now();
        let entry = entry_state(problem, &found, part.first);
        let window = Window {
            first: part.first,
            last: part.last,
            entry,
        };
        let mut pv = ProblemVariables::new();
        let vars = variables(problem, &window, &mut pv);
        if vars.binaries > MAX_BINARIES {
            return Err(IlpError::TooLarge {
                binaries: vars.binaries,
            });
        }
        let solved = solve_window(
            problem, budget, &window, vars, pv, &belady, share, solver, &mut found,
        )?;
        let relaxed = Window {
            entry: Entry::Relaxed,
            ..window
        };
        let mut pv = ProblemVariables::new();
        let vars = variables(problem, &relaxed, &mut pv);
        let bound = solve_window(
            problem,
            budget,
            &relaxed,
            vars,
            pv,
            &belady,
            share,
            solver,
            &mut scratch,
        )?;
        binaries += solved.binaries;
        constraints += solved.constraints;
        outcomes.push(PartOutcome {
            part: part.clone(),
            status: solved.status,
            objective_bytes: solved.objective_bytes,
            lower_bound_bytes: if bound.status == IlpStatus::Optimal {
                bound.objective_bytes
            } else {
                0
            },
            binaries: solved.binaries,
            solve_seconds: part_began.elapsed().as_secs_f64(),
        });
    }
    let solve_seconds = began.elapsed().as_secs_f64();
    let stitched: u64 = outcomes.iter().map(|p| p.objective_bytes).sum();
    let total = objective_value(problem, &found);
    if stitched != total {
        return Err(IlpError::Solver(format!(
            "the parts charge {stitched} bytes, their stitched residency costs {total}"
        )));
    }
    let lower_bound_bytes: u64 = outcomes.iter().map(|p| p.lower_bound_bytes).sum();
    let status = if outcomes.iter().any(|p| p.status == IlpStatus::TimeLimit) {
        IlpStatus::TimeLimit
    } else if total <= lower_bound_bytes {
        IlpStatus::Optimal
    } else {
        IlpStatus::Feasible
    };
    finish(
        problem,
        budget,
        &warm,
        Some(found),
        status,
        lower_bound_bytes,
        outcomes,
        Measured {
            solve_seconds,
            binaries,
            constraints,
        },
    )
}

/// Whether `parts` cover operators `0..n` in order, each non-empty.
pub(crate) fn covers(parts: &[Part], n: usize) -> bool {
    parts.first().is_some_and(|p| p.first == 0)
        && parts.last().is_some_and(|p| p.last + 1 == n)
        && parts.windows(2).all(|w| w[1].first == w[0].last + 1)
        && parts.iter().all(|p| p.first <= p.last)
}

/// Refuses unusable input before any model is built.
fn check(
    problem: &Problem,
    budget: u64,
    time_limit_s: f64,
    solver: Solver,
) -> Result<(), IlpError> {
    if !solver.available() {
        return Err(IlpError::Unavailable(solver));
    }
    if !(time_limit_s > 0.0 && time_limit_s <= 86_400.0) {
        return Err(IlpError::TimeLimit(time_limit_s));
    }
    problem.check_budget(budget)?;
    Ok(())
}

/// What the parts before step `first` decided: per tensor, resident after step `first − 1`, and
/// written to DRAM by then.
fn entry_state(problem: &Problem, r: &[Vec<bool>], first: usize) -> Entry {
    let mut resident = vec![false; problem.tensors.len()];
    let mut in_dram = vec![false; problem.tensors.len()];
    for (t, tensor) in problem.tensors.iter().enumerate() {
        let (f, l) = lifetime(problem, t);
        if f < first && first <= l {
            resident[t] = r[t][first - 1];
            in_dram[t] =
                tensor.producer.is_none() || (f + 1..first).any(|s| r[t][s - 1] && !r[t][s]);
        }
    }
    Entry::Decided { resident, in_dram }
}

/// Sizes of what was solved.
struct Measured {
    solve_seconds: f64,
    binaries: usize,
    constraints: usize,
}

/// Keeps the better of the found residency (`None`: the solver gave none) and the Belady plan,
/// realises it and validates it.
#[allow(clippy::too_many_arguments)]
fn finish(
    problem: &Problem,
    budget: u64,
    warm: &Plan,
    found: Option<Vec<Vec<bool>>>,
    status: IlpStatus,
    lower_bound_bytes: u64,
    parts: Vec<PartOutcome>,
    measured: Measured,
) -> Result<IlpOutcome, IlpError> {
    let start_resident = residency_of(problem, warm);
    let start_bytes = objective_value(problem, &start_resident);
    let found = found.map(|r| {
        let bytes = objective_value(problem, &r);
        (r, bytes)
    });
    // A solver that claims optimality above the Belady plan is wrong (CBC does so on rare small
    // models where microlp finds the Belady cost): its claim and its bound are discarded.
    let refuted =
        status == IlpStatus::Optimal && found.as_ref().is_some_and(|(_, b)| *b > start_bytes);
    let (resident, objective_bytes, baseline_kept) = match found {
        Some((r, bytes)) if bytes <= start_bytes => (r, bytes, false),
        _ => (start_resident, start_bytes, true),
    };
    let plan = realise(problem, budget, &resident)?;
    let replay = validate(problem, budget, &plan)?;
    let (status, lower_bound_bytes) = if refuted {
        (IlpStatus::Feasible, 0)
    } else {
        (status, lower_bound_bytes.min(replay.non_compulsory_bytes))
    };
    // No plan spills less than nothing: a plan without spills is optimal whatever stopped the
    // search.
    let status = if replay.non_compulsory_bytes == 0 {
        IlpStatus::Optimal
    } else {
        status
    };
    let gap = match replay.non_compulsory_bytes {
        0 => 0.0,
        b => (b - lower_bound_bytes) as f64 / b as f64,
    };
    Ok(IlpOutcome {
        plan,
        status,
        solve_seconds: measured.solve_seconds,
        binaries: measured.binaries,
        constraints: measured.constraints,
        objective_bytes,
        lower_bound_bytes,
        gap,
        baseline_kept,
        parts,
    })
}

/// A window's model solved.
struct Solved {
    /// How the search stopped ([`Milp::Fallback`] where it gave no solution).
    status: IlpStatus,
    /// Whether the residency written is the solver's; if not, it is the window's share of the
    /// Belady plan ([`belady_in`]).
    found: bool,
    objective_bytes: u64,
    binaries: usize,
    constraints: usize,
}

/// Builds the constraints and objective of `window` over `vars`, solves them (from the window's
/// share of the Belady residency `belady`, for solvers that take a start) and writes the rounded
/// residency of the window's steps into `r`: the solver's, or where it gave none, that share of
/// the Belady residency.
#[allow(clippy::too_many_arguments)]
fn solve_window(
    problem: &Problem,
    budget: u64,
    window: &Window,
    vars: Vars,
    pv: ProblemVariables,
    belady: &[Vec<bool>],
    time_limit_s: f64,
    solver: Solver,
    r: &mut [Vec<bool>],
) -> Result<Solved, IlpError> {
    let fallback = belady_in(&vars, belady);
    let start = solver.warm_starts().then(|| warm_start(&vars, &fallback));
    let constraints = constraints_of(problem, budget, window, &vars);
    let constraint_count = constraints.len();
    let goal = objective(problem, &vars);
    let (status, solved) = with_solver!(solver, |s| solve(
        s,
        problem,
        &vars,
        pv,
        goal,
        constraints,
        start,
        time_limit_s,
        r
    ))?;
    if !solved {
        for (t, (first, _)) in vars.residency.iter().enumerate() {
            r[t][*first..*first + fallback[t].len()].copy_from_slice(&fallback[t]);
        }
    }
    Ok(Solved {
        status,
        found: solved,
        objective_bytes: window_cost(problem, &vars, r),
        binaries: vars.binaries,
        constraints: constraint_count,
    })
}

/// Solves the model with `solver` (from `start` if given), rounds the residency into `r` and
/// checks that it costs what the solver claims. Returns how the search stopped and whether it
/// gave a solution ([`Milp::Fallback`] if not; `r` is then untouched).
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
    r: &mut [Vec<bool>],
) -> Result<(IlpStatus, bool), IlpError>
where
    S: LpSolver,
    S::Model: WithTimeLimit + WithInitialSolution,
    <S::Model as SolverModel>::Error: Into<ResolutionError>,
{
    if pv.is_empty() {
        // Every residency is fixed (a window whose live tensors the operators all touch):
        // nothing to decide, and HiGHS refuses a model without columns.
        extract(vars, &NoVariables, r);
        return Ok((IlpStatus::Optimal, true));
    }
    let check = goal.clone();
    let (status, solution) = match run_milp(solver, pv, goal, constraints, start, time_limit_s)? {
        Milp::Solved(status, solution) => (status, solution),
        Milp::Fallback(status) => return Ok((status, false)),
    };
    // Never trust solver output: the rounded residency must cost what the solver claims.
    extract(vars, &solution, r);
    let claimed = solution.eval(&check);
    let actual = window_cost(problem, vars, r) as f64 / MIB;
    if (claimed - actual).abs() > 1e-6 * actual.max(1.0) {
        return Err(IlpError::Solver(format!(
            "returned an inconsistent solution (objective {claimed:.3} MiB; its residency costs \
             {actual:.3} MiB)"
        )));
    }
    Ok((status, true))
}

/// The solution of a model without variables.
struct NoVariables;

impl Solution for NoVariables {
    fn status(&self) -> SolutionStatus {
        SolutionStatus::Optimal
    }

    fn value(&self, _: Variable) -> f64 {
        0.0
    }
}

/// What a MILP solve gives.
pub(crate) enum Milp<T> {
    /// How the search stopped, and the solution, whose values the caller rounds and checks.
    Solved(IlpStatus, T),
    /// No solution: `TimeLimit` where the time limit stopped the solver before any, `Feasible`
    /// where it claimed the model infeasible. Every mode's model has a feasible point, its
    /// fallback plan (the Belady residency, the graph's order, the fixed-order plan), which
    /// refutes that claim; the mode keeps that plan. CBC has claimed the joint model of
    /// TinyLLaMA prefill infeasible when stopped early.
    Fallback(IlpStatus),
}

impl<T> Milp<T> {
    /// The same outcome with `f` applied to the solution.
    pub(crate) fn map<U>(self, f: impl FnOnce(T) -> U) -> Milp<U> {
        match self {
            Milp::Solved(status, solution) => Milp::Solved(status, f(solution)),
            Milp::Fallback(status) => Milp::Fallback(status),
        }
    }
}

/// Minimises `goal` over `pv` subject to `constraints` with `solver` within `time_limit_s`
/// seconds, from `start` if given: the set-up the three modes share.
pub(crate) fn run_milp<S>(
    solver: S,
    pv: ProblemVariables,
    goal: Expression,
    constraints: Vec<Constraint>,
    start: Option<Vec<(Variable, f64)>>,
    time_limit_s: f64,
) -> Result<Milp<<S::Model as SolverModel>::Solution>, IlpError>
where
    S: LpSolver,
    S::Model: WithTimeLimit + WithInitialSolution,
    <S::Model as SolverModel>::Error: Into<ResolutionError>,
{
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
    match model.solve().map_err(Into::into) {
        Ok(solution) => Ok(Milp::Solved(stop_status(solution.status()), solution)),
        // How good_lp's microlp and HiGHS models report a time limit reached before any
        // feasible solution (CBC returns its columns with a time-limit status; the callers
        // check whatever comes back).
        Err(ResolutionError::Other(
            "Time limit reached before finding a feasible solution" | "NoSolutionFound",
        )) => Ok(Milp::Fallback(IlpStatus::TimeLimit)),
        Err(ResolutionError::Infeasible) => Ok(Milp::Fallback(IlpStatus::Feasible)),
        Err(other) => Err(IlpError::Solver(other.to_string())),
    }
}

/// How a solved MILP's search stopped. good_lp reports a stop at the solver's MIP gap
/// tolerance as `GapLimit`: microlp and CBC have none set here and HiGHS a zero gap
/// ([`quiet_highs`]), so it means a gap the solver considers closed only within its numerical
/// tolerances; that is not a proof, so it is `Feasible` (valid, not proven optimal), never
/// `Optimal`.
pub(crate) fn stop_status(status: SolutionStatus) -> IlpStatus {
    match status {
        SolutionStatus::Optimal => IlpStatus::Optimal,
        SolutionStatus::TimeLimit => IlpStatus::TimeLimit,
        SolutionStatus::GapLimit => IlpStatus::Feasible,
    }
}

/// CBC on `p`, quiet and single-threaded, with its primal heuristics off: with them, CBC 2.10
/// has proved joint models "optimal" above their true optimum (the cases pinned in
/// `tests/joint.proptest-regressions`), which no fallback can detect.
#[cfg(feature = "cbc")]
pub(crate) fn quiet_cbc(
    p: good_lp::variable::UnsolvedProblem,
) -> good_lp::solvers::coin_cbc::CoinCbcProblem {
    let mut m = good_lp::coin_cbc(p);
    m.set_parameter("log", "0");
    m.set_parameter("threads", "1");
    m.set_parameter("heuristics", "off");
    m
}

/// HiGHS on `p`: quiet (good_lp's HiGHS model turns its output off), single-threaded with the
/// parallel simplex off (the same search on every run, as CBC's), and searching to a zero gap:
/// HiGHS's default relative gap, 1e-4, would call a plan up to 0.01 % above its bound optimal.
#[cfg(feature = "highs")]
pub(crate) fn quiet_highs(
    p: good_lp::variable::UnsolvedProblem,
) -> good_lp::solvers::highs::HighsProblem {
    good_lp::highs(p)
        .set_threads(1)
        .set_parallel(good_lp::solvers::highs::HighsParallelType::Off)
        .set_option("mip_rel_gap", 0.0)
        .set_option("mip_abs_gap", 0.0)
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

/// The steps `[first, last]` of `t`'s lifetime inside `window`, and whether it is live across
/// the window's start.
fn span(problem: &Problem, window: &Window, t: usize) -> Option<(usize, usize, bool)> {
    let (f, l) = lifetime(problem, t);
    let (first, last) = (f.max(window.first), l.min(window.last));
    (first <= last).then_some((first, last, f < window.first))
}

fn variables(problem: &Problem, window: &Window, pv: &mut ProblemVariables) -> Vars {
    let mut binaries = 0;
    let mut residency = Vec::new();
    let mut before = Vec::new();
    let mut spill = Vec::new();
    let mut reload = Vec::new();
    for t in 0..problem.tensors.len() {
        let Some((first, last, across)) = span(problem, window, t) else {
            residency.push((window.first, Vec::new()));
            before.push(None);
            spill.push(None);
            reload.push(Vec::new());
            continue;
        };
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
        let (was, in_dram) = match &window.entry {
            Entry::Decided { resident, in_dram } if across => (Some(resident[t]), in_dram[t]),
            Entry::Decided { .. } => (None, false),
            // Relaxed: free entry, and a tensor produced before the window pays no spill here.
            Entry::Relaxed => (None, across),
        };
        let transitions = last > first || was.is_some();
        let produced = problem.tensors[t].producer.is_some();
        spill.push((produced && !in_dram && transitions).then(|| pv.add(variable().min(0).max(1))));
        let from = if was.is_some() { first } else { first + 1 };
        reload.push(
            (from..=last)
                .map(|s| (s, pv.add(variable().min(0).max(1))))
                .collect(),
        );
        residency.push((first, r));
        before.push(was);
    }
    Vars {
        residency,
        before,
        spill,
        reload,
        binaries,
    }
}

fn constraints_of(
    problem: &Problem,
    budget: u64,
    window: &Window,
    v: &Vars,
) -> Vec<good_lp::Constraint> {
    let mut out = Vec::new();
    let mut capacity: Vec<Expression> = vec![Expression::from(0.0); window.last - window.first + 1];
    for (t, (first, r)) in v.residency.iter().enumerate() {
        // Capacity rows in units of the budget keep coefficients near 1 for the solver.
        let bytes = problem.tensors[t].bytes as f64 / budget as f64;
        for (i, &cur) in r.iter().enumerate() {
            let s = first + i;
            capacity[s - window.first] += bytes * cur.expr();
            let Some(prev) = v.previous(t, i) else {
                continue;
            };
            if !touches(problem, t, s) {
                // No prefetch: residency only begins where the tensor is read.
                out.push(constraint!(cur.expr() <= prev.clone()));
            }
            if let Some(&(_, reload)) = v.reload[t].iter().find(|(at, _)| *at == s) {
                out.push(constraint!(reload >= cur.expr() - prev.clone()));
            }
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
        for &(_, reload) in &v.reload[t] {
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

/// The Belady residency `belady` (`[tensor][step]`) in a window, less what the window's entry
/// rules out (a tensor not resident when the window opens stays out until read: no prefetch):
/// per tensor, its residency at the window's steps of its lifetime. Always feasible: a subset of
/// the Belady residency that keeps every operator's working set.
fn belady_in(v: &Vars, belady: &[Vec<bool>]) -> Vec<Vec<bool>> {
    v.residency
        .iter()
        .enumerate()
        .map(|(t, (first, res))| {
            let mut prev = v.before[t];
            res.iter()
                .enumerate()
                .map(|(i, cell)| {
                    let cur = matches!(cell, Residency::Fixed)
                        || (belady[t][first + i] && prev.unwrap_or(true));
                    prev = Some(cur);
                    cur
                })
                .collect()
        })
        .collect()
}

/// The solver's starting point: the residency `cells` ([`belady_in`]) with the spills and
/// reloads it implies.
fn warm_start(v: &Vars, cells: &[Vec<bool>]) -> Vec<(Variable, f64)> {
    let mut start = Vec::new();
    let bit = |b: bool| f64::from(u8::from(b));
    for (t, (first, res)) in v.residency.iter().enumerate() {
        let mut prev = v.before[t];
        let mut spilled = false;
        for (i, (cell, &cur)) in res.iter().zip(&cells[t]).enumerate() {
            if let Residency::Free(var) = cell {
                start.push((*var, bit(cur)));
            }
            if let Some(prev) = prev {
                if let Some(&(_, reload)) = v.reload[t].iter().find(|(at, _)| *at == first + i) {
                    start.push((reload, bit(cur && !prev)));
                }
                spilled |= prev && !cur;
            }
            prev = Some(cur);
        }
        if let Some(spill) = v.spill[t] {
            start.push((spill, bit(spilled)));
        }
    }
    start
}

/// Writes the binary residency of the window's steps from the solution into `r`, rounded at 0.5
/// (`[tensor][step]`).
fn extract(v: &Vars, solution: &impl Solution, r: &mut [Vec<bool>]) {
    for (t, (first, res)) in v.residency.iter().enumerate() {
        for (i, cell) in res.iter().enumerate() {
            r[t][first + i] = match cell {
                Residency::Fixed => true,
                Residency::Free(var) => solution.value(*var) > 0.5,
            };
        }
    }
}

/// Spill and reload bytes the window's model charges for the residency `r`.
fn window_cost(problem: &Problem, v: &Vars, r: &[Vec<bool>]) -> u64 {
    let mut bytes = 0;
    for (t, (first, res)) in v.residency.iter().enumerate() {
        let size = problem.tensors[t].bytes;
        let mut spilled = false;
        for i in 0..res.len() {
            let s = first + i;
            let prev = if i > 0 {
                Some(r[t][s - 1])
            } else {
                v.before[t]
            };
            let Some(prev) = prev else {
                continue;
            };
            if r[t][s] && !prev {
                bytes += size;
            }
            spilled |= prev && !r[t][s];
        }
        if spilled && v.spill[t].is_some() {
            bytes += size;
        }
    }
    bytes
}

/// Spill and reload bytes of a whole-graph residency, as the whole-graph objective counts them.
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
