//! The matrix-engine top: `rows × cols` PEs, their operand and result banks, and the controller
//! that runs one matrix instruction's tile loop ([`tessera_spec::analytical::matrix_tiling`]).
//!
//! An instruction (`m × k` int8 activations times `k × n` weights, N kept per 16-wide block, a
//! quantisation group, the shift-and-add flag) is accepted when `start` and `ready` are both high.
//! Its outputs are split into *items*: one row of activations and a *column group* of `S`
//! columns, where `S = lanes / min(N, lanes)` is the number of segments the chain is cut into,
//! doubled on a packing engine for a dense instruction of a precision that packs two MACs per
//! DSP (`instr_pack`): each lane then multiplies one activation by the weights of two columns.
//! The PEs of a PE row share one activation bank, whose words they all receive (a broadcast), so
//! a PE row works on one *slot*: an output row and `cols` consecutive column groups, PE `c`
//! taking the slot's `c`-th (idle past the last group). Slots go to the PE rows in passes of
//! `rows`, output row by output row; every PE of a pass steps through its item's blocks in
//! lockstep, one step per cycle (`ceil(N / lanes)` steps per block). Each PE reads its weights
//! and scales from its own banks (every PE needs different ones each cycle), so the engine
//! issues one step per cycle with no stalls: an instruction takes `steps +
//! matrix.pipeline_depth` cycles from acceptance to its last result write, the simulator's
//! figure.
//!
//! Bank layouts (host-written, every PE row's or PE's copy alike):
//! - activations: word `row × ceil(k/16) + block`, 16 int8 lanes;
//! - weights: word `step × G + column group` (G column groups), `lanes` lanes of
//!   `index << 8 | weight` (4-bit position, int8 weight; segment `j` of a step holds column
//!   `S × group + j`, a packed step column `2 × group` in these lanes); on a packing engine a
//!   second bank at the same address holds `lanes` int8 column-B weights (column
//!   `2 × group + 1` of a packed step, zero otherwise);
//! - scales: word `group × G + column group`, `S` lanes of `zero point << 16 | scale` (8-bit and
//!   16-bit signed);
//! - results: PE `q = r × cols + c`'s bank word `p` holds the `c`-th item of slot
//!   `p × rows + r` (the slots of output row `i` are `i × ⌈G / cols⌉ ..`), `S` lanes of 48 bits;
//!   an idle PE leaves its word unwritten.

use crate::bank::{Bank, RamStyle, ADDRESS_BITS};
use crate::controller::Controller;
use crate::hidden::{vec_of, Hidden};
use crate::params::{EngineParams, BLOCK};
use crate::pe::{bits_value, Pe, SCALE_BITS, SEGMENT_BITS};
use rust_hdl::prelude::*;
use std::fmt::Write as _;

type Word = Bits<ADDRESS_BITS>;

/// Where the operand banks (activations, weights) live: block RAM, whose wide ports feed a PE's
/// `lanes` operands per cycle.
const OPERANDS: RamStyle = RamStyle::Block;
/// Where the per-segment banks (scales, results) live: distributed RAM. They are a few lanes
/// wide, and the operand banks already take most of a part's block RAM (a U280-class 16 × 16
/// array: 7 BRAM36 per PE for its operands, 1,792 of 2,016).
const PER_SEGMENT: RamStyle = RamStyle::Distributed;

/// Generator options that the accelerator spec does not fix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EngineOptions {
    /// Words per operand and result bank (a power of two, 2..=65536).
    pub bank_words: usize,
}

impl Default for EngineOptions {
    fn default() -> Self {
        EngineOptions { bank_words: 256 }
    }
}

