//! Simulator: runs ISA programs in an event-driven, cycle-accurate engine (decoupled units,
//! dependency tokens, per-channel DRAM timing, energy per event) and reports cycles, bandwidth and
//! energy. Depends on `tessera-spec` only; never on the compiler or scheduler.
//!
//! [`check`] rejects ill-formed programs before they run; [`engine`] runs them; [`dram`] models
//! each off-chip channel burst by burst; [`functional`] computes the data in functional mode and
//! [`golden`] is the independent reference it is checked against.

pub mod check;
pub mod dram;
pub mod engine;
pub mod functional;
pub mod golden;
pub mod hazard;

pub use check::ProgramError;
pub use dram::DramMode;
pub use engine::{
    simulate, simulate_functional, simulate_with, EnergyReport, Repeat, SimOptions, SimReport,
    UnitStats,
};
pub use functional::DataState;
