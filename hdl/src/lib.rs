//! Hardware: the accelerator's matrix engine described in rust-hdl from the same accelerator spec
//! the simulator uses (mixed-precision PEs on sparse DSP chains), emitted as synthesizable
//! Verilog, with golden models the testbenches check it against.

pub mod bank;
pub mod controller;
pub mod engine;
pub mod golden;
pub mod hidden;
pub mod params;
pub mod pe;
pub mod verilog;

pub use engine::{EngineOptions, MatrixEngine};
pub use params::EngineParams;
pub use pe::Pe;
