//! Import of Hugging Face `config.json` files.
//!
//! Dispatches on `model_type` (or `architectures[0]`), deserializes the keys that family uses with
//! the defaults Hugging Face transformers gives them, and normalises to [`ModelConfig`]. Keys the
//! importer does not use are ignored: real configs carry many.

use super::{
    Activation, Architecture, ModelConfig, Moe, NormKind, OutputHead, Positions, VisionInput,
};
use crate::error::{Checker, Problem, SpecError};
use serde::de::DeserializeOwned;
use serde::Deserialize;
use std::collections::BTreeMap;

const SUPPORTED: &str = "llama, mistral, mixtral, opt, gpt2, bert, vit";

/// Parses a Hugging Face `config.json` (text of the file named `file`) into a [`ModelConfig`]
/// called `name`.
pub fn from_hf_json(text: &str, file: &str, name: &str) -> Result<ModelConfig, SpecError> {
    let value: serde_json::Value = serde_json::from_str(text).map_err(|e| {
        SpecError::one(
            file,
            Problem::new(
                "",
                format!("malformed JSON: {e}"),
                "the file must be a JSON object as written by Hugging Face transformers",
            ),
        )
    })?;
    if !value.is_object() {
        return Err(SpecError::one(
            file,
            Problem::new(
                "",
                "the top level is not a JSON object",
                "a config.json is one object",
            ),
        ));
    }
    let model_type = match value.get("model_type").and_then(|v| v.as_str()) {
        Some(t) => t.to_string(),
        None => value
            .get("architectures")
            .and_then(|a| a.get(0))
            .and_then(|a| a.as_str())
            .map(architecture_family)
            .unwrap_or_default(),
    };
    let arch = match model_type.as_str() {
        "llama" => Architecture::Llama,
        "mistral" => Architecture::Mistral,
        "mixtral" => Architecture::Mixtral,
        "opt" => Architecture::Opt,
        "gpt2" => Architecture::Gpt2,
        "bert" => Architecture::Bert,
        "vit" => Architecture::Vit,
        "" => {
            return Err(SpecError::one(
                file,
                Problem::new(
                    "model_type",
                    "missing, and `architectures` names no supported family",
                    format!("set model_type to one of: {SUPPORTED}"),
                ),
            ))
        }
        other => {
            return Err(SpecError::one(
                file,
                Problem::new(
                    "model_type",
                    format!("`{other}` is not a supported architecture"),
                    format!("supported: {SUPPORTED}"),
                ),
            ))
        }
    };
    let mut c = Checker::new();
    let model = match arch {
        Architecture::Llama | Architecture::Mistral | Architecture::Mixtral => {
            llama(parse(value, file)?, arch, name, &mut c)
        }
        Architecture::Opt => opt(parse(value, file)?, name, &mut c),
        Architecture::Gpt2 => gpt2(parse(value, file)?, name, &mut c),
        Architecture::Bert => bert(parse(value, file)?, name, &mut c),
        Architecture::Vit => vit(parse(value, file)?, name, &mut c),
    };
    c.finish(file)?;
    Ok(model)
}

/// Maps an `architectures` entry such as `LlamaForCausalLM` to its `model_type`.
fn architecture_family(arch: &str) -> String {
    let lower = arch.to_ascii_lowercase();
    ["mixtral", "mistral", "llama", "opt", "gpt2", "bert", "vit"]
        .iter()
        .find(|f| lower.starts_with(*f))
        .map(|f| f.to_string())
        .unwrap_or_else(|| lower.clone())
}

fn parse<T: DeserializeOwned>(value: serde_json::Value, file: &str) -> Result<T, SpecError> {
    serde_path_to_error::deserialize(value).map_err(|e| SpecError::from_json(file, &e))
}

