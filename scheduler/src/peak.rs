//! Minimum-peak mode: the operator order (within the graph's dependences) whose scratchpad
//! footprint without any spill is smallest, as an ILP over the order under a time limit.
//!
//! Per part of `m` operators and step `s`: `y[o,s]` (binary) says operator `o` has run by step
//! `s`; `y[o,m−1] = 1`, `y[o,s] ≤ y[o,s+1]`, `Σ_o y[o,s] = s + 1` (one operator per step), and an
//! operator runs only after the producers of its inputs (`y[c,s] ≤ y[p,s−1]`). A tensor is live
//! at `s` from its producer's step (a graph input: its first reader's) to its last reader's:
//! `live[t,s] ≥ start − y[c,s−1]` for every reader `c`, and `peak ≥ Σ_t bytes(t)·live[t,s]`;
//! the objective is the peak. The graph's own order is the baseline and the fallback.
//!
//! Large graphs are solved a part at a time (transformer blocks, [`crate::ilp::blocks`]); parts
//! keep their place in the graph's order, so tensors crossing a cut are live through the part
//! from its start (produced before) or to its end (read after), and the stitched peak is the
//! largest part peak exactly. The plan realises the live sets with first-fit and compaction in a
//! scratchpad of exactly the peak, and the validator replays it (no spill, peak within it).

use crate::baseline::realise_in;
use crate::ilp::{covers, run_milp, with_solver, IlpError, IlpStatus, Milp, Part, Solver};
use crate::plan::{validate, Plan};
use crate::problem::Problem;
use good_lp::{constraint, variable, Constraint, Expression, ProblemVariables, Solution, Variable};
use serde::Serialize;
use std::time::Instant;

/// How one part's order was chosen.
#[derive(Debug, Clone, Serialize)]
pub struct PeakPart {
    /// The part.
    #[serde(flatten)]
    pub part: Part,
    /// Why the solver stopped.
    pub status: IlpStatus,
    /// The part's peak in the chosen order.
    pub peak_bytes: u64,
    /// The part's peak in the graph's order.
    pub graph_order_peak_bytes: u64,
    /// Binary variables.
    pub binaries: usize,
    /// Seconds in the solver.
    pub solve_seconds: f64,
}

/// The minimum-peak plan and how it was found.
#[derive(Debug, Clone, Serialize)]
pub struct PeakOutcome {
    /// The plan, validated in a scratchpad of `peak_bytes` with no spill.
    pub plan: Plan,
    /// `optimal` (proven over all orders), `time_limit`, or `feasible` (divided: every part's
    /// order optimal, the whole not proven).
    pub status: IlpStatus,
    /// The plan's peak footprint as the validator measured it.
    pub peak_bytes: u64,
    /// The peak footprint of the graph's own order (the fixed-order baseline).
    pub graph_order_peak_bytes: u64,
    /// A proven lower bound on the peak of any order: the optimum when proven whole, otherwise
    /// the largest operator working set (M_R).
    pub lower_bound_bytes: u64,
    /// `(peak − lower bound) / peak`.
    pub gap: f64,
    /// Seconds in the solver, all parts.
    pub solve_seconds: f64,
    /// Binary variables, all parts.
    pub binaries: usize,
    /// Constraints, all parts.
    pub constraints: usize,
    /// The parts (one, `whole`, when solved whole).
    pub parts: Vec<PeakPart>,
}

/// The largest order model worth solving whole rather than by blocks, in binaries. Measured
/// with CBC: TinyLLaMA prefill (39 operators, 1,482 order binaries) is proven optimal in about
/// 1 s; GPT-2 prefill (183 operators, 33,306) overran a 10 s limit to 61 s without a proof, as
/// its root relaxation ignores the limit.
pub const MAX_WHOLE_ORDER_BINARIES: usize = 2_000;

/// Binary variables of the order model of `ops` operators.
pub fn order_binaries(ops: usize) -> usize {
    ops * ops.saturating_sub(1)
}

