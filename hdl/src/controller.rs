//! The matrix engine's controller: accepts an instruction, walks its tile loop one step per
//! cycle (slots to PE rows in passes, blocks, sub-steps, quantisation groups), generates every
//! PE row's activation-bank address, every PE's weight- and scale-bank addresses and step flags,
//! and counts result writes to signal completion. A PE row works on one slot: an output row and
//! `cols` consecutive column groups starting at the row's `gbase`, PE `c` of the row taking
//! group `gbase + c` (idle past the last group). The
//! arithmetic is the same as [`tessera_spec::analytical::matrix_tiling`], computed with shifts and
//! additions only: `log2` of a column group's width is `levels − min(log2 N, levels)`, plus one
//! for a packed instruction (a packing engine, `instr_pack`, and dense weights, `log2 N = 4`).

use crate::bank::ADDRESS_BITS;
use crate::hidden::{vec_of, Hidden};
use crate::pe::{bits_value, SEGMENT_BITS};
use rust_hdl::prelude::*;
use std::fmt::Write as _;

type Word = Bits<ADDRESS_BITS>;
const MASK: u64 = (1 << ADDRESS_BITS) - 1;

/// The controller of an array of `rows × cols` PEs with `2^levels` lanes each.
#[derive(LogicBlock)]
pub struct Controller {
    /// Clock.
    pub clock: Signal<In, Clock>,
    /// Synchronous reset.
    pub reset: Signal<In, Bit>,
    /// An instruction is offered.
    pub start: Signal<In, Bit>,
    /// Activation rows `m`.
    pub instr_m: Signal<In, Word>,
    /// Output columns `n`.
    pub instr_n: Signal<In, Word>,
    /// Reduction length `k`.
    pub instr_k: Signal<In, Word>,
    /// `log2` of N.
    pub instr_nm_log2: Signal<In, Bits<SEGMENT_BITS>>,
    /// Quantisation group (elements; 0: one per row).
    pub instr_group: Signal<In, Word>,
    /// Shift-and-add datapath (one signal on an engine with both datapaths, none otherwise).
    pub instr_shift_add: Vec<Signal<In, Bit>>,
    /// The precision packs two MACs per DSP (one signal on a packing engine, none otherwise).
    pub instr_pack: Vec<Signal<In, Bit>>,
    /// PE 0 presents its results this cycle: the PEs of a pass present theirs together, and
    /// PE 0 works in every pass (a slot's first column group always exists).
    pub pe_out_valid: Signal<In, Bit>,
    /// PE whose result bank the host reads.
    pub host_result_pe: Signal<In, Word>,
    /// An instruction is accepted this cycle.
    pub ready: Signal<Out, Bit>,
    /// The last result is written at the coming edge.
    pub done: Signal<Out, Bit>,
    /// Each PE row's activation-bank read address.
    pub act_address: Vec<Signal<Out, Word>>,
    /// Each PE's weight-bank read address.
    pub weight_address: Vec<Signal<Out, Word>>,
    /// Each PE's scale-bank read address.
    pub scale_address: Vec<Signal<Out, Word>>,
    /// The result-bank write address of every PE: the pass of the results written next.
    pub result_address: Signal<Out, Word>,
    /// Each PE's step is valid (aligned with the bank read data).
    pub step_valid: Vec<Signal<Out, Bit>>,
    /// First step of an item.
    pub step_first: Signal<Out, Bit>,
    /// Last step of an item.
    pub step_last: Signal<Out, Bit>,
    /// First step of a group.
    pub step_group_first: Signal<Out, Bit>,
    /// Last step of a group.
    pub step_group_last: Signal<Out, Bit>,
    /// Shift-and-add datapath (one signal on an engine with both datapaths, none otherwise).
    pub step_shift_add: Vec<Signal<Out, Bit>>,
    /// Segment size field.
    pub step_segment_log2: Signal<Out, Bits<SEGMENT_BITS>>,
    /// The registered host result-bank selection.
    pub result_pe: Signal<Out, Word>,

