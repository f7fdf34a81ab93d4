//! The processing element: a sparse DSP chain with mixed-precision lanes, a reduction tree whose
//! nodes can cut the chain into segments, and per-segment group dequantisation (MixPE).
//!
//! One *step* feeds a PE one 16-wide block of int8 activations and `lanes` weights with their
//! 4-bit positions in the block. Each lane's sparse multiplexer picks the activation at its
//! position and multiplies it by its weight: in the DSP multiplier (int8 weights), or in the
//! shift-and-add datapath for 4-bit-or-narrower weights. A binary tree of pipelined adders
//! reduces the lanes; its nodes at level `s` are the partial sums of segments of `2^s` lanes, so
//! with N:16 sparsity and `N < lanes` the chain splits into `lanes / N` segments, one output
//! column each. Each segment accumulates its partial sums over a quantisation group, and beside
//! them (in a second tree of the same shape) the sum of the activations its lanes selected; once
//! per group a pipelined dequantiser of `matrix.dequant_cycles_per_group` stages removes the
//! zero point and applies the scale, `(Σ a·w − zp · Σ a) × scale`, and the scaled sums accumulate
//! into the segment's output. Symmetric weights have `zp = 0`; asymmetric `q` with zero point
//! `z` are stored as `q − 8` with `zp = z − 8`, which keeps 4-bit weights signed.
//!
//! Arithmetic is integer and exact: products 16 bits, group and activation sums 32 bits
//! (wrapping), zero points 8-bit and scales 16-bit signed fixed point, results 48 bits (wrapping).
//! [`crate::golden`] computes the same.
//!
//! The block's behaviour is written twice, as the Rust `update` that rust-hdl simulates and as the
//! Verilog that [`Logic::hdl`] emits, both generated from the same stage layout below; the
//! testbenches run both against [`crate::golden`] on the same vectors.

use crate::hidden::{vec_of, Hidden};
use crate::params::{EngineParams, BLOCK, PE_FIXED_STAGES};
use rust_hdl::prelude::*;
use std::fmt::Write as _;

/// Bits of a step's segment-size field (`log2` of the segment length, 0..=4).
pub const SEGMENT_BITS: usize = 3;
/// Bits of a segment's scale word: zero point (8) above scale (16).
pub const SCALE_BITS: usize = 24;

/// One processing element. Port vectors are sized from [`EngineParams`].
#[derive(LogicBlock)]
pub struct Pe {
    /// Clock.
    pub clock: Signal<In, Clock>,
    /// Synchronous reset: clears the valid pipeline.
    pub reset: Signal<In, Bit>,
    /// A step is presented this cycle.
    pub in_valid: Signal<In, Bit>,
    /// First step of an output item: its first group starts the output accumulator at zero.
    pub in_first: Signal<In, Bit>,
    /// Last step of an output item: its last group emits the result.
    pub in_last: Signal<In, Bit>,
    /// First step of a quantisation group: the group accumulator starts at zero.
    pub in_group_first: Signal<In, Bit>,
    /// Last step of a quantisation group: the group sum is dequantised.
    pub in_group_last: Signal<In, Bit>,
    /// Use the shift-and-add datapath (weights within 4-bit range).
    pub in_shift_add: Signal<In, Bit>,
    /// `log2` of the segment length: `log2(min(N, lanes))`.
    pub in_segment_log2: Signal<In, Bits<SEGMENT_BITS>>,
    /// The 16 activations of the step's block (int8).
    pub in_act: Vec<Signal<In, Bits<8>>>,
    /// One weight per lane (int8 two's complement; narrower weights sign-extended).
    pub in_weight: Vec<Signal<In, Bits<8>>>,
    /// Each lane's activation position in the block.
    pub in_index: Vec<Signal<In, Bits<4>>>,
    /// Each segment's group scale (low 16 bits, signed) and zero point (high 8 bits, signed),
    /// read with the group's last step.
    pub in_scale: Vec<Signal<In, Bits<SCALE_BITS>>>,
    /// A result is presented this cycle.
    pub out_valid: Signal<Out, Bit>,
    /// Each segment's result (48-bit two's complement).
    pub out_result: Vec<Signal<Out, Bits<48>>>,

