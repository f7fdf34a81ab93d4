//! Compiler: lowers a model to the operator graph ([`frontend`]), operators to ISA programs
//! ([`lower`]: matrix products whose weights, keys or values stream from off-chip memory) and
//! whole decode steps to one program ([`program`]). To come: prefill tiling, fusion, tiling with
//! the shared cost model, and programs per length bucket.
pub mod frontend;
pub mod kv;
pub mod lower;
pub mod program;