    c_m: Signal<Local, Word>,
    c_groups: Signal<Local, Word>,
    c_kblocks: Signal<Local, Word>,
    c_spb_last: Signal<Local, Word>,
    c_spi_last: Signal<Local, Word>,
    c_spg_last: Signal<Local, Word>,
    c_seg: Signal<Local, Bits<SEGMENT_BITS>>,
    c_shift: Vec<Signal<Local, Bit>>,
    running: Signal<Local, Bit>,
    step: Signal<Local, Word>,
    block: Signal<Local, Word>,
    sub: Signal<Local, Word>,
    gstep: Signal<Local, Word>,
    step_g: Signal<Local, Word>,
    group_g: Signal<Local, Word>,
    issued: Signal<Local, Word>,
    written: Signal<Local, Word>,
    row: Vec<Signal<Local, Word>>,
    gbase: Vec<Signal<Local, Word>>,
    act_base: Vec<Signal<Local, Word>>,
    r_valid: Vec<Signal<Local, Bit>>,
    r_first: Signal<Local, Bit>,
    r_last: Signal<Local, Bit>,
    r_gfirst: Signal<Local, Bit>,
    r_glast: Signal<Local, Bit>,
    r_seg: Signal<Local, Bits<SEGMENT_BITS>>,
    r_shift: Vec<Signal<Local, Bit>>,

    shape: Hidden<Shape>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Shape {
    rows: usize,
    cols: usize,
    levels: usize,
    pack: bool,
    mixed: bool,
}

/// The controller's configuration for one instruction (all counts 16-bit).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Config {
    m: u64,
    groups: u64,
    kblocks: u64,
    spb_last: u64,
    spi_last: u64,
    spg_last: u64,
    seg: u64,
    empty: bool,
}

impl Config {
    fn new(levels: u64, m: u64, n: u64, k: u64, nm_log2: u64, group: u64, pack: bool) -> Config {
        let seg = nm_log2.min(levels);
        let packed = pack && nm_log2 >= 4;
        let s_log2 = levels - seg + packed as u64;
        let groups = (n + (1 << s_log2) - 1) >> s_log2;
        let kblocks = (k + 15) >> 4;
        let spb_log2 = nm_log2.saturating_sub(levels);
        let gblocks = if group == 0 { kblocks } else { group >> 4 };
        Config {
            m,
            groups: groups & MASK,
            kblocks,
            spb_last: ((1 << spb_log2) - 1) & MASK,
            spi_last: ((kblocks << spb_log2).wrapping_sub(1)) & MASK,
            spg_last: ((gblocks << spb_log2).wrapping_sub(1)) & MASK,
            seg,
            empty: m == 0 || n == 0 || k == 0,
        }
    }
}

fn w(v: u64) -> Word {
    Bits::from(v & MASK)
}

impl Controller {
    /// A controller for `rows × cols` PEs whose chains have `2^levels` lanes, packing two
    /// columns per lane on dense packed instructions when `pack`, passing the datapath choice on
    /// when `mixed`.
    pub fn new(rows: usize, cols: usize, levels: usize, pack: bool, mixed: bool) -> Controller {
        let pes = rows * cols;
        Controller {
            clock: Default::default(),
            reset: Default::default(),
            start: Default::default(),
            instr_m: Default::default(),
            instr_n: Default::default(),
            instr_k: Default::default(),
            instr_nm_log2: Default::default(),
            instr_group: Default::default(),
            instr_shift_add: vec_of(mixed as usize),
            instr_pack: vec_of(pack as usize),
            pe_out_valid: Default::default(),
            host_result_pe: Default::default(),
            ready: Default::default(),
            done: Default::default(),
            act_address: vec_of(rows),
            weight_address: vec_of(pes),
            scale_address: vec_of(pes),
            result_address: Default::default(),
            step_valid: vec_of(pes),
            step_first: Default::default(),
            step_last: Default::default(),
            step_group_first: Default::default(),
            step_group_last: Default::default(),
            step_shift_add: vec_of(mixed as usize),
            step_segment_log2: Default::default(),
            result_pe: Default::default(),
            c_m: Default::default(),
            c_groups: Default::default(),
            c_kblocks: Default::default(),
            c_spb_last: Default::default(),
            c_spi_last: Default::default(),
            c_spg_last: Default::default(),
            c_seg: Default::default(),
            c_shift: vec_of(mixed as usize),
            running: Default::default(),
            step: Default::default(),
            block: Default::default(),
            sub: Default::default(),
            gstep: Default::default(),
            step_g: Default::default(),
            group_g: Default::default(),
            issued: Default::default(),
            written: Default::default(),
            row: vec_of(rows),
            gbase: vec_of(rows),
            act_base: vec_of(rows),
            r_valid: vec_of(pes),
            r_first: Default::default(),
            r_last: Default::default(),
            r_gfirst: Default::default(),
            r_glast: Default::default(),
            r_seg: Default::default(),
            r_shift: vec_of(mixed as usize),
            shape: Hidden(Shape {
                rows,
                cols,
                levels,
                pack,
                mixed,
            }),
        }
    }

