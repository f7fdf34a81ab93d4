//! Model import: presets match REFERENCE.md, other families import, and bad configs are explained.

use tessera_spec::model::{
    from_hf_json, preset, Activation, Architecture, NormKind, OutputHead, Positions, PRESET_NAMES,
};

/// `(preset, layers, d_model, ffn, heads, kv heads, vocab)` from REFERENCE.md's model table.
const TABLE: &[(&str, u32, u64, u64, u32, u32, u64)] = &[
    ("llama2-7b", 32, 4096, 11008, 32, 32, 32000),
    ("llama2-13b", 40, 5120, 13824, 40, 40, 32000),
    ("llama2-70b", 80, 8192, 28672, 64, 8, 32000),
    ("opt-6.7b", 32, 4096, 16384, 32, 32, 50272),
    ("gpt2", 12, 768, 3072, 12, 12, 50257),
    ("bert-base", 12, 768, 3072, 12, 12, 30522),
    ("vit-b16", 12, 768, 3072, 12, 12, 0),
    ("mixtral-8x7b", 32, 4096, 14336, 32, 8, 32000),
];

#[test]
fn presets_match_the_reference_table() {
    for &(name, layers, d, ffn, heads, kv, vocab) in TABLE {
        let m = preset(name).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(
            (
                m.layers,
                m.hidden,
                m.ffn_hidden,
                m.heads,
                m.kv_heads,
                m.vocab
            ),
            (layers, d, ffn, heads, kv, vocab),
            "{name}"
        );
    }
    assert!(PRESET_NAMES.contains(&"tiny-llama"));
    for name in PRESET_NAMES {
        assert!(preset(name).is_ok(), "{name}");
    }
}

#[test]
fn family_details() {
    let mixtral = preset("mixtral-8x7b").unwrap();
    let moe = mixtral.moe.unwrap();
    assert_eq!((moe.experts, moe.top_k), (8, 2));
    assert_eq!(mixtral.positions, Positions::Rotary { theta: 1e6 });
    let gpt2 = preset("gpt2").unwrap();
    assert!(gpt2.tied_embeddings && gpt2.qkv_bias && gpt2.pre_norm);
    assert_eq!(gpt2.activation, Activation::Gelu);
    assert_eq!(gpt2.positions, Positions::Learned { table_rows: 1024 });
    let opt = preset("opt-6.7b").unwrap();
    assert_eq!(opt.positions, Positions::Learned { table_rows: 2050 });
    assert_eq!(opt.activation, Activation::Relu);
    let bert = preset("bert-base").unwrap();
    assert!(!bert.causal && !bert.pre_norm && bert.embedding_norm);
    assert_eq!(bert.head, OutputHead::Pooler);
    assert_eq!(bert.token_types, 2);
    let vit = preset("vit-b16").unwrap();
    assert_eq!(vit.vision.unwrap().patches(), 196);
    assert_eq!(vit.max_positions, 197);
    let llama = preset("llama2-7b").unwrap();
    assert_eq!(llama.norm, NormKind::RmsNorm);
    assert!(llama.gated_ffn && llama.is_decoder());
    assert!(!bert.is_decoder() && !vit.is_decoder());
}

#[test]
fn other_families_import_with_gqa() {
    let m = from_hf_json(
        include_str!("../../examples/models/mistral-7b.json"),
        "mistral-7b.json",
        "mistral-7b",
    )
    .unwrap();
    assert_eq!(m.architecture, Architecture::Mistral);
    assert_eq!((m.heads, m.kv_heads, m.head_dim), (32, 8, 128));
    assert_eq!(m.sliding_window, Some(4096));
    let l3 = from_hf_json(
        include_str!("../../examples/models/llama3-8b.json"),
        "llama3-8b.json",
        "llama3-8b",
    )
    .unwrap();
    assert_eq!((l3.vocab, l3.kv_heads), (128256, 8));
    assert_eq!(l3.positions, Positions::Rotary { theta: 500000.0 });
}

#[test]
fn architecture_falls_back_to_architectures() {
    let text = r#"{"architectures": ["GPT2LMHeadModel"], "n_embd": 64, "n_layer": 2, "n_head": 4, "n_positions": 128, "vocab_size": 100}"#;
    let m = from_hf_json(text, "c.json", "c").unwrap();
    assert_eq!(m.architecture, Architecture::Gpt2);
    assert_eq!(m.ffn_hidden, 256);
}

/// Imports `text`; the error must name `key` and contain `needle`.
fn check_err(text: &str, key: &str, needle: &str) {
    let e = from_hf_json(text, "config.json", "x").expect_err("must be rejected");
    assert!(
        e.problems.iter().any(|p| p.key == key),
        "no problem at `{key}`:\n{e}"
    );
    let s = e.to_string();
    assert!(s.contains(needle), "`{needle}` missing:\n{s}");
    assert!(s.starts_with("config.json:"), "{s}");
}

const LLAMA: &str = include_str!("../../examples/models/tiny-llama.json");

#[test]
fn malformed_json() {
    let e = from_hf_json("{\"model_type\": \"llama\",", "config.json", "x").unwrap_err();
    assert!(e.to_string().contains("line 1"), "{e}");
    check_err("[1, 2]", "", "not a JSON object");
}

#[test]
fn unsupported_architecture() {
    check_err(r#"{"model_type": "t5"}"#, "model_type", "supported: llama");
    check_err(r#"{"hidden_size": 4}"#, "model_type", "missing");
}

#[test]
fn missing_and_mistyped_keys() {
    check_err(
        &LLAMA.replace("\"hidden_size\": 128,", ""),
        "hidden_size",
        "missing field",
    );
    check_err(
        &LLAMA.replace("\"hidden_size\": 128", "\"hidden_size\": \"128\""),
        "hidden_size",
        "invalid type",
    );
}

#[test]
fn shape_rules() {
    check_err(
        &LLAMA.replace("\"num_attention_heads\": 4", "\"num_attention_heads\": 0"),
        "num_attention_heads",
        "out of range",
    );
    check_err(
        &LLAMA.replace("\"num_hidden_layers\": 2", "\"num_hidden_layers\": 0"),
        "num_hidden_layers",
        "out of range",
    );
    check_err(
        &LLAMA.replace("\"num_attention_heads\": 4", "\"num_attention_heads\": 6"),
        "hidden_size",
        "not divisible",
    );
    check_err(
        &LLAMA.replace("\"num_key_value_heads\": 2", "\"num_key_value_heads\": 3"),
        "num_key_value_heads",
        "not a multiple of 3",
    );
    check_err(
        &LLAMA.replace("\"hidden_act\": \"silu\"", "\"hidden_act\": \"mish\""),
        "hidden_act",
        "allowed: silu",
    );
}

#[test]
fn moe_top_k_bounded_by_experts() {
    let text = include_str!("../../examples/models/mixtral-8x7b.json")
        .replace("\"num_experts_per_tok\": 2", "\"num_experts_per_tok\": 9");
    check_err(&text, "num_experts_per_tok", "1 ..= num_local_experts (8)");
}

#[test]
fn opt_projection_is_refused() {
    let text = include_str!("../../examples/models/opt-6.7b.json").replace(
        "\"word_embed_proj_dim\": 4096",
        "\"word_embed_proj_dim\": 512",
    );
    check_err(&text, "word_embed_proj_dim", "not supported");
}

#[test]
fn unknown_preset_lists_names() {
    let e = preset("llama9").unwrap_err().to_string();
    assert!(e.contains("llama2-7b") && e.contains("tiny-llama"), "{e}");
}
