//! Graph accounting against published parameter counts (REFERENCE.md) and hand-derived formulas.

use tessera_compiler::frontend::{build_graph, FrontendError};
use tessera_spec::compression::{
    self, Compression, OpClass, Sparsity, WeightCompression, WeightFormat,
};
use tessera_spec::graph::{Graph, OpKind, Phase};
use tessera_spec::model::{self, ModelConfig};

fn model(name: &str) -> ModelConfig {
    model::preset(name).unwrap_or_else(|e| panic!("{e}"))
}

fn prefill(name: &str, seq: u64) -> Graph {
    build_graph(
        &model(name),
        &Compression::fp16(),
        Phase::Prefill { seq },
        1,
    )
    .unwrap()
}

fn decode(name: &str, context: u64, comp: &Compression) -> Graph {
    build_graph(&model(name), comp, Phase::Decode { context }, 1).unwrap()
}

/// `(preset, exact parameters derived by hand from the config, REFERENCE.md figure)`.
const PARAMS: &[(&str, u64, f64)] = &[
    // 32000·4096 ·2 (embedding, untied head) + 32·(4·4096² + 3·4096·11008 + 2·4096) + 4096
    ("llama2-7b", 6_738_415_616, 6.74e9),
    ("llama2-13b", 13_015_864_320, 13.0e9),
    ("llama2-70b", 68_976_648_192, 69e9),
    // OPT: 50272·4096 + 2050·4096 + 32·(4·(4096²+4096) + 2·4096·16384 + 16384 + 4096 + 4·4096) + 2·4096
    ("opt-6.7b", 6_658_473_984, 6.7e9),
    // GPT-2: 50257·768 + 1024·768 + 12·7,087,872 + 2·768 (tied head)
    ("gpt2", 124_439_808, 124e6),
    // BERT-base: embeddings 23,837,184 (incl. LayerNorm) + 12·7,087,872 + pooler 590,592
    ("bert-base", 109_482_240, 110e6),
    // ViT-B/16 (in21k, pooler): patch 590,592 + cls 768 + pos 151,296 + 12·7,087,872 + 1,536 + 590,592
    ("vit-b16", 86_389_248, 86e6),
    ("mixtral-8x7b", 46_702_792_704, 46.7e9),
];

#[test]
fn parameter_counts_match_hand_derivation_and_reference() {
    for &(name, exact, published) in PARAMS {
        let g = prefill(name, 16);
        assert_eq!(g.params(), exact, "{name}: exact parameter count");
        let rel = (g.params() as f64 - published).abs() / published;
        assert!(
            rel < 0.01,
            "{name}: {} vs published {published}",
            g.params()
        );
    }
}

#[test]
fn mixtral_active_parameters() {
    let g = decode("mixtral-8x7b", 100, &Compression::fp16());
    // Per layer: attention 41,943,040 + 2 of 8 experts · 176,160,768 + router 32,768 + norms 8,192;
    // plus embedding, head and final norm.
    assert_eq!(g.active_params(), 12_879_925_248);
    let rel = (g.active_params() as f64 - 12.9e9).abs() / 12.9e9;
    assert!(rel < 0.01);
    assert_eq!(g.params(), 46_702_792_704);
}

#[test]
fn llama2_7b_weight_bytes() {
    // FP16: 13.48 GB (REFERENCE.md).
    let g = prefill("llama2-7b", 16);
    assert_eq!(g.weight_bytes(), 2 * 6_738_415_616);
    // Every matrix in int4 with one fp16 scale per 128 values: ≈ 3.5 GB with scales.
    let int4 = WeightCompression {
        format: WeightFormat {
            bits: 4,
            group_size: 128,
            symmetric: true,
        },
        sparsity: Sparsity::Dense,
    };
    let mut c = Compression::fp16();
    for class in OpClass::ALL {
        c.weights.insert(class, int4);
    }
    let g = build_graph(&model("llama2-7b"), &c, Phase::Prefill { seq: 16 }, 1).unwrap();
    let parts = g.weight_bytes_by_part();
    let matrix_params: u64 = 6_738_415_616 - 266_240; // all but the norm weights
    assert_eq!(parts.values, matrix_params / 2 + 2 * 266_240);
    assert_eq!(parts.scales, matrix_params / 128 * 2);
    assert_eq!(parts.metadata, 0);
    let gb = g.weight_bytes() as f64 / 1e9;
    assert!((3.4..3.6).contains(&gb), "{gb} GB");
}