    i_valid: Signal<Local, Bit>,
    i_first: Signal<Local, Bit>,
    i_last: Signal<Local, Bit>,
    i_gfirst: Signal<Local, Bit>,
    i_glast: Signal<Local, Bit>,
    i_shift: Signal<Local, Bit>,
    i_seg: Signal<Local, Bits<SEGMENT_BITS>>,
    i_act: Vec<Signal<Local, Bits<8>>>,
    i_weight: Vec<Signal<Local, Bits<8>>>,
    i_index: Vec<Signal<Local, Bits<4>>>,
    i_scale: Vec<Signal<Local, Bits<SCALE_BITS>>>,
    /// Products (level 0) and reduction-tree levels, flattened.
    node: Vec<Signal<Local, Bits<32>>>,
    /// Delayed copies of the cut levels, flattened.
    tap: Vec<Signal<Local, Bits<32>>>,
    /// The selected activations (level 0) and their sums, shaped as `node`.
    anode: Vec<Signal<Local, Bits<32>>>,
    /// Delayed copies of `anode`'s cut levels, shaped as `tap`.
    atap: Vec<Signal<Local, Bits<32>>>,
    sb_valid: Vec<Signal<Local, Bit>>,
    sb_first: Vec<Signal<Local, Bit>>,
    sb_last: Vec<Signal<Local, Bit>>,
    sb_gfirst: Vec<Signal<Local, Bit>>,
    sb_glast: Vec<Signal<Local, Bit>>,
    sb_seg: Vec<Signal<Local, Bits<SEGMENT_BITS>>>,
    sb_scale: Vec<Signal<Local, Bits<SCALE_BITS>>>,
    seg: Vec<Signal<Local, Bits<32>>>,
    aseg: Vec<Signal<Local, Bits<32>>>,
    g_acc: Vec<Signal<Local, Bits<32>>>,
    g_val: Vec<Signal<Local, Bits<32>>>,
    g_aacc: Vec<Signal<Local, Bits<32>>>,
    g_asum: Vec<Signal<Local, Bits<32>>>,
    g_scale: Vec<Signal<Local, Bits<SCALE_BITS>>>,
    g_valid: Signal<Local, Bit>,
    g_first: Signal<Local, Bit>,
    g_last: Signal<Local, Bit>,
    g_pending_first: Signal<Local, Bit>,
    d_prod: Vec<Signal<Local, Bits<48>>>,
    d_valid: Vec<Signal<Local, Bit>>,
    d_first: Vec<Signal<Local, Bit>>,
    d_last: Vec<Signal<Local, Bit>>,
    acc: Vec<Signal<Local, Bits<48>>>,
    o_valid: Vec<Signal<Local, Bit>>,
    o_result: Vec<Signal<Local, Bits<48>>>,

    layout: Hidden<Layout>,
}

/// Sizes of the PE's stages, shared by the Rust model and the Verilog text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Layout {
    lanes: usize,
    levels: usize,
    min_seg: usize,
    segments: usize,
    dequant: usize,
    pad: usize,
    multiplier: bool,
    shift_add: bool,
}

impl Layout {
    /// Index of node `i` of tree level `level` in `node`.
    fn node(&self, level: usize, i: usize) -> usize {
        (0..level).map(|l| self.lanes >> l).sum::<usize>() + i
    }
    fn node_count(&self) -> usize {
        self.node(self.levels, 0) + 1
    }
    /// Index of level `level`'s node `i` delayed `d` (1..=levels−level) cycles in `tap`.
    fn tap(&self, level: usize, d: usize, i: usize) -> usize {
        let mut base = 0;
        for l in self.min_seg..level {
            base += (self.levels - l) * (self.lanes >> l);
        }
        base + (d - 1) * (self.lanes >> level) + i
    }
    fn tap_count(&self) -> usize {
        (self.min_seg..self.levels)
            .map(|l| (self.levels - l) * (self.lanes >> l))
            .sum()
    }
    /// Whether a lane multiplies in the shift-and-add datapath when the step asks for it.
    fn product(&self, act: i64, weight: i64, shift: bool) -> i64 {
        if self.shift_add && (shift || !self.multiplier) {
            let w = weight as u64;
            let mut p = 0i64;
            for b in 0..3 {
                if w >> b & 1 == 1 {
                    p += act << b;
                }
            }
            if w >> 3 & 1 == 1 {
                p -= act << 3;
            }
            p
        } else {
            act * weight
        }
    }
}

