//! Built-in models: the `config.json` files under `examples/models/`, compiled in.

use super::ModelConfig;
use crate::error::SpecError;

/// Names accepted by [`preset`].
pub const PRESET_NAMES: &[&str] = &[];

/// The built-in model called `name`.
pub fn preset(name: &str) -> Result<ModelConfig, SpecError> {
    Err(SpecError::one(
        format!("preset:{name}"),
        crate::error::Problem::new("", "not implemented yet", ""),
    ))
}
