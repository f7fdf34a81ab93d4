//! Verilog testbenches: the emitted PE driven from a vector file under Icarus or Verilator, its
//! results written to a file with the cycle they appeared on.

use crate::rusthdl::{PeRun, Slot};
use crate::tools::{run, ToolError};
use std::fmt::Write as _;
use std::path::Path;
use tessera_hdl::golden::{sign_extend, PeStep};
use tessera_hdl::params::BLOCK;
use tessera_hdl::pe::SEGMENT_BITS;
use tessera_hdl::Pe;

/// A Verilog simulator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Simulator {
    /// Icarus Verilog (`iverilog` + `vvp`).
    Icarus,
    /// Verilator (`--binary --timing`).
    Verilator,
}

/// The PE's input ports in vector-file order (most significant first) with their widths.
fn input_ports(lanes: usize, segments: usize) -> Vec<(String, usize)> {
    let mut ports: Vec<(String, usize)> = [
        "in_valid",
        "in_first",
        "in_last",
        "in_group_first",
        "in_group_last",
        "in_shift_add",
    ]
    .iter()
    .map(|n| (n.to_string(), 1))
    .collect();
    ports.push(("in_segment_log2".into(), SEGMENT_BITS));
    ports.extend((0..BLOCK).map(|k| (format!("in_act${k}"), 8)));
    ports.extend((0..lanes).map(|j| (format!("in_weight${j}"), 8)));
    ports.extend((0..lanes).map(|j| (format!("in_index${j}"), 4)));
    ports.extend((0..segments).map(|j| (format!("in_scale${j}"), 16)));
    ports
}

fn slot_values(slot: &Slot, lanes: usize, segments: usize) -> Vec<u64> {
    let Some(st) = slot else {
        return vec![0; input_ports(lanes, segments).len()];
    };
    let PeStep {
        first,
        last,
        group_first,
        group_last,
        shift_add,
        segment_log2,
        act,
        weight,
        index,
        scale,
    } = st;
    let mut v: Vec<u64> = [true, *first, *last, *group_first, *group_last, *shift_add]
        .iter()
        .map(|&b| b as u64)
        .collect();
    v.push(*segment_log2 as u64);
    v.extend(act.iter().map(|&a| a as u8 as u64));
    v.extend(weight.iter().map(|&w| w as u8 as u64));
    v.extend(index.iter().map(|&i| i as u64));
    v.extend(scale.iter().map(|&s| s as u16 as u64));
    v
}

/// One vector-file line: the fields packed most significant first, in hex.
fn pack(values: &[u64], ports: &[(String, usize)]) -> String {
    let mut bits = Vec::new();
    for (&v, (_, w)) in values.iter().zip(ports) {
        for b in (0..*w).rev() {
            bits.push(v >> b & 1 == 1);
        }
    }
    while bits.len() % 4 != 0 {
        bits.insert(0, false);
    }
    bits.chunks(4)
        .map(|c| {
            let n = c.iter().fold(0u32, |acc, &b| acc << 1 | b as u32);
            char::from_digit(n, 16).unwrap()
        })
        .collect()
}