#[test]
fn n_m_sparsity_metadata_is_counted() {
    let mut c = Compression::fp16();
    let nm = WeightCompression {
        format: WeightFormat {
            bits: 8,
            group_size: 0,
            symmetric: true,
        },
        sparsity: Sparsity::NM { n: 8, m: 16 },
    };
    c.weights.insert(OpClass::Ffn, nm);
    let g = build_graph(&model("gpt2"), &c, Phase::Prefill { seq: 8 }, 1).unwrap();
    let ffn_weights = 12 * 2 * 768 * 3072u64;
    // Half the values kept at 1 byte, a 4-bit index each, one fp16 scale per output row.
    assert_eq!(g.weight_bytes_by_part().metadata, ffn_weights / 2 / 2);
    let ffn_rows = 12 * (3072 + 768u64);
    let dense_other = 2 * (124_439_808 - ffn_weights);
    assert_eq!(
        g.weight_bytes(),
        dense_other + ffn_weights / 2 + ffn_weights / 4 + ffn_rows * 2
    );
}

#[test]
fn llama2_7b_decode_flops_per_token() {
    for context in [0u64, 1, 511, 2047] {
        let g = decode("llama2-7b", context, &Compression::fp16());
        let linear_params = 6_738_415_616u64 - 131_072_000 - 266_240; // no embedding, no norms
        let attention = 4 * 32 * 4096 * (context + 1); // QKᵀ and AV over context + 1 keys
        assert_eq!(
            g.total_cost().matmul_flops(),
            2 * linear_params + attention,
            "context {context}"
        );
        // KV cache: 0.5 MiB per token in fp16 (REFERENCE.md); the step reads its own key and
        // value back after appending them.
        let kv_read: u64 = g.ops().map(|o| o.cost.kv_read_bytes).sum();
        assert_eq!(kv_read, (context + 1) * 512 * 1024);
        let kv_written: u64 = g.ops().map(|o| o.cost.kv_write_bytes).sum();
        assert_eq!(kv_written, 512 * 1024);
    }
}

#[test]
fn gpt2_prefill_flops_are_causal() {
    let s = 1024u64;
    let g = prefill("gpt2", s);
    let per_token_linear_macs = 12 * (4 * 768 * 768 + 2 * 768 * 3072);
    let lm_head = 768 * 50257; // last token only
    let attention = 12 * 768 * s * (s + 1); // scores + values over the causal triangle
    assert_eq!(
        g.total_cost().macs,
        s * per_token_linear_macs + lm_head + attention
    );
}

#[test]
fn bert_prefill_attention_is_bidirectional() {
    let s = 128u64;
    let g = prefill("bert-base", s);
    let per_token_linear_macs = 12 * (4 * 768 * 768 + 2 * 768 * 3072);
    let pooler = 768 * 768;
    let attention = 2 * 12 * 768 * s * s;
    assert_eq!(
        g.total_cost().macs,
        s * per_token_linear_macs + pooler + attention
    );
}

#[test]
fn vit_sequence_is_patches_plus_class_token() {
    let g = prefill("vit-b16", 999);
    assert_eq!(g.phase, Phase::Prefill { seq: 197 });
    let patch = g.ops().find(|o| o.name == "patch_embed").unwrap();
    assert_eq!(patch.cost.macs, 196 * 768 * 768);
}

#[test]
fn gqa_kv_cache_and_streaming_heads() {
    // LLaMA2-70B: 8 KV heads of 128 → 2·80·8·128·2 bytes per token in fp16.
    let g = decode("llama2-70b", 1000, &Compression::fp16());
    let kv_read: u64 = g.ops().map(|o| o.cost.kv_read_bytes).sum();
    assert_eq!(kv_read, 1001 * 2 * 80 * 8 * 128 * 2);
    // Half the heads streaming with sink 4 + window 256, int4 KV: a row of 128 int4 values and
    // its fp16 scale.
    let mut c = compression::preset("w4a8-kv4-duo").unwrap();
    c.kv.policy.streaming_fraction = 0.5;
    c.kv.policy.sink = 4;
    c.kv.policy.window = 256;
    let g = build_graph(&model("llama2-7b"), &c, Phase::Decode { context: 4096 }, 1).unwrap();
    let kv_read: u64 = g.ops().map(|o| o.cost.kv_read_bytes).sum();
    let tokens_times_heads = 16 * 4097 + 16 * 260;
    assert_eq!(kv_read, 32 * 2 * tokens_times_heads * (128 / 2 + 2));
}