fn activation(c: &mut Checker, key: &str, name: &str) -> Activation {
    match name {
        "silu" | "swish" => Activation::Silu,
        "gelu" | "gelu_new" | "gelu_pytorch_tanh" | "gelu_fast" | "gelu_python" | "quick_gelu" => {
            Activation::Gelu
        }
        "relu" => Activation::Relu,
        other => {
            c.push(
                key,
                format!("activation `{other}` is not supported"),
                "allowed: silu, swish, gelu, gelu_new, gelu_pytorch_tanh, gelu_fast, quick_gelu, relu",
            );
            Activation::Gelu
        }
    }
}

/// Checks the shared shape rules and returns the head width.
fn heads(
    c: &mut Checker,
    (hidden_key, hidden): (&str, u64),
    (heads_key, heads): (&str, u32),
    kv_heads: Option<(&str, u32)>,
    head_dim: Option<u64>,
) -> u64 {
    c.range_u64(hidden_key, hidden, 1, 1 << 20);
    c.range_u64(heads_key, heads as u64, 1, 4096);
    if let Some((key, kv)) = kv_heads {
        c.range_u64(key, kv as u64, 1, 4096);
        if kv > 0 && heads % kv != 0 {
            c.push(
                key,
                format!("{heads_key} = {heads} is not a multiple of {kv}"),
                format!("use a divisor of {heads}"),
            );
        }
    }
    match head_dim {
        Some(d) => {
            c.range_u64("head_dim", d, 1, 1 << 16);
            d
        }
        None if heads > 0 && hidden % heads as u64 == 0 => hidden / heads as u64,
        None => {
            c.push(
                hidden_key,
                format!("{hidden} is not divisible by {heads_key} = {heads}"),
                "use a multiple of the head count, or give head_dim",
            );
            1
        }
    }
}

/// Largest width, vocabulary or position count accepted (2^24), so later products cannot overflow.
const MAX_DIM: u64 = 1 << 24;

/// Requires a dimension in `1 ..= MAX_DIM`.
fn dim(c: &mut Checker, key: &str, value: u64) {
    c.range_u64(key, value, 1, MAX_DIM);
}

fn layers(c: &mut Checker, key: &str, n: u32) {
    c.range_u64(key, n as u64, 1, 1024);
}

#[derive(Deserialize)]
struct LlamaJson {
    hidden_size: u64,
    intermediate_size: u64,
    num_hidden_layers: u32,
    num_attention_heads: u32,
    num_key_value_heads: Option<u32>,
    head_dim: Option<u64>,
    vocab_size: u64,
    #[serde(default = "default_llama_positions")]
    max_position_embeddings: u64,
    #[serde(default = "default_rope_theta")]
    rope_theta: f64,
    #[serde(default)]
    tie_word_embeddings: bool,
    #[serde(default)]
    attention_bias: bool,
    #[serde(default)]
    mlp_bias: bool,
    #[serde(default = "default_silu")]
    hidden_act: String,
    #[serde(default)]
    sliding_window: Option<u64>,
    num_local_experts: Option<u32>,
    num_experts_per_tok: Option<u32>,
}

fn default_llama_positions() -> u64 {
    2048
}
fn default_rope_theta() -> f64 {
    10_000.0
}
fn default_silu() -> String {
    "silu".into()
}