/// The matrix engine.
#[derive(LogicBlock)]
pub struct MatrixEngine {
    /// Clock.
    pub clock: Signal<In, Clock>,
    /// Synchronous reset.
    pub reset: Signal<In, Bit>,
    /// An instruction is offered.
    pub start: Signal<In, Bit>,
    /// The engine accepts an instruction this cycle.
    pub ready: Signal<Out, Bit>,
    /// The instruction's last result is written at the coming clock edge.
    pub done: Signal<Out, Bit>,
    /// Activation rows `m`.
    pub instr_m: Signal<In, Word>,
    /// Output columns `n`.
    pub instr_n: Signal<In, Word>,
    /// Reduction length `k`.
    pub instr_k: Signal<In, Word>,
    /// `log2` of N (kept weights per 16-wide block; 4 is dense).
    pub instr_nm_log2: Signal<In, Bits<SEGMENT_BITS>>,
    /// Quantisation group along `k` (a multiple of 16; 0: one group per row).
    pub instr_group: Signal<In, Word>,
    /// Run the weights on the shift-and-add datapath (one signal on an engine with both
    /// datapaths, none otherwise).
    pub instr_shift_add: Vec<Signal<In, Bit>>,
    /// The precision packs two MACs per DSP (one signal on a packing engine, none otherwise):
    /// a dense instruction then runs two columns per lane.
    pub instr_pack: Vec<Signal<In, Bit>>,
    /// Host write of an activation word.
    pub host_act_write: Signal<In, Bit>,
    /// Activation word address.
    pub host_act_address: Signal<In, Word>,
    /// Activation word lanes.
    pub host_act_data: Vec<Signal<In, Bits<8>>>,
    /// Host write of a weight word.
    pub host_weight_write: Signal<In, Bit>,
    /// Weight word address.
    pub host_weight_address: Signal<In, Word>,
    /// Weight word lanes (`index << 8 | weight`).
    pub host_weight_data: Vec<Signal<In, Bits<12>>>,
    /// Column-B weight lanes of the weight word (packing engines; empty otherwise), written with
    /// it.
    pub host_weight_b_data: Vec<Signal<In, Bits<8>>>,
    /// Host write of a scale word.
    pub host_scale_write: Signal<In, Bit>,
    /// Scale word address.
    pub host_scale_address: Signal<In, Word>,
    /// Scale word lanes (`zero point << 16 | scale`).
    pub host_scale_data: Vec<Signal<In, Bits<SCALE_BITS>>>,
    /// PE whose result bank the host reads.
    pub host_result_pe: Signal<In, Word>,
    /// Result word address (data on `host_result_data` after the clock edge).
    pub host_result_address: Signal<In, Word>,
    /// Result word lanes.
    pub host_result_data: Vec<Signal<Out, Bits<48>>>,

    pes: Vec<Pe>,
    /// One per PE row.
    act_banks: Vec<Bank<8>>,
    weight_banks: Vec<Bank<12>>,
    weight_b_banks: Vec<Bank<8>>,
    scale_banks: Vec<Bank<SCALE_BITS>>,
    result_banks: Vec<Bank<48>>,
    controller: Controller,
    shape: Hidden<Shape>,
}

/// Sizes shared by the Rust model and the Verilog text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shape {
    pes: usize,
    cols: usize,
    lanes: usize,
    segments: usize,
    pack: bool,
    mixed: bool,
}

impl MatrixEngine {
    /// The engine for `p`.
    pub fn new(p: &EngineParams, options: EngineOptions) -> MatrixEngine {
        let pes = p.rows * p.cols;
        let segments = Pe::new(p).segments();
        let words = options.bank_words;
        let pack = p.pack == 2;
        let mixed = p.has_multiplier && p.has_shift_add;
        let packed = |n: usize| if pack { n } else { 0 };
        MatrixEngine {
            clock: Default::default(),
            reset: Default::default(),
            start: Default::default(),
            ready: Default::default(),
            done: Default::default(),
            instr_m: Default::default(),
            instr_n: Default::default(),
            instr_k: Default::default(),
            instr_nm_log2: Default::default(),
            instr_group: Default::default(),
            instr_shift_add: vec_of(mixed as usize),
            instr_pack: vec_of(packed(1)),
            host_act_write: Default::default(),
            host_act_address: Default::default(),
            host_act_data: vec_of(BLOCK),
            host_weight_write: Default::default(),
            host_weight_address: Default::default(),
            host_weight_data: vec_of(p.lanes),
            host_weight_b_data: vec_of(packed(p.lanes)),
            host_scale_write: Default::default(),
            host_scale_address: Default::default(),
            host_scale_data: vec_of(segments),
            host_result_pe: Default::default(),
            host_result_address: Default::default(),
            host_result_data: vec_of(segments),
            pes: (0..pes).map(|_| Pe::new(p)).collect(),
            act_banks: (0..p.rows)
                .map(|_| Bank::new(words, BLOCK, OPERANDS))
                .collect(),
            weight_banks: (0..pes)
                .map(|_| Bank::new(words, p.lanes, OPERANDS))
                .collect(),
            weight_b_banks: (0..packed(pes))
                .map(|_| Bank::new(words, p.lanes, OPERANDS))
                .collect(),
            scale_banks: (0..pes)
                .map(|_| Bank::new(words, segments, PER_SEGMENT))
                .collect(),
            result_banks: (0..pes)
                .map(|_| Bank::new(words, segments, PER_SEGMENT))
                .collect(),
            controller: Controller::new(p.rows, p.cols, p.lanes_log2(), pack, mixed),
            shape: Hidden(Shape {
                pes,
                cols: p.cols,
                lanes: p.lanes,
                segments,
                pack,
                mixed,
            }),
        }
    }