/// Plans `problem` for the smallest footprint without spills, choosing the order of each of
/// `parts` (give one part covering every operator to solve whole) within `time_limit_s` seconds
/// in all, shared equally by the parts.
pub fn min_peak(
    problem: &Problem,
    time_limit_s: f64,
    solver: Solver,
    parts: &[Part],
) -> Result<PeakOutcome, IlpError> {
    if !solver.available() {
        return Err(IlpError::Unavailable(solver));
    }
    if !(time_limit_s > 0.0 && time_limit_s <= 86_400.0) {
        return Err(IlpError::TimeLimit(time_limit_s));
    }
    let n = problem.ops.len();
    if !covers(parts, n) {
        return Err(IlpError::Parts(n));
    }
    let graph_order: Vec<usize> = (0..n).collect();
    let graph_order_peak_bytes = peak_of(problem, &graph_order, 0, n - 1);
    let share = time_limit_s / parts.len() as f64;
    let mut order = graph_order.clone();
    let mut outcomes = Vec::with_capacity(parts.len());
    let (mut binaries, mut constraints) = (0, 0);
    let began = Instant::now();
    for part in parts {
        let part_began = Instant::now();
        let graph_peak = peak_of(problem, &order, part.first, part.last);
        let model = Model::new(problem, part, graph_peak.max(1));
        if model.binaries > crate::ilp::MAX_BINARIES {
            return Err(IlpError::TooLarge {
                binaries: model.binaries,
            });
        }
        binaries += model.binaries;
        constraints += model.constraints.len();
        let (status, chosen) = model.solve(problem, share, solver)?;
        let mut candidate = order.clone();
        candidate[part.first..=part.last].copy_from_slice(&chosen);
        let peak = peak_of(problem, &candidate, part.first, part.last);
        if peak < graph_peak {
            order = candidate;
        }
        outcomes.push(PeakPart {
            part: part.clone(),
            status,
            peak_bytes: peak.min(graph_peak),
            graph_order_peak_bytes: graph_peak,
            binaries: model.binaries,
            solve_seconds: part_began.elapsed().as_secs_f64(),
        });
    }
    let solve_seconds = began.elapsed().as_secs_f64();
    let peak = peak_of(problem, &order, 0, n - 1);
    let plan = realise_in(problem, peak, &order, &live(problem, &order))?;
    let replay = validate(problem, peak, &plan)?;
    if replay.non_compulsory_bytes != 0 {
        return Err(IlpError::Solver(format!(
            "the minimum-peak plan spills {} bytes",
            replay.non_compulsory_bytes
        )));
    }
    let whole_optimal = parts.len() == 1 && outcomes[0].status == IlpStatus::Optimal;
    let lower_bound_bytes = if whole_optimal {
        replay.peak_bytes
    } else {
        problem.min_budget().min(replay.peak_bytes)
    };
    let status = if outcomes.iter().any(|p| p.status == IlpStatus::TimeLimit) {
        IlpStatus::TimeLimit
    } else if whole_optimal || replay.peak_bytes == lower_bound_bytes {
        IlpStatus::Optimal
    } else {
        IlpStatus::Feasible
    };
    let gap = match replay.peak_bytes {
        0 => 0.0,
        p => (p - lower_bound_bytes) as f64 / p as f64,
    };
    Ok(PeakOutcome {
        plan,
        status,
        peak_bytes: replay.peak_bytes,
        graph_order_peak_bytes,
        lower_bound_bytes,
        gap,
        solve_seconds,
        binaries,
        constraints,
        parts: outcomes,
    })
}

/// Per tensor and step of `order`: live (from its producer's step, or a graph input's first
/// reader's, to its last reader's).
pub fn live(problem: &Problem, order: &[usize]) -> Vec<Vec<bool>> {
    let mut position = vec![0; order.len()];
    for (s, &o) in order.iter().enumerate() {
        position[o] = s;
    }
    problem
        .tensors
        .iter()
        .map(|t| {
            let first_read = t.consumers.iter().map(|&c| position[c]).min();
            let last_read = t.consumers.iter().map(|&c| position[c]).max();
            let start = t.producer.map(|p| position[p]).or(first_read).unwrap_or(0);
            let end = last_read.unwrap_or(start).max(start);
            (0..order.len()).map(|s| start <= s && s <= end).collect()
        })
        .collect()
}