fn llama(j: LlamaJson, arch: Architecture, name: &str, c: &mut Checker) -> ModelConfig {
    let kv = j.num_key_value_heads.unwrap_or(j.num_attention_heads);
    let head_dim = heads(
        c,
        ("hidden_size", j.hidden_size),
        ("num_attention_heads", j.num_attention_heads),
        Some(("num_key_value_heads", kv)),
        j.head_dim,
    );
    layers(c, "num_hidden_layers", j.num_hidden_layers);
    dim(c, "intermediate_size", j.intermediate_size);
    dim(c, "vocab_size", j.vocab_size);
    dim(c, "max_position_embeddings", j.max_position_embeddings);
    c.range_f64("rope_theta", j.rope_theta, 1.0, 1e12);
    let act = activation(c, "hidden_act", &j.hidden_act);
    let moe = if arch == Architecture::Mixtral {
        let experts = j.num_local_experts.unwrap_or(8);
        let top_k = j.num_experts_per_tok.unwrap_or(2);
        c.range_u64("num_local_experts", experts as u64, 1, 1024);
        if top_k == 0 || top_k > experts {
            c.push(
                "num_experts_per_tok",
                format!("{top_k} is out of range"),
                format!("allowed: 1 ..= num_local_experts ({experts})"),
            );
        }
        Some(Moe { experts, top_k })
    } else {
        None
    };
    ModelConfig {
        name: name.to_string(),
        architecture: arch,
        layers: j.num_hidden_layers,
        hidden: j.hidden_size,
        heads: j.num_attention_heads,
        kv_heads: kv,
        head_dim,
        ffn_hidden: j.intermediate_size,
        activation: act,
        gated_ffn: true,
        norm: NormKind::RmsNorm,
        pre_norm: true,
        final_norm: true,
        embedding_norm: false,
        vocab: j.vocab_size,
        max_positions: j.max_position_embeddings,
        positions: Positions::Rotary {
            theta: j.rope_theta,
        },
        token_types: 0,
        qkv_bias: j.attention_bias,
        out_bias: j.attention_bias,
        ffn_bias: j.mlp_bias,
        causal: true,
        sliding_window: if arch == Architecture::Llama {
            None
        } else {
            j.sliding_window
        },
        tied_embeddings: j.tie_word_embeddings,
        head: OutputHead::LmHead,
        moe,
        vision: None,
    }
}

#[derive(Deserialize)]
struct OptJson {
    hidden_size: u64,
    ffn_dim: u64,
    num_hidden_layers: u32,
    num_attention_heads: u32,
    vocab_size: u64,
    max_position_embeddings: u64,
    #[serde(default = "yes")]
    do_layer_norm_before: bool,
    word_embed_proj_dim: Option<u64>,
    #[serde(default = "default_relu")]
    activation_function: String,
    #[serde(default = "yes")]
    enable_bias: bool,
    #[serde(default = "yes")]
    tie_word_embeddings: bool,
}

fn yes() -> bool {
    true
}
fn default_relu() -> String {
    "relu".into()
}

fn opt(j: OptJson, name: &str, c: &mut Checker) -> ModelConfig {
    let head_dim = heads(
        c,
        ("hidden_size", j.hidden_size),
        ("num_attention_heads", j.num_attention_heads),
        None,
        None,
    );
    layers(c, "num_hidden_layers", j.num_hidden_layers);
    dim(c, "ffn_dim", j.ffn_dim);
    dim(c, "vocab_size", j.vocab_size);
    dim(c, "max_position_embeddings", j.max_position_embeddings);
    if let Some(p) = j.word_embed_proj_dim.filter(|&p| p != j.hidden_size) {
        c.push(
            "word_embed_proj_dim",
            format!(
                "{p} differs from hidden_size {}: embedding projections are not supported",
                j.hidden_size
            ),
            "only OPT models whose word_embed_proj_dim equals hidden_size (all but opt-350m)",
        );
    }
    let act = activation(c, "activation_function", &j.activation_function);
    ModelConfig {
        name: name.to_string(),
        architecture: Architecture::Opt,
        layers: j.num_hidden_layers,
        hidden: j.hidden_size,
        heads: j.num_attention_heads,
        kv_heads: j.num_attention_heads,
        head_dim,
        ffn_hidden: j.ffn_dim,
        activation: act,
        gated_ffn: false,
        norm: NormKind::LayerNorm,
        pre_norm: j.do_layer_norm_before,
        final_norm: j.do_layer_norm_before,
        embedding_norm: false,
        vocab: j.vocab_size,
        max_positions: j.max_position_embeddings,
        // OPT's learned position table keeps 2 extra rows (its position offset).
        positions: Positions::Learned {
            table_rows: j.max_position_embeddings + 2,
        },
        token_types: 0,
        qkv_bias: j.enable_bias,
        out_bias: j.enable_bias,
        ffn_bias: j.enable_bias,
        causal: true,
        sliding_window: None,
        tied_embeddings: j.tie_word_embeddings,
        head: OutputHead::LmHead,
        moe: None,
        vision: None,
    }
}

