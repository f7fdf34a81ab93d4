//! The processing element: a sparse DSP chain with mixed-precision lanes, reduction nodes that
//! cut the chain into segments, and per-segment group dequantisation (MixPE).
//!
//! One *step* feeds a PE one 16-wide block of int8 activations and `lanes` weights with their
//! 4-bit positions in the block. Each lane's sparse multiplexer picks the activation at its
//! position; the lane multiplies it by its weight in the DSP multiplier (int8 weights) or in the
//! shift-and-add datapath (4-bit-or-narrower weights) and adds the partial sum arriving from the
//! lane before it, registered, as a DSP48E2 adds `PCIN` and passes `PCOUT` up its column. Partial
//! sums therefore move one lane per cycle, and lane `j`'s operands (selected activation, weight,
//! datapath and segment-start bits) are delayed `j` cycles so that every lane adds the product of
//! the same step. With N:16 sparsity and `N < lanes` the step's segment field makes every `N`-th
//! lane a reduction node: the chain's sum up to the lane before leaves there as a segment output
//! and the lane starts from zero. A segment that ends at lane `e` is ready `lanes − 1 − e` cycles
//! before the last lane's, so it is delayed that long: all of a step's segment sums leave together
//! and the PE's latency does not depend on N. Beside the products a second cascade of the same
//! shape adds the selected activations, so each segment also has the sum of the activations its
//! lanes picked, aligned with its product sum.
//!
//! Each segment accumulates its partial sums over a quantisation group; once per group a
//! pipelined dequantiser of `matrix.dequant_cycles_per_group` stages removes the zero point and
//! applies the scale, `(Σ a·w − zp · Σ a) × scale`, and the scaled sums accumulate into the
//! segment's output. Symmetric weights have `zp = 0`; asymmetric `q` with zero point `z` are
//! stored as `q − 8` with `zp = z − 8`, which keeps 4-bit weights signed.
//!
//! Arithmetic is integer and exact: products 16 bits, partial, group and activation sums 32 bits
//! (wrapping), zero points 8-bit and scales 16-bit signed fixed point, results 48 bits (wrapping).
//! [`crate::golden`] computes the same.
//!
//! A *packing* PE (some precision at `macs_per_dsp = 2`, AMD WP486) gives each lane a second
//! weight, column B's at the same position as column A's: the lane's DSP multiplies the selected
//! activation by the packed operand `w_B · 2^19 + w_A + 128` (27 bits signed, the DSP48E2's `A`/`D`
//! port; the activation on its 18-bit `B` port), so one multiplier and one 48-bit cascade carry
//! both columns: `P = S_B · 2^19 + S_A + 128 · Σ a`. After the last lane the activation-sum
//! cascade removes the offset and the low 19 bits are decoded in the window `L ..= L + 2^19 − 1`,
//! `L = 16 · (−128) · 127` ([`unpack_columns`]), exact because 16 int8 × int8 products span
//! 522241 < 2^19 values; segment 0 is column A, segment 1 column B, and both share the
//! activation sum for their zero points. Only whole-chain steps pack (the controller packs dense
//! instructions): a shorter segment's first delay register takes the low 32 bits less the offset.
//! Shift-and-add lanes form the packed product from two shift-add products.
//!
//! Latency from a step's inputs to its result: input registers 1, product (the DSP's `MREG`) 1,
//! the cascade `lanes` (one `PREG` per lane), group accumulator 1, dequantiser
//! `dequant_cycles_per_group`, output accumulator 1, then the padding that makes the engine meet
//! `matrix.pipeline_depth`.
//!
//! The chain is written so that Yosys's `synth_xilinx` can map a lane onto one DSP48E2: the last
//! skew register feeds the multiplier (`AREG`/`BREG`), the product is registered (`MREG`) and the
//! partial sum is registered (`PREG`); a lane that can never start a segment adds its
//! predecessor's sum unconditionally, the `PCIN` cascade. A lane that can start a segment selects
//! zero or the sum before it, and a mixed datapath selects the product, which keeps those adders
//! in the fabric.
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

/// Where column B's weight sits in a packed DSP operand, `w_B · 2^19 + w_A + 128`: a chain of up to
/// 16 int8 × int8 products sums to [`PACKED_LOW_MIN`] ..= 16 · 128 · 128 = 262144, a range of
/// 522241 < 2^19 values, so the low field holds column A's sum exactly.
pub const PACKED_SHIFT: u32 = 19;
/// The least sum of 16 int8 × int8 products, `16 · (−128) · 127`: the bottom of the low field's
/// window (`lo = ((P − L) mod 2^19) + L`).
pub const PACKED_LOW_MIN: i64 = -(BLOCK as i64) * 128 * 127;
/// Column A's weight is offset by 128 in the packed operand so that it lies in 0..=255: then
/// `w_B · 2^19 + w_A + 128` fits the DSP48E2's 27-bit signed port for every pair of int8 weights
/// (`w_B · 2^19 + w_A` does not: −128 · 2^19 − 128 < −2^26). The offset adds `128 · Σ a`, which
/// the activation-sum cascade removes.
pub const PACKED_A_OFFSET: i64 = 128;
/// Bits of a packed product: 8-bit activation × 27-bit packed weight.
pub const PACKED_PRODUCT_BITS: usize = 35;