    fn ready_now(&self) -> bool {
        !self.running.val() && self.written.val() == self.issued.val()
    }

    /// `(row, first column group, activation base)` one slot after the given one: the next
    /// `cols` groups of the row, or the next row from group 0.
    fn next_slot(
        cols: u64,
        c_groups: u64,
        c_kblocks: u64,
        (r, g, a): (u64, u64, u64),
    ) -> (u64, u64, u64) {
        if g + cols >= c_groups {
            ((r + 1) & MASK, 0, (a + c_kblocks) & MASK)
        } else {
            (r, g + cols, a)
        }
    }

    fn clock_edge(&mut self) {
        let sh = *self.shape;
        let cols = sh.cols as u64;
        let v = |s: &Signal<Local, Word>| bits_value(s.val());
        let reset = self.reset.val();
        // Result writes and completion.
        if self.pe_out_valid.val() {
            self.written.next = w(v(&self.written) + 1);
        }
        self.result_pe.next = self.host_result_pe.val();
        // Operand-read stage side band.
        let c_spi_last = v(&self.c_spi_last);
        let step = v(&self.step);
        let gstep = v(&self.gstep);
        let last = step == c_spi_last;
        let glast = gstep == v(&self.c_spg_last) || last;
        let running = self.running.val();
        for q in 0..sh.rows * sh.cols {
            let r = q / sh.cols;
            let c = (q % sh.cols) as u64;
            self.r_valid[q].next = running
                && v(&self.row[r]) < v(&self.c_m)
                && v(&self.gbase[r]) + c < v(&self.c_groups)
                && !reset;
        }
        self.r_first.next = step == 0;
        self.r_last.next = last;
        self.r_gfirst.next = gstep == 0;
        self.r_glast.next = glast;
        self.r_seg.next = self.c_seg.val();
        for (to, from) in self.r_shift.iter_mut().zip(&self.c_shift) {
            to.next = from.val();
        }
        // Accept or advance.
        if self.start.val() && self.ready_now() && !reset {
            let c = Config::new(
                sh.levels as u64,
                bits_value(self.instr_m.val()),
                bits_value(self.instr_n.val()),
                bits_value(self.instr_k.val()),
                bits_value(self.instr_nm_log2.val()),
                bits_value(self.instr_group.val()),
                self.instr_pack.first().is_some_and(|s| s.val()),
            );
            self.c_m.next = w(c.m);
            self.c_groups.next = w(c.groups);
            self.c_kblocks.next = w(c.kblocks);
            self.c_spb_last.next = w(c.spb_last);
            self.c_spi_last.next = w(c.spi_last);
            self.c_spg_last.next = w(c.spg_last);
            self.c_seg.next = Bits::from(c.seg);
            for (to, from) in self.c_shift.iter_mut().zip(&self.instr_shift_add) {
                to.next = from.val();
            }
            self.running.next = !c.empty;
            self.issued.next = w(0);
            self.written.next = w(0);
            self.reset_step();
            let mut slot = (0, 0, 0);
            for r in 0..sh.rows {
                if r > 0 {
                    slot = Self::next_slot(cols, c.groups, c.kblocks, slot);
                }
                self.set_slot(r, slot);
            }
        } else if running {
            if last {
                self.issued.next = w(v(&self.issued) + 1);
                self.reset_step();
                let (cg, kb) = (v(&self.c_groups), v(&self.c_kblocks));
                let r_last = sh.rows - 1;
                let mut slot = (
                    v(&self.row[r_last]),
                    v(&self.gbase[r_last]),
                    v(&self.act_base[r_last]),
                );
                for r in 0..sh.rows {
                    slot = Self::next_slot(cols, cg, kb, slot);
                    self.set_slot(r, slot);
                    if r == 0 && slot.0 >= v(&self.c_m) {
                        self.running.next = false;
                    }
                }
            } else {
                let cg = v(&self.c_groups);
                self.step.next = w(step + 1);
                self.step_g.next = w(v(&self.step_g) + cg);
                let sub = v(&self.sub);
                if sub == v(&self.c_spb_last) {
                    self.sub.next = w(0);
                    self.block.next = w(v(&self.block) + 1);
                } else {
                    self.sub.next = w(sub + 1);
                }
                if glast {
                    self.gstep.next = w(0);
                    self.group_g.next = w(v(&self.group_g) + cg);
                } else {
                    self.gstep.next = w(gstep + 1);
                }
            }
        }
        if reset {
            self.running.next = false;
            self.issued.next = w(0);
            self.written.next = w(0);
        }
    }