#[derive(Deserialize)]
struct Gpt2Json {
    n_embd: u64,
    n_layer: u32,
    n_head: u32,
    n_inner: Option<u64>,
    n_positions: u64,
    vocab_size: u64,
    #[serde(default = "default_gelu_new")]
    activation_function: String,
}

fn default_gelu_new() -> String {
    "gelu_new".into()
}

fn gpt2(j: Gpt2Json, name: &str, c: &mut Checker) -> ModelConfig {
    let head_dim = heads(c, ("n_embd", j.n_embd), ("n_head", j.n_head), None, None);
    layers(c, "n_layer", j.n_layer);
    dim(c, "vocab_size", j.vocab_size);
    dim(c, "n_positions", j.n_positions);
    let ffn = j.n_inner.unwrap_or(4 * j.n_embd);
    dim(c, "n_inner", ffn);
    let act = activation(c, "activation_function", &j.activation_function);
    ModelConfig {
        name: name.to_string(),
        architecture: Architecture::Gpt2,
        layers: j.n_layer,
        hidden: j.n_embd,
        heads: j.n_head,
        kv_heads: j.n_head,
        head_dim,
        ffn_hidden: ffn,
        activation: act,
        gated_ffn: false,
        norm: NormKind::LayerNorm,
        pre_norm: true,
        final_norm: true,
        embedding_norm: false,
        vocab: j.vocab_size,
        max_positions: j.n_positions,
        positions: Positions::Learned {
            table_rows: j.n_positions,
        },
        token_types: 0,
        qkv_bias: true,
        out_bias: true,
        ffn_bias: true,
        causal: true,
        sliding_window: None,
        tied_embeddings: true,
        head: OutputHead::LmHead,
        moe: None,
        vision: None,
    }
}

#[derive(Deserialize)]
struct BertJson {
    hidden_size: u64,
    num_hidden_layers: u32,
    num_attention_heads: u32,
    intermediate_size: u64,
    vocab_size: u64,
    #[serde(default = "default_bert_positions")]
    max_position_embeddings: u64,
    #[serde(default = "default_type_vocab")]
    type_vocab_size: u64,
    #[serde(default = "default_gelu")]
    hidden_act: String,
}

fn default_bert_positions() -> u64 {
    512
}
fn default_type_vocab() -> u64 {
    2
}
fn default_gelu() -> String {
    "gelu".into()
}

fn bert(j: BertJson, name: &str, c: &mut Checker) -> ModelConfig {
    let head_dim = heads(
        c,
        ("hidden_size", j.hidden_size),
        ("num_attention_heads", j.num_attention_heads),
        None,
        None,
    );
    layers(c, "num_hidden_layers", j.num_hidden_layers);
    dim(c, "intermediate_size", j.intermediate_size);
    dim(c, "vocab_size", j.vocab_size);
    dim(c, "max_position_embeddings", j.max_position_embeddings);
    c.range_u64("type_vocab_size", j.type_vocab_size, 0, 1 << 16);
    let act = activation(c, "hidden_act", &j.hidden_act);
    ModelConfig {
        name: name.to_string(),
        architecture: Architecture::Bert,
        layers: j.num_hidden_layers,
        hidden: j.hidden_size,
        heads: j.num_attention_heads,
        kv_heads: j.num_attention_heads,
        head_dim,
        ffn_hidden: j.intermediate_size,
        activation: act,
        gated_ffn: false,
        norm: NormKind::LayerNorm,
        pre_norm: false,
        final_norm: false,
        embedding_norm: true,
        vocab: j.vocab_size,
        max_positions: j.max_position_embeddings,
        positions: Positions::Learned {
            table_rows: j.max_position_embeddings,
        },
        token_types: j.type_vocab_size,
        qkv_bias: true,
        out_bias: true,
        ffn_bias: true,
        causal: false,
        sliding_window: None,
        tied_embeddings: false,
        head: OutputHead::Pooler,
        moe: None,
        vision: None,
    }
}

