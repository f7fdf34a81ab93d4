//! Test vectors for a PE: seeded random items plus edge cases, laid out as a controller would
//! drive them (groups of steps, segment size from N of N:16).

use tessera_hdl::golden::PeStep;
use tessera_hdl::params::BLOCK;
use tessera_sim::golden::Rng;

/// How one item's steps are shaped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ItemShape {
    /// Kept weights per 16-wide block (N of N:16; 16 is dense).
    pub n: u32,
    /// Quantisation groups in the item.
    pub groups: usize,
    /// Steps per group.
    pub steps_per_group: usize,
    /// Weight bits (8, 4, 3 or 2).
    pub weight_bits: u32,
    /// Whether the weights run on the shift-and-add datapath.
    pub shift_add: bool,
    /// Whether the weights carry zero points (asymmetric quantisation).
    pub asymmetric: bool,
}

/// Operand values an item is drawn from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Fill {
    /// Uniform over the full ranges.
    Random,
    /// Only the extreme values (−128/127 activations, the weight type's min/max, ±32767 scales).
    Extremes,
    /// Zero weights in every group.
    ZeroGroups,
    /// −128 activations and the weight type's minimum in both columns: each column's chain sum
    /// is the largest, `lanes · 128 · 128` (262144 for 16 int8 lanes, the top of a packed
    /// column's window).
    AllMin,
    /// −128 activations, column A's weights at the type's maximum and column B's at its minimum:
    /// column A's sum is the smallest, `lanes · (−128) · 127` (−260096 for 16 int8 lanes, the
    /// bottom of the window), column B's the largest.
    Opposed,
}

/// The steps of one item for a PE with `lanes` lanes and `segments` outputs that packs `pack`
/// columns per lane: on a packing PE a dense item carries column-B weights (other items zeros).
pub fn item(
    rng: &mut Rng,
    shape: ItemShape,
    fill: Fill,
    lanes: usize,
    segments: usize,
    pack: usize,
) -> Vec<PeStep> {
    let packed = pack == 2 && shape.n == BLOCK as u32;
    let seg_log2 = shape.n.min(lanes as u32).ilog2();
    let (wlo, whi) = (
        -(1i32 << (shape.weight_bits - 1)),
        (1i32 << (shape.weight_bits - 1)) - 1,
    );
    let steps = shape.groups * shape.steps_per_group;
    let mut out = Vec::with_capacity(steps);
    for s in 0..steps {
        let pick = |rng: &mut Rng, lo: i32, hi: i32| match fill {
            Fill::Random | Fill::ZeroGroups => rng.int(lo, hi),
            Fill::Extremes => {
                if rng.int(0, 1) == 0 {
                    lo
                } else {
                    hi
                }
            }
            Fill::AllMin | Fill::Opposed => lo,
        };
        let act = (0..BLOCK).map(|_| pick(rng, -128, 127) as i8).collect();
        let weight = (0..lanes)
            .map(|_| match fill {
                Fill::ZeroGroups => 0,
                Fill::Opposed => whi as i8,
                _ => pick(rng, wlo, whi) as i8,
            })
            .collect();
        let weight_b = match pack {
            2 => (0..lanes)
                .map(|_| match fill {
                    _ if !packed => 0,
                    Fill::ZeroGroups => 0,
                    _ => pick(rng, wlo, whi) as i8,
                })
                .collect(),
            _ => Vec::new(),
        };
        // Positions in the block, drawn independently per lane: the multiplexer must route any
        // index, repeated or not (`matrix::matrix_data` draws distinct ascending N:M positions).
        let index = (0..lanes)
            .map(|_| match fill {
                Fill::AllMin | Fill::Opposed => 0,
                _ => rng.int(0, BLOCK as i32 - 1) as u8,
            })
            .collect();
        let scale = (0..segments)
            .map(|_| pick(rng, -32767, 32767) as i16)
            .collect();
        let zero = (0..segments)
            .map(|_| {
                if shape.asymmetric {
                    pick(rng, -8, 7) as i8
                } else {
                    0
                }
            })
            .collect();
        out.push(PeStep {
            first: s == 0,
            last: s + 1 == steps,
            group_first: s % shape.steps_per_group == 0,
            group_last: (s + 1) % shape.steps_per_group == 0,
            shift_add: shape.shift_add,
            segment_log2: seg_log2,
            act,
            weight,
            weight_b,
            index,
            scale,
            zero,
        });
    }
    out
}

/// A stream covering every N of N:16, the int8 / int4 / int2 datapaths (4- and 2-bit weights
/// asymmetric) and every [`Fill`], each item `groups × steps_per_group` steps, with idle cycles
/// between some steps, for a PE of `lanes` lanes and `segments` outputs packing `pack` columns
/// per lane. Returns the steps and the per-cycle slots.
pub fn mixed_stream(
    seed: u64,
    (lanes, segments, pack): (usize, usize, usize),
    groups: usize,
    steps_per_group: usize,
) -> (Vec<PeStep>, Vec<crate::rusthdl::Slot>) {
    let mut rng = Rng::new(seed);
    let (mut steps, mut slots) = (Vec::new(), Vec::new());
    for n in [2, 4, 8, 16] {
        for (bits, shift) in [(8, false), (4, true), (2, true)] {
            for fill in [
                Fill::Random,
                Fill::Extremes,
                Fill::ZeroGroups,
                Fill::AllMin,
                Fill::Opposed,
            ] {
                let shape = ItemShape {
                    n,
                    groups,
                    steps_per_group,
                    weight_bits: bits,
                    shift_add: shift,
                    asymmetric: bits < 8,
                };
                for st in item(&mut rng, shape, fill, lanes, segments, pack) {
                    steps.push(st.clone());
                    slots.push(Some(st));
                    if rng.int(0, 3) == 0 {
                        slots.push(None);
                    }
                }
            }
        }
    }
    (steps, slots)
}
