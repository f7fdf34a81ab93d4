//! Lint and synthesis of emitted Verilog: Verilator's `--lint-only -Wall` and Yosys, with the
//! resource counts parsed from Yosys's `stat`.

use crate::tools::{run, ToolError};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::path::Path;

/// What Yosys maps the design onto.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SynthTarget {
    /// `synth_xilinx -family xcup` (UltraScale+: DSP48E2, RAMB36E2, URAM288).
    XilinxUltrascalePlus,
    /// `synth` to Yosys's generic gate library (for ASIC targets: cell counts, not area).
    Generic,
}

/// Resources of a synthesised design.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Resources {
    /// DSP slices (DSP48E2).
    pub dsp: u64,
    /// LUTs: logic LUTs plus the LUTs used as distributed RAM and shift registers.
    pub lut: u64,
    /// Of `lut`, those used as distributed RAM or shift registers.
    pub lut_memory: u64,
    /// Flip-flops.
    pub ff: u64,
    /// 36 Kb block RAMs (a RAMB18 counts one half).
    pub bram36: f64,
    /// UltraRAM blocks.
    pub uram: u64,
    /// Every cell by type, as Yosys reports it.
    pub cells: BTreeMap<String, u64>,
}

/// LUTs a Xilinx distributed-RAM or shift-register primitive occupies (UG574).
fn lut_memory_luts(cell: &str) -> Option<u64> {
    Some(match cell {
        "RAM64M8" | "RAM32M16" => 8,
        "RAM64M" | "RAM32M" | "RAM128X1D" | "RAM256X1S" | "RAM256X1D" => 4,
        "RAM64X1D" | "RAM32X1D" | "RAM128X1S" => 2,
        "RAM64X1S" | "RAM32X1S" | "SRL16E" | "SRLC32E" => 1,
        _ => return None,
    })
}

impl Resources {
    /// Counts resources from Yosys's cell table.
    pub fn from_cells(cells: BTreeMap<String, u64>) -> Resources {
        let mut r = Resources::default();
        for (cell, &n) in &cells {
            match cell.as_str() {
                "DSP48E2" | "DSP48E1" => r.dsp += n,
                "FDRE" | "FDSE" | "FDCE" | "FDPE" => r.ff += n,
                "RAMB36E2" | "RAMB36E1" => r.bram36 += n as f64,
                "RAMB18E2" | "RAMB18E1" => r.bram36 += n as f64 / 2.0,
                "URAM288" => r.uram += n,
                c if c.starts_with("LUT") && c[3..].parse::<u32>().is_ok() => r.lut += n,
                c => {
                    if let Some(l) = lut_memory_luts(c) {
                        r.lut += l * n;
                        r.lut_memory += l * n;
                    } else if c.contains("DFF") {
                        r.ff += n;
                    }
                }
            }
        }
        r.cells = cells;
        r
    }
}

/// Parses the cell table of the last `stat` in a Yosys log.
pub fn parse_stat(log: &str) -> BTreeMap<String, u64> {
    let start = log.rfind("Number of cells:").unwrap_or(0);
    let mut cells = BTreeMap::new();
    for line in log[start..].lines().skip(1) {
        let mut f = line.split_whitespace();
        match (f.next(), f.next(), f.next()) {
            (Some(name), Some(count), None) => match count.parse() {
                Ok(n) => {
                    cells.insert(name.to_string(), n);
                }
                Err(_) => break,
            },
            _ => break,
        }
    }
    cells
}

/// Yosys's version line.
pub fn yosys_version() -> Result<String, ToolError> {
    Ok(run(Path::new("."), "yosys", &["-V"])?.trim().to_string())
}

/// Verilator `--lint-only -Wall` over `files` in `dir` (top module `top`); every warning fails.
pub fn lint(dir: &Path, files: &[String]) -> Result<(), ToolError> {
    let mut args = vec!["--lint-only", "-Wall", "--top-module", "top"];
    args.extend(files.iter().map(String::as_str));
    run(dir, "verilator", &args).map(|_| ())
}

/// Synthesises `files` in `dir` (top module `top`) for `target`; the log goes to `log`.
pub fn synthesize(
    dir: &Path,
    files: &[String],
    target: SynthTarget,
    log: &str,
) -> Result<Resources, ToolError> {
    let synth = match target {
        SynthTarget::XilinxUltrascalePlus => "synth_xilinx -family xcup -top top",
        SynthTarget::Generic => "synth -flatten -top top",
    };
    let quoted: Vec<String> = files.iter().map(|f| format!("\"{f}\"")).collect();
    let script = format!("read_verilog {}; {synth}; stat", quoted.join(" "));
    let out = run(dir, "yosys", &["-l", log, "-p", &script])?;
    let cells = parse_stat(&out);
    if cells.is_empty() {
        return Err(ToolError::Failed {
            program: "yosys".into(),
            output: format!("no cell statistics in the log\n{out}"),
        });
    }
    Ok(Resources::from_cells(cells))
}

/// Splits rust-hdl's Verilog into one `(module name, text)` per module, so each file is named
/// after its module.
pub fn split_modules(verilog: &str) -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut rest = verilog;
    while let Some(start) = rest
        .find("\nmodule ")
        .map(|i| i + 1)
        .or_else(|| rest.starts_with("module ").then_some(0))
    {
        let after = &rest[start + "module ".len()..];
        let name_end = after
            .find(|c: char| c == '(' || c == ';' || c.is_whitespace())
            .unwrap_or(after.len());
        let name = after[..name_end].to_string();
        let end = rest[start..]
            .find("endmodule")
            .map(|e| start + e + "endmodule".len())
            .unwrap_or(rest.len());
        out.push((name, format!("{}\n", rest[start..end].trim_end())));
        rest = &rest[end..];
    }
    out
}
