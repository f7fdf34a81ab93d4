//! Compiler: lowers a model to the operator graph ([`frontend`]), operators to ISA programs
//! ([`lower`]: matrix products whose weights, keys or values stream from off-chip memory; [`kv`]:
//! the KV cache's layout and decode attention over it) and whole passes, a prefill or one decode
//! step, to one program per length bucket ([`program`]), whose activations [`place`] puts on chip.
pub mod frontend;
pub mod kv;
pub mod lower;
pub mod place;
pub mod program;
