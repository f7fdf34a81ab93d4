//! Simulator: will run ISA programs in an event-driven, cycle-accurate engine (decoupled units,
//! dependency tokens, per-channel DRAM timing, energy per event) and report cycles, bandwidth and
//! energy. Depends on `tessera-spec` only; never on the compiler or scheduler.
