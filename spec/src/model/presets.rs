//! Built-in models: the `config.json` files under `examples/models/`, compiled in.

use super::{from_hf_json, ModelConfig};
use crate::error::{Problem, SpecError};

macro_rules! presets {
    ($($name:literal),* $(,)?) => {
        /// Names accepted by [`preset`].
        pub const PRESET_NAMES: &[&str] = &[$($name),*];
        const PRESET_FILES: &[(&str, &str)] = &[
            $(($name, include_str!(concat!("../../../examples/models/", $name, ".json")))),*
        ];
    };
}

presets!(
    "llama2-7b",
    "llama2-13b",
    "llama2-70b",
    "opt-6.7b",
    "gpt2",
    "bert-base",
    "vit-b16",
    "mixtral-8x7b",
    "tiny-llama",
);

/// The built-in model called `name`.
pub fn preset(name: &str) -> Result<ModelConfig, SpecError> {
    match PRESET_FILES.iter().find(|(n, _)| *n == name) {
        Some((n, text)) => from_hf_json(text, &format!("examples/models/{n}.json"), n),
        None => Err(SpecError::one(
            format!("preset:{name}"),
            Problem::new(
                "model",
                format!("unknown model preset `{name}`"),
                format!(
                    "presets: {}; or give a path to a Hugging Face config.json",
                    PRESET_NAMES.join(", ")
                ),
            ),
        )),
    }
}