#[derive(Deserialize)]
struct VitJson {
    hidden_size: u64,
    num_hidden_layers: u32,
    num_attention_heads: u32,
    intermediate_size: u64,
    #[serde(default = "default_image")]
    image_size: u64,
    #[serde(default = "default_patch")]
    patch_size: u64,
    #[serde(default = "default_channels")]
    num_channels: u64,
    #[serde(default = "yes")]
    qkv_bias: bool,
    #[serde(default = "default_gelu")]
    hidden_act: String,
    id2label: Option<BTreeMap<String, String>>,
    num_labels: Option<u64>,
}

fn default_image() -> u64 {
    224
}
fn default_patch() -> u64 {
    16
}
fn default_channels() -> u64 {
    3
}

fn vit(j: VitJson, name: &str, c: &mut Checker) -> ModelConfig {
    let head_dim = heads(
        c,
        ("hidden_size", j.hidden_size),
        ("num_attention_heads", j.num_attention_heads),
        None,
        None,
    );
    layers(c, "num_hidden_layers", j.num_hidden_layers);
    dim(c, "intermediate_size", j.intermediate_size);
    c.range_u64("image_size", j.image_size, 1, 1 << 16);
    c.range_u64("patch_size", j.patch_size, 1, 1 << 16);
    c.range_u64("num_channels", j.num_channels, 1, 64);
    if j.patch_size > 0 && j.image_size % j.patch_size != 0 {
        c.push(
            "patch_size",
            format!(
                "{} does not divide image_size {}",
                j.patch_size, j.image_size
            ),
            "use a divisor of image_size",
        );
    }
    let act = activation(c, "hidden_act", &j.hidden_act);
    let vision = VisionInput {
        image_size: j.image_size,
        patch_size: j.patch_size.max(1),
        channels: j.num_channels,
    };
    let classes = j
        .id2label
        .as_ref()
        .map(|m| m.len() as u64)
        .or(j.num_labels)
        .filter(|&n| n > 0);
    let seq = vision.patches() + 1;
    ModelConfig {
        name: name.to_string(),
        architecture: Architecture::Vit,
        layers: j.num_hidden_layers,
        hidden: j.hidden_size,
        heads: j.num_attention_heads,
        kv_heads: j.num_attention_heads,
        head_dim,
        ffn_hidden: j.intermediate_size,
        activation: act,
        gated_ffn: false,
        norm: NormKind::LayerNorm,
        pre_norm: true,
        final_norm: true,
        embedding_norm: false,
        vocab: 0,
        max_positions: seq,
        positions: Positions::Learned { table_rows: seq },
        token_types: 0,
        qkv_bias: j.qkv_bias,
        out_bias: true,
        ffn_bias: true,
        causal: false,
        sliding_window: None,
        tied_embeddings: false,
        head: match classes {
            Some(classes) => OutputHead::Classifier { classes },
            None => OutputHead::Pooler,
        },
        moe: None,
        vision: Some(vision),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn architecture_names_map_to_families() {
        assert_eq!(architecture_family("LlamaForCausalLM"), "llama");
        assert_eq!(architecture_family("MixtralForCausalLM"), "mixtral");
        assert_eq!(architecture_family("GPT2LMHeadModel"), "gpt2");
        assert_eq!(
            architecture_family("T5ForConditionalGeneration"),
            "t5forconditionalgeneration"
        );
    }
}