/// The vector file and the testbench module for `slots` on a PE of this size.
pub fn pe_testbench(pe: &Pe, slots: &[Slot]) -> (String, String) {
    let (lanes, segments) = (pe.lanes(), pe.segments());
    let ports = input_ports(lanes, segments);
    let width: usize = ports.iter().map(|(_, w)| w).sum();
    let mut hex = String::new();
    for slot in slots {
        let _ = writeln!(hex, "{}", pack(&slot_values(slot, lanes, segments), &ports));
    }
    let cycles = slots.len() + pe.latency() + 2;
    let mut tb = String::new();
    let w = &mut tb;
    let _ = writeln!(w, "`timescale 1ns/1ps");
    let _ = writeln!(w, "module tb;");
    let _ = writeln!(w, "reg clock = 1'b0;");
    let _ = writeln!(w, "reg reset = 1'b1;");
    let _ = writeln!(w, "always #5 clock = ~clock;");
    let _ = writeln!(
        w,
        "reg [{}:0] vectors [0:{}];",
        width - 1,
        slots.len().max(1) - 1
    );
    let _ = writeln!(w, "reg [{}:0] stimulus = {width}'d0;", width - 1);
    let mut hi = width;
    for (name, pw) in &ports {
        let _ = writeln!(
            w,
            "wire [{}:0] \\{name} = stimulus[{}:{}];",
            pw - 1,
            hi - 1,
            hi - pw
        );
        hi -= pw;
    }
    let _ = writeln!(w, "wire out_valid;");
    for j in 0..segments {
        let _ = writeln!(w, "wire [47:0] \\out_result${j} ;");
    }
    let _ = write!(w, "top dut(.clock(clock), .reset(reset)");
    for (name, _) in &ports {
        let _ = write!(w, ", .{name}(\\{name} )");
    }
    let _ = write!(w, ", .out_valid(out_valid)");
    for j in 0..segments {
        let _ = write!(w, ", .out_result${j}(\\out_result${j} )");
    }
    let _ = writeln!(w, ");");
    let _ = writeln!(w, "integer cycle;");
    let _ = writeln!(w, "integer results;");
    let _ = writeln!(w, "initial begin");
    let _ = writeln!(w, "    if ($test$plusargs(\"vcd\")) begin");
    let _ = writeln!(w, "        $dumpfile(\"waves.vcd\");");
    let _ = writeln!(w, "        $dumpvars(0, tb);");
    let _ = writeln!(w, "    end");
    if !slots.is_empty() {
        let _ = writeln!(w, "    $readmemh(\"vectors.hex\", vectors);");
    }
    let _ = writeln!(w, "    results = $fopen(\"results.txt\", \"w\");");
    let _ = writeln!(w, "    @(negedge clock);");
    let _ = writeln!(w, "    reset = 1'b0;");
    let _ = writeln!(
        w,
        "    for (cycle = 0; cycle < {cycles}; cycle = cycle + 1) begin"
    );
    let _ = writeln!(
        w,
        "        stimulus = (cycle < {}) ? vectors[cycle] : {width}'d0;",
        slots.len()
    );
    let _ = writeln!(w, "        @(negedge clock);");
    let _ = write!(w, "        if (out_valid) $fwrite(results, \"%0d");
    for _ in 0..segments {
        let _ = write!(w, " %h");
    }
    let _ = write!(w, "\\n\", cycle");
    for j in 0..segments {
        let _ = write!(w, ", \\out_result${j} ");
    }
    let _ = writeln!(w, ");");
    let _ = writeln!(w, "    end");
    let _ = writeln!(w, "    $fclose(results);");
    let _ = writeln!(w, "    $finish;");
    let _ = writeln!(w, "end");
    let _ = writeln!(w, "endmodule");
    (hex, tb)
}

/// Parses the testbench's results file.
pub fn parse_results(text: &str) -> Vec<(u64, Vec<i64>)> {
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let mut fields = l.split_whitespace();
            let cycle = fields.next().unwrap().parse().unwrap();
            let values = fields
                .map(|h| sign_extend(u64::from_str_radix(h, 16).unwrap(), 48))
                .collect();
            (cycle, values)
        })
        .collect()
}

/// Writes the PE's Verilog (`top.v`), testbench and vectors into `dir`, runs them under
/// `simulator` (with `waves.vcd` when `vcd`), and reads the results back.
pub fn run_pe_verilog(
    pe: &mut Pe,
    slots: &[Slot],
    simulator: Simulator,
    dir: &Path,
    vcd: bool,
) -> Result<PeRun, ToolError> {
    let verilog = tessera_hdl::verilog::emit(pe).map_err(|e| ToolError::Failed {
        program: "rust-hdl".into(),
        output: e.to_string(),
    })?;
    let (hex, tb) = pe_testbench(pe, slots);
    std::fs::create_dir_all(dir).expect("testbench directory");
    for (name, text) in [("top.v", &verilog), ("tb.v", &tb), ("vectors.hex", &hex)] {
        std::fs::write(dir.join(name), text).expect("write testbench file");
    }
    let plusargs: &[&str] = if vcd { &["+vcd"] } else { &[] };
    match simulator {
        Simulator::Icarus => {
            run(
                dir,
                "iverilog",
                &["-g2012", "-o", "tb.vvp", "tb.v", "top.v"],
            )?;
            let mut args = vec!["-n", "tb.vvp"];
            args.extend(plusargs);
            run(dir, "vvp", &args)?;
        }
        Simulator::Verilator => {
            let mut args = vec![
                "--binary",
                "--timing",
                "-j",
                "2",
                "-Wno-fatal",
                "-Wno-lint",
                "-Wno-style",
                "--top-module",
                "tb",
                "-Mdir",
                "obj",
                "-o",
                "tb",
            ];
            if vcd {
                args.push("--trace");
            }
            args.extend(["tb.v", "top.v"]);
            run(dir, "verilator", &args)?;
            run(dir, "obj/tb", plusargs)?;
        }
    }
    let text = std::fs::read_to_string(dir.join("results.txt")).unwrap_or_default();
    let last_steps = slots
        .iter()
        .enumerate()
        .filter(|(_, s)| s.as_ref().is_some_and(|s| s.last))
        .map(|(i, _)| i as u64)
        .collect();
    Ok(PeRun {
        results: parse_results(&text),
        last_steps,
    })
}