#[test]
fn moe_reads_only_routed_experts_in_decode() {
    let g = decode("mixtral-8x7b", 10, &Compression::fp16());
    let expert_bytes: u64 = g
        .ops()
        .filter(|o| {
            matches!(
                o.kind,
                OpKind::Linear {
                    weight_copies: 2,
                    ..
                }
            )
        })
        .map(|o| o.cost.weight_bytes)
        .sum();
    assert_eq!(expert_bytes, 32 * 2 * 3 * 4096 * 14336 * 2);
    // A long prefill touches every expert.
    let g = build_graph(
        &model("mixtral-8x7b"),
        &Compression::fp16(),
        Phase::Prefill { seq: 512 },
        1,
    )
    .unwrap();
    assert!(g
        .ops()
        .filter(|o| o.name.contains("experts.gate_proj"))
        .all(|o| matches!(
            o.kind,
            OpKind::Linear {
                weight_copies: 8,
                ..
            }
        )));
}

#[test]
fn batch_scales_tokens_not_weights() {
    let c = Compression::fp16();
    let m = model("llama2-7b");
    let one = build_graph(&m, &c, Phase::Decode { context: 64 }, 1).unwrap();
    let four = build_graph(&m, &c, Phase::Decode { context: 64 }, 4).unwrap();
    // Matrix weights are read once per step whatever the batch; embeddings gather a row per token.
    let linear_weights = |g: &Graph| {
        g.ops()
            .filter(|o| matches!(o.kind, OpKind::Linear { .. }))
            .map(|o| o.cost.weight_bytes)
            .sum::<u64>()
    };
    assert_eq!(linear_weights(&one), linear_weights(&four));
    let gathered = |g: &Graph| {
        g.ops()
            .find(|o| o.name == "embeddings")
            .unwrap()
            .cost
            .weight_bytes
    };
    assert_eq!(4 * gathered(&one), gathered(&four));
    let kv = |g: &Graph| g.ops().map(|o| o.cost.kv_read_bytes).sum::<u64>();
    assert_eq!(4 * kv(&one), kv(&four));
}

#[test]
fn bad_passes_are_errors() {
    let c = Compression::fp16();
    assert!(matches!(
        build_graph(&model("bert-base"), &c, Phase::Decode { context: 1 }, 1),
        Err(FrontendError::NoDecodePhase { .. })
    ));
    assert!(matches!(
        build_graph(&model("gpt2"), &c, Phase::Prefill { seq: 2000 }, 1),
        Err(FrontendError::TooLong { max: 1024, .. })
    ));
    assert!(build_graph(&model("gpt2"), &c, Phase::Prefill { seq: 0 }, 1).is_err());
    assert!(matches!(
        build_graph(
            &model("llama2-70b"),
            &c,
            Phase::Prefill { seq: 1 << 20 },
            4096
        ),
        Err(FrontendError::TooLarge { .. })
    ));
    assert!(build_graph(&model("gpt2"), &c, Phase::Prefill { seq: 4 }, 0).is_err());
}

#[test]
fn graph_is_a_dag_in_insertion_order() {
    let g = prefill("tiny-llama", 8);
    let pg = g.petgraph();
    for e in pg.edge_indices() {
        let (a, b) = pg.edge_endpoints(e).unwrap();
        assert!(a.index() < b.index(), "edges go forward");
    }
    assert!(petgraph::algo::toposort(pg, None).is_ok());
    // Every activation a later op reads was produced earlier.
    for id in g.op_ids() {
        for &t in &g.op(id).inputs {
            if let Some(p) = g.tensor(t).producer {
                assert!(p.index() < id.index());
            }
        }
    }
}