/// The largest live bytes over steps `first..=last` of `order`.
fn peak_of(problem: &Problem, order: &[usize], first: usize, last: usize) -> u64 {
    let live = live(problem, order);
    (first..=last)
        .map(|s| {
            live.iter()
                .zip(&problem.tensors)
                .filter(|(l, _)| l[s])
                .map(|(_, t)| t.bytes)
                .sum::<u64>()
        })
        .max()
        .unwrap_or(0)
}

/// One part's order model.
struct Model {
    first: usize,
    /// `y[j][s]` for the part's `j`-th operator; `None` at the last step (fixed to 1).
    y: Vec<Vec<Option<Variable>>>,
    peak: Variable,
    pv: ProblemVariables,
    constraints: Vec<Constraint>,
    binaries: usize,
}

impl Model {
    /// Builds the model of `part`, with bytes in units of `unit` (the part's graph-order peak, to
    /// keep coefficients near 1).
    fn new(problem: &Problem, part: &Part, unit: u64) -> Model {
        let m = part.last - part.first + 1;
        let mut pv = ProblemVariables::new();
        let y: Vec<Vec<Option<Variable>>> = (0..m)
            .map(|_| {
                (0..m)
                    .map(|s| (s + 1 < m).then(|| pv.add(variable().binary())))
                    .collect()
            })
            .collect();
        let peak = pv.add(variable().min(0));
        let mut model = Model {
            first: part.first,
            y,
            peak,
            pv,
            constraints: Vec::new(),
            binaries: order_binaries(m),
        };
        let inside = |o: usize| (part.first..=part.last).contains(&o);
        let ran = |model: &Model, o: usize, s: Option<usize>| -> Expression {
            match s {
                None => Expression::from(0.0),
                Some(s) => match model.y[o - part.first][s] {
                    Some(v) => Expression::from(v),
                    None => Expression::from(1.0),
                },
            }
        };
        let before = |s: usize| s.checked_sub(1);
        let mut rows = Vec::new();
        for j in 0..m {
            for s in 0..m - 1 {
                rows.push(constraint!(
                    ran(&model, part.first + j, Some(s))
                        <= ran(&model, part.first + j, Some(s + 1))
                ));
            }
        }
        for s in 0..m - 1 {
            let sum: Expression = (0..m).map(|j| ran(&model, part.first + j, Some(s))).sum();
            rows.push(constraint!(sum == (s + 1) as f64));
        }
        for c in part.first..=part.last {
            for &t in &problem.ops[c].inputs {
                if let Some(p) = problem.tensors[t].producer.filter(|&p| inside(p) && p != c) {
                    for s in 0..m {
                        rows.push(constraint!(
                            ran(&model, c, Some(s)) <= ran(&model, p, before(s))
                        ));
                    }
                }
            }
        }
        let mut load: Vec<Expression> = vec![Expression::from(0.0); m];
        for tensor in &problem.tensors {
            let readers_in: Vec<usize> = tensor
                .consumers
                .iter()
                .copied()
                .filter(|&c| inside(c))
                .collect();
            let read_after = tensor.consumers.iter().any(|&c| c > part.last);
            let read_before = tensor.consumers.iter().any(|&c| c < part.first);
            let produced_in = tensor.producer.filter(|&p| inside(p));
            let before_part = tensor.producer.is_some_and(|p| p < part.first)
                || (tensor.producer.is_none() && read_before);
            let bytes = tensor.bytes as f64 / unit as f64;
            // Expressions of "has become live by step s".
            let starts: Vec<Option<usize>> = if let Some(p) = produced_in {
                vec![Some(p)]
            } else if before_part {
                vec![None]
            } else {
                readers_in.clone().into_iter().map(Some).collect()
            };
            if starts.is_empty() {
                continue; // not live in this part
            }
            if before_part && !read_after && readers_in.is_empty() {
                continue;
            }
            let start = |model: &Model, st: Option<usize>, s: usize| match st {
                Some(o) => ran(model, o, Some(s)),
                None => Expression::from(1.0),
            };
            if read_after && before_part {
                for l in &mut load {
                    *l += bytes;
                }
                continue;
            }
            for (s, l) in load.iter_mut().enumerate() {
                let lv = model.pv.add(variable().min(0).max(1));
                *l += bytes * lv;
                for &st in &starts {
                    if read_after {
                        rows.push(constraint!(lv >= start(&model, st, s)));
                    } else if readers_in.is_empty() {
                        // A graph output: live at its producer's step only.
                        let p = produced_in.unwrap_or(part.first);
                        rows.push(constraint!(
                            lv >= start(&model, st, s) - ran(&model, p, before(s))
                        ));
                    } else {
                        for &c in &readers_in {
                            rows.push(constraint!(
                                lv >= start(&model, st, s) - ran(&model, c, before(s))
                            ));
                        }
                    }
                }
            }
        }
        for l in load {
            rows.push(constraint!(peak >= l));
        }
        model.constraints = rows;
        model
    }