    fn reset_step(&mut self) {
        for s in [
            &mut self.step,
            &mut self.block,
            &mut self.sub,
            &mut self.gstep,
            &mut self.step_g,
            &mut self.group_g,
        ] {
            s.next = w(0);
        }
    }

    fn set_slot(&mut self, r: usize, (row, g, a): (u64, u64, u64)) {
        self.row[r].next = w(row);
        self.gbase[r].next = w(g);
        self.act_base[r].next = w(a);
    }

    fn combinational(&mut self) {
        let v = |s: &Signal<Local, Word>| bits_value(s.val());
        let ready = self.ready_now();
        self.ready.next = ready;
        let last_write = self.pe_out_valid.val()
            && !self.running.val()
            && v(&self.written) + 1 == v(&self.issued);
        let empty_accept = self.start.val()
            && ready
            && (bits_value(self.instr_m.val()) == 0
                || bits_value(self.instr_n.val()) == 0
                || bits_value(self.instr_k.val()) == 0);
        self.done.next = last_write || empty_accept;
        let (block, step_g, group_g) = (v(&self.block), v(&self.step_g), v(&self.group_g));
        let sh = *self.shape;
        for r in 0..sh.rows {
            self.act_address[r].next = w(v(&self.act_base[r]) + block);
            for c in 0..sh.cols {
                let (q, g) = (r * sh.cols + c, v(&self.gbase[r]) + c as u64);
                self.weight_address[q].next = w(step_g + g);
                self.scale_address[q].next = w(group_g + g);
                self.step_valid[q].next = self.r_valid[q].val();
            }
        }
        self.result_address.next = self.written.val();
        self.step_first.next = self.r_first.val();
        self.step_last.next = self.r_last.val();
        self.step_group_first.next = self.r_gfirst.val();
        self.step_group_last.next = self.r_glast.val();
        for (to, from) in self.step_shift_add.iter_mut().zip(&self.r_shift) {
            to.next = from.val();
        }
        self.step_segment_log2.next = self.r_seg.val();
    }

