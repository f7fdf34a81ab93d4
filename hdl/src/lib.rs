//! Hardware: will describe the matrix engine (mixed-precision PEs, sparse DSP chains, PE array,
//! scratchpad banks, controller) in rust-hdl from the same accelerator spec the simulator uses, and
//! emit synthesizable Verilog with a resource report.