fn get<const N: usize>(s: &Signal<Local, Bits<N>>) -> u64 {
    bits_value(s.val())
}

/// The value of a bit vector of up to 64 bits (rust-hdl's `index` covers only short vectors).
pub fn bits_value<const N: usize>(b: Bits<N>) -> u64 {
    if N <= 32 {
        b.index() as u64
    } else {
        (0..N).fold(0, |acc, i| acc | (b.get_bit(i) as u64) << i)
    }
}

fn bits<const N: usize>(v: u64) -> Bits<N> {
    Bits::from(v & ((1u128 << N) - 1) as u64)
}

fn sext(v: u64, width: u32) -> i64 {
    ((v << (64 - width)) as i64) >> (64 - width)
}

impl Pe {
    /// A PE for the engine described by `p`.
    pub fn new(p: &EngineParams) -> Pe {
        let l = Layout {
            lanes: p.lanes,
            levels: p.tree_levels(),
            min_seg: p.min_segment_log2 as usize,
            segments: p.max_segments(),
            dequant: p.dequant_latency,
            pad: p.pe_padding(),
            multiplier: p.has_multiplier,
            shift_add: p.has_shift_add,
        };
        let stages = l.levels + 1;
        Pe {
            clock: Default::default(),
            reset: Default::default(),
            in_valid: Default::default(),
            in_first: Default::default(),
            in_last: Default::default(),
            in_group_first: Default::default(),
            in_group_last: Default::default(),
            in_shift_add: Default::default(),
            in_segment_log2: Default::default(),
            in_act: vec_of(BLOCK),
            in_weight: vec_of(l.lanes),
            in_index: vec_of(l.lanes),
            in_scale: vec_of(l.segments),
            out_valid: Default::default(),
            out_result: vec_of(l.segments),
            i_valid: Default::default(),
            i_first: Default::default(),
            i_last: Default::default(),
            i_gfirst: Default::default(),
            i_glast: Default::default(),
            i_shift: Default::default(),
            i_seg: Default::default(),
            i_act: vec_of(BLOCK),
            i_weight: vec_of(l.lanes),
            i_index: vec_of(l.lanes),
            i_scale: vec_of(l.segments),
            node: vec_of(l.node_count()),
            tap: vec_of(l.tap_count()),
            anode: vec_of(l.node_count()),
            atap: vec_of(l.tap_count()),
            sb_valid: vec_of(stages),
            sb_first: vec_of(stages),
            sb_last: vec_of(stages),
            sb_gfirst: vec_of(stages),
            sb_glast: vec_of(stages),
            sb_seg: vec_of(stages),
            sb_scale: vec_of(stages * l.segments),
            seg: vec_of(l.segments),
            aseg: vec_of(l.segments),
            g_acc: vec_of(l.segments),
            g_val: vec_of(l.segments),
            g_aacc: vec_of(l.segments),
            g_asum: vec_of(l.segments),
            g_scale: vec_of(l.segments),
            g_valid: Default::default(),
            g_first: Default::default(),
            g_last: Default::default(),
            g_pending_first: Default::default(),
            d_prod: vec_of(l.dequant * l.segments),
            d_valid: vec_of(l.dequant),
            d_first: vec_of(l.dequant),
            d_last: vec_of(l.dequant),
            acc: vec_of(l.segments),
            o_valid: vec_of(l.pad + 1),
            o_result: vec_of((l.pad + 1) * l.segments),
            layout: Hidden(l),
        }
    }

    /// Lanes of the chain.
    pub fn lanes(&self) -> usize {
        self.layout.lanes
    }
    /// Output segments.
    pub fn segments(&self) -> usize {
        self.layout.segments
    }
    /// Cycles from a step's inputs to its result on the outputs.
    pub fn latency(&self) -> usize {
        PE_FIXED_STAGES + self.layout.levels + self.layout.dequant + self.layout.pad
    }

