//! Compiler: lowers a model to the operator graph ([`frontend`]) and operators to ISA programs
//! ([`lower`]; so far decode-shaped linear layers). To come: every operator, fusion, tiling with
//! the shared cost model, and programs per length bucket.
pub mod frontend;
pub mod lower;