    fn verilog(&self) -> String {
        let sh = *self.shape;
        let mut text = String::new();
        let o = &mut text;
        let levels = sh.levels;
        // Instruction decode (the same arithmetic as `Config::new`).
        let _ = writeln!(
            o,
            "wire [2:0] cfg_seg = (instr_nm_log2 < 3'd{levels}) ? instr_nm_log2 : 3'd{levels};"
        );
        if sh.pack {
            let _ = writeln!(o, "wire cfg_pack = instr_pack$0 & (instr_nm_log2 >= 3'd4);");
            let _ = writeln!(
                o,
                "wire [2:0] cfg_s_log2 = 3'd{levels} - cfg_seg + {{2'd0, cfg_pack}};"
            );
        } else {
            let _ = writeln!(o, "wire [2:0] cfg_s_log2 = 3'd{levels} - cfg_seg;");
        }
        let _ = writeln!(o, "wire [2:0] cfg_spb_log2 = (instr_nm_log2 > 3'd{levels}) ? instr_nm_log2 - 3'd{levels} : 3'd0;");
        let _ = writeln!(
            o,
            "wire [15:0] cfg_s_mask = ({{15'd0, 1'b1}} << cfg_s_log2) - 16'd1;"
        );
        let _ = writeln!(o, "wire [15:0] cfg_groups = (instr_n >> cfg_s_log2) + {{15'd0, |(instr_n & cfg_s_mask)}};");
        let _ = writeln!(
            o,
            "wire [15:0] cfg_kblocks = {{4'd0, instr_k[15:4]}} + {{15'd0, |instr_k[3:0]}};"
        );
        let _ = writeln!(o, "wire [15:0] cfg_gblocks = (instr_group == 16'd0) ? cfg_kblocks : {{4'd0, instr_group[15:4]}};");
        let _ = writeln!(
            o,
            "wire [15:0] cfg_spb_last = ({{15'd0, 1'b1}} << cfg_spb_log2) - 16'd1;"
        );
        let _ = writeln!(
            o,
            "wire [15:0] cfg_spi_last = (cfg_kblocks << cfg_spb_log2) - 16'd1;"
        );
        let _ = writeln!(
            o,
            "wire [15:0] cfg_spg_last = (cfg_gblocks << cfg_spb_log2) - 16'd1;"
        );
        let _ = writeln!(
            o,
            "wire cfg_empty = (instr_m == 16'd0) | (instr_n == 16'd0) | (instr_k == 16'd0);"
        );
        let _ = writeln!(o, "wire is_ready = ~running & (written == issued);");
        let _ = writeln!(o, "wire accept = start & is_ready & ~reset;");
        let _ = writeln!(o, "wire at_step_last = step == c_spi_last;");
        let _ = writeln!(
            o,
            "wire at_step_glast = (gstep == c_spg_last) | at_step_last;"
        );
        // Slot chains: at acceptance from zero, at a pass end from the last PE row's slot.
        let cols = sh.cols;
        for (prefix, groups, kblocks) in [
            ("init", "cfg_groups", "cfg_kblocks"),
            ("next", "c_groups", "c_kblocks"),
        ] {
            for q in 0..sh.rows {
                let (pr, pg, pa) = if prefix == "init" && q == 0 {
                    let _ = writeln!(o, "wire [15:0] {prefix}_row_0 = 16'd0;");
                    let _ = writeln!(o, "wire [15:0] {prefix}_group_0 = 16'd0;");
                    let _ = writeln!(o, "wire [15:0] {prefix}_act_0 = 16'd0;");
                    continue;
                } else if q == 0 {
                    let l = sh.rows - 1;
                    (
                        format!("row${l}"),
                        format!("gbase${l}"),
                        format!("act_base${l}"),
                    )
                } else {
                    (
                        format!("{prefix}_row_{}", q - 1),
                        format!("{prefix}_group_{}", q - 1),
                        format!("{prefix}_act_{}", q - 1),
                    )
                };
                let _ = writeln!(
                    o,
                    "wire {prefix}_wrap_{q} = ({{1'b0, {pg}}} + 17'd{cols}) >= {{1'b0, {groups}}};"
                );
                let _ = writeln!(
                    o,
                    "wire [15:0] {prefix}_row_{q} = {prefix}_wrap_{q} ? {pr} + 16'd1 : {pr};"
                );
                let _ = writeln!(
                    o,
                    "wire [15:0] {prefix}_group_{q} = {prefix}_wrap_{q} ? 16'd0 : {pg} + 16'd{cols};"
                );
                let _ = writeln!(
                    o,
                    "wire [15:0] {prefix}_act_{q} = {prefix}_wrap_{q} ? {pa} + {kblocks} : {pa};"
                );
            }
        }
        let _ = writeln!(o, "always @(*) begin");
        let _ = writeln!(o, "    ready = is_ready;");
        let _ = writeln!(o, "    done = (pe_out_valid & ~running & ((written + 16'd1) == issued)) | (accept & cfg_empty);");
        for r in 0..sh.rows {
            let _ = writeln!(o, "    act_address${r} = act_base${r} + block;");
            for c in 0..cols {
                let q = r * cols + c;
                let _ = writeln!(o, "    weight_address${q} = step_g + gbase${r} + 16'd{c};");
                let _ = writeln!(o, "    scale_address${q} = group_g + gbase${r} + 16'd{c};");
                let _ = writeln!(o, "    step_valid${q} = r_valid${q};");
            }
        }
        let _ = writeln!(o, "    result_address = written;");
        for (port, reg) in [
            ("step_first", "r_first"),
            ("step_last", "r_last"),
            ("step_group_first", "r_gfirst"),
            ("step_group_last", "r_glast"),
            ("step_segment_log2", "r_seg"),
        ] {
            let _ = writeln!(o, "    {port} = {reg};");
        }
        if sh.mixed {
            let _ = writeln!(o, "    step_shift_add$0 = r_shift$0;");
        }
        let _ = writeln!(o, "end");
        // Registers.
        let _ = writeln!(o, "always @(posedge clock) begin");
        let _ = writeln!(o, "    if (pe_out_valid) written <= written + 16'd1;");
        let _ = writeln!(o, "    result_pe <= host_result_pe;");
        for q in 0..sh.rows * cols {
            let (r, c) = (q / cols, q % cols);
            let _ = writeln!(o, "    r_valid${q} <= running & (row${r} < c_m) & (({{1'b0, gbase${r}}} + 17'd{c}) < {{1'b0, c_groups}}) & ~reset;");
        }
        let _ = writeln!(o, "    r_first <= step == 16'd0;");
        let _ = writeln!(o, "    r_last <= at_step_last;");
        let _ = writeln!(o, "    r_gfirst <= gstep == 16'd0;");
        let _ = writeln!(o, "    r_glast <= at_step_glast;");
        let _ = writeln!(o, "    r_seg <= c_seg;");
        if sh.mixed {
            let _ = writeln!(o, "    r_shift$0 <= c_shift$0;");
        }
        let zero_steps = "        step <= 16'd0;\n        block <= 16'd0;\n        sub <= 16'd0;\n        gstep <= 16'd0;\n        step_g <= 16'd0;\n        group_g <= 16'd0;\n";
        let _ = writeln!(o, "    if (accept) begin");
        for (c, cfg) in [
            ("c_m", "instr_m"),
            ("c_groups", "cfg_groups"),
            ("c_kblocks", "cfg_kblocks"),
            ("c_spb_last", "cfg_spb_last"),
            ("c_spi_last", "cfg_spi_last"),
            ("c_spg_last", "cfg_spg_last"),
            ("c_seg", "cfg_seg"),
        ] {
            let _ = writeln!(o, "        {c} <= {cfg};");
        }
        if sh.mixed {
            let _ = writeln!(o, "        c_shift$0 <= instr_shift_add$0;");
        }
        let _ = writeln!(o, "        running <= ~cfg_empty;");
        let _ = writeln!(o, "        issued <= 16'd0;");
        let _ = writeln!(o, "        written <= 16'd0;");
        o.push_str(zero_steps);
        for r in 0..sh.rows {
            let _ = writeln!(o, "        row${r} <= init_row_{r};");
            let _ = writeln!(o, "        gbase${r} <= init_group_{r};");
            let _ = writeln!(o, "        act_base${r} <= init_act_{r};");
        }
        let _ = writeln!(o, "    end else if (running) begin");
        let _ = writeln!(o, "        if (at_step_last) begin");
        let _ = writeln!(o, "            issued <= issued + 16'd1;");
        o.push_str(&zero_steps.replace("        ", "            "));
        for r in 0..sh.rows {
            let _ = writeln!(o, "            row${r} <= next_row_{r};");
            let _ = writeln!(o, "            gbase${r} <= next_group_{r};");
            let _ = writeln!(o, "            act_base${r} <= next_act_{r};");
        }
        let _ = writeln!(o, "            if (next_row_0 >= c_m) running <= 1'b0;");
        let _ = writeln!(o, "        end else begin");
        let _ = writeln!(o, "            step <= step + 16'd1;");
        let _ = writeln!(o, "            step_g <= step_g + c_groups;");
        let _ = writeln!(o, "            if (sub == c_spb_last) begin");
        let _ = writeln!(o, "                sub <= 16'd0;");
        let _ = writeln!(o, "                block <= block + 16'd1;");
        let _ = writeln!(o, "            end else begin");
        let _ = writeln!(o, "                sub <= sub + 16'd1;");
        let _ = writeln!(o, "            end");
        let _ = writeln!(o, "            if (at_step_glast) begin");
        let _ = writeln!(o, "                gstep <= 16'd0;");
        let _ = writeln!(o, "                group_g <= group_g + c_groups;");
        let _ = writeln!(o, "            end else begin");
        let _ = writeln!(o, "                gstep <= gstep + 16'd1;");
        let _ = writeln!(o, "            end");
        let _ = writeln!(o, "        end");
        let _ = writeln!(o, "    end");
        let _ = writeln!(o, "    if (reset) begin");
        let _ = writeln!(o, "        running <= 1'b0;");
        let _ = writeln!(o, "        issued <= 16'd0;");
        let _ = writeln!(o, "        written <= 16'd0;");
        let _ = writeln!(o, "    end");
        let _ = writeln!(o, "end");
        text
    }
}