    /// The level whose nodes are the segments for a step's segment field.
    fn cut_level(&self, field: u64) -> usize {
        let f = field as usize;
        if f >= self.layout.min_seg && f < self.layout.levels {
            f
        } else {
            self.layout.levels
        }
    }

    /// Registers, from the last stage back to the first so each reads its predecessor's old value.
    fn clock_edge(&mut self) {
        let l = *self.layout;
        let (s, top) = (l.segments, l.levels);
        let reset = self.reset.val();
        // Output padding.
        for k in (1..=l.pad).rev() {
            self.o_valid[k].next = self.o_valid[k - 1].val();
            for j in 0..s {
                self.o_result[k * s + j].next = self.o_result[(k - 1) * s + j].val();
            }
        }
        // Output accumulator.
        let last_d = l.dequant - 1;
        let emit = self.d_valid[last_d].val() && self.d_last[last_d].val();
        if self.d_valid[last_d].val() {
            for j in 0..s {
                let base = if self.d_first[last_d].val() {
                    0
                } else {
                    get(&self.acc[j])
                };
                let sum = base.wrapping_add(get(&self.d_prod[last_d * s + j]));
                self.acc[j].next = bits(sum);
                if emit {
                    self.o_result[j].next = bits(sum);
                }
            }
        }
        self.o_valid[0].next = emit && !reset;
        // Dequantiser.
        for k in (1..l.dequant).rev() {
            self.d_valid[k].next = self.d_valid[k - 1].val() && !reset;
            self.d_first[k].next = self.d_first[k - 1].val();
            self.d_last[k].next = self.d_last[k - 1].val();
            for j in 0..s {
                self.d_prod[k * s + j].next = self.d_prod[(k - 1) * s + j].val();
            }
        }
        for j in 0..s {
            let word = get(&self.g_scale[j]);
            let zero = sext(word >> 16, 8) as u64;
            let corrected =
                get(&self.g_val[j]).wrapping_sub(zero.wrapping_mul(get(&self.g_asum[j])));
            let prod = sext(corrected & 0xffff_ffff, 32) * sext(word & 0xffff, 16);
            self.d_prod[j].next = bits(prod as u64);
        }
        self.d_valid[0].next = self.g_valid.val() && !reset;
        self.d_first[0].next = self.g_first.val();
        self.d_last[0].next = self.g_last.val();
        // Group accumulator.
        let mut g_valid = false;
        if self.sb_valid[top].val() {
            let first = self.sb_first[top].val() || self.g_pending_first.val();
            let close = self.sb_glast[top].val();
            for j in 0..s {
                let base = if self.sb_gfirst[top].val() {
                    0
                } else {
                    get(&self.g_acc[j])
                };
                let sum = base.wrapping_add(get(&self.seg[j]));
                self.g_acc[j].next = bits(sum);
                let abase = if self.sb_gfirst[top].val() {
                    0
                } else {
                    get(&self.g_aacc[j])
                };
                let asum = abase.wrapping_add(get(&self.aseg[j]));
                self.g_aacc[j].next = bits(asum);
                if close {
                    self.g_val[j].next = bits(sum);
                    self.g_asum[j].next = bits(asum);
                    self.g_scale[j].next = self.sb_scale[top * s + j].val();
                }
            }
            if close {
                g_valid = true;
                self.g_first.next = first;
                self.g_last.next = self.sb_last[top].val();
                self.g_pending_first.next = false;
            } else {
                self.g_pending_first.next = first;
            }
        }
        if reset {
            self.g_pending_first.next = false;
        }
        self.g_valid.next = g_valid && !reset;
        // Taps of the cut levels.
        for level in l.min_seg..top {
            for d in (1..=top - level).rev() {
                for i in 0..l.lanes >> level {
                    let (from, afrom) = if d == 1 {
                        (
                            self.node[l.node(level, i)].val(),
                            self.anode[l.node(level, i)].val(),
                        )
                    } else {
                        (
                            self.tap[l.tap(level, d - 1, i)].val(),
                            self.atap[l.tap(level, d - 1, i)].val(),
                        )
                    };
                    self.tap[l.tap(level, d, i)].next = from;
                    self.atap[l.tap(level, d, i)].next = afrom;
                }
            }
        }
        // Reduction tree and its side band.
        for level in (1..=top).rev() {
            for i in 0..l.lanes >> level {
                let a = get(&self.node[l.node(level - 1, 2 * i)]);
                let b = get(&self.node[l.node(level - 1, 2 * i + 1)]);
                self.node[l.node(level, i)].next = bits(a.wrapping_add(b));
                let a = get(&self.anode[l.node(level - 1, 2 * i)]);
                let b = get(&self.anode[l.node(level - 1, 2 * i + 1)]);
                self.anode[l.node(level, i)].next = bits(a.wrapping_add(b));
            }
            self.sb_valid[level].next = self.sb_valid[level - 1].val() && !reset;
            self.sb_first[level].next = self.sb_first[level - 1].val();
            self.sb_last[level].next = self.sb_last[level - 1].val();
            self.sb_gfirst[level].next = self.sb_gfirst[level - 1].val();
            self.sb_glast[level].next = self.sb_glast[level - 1].val();
            self.sb_seg[level].next = self.sb_seg[level - 1].val();
            for j in 0..s {
                self.sb_scale[level * s + j].next = self.sb_scale[(level - 1) * s + j].val();
            }
        }
        // Lane products.
        for j in 0..l.lanes {
            let index = get(&self.i_index[j]) as usize;
            let act = sext(get(&self.i_act[index]), 8);
            let weight = sext(get(&self.i_weight[j]), 8);
            let p = l.product(act, weight, self.i_shift.val());
            self.node[j].next = bits(p as u64);
            self.anode[j].next = bits(act as u64);
        }
        self.sb_valid[0].next = self.i_valid.val() && !reset;
        self.sb_first[0].next = self.i_first.val();
        self.sb_last[0].next = self.i_last.val();
        self.sb_gfirst[0].next = self.i_gfirst.val();
        self.sb_glast[0].next = self.i_glast.val();
        self.sb_seg[0].next = self.i_seg.val();
        for j in 0..s {
            self.sb_scale[j].next = self.i_scale[j].val();
        }
        // Input registers.
        self.i_valid.next = self.in_valid.val() && !reset;
        self.i_first.next = self.in_first.val();
        self.i_last.next = self.in_last.val();
        self.i_gfirst.next = self.in_group_first.val();
        self.i_glast.next = self.in_group_last.val();
        self.i_shift.next = self.in_shift_add.val();
        self.i_seg.next = self.in_segment_log2.val();
        for k in 0..BLOCK {
            self.i_act[k].next = self.in_act[k].val();
        }
        for j in 0..l.lanes {
            self.i_weight[j].next = self.in_weight[j].val();
            self.i_index[j].next = self.in_index[j].val();
        }
        for j in 0..s {
            self.i_scale[j].next = self.in_scale[j].val();
        }
    }

