//! A scratchpad bank: `lanes` parallel `W`-bit lanes of `words` words with one synchronous write
//! port and one synchronous read port (a dual-port RAM; reads return the old word when both ports
//! hit the same address). Addresses beyond the depth read zero and ignore writes.
//!
//! The Verilog holds a bank in one memory whose word is all the lanes side by side, so synthesis
//! maps it to as few RAM blocks as its width needs (a memory per lane would take a block each),
//! and marks it with the [`RamStyle`] the engine chose for it (`ram_style`, read by Yosys and
//! Vivado).

use crate::hidden::Hidden;
use rust_hdl::prelude::*;
use std::fmt::Write as _;

/// Address width of every bank port.
pub const ADDRESS_BITS: usize = 16;

/// One bank.
#[derive(LogicBlock)]
pub struct Bank<const W: usize> {
    /// Clock.
    pub clock: Signal<In, Clock>,
    /// Write this cycle.
    pub write_enable: Signal<In, Bit>,
    /// Word written.
    pub write_address: Signal<In, Bits<ADDRESS_BITS>>,
    /// Lanes written.
    pub write_data: Vec<Signal<In, Bits<W>>>,
    /// Word read (its lanes appear on `read_data` after the clock edge).
    pub read_address: Signal<In, Bits<ADDRESS_BITS>>,
    /// Lanes read.
    pub read_data: Vec<Signal<Out, Bits<W>>>,
    memory: Hidden<Memory>,
}

/// Where synthesis places a bank's memory (the `ram_style` attribute).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RamStyle {
    /// Block RAM (BRAM36/BRAM18 on Xilinx parts).
    Block,
    /// Distributed RAM in LUTs (LUTRAM).
    Distributed,
}

impl RamStyle {
    fn attribute(self) -> &'static str {
        match self {
            RamStyle::Block => "block",
            RamStyle::Distributed => "distributed",
        }
    }
}

/// The bank's contents; not a signal, so invisible to rust-hdl's Verilog generator.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Memory {
    words: usize,
    style: RamStyle,
    cells: Vec<u64>,
}

impl<const W: usize> Bank<W> {
    /// A bank of `words` (a power of two up to 2^16) × `lanes` lanes, placed in `style` RAM.
    pub fn new(words: usize, lanes: usize, style: RamStyle) -> Self {
        assert!(words.is_power_of_two() && (2..=1 << ADDRESS_BITS).contains(&words) && W <= 64);
        Bank {
            clock: Default::default(),
            write_enable: Default::default(),
            write_address: Default::default(),
            write_data: (0..lanes).map(|_| Default::default()).collect(),
            read_address: Default::default(),
            read_data: (0..lanes).map(|_| Default::default()).collect(),
            memory: Hidden(Memory {
                words,
                style,
                cells: vec![0; words * lanes],
            }),
        }
    }

    fn address_bits(&self) -> usize {
        self.memory.words.ilog2() as usize
    }
}

impl<const W: usize> Logic for Bank<W> {
    fn update(&mut self) {
        if !self.clock.pos_edge() {
            return;
        }
        let lanes = self.read_data.len();
        let words = self.memory.words;
        let ra = crate::pe::bits_value(self.read_address.val()) as usize;
        for j in 0..lanes {
            let v = if ra < words {
                self.memory.cells[ra * lanes + j]
            } else {
                0
            };
            self.read_data[j].next = Bits::from(v);
        }
        let wa = crate::pe::bits_value(self.write_address.val()) as usize;
        if self.write_enable.val() && wa < words {
            for j in 0..lanes {
                self.memory.cells[wa * lanes + j] = crate::pe::bits_value(self.write_data[j].val());
            }
        }
    }

    fn connect(&mut self) {
        self.read_data.iter_mut().for_each(|x| x.connect());
    }

    fn hdl(&self) -> Verilog {
        let a = self.address_bits();
        let top = ADDRESS_BITS - 1;
        let mut v = String::new();
        let w = &mut v;
        let (rin, win) = if a == ADDRESS_BITS {
            ("1'b1".to_string(), "1'b1".to_string())
        } else {
            (
                format!("(read_address[{top}:{a}] == {}'d0)", ADDRESS_BITS - a),
                format!("(write_address[{top}:{a}] == {}'d0)", ADDRESS_BITS - a),
            )
        };
        let _ = writeln!(w, "wire read_in_range = {rin};");
        let _ = writeln!(w, "wire write_in_range = {win};");
        let lanes = self.read_data.len();
        let _ = writeln!(
            w,
            "(* ram_style = \"{}\" *) reg [{}:0] memory [0:{}];",
            self.memory.style.attribute(),
            lanes * W - 1,
            self.memory.words - 1
        );
        let word = (0..lanes)
            .rev()
            .map(|j| format!("write_data${j}"))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = writeln!(
            w,
            "wire [{}:0] read_word = memory[read_address[{}:0]];",
            lanes * W - 1,
            a - 1
        );
        let _ = writeln!(w, "always @(posedge clock) begin");
        for j in 0..lanes {
            let _ = writeln!(
                w,
                "    read_data${j} <= read_in_range ? read_word[{}:{}] : {W}'d0;",
                (j + 1) * W - 1,
                j * W
            );
        }
        let _ = writeln!(
            w,
            "    if (write_enable & write_in_range) memory[write_address[{}:0]] <= {{{word}}};",
            a - 1
        );
        let _ = writeln!(w, "end");
        Verilog::Custom(v)
    }
}
