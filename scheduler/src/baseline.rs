//! Baseline schedules, to measure what the ILP buys: the graph's topological order, first-fit
//! addresses (loads from the bottom, outputs at the end away from their inputs), and eviction by
//! least-recent use (LRU) or furthest next use (Belady).

use crate::plan::{Plan, StepPlan};
use crate::problem::{Problem, ScheduleError};
use serde::Serialize;

/// Which resident tensor to evict when space runs out.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Eviction {
    /// The one used longest ago.
    Lru,
    /// The one needed again furthest in the future (Belady's MIN).
    Belady,
}

impl Eviction {
    /// Short name for reports.
    pub fn name(&self) -> &'static str {
        match self {
            Eviction::Lru => "topo-lru-first-fit",
            Eviction::Belady => "topo-belady-first-fit",
        }
    }
}

struct State<'a> {
    problem: &'a Problem,
    budget: u64,
    /// Address of each resident tensor.
    resident: Vec<Option<u64>>,
    in_dram: Vec<bool>,
    read_once: Vec<bool>,
    last_use: Vec<usize>,
    non_compulsory: u64,
}

impl State<'_> {
    /// Free holes between resident tensors, lowest first, as `(start, end)`.
    fn holes(&self) -> Vec<(u64, u64)> {
        let mut spans: Vec<(u64, u64)> = self
            .resident
            .iter()
            .enumerate()
            .filter_map(|(t, a)| a.map(|a| (a, a + self.problem.tensors[t].bytes)))
            .collect();
        spans.sort_unstable();
        let mut holes = Vec::new();
        let mut at = 0;
        for (a, b) in spans {
            if a > at {
                holes.push((at, a));
            }
            at = at.max(b);
        }
        if at < self.budget {
            holes.push((at, self.budget));
        }
        holes
    }

    /// First fit from the bottom (`high = false`: the lowest hole, at its start) or from the top
    /// (the highest hole, at its end).
    fn first_fit(&self, size: u64, high: bool) -> Option<u64> {
        let mut fits = self.holes().into_iter().filter(|(a, b)| b - a >= size);
        if high {
            fits.next_back().map(|(_, b)| b - size)
        } else {
            fits.map(|(a, _)| a).next()
        }
    }

    fn next_use(&self, t: usize, position: &[usize], step: usize) -> usize {
        self.problem.tensors[t]
            .consumers
            .iter()
            .map(|&c| position[c])
            .filter(|&p| p >= step)
            .min()
            .unwrap_or(usize::MAX)
    }

    /// Packs every resident tensor towards address 0 in address order, recording the moves of
    /// tensors resident before this step in `sp.relocate` and updating this step's own placements.
    fn compact(&mut self, sp: &mut StepPlan) {
        let mut order: Vec<(u64, usize)> = self
            .resident
            .iter()
            .enumerate()
            .filter_map(|(t, a)| a.map(|a| (a, t)))
            .collect();
        order.sort_unstable();
        let mut at = 0;
        for (old, t) in order {
            if old != at {
                self.resident[t] = Some(at);
                if let Some(l) = sp.load.iter_mut().find(|(x, _)| *x == t) {
                    l.1 = at;
                } else if let Some(o) = sp.outputs.iter_mut().find(|(x, _)| *x == t) {
                    o.1 = at;
                } else if let Some(r) = sp.relocate.iter_mut().find(|(x, _)| *x == t) {
                    r.1 = at;
                } else {
                    sp.relocate.push((t, at));
                }
            }
            at += self.problem.tensors[t].bytes;
        }
    }

    /// Places `t`: first fit; if free space suffices but is fragmented, compaction; otherwise
    /// evicts by `policy`, never a tensor in `keep`.
    #[allow(clippy::too_many_arguments)]
    fn allocate(
        &mut self,
        t: usize,
        high: bool,
        keep: &[usize],
        policy: Eviction,
        position: &[usize],
        step: usize,
        op: &str,
        sp: &mut StepPlan,
    ) -> Result<u64, ScheduleError> {
        let size = self.problem.tensors[t].bytes;
        loop {
            if let Some(addr) = self
                .first_fit(size, high)
                .or_else(|| self.first_fit(size, !high))
            {
                return Ok(addr);
            }
            let occupied: u64 = self
                .resident
                .iter()
                .enumerate()
                .filter(|(_, a)| a.is_some())
                .map(|(v, _)| self.problem.tensors[v].bytes)
                .sum();
            if self.budget - occupied >= size {
                self.compact(sp);
                continue;
            }
            let victim = (0..self.resident.len())
                .filter(|&v| self.resident[v].is_some() && !keep.contains(&v))
                .max_by_key(|&v| match policy {
                    Eviction::Lru => (usize::MAX - self.last_use[v], v),
                    Eviction::Belady => (self.next_use(v, position, step), v),
                });
            let Some(v) = victim else {
                return Err(ScheduleError::Fragmented {
                    step,
                    op: op.to_string(),
                    tensor: self.problem.tensors[t].name.clone(),
                    bytes: size,
                });
            };
            self.resident[v] = None;
            if !self.in_dram[v] {
                self.in_dram[v] = true;
                self.non_compulsory += self.problem.tensors[v].bytes;
            }
            sp.relocate.retain(|(x, _)| *x != v);
            sp.evict.push(v);
        }
    }
}

