//! Resolving command-line inputs: a preset name or a file path, read and validated.

use anyhow::{Context, Result};
use std::path::Path;
use tessera_spec::accel::Accelerator;
use tessera_spec::compression::{self, Compression};
use tessera_spec::model::{self, ModelConfig};

/// Whether `arg` names a file rather than a preset: it exists, contains a path separator or ends in
/// the file's extension.
fn is_path(arg: &str, extension: &str) -> bool {
    Path::new(arg).exists() || arg.contains('/') || arg.ends_with(extension)
}

/// Reads a whole file, with its name in the error.
pub fn read(path: &str) -> Result<String> {
    std::fs::read_to_string(path).with_context(|| format!("cannot read `{path}`"))
}

/// A model preset name or a Hugging Face `config.json` path.
pub fn model(arg: &str) -> Result<ModelConfig> {
    if is_path(arg, ".json") {
        let text = read(arg)?;
        let name = Path::new(arg)
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or(arg);
        Ok(model::from_hf_json(&text, arg, name)?)
    } else {
        Ok(model::preset(arg)?)
    }
}

/// An accelerator preset name or TOML path.
pub fn accelerator(arg: &str) -> Result<Accelerator> {
    if is_path(arg, ".toml") {
        Ok(Accelerator::from_toml_str(&read(arg)?, arg)?)
    } else {
        Ok(Accelerator::preset(arg)?)
    }
}

/// A compression preset name or TOML path.
pub fn compression(arg: &str) -> Result<Compression> {
    if is_path(arg, ".toml") {
        Ok(compression::from_toml_str(&read(arg)?, arg)?)
    } else {
        Ok(compression::preset(arg)?)
    }
}

/// The `--model`, `--accel` and `--compression` flags shared by the commands that need all three.
#[derive(Debug, clap::Args)]
pub struct TargetArgs {
    /// Model preset name or Hugging Face config.json path.
    #[arg(long, default_value = "llama2-7b")]
    pub model: String,
    /// Accelerator preset name or TOML path.
    #[arg(long, default_value = "u280")]
    pub accel: String,
    /// Compression preset name or TOML path.
    #[arg(long, default_value = "w4a8-g128")]
    pub compression: String,
}
