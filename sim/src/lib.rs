//! Simulator: runs ISA programs in an event-driven, cycle-accurate engine (decoupled units,
//! dependency tokens, per-channel DRAM timing, energy per event) and reports cycles, bandwidth and
//! energy. Depends on `tessera-spec` only; never on the compiler or scheduler.
//!
//! [`check`] rejects ill-formed programs before they run; [`engine`] runs them; [`dram`] models
//! each off-chip channel burst by burst.

pub mod check;
pub mod dram;
pub mod engine;

pub use check::ProgramError;
pub use dram::DramMode;
pub use engine::{simulate, simulate_with, SimOptions, SimReport};