/// The packed DSP operand of a lane: `w_B · 2^19 + w_A + 128` (27-bit signed).
pub fn packed_weight(w_a: i64, w_b: i64) -> i64 {
    (w_b << PACKED_SHIFT) + w_a + PACKED_A_OFFSET
}

/// The two column sums in a packed chain's sum `packed` (its activations summing to `act_sum`):
/// `c = packed − 128 · act_sum = S_B · 2^19 + S_A`, `S_A = ((c − L) mod 2^19) + L`,
/// `S_B = (c − S_A) / 2^19` with `L` = [`PACKED_LOW_MIN`]. Exact whenever `S_A` lies in
/// `L ..= L + 2^19 − 1`, which every chain of at most 16 int8 × int8 products does.
pub fn unpack_columns(packed: i64, act_sum: i64) -> (i64, i64) {
    let c = packed - PACKED_A_OFFSET * act_sum;
    let lo = (c - PACKED_LOW_MIN).rem_euclid(1 << PACKED_SHIFT) + PACKED_LOW_MIN;
    (lo, (c - lo) >> PACKED_SHIFT)
}

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
    /// Use the shift-and-add datapath (weights within 4-bit range): one signal on a PE with both
    /// datapaths, none otherwise (a single datapath needs no choice).
    pub in_shift_add: Vec<Signal<In, Bit>>,
    /// `log2` of the segment length: `log2(min(N, lanes))`.
    pub in_segment_log2: Signal<In, Bits<SEGMENT_BITS>>,
    /// The 16 activations of the step's block (int8).
    pub in_act: Vec<Signal<In, Bits<8>>>,
    /// One weight per lane (int8 two's complement; narrower weights sign-extended): column A of a
    /// packed step.
    pub in_weight: Vec<Signal<In, Bits<8>>>,
    /// Column B's weight per lane when the PE packs two columns per DSP (empty otherwise): the
    /// weight at the same position as column A's, zero on steps that do not pack.
    pub in_weight_b: Vec<Signal<In, Bits<8>>>,
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
    i_shift: Vec<Signal<Local, Bit>>,
    i_seg: Signal<Local, Bits<SEGMENT_BITS>>,
    i_act: Vec<Signal<Local, Bits<8>>>,
    i_weight: Vec<Signal<Local, Bits<8>>>,
    i_weight_b: Vec<Signal<Local, Bits<8>>>,
    i_index: Vec<Signal<Local, Bits<4>>>,
    i_scale: Vec<Signal<Local, Bits<SCALE_BITS>>>,
    /// Skew registers: each lane's selected activation, delayed, flattened (see [`Layout::skew`]).
    k_act: Vec<Signal<Local, Bits<8>>>,
    /// Each lane's weight, delayed, shaped as `k_act`.
    k_weight: Vec<Signal<Local, Bits<8>>>,
    /// Each lane's column-B weight, delayed, shaped as `k_act` (packing PEs only).
    k_weight_b: Vec<Signal<Local, Bits<8>>>,
    /// Each lane's datapath bit, delayed, shaped as `k_act` (mixed datapaths only).
    k_shift: Vec<Signal<Local, Bit>>,
    /// Each cut lane's segment-start bit, delayed (see [`Layout::skew_start`]).
    k_start: Vec<Signal<Local, Bit>>,
    /// Lane products (the DSP's `MREG`; PEs that do not pack).
    m: Vec<Signal<Local, Bits<16>>>,
    /// Packed lane products `a × (w_B · 2^19 + w_A + 128)` (the DSP's `MREG`; packing PEs).
    pm: Vec<Signal<Local, Bits<PACKED_PRODUCT_BITS>>>,
    /// Each lane's selected activation, registered beside its product.
    ma: Vec<Signal<Local, Bits<8>>>,
    /// Each cut lane's segment-start bit, registered beside its product.
    ms: Vec<Signal<Local, Bit>>,
    /// The cascade's partial sums (the DSP's `PREG`), one per lane (PEs that do not pack).
    p: Vec<Signal<Local, Bits<32>>>,
    /// The packed cascade's partial sums (the DSP's 48-bit `PREG`), one per lane (packing PEs).
    pp: Vec<Signal<Local, Bits<48>>>,
    /// The activation-sum cascade, shaped as `p`.
    q: Vec<Signal<Local, Bits<32>>>,
    /// Delayed copies of the partial sums at the lanes that can end a segment, flattened (in a
    /// packing PE the low 32 bits less the activation offset, `Σ a·w_A`).
    tap: Vec<Signal<Local, Bits<32>>>,
    /// Delayed copies of `q`, shaped as `tap`.
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
    /// Whether each lane packs two columns (see [`PACKED_SHIFT`]).
    pack: bool,
    /// Extra cycles of skew on lane `lane` (0 in the generated hardware; only
    /// [`Pe::with_skew_error`] changes it).
    skew_error: Option<(usize, usize)>,
}