    /// PEs in the array.
    pub fn pes(&self) -> usize {
        self.shape.pes
    }
    /// PEs in a PE row (they share one activation bank).
    pub fn cols(&self) -> usize {
        self.shape.cols
    }
    /// Lanes per PE.
    pub fn lanes(&self) -> usize {
        self.shape.lanes
    }
    /// Output segments per PE.
    pub fn segments(&self) -> usize {
        self.shape.segments
    }
    /// Columns a lane computes at once on a packed instruction: 2 when the engine packs, else 1.
    pub fn pack(&self) -> usize {
        1 + self.shape.pack as usize
    }
    /// Whether the engine has both datapaths, so that an instruction chooses one
    /// (`instr_shift_add`).
    pub fn mixed(&self) -> bool {
        self.shape.mixed
    }

    /// Wiring only: every register lives in a child block, so all registers sit at one depth of
    /// the hierarchy and rust-hdl clocks them in the same delta cycle.
    fn wire(&mut self) {
        let sh = *self.shape;
        let clock = self.clock.val();
        let c = &mut self.controller;
        c.clock.next = clock;
        c.reset.next = self.reset.val();
        c.start.next = self.start.val();
        c.instr_m.next = self.instr_m.val();
        c.instr_n.next = self.instr_n.val();
        c.instr_k.next = self.instr_k.val();
        c.instr_nm_log2.next = self.instr_nm_log2.val();
        c.instr_group.next = self.instr_group.val();
        for (to, from) in c.instr_shift_add.iter_mut().zip(&self.instr_shift_add) {
            to.next = from.val();
        }
        for (to, from) in c.instr_pack.iter_mut().zip(&self.instr_pack) {
            to.next = from.val();
        }
        c.host_result_pe.next = self.host_result_pe.val();
        c.pe_out_valid.next = self.pes[0].out_valid.val();
        self.ready.next = self.controller.ready.val();
        self.done.next = self.controller.done.val();
        for (r, ab) in self.act_banks.iter_mut().enumerate() {
            ab.clock.next = clock;
            ab.write_enable.next = self.host_act_write.val();
            ab.write_address.next = self.host_act_address.val();
            for k in 0..BLOCK {
                ab.write_data[k].next = self.host_act_data[k].val();
            }
            ab.read_address.next = self.controller.act_address[r].val();
        }
        for q in 0..sh.pes {
            let c = &self.controller;
            let wb = &mut self.weight_banks[q];
            wb.clock.next = clock;
            wb.write_enable.next = self.host_weight_write.val();
            wb.write_address.next = self.host_weight_address.val();
            for j in 0..sh.lanes {
                wb.write_data[j].next = self.host_weight_data[j].val();
            }
            wb.read_address.next = c.weight_address[q].val();
            if sh.pack {
                let bb = &mut self.weight_b_banks[q];
                bb.clock.next = clock;
                bb.write_enable.next = self.host_weight_write.val();
                bb.write_address.next = self.host_weight_address.val();
                for j in 0..sh.lanes {
                    bb.write_data[j].next = self.host_weight_b_data[j].val();
                }
                bb.read_address.next = c.weight_address[q].val();
            }
            let sb = &mut self.scale_banks[q];
            sb.clock.next = clock;
            sb.write_enable.next = self.host_scale_write.val();
            sb.write_address.next = self.host_scale_address.val();
            for j in 0..sh.segments {
                sb.write_data[j].next = self.host_scale_data[j].val();
            }
            sb.read_address.next = c.scale_address[q].val();
            let pe = &mut self.pes[q];
            pe.clock.next = clock;
            pe.reset.next = self.reset.val();
            pe.in_valid.next = c.step_valid[q].val();
            pe.in_first.next = c.step_first.val();
            pe.in_last.next = c.step_last.val();
            pe.in_group_first.next = c.step_group_first.val();
            pe.in_group_last.next = c.step_group_last.val();
            for (to, from) in pe.in_shift_add.iter_mut().zip(&c.step_shift_add) {
                to.next = from.val();
            }
            pe.in_segment_log2.next = c.step_segment_log2.val();
            for k in 0..BLOCK {
                pe.in_act[k].next = self.act_banks[q / sh.cols].read_data[k].val();
            }
            for j in 0..sh.lanes {
                let word = bits_value(self.weight_banks[q].read_data[j].val());
                pe.in_weight[j].next = Bits::from(word & 0xff);
                pe.in_index[j].next = Bits::from(word >> 8 & 0xf);
                if sh.pack {
                    pe.in_weight_b[j].next = self.weight_b_banks[q].read_data[j].val();
                }
            }
            for j in 0..sh.segments {
                pe.in_scale[j].next = self.scale_banks[q].read_data[j].val();
            }
            let rb = &mut self.result_banks[q];
            rb.clock.next = clock;
            rb.write_enable.next = self.pes[q].out_valid.val();
            rb.write_address.next = c.result_address.val();
            for j in 0..sh.segments {
                rb.write_data[j].next = self.pes[q].out_result[j].val();
            }
            rb.read_address.next = self.host_result_address.val();
        }
        let sel = bits_value(self.controller.result_pe.val()) as usize;
        for j in 0..sh.segments {
            self.host_result_data[j].next = if sel < sh.pes {
                self.result_banks[sel].read_data[j].val()
            } else {
                Bits::default()
            };
        }
    }

