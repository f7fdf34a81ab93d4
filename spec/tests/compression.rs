//! Compression specs: presets, per-class overrides, and one test per kind of bad input.

use tessera_spec::compression::{
    from_toml_str, preset, validate_for_model, ActivationFormat, KvFormat, OpClass, Sparsity,
    PRESET_NAMES,
};
use tessera_spec::model;

const BASE: &str = include_str!("../../examples/compression/w4a8-g128.toml");

fn check_err(text: &str, key: &str, needle: &str) {
    let e = from_toml_str(text, "c.toml").expect_err("must be rejected");
    assert!(
        e.problems.iter().any(|p| p.key == key),
        "no problem at `{key}`:\n{e}"
    );
    assert!(e.to_string().contains(needle), "`{needle}` missing:\n{e}");
}

#[test]
fn presets_parse() {
    for name in PRESET_NAMES {
        let c = preset(name).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(c.name, *name);
        assert_eq!(c.weights.len(), OpClass::ALL.len());
    }
    assert!(preset("w1").unwrap_err().to_string().contains("w4a8-g128"));
}

#[test]
fn defaults_and_overrides_merge() {
    let c = preset("w4a8-g128").unwrap();
    assert_eq!(c.activations, ActivationFormat::Int8);
    let ffn = c.weight(OpClass::Ffn);
    assert_eq!((ffn.format.bits, ffn.format.group_size), (4, 128));
    let emb = c.weight(OpClass::Embedding);
    assert_eq!((emb.format.bits, emb.format.group_size), (8, 0));
    let c = preset("w4a16-g128").unwrap();
    // An fp16 override drops the inherited group size.
    assert_eq!(c.weight(OpClass::Embedding).format.group_size, 0);
    let nm = preset("w4a8-nm8").unwrap();
    assert_eq!(
        nm.weight(OpClass::Ffn).sparsity,
        Sparsity::NM { n: 8, m: 16 }
    );
    assert_eq!(nm.weight(OpClass::Head).sparsity, Sparsity::Dense);
    let duo = preset("w4a8-kv4-duo").unwrap();
    assert_eq!(duo.kv.format, KvFormat::Int4);
    assert_eq!(duo.kv.policy.full_heads(32), 16);
}

#[test]
fn bad_bits() {
    check_err(
        &BASE.replacen("bits = 4", "bits = 5", 1),
        "weights.bits",
        "allowed: 16",
    );
}

#[test]
fn bad_group_size() {
    check_err(
        &BASE.replacen("group_size = 128", "group_size = 100", 1),
        "weights.group_size",
        "power of two",
    );
    check_err(
        &BASE.replacen("bits = 8\ngroup_size = 0", "bits = 16\ngroup_size = 64", 1),
        "weights.embedding.group_size",
        "fp16 weights have no quantisation groups",
    );
}

#[test]
fn n_greater_than_m() {
    let text = BASE.replacen(
        "symmetric = true",
        "symmetric = true\nsparsity = { kind = \"nm\", n = 8, m = 4 }",
        1,
    );
    check_err(&text, "weights.sparsity", "1 <= n <= m");
    let text = BASE.replacen(
        "symmetric = true",
        "symmetric = true\nsparsity = { kind = \"nm\", n = 2, m = 6 }",
        1,
    );
    check_err(&text, "weights.sparsity", "allowed m");
}

#[test]
fn bad_densities() {
    for (kind, extra) in [("block", ", block = 64"), ("unstructured", "")] {
        let text = BASE.replacen(
            "symmetric = true",
            &format!("symmetric = true\nsparsity = {{ kind = \"{kind}\", density = 1.5{extra} }}"),
            1,
        );
        check_err(&text, "weights.sparsity", "0 < density <= 1");
    }
    let text = BASE.replacen(
        "symmetric = true",
        "symmetric = true\nsparsity = { kind = \"block\", block = 48, density = 0.5 }",
        1,
    );
    check_err(&text, "weights.sparsity", "allowed: 8, 16");
}

#[test]
fn kv_policy_ranges() {
    check_err(
        &BASE.replacen(
            "format = \"fp16\"",
            "format = \"fp16\"\nstreaming_fraction = 2.0",
            1,
        ),
        "kv.streaming_fraction",
        "allowed: 0 ..= 1",
    );
    check_err(
        &BASE.replacen(
            "format = \"fp16\"",
            "format = \"fp16\"\nstreaming_fraction = 0.5",
            1,
        ),
        "kv.window",
        "sink + window = 0",
    );
}

#[test]
fn unknown_keys_and_variants_are_named() {
    check_err(
        &BASE.replacen("bits = 4", "bits = 4\nbitz = 4", 1),
        "weights.bitz",
        "unknown field",
    );
    check_err(
        &BASE.replace("\"int8\"", "\"int7\""),
        "activations",
        "unknown variant",
    );
    check_err(
        &BASE.replacen("[weights.router]", "[weights.mlp]", 1),
        "weights.mlp",
        "unknown field",
    );
}

#[test]
fn validate_against_models() {
    let gpt2 = model::preset("gpt2").unwrap();
    let c = from_toml_str(
        &BASE.replacen("group_size = 128", "group_size = 512", 1),
        "g.toml",
    )
    .unwrap();
    let e = validate_for_model(&c, &gpt2, "g.toml")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("weights.attention.group_size") && e.contains("768"),
        "{e}"
    );
    // 512 divides Mixtral's 4096 and 14336 but not LLaMA2's FFN width of 11008 = 2^8 · 43.
    let mixtral = model::preset("mixtral-8x7b").unwrap();
    assert!(validate_for_model(&c, &mixtral, "g.toml").is_ok());
    let llama = model::preset("llama2-7b").unwrap();
    let e = validate_for_model(&c, &llama, "g.toml")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("weights.ffn.group_size") && e.contains("11008"),
        "{e}"
    );
    // N:M group length that does not divide the FFN width (11008 = 2^8 · 43).
    let text = BASE
        .replacen(
            "symmetric = true",
            "symmetric = true\nsparsity = { kind = \"nm\", n = 4, m = 32 }",
            1,
        )
        .replacen("group_size = 128", "group_size = 64", 1);
    let c = from_toml_str(&text, "nm.toml").unwrap();
    assert!(
        validate_for_model(&c, &llama, "nm.toml").is_ok(),
        "11008 = 344 x 32"
    );
    let narrow = model::from_hf_json(
        r#"{"model_type": "gpt2", "n_embd": 80, "n_layer": 1, "n_head": 5, "n_positions": 64, "vocab_size": 100}"#,
        "narrow.json",
        "narrow",
    )
    .unwrap();
    let e = validate_for_model(&c, &narrow, "nm.toml")
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("weights.attention.sparsity") && e.contains("= 80"),
        "{e}"
    );
    // MoE top-k on a dense model.
    let c = from_toml_str(&format!("moe_top_k = 2\n{BASE}"), "moe.toml").unwrap();
    let e = validate_for_model(&c, &llama, "moe.toml")
        .unwrap_err()
        .to_string();
    assert!(e.contains("moe_top_k"), "{e}");
    assert!(validate_for_model(&c, &mixtral, "moe.toml").is_ok());
}
