//! Testbenches for the generated hardware: rust-hdl simulation and Icarus/Verilator runs of the
//! emitted Verilog, checked against the golden models in `tessera_hdl::golden`.

pub mod agreement;
pub mod calibrate;
pub mod matrix;
pub mod rusthdl;
pub mod synth;
pub mod tools;
pub mod vectors;
pub mod verilog_tb;