impl Layout {
    /// Cycles lane `j`'s operands are delayed before its product.
    fn delay(&self, j: usize) -> usize {
        match self.skew_error {
            Some((lane, extra)) if lane == j => j + extra,
            _ => j,
        }
    }
    /// Index of lane `j`'s operands delayed `d + 1` cycles (`d < delay(j)`) in the `k_` vectors.
    fn skew(&self, j: usize, d: usize) -> usize {
        (0..j).map(|i| self.delay(i)).sum::<usize>() + d
    }
    fn skew_count(&self) -> usize {
        self.skew(self.lanes, 0)
    }
    /// Whether lane `j` can start a segment (a reduction node sits below it); lane 0 always does.
    fn cut(&self, j: usize) -> bool {
        j > 0 && j % (1 << self.min_seg) == 0
    }
    /// The cut lanes in order.
    fn cuts(&self) -> Vec<usize> {
        (1..self.lanes).filter(|&j| self.cut(j)).collect()
    }
    /// Index of cut lane `j`'s segment-start bit delayed `d + 1` cycles in `k_start`.
    fn skew_start(&self, j: usize, d: usize) -> usize {
        self.cuts()
            .iter()
            .take_while(|&&c| c < j)
            .map(|&c| self.delay(c))
            .sum::<usize>()
            + d
    }
    fn skew_start_count(&self) -> usize {
        self.cuts().iter().map(|&c| self.delay(c)).sum()
    }
    /// Index of cut lane `j` in `ms`.
    fn cut_index(&self, j: usize) -> usize {
        self.cuts()
            .iter()
            .position(|&c| c == j)
            .expect("a cut lane")
    }
    /// The lanes below the last that can end a segment.
    fn ends(&self) -> Vec<usize> {
        (0..self.lanes - 1).filter(|&e| self.cut(e + 1)).collect()
    }
    /// Cycles a segment ending at lane `e` waits for the last lane's.
    fn wait(&self, e: usize) -> usize {
        self.lanes - 1 - e
    }
    /// Index of end lane `e`'s sum delayed `d` (1..=wait(e)) cycles in `tap`.
    fn tap(&self, e: usize, d: usize) -> usize {
        self.ends()
            .iter()
            .take_while(|&&x| x < e)
            .map(|&x| self.wait(x))
            .sum::<usize>()
            + d
            - 1
    }
    fn tap_count(&self) -> usize {
        self.ends().iter().map(|&e| self.wait(e)).sum()
    }
    /// `log2` of the segment length for a step's segment field.
    fn seg_log2(&self, field: u64) -> usize {
        let f = field as usize;
        if f >= self.min_seg && f < self.levels {
            f
        } else {
            self.levels
        }
    }
    /// Trailing zeros of lane `j > 0`: the longest segment that starts at it is `2^tz`.
    fn tz(j: usize) -> usize {
        j.trailing_zeros() as usize
    }
    /// Whether cut lane `j` starts a segment for a step's segment field.
    fn starts(&self, j: usize, field: u64) -> bool {
        let f = field as usize;
        f >= self.min_seg && f <= Self::tz(j)
    }
    /// The lane whose partial sum is segment `i`'s output for a step with segments of `2^lv`
    /// lanes, and how long it waits; `None` when the step has fewer segments.
    fn source(&self, lv: usize, i: usize) -> Option<(usize, usize)> {
        if i >= self.lanes >> lv {
            return None;
        }
        let e = ((i + 1) << lv) - 1;
        Some((e, self.wait(e)))
    }
    /// The product of a lane, in the shift-and-add datapath when the step asks for it.
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
    /// A lane's product as its `MREG` holds it: `a · w_A`, or in a packing PE the packed product
    /// `a · (w_B · 2^19 + w_A + 128)`, formed in the shift-and-add datapath from two shift-add
    /// products.
    fn lane_product(&self, act: i64, weight: i64, weight_b: i64, shift: bool) -> i64 {
        if self.pack {
            self.product(act, weight, shift)
                + (self.product(act, weight_b, shift) << PACKED_SHIFT)
                + act * PACKED_A_OFFSET
        } else {
            self.product(act, weight, shift)
        }
    }
    /// Whether a lane chooses between the two datapaths per step.
    fn mixed(&self) -> bool {
        self.multiplier && self.shift_add
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
        Pe::build(p, None)
    }

    /// A PE whose lane `lane` has its operands delayed `extra` cycles more than the cascade
    /// needs: a broken chain, for checking that the testbenches catch one. Its latency is that of
    /// a correct PE.
    pub fn with_skew_error(p: &EngineParams, lane: usize, extra: usize) -> Pe {
        Pe::build(p, Some((lane, extra)))
    }

