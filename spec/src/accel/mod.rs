//! Accelerator spec: parsed from TOML, validated once into an immutable [`Accelerator`].

/// A validated accelerator description.
#[derive(Debug, Clone, PartialEq)]
pub struct Accelerator {}
