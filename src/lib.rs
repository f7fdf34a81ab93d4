//! The `tessera` tool as a library: input resolution (files or presets), the run pipeline, and one
//! module per subcommand. `main.rs` only parses arguments and reports errors.

pub mod cmd_asm;
pub mod cmd_calibrate;
pub mod cmd_check;
pub mod cmd_compile;
pub mod cmd_graph;
pub mod cmd_run;
pub mod cmd_schedule;
pub mod cmd_sim;
pub mod cmd_sweep;
pub mod cmd_verilog;
pub mod inputs;
pub mod pipeline;
pub mod progress;
pub mod sweep;

/// How much a command prints besides what was explicitly requested.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verbosity {
    /// Only requested output and errors.
    Quiet,
    /// Summary tables.
    Normal,
    /// Summary tables and per-operator breakdowns.
    Verbose,
}
