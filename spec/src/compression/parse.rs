//! Compression spec files (TOML) and built-in compression presets.
//!
//! Layout (see `examples/compression/*.toml`): top-level `name`, `activations`, optional
//! `moe_top_k`; `[weights]` holds the default `bits`, `group_size`, `symmetric` and `sparsity` of
//! every weight class, and `[weights.<class>]` (attention, ffn, head, embedding, router) overrides
//! any subset of them; `[kv]` holds the KV-cache `format` and the head-wise policy
//! (`streaming_fraction`, `sink`, `window`).

use super::{
    ActivationFormat, Compression, KvCache, KvFormat, KvPolicy, OpClass, Sparsity,
    WeightCompression, WeightFormat,
};
use crate::error::{from_toml_value as parse_value, Checker, Problem, SpecError};
use crate::model::ModelConfig;
use serde::Deserialize;

macro_rules! presets {
    ($($name:literal),* $(,)?) => {
        /// Names accepted by [`preset`].
        pub const PRESET_NAMES: &[&str] = &[$($name),*];
        const PRESET_FILES: &[(&str, &str)] = &[
            $(($name, include_str!(concat!("../../../examples/compression/", $name, ".toml")))),*
        ];
    };
}

presets!(
    "fp16",
    "w8a8",
    "w4a16-g128",
    "w4a8-g128",
    "w4a8-nm8",
    "w4a8-kv4-duo",
);

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawCompression {
    name: String,
    activations: ActivationFormat,
    #[serde(default)]
    moe_top_k: Option<u32>,
    weights: RawWeights,
    kv: RawKv,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawWeights {
    bits: u32,
    #[serde(default)]
    group_size: u32,
    #[serde(default = "yes")]
    symmetric: bool,
    #[serde(default = "dense")]
    sparsity: Sparsity,
    #[serde(default)]
    attention: Option<RawOverride>,
    #[serde(default)]
    ffn: Option<RawOverride>,
    #[serde(default)]
    head: Option<RawOverride>,
    #[serde(default)]
    embedding: Option<RawOverride>,
    #[serde(default)]
    router: Option<RawOverride>,
}

fn yes() -> bool {
    true
}
fn dense() -> Sparsity {
    Sparsity::Dense
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawOverride {
    bits: Option<u32>,
    group_size: Option<u32>,
    symmetric: Option<bool>,
    sparsity: Option<Sparsity>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawKv {
    format: KvFormat,
    #[serde(default)]
    streaming_fraction: f64,
    #[serde(default)]
    sink: u64,
    #[serde(default)]
    window: u64,
}

fn class_key(class: OpClass) -> &'static str {
    match class {
        OpClass::Attention => "attention",
        OpClass::Ffn => "ffn",
        OpClass::Head => "head",
        OpClass::Embedding => "embedding",
        OpClass::Router => "router",
    }
}

/// Checks one weight compression; `prefix` is its key path (`weights` or `weights.ffn`) and
/// `explicit_group` whether its group size was written there (fp16 must not have one).
fn check_weight(c: &mut Checker, prefix: &str, w: &WeightCompression, explicit_group: bool) {
    let f = w.format;
    if ![16, 8, 4, 3, 2].contains(&f.bits) {
        c.push(
            format!("{prefix}.bits"),
            format!("{} bits is not a weight format", f.bits),
            "allowed: 16 (fp16), 8, 4, 3, 2",
        );
    }
    if f.bits == 16 && f.group_size != 0 && explicit_group {
        c.push(
            format!("{prefix}.group_size"),
            format!(
                "fp16 weights have no quantisation groups (got {})",
                f.group_size
            ),
            "use group_size = 0 with bits = 16",
        );
    }
    if f.group_size != 0 && (!f.group_size.is_power_of_two() || !(8..=4096).contains(&f.group_size))
    {
        c.push(
            format!("{prefix}.group_size"),
            format!("{} is not a supported group size", f.group_size),
            "allowed: 0 (one scale per output row) or a power of two in 8 ..= 4096",
        );
    }
    let key = format!("{prefix}.sparsity");
    match w.sparsity {
        Sparsity::Dense => {}
        Sparsity::NM { n, m } => {
            if ![4, 8, 16, 32].contains(&m) {
                c.push(
                    &key,
                    format!("m = {m} is not supported"),
                    "allowed m: 4, 8, 16, 32",
                );
            }
            if n == 0 || n > m {
                c.push(
                    &key,
                    format!("n = {n} is out of range for m = {m}"),
                    format!("allowed: 1 <= n <= m ({m})"),
                );
            }
        }
        Sparsity::Block { block, density } => {
            if ![8, 16, 32, 64, 128].contains(&block) {
                c.push(
                    &key,
                    format!("block = {block} is not supported"),
                    "allowed: 8, 16, 32, 64, 128",
                );
            }
            if !(density > 0.0 && density <= 1.0) {
                c.push(
                    &key,
                    format!("density = {density} is out of range"),
                    "allowed: 0 < density <= 1",
                );
            }
        }
        Sparsity::Unstructured { density } => {
            if !(density > 0.0 && density <= 1.0) {
                c.push(
                    &key,
                    format!("density = {density} is out of range"),
                    "allowed: 0 < density <= 1",
                );
            }
        }
    }
}

/// Parses and validates a compression TOML file's text (`file` names it in errors).
pub fn from_toml_str(text: &str, file: &str) -> Result<Compression, SpecError> {
    let value: toml::Value =
        toml::from_str(text).map_err(|e| SpecError::from_toml_syntax(file, text, &e))?;
    from_toml_value(value, file)
}

/// Validates an already parsed TOML value (sweeps edit dotted keys on it first).
pub fn from_toml_value(value: toml::Value, file: &str) -> Result<Compression, SpecError> {
    let raw: RawCompression = parse_value(value, file)?;
    let mut c = Checker::new();
    if raw.name.trim().is_empty() {
        c.push("name", "the name is empty", "give the compression a name");
    }
    let w = &raw.weights;
    let default = WeightCompression {
        format: WeightFormat {
            bits: w.bits,
            group_size: if w.bits == 16 { 0 } else { w.group_size },
            symmetric: w.symmetric,
        },
        sparsity: w.sparsity,
    };
    check_weight(
        &mut c,
        "weights",
        &default,
        w.bits == 16 && w.group_size != 0,
    );
    let mut weights = std::collections::BTreeMap::new();
    for class in OpClass::ALL {
        let o = match class {
            OpClass::Attention => &w.attention,
            OpClass::Ffn => &w.ffn,
            OpClass::Head => &w.head,
            OpClass::Embedding => &w.embedding,
            OpClass::Router => &w.router,
        };
        let Some(o) = o else {
            weights.insert(class, default);
            continue;
        };
        let bits = o.bits.unwrap_or(default.format.bits);
        // An fp16 override drops the inherited group size; an explicit one is an error.
        let group_size = match (o.group_size, bits) {
            (Some(g), _) => g,
            (None, 16) => 0,
            (None, _) => default.format.group_size,
        };
        let merged = WeightCompression {
            format: WeightFormat {
                bits,
                group_size,
                symmetric: o.symmetric.unwrap_or(default.format.symmetric),
            },
            sparsity: o.sparsity.unwrap_or(default.sparsity),
        };
        check_weight(
            &mut c,
            &format!("weights.{}", class_key(class)),
            &merged,
            o.group_size.is_some(),
        );
        weights.insert(class, merged);
    }
    let kv = &raw.kv;
    c.range_f64("kv.streaming_fraction", kv.streaming_fraction, 0.0, 1.0);
    if kv.streaming_fraction > 0.0 && kv.sink + kv.window == 0 {
        c.push(
            "kv.window",
            "streaming heads keep no tokens (sink + window = 0)",
            "give streaming heads a sink and/or a window, or set streaming_fraction = 0",
        );
    }
    if let Some(k) = raw.moe_top_k {
        c.range_u64("moe_top_k", k as u64, 1, 1024);
    }
    c.finish(file)?;
    Ok(Compression {
        name: raw.name,
        weights,
        activations: raw.activations,
        kv: KvCache {
            format: kv.format,
            policy: KvPolicy {
                streaming_fraction: kv.streaming_fraction,
                sink: kv.sink,
                window: kv.window,
            },
        },
        moe_top_k: raw.moe_top_k,
    })
}

/// The TOML text of the built-in compression called `name`.
pub fn preset_text(name: &str) -> Option<&'static str> {
    PRESET_FILES
        .iter()
        .find(|(n, _)| *n == name)
        .map(|(_, t)| *t)
}

/// The built-in compression called `name`.
pub fn preset(name: &str) -> Result<Compression, SpecError> {
    match PRESET_FILES.iter().find(|(n, _)| *n == name) {
        Some((n, text)) => from_toml_str(text, &format!("examples/compression/{n}.toml")),
        None => Err(SpecError::one(
            format!("preset:{name}"),
            Problem::new(
                "compression",
                format!("unknown compression preset `{name}`"),
                format!(
                    "presets: {}; or give a path to a TOML file",
                    PRESET_NAMES.join(", ")
                ),
            ),
        )),
    }
}

/// Checks a compression against a model: group sizes and N:M group lengths must divide every
/// reduction dimension of the class they apply to, and MoE top-k needs a MoE model.
pub fn validate_for_model(
    c: &Compression,
    model: &ModelConfig,
    file: &str,
) -> Result<(), SpecError> {
    let mut ck = Checker::new();
    let vision_k = model
        .vision
        .map(|v| v.channels * v.patch_size * v.patch_size);
    for class in OpClass::ALL {
        let dims: Vec<(&str, u64)> = match class {
            OpClass::Attention => vec![
                ("hidden", model.hidden),
                ("heads × head_dim", model.q_width()),
            ],
            OpClass::Ffn => vec![("hidden", model.hidden), ("ffn_hidden", model.ffn_hidden)],
            OpClass::Head => vec![("hidden", model.hidden)],
            OpClass::Router if model.moe.is_some() => vec![("hidden", model.hidden)],
            OpClass::Router => vec![],
            OpClass::Embedding => match vision_k {
                Some(k) => vec![("patch channels × size²", k)],
                None => vec![("hidden", model.hidden)],
            },
        };
        let w = c.weight(class);
        let prefix = format!("weights.{}", class_key(class));
        for (what, d) in dims {
            let g = w.format.group_size as u64;
            if w.format.is_quantised() && g != 0 && d % g != 0 {
                ck.push(
                    format!("{prefix}.group_size"),
                    format!(
                        "group size {g} does not divide {what} = {d} of model `{}`",
                        model.name
                    ),
                    format!("use a group size that divides {d} (or 0 for one scale per row); inherited from weights.group_size unless overridden"),
                );
            }
            if let Sparsity::NM { m, .. } = w.sparsity {
                if d % m as u64 != 0 {
                    ck.push(
                        format!("{prefix}.sparsity"),
                        format!(
                            "N:M group length m = {m} does not divide {what} = {d} of model `{}`",
                            model.name
                        ),
                        format!("use an m that divides {d}"),
                    );
                }
            }
        }
    }
    if let Some(k) = c.moe_top_k {
        match model.moe {
            None => ck.push(
                "moe_top_k",
                format!("model `{}` has no mixture of experts", model.name),
                "remove moe_top_k for dense models",
            ),
            Some(moe) if k > moe.experts => ck.push(
                "moe_top_k",
                format!(
                    "{k} exceeds the {} experts of model `{}`",
                    moe.experts, model.name
                ),
                format!("allowed: 1 ..= {}", moe.experts),
            ),
            _ => {}
        }
    }
    ck.finish(file)
}