    fn build(p: &EngineParams, skew_error: Option<(usize, usize)>) -> Pe {
        let l = Layout {
            lanes: p.lanes,
            levels: p.lanes_log2(),
            min_seg: p.min_segment_log2 as usize,
            segments: p.max_segments(),
            dequant: p.dequant_latency,
            pad: p.pe_padding(),
            multiplier: p.has_multiplier,
            shift_add: p.has_shift_add,
            pack: p.pack == 2,
            skew_error,
        };
        let stages = l.lanes + 1;
        let cuts = l.cuts().len();
        let (plain, packed) = if l.pack { (0, l.lanes) } else { (l.lanes, 0) };
        Pe {
            clock: Default::default(),
            reset: Default::default(),
            in_valid: Default::default(),
            in_first: Default::default(),
            in_last: Default::default(),
            in_group_first: Default::default(),
            in_group_last: Default::default(),
            in_shift_add: vec_of(l.mixed() as usize),
            in_segment_log2: Default::default(),
            in_act: vec_of(BLOCK),
            in_weight: vec_of(l.lanes),
            in_weight_b: vec_of(packed),
            in_index: vec_of(l.lanes),
            in_scale: vec_of(l.segments),
            out_valid: Default::default(),
            out_result: vec_of(l.segments),
            i_valid: Default::default(),
            i_first: Default::default(),
            i_last: Default::default(),
            i_gfirst: Default::default(),
            i_glast: Default::default(),
            i_shift: vec_of(l.mixed() as usize),
            i_seg: Default::default(),
            i_act: vec_of(BLOCK),
            i_weight: vec_of(l.lanes),
            i_weight_b: vec_of(packed),
            i_index: vec_of(l.lanes),
            i_scale: vec_of(l.segments),
            k_act: vec_of(l.skew_count()),
            k_weight: vec_of(l.skew_count()),
            k_weight_b: vec_of(if l.pack { l.skew_count() } else { 0 }),
            k_shift: vec_of(if l.mixed() { l.skew_count() } else { 0 }),
            k_start: vec_of(l.skew_start_count()),
            m: vec_of(plain),
            pm: vec_of(packed),
            ma: vec_of(l.lanes),
            ms: vec_of(cuts),
            p: vec_of(plain),
            pp: vec_of(packed),
            q: vec_of(l.lanes),
            tap: vec_of(l.tap_count()),
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
    /// Whether the PE has both datapaths, so that a step chooses one (`in_shift_add`).
    pub fn mixed(&self) -> bool {
        self.layout.mixed()
    }
    /// Columns a lane computes at once on a packed step: 2 when the PE packs, else 1.
    pub fn pack(&self) -> usize {
        1 + self.layout.pack as usize
    }
    /// Cycles from a step's inputs to its result on the outputs.
    pub fn latency(&self) -> usize {
        PE_FIXED_STAGES + self.layout.lanes + self.layout.dequant + self.layout.pad
    }

    /// Lane `j`'s partial sum, sign-extended to 64 bits in a packing PE.
    fn partial(&self, j: usize) -> u64 {
        if self.layout.pack {
            sext(get(&self.pp[j]), 48) as u64
        } else {
            get(&self.p[j])
        }
    }

    /// The 32-bit sum of a segment ending at lane `e` as its first delay register takes it: the
    /// partial sum, less the activation offset in a packing PE (whose shorter segments never
    /// pack, so the low 32 bits are column A's sum).
    fn end_sum(&self, e: usize) -> Bits<32> {
        if self.layout.pack {
            let offset = get(&self.q[e]).wrapping_mul(PACKED_A_OFFSET as u64);
            bits(get(&self.pp[e]).wrapping_sub(offset))
        } else {
            self.p[e].val()
        }
    }

    /// Registers, from the last stage back to the first so each reads its predecessor's old value.
    fn clock_edge(&mut self) {
        let l = *self.layout;
        let (s, top) = (l.segments, l.lanes);
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
        // Delays of the segments that end early.
        for e in l.ends() {
            for d in (1..=l.wait(e)).rev() {
                let (from, afrom) = if d == 1 {
                    (self.end_sum(e), self.q[e].val())
                } else {
                    (
                        self.tap[l.tap(e, d - 1)].val(),
                        self.atap[l.tap(e, d - 1)].val(),
                    )
                };
                self.tap[l.tap(e, d)].next = from;
                self.atap[l.tap(e, d)].next = afrom;
            }
        }
        // The cascade: each lane adds its product to the sum from the lane before, unless a
        // reduction node cut the chain below it.
        for j in (0..l.lanes).rev() {
            let start = j == 0 || (l.cut(j) && self.ms[l.cut_index(j)].val());
            let (base, abase) = if start {
                (0, 0)
            } else {
                (self.partial(j - 1), get(&self.q[j - 1]))
            };
            let act = sext(get(&self.ma[j]), 8) as u64;
            if l.pack {
                let prod = sext(get(&self.pm[j]), PACKED_PRODUCT_BITS as u32) as u64;
                self.pp[j].next = bits(base.wrapping_add(prod));
            } else {
                let prod = sext(get(&self.m[j]), 16) as u64;
                self.p[j].next = bits(base.wrapping_add(prod));
            }
            self.q[j].next = bits(abase.wrapping_add(act));
        }
        // Side band beside the cascade.
        for k in (1..=top).rev() {
            self.sb_valid[k].next = self.sb_valid[k - 1].val() && !reset;
            self.sb_first[k].next = self.sb_first[k - 1].val();
            self.sb_last[k].next = self.sb_last[k - 1].val();
            self.sb_gfirst[k].next = self.sb_gfirst[k - 1].val();
            self.sb_glast[k].next = self.sb_glast[k - 1].val();
            self.sb_seg[k].next = self.sb_seg[k - 1].val();
            for j in 0..s {
                self.sb_scale[k * s + j].next = self.sb_scale[(k - 1) * s + j].val();
            }
        }
        // Lane products, each from its lane's skewed operands.
        for j in 0..l.lanes {
            let delay = l.delay(j);
            let (act, weight, weight_b, shift) = if delay == 0 {
                let index = get(&self.i_index[j]) as usize;
                let weight_b = if l.pack { get(&self.i_weight_b[j]) } else { 0 };
                (
                    get(&self.i_act[index]),
                    get(&self.i_weight[j]),
                    weight_b,
                    self.i_shift.first().is_some_and(|x| x.val()),
                )
            } else {
                let k = l.skew(j, delay - 1);
                let shift = l.mixed() && self.k_shift[k].val();
                let weight_b = if l.pack { get(&self.k_weight_b[k]) } else { 0 };
                (get(&self.k_act[k]), get(&self.k_weight[k]), weight_b, shift)
            };
            let p = l.lane_product(sext(act, 8), sext(weight, 8), sext(weight_b, 8), shift);
            if l.pack {
                self.pm[j].next = bits(p as u64);
            } else {
                self.m[j].next = bits(p as u64);
            }
            self.ma[j].next = bits(act);
            if l.cut(j) {
                let start = if delay == 0 {
                    l.starts(j, get(&self.i_seg))
                } else {
                    self.k_start[l.skew_start(j, delay - 1)].val()
                };
                self.ms[l.cut_index(j)].next = start;
            }
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
        // Skew registers.
        for j in 0..l.lanes {
            for d in (1..l.delay(j)).rev() {
                let (to, from) = (l.skew(j, d), l.skew(j, d - 1));
                self.k_act[to].next = self.k_act[from].val();
                self.k_weight[to].next = self.k_weight[from].val();
                if l.pack {
                    self.k_weight_b[to].next = self.k_weight_b[from].val();
                }
                if l.mixed() {
                    self.k_shift[to].next = self.k_shift[from].val();
                }
                if l.cut(j) {
                    let (to, from) = (l.skew_start(j, d), l.skew_start(j, d - 1));
                    self.k_start[to].next = self.k_start[from].val();
                }
            }
            if l.delay(j) > 0 {
                let k = l.skew(j, 0);
                let index = get(&self.i_index[j]) as usize;
                self.k_act[k].next = self.i_act[index].val();
                self.k_weight[k].next = self.i_weight[j].val();
                if l.pack {
                    self.k_weight_b[k].next = self.i_weight_b[j].val();
                }
                if l.mixed() {
                    self.k_shift[k].next = self.i_shift[0].val();
                }
                if l.cut(j) {
                    self.k_start[l.skew_start(j, 0)].next = l.starts(j, get(&self.i_seg));
                }
            }
        }
        // Input registers.
        self.i_valid.next = self.in_valid.val() && !reset;
        self.i_first.next = self.in_first.val();
        self.i_last.next = self.in_last.val();
        self.i_gfirst.next = self.in_group_first.val();
        self.i_glast.next = self.in_group_last.val();
        for (to, from) in self.i_shift.iter_mut().zip(&self.in_shift_add) {
            to.next = from.val();
        }
        self.i_seg.next = self.in_segment_log2.val();
        for k in 0..BLOCK {
            self.i_act[k].next = self.in_act[k].val();
        }
        for j in 0..l.lanes {
            self.i_weight[j].next = self.in_weight[j].val();
            self.i_index[j].next = self.in_index[j].val();
            if l.pack {
                self.i_weight_b[j].next = self.in_weight_b[j].val();
            }
        }
        for j in 0..s {
            self.i_scale[j].next = self.in_scale[j].val();
        }
    }

    /// The segment multiplexer and the outputs.
    fn combinational(&mut self) {
        let l = *self.layout;
        let top = l.lanes;
        let lv = l.seg_log2(get(&self.sb_seg[top]));
        // A packing PE splits the last lane's sum into two columns: on a step over the whole
        // chain both are outputs, on a shorter one column B is zero and column A is the last
        // segment's sum.
        let split = l.pack.then(|| {
            let q = self.q[top - 1].val();
            let (lo, hi) =
                unpack_columns(sext(get(&self.pp[top - 1]), 48), sext(bits_value(q), 32));
            (bits(lo as u64), bits(hi as u64), q)
        });
        let whole = lv == l.levels;
        for i in 0..l.segments {
            let (v, a) = match (split, l.source(lv, i)) {
                (Some((lo, _, q)), _) if whole && i == 0 => (lo, q),
                (Some((_, hi, q)), _) if whole && i == 1 => (hi, q),
                (_, None) => (Bits::default(), Bits::default()),
                (Some((lo, _, q)), Some((_, 0))) => (lo, q),
                (None, Some((e, 0))) => (self.p[e].val(), self.q[e].val()),
                (_, Some((e, w))) => (self.tap[l.tap(e, w)].val(), self.atap[l.tap(e, w)].val()),
            };
            self.seg[i].next = v;
            self.aseg[i].next = a;
        }
        self.out_valid.next = self.o_valid[l.pad].val();
        for j in 0..l.segments {
            self.out_result[j].next = self.o_result[l.pad * l.segments + j].val();
        }
    }

    /// The operands lane `j` multiplies, as Verilog expressions: its activation, weight and
    /// datapath bit.
    fn lane_operands(&self, j: usize) -> (String, String, String) {
        let l = *self.layout;
        let delay = l.delay(j);
        if delay == 0 {
            (
                format!("act_block[i_index${j}]"),
                format!("i_weight${j}"),
                "i_shift$0".into(),
            )
        } else {
            let k = l.skew(j, delay - 1);
            let shift = format!("k_shift${k}");
            (format!("k_act${k}"), format!("k_weight${k}"), shift)
        }
    }

    /// Lane `j`'s column-B weight as a Verilog expression (packing PEs).
    fn lane_weight_b(&self, j: usize) -> String {
        match self.layout.delay(j) {
            0 => format!("i_weight_b${j}"),
            d => format!("k_weight_b${}", self.layout.skew(j, d - 1)),
        }
    }

    /// A packing PE's lane products and the split of the whole chain's sum into two columns.
    fn packed_products(&self, w: &mut String) {
        let l = *self.layout;
        let (sh, pb) = (PACKED_SHIFT, PACKED_PRODUCT_BITS);
        for j in 0..l.lanes {
            let (act, weight, shift) = self.lane_operands(j);
            let _ = writeln!(w, "wire [7:0] lane_act_{j} = {act};");
            let _ = writeln!(w, "wire [7:0] lane_w_{j} = {weight};");
            let _ = writeln!(w, "wire [7:0] lane_wb_{j} = {};", self.lane_weight_b(j));
            if l.multiplier || !l.shift_add {
                // w_B · 2^19 + (w_A + 128): w_A + 128 is w_A with its sign bit flipped.
                let _ = writeln!(
                    w,
                    "wire [26:0] lane_pw_{j} = {{lane_wb_{j}, {}'d0, lane_w_{j} ^ 8'h80}};",
                    sh - 8
                );
                let _ = writeln!(
                    w,
                    "wire signed [{}:0] lane_mul_{j} = $signed(lane_act_{j}) * $signed(lane_pw_{j});",
                    pb - 1
                );
            }
            if l.shift_add {
                let _ = writeln!(
                    w,
                    "wire [15:0] lane_ext_{j} = {{{{8{{lane_act_{j}[7]}}}}, lane_act_{j}}};"
                );
                for (sa, wt) in [("sa", "w"), ("sab", "wb")] {
                    let _ = writeln!(
                        w,
                        "wire [15:0] lane_{sa}_{j} = (lane_{wt}_{j}[0] ? lane_ext_{j} : 16'd0) \
                         + (lane_{wt}_{j}[1] ? {{lane_ext_{j}[14:0], 1'b0}} : 16'd0) \
                         + (lane_{wt}_{j}[2] ? {{lane_ext_{j}[13:0], 2'b0}} : 16'd0) \
                         - (lane_{wt}_{j}[3] ? {{lane_ext_{j}[12:0], 3'b0}} : 16'd0);"
                    );
                }
                let _ = writeln!(
                    w,
                    "wire [{top}:0] lane_psa_{j} = {{lane_sab_{j}, {sh}'d0}} + {{{{{}{{lane_sa_{j}[15]}}}}, lane_sa_{j}}} + {{{{{}{{lane_act_{j}[7]}}}}, lane_act_{j}, 7'd0}};",
                    pb - 16,
                    pb - 15,
                    top = pb - 1
                );
            }
            let product = match (l.multiplier, l.shift_add) {
                (true, true) => format!("{shift} ? lane_psa_{j} : lane_mul_{j}"),
                (false, true) => format!("lane_psa_{j}"),
                _ => format!("lane_mul_{j}"),
            };
            let _ = writeln!(w, "wire [{}:0] lane_prod_{j} = {product};", pb - 1);
        }
        let last = l.lanes - 1;
        let low = PACKED_LOW_MIN.unsigned_abs();
        let _ = writeln!(
            w,
            "wire [47:0] packed_c = pp${last} - {{{{9{{q${last}[31]}}}}, q${last}, 7'd0}};"
        );
        let _ = writeln!(w, "wire [47:0] packed_off = packed_c + 48'd{low};");
        let _ = writeln!(
            w,
            "wire [31:0] packed_lo = {{{}'d0, packed_off[{}:0]}} - 32'd{low};",
            32 - sh,
            sh - 1
        );
        let _ = writeln!(
            w,
            "wire [31:0] packed_hi = {{{{{}{{packed_off[47]}}}}, packed_off[47:{sh}]}};",
            sh - 16
        );
    }

    fn verilog(&self) -> String {
        let l = *self.layout;
        let (s, top) = (l.segments, l.lanes);
        let mut v = String::new();
        let w = &mut v;
        // Sparse multiplexers and lane products.
        let _ = writeln!(w, "wire [7:0] act_block [0:{}];", BLOCK - 1);
        for k in 0..BLOCK {
            let _ = writeln!(w, "assign act_block[{k}] = i_act${k};");
        }
        let plain_lanes = if l.pack { 0 } else { l.lanes };
        for j in 0..plain_lanes {
            let (act, weight, shift) = self.lane_operands(j);
            let _ = writeln!(w, "wire [7:0] lane_act_{j} = {act};");
            let _ = writeln!(w, "wire [7:0] lane_w_{j} = {weight};");
            if l.multiplier || !l.shift_add {
                let _ = writeln!(
                    w,
                    "wire signed [15:0] lane_mul_{j} = $signed(lane_act_{j}) * $signed(lane_w_{j});"
                );
            }
            if l.shift_add {
                let _ = writeln!(
                    w,
                    "wire [15:0] lane_ext_{j} = {{{{8{{lane_act_{j}[7]}}}}, lane_act_{j}}};"
                );
                let _ = writeln!(
                    w,
                    "wire [15:0] lane_sa_{j} = (lane_w_{j}[0] ? lane_ext_{j} : 16'd0) \
                     + (lane_w_{j}[1] ? {{lane_ext_{j}[14:0], 1'b0}} : 16'd0) \
                     + (lane_w_{j}[2] ? {{lane_ext_{j}[13:0], 2'b0}} : 16'd0) \
                     - (lane_w_{j}[3] ? {{lane_ext_{j}[12:0], 3'b0}} : 16'd0);"
                );
            }
            let product = match (l.multiplier, l.shift_add) {
                (true, true) => format!("{shift} ? lane_sa_{j} : lane_mul_{j}"),
                (false, true) => format!("lane_sa_{j}"),
                _ => format!("lane_mul_{j}"),
            };
            let _ = writeln!(w, "wire [15:0] lane_prod_{j} = {product};");
        }
        if l.pack {
            self.packed_products(w);
        }
        // Which cut lanes start a segment for the step in the input registers.
        for j in l.cuts() {
            let mut terms = Vec::new();
            if l.min_seg > 0 {
                terms.push(format!("(i_seg >= 3'd{})", l.min_seg));
            }
            terms.push(format!("(i_seg <= 3'd{})", Layout::tz(j)));
            let _ = writeln!(w, "wire lane_start_{j} = {};", terms.join(" & "));
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
            (l.min_seg..l.levels).map(|lv| (Some(lv), lv)).collect();
        arms.push((None, l.levels));
        for (label, lv) in arms {
            match label {
                Some(f) => {
                    let _ = writeln!(w, "        3'd{f}: begin");
                }
                None => {
                    let _ = writeln!(w, "        default: begin");
                }
            }
            if l.pack && lv == l.levels {
                let q = format!("q${}", top - 1);
                for (i, v) in ["packed_lo", "packed_hi"].iter().enumerate() {
                    let _ = writeln!(w, "            seg${i} = {v};");
                    let _ = writeln!(w, "            aseg${i} = {q};");
                }
                for i in 2..s {
                    let _ = writeln!(w, "            seg${i} = 32'd0;");
                    let _ = writeln!(w, "            aseg${i} = 32'd0;");
                }
                let _ = writeln!(w, "        end");
                continue;
            }
            for i in 0..s {
                for (out, sum, tap) in [("seg", "p", "tap"), ("aseg", "q", "atap")] {
                    let src = match l.source(lv, i) {
                        None => "32'd0".to_string(),
                        Some((_, 0)) if l.pack && out == "seg" => "packed_lo".into(),
                        Some((e, 0)) => format!("{sum}${e}"),
                        Some((e, d)) => format!("{tap}${}", l.tap(e, d)),
                    };
                    let _ = writeln!(w, "            {out}${i} = {src};");
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
        for e in l.ends() {
            for d in 1..=l.wait(e) {
                for (sum, tap) in [("p", "tap"), ("q", "atap")] {
                    let from = if d == 1 && l.pack && sum == "p" {
                        format!("pp${e}[31:0] - {{q${e}[24:0], 7'd0}}")
                    } else if d == 1 {
                        format!("{sum}${e}")
                    } else {
                        format!("{tap}${}", l.tap(e, d - 1))
                    };
                    let _ = writeln!(w, "    {tap}${} <= {from};", l.tap(e, d));
                }
            }
        }
        let (ps, ms, sum_zero) = if l.pack {
            ("pp", "pm", "48'd0")
        } else {
            ("p", "m", "32'd0")
        };
        for j in 0..l.lanes {
            let prod = if l.pack {
                let top_bit = PACKED_PRODUCT_BITS - 1;
                format!(
                    "{{{{{}{{pm${j}[{top_bit}]}}}}, pm${j}}}",
                    48 - PACKED_PRODUCT_BITS
                )
            } else {
                format!("{{{{16{{m${j}[15]}}}}, m${j}}}")
            };
            let act = format!("{{{{24{{ma${j}[7]}}}}, ma${j}}}");
            if j == 0 {
                let _ = writeln!(w, "    {ps}$0 <= {prod};");
                let _ = writeln!(w, "    q$0 <= {act};");
            } else if l.cut(j) {
                let c = l.cut_index(j);
                let _ = writeln!(
                    w,
                    "    {ps}${j} <= (ms${c} ? {sum_zero} : {ps}${}) + {prod};",
                    j - 1
                );
                let _ = writeln!(w, "    q${j} <= (ms${c} ? 32'd0 : q${}) + {act};", j - 1);
            } else {
                let _ = writeln!(w, "    {ps}${j} <= {ps}${} + {prod};", j - 1);
                let _ = writeln!(w, "    q${j} <= q${} + {act};", j - 1);
            }
        }
        for k in 1..=top {
            let p = k - 1;
            let _ = writeln!(w, "    sb_valid${k} <= sb_valid${p} & ~reset;");
            for f in ["first", "last", "gfirst", "glast", "seg"] {
                let _ = writeln!(w, "    sb_{f}${k} <= sb_{f}${p};");
            }
            for j in 0..s {
                let _ = writeln!(w, "    sb_scale${} <= sb_scale${};", k * s + j, p * s + j);
            }
        }
        for j in 0..l.lanes {
            let _ = writeln!(w, "    {ms}${j} <= lane_prod_{j};");
            let _ = writeln!(w, "    ma${j} <= lane_act_{j};");
            if l.cut(j) {
                let start = match l.delay(j) {
                    0 => format!("lane_start_{j}"),
                    d => format!("k_start${}", l.skew_start(j, d - 1)),
                };
                let _ = writeln!(w, "    ms${} <= {start};", l.cut_index(j));
            }
        }
        for j in 0..l.lanes {
            for d in 1..l.delay(j) {
                let (to, from) = (l.skew(j, d), l.skew(j, d - 1));
                let _ = writeln!(w, "    k_act${to} <= k_act${from};");
                let _ = writeln!(w, "    k_weight${to} <= k_weight${from};");
                if l.pack {
                    let _ = writeln!(w, "    k_weight_b${to} <= k_weight_b${from};");
                }
                if l.mixed() {
                    let _ = writeln!(w, "    k_shift${to} <= k_shift${from};");
                }
                if l.cut(j) {
                    let (to, from) = (l.skew_start(j, d), l.skew_start(j, d - 1));
                    let _ = writeln!(w, "    k_start${to} <= k_start${from};");
                }
            }
            if l.delay(j) > 0 {
                let k = l.skew(j, 0);
                let _ = writeln!(w, "    k_act${k} <= act_block[i_index${j}];");
                let _ = writeln!(w, "    k_weight${k} <= i_weight${j};");
                if l.pack {
                    let _ = writeln!(w, "    k_weight_b${k} <= i_weight_b${j};");
                }
                if l.mixed() {
                    let _ = writeln!(w, "    k_shift${k} <= i_shift$0;");
                }
                if l.cut(j) {
                    let _ = writeln!(w, "    k_start${} <= lane_start_{j};", l.skew_start(j, 0));
                }
            }
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
            ("seg", "segment_log2"),
        ] {
            let _ = writeln!(w, "    i_{i} <= in_{p};");
        }
        if l.mixed() {
            let _ = writeln!(w, "    i_shift$0 <= in_shift_add$0;");
        }
        for k in 0..BLOCK {
            let _ = writeln!(w, "    i_act${k} <= in_act${k};");
        }
        for j in 0..l.lanes {
            let _ = writeln!(w, "    i_weight${j} <= in_weight${j};");
            if l.pack {
                let _ = writeln!(w, "    i_weight_b${j} <= in_weight_b${j};");
            }
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
            &mut self.i_shift,
            &mut self.k_shift,
            &mut self.k_start,
            &mut self.ms,
        ] {
            v.iter_mut().for_each(|x| x.connect());
        }
        self.sb_seg.iter_mut().for_each(|x| x.connect());
        for v in [
            &mut self.i_act,
            &mut self.i_weight,
            &mut self.i_weight_b,
            &mut self.k_act,
            &mut self.k_weight,
            &mut self.k_weight_b,
            &mut self.ma,
        ] {
            v.iter_mut().for_each(|x| x.connect());
        }
        self.i_index.iter_mut().for_each(|x| x.connect());
        self.m.iter_mut().for_each(|x| x.connect());
        self.pm.iter_mut().for_each(|x| x.connect());
        self.pp.iter_mut().for_each(|x| x.connect());
        for v in [&mut self.i_scale, &mut self.sb_scale, &mut self.g_scale] {
            v.iter_mut().for_each(|x| x.connect());
        }
        for v in [
            &mut self.p,
            &mut self.q,
            &mut self.tap,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_pair_of_int8_weights_packs_into_the_27_bit_port() {
        let port = -(1i64 << 26)..(1i64 << 26);
        for a in -128..=127 {
            for b in -128..=127 {
                assert!(port.contains(&packed_weight(a, b)), "({a}, {b})");
            }
        }
        // Without the offset the corner does not fit: −128 · 2^19 − 128 < −2^26.
        assert!(!port.contains(&((-128i64 << PACKED_SHIFT) - 128)));
    }

    #[test]
    fn packed_column_sums_split_exactly_at_the_edges_of_their_range() {
        // Chains of 1 to 16 lanes with every activation and both weights at the corners of
        // int8, and the column sums' extremes over 16 lanes: −260096 and 262144.
        let corners = [-128i64, -127, -1, 0, 1, 127];
        for lanes in [1usize, 2, 4, 8, 16] {
            for &a in &corners {
                for &wa in &corners {
                    for &wb in &corners {
                        // Alternate the signs along the chain as well as keeping them uniform.
                        for alternate in [false, true] {
                            let (mut p, mut asum, mut sa, mut sb) = (0, 0, 0, 0);
                            for l in 0..lanes {
                                let a = if alternate && l % 2 == 1 { -a - 1 } else { a };
                                p += a * packed_weight(wa, wb);
                                asum += a;
                                sa += a * wa;
                                sb += a * wb;
                            }
                            assert_eq!(
                                unpack_columns(p, asum),
                                (sa, sb),
                                "{lanes} lanes of {a} × ({wa}, {wb}), alternate {alternate}"
                            );
                        }
                    }
                }
            }
        }
        let (lo, hi) = (16 * -128 * 127, 16 * 128 * 128);
        assert_eq!((lo, hi), (PACKED_LOW_MIN, 262144));
        for sa in [lo, lo + 1, -1, 0, 1, hi - 1, hi] {
            for sb in [lo, 0, hi] {
                for asum in [-2048i64, 0, 2032] {
                    let p = (sb << PACKED_SHIFT) + sa + PACKED_A_OFFSET * asum;
                    assert_eq!(unpack_columns(p, asum), (sa, sb), "({sa}, {sb}, {asum})");
                }
            }
        }
        // One past the window's top aliases to its bottom: the window is exactly as wide as
        // 16 lanes need.
        let over = lo + (1 << PACKED_SHIFT);
        assert_ne!(unpack_columns(over, 0), (over, 0));
    }
}
