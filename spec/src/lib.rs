//! Tessera's shared vocabulary: units, accelerator / model / compression / scenario specs, the
//! operator graph types, GPU baselines and the one analytical timing/energy model that the
//! compiler, scheduler and simulator all call. Nothing here does file I/O.

pub mod accel;
pub mod analytical;
pub mod compression;
pub mod error;
pub mod gpu;
pub mod graph;
pub mod isa;
pub mod model;
pub mod resource_model;
pub mod scenario;
pub mod units;

pub use error::{Problem, SpecError};