    fn verilog(&self) -> String {
        let sh = *self.shape;
        let mut text = String::new();
        let o = &mut text;
        let _ = writeln!(o, "always @(*) begin");
        let c = "controller$";
        let _ = writeln!(o, "    {c}clock = clock;");
        for port in [
            "reset",
            "start",
            "instr_m",
            "instr_n",
            "instr_k",
            "instr_nm_log2",
            "instr_group",
            "host_result_pe",
        ] {
            let _ = writeln!(o, "    {c}{port} = {port};");
        }
        if sh.mixed {
            let _ = writeln!(o, "    {c}instr_shift_add$0 = instr_shift_add$0;");
        }
        if sh.pack {
            let _ = writeln!(o, "    {c}instr_pack$0 = instr_pack$0;");
        }
        let _ = writeln!(o, "    {c}pe_out_valid = pes$0$out_valid;");
        let _ = writeln!(o, "    ready = {c}ready;");
        let _ = writeln!(o, "    done = {c}done;");
        for r in 0..sh.pes / sh.cols {
            let _ = writeln!(o, "    act_banks${r}$clock = clock;");
            let _ = writeln!(o, "    act_banks${r}$write_enable = host_act_write;");
            let _ = writeln!(o, "    act_banks${r}$write_address = host_act_address;");
            for k in 0..BLOCK {
                let _ = writeln!(o, "    act_banks${r}$write_data${k} = host_act_data${k};");
            }
            let _ = writeln!(o, "    act_banks${r}$read_address = {c}act_address${r};");
        }
        for q in 0..sh.pes {
            let mut banks = vec![
                ("weight_banks", "host_weight", "host_weight", sh.lanes),
                ("scale_banks", "host_scale", "host_scale", sh.segments),
            ];
            if sh.pack {
                banks.push(("weight_b_banks", "host_weight", "host_weight_b", sh.lanes));
            }
            for bank in ["weight_banks", "scale_banks", "result_banks"] {
                let _ = writeln!(o, "    {bank}${q}$clock = clock;");
            }
            for (bank, host, data, lanes) in banks {
                if bank == "weight_b_banks" {
                    let _ = writeln!(o, "    {bank}${q}$clock = clock;");
                    let _ = writeln!(o, "    {bank}${q}$read_address = {c}weight_address${q};");
                }
                let _ = writeln!(o, "    {bank}${q}$write_enable = {host}_write;");
                let _ = writeln!(o, "    {bank}${q}$write_address = {host}_address;");
                for j in 0..lanes {
                    let _ = writeln!(o, "    {bank}${q}$write_data${j} = {data}_data${j};");
                }
            }
            let _ = writeln!(
                o,
                "    weight_banks${q}$read_address = {c}weight_address${q};"
            );
            let _ = writeln!(
                o,
                "    scale_banks${q}$read_address = {c}scale_address${q};"
            );
            let p = format!("pes${q}$");
            let _ = writeln!(o, "    {p}clock = clock;");
            let _ = writeln!(o, "    {p}reset = reset;");
            let _ = writeln!(o, "    {p}in_valid = {c}step_valid${q};");
            for port in ["first", "last", "group_first", "group_last", "segment_log2"] {
                let _ = writeln!(o, "    {p}in_{port} = {c}step_{port};");
            }
            if sh.mixed {
                let _ = writeln!(o, "    {p}in_shift_add$0 = {c}step_shift_add$0;");
            }
            for k in 0..BLOCK {
                let _ = writeln!(
                    o,
                    "    {p}in_act${k} = act_banks${}$read_data${k};",
                    q / sh.cols
                );
            }
            for j in 0..sh.lanes {
                let _ = writeln!(
                    o,
                    "    {p}in_weight${j} = weight_banks${q}$read_data${j}[7:0];"
                );
                let _ = writeln!(
                    o,
                    "    {p}in_index${j} = weight_banks${q}$read_data${j}[11:8];"
                );
                if sh.pack {
                    let _ = writeln!(
                        o,
                        "    {p}in_weight_b${j} = weight_b_banks${q}$read_data${j};"
                    );
                }
            }
            for j in 0..sh.segments {
                let _ = writeln!(o, "    {p}in_scale${j} = scale_banks${q}$read_data${j};");
            }
            let _ = writeln!(o, "    result_banks${q}$write_enable = {p}out_valid;");
            let _ = writeln!(o, "    result_banks${q}$write_address = {c}result_address;");
            for j in 0..sh.segments {
                let _ = writeln!(
                    o,
                    "    result_banks${q}$write_data${j} = {p}out_result${j};"
                );
            }
            let _ = writeln!(
                o,
                "    result_banks${q}$read_address = host_result_address;"
            );
        }
        let _ = writeln!(o, "    case ({c}result_pe)");
        for q in 0..sh.pes {
            let _ = writeln!(o, "        16'd{q}: begin");
            for j in 0..sh.segments {
                let _ = writeln!(
                    o,
                    "            host_result_data${j} = result_banks${q}$read_data${j};"
                );
            }
            let _ = writeln!(o, "        end");
        }
        let _ = writeln!(o, "        default: begin");
        for j in 0..sh.segments {
            let _ = writeln!(o, "            host_result_data${j} = 48'd0;");
        }
        let _ = writeln!(o, "        end");
        let _ = writeln!(o, "    endcase");
        let _ = writeln!(o, "end");
        text
    }
}