    /// The segment multiplexer and the outputs.
    fn combinational(&mut self) {
        let l = *self.layout;
        let top = l.levels;
        let level = self.cut_level(get(&self.sb_seg[top]));
        for j in 0..l.segments {
            let (v, a) = if j >= l.lanes >> level {
                (Bits::default(), Bits::default())
            } else if level == top {
                (
                    self.node[l.node(top, j)].val(),
                    self.anode[l.node(top, j)].val(),
                )
            } else {
                let t = l.tap(level, top - level, j);
                (self.tap[t].val(), self.atap[t].val())
            };
            self.seg[j].next = v;
            self.aseg[j].next = a;
        }
        self.out_valid.next = self.o_valid[l.pad].val();
        for j in 0..l.segments {
            self.out_result[j].next = self.o_result[l.pad * l.segments + j].val();
        }
    }

    fn verilog(&self) -> String {
        let l = *self.layout;
        let (s, top) = (l.segments, l.levels);
        let mut v = String::new();
        let w = &mut v;
        // Lane products.
        let _ = writeln!(w, "wire [7:0] act_block [0:{}];", BLOCK - 1);
        for k in 0..BLOCK {
            let _ = writeln!(w, "assign act_block[{k}] = i_act${k};");
        }
        for j in 0..l.lanes {
            let _ = writeln!(w, "wire [7:0] lane_act_{j} = act_block[i_index${j}];");
            let _ = writeln!(
                w,
                "wire [15:0] lane_ext_{j} = {{{{8{{lane_act_{j}[7]}}}}, lane_act_{j}}};"
            );
            if l.multiplier || !l.shift_add {
                let _ = writeln!(
                    w,
                    "wire signed [15:0] lane_mul_{j} = $signed(lane_act_{j}) * $signed(i_weight${j});"
                );
            }
            if l.shift_add {
                let _ = writeln!(
                    w,
                    "wire [15:0] lane_sa_{j} = (i_weight${j}[0] ? lane_ext_{j} : 16'd0) \
                     + (i_weight${j}[1] ? {{lane_ext_{j}[14:0], 1'b0}} : 16'd0) \
                     + (i_weight${j}[2] ? {{lane_ext_{j}[13:0], 2'b0}} : 16'd0) \
                     - (i_weight${j}[3] ? {{lane_ext_{j}[12:0], 3'b0}} : 16'd0);"
                );
            }
            let product = match (l.multiplier, l.shift_add) {
                (true, true) => format!("i_shift ? lane_sa_{j} : lane_mul_{j}"),
                (false, true) => format!("lane_sa_{j}"),
                _ => format!("lane_mul_{j}"),
            };
            let _ = writeln!(w, "wire [15:0] lane_prod_{j} = {product};");
        }
        // Group and output arithmetic.
        for j in 0..s {
            let _ = writeln!(
                w,
                "wire [31:0] group_sum_{j} = (sb_gfirst${top} ? 32'd0 : g_acc${j}) + seg${j};"
            );
            let _ = writeln!(
                w,
                "wire [31:0] group_asum_{j} = (sb_gfirst${top} ? 32'd0 : g_aacc${j}) + aseg${j};"
            );
            let _ = writeln!(
                w,
                "wire [31:0] zero_ext_{j} = {{{{24{{g_scale${j}[23]}}}}, g_scale${j}[23:16]}};"
            );
            let _ = writeln!(
                w,
                "wire [31:0] corrected_{j} = g_val${j} - zero_ext_{j} * g_asum${j};"
            );
            let _ = writeln!(
                w,
                "wire signed [47:0] dequant_{j} = $signed(corrected_{j}) * $signed(g_scale${j}[15:0]);"
            );
            let _ = writeln!(
                w,
                "wire [47:0] acc_next_{j} = (d_first${d} ? 48'd0 : acc${j}) + d_prod${p};",
                d = l.dequant - 1,
                p = (l.dequant - 1) * s + j
            );
        }
        let _ = writeln!(
            w,
            "wire group_first_item = sb_first${top} | g_pending_first;"
        );
        // Segment multiplexer and outputs.
        let _ = writeln!(w, "always @(*) begin");
        let _ = writeln!(w, "    case (sb_seg${top})");
        let mut arms: Vec<(Option<usize>, usize)> =
            (l.min_seg..top).map(|lv| (Some(lv), lv)).collect();
        arms.push((None, top));
        for (label, level) in arms {
            match label {
                Some(lv) => {
                    let _ = writeln!(w, "        3'd{lv}: begin");
                }
                None => {
                    let _ = writeln!(w, "        default: begin");
                }
            }
            for j in 0..s {
                for (out, node, tap) in [("seg", "node", "tap"), ("aseg", "anode", "atap")] {
                    let src = if j >= l.lanes >> level {
                        "32'd0".to_string()
                    } else if level == top {
                        format!("{node}${}", l.node(top, j))
                    } else {
                        format!("{tap}${}", l.tap(level, top - level, j))
                    };
                    let _ = writeln!(w, "            {out}${j} = {src};");
                }
            }
            let _ = writeln!(w, "        end");
        }
        let _ = writeln!(w, "    endcase");
        let _ = writeln!(w, "    out_valid = o_valid${};", l.pad);
        for j in 0..s {
            let _ = writeln!(w, "    out_result${j} = o_result${};", l.pad * s + j);
        }
        let _ = writeln!(w, "end");
        // Registers.
        let _ = writeln!(w, "always @(posedge clock) begin");
        for k in 1..=l.pad {
            let _ = writeln!(w, "    o_valid${k} <= o_valid${};", k - 1);
            for j in 0..s {
                let _ = writeln!(
                    w,
                    "    o_result${} <= o_result${};",
                    k * s + j,
                    (k - 1) * s + j
                );
            }
        }
        let last_d = l.dequant - 1;
        let _ = writeln!(w, "    if (d_valid${last_d}) begin");
        for j in 0..s {
            let _ = writeln!(w, "        acc${j} <= acc_next_{j};");
        }
        let _ = writeln!(w, "        if (d_last${last_d}) begin");
        for j in 0..s {
            let _ = writeln!(w, "            o_result${j} <= acc_next_{j};");
        }
        let _ = writeln!(w, "        end");
        let _ = writeln!(w, "    end");
        let _ = writeln!(
            w,
            "    o_valid$0 <= d_valid${last_d} & d_last${last_d} & ~reset;"
        );
        for k in 1..l.dequant {
            let _ = writeln!(w, "    d_valid${k} <= d_valid${} & ~reset;", k - 1);
            let _ = writeln!(w, "    d_first${k} <= d_first${};", k - 1);
            let _ = writeln!(w, "    d_last${k} <= d_last${};", k - 1);
            for j in 0..s {
                let _ = writeln!(w, "    d_prod${} <= d_prod${};", k * s + j, (k - 1) * s + j);
            }
        }
        for j in 0..s {
            let _ = writeln!(w, "    d_prod${j} <= dequant_{j};");
        }
        let _ = writeln!(w, "    d_valid$0 <= g_valid & ~reset;");
        let _ = writeln!(w, "    d_first$0 <= g_first;");
        let _ = writeln!(w, "    d_last$0 <= g_last;");
        let _ = writeln!(
            w,
            "    g_valid <= sb_valid${top} & sb_glast${top} & ~reset;"
        );
        let _ = writeln!(w, "    if (sb_valid${top}) begin");
        for j in 0..s {
            let _ = writeln!(w, "        g_acc${j} <= group_sum_{j};");
            let _ = writeln!(w, "        g_aacc${j} <= group_asum_{j};");
        }
        let _ = writeln!(w, "        if (sb_glast${top}) begin");
        for j in 0..s {
            let _ = writeln!(w, "            g_val${j} <= group_sum_{j};");
            let _ = writeln!(w, "            g_asum${j} <= group_asum_{j};");
            let _ = writeln!(w, "            g_scale${j} <= sb_scale${};", top * s + j);
        }
        let _ = writeln!(w, "            g_first <= group_first_item;");
        let _ = writeln!(w, "            g_last <= sb_last${top};");
        let _ = writeln!(w, "            g_pending_first <= 1'b0;");
        let _ = writeln!(w, "        end else begin");
        let _ = writeln!(w, "            g_pending_first <= group_first_item;");
        let _ = writeln!(w, "        end");
        let _ = writeln!(w, "    end");
        let _ = writeln!(w, "    if (reset) g_pending_first <= 1'b0;");
        for level in l.min_seg..top {
            for d in 1..=top - level {
                for i in 0..l.lanes >> level {
                    for (node, tap) in [("node", "tap"), ("anode", "atap")] {
                        let from = if d == 1 {
                            format!("{node}${}", l.node(level, i))
                        } else {
                            format!("{tap}${}", l.tap(level, d - 1, i))
                        };
                        let _ = writeln!(w, "    {tap}${} <= {from};", l.tap(level, d, i));
                    }
                }
            }
        }
        for level in 1..=top {
            for i in 0..l.lanes >> level {
                for node in ["node", "anode"] {
                    let _ = writeln!(
                        w,
                        "    {node}${} <= {node}${} + {node}${};",
                        l.node(level, i),
                        l.node(level - 1, 2 * i),
                        l.node(level - 1, 2 * i + 1)
                    );
                }
            }
            let p = level - 1;
            let _ = writeln!(w, "    sb_valid${level} <= sb_valid${p} & ~reset;");
            for f in ["first", "last", "gfirst", "glast", "seg"] {
                let _ = writeln!(w, "    sb_{f}${level} <= sb_{f}${p};");
            }
            for j in 0..s {
                let _ = writeln!(
                    w,
                    "    sb_scale${} <= sb_scale${};",
                    level * s + j,
                    p * s + j
                );
            }
        }
        for j in 0..l.lanes {
            let _ = writeln!(
                w,
                "    node${j} <= {{{{16{{lane_prod_{j}[15]}}}}, lane_prod_{j}}};"
            );
            let _ = writeln!(
                w,
                "    anode${j} <= {{{{16{{lane_ext_{j}[15]}}}}, lane_ext_{j}}};"
            );
        }
        let _ = writeln!(w, "    sb_valid$0 <= i_valid & ~reset;");
        for (f, i) in [
            ("first", "first"),
            ("last", "last"),
            ("gfirst", "gfirst"),
            ("glast", "glast"),
            ("seg", "seg"),
        ] {
            let _ = writeln!(w, "    sb_{f}$0 <= i_{i};");
        }
        for j in 0..s {
            let _ = writeln!(w, "    sb_scale${j} <= i_scale${j};");
        }
        let _ = writeln!(w, "    i_valid <= in_valid & ~reset;");
        for (i, p) in [
            ("first", "first"),
            ("last", "last"),
            ("gfirst", "group_first"),
            ("glast", "group_last"),
            ("shift", "shift_add"),
            ("seg", "segment_log2"),
        ] {
            let _ = writeln!(w, "    i_{i} <= in_{p};");
        }
        for k in 0..BLOCK {
            let _ = writeln!(w, "    i_act${k} <= in_act${k};");
        }
        for j in 0..l.lanes {
            let _ = writeln!(w, "    i_weight${j} <= in_weight${j};");
            let _ = writeln!(w, "    i_index${j} <= in_index${j};");
        }
        for j in 0..s {
            let _ = writeln!(w, "    i_scale${j} <= in_scale${j};");
        }
        let _ = writeln!(w, "end");
        v
    }
}

