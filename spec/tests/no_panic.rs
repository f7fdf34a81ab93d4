//! Every parser returns an error, never a panic, on damaged input: each example file cut at many
//! points and with bytes flipped goes through the parser that reads it.

use tessera_spec::accel::Accelerator;
use tessera_spec::{compression, isa, model};

const ACCELS: &[&str] = &[
    include_str!("../../examples/accelerators/u280.toml"),
    include_str!("../../examples/accelerators/tiny.toml"),
];
const COMPRESSIONS: &[&str] = &[
    include_str!("../../examples/compression/w4a8-nm8.toml"),
    include_str!("../../examples/compression/w4a8-kv4-duo.toml"),
];
const MODELS: &[&str] = &[
    include_str!("../../examples/models/mixtral-8x7b.json"),
    include_str!("../../examples/models/gpt2.json"),
    include_str!("../../examples/models/vit-b16.json"),
];
const PROGRAM: &str = include_str!("../../examples/programs/double-buffered-gemm.tasm");

/// Truncations at 97 points and single-byte substitutions at 97 points, as valid UTF-8.
fn damaged(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    for k in 0..97 {
        let at = bytes.len() * k / 97;
        out.push(String::from_utf8_lossy(&bytes[..at]).into_owned());
        for sub in [b'0', b'"', b'[', b'-', b'9', b'}'] {
            let mut b = bytes.to_vec();
            b[at] = sub;
            out.push(String::from_utf8_lossy(&b).into_owned());
        }
    }
    out
}

#[test]
fn accelerator_parser_never_panics() {
    for t in ACCELS.iter().flat_map(|t| damaged(t)) {
        let _ = Accelerator::from_toml_str(&t, "x.toml");
    }
}

#[test]
fn compression_parser_never_panics() {
    for t in COMPRESSIONS.iter().flat_map(|t| damaged(t)) {
        let _ = compression::from_toml_str(&t, "x.toml");
    }
}

#[test]
fn model_importer_never_panics() {
    for t in MODELS.iter().flat_map(|t| damaged(t)) {
        let _ = model::from_hf_json(&t, "x.json", "x");
    }
}

#[test]
fn assembler_and_decoder_never_panic() {
    for t in damaged(PROGRAM) {
        let _ = isa::assemble(&t);
    }
    let bin = isa::encode_program(&isa::assemble(PROGRAM).unwrap()).unwrap();
    for k in 0..bin.len() {
        let _ = isa::decode_program(&bin[..k]);
        let mut b = bin.clone();
        b[k] ^= 0xff;
        let _ = isa::decode_program(&b);
    }
}