    /// Solves the model and reads the order back, checking it is one (one operator per step,
    /// producers first); a time-limited search with no valid order, or a solver that gives none,
    /// keeps the graph's.
    fn solve(
        &self,
        problem: &Problem,
        time_limit_s: f64,
        solver: Solver,
    ) -> Result<(IlpStatus, Vec<usize>), IlpError> {
        let vars: Vec<Variable> = self.y.iter().flatten().flatten().copied().collect();
        let found = with_solver!(solver, |s| run_milp(
            s,
            self.pv.clone(),
            self.peak.into(),
            self.constraints.clone(),
            None,
            time_limit_s
        )
        .map(|found| found.map(|solution| {
            vars.iter()
                .map(|&v| solution.value(v))
                .collect::<Vec<f64>>()
        })))?;
        let m = self.y.len();
        let (status, values) = match found {
            Milp::Solved(status, values) => (status, values),
            // No order from the solver: the part keeps the graph's.
            Milp::Fallback(status) => return Ok((status, (self.first..self.first + m).collect())),
        };
        // Values come in the order of `vars`: row by row, the last step of each row fixed.
        let mut values = values.into_iter();
        // Operator j ran at the first step where y[j][s] rounds to 1 (binaries rounded at 0.5).
        let mut at: Vec<(usize, usize)> = self
            .y
            .iter()
            .enumerate()
            .map(|(j, row)| {
                let ran: Vec<bool> = row
                    .iter()
                    .map(|v| v.is_none() || values.next().is_some_and(|x| x > 0.5))
                    .collect();
                (ran.iter().position(|&r| r).unwrap_or(m - 1), j)
            })
            .collect();
        at.sort_unstable();
        let order: Vec<usize> = at.iter().map(|&(_, j)| self.first + j).collect();
        let one_per_step = at.iter().enumerate().all(|(s, &(step, _))| step == s);
        let mut position = vec![0; problem.ops.len()];
        for (s, &o) in order.iter().enumerate() {
            position[o] = s;
        }
        let precedence = order.iter().all(|&c| {
            problem.ops[c].inputs.iter().all(|&t| {
                problem.tensors[t]
                    .producer
                    .filter(|p| order.contains(p))
                    .is_none_or(|p| position[p] < position[c])
            })
        });
        if one_per_step && precedence {
            Ok((status, order))
        } else if status == IlpStatus::TimeLimit {
            Ok((status, (self.first..self.first + m).collect()))
        } else {
            Err(IlpError::Solver(
                "returned an order with two operators at one step or a reader before its producer"
                    .into(),
            ))
        }
    }
}
