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

/// Cycles beyond the tile loop's worst case an engine testbench waits for `done` before it gives
/// up on an instruction.
const DONE_SLACK: u64 = 1 << 13;

/// The PE's input ports in vector-file order (most significant first) with their widths.
fn input_ports(pe: &Pe) -> Vec<(String, usize)> {
    let (lanes, segments, pack) = (pe.lanes(), pe.segments(), pe.pack());
    let mut ports: Vec<(String, usize)> = [
        "in_valid",
        "in_first",
        "in_last",
        "in_group_first",
        "in_group_last",
    ]
    .iter()
    .map(|n| (n.to_string(), 1))
    .collect();
    if pe.mixed() {
        ports.push(("in_shift_add$0".into(), 1));
    }
    ports.push(("in_segment_log2".into(), SEGMENT_BITS));
    ports.extend((0..BLOCK).map(|k| (format!("in_act${k}"), 8)));
    ports.extend((0..lanes).map(|j| (format!("in_weight${j}"), 8)));
    if pack == 2 {
        ports.extend((0..lanes).map(|j| (format!("in_weight_b${j}"), 8)));
    }
    ports.extend((0..lanes).map(|j| (format!("in_index${j}"), 4)));
    ports.extend((0..segments).map(|j| (format!("in_scale${j}"), tessera_hdl::pe::SCALE_BITS)));
    ports
}

