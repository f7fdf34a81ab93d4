//! Simulator: runs ISA programs in an event-driven, cycle-accurate engine (decoupled units,
//! dependency tokens, per-channel DRAM timing, energy per event) and reports cycles, bandwidth and
//! energy. Depends on `tessera-spec` only; never on the compiler or scheduler.
//!
//! Landed so far: [`dram`], the burst-by-burst model of one off-chip memory channel.

pub mod dram;
