//! The scheduling problem extracted from an operator graph: which tensors live in the scratchpad,
//! who produces and consumes them, and what traffic no schedule can avoid.

use tessera_spec::graph::{Graph, TensorId, TensorKind};

/// A tensor that lives in the scratchpad while it is needed: an activation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Buffered {
    /// The graph tensor.
    pub id: TensorId,
    /// Its name.
    pub name: String,
    /// Bytes it occupies.
    pub bytes: u64,
    /// The operator (problem index) that writes it; `None` for graph inputs, which start in DRAM.
    pub producer: Option<usize>,
    /// Operators (problem indices) that read it.
    pub consumers: Vec<usize>,
}

impl Buffered {
    /// Graph inputs and tensors nobody reads (graph outputs) cross the chip boundary anyway.
    pub fn crosses_boundary(&self) -> bool {
        self.producer.is_none() || self.consumers.is_empty()
    }
}

/// One operator of the problem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Step {
    /// Operator name.
    pub name: String,
    /// Scratchpad tensors it reads (indices into [`Problem::tensors`]).
    pub inputs: Vec<usize>,
    /// Scratchpad tensors it writes.
    pub outputs: Vec<usize>,
    /// Weight and KV-cache bytes it streams from or to DRAM whatever the schedule.
    pub streamed_bytes: u64,
}

/// Operators and scratchpad tensors of a graph. Operators are numbered in the graph's insertion
/// order, which is topological.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// Operators.
    pub ops: Vec<Step>,
    /// Scratchpad tensors.
    pub tensors: Vec<Buffered>,
}

/// Why a problem or plan is unusable.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ScheduleError {
    /// The graph has no operators.
    #[error("the graph has no operators")]
    Empty,
    /// Some operator's inputs and outputs alone exceed the budget.
    #[error(
        "budget {budget} bytes is below operator `{op}`'s working set of {working_set} bytes \
         (inputs + outputs); the smallest feasible budget is {min_budget} bytes"
    )]
    BudgetTooSmall {
        /// The budget.
        budget: u64,
        /// The operator.
        op: String,
        /// Its working set.
        working_set: u64,
        /// The largest working set over all operators (M_R).
        min_budget: u64,
    },
    /// An operator order that is not a permutation of the problem's operators.
    #[error("the operator order is not a permutation of the graph's operators")]
    Order,
    /// No room for a tensor even after evicting everything evictable and compacting (only
    /// possible if the operator's working set exceeds the budget, which is checked first).
    #[error("step {step} (`{op}`): no room for {bytes} bytes of `{tensor}`")]
    Fragmented {
        /// Step.
        step: usize,
        /// Operator.
        op: String,
        /// Tensor.
        tensor: String,
        /// Its size.
        bytes: u64,
    },
}

impl Problem {
    /// Extracts the problem from `graph`: activations are scratchpad tensors; weights and the KV
    /// cache stream.
    pub fn from_graph(graph: &Graph) -> Result<Problem, ScheduleError> {
        if graph.op_count() == 0 {
            return Err(ScheduleError::Empty);
        }
        let mut index_of = vec![None; graph.tensors().len()];
        let mut tensors = Vec::new();
        let op_index: std::collections::BTreeMap<_, _> =
            graph.op_ids().enumerate().map(|(i, id)| (id, i)).collect();
        for (i, t) in graph.tensors().iter().enumerate() {
            if t.kind == TensorKind::Activation {
                index_of[i] = Some(tensors.len());
                tensors.push(Buffered {
                    id: TensorId(i as u32),
                    name: t.name.clone(),
                    bytes: t.bytes,
                    producer: t.producer.and_then(|p| op_index.get(&p).copied()),
                    consumers: Vec::new(),
                });
            }
        }
        let mut ops = Vec::with_capacity(graph.op_count());
        for (o, op) in graph.ops().enumerate() {
            let pick = |ids: &[TensorId]| -> Vec<usize> {
                let mut v: Vec<usize> = ids.iter().filter_map(|t| index_of[t.0 as usize]).collect();
                v.sort_unstable();
                v.dedup();
                v
            };
            let inputs = pick(&op.inputs);
            for &t in &inputs {
                tensors[t].consumers.push(o);
            }
            ops.push(Step {
                name: op.name.clone(),
                inputs,
                outputs: pick(&op.outputs),
                streamed_bytes: op.cost.compulsory_bytes(),
            });
        }
        Ok(Problem { ops, tensors })
    }

    /// Bytes an operator needs resident while it runs.
    pub fn working_set(&self, op: usize) -> u64 {
        let s = &self.ops[op];
        s.inputs
            .iter()
            .chain(&s.outputs)
            .map(|&t| self.tensors[t].bytes)
            .sum()
    }

    /// The largest working set over all operators (COSMA's M_R): no schedule fits below it.
    pub fn min_budget(&self) -> u64 {
        (0..self.ops.len())
            .map(|o| self.working_set(o))
            .max()
            .unwrap_or(0)
    }

    /// Checks that every operator's working set fits `budget`.
    pub fn check_budget(&self, budget: u64) -> Result<(), ScheduleError> {
        let min_budget = self.min_budget();
        if let Some(op) = (0..self.ops.len()).find(|&o| self.working_set(o) > budget) {
            return Err(ScheduleError::BudgetTooSmall {
                budget,
                op: self.ops[op].name.clone(),
                working_set: self.working_set(op),
                min_budget,
            });
        }
        Ok(())
    }

    /// Off-chip bytes no schedule avoids: streamed weights and KV cache, graph inputs read once,
    /// graph outputs written once.
    pub fn compulsory_bytes(&self) -> u64 {
        let streamed: u64 = self.ops.iter().map(|s| s.streamed_bytes).sum();
        let boundary: u64 = self
            .tensors
            .iter()
            .filter(|t| t.crosses_boundary())
            .map(|t| t.bytes)
            .sum();
        streamed + boundary
    }
}