fn slot_values(slot: &Slot, pe: &Pe) -> Vec<u64> {
    let (lanes, pack) = (pe.lanes(), pe.pack());
    let Some(st) = slot else {
        return vec![0; input_ports(pe).len()];
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
        weight_b,
        index,
        scale,
        zero,
    } = st;
    let mut v: Vec<u64> = [true, *first, *last, *group_first, *group_last]
        .iter()
        .map(|&b| b as u64)
        .collect();
    if pe.mixed() {
        v.push(*shift_add as u64);
    }
    v.push(*segment_log2 as u64);
    v.extend(act.iter().map(|&a| a as u8 as u64));
    v.extend(weight.iter().map(|&w| w as u8 as u64));
    if pack == 2 {
        v.extend((0..lanes).map(|j| weight_b.get(j).map_or(0, |&w| w as u8 as u64)));
    }
    v.extend(index.iter().map(|&i| i as u64));
    v.extend(
        scale
            .iter()
            .zip(zero)
            .map(|(&s, &z)| (z as u8 as u64) << 16 | s as u16 as u64),
    );
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
    let segments = pe.segments();
    let ports = input_ports(pe);
    let width: usize = ports.iter().map(|(_, w)| w).sum();
    let mut hex = String::new();
    for slot in slots {
        let values = slot_values(slot, pe);
        let _ = writeln!(hex, "{}", pack(&values, &ports));
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
    simulate(dir, simulator, vcd)?;
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

/// The script file and the testbench module that executes it on the emitted matrix engine.
pub fn engine_testbench(
    g: crate::matrix::Geometry,
    script: &[crate::matrix::Command],
) -> (String, String) {
    use crate::matrix::Command;
    let weight_lanes = g.lanes * g.pack;
    let data_bits = [BLOCK * 8, weight_lanes * 12, g.segments * 24, 69]
        .into_iter()
        .max()
        .unwrap();
    let width = 4 + 16 + data_bits;
    let mut hex = String::new();
    for cmd in script {
        let (op, addr, lanes, lane_bits): (u64, u64, Vec<u64>, usize) = match cmd {
            Command::WriteAct(a, l) => (1, *a, l.clone(), 8),
            Command::WriteWeight(a, l) => (2, *a, l.clone(), 12),
            Command::WriteScale(a, l) => (3, *a, l.clone(), 24),
            Command::Run([m, n, k, nm, group, shift, pack]) => {
                // {pack, m, n, k, nm_log2, group, shift} packed into the low 69 bits, shift
                // lowest.
                let fields = [
                    (*shift, 1),
                    (*group, 16),
                    (*nm, 3),
                    (*k, 16),
                    (*n, 16),
                    (*m, 16),
                    (*pack, 1),
                ];
                let mut bits = vec![false; data_bits];
                let mut at = 0;
                for (v, w) in fields {
                    for b in 0..w {
                        bits[at + b] = v >> b & 1 == 1;
                    }
                    at += w;
                }
                let _ = writeln!(hex, "{}", hex_line(4, 0, &bits));
                continue;
            }
            Command::Read(pe, a) => (5, *a, vec![*pe], 16),
        };
        let mut bits = vec![false; data_bits];
        for (i, v) in lanes.iter().enumerate() {
            for b in 0..lane_bits {
                bits[i * lane_bits + b] = v >> b & 1 == 1;
            }
        }
        let _ = writeln!(hex, "{}", hex_line(op, addr, &bits));
    }
    let mut tb = String::new();
    let o = &mut tb;
    let _ = writeln!(o, "`timescale 1ns/1ps");
    let _ = writeln!(o, "module tb;");
    let _ = writeln!(o, "reg clock = 1'b0;");
    let _ = writeln!(o, "always #5 clock = ~clock;");
    let _ = writeln!(o, "reg reset = 1'b1;");
    let _ = writeln!(o, "reg start = 1'b0;");
    let _ = writeln!(
        o,
        "reg [15:0] instr_m = 16'd0, instr_n = 16'd0, instr_k = 16'd0, instr_group = 16'd0;"
    );
    let _ = writeln!(o, "reg [2:0] instr_nm_log2 = 3'd0;");
    let _ = writeln!(o, "reg instr_shift_add = 1'b0;");
    let _ = writeln!(o, "reg instr_pack = 1'b0;");
    let _ = writeln!(
        o,
        "reg host_act_write = 1'b0, host_weight_write = 1'b0, host_scale_write = 1'b0;"
    );
    let _ = writeln!(o, "reg [15:0] host_act_address = 16'd0, host_weight_address = 16'd0, host_scale_address = 16'd0;");
    let _ = writeln!(
        o,
        "reg [15:0] host_result_pe = 16'd0, host_result_address = 16'd0;"
    );
    let _ = writeln!(o, "reg [{}:0] host_act_bus = 0;", BLOCK * 8 - 1);
    let _ = writeln!(o, "reg [{}:0] host_weight_bus = 0;", weight_lanes * 12 - 1);
    let _ = writeln!(o, "reg [{}:0] host_scale_bus = 0;", g.segments * 24 - 1);
    let _ = writeln!(o, "wire ready, done;");
    for j in 0..g.segments {
        let _ = writeln!(o, "wire [47:0] host_result_data${j};");
    }
    let _ = write!(
        o,
        "top dut(.clock(clock), .reset(reset), .start(start), .ready(ready), .done(done)"
    );
    for p in [
        "instr_m",
        "instr_n",
        "instr_k",
        "instr_nm_log2",
        "instr_group",
        "host_act_write",
        "host_act_address",
        "host_weight_write",
        "host_weight_address",
        "host_scale_write",
        "host_scale_address",
        "host_result_pe",
        "host_result_address",
    ] {
        let _ = write!(o, ", .{p}({p})");
    }
    for k in 0..BLOCK {
        let _ = write!(
            o,
            ", .host_act_data${k}(host_act_bus[{}:{}])",
            k * 8 + 7,
            k * 8
        );
    }
    for j in 0..g.lanes {
        let _ = write!(
            o,
            ", .host_weight_data${j}(host_weight_bus[{}:{}])",
            j * 12 + 11,
            j * 12
        );
    }
    if g.mixed {
        let _ = write!(o, ", .instr_shift_add$0(instr_shift_add)");
    }
    if g.pack == 2 {
        let _ = write!(o, ", .instr_pack$0(instr_pack)");
        for j in 0..g.lanes {
            let at = (g.lanes + j) * 12;
            let _ = write!(
                o,
                ", .host_weight_b_data${j}(host_weight_bus[{}:{at}])",
                at + 7
            );
        }
    }
    for j in 0..g.segments {
        let _ = write!(
            o,
            ", .host_scale_data${j}(host_scale_bus[{}:{}])",
            j * 24 + 23,
            j * 24
        );
    }
    for j in 0..g.segments {
        let _ = write!(o, ", .host_result_data${j}(host_result_data${j})");
    }
    let _ = writeln!(o, ");");
    let _ = writeln!(
        o,
        "reg [{}:0] script [0:{}];",
        width - 1,
        script.len().max(1) - 1
    );
    let _ = writeln!(o, "reg [{}:0] line;", width - 1);
    let _ = writeln!(o, "integer i, cycles, results;");
    let _ = writeln!(o, "reg [63:0] limit;");
    let _ = writeln!(o, "initial begin");
    let _ = writeln!(
        o,
        "    if ($test$plusargs(\"vcd\")) begin $dumpfile(\"waves.vcd\"); $dumpvars(0, tb); end"
    );
    let _ = writeln!(o, "    $readmemh(\"script.hex\", script);");
    let _ = writeln!(o, "    results = $fopen(\"results.txt\", \"w\");");
    let _ = writeln!(o, "    @(negedge clock);");
    let _ = writeln!(o, "    reset = 1'b0;");
    let _ = writeln!(o, "    for (i = 0; i < {}; i = i + 1) begin", script.len());
    let _ = writeln!(o, "        line = script[i];");
    let _ = writeln!(o, "        case (line[{}:{}])", width - 1, width - 4);
    let addr = format!("line[{}:{}]", width - 5, width - 20);
    let _ = writeln!(o, "        4'd1: begin host_act_write = 1'b1; host_act_address = {addr}; host_act_bus = line[{}:0]; @(negedge clock); host_act_write = 1'b0; end", BLOCK * 8 - 1);
    let _ = writeln!(o, "        4'd2: begin host_weight_write = 1'b1; host_weight_address = {addr}; host_weight_bus = line[{}:0]; @(negedge clock); host_weight_write = 1'b0; end", weight_lanes * 12 - 1);
    let _ = writeln!(o, "        4'd3: begin host_scale_write = 1'b1; host_scale_address = {addr}; host_scale_bus = line[{}:0]; @(negedge clock); host_scale_write = 1'b0; end", g.segments * 24 - 1);
    let _ = writeln!(o, "        4'd4: begin");
    let _ = writeln!(o, "            {{instr_pack, instr_m, instr_n, instr_k, instr_nm_log2, instr_group, instr_shift_add}} = line[68:0];");
    // An engine that is never ready or never signals `done` stops at a bound no tile loop
    // reaches (every output its own pass of 16 steps a block, plus the longest pipeline) rather
    // than hanging.
    let _ = writeln!(
        o,
        "            limit = instr_m * instr_n * ((instr_k + 15) / 16) * 16 + {DONE_SLACK};"
    );
    let _ = writeln!(o, "            start = 1'b1;");
    let _ = writeln!(o, "            cycles = 0;");
    let _ = writeln!(
        o,
        "            while (!ready && cycles < limit) begin @(negedge clock); cycles = cycles + 1; end"
    );
    let _ = writeln!(o, "            @(negedge clock);");
    let _ = writeln!(o, "            start = 1'b0;");
    let _ = writeln!(o, "            cycles = 1;");
    let _ = writeln!(
        o,
        "            while (!done && cycles < limit) begin @(negedge clock); cycles = cycles + 1; end"
    );
    let _ = writeln!(o, "            @(negedge clock);");
    let _ = writeln!(o, "            $fwrite(results, \"C %0d\\n\", cycles);");
    let _ = writeln!(o, "        end");
    let _ = write!(o, "        4'd5: begin host_result_pe = line[15:0]; host_result_address = {addr}; @(negedge clock); $fwrite(results, \"R");
    for _ in 0..g.segments {
        let _ = write!(o, " %h");
    }
    let _ = write!(o, "\\n\"");
    for j in 0..g.segments {
        let _ = write!(o, ", host_result_data${j}");
    }
    let _ = writeln!(o, "); end");
    let _ = writeln!(o, "        default: ;");
    let _ = writeln!(o, "        endcase");
    let _ = writeln!(o, "    end");
    let _ = writeln!(o, "    $fclose(results);");
    let _ = writeln!(o, "    $finish;");
    let _ = writeln!(o, "end");
    let _ = writeln!(o, "endmodule");
    (hex, tb)
}

fn hex_line(op: u64, addr: u64, data: &[bool]) -> String {
    let mut bits: Vec<bool> = (0..4).rev().map(|b| op >> b & 1 == 1).collect();
    bits.extend((0..16).rev().map(|b| addr >> b & 1 == 1));
    bits.extend(data.iter().rev());
    while bits.len() % 4 != 0 {
        bits.insert(0, false);
    }
    bits.chunks(4)
        .map(|c| char::from_digit(c.iter().fold(0u32, |a, &b| a << 1 | b as u32), 16).unwrap())
        .collect()
}

/// Writes the engine's Verilog, the script testbench and its script into `dir`, runs it under
/// `simulator` and reads back what it recorded.
pub fn run_engine_verilog(
    engine: &mut tessera_hdl::MatrixEngine,
    script: &[crate::matrix::Command],
    simulator: Simulator,
    dir: &Path,
    vcd: bool,
) -> Result<crate::matrix::Record, ToolError> {
    let g = crate::matrix::Geometry::of(engine);
    let verilog = tessera_hdl::verilog::emit(engine).map_err(|e| ToolError::Failed {
        program: "rust-hdl".into(),
        output: e.to_string(),
    })?;
    let (hex, tb) = engine_testbench(g, script);
    std::fs::create_dir_all(dir).expect("testbench directory");
    for (name, text) in [("top.v", &verilog), ("tb.v", &tb), ("script.hex", &hex)] {
        std::fs::write(dir.join(name), text).expect("write testbench file");
    }
    simulate(dir, simulator, vcd)?;
    let text = std::fs::read_to_string(dir.join("results.txt")).unwrap_or_default();
    let mut record = crate::matrix::Record::default();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        match f.next() {
            Some("C") => record.cycles.push(f.next().unwrap().parse().unwrap()),
            Some("R") => record.reads.push(
                f.map(|h| sign_extend(u64::from_str_radix(h, 16).unwrap(), 48))
                    .collect(),
            ),
            _ => {}
        }
    }
    Ok(record)
}

/// Compiles and runs `tb.v` with `top.v` in `dir`.
fn simulate(dir: &Path, simulator: Simulator, vcd: bool) -> Result<(), ToolError> {
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
    Ok(())
}
