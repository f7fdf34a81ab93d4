//! Where a compiled pass keeps its data: activations on chip, placed first fit in their buffers
//! and freed after their last reader, and the [`PassMap`] that tells a functional simulation
//! what to write before a program runs and where to find each tensor after.

use crate::kv::KvLayout;
use crate::lower::Wave;
use std::collections::BTreeMap;
use tessera_spec::accel::Accelerator;
use tessera_spec::analytical::port_bytes_per_cycle;
use tessera_spec::graph::{Graph, TensorId};
use tessera_spec::isa::BufRef;

/// Where a compiled pass keeps its data.
#[derive(Debug, Clone, Default)]
pub struct PassMap {
    /// Every streamed linear layer, in program order (fused sibling projections as one).
    pub linears: Vec<MappedLinear>,
    /// Parameters and step inputs the program loads, in program order.
    pub loads: Vec<ParamLoad>,
    /// The on-chip place of each activation tensor, by graph tensor name (its first row; rows
    /// of several tokens follow each other packed, except a fused linear layer's parts, whose
    /// rows are as wide as the fused output, and the rotated queries and keys, one row of
    /// queries then keys per token).
    pub tensors: BTreeMap<String, BufRef>,
    /// The KV cache's layout, when the pass has one.
    pub kv: Option<KvLayout>,
    /// Bytes the program places off chip below the KV cache in each channel (weights,
    /// parameters, spilled activations, a prefill's stored rows), by global channel.
    pub off_chip_bytes: Vec<u64>,
    /// Every activation has a place of its own for its lifetime, so the program computes on
    /// real data. False when they do not all fit (long prefills), the activation buffer is also
    /// the weight or KV buffer, or [`crate::program::data_semantics`] gives another reason: such
    /// programs are timing models.
    pub functional: bool,
}

/// A streamed linear layer: the graph operators it computes and its weights' waves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MappedLinear {
    /// Each fused operator's name and output features, in the order of the fused rows.
    pub parts: Vec<(String, u64)>,
    /// The waves of the fused weight rows, in program order.
    pub waves: Vec<Wave>,
}

/// Bytes one operator loads from off-chip memory besides streamed weights: norm weights, biases,
/// rotary angles, the step's token embedding rows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParamLoad {
    /// The operator.
    pub op: String,
    /// `(channel, address, bytes)` of each piece; the pieces in order are the operator's
    /// parameter bytes (for an embedding, each token's row as the table stores it).
    pub pieces: Vec<(u8, u64, u64)>,
}

/// One allocation in a buffer.
#[derive(Debug, Clone, Copy)]
struct Region {
    buffer: u8,
    start: u64,
    end: u64,
    /// Index of the last operator that reads it.
    last_use: usize,
}

/// First-fit allocation of a pass's activations in the on-chip buffers.
#[derive(Debug)]
pub(crate) struct OnChip {
    capacity: Vec<u64>,
    /// Per buffer, the alignment of every region: one access across all banks
    /// ([`port_bytes_per_cycle`]), so a tensor starts on bank 0.
    align: Vec<u64>,
    regions: Vec<Region>,
    places: BTreeMap<TensorId, BufRef>,
    /// Per tensor, the index of the last operator reading it (`usize::MAX` for pass outputs).
    last_use: Vec<usize>,
    /// Whether every allocation so far found room.
    pub fits: bool,
}

impl OnChip {
    /// An empty allocator for `graph`'s tensors on `accel`.
    pub fn new(accel: &Accelerator, graph: &Graph) -> Self {
        // Tensors nobody reads (the pass's outputs) keep `usize::MAX`.
        let mut last_use = vec![usize::MAX; graph.tensors().len()];
        for (i, op) in graph.ops().enumerate() {
            for t in &op.inputs {
                last_use[t.0 as usize] = i;
            }
        }
        OnChip {
            capacity: accel.buffers().iter().map(|b| b.bytes().0).collect(),
            align: accel.buffers().iter().map(port_bytes_per_cycle).collect(),
            regions: Vec::new(),
            places: BTreeMap::new(),
            last_use,
            fits: true,
        }
    }

    /// Frees every region no operator from `op` on reads.
    pub fn release_before(&mut self, op: usize) {
        self.regions.retain(|r| r.last_use >= op);
    }

    /// `bytes` in `buffer`, kept until operator `last_use`: the first gap that holds them,
    /// aligned to the buffer's access width. Once one allocation finds no room ([`Self::fits`] turns false),
    /// every later one gives `None`: the pass is a timing model.
    fn alloc(&mut self, buffer: u8, bytes: u64, last_use: usize) -> Option<u64> {
        if !self.fits {
            return None;
        }
        let mut taken: Vec<(u64, u64)> = self
            .regions
            .iter()
            .filter(|r| r.buffer == buffer)
            .map(|r| (r.start, r.end))
            .collect();
        taken.sort_unstable();
        let mut at = 0;
        for (start, end) in taken {
            if at + bytes <= start {
                break;
            }
            at = at.max(end.next_multiple_of(self.align[buffer as usize]));
        }
        if at + bytes > self.capacity[buffer as usize] {
            self.fits = false;
            return None;
        }
        self.regions.push(Region {
            buffer,
            start: at,
            end: at + bytes,
            last_use,
        });
        Some(at)
    }

    /// A scratch region for operator `op` alone (address 0 in timing models).
    pub fn scratch(&mut self, buffer: u8, bytes: u64, op: usize) -> BufRef {
        BufRef {
            buffer,
            addr: self.alloc(buffer, bytes, op).unwrap_or(0) as u32,
        }
    }

    /// One region for `tensors`, each `(tensor, offset)`, kept until their last reader. In
    /// timing models the tensors get no place and the region is address 0.
    pub fn place(&mut self, buffer: u8, bytes: u64, tensors: &[(TensorId, u64)]) -> BufRef {
        let last = tensors
            .iter()
            .map(|(t, _)| self.last_use[t.0 as usize])
            .max()
            .unwrap_or(0);
        let Some(at) = self.alloc(buffer, bytes, last) else {
            return BufRef { buffer, addr: 0 };
        };
        for &(t, offset) in tensors {
            self.places.insert(
                t,
                BufRef {
                    buffer,
                    addr: (at + offset) as u32,
                },
            );
        }
        BufRef {
            buffer,
            addr: at as u32,
        }
    }

    /// Where `tensor` is (address 0 of `fallback` when it has no place: timing models).
    pub fn at(&self, tensor: Option<&TensorId>, fallback: u8) -> BufRef {
        tensor
            .and_then(|t| self.places.get(t))
            .copied()
            .unwrap_or(BufRef {
                buffer: fallback,
                addr: 0,
            })
    }

    /// Every placed tensor by name.
    pub fn named(&self, graph: &Graph) -> BTreeMap<String, BufRef> {
        self.places
            .iter()
            .map(|(t, at)| (graph.tensor(*t).name.clone(), *at))
            .collect()
    }
}
