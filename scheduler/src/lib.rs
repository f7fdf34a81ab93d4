//! Scheduler: plans operator order, scratchpad addresses and tensor spills for an operator graph.
//! Depends on `tessera-spec` only.
//!
//! Landed so far: the problem extracted from a graph ([`problem`]), the plan format and its
//! independent validator ([`plan`]), the baselines ([`mod@baseline`]) and the ILP in the manner of
//! COSMA in fixed-order mode with divide and conquer ([`ilp`]) and the minimum-peak mode
//! ([`peak`]), and joint order + allocation for small graphs ([`joint`]).

pub mod baseline;
pub mod ilp;
pub mod joint;
pub mod peak;
pub mod plan;
pub mod problem;

pub use baseline::{baseline, Eviction};
pub use plan::{replay, validate, Arrival, Plan, Replay, Residency};
pub use problem::{Problem, ScheduleError};
