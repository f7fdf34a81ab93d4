//! Compiler: lowers a model to the operator graph ([`frontend`]), and (in later stages) tiles every
//! operator onto the PE array and emits ISA programs per length bucket.
pub mod frontend;