impl Logic for Controller {
    fn update(&mut self) {
        if self.clock.pos_edge() {
            self.clock_edge();
        }
        self.combinational();
    }

    fn connect(&mut self) {
        for s in [
            &mut self.ready,
            &mut self.done,
            &mut self.step_first,
            &mut self.step_last,
            &mut self.step_group_first,
            &mut self.step_group_last,
        ] {
            s.connect();
        }
        self.step_segment_log2.connect();
        self.result_pe.connect();
        self.result_address.connect();
        for v in [
            &mut self.act_address,
            &mut self.weight_address,
            &mut self.scale_address,
        ] {
            v.iter_mut().for_each(|x| x.connect());
        }
        self.step_valid.iter_mut().for_each(|x| x.connect());
        for s in [
            &mut self.c_m,
            &mut self.c_groups,
            &mut self.c_kblocks,
            &mut self.c_spb_last,
            &mut self.c_spi_last,
            &mut self.c_spg_last,
            &mut self.step,
            &mut self.block,
            &mut self.sub,
            &mut self.gstep,
            &mut self.step_g,
            &mut self.group_g,
            &mut self.issued,
            &mut self.written,
        ] {
            s.connect();
        }
        for v in [&mut self.row, &mut self.gbase, &mut self.act_base] {
            v.iter_mut().for_each(|x| x.connect());
        }
        for s in [
            &mut self.running,
            &mut self.r_first,
            &mut self.r_last,
            &mut self.r_gfirst,
            &mut self.r_glast,
        ] {
            s.connect();
        }
        for v in [&mut self.c_shift, &mut self.r_shift] {
            v.iter_mut().for_each(|x| x.connect());
        }
        self.step_shift_add.iter_mut().for_each(|x| x.connect());
        self.r_valid.iter_mut().for_each(|x| x.connect());
        self.c_seg.connect();
        self.r_seg.connect();
        self.instr_pack.iter_mut().for_each(|x| x.connect());
    }

    fn hdl(&self) -> Verilog {
        Verilog::Custom(self.verilog())
    }
}