/// The baseline schedule of `problem` under `budget` bytes with `policy`.
pub fn baseline(problem: &Problem, budget: u64, policy: Eviction) -> Result<Plan, ScheduleError> {
    let order: Vec<usize> = (0..problem.ops.len()).collect();
    schedule(problem, budget, policy, &order, None)
}

/// Realises a residency decision (`resident[t][s]`: tensor `t` stays in the scratchpad during
/// step `s`, as an ILP decides it) as a plan in the graph's order: tensors the decision drops
/// are evicted before the step, the rest are placed first-fit with compaction. Space never runs
/// out when every step's resident bytes fit the budget; should it, Belady eviction takes over and
/// the plan's traffic says so.
pub fn realise(
    problem: &Problem,
    budget: u64,
    resident: &[Vec<bool>],
) -> Result<Plan, ScheduleError> {
    let order: Vec<usize> = (0..problem.ops.len()).collect();
    realise_in(problem, budget, &order, resident)
}

/// [`realise`] for operators run in `order` (a topological order of problem indices);
/// `resident[t][s]` refers to step `s` of that order.
pub fn realise_in(
    problem: &Problem,
    budget: u64,
    order: &[usize],
    resident: &[Vec<bool>],
) -> Result<Plan, ScheduleError> {
    schedule(problem, budget, Eviction::Belady, order, Some(resident))
}

fn schedule(
    problem: &Problem,
    budget: u64,
    policy: Eviction,
    order: &[usize],
    planned: Option<&[Vec<bool>]>,
) -> Result<Plan, ScheduleError> {
    problem.check_budget(budget)?;
    let n = problem.ops.len();
    let mut position = vec![usize::MAX; n];
    for (s, &o) in order.iter().enumerate() {
        match position.get_mut(o) {
            Some(p) if *p == usize::MAX => *p = s,
            _ => return Err(ScheduleError::Order),
        }
    }
    if order.len() != n {
        return Err(ScheduleError::Order);
    }
    let t_count = problem.tensors.len();
    let mut st = State {
        problem,
        budget,
        resident: vec![None; t_count],
        in_dram: problem
            .tensors
            .iter()
            .map(|t| t.producer.is_none())
            .collect(),
        read_once: vec![false; t_count],
        last_use: vec![0; t_count],
        non_compulsory: 0,
    };
    let mut readers_left: Vec<usize> = problem.tensors.iter().map(|t| t.consumers.len()).collect();
    let mut steps = Vec::with_capacity(n);
    for (s, &o) in order.iter().enumerate() {
        let op = &problem.ops[o];
        let keep: Vec<usize> = op.inputs.iter().chain(&op.outputs).copied().collect();
        let mut sp = StepPlan::default();
        if let Some(planned) = planned {
            for (t, stays) in planned.iter().enumerate() {
                if st.resident[t].is_some() && !stays[s] && !keep.contains(&t) {
                    st.resident[t] = None;
                    if !st.in_dram[t] {
                        st.in_dram[t] = true;
                        st.non_compulsory += problem.tensors[t].bytes;
                    }
                    sp.evict.push(t);
                }
            }
        }
        for &t in &op.inputs {
            if st.resident[t].is_none() {
                let addr = st.allocate(t, false, &keep, policy, &position, s, &op.name, &mut sp)?;
                st.resident[t] = Some(addr);
                if problem.tensors[t].producer.is_none() && !st.read_once[t] {
                    st.read_once[t] = true;
                } else {
                    st.non_compulsory += problem.tensors[t].bytes;
                }
                sp.load.push((t, addr));
            }
            st.last_use[t] = s;
        }
        // Outputs go to the end of the scratchpad away from the inputs, so that a chain of
        // operators ping-pongs between the two ends instead of fragmenting the middle.
        let input_spans: Vec<(u64, u64)> = op
            .inputs
            .iter()
            .filter_map(|&t| st.resident[t].map(|a| (a, problem.tensors[t].bytes)))
            .collect();
        let weight: u64 = input_spans.iter().map(|(_, b)| b).sum();
        let centre = input_spans
            .iter()
            .map(|(a, b)| (*a as u128 * 2 + *b as u128) * *b as u128)
            .sum::<u128>()
            .checked_div(2 * weight as u128)
            .unwrap_or(0);
        let high = centre < budget as u128 / 2;
        for &t in &op.outputs {
            let addr = st.allocate(t, high, &keep, policy, &position, s, &op.name, &mut sp)?;
            st.resident[t] = Some(addr);
            st.last_use[t] = s;
            sp.outputs.push((t, addr));
        }
        for &t in &op.inputs {
            readers_left[t] -= 1;
        }
        for &t in op.inputs.iter().chain(&op.outputs) {
            if readers_left[t] == 0 {
                st.resident[t] = None;
            }
        }
        steps.push(sp);
    }
    Ok(Plan {
        order: order.to_vec(),
        steps,
        non_compulsory_bytes: st.non_compulsory,
    })
}