impl Logic for MatrixEngine {
    fn update(&mut self) {
        self.wire();
    }

    fn connect(&mut self) {
        self.ready.connect();
        self.done.connect();
        self.host_result_data.iter_mut().for_each(|x| x.connect());
        let c = &mut self.controller;
        for s in [&mut c.reset, &mut c.start] {
            s.connect();
        }
        c.instr_shift_add.iter_mut().for_each(|x| x.connect());
        c.instr_pack.iter_mut().for_each(|x| x.connect());
        c.clock.connect();
        for s in [
            &mut c.instr_m,
            &mut c.instr_n,
            &mut c.instr_k,
            &mut c.instr_group,
            &mut c.host_result_pe,
        ] {
            s.connect();
        }
        c.instr_nm_log2.connect();
        c.pe_out_valid.connect();
        self.act_banks.iter_mut().for_each(connect_bank);
        for q in 0..self.shape.pes {
            let pe = &mut self.pes[q];
            pe.clock.connect();
            for s in [
                &mut pe.reset,
                &mut pe.in_valid,
                &mut pe.in_first,
                &mut pe.in_last,
                &mut pe.in_group_first,
                &mut pe.in_group_last,
            ] {
                s.connect();
            }
            pe.in_shift_add.iter_mut().for_each(|x| x.connect());
            pe.in_segment_log2.connect();
            pe.in_act.iter_mut().for_each(|x| x.connect());
            pe.in_weight.iter_mut().for_each(|x| x.connect());
            pe.in_weight_b.iter_mut().for_each(|x| x.connect());
            pe.in_index.iter_mut().for_each(|x| x.connect());
            pe.in_scale.iter_mut().for_each(|x| x.connect());
            connect_bank(&mut self.weight_banks[q]);
            if let Some(b) = self.weight_b_banks.get_mut(q) {
                connect_bank(b);
            }
            connect_bank(&mut self.scale_banks[q]);
            connect_bank(&mut self.result_banks[q]);
        }
    }

    fn hdl(&self) -> Verilog {
        Verilog::Custom(self.verilog())
    }
}

fn connect_bank<const W: usize>(b: &mut Bank<W>) {
    b.clock.connect();
    b.write_enable.connect();
    b.write_address.connect();
    b.write_data.iter_mut().for_each(|x| x.connect());
    b.read_address.connect();
}
