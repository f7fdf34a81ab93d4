//! Testbenches: will verify the generated hardware against golden Rust models (rust-hdl simulation,
//! Icarus and Verilator on the emitted Verilog) and check cycle agreement with the simulator.
