//! Compression spec files (TOML) and built-in compression presets.

use super::Compression;
use crate::error::SpecError;

/// Names accepted by [`preset`].
pub const PRESET_NAMES: &[&str] = &[];

/// Parses and validates a compression TOML file's text (`file` names it in errors).
pub fn from_toml_str(_text: &str, file: &str) -> Result<Compression, SpecError> {
    Err(SpecError::one(
        file,
        crate::error::Problem::new("", "not implemented yet", ""),
    ))
}

/// The built-in compression called `name`.
pub fn preset(name: &str) -> Result<Compression, SpecError> {
    Err(SpecError::one(
        format!("preset:{name}"),
        crate::error::Problem::new("", "not implemented yet", ""),
    ))
}