impl Logic for Pe {
    fn update(&mut self) {
        if self.clock.pos_edge() {
            self.clock_edge();
        }
        self.combinational();
    }

    fn connect(&mut self) {
        self.out_valid.connect();
        for x in &mut self.out_result {
            x.connect();
        }
        for x in [
            &mut self.i_valid,
            &mut self.i_first,
            &mut self.i_last,
            &mut self.i_gfirst,
            &mut self.i_glast,
            &mut self.i_shift,
            &mut self.g_valid,
            &mut self.g_first,
            &mut self.g_last,
            &mut self.g_pending_first,
        ] {
            x.connect();
        }
        self.i_seg.connect();
        for v in [
            &mut self.sb_valid,
            &mut self.sb_first,
            &mut self.sb_last,
            &mut self.sb_gfirst,
            &mut self.sb_glast,
            &mut self.d_valid,
            &mut self.d_first,
            &mut self.d_last,
            &mut self.o_valid,
        ] {
            v.iter_mut().for_each(|x| x.connect());
        }
        self.sb_seg.iter_mut().for_each(|x| x.connect());
        for v in [&mut self.i_act, &mut self.i_weight] {
            v.iter_mut().for_each(|x| x.connect());
        }
        self.i_index.iter_mut().for_each(|x| x.connect());
        for v in [&mut self.i_scale, &mut self.sb_scale, &mut self.g_scale] {
            v.iter_mut().for_each(|x| x.connect());
        }
        for v in [
            &mut self.node,
            &mut self.tap,
            &mut self.anode,
            &mut self.atap,
            &mut self.seg,
            &mut self.aseg,
            &mut self.g_acc,
            &mut self.g_val,
            &mut self.g_aacc,
            &mut self.g_asum,
        ] {
            v.iter_mut().for_each(|x| x.connect());
        }
        for v in [&mut self.d_prod, &mut self.acc, &mut self.o_result] {
            v.iter_mut().for_each(|x| x.connect());
        }
    }

    fn hdl(&self) -> Verilog {
        Verilog::Custom(self.verilog())
    }
}
