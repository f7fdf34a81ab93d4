//! A whole compiled decode step in functional mode: the program `compile_pass` emits for
//! tiny-llama (embedding, two decoder layers with grouped-query attention over a filled KV cache,
//! the LM head) computes the same logits, bit for bit, as a reference decoder written directly
//! from the quantised math, for dense int8, int4-group and N:M sparse weights, over an fp16 or an
//! int8 KV cache, with and without biases, for one sequence and for batches of up to forty (each
//! sequence with its own token and cache, checked against the reference run per sequence). A
//! compiled prefill of one prompt equals the reference run token by token: the last token's
//! logits and every key and value it appended.

mod common;

use half::f16;
use std::collections::BTreeMap;
use tessera_compiler::frontend::build_graph;
use tessera_compiler::kv::visible_keys;
use tessera_compiler::program::{compile_pass_mapped, data_semantics};
use tessera_sim::golden::{quantize_rows, round_f16, QuantWeights, Rng};
use tessera_sim::hazard::buffer_hazards;
use tessera_sim::{simulate_functional, DataState, SimOptions};
use tessera_spec::accel::{Accelerator, SfuOp};
use tessera_spec::compression::{self, ActivationFormat, Compression, KvFormat, OpClass, Sparsity};
use tessera_spec::graph::{OpKind, Phase};
use tessera_spec::isa::data::{encode_weights, f16_bytes, f16_values, quantize_scale, sfu_row};
use tessera_spec::model::{self, Activation, ModelConfig, NormKind, Positions};

/// One cached key or value row: fp16 values, or int8 values (exact in `f32`) and their scale.
#[derive(Clone)]
struct CachedRow {
    values: Vec<f32>,
    scale: Option<f32>,
}

impl CachedRow {
    /// `row` (fp16 values) as the cache stores it: as it is, or quantised to int8 as the
    /// special-function unit's `quantize` defines it.
    fn store(row: &[f32], int8: bool) -> CachedRow {
        match int8 {
            true => CachedRow {
                values: sfu_row(SfuOp::Quantize, row, &[]),
                scale: Some(quantize_scale(row).to_f32()),
            },
            false => CachedRow {
                values: row.to_vec(),
                scale: None,
            },
        }
    }

    /// The row's bytes in the cache: fp16 values, or int8 values (their scale apart).
    fn bytes(&self) -> Vec<u8> {
        match self.scale {
            Some(_) => self.values.iter().map(|v| *v as i8 as u8).collect(),
            None => f16_bytes(&self.values),
        }
    }
}

/// The model's tensors as logical values (every fp16 value already rounded), and each
/// sequence's tokens and cache.
struct Weights {
    /// The embedding rows of each token the pass reads (a decode step's sequences' tokens, or
    /// a prompt's tokens), one per table (token, then a learned position's): int8 values and
    /// their scale (an fp16 table holds their products).
    embedding: Vec<Vec<(Vec<i8>, f32)>>,
    /// Norm parameters by operator name (a LayerNorm's gains, then its biases).
    norms: BTreeMap<String, Vec<f32>>,
    /// Linear layers by output tensor name.
    linears: BTreeMap<String, QuantWeights>,
    /// Biases of the linear layers that have one, by output tensor name.
    biases: BTreeMap<String, Vec<f32>>,
    /// Keys and values in each sequence's cache: `[sequence][layer][kv head][position]`.
    keys: Vec<Vec<Vec<Vec<CachedRow>>>>,
    values: Vec<Vec<Vec<Vec<CachedRow>>>>,
    /// The rotary angles of each position the pass computes (a decode step's, or every prompt
    /// position): a cosine and a sine per pair of dimensions.
    angles: Vec<Vec<f32>>,
}

fn fp16(v: f32) -> f32 {
    f16::from_f32(v).to_f32()
}

/// The reference decoder step of sequence `seq` for the pass's token `token` at its position
/// `position` (an index into [`Weights::angles`]), attending to the keys `visible` of each KV
/// head: every operator's math as `tessera_spec::isa::data` defines it, with results rounded to fp16 where the program keeps them. The query projection is taken to
/// carry 1/√head_dim (folded into its weights), so softmax reads the raw dot products. An int8
/// cache stores the step's key and value rows quantised; scores are integer-weight products (a
/// key's scale per output column, int8 queries with their row scale), and the probabilities are
/// multiplied by the value rows' scales (`mul`, quantised per row for int8 activations) before
/// the product with the int8 value rows (`b_rows`, no weight scales).
#[allow(clippy::too_many_arguments)]
fn reference_step(
    m: &ModelConfig,
    w: &mut Weights,
    seq: usize,
    (token, position): (usize, usize),
    visible: &[Vec<usize>],
    int8: bool,
    kv_int8: bool,
) -> Vec<f32> {
    let (hd, heads, kv_heads) = (m.head_dim as usize, m.heads as usize, m.kv_heads as usize);
    let group = heads / kv_heads;
    let row = |op: SfuOp, x: &[f32], aux: &[f32]| round_f16(&sfu_row(op, x, aux));
    // A linear layer's fp16 results, then its bias added by `add_row`.
    let linear = |w: &Weights, name: &str, x: &[f32]| {
        let q = &w.linears[name];
        let y = match int8 {
            true => {
                let (values, scales) = quantize_rows(x, x.len());
                round_f16(&q.linear_int8_scaled(&values, &scales))
            }
            false => round_f16(&q.linear_fp16(x)),
        };
        match w.biases.get(name) {
            Some(b) => row(SfuOp::AddRow, &y, b),
            None => y,
        }
    };
    let norm = |w: &Weights, x: &[f32], name: &str| {
        let op = match m.norm {
            NormKind::RmsNorm => SfuOp::RmsNorm,
            NormKind::LayerNorm => SfuOp::LayerNorm,
        };
        row(op, x, &w.norms[name])
    };
    let activation = match m.activation {
        Activation::Silu => SfuOp::Silu,
        Activation::Gelu => SfuOp::Gelu,
        Activation::Relu => SfuOp::Relu,
    };
    // Each table's row dequantised to fp16, then added in table order.
    let mut tables = w.embedding[token]
        .iter()
        .map(|(values, scale)| values.iter().map(|v| fp16(*v as f32 * scale)).collect());
    let mut x: Vec<f32> = tables.next().unwrap();
    for table in tables {
        x = row(SfuOp::Add, &x, &table);
    }
    let rotary = matches!(m.positions, Positions::Rotary { .. });
    for l in 0..m.layers as usize {
        let name = |s: &str| format!("layer{l}.{s}");
        // Pre-norm blocks normalise each sublayer's input, post-norm ones its residual sum.
        let h = match m.pre_norm {
            true => norm(w, &x, &name("attn_norm")),
            false => x.clone(),
        };
        let q = linear(w, &name("attn.q_proj"), &h);
        let k = linear(w, &name("attn.k_proj"), &h);
        let v = linear(w, &name("attn.v_proj"), &h);
        let rotate = |t: &[f32]| -> Vec<Vec<f32>> {
            t.chunks(hd)
                .map(|head| match rotary {
                    true => row(SfuOp::Rotary, head, &w.angles[position]),
                    false => head.to_vec(),
                })
                .collect()
        };
        let q = rotate(&q);
        for (g, key) in rotate(&k).into_iter().enumerate() {
            w.keys[seq][l][g].push(CachedRow::store(&key, kv_int8));
            w.values[seq][l][g].push(CachedRow::store(&v[g * hd..(g + 1) * hd], kv_int8));
        }
        let mut attended = Vec::new();
        for (i, qh) in q.iter().enumerate() {
            let g = i / group;
            let (q8, q_scale) = quantize_rows(qh, hd);
            let score = |key: &CachedRow| match key.scale {
                None => (0..hd).fold(0f32, |a, d| a + qh[d] * key.values[d]),
                Some(scale) if int8 => {
                    let dot = (0..hd).fold(0i32, |a, d| a + q8[d] as i32 * key.values[d] as i32);
                    scale * dot as f32 * q_scale[0]
                }
                Some(scale) => scale * (0..hd).fold(0f32, |a, d| a + qh[d] * key.values[d]),
            };
            let scores: Vec<f32> = visible[g]
                .iter()
                .map(|&p| fp16(score(&w.keys[seq][l][g][p])))
                .collect();
            let p = row(SfuOp::Softmax, &scores, &[]);
            let rows: Vec<&CachedRow> = visible[g]
                .iter()
                .map(|&t| &w.values[seq][l][g][t])
                .collect();
            let scales: Option<Vec<f32>> = rows.iter().map(|r| r.scale).collect();
            match scales {
                // fp16 rows against the probabilities.
                None => attended.extend((0..hd).map(|d| {
                    let terms = rows.iter().zip(&p);
                    fp16(terms.fold(0f32, |a, (v, p)| a + p * v.values[d]))
                })),
                // Σ_t (p_t · s_t) · v_t over the int8 rows.
                Some(scales) => {
                    let folded = row(SfuOp::Mul, &p, &scales);
                    let (f8, f_scale) = quantize_rows(&folded, folded.len());
                    attended.extend((0..hd).map(|d| {
                        let terms = rows.iter().enumerate();
                        fp16(if int8 {
                            let dot =
                                terms.fold(0i32, |a, (t, v)| a + f8[t] as i32 * v.values[d] as i32);
                            dot as f32 * f_scale[0]
                        } else {
                            terms.fold(0f32, |a, (t, v)| a + folded[t] * v.values[d])
                        })
                    }));
                }
            }
        }
        let o = linear(w, &name("attn.o_proj"), &attended);
        x = row(SfuOp::Add, &x, &o);
        let h = match m.pre_norm {
            true => norm(w, &x, &name("ffn_norm")),
            false => {
                x = norm(w, &x, &name("attn_norm"));
                x.clone()
            }
        };
        let up = linear(w, &name("ffn.up_proj"), &h);
        let inner = match m.gated_ffn {
            true => {
                let gate = linear(w, &name("ffn.gate_proj"), &h);
                row(SfuOp::Mul, &row(activation, &gate, &[]), &up)
            }
            false => row(activation, &up, &[]),
        };
        let down = linear(w, &name("ffn.down_proj"), &inner);
        x = row(SfuOp::Add, &x, &down);
        if !m.pre_norm {
            x = norm(w, &x, &name("ffn_norm"));
        }
    }
    if m.final_norm {
        x = norm(w, &x, "final_norm");
    }
    linear(w, "lm_head", &x)
}

/// The bias a linear operator loads: its own, or fused siblings'
/// (`layer0.attn.q_proj+k_proj+v_proj`) side by side; `None` for other operators.
fn biases_of(w: &Weights, op: &str) -> Option<Vec<f32>> {
    let mut names = op.split('+');
    let first = names.next()?;
    let prefix = first.rsplit_once('.').map_or("", |(p, _)| p);
    std::iter::once(first.to_string())
        .chain(names.map(|s| format!("{prefix}.{s}")))
        .map(|name| w.biases.get(&name).cloned())
        .collect::<Option<Vec<_>>>()
        .map(|parts| parts.concat())
}

/// Compiles and runs one decode step of `batch` sequences of `m` (tiny-llama, or a variant) at
/// `context` under `comp` on the u280, each sequence with its own token and cache, and checks
/// every sequence's logits against [`reference_step`].
fn check_step(m: &ModelConfig, comp: &Compression, context: u64, batch: usize, seed: u64) {
    check_pass(m, comp, Phase::Decode { context }, batch, seed);
}

/// Compiles and runs `phase` (a decode step of `batch` sequences, each with its own token and a
/// filled cache; or a prefill of one sequence's prompt into an empty cache) of `m` under `comp`
/// on the u280 and checks each sequence's logits (a prefill's: of its last token) against
/// [`reference_step`] (a prefill's reference: decode steps token by token), and the keys and
/// values the pass appended (and their scales) in the cache.
fn check_pass(m: &ModelConfig, comp: &Compression, phase: Phase, batch: usize, seed: u64) {
    let accel = Accelerator::preset("u280").unwrap();
    let m = m.clone();
    // The cache's tokens before the pass, and the positions the pass computes.
    let (context, positions) = match phase {
        Phase::Decode { context } => (context, context..context + 1),
        Phase::Prefill { seq } => (0, 0..seq),
    };
    let graph = build_graph(&m, comp, phase, batch as u64).unwrap();
    let (program, map) = compile_pass_mapped(&accel, comp, &m, &graph, 64).unwrap();
    assert!(map.functional, "{}", comp.name);
    let mut rng = Rng::new(seed);
    let mut value = |scale: f32| fp16(rng.int(-2000, 2000) as f32 / 2000.0 * scale);
    let (hd, kv_heads) = (m.head_dim as usize, m.kv_heads as usize);
    let kv_int8 = comp.kv.format == KvFormat::Int8;
    // Cached rows of values up to ±2: fp16, or int8 with a scale of up to 2 / 127.
    let cache = |value: &mut dyn FnMut(f32) -> f32| -> Vec<Vec<Vec<CachedRow>>> {
        (0..m.layers)
            .map(|_| {
                (0..kv_heads)
                    .map(|_| {
                        (0..context)
                            .map(|_| match kv_int8 {
                                true => CachedRow {
                                    values: (0..hd).map(|_| value(127.0).round()).collect(),
                                    scale: Some(fp16((1.0 + value(1.0).abs()) / 127.0)),
                                },
                                false => CachedRow {
                                    values: (0..hd).map(|_| value(2.0)).collect(),
                                    scale: None,
                                },
                            })
                            .collect()
                    })
                    .collect()
            })
            .collect()
    };
    let keys: Vec<_> = (0..batch).map(|_| cache(&mut value)).collect();
    let values: Vec<_> = (0..batch).map(|_| cache(&mut value)).collect();
    let mut norms = BTreeMap::new();
    for op in graph.ops() {
        if let OpKind::Norm { width, .. } = op.kind {
            let mut params: Vec<f32> = (0..width).map(|_| 1.0 + value(0.5)).map(fp16).collect();
            if m.norm == NormKind::LayerNorm {
                params.extend((0..width).map(|_| value(0.25)));
            }
            norms.insert(op.name.clone(), params);
        }
    }
    // A decode step's token of each sequence, or every prompt token.
    let token_rows = batch * positions.clone().count();
    let tables = graph
        .ops()
        .find_map(|o| match o.kind {
            OpKind::Embedding { tables, .. } => Some(tables),
            _ => None,
        })
        .unwrap();
    let embedding: Vec<Vec<(Vec<i8>, f32)>> = (0..token_rows)
        .map(|_| {
            (0..tables)
                .map(|_| {
                    (
                        (0..m.hidden).map(|_| value(127.0) as i8).collect(),
                        fp16(0.01 + value(0.01).abs()),
                    )
                })
                .collect()
        })
        .collect();
    let theta = 10_000f32;
    let angles: Vec<Vec<f32>> = positions
        .clone()
        .map(|pos| {
            (0..hd / 2)
                .flat_map(|i| {
                    let a = pos as f32 * theta.powf(-2.0 * i as f32 / hd as f32);
                    [fp16(a.cos()), fp16(a.sin())]
                })
                .collect()
        })
        .collect();
    // Every linear layer's weights, in the compression of its class.
    let mut rng = Rng::new(seed ^ 0x5eed);
    let mut linears = BTreeMap::new();
    let mut biases = BTreeMap::new();
    for op in graph.ops() {
        if let OpKind::Linear {
            class, k, n, bias, ..
        } = op.kind
        {
            if bias {
                let b: Vec<f32> = (0..n)
                    .map(|_| fp16(rng.int(-500, 500) as f32 / 1000.0))
                    .collect();
                biases.insert(op.name.clone(), b);
            }
            let wc = comp.weight(class);
            let nm = match wc.sparsity {
                Sparsity::NM { n, .. } => Some(n as usize),
                _ => None,
            };
            let group = wc.format.group_size as usize;
            let bits = wc.format.bits;
            if bits == 16 {
                linears.insert(
                    op.name.clone(),
                    fp16_weights(&mut rng, k as usize, n as usize),
                );
                continue;
            }
            let mut w = QuantWeights::random(&mut rng, k as usize, n as usize, bits, group, nm);
            if !wc.format.symmetric {
                w = w.with_zero_points(&mut rng);
            }
            // Scales by a power of two (still exact in fp16) so that wider weights keep the
            // activations as far from fp16's range as int4 ones.
            let shrink = (1u32 << bits.saturating_sub(4)) as f32;
            w.scales.iter_mut().for_each(|s| *s /= shrink);
            linears.insert(op.name.clone(), w);
        }
    }
    let mut w = Weights {
        embedding,
        norms,
        linears,
        biases,
        keys,
        values,
        angles,
    };

    // The memory image: streamed weights wave by wave, parameters, the cache.
    let mut data = DataState::new(&accel);
    for linear in &map.linears {
        // The fused layers' columns one after another.
        let parts: Vec<&QuantWeights> = linear
            .parts
            .iter()
            .map(|(name, _)| &w.linears[name])
            .collect();
        let k = parts[0].k;
        let groups = parts[0].scales.len() / parts[0].n;
        let cat = |f: &dyn Fn(&QuantWeights) -> Vec<i32>| {
            parts.iter().flat_map(|p| f(p)).collect::<Vec<_>>()
        };
        let values = cat(&|p| p.values.clone());
        let scales: Vec<f32> = parts.iter().flat_map(|p| p.scales.clone()).collect();
        let zero_points: Option<Vec<f32>> = parts
            .iter()
            .map(|p| p.zero_points.clone())
            .collect::<Option<Vec<_>>>()
            .map(|z| z.concat());
        let kept: Option<Vec<bool>> = parts[0]
            .kept
            .as_ref()
            .map(|_| parts.iter().flat_map(|p| p.kept.clone().unwrap()).collect());
        for wave in &linear.waves {
            let cols = wave.rows.start as usize..wave.rows.end as usize;
            let mask = kept
                .as_ref()
                .map(|m| m[cols.start * k..cols.end * k].to_vec());
            let (mut bytes, meta) = match parts[0].bits {
                // fp16 weights (`fp16_weights`): the values times their scale, no scales.
                16 => {
                    let cols = &values[cols.start * k..cols.end * k];
                    let scale = scales[0];
                    let w: Vec<f32> = cols.iter().map(|v| *v as f32 * scale).collect();
                    (f16_bytes(&w), Vec::new())
                }
                bits => {
                    // The wave's scales, then (asymmetric weights) its zero points.
                    let at = cols.start * groups..cols.end * groups;
                    let mut scales = scales[at.clone()].to_vec();
                    scales.extend(zero_points.iter().flat_map(|z| z[at.clone()].to_vec()));
                    encode_weights(
                        &values[cols.start * k..cols.end * k],
                        &scales,
                        k as u64,
                        bits,
                        mask.as_deref(),
                    )
                }
            };
            bytes.extend(meta);
            for s in &wave.slices {
                let piece = &bytes[s.offset as usize..(s.offset + s.bytes) as usize];
                data.write_dram(s.channel, s.dram_addr, piece);
            }
        }
    }
    for load in &map.loads {
        let bytes = if load.op == "embeddings" {
            // Each sequence's token's row as the table stores it: int8 values and their scale,
            // or the fp16 values they stand for.
            let row = |(values, scale): &(Vec<i8>, f32)| {
                if comp.weight(OpClass::Embedding).format.bits == 16 {
                    let row: Vec<f32> = values.iter().map(|v| *v as f32 * scale).collect();
                    f16_bytes(&row)
                } else {
                    let mut b: Vec<u8> = values.iter().map(|v| *v as u8).collect();
                    b.extend(f16_bytes(&[*scale]));
                    b
                }
            };
            w.embedding.iter().flatten().flat_map(row).collect()
        } else if load.op.ends_with("rotary") {
            f16_bytes(&w.angles.concat())
        } else if let Some(bias) = biases_of(&w, &load.op) {
            f16_bytes(&bias)
        } else {
            f16_bytes(&w.norms[&load.op])
        };
        let total: u64 = load.pieces.iter().map(|p| p.2).sum();
        assert_eq!(total, bytes.len() as u64, "{}", load.op);
        let mut at = 0;
        for &(channel, addr, len) in &load.pieces {
            data.write_dram(channel, addr, &bytes[at..at + len as usize]);
            at += len as usize;
        }
    }
    let layout = map.kv.as_ref().unwrap();
    // Every sequence's cache: key and value rows of every layer, head and position.
    let rows = (0..batch).flat_map(|s| {
        (0..m.layers as usize).flat_map(move |l| (0..kv_heads).map(move |h| (s, l, h)))
    });
    for (s, l, h) in rows {
        for pos in 0..context as usize {
            let (seq, layer, head, at_pos) = (s as u64, l as u64, h as u64, pos as u64);
            let (key, value) = (&w.keys[s][l][h][pos], &w.values[s][l][h][pos]);
            let (ch, at) = layout.key(seq, layer, head, at_pos);
            data.write_dram(ch, at, &key.bytes());
            let value_bytes = value.bytes();
            let part_bytes = value_bytes.len() / layout.parts() as usize;
            for p in 0..layout.parts() as usize {
                let (ch, at) = layout.value(seq, layer, head, p as u64, at_pos);
                data.write_dram(ch, at, &value_bytes[p * part_bytes..(p + 1) * part_bytes]);
            }
            // An integer cache's row scales.
            let scales = [
                (layout.key_scale(seq, layer, head, at_pos), key.scale),
                (layout.value_scale(seq, layer, head, at_pos), value.scale),
            ];
            for (place, scale) in scales {
                assert_eq!(place.is_some(), scale.is_some());
                if let (Some((ch, at)), Some(s)) = (place, scale) {
                    data.write_dram(ch, at, &f16_bytes(&[s]));
                }
            }
        }
    }

    let report = simulate_functional(&accel, &program, SimOptions::default(), &mut data).unwrap();
    assert!(report.functional);
    assert!(buffer_hazards(&program, &report).is_empty());
    let logits_at = map.tensors["lm_head"];
    let visible = |context: u64| common::positions(&visible_keys(&m, comp, context));
    let int8 = comp.activations == ActivationFormat::Int8;
    let bits = |v: &[f32]| v.iter().map(|x| x.to_bits()).collect::<Vec<_>>();
    for s in 0..batch {
        // Sequence `s`'s logits: row `s` of the LM head's results.
        let row = 2 * m.vocab as usize;
        let start = logits_at.addr as usize + s * row;
        let got = f16_values(&data.buffer(logits_at.buffer)[start..start + row]);
        // Finite, varied logits: the comparison is not between two overflows.
        let varied = got.iter().filter(|v| v.is_finite() && **v != 0.0).count();
        assert!(
            varied * 10 > 9 * got.len(),
            "{} seq {s}: {got:?}",
            comp.name
        );
        // The reference runs the pass's positions one after another (a prefill's tokens as
        // decode steps), each appending to the sequence's cache.
        let mut want = Vec::new();
        for (i, pos) in positions.clone().enumerate() {
            let token = s * positions.clone().count() + i;
            let visible = visible(pos);
            want = reference_step(&m, &mut w, s, (token, i), &visible, int8, kv_int8);
        }
        // The pass stored its keys and values (and their scales) of every layer and head where
        // later steps read them.
        let seq = s as u64;
        let stored = (0..m.layers as usize).flat_map(|l| (0..kv_heads).map(move |h| (l, h)));
        for ((l, h), pos) in stored.flat_map(|lh| positions.clone().map(move |p| (lh, p))) {
            let (key, value) = (
                &w.keys[s][l][h][pos as usize],
                &w.values[s][l][h][pos as usize],
            );
            let (layer, head) = (l as u64, h as u64);
            let what = format!("{} seq {s} layer {l} head {h} position {pos}", comp.name);
            let (ch, at) = layout.key(seq, layer, head, pos);
            let stored = data.read_dram(ch, at, key.bytes().len() as u64);
            assert_eq!(stored, key.bytes(), "key: {what}");
            let value_bytes = value.bytes();
            let part_bytes = value_bytes.len() / layout.parts() as usize;
            for p in 0..layout.parts() as usize {
                let (ch, at) = layout.value(seq, layer, head, p as u64, pos);
                let stored = data.read_dram(ch, at, part_bytes as u64);
                let part = &value_bytes[p * part_bytes..(p + 1) * part_bytes];
                assert_eq!(stored, part, "value part {p}: {what}");
            }
            let scales = [
                (layout.key_scale(seq, layer, head, pos), key.scale),
                (layout.value_scale(seq, layer, head, pos), value.scale),
            ];
            for (place, scale) in scales {
                assert_eq!(place.is_some(), scale.is_some(), "{what}");
                if let (Some((ch, at)), Some(sc)) = (place, scale) {
                    let stored = f16_values(&data.read_dram(ch, at, 2));
                    assert_eq!(bits(&stored), bits(&[sc]), "scale: {what}");
                }
            }
        }
        assert_eq!(bits(&got), bits(&want), "{} seq {s}", comp.name);
    }
}

/// Random fp16 weights `v · 2⁻¹²` (`|v| ≤ 2000`, exact in fp16) as [`QuantWeights`]: the integer
/// `v` with one scale of exactly 2⁻¹² per column, so the reference's scaled fp32 dot product
/// equals the fp16 weights' unscaled one bit for bit (a power of two commutes with rounding).
fn fp16_weights(rng: &mut Rng, k: usize, n: usize) -> QuantWeights {
    QuantWeights {
        k,
        n,
        bits: 16,
        group: 0,
        values: (0..k * n).map(|_| rng.int(-2000, 2000)).collect(),
        scales: vec![1.0 / 4096.0; n],
        kept: None,
        zero_points: None,
    }
}

/// `m` with biases on every projection (fused q/k/v and gate/up siblings load theirs side by
/// side).
fn with_biases(m: &ModelConfig) -> ModelConfig {
    ModelConfig {
        qkv_bias: true,
        out_bias: true,
        ffn_bias: true,
        ..m.clone()
    }
}

#[test]
fn passes_that_cannot_compute_on_data_say_why() {
    let m = model::preset("tiny-llama").unwrap();
    let w4 = compression::preset("w4a8-g128").unwrap();
    let u280 = Accelerator::preset("u280").unwrap();
    let tiny = Accelerator::preset("tiny").unwrap();
    let decode = Phase::Decode { context: 8 };
    let why = |accel: &Accelerator, comp: &Compression, phase: Phase, batch: u64| {
        let graph = build_graph(&m, comp, phase, batch).unwrap();
        let (_, map) = compile_pass_mapped(accel, comp, &m, &graph, 64).unwrap();
        let reason = data_semantics(accel, comp, &m, &graph);
        // Small enough to fit: the map computes on data exactly when nothing forbids it.
        assert_eq!(map.functional, reason.is_ok(), "{reason:?}");
        reason.err().unwrap_or_default()
    };
    assert_eq!(why(&u280, &w4, decode, 1), "");
    // Prompts compute on data: the final norm gathers each sequence's last row for the head.
    assert_eq!(why(&u280, &w4, Phase::Prefill { seq: 8 }, 1), "");
    assert_eq!(why(&u280, &w4, Phase::Prefill { seq: 8 }, 2), "");
    // An encoder (BERT) attends to later tokens too.
    let bert = model::preset("bert-base").unwrap();
    let graph = build_graph(&bert, &w4, Phase::Prefill { seq: 8 }, 1).unwrap();
    let reason = data_semantics(&u280, &w4, &bert, &graph).unwrap_err();
    assert!(reason.contains("an encoder's prefill"), "{reason}");
    // GPT-2's learned position table and its queries without a rotary embedding.
    let gpt2 = model::preset("gpt2").unwrap();
    for phase in [Phase::Prefill { seq: 8 }, decode] {
        let graph = build_graph(&gpt2, &w4, phase, 1).unwrap();
        assert_eq!(data_semantics(&u280, &w4, &gpt2, &graph), Ok(()));
    }
    // A streaming KV head drops keys between its sink and its window: no longer a prefix of
    // the prompt once the prompt outgrows them.
    let mut streaming = w4.clone();
    streaming.kv.policy.streaming_fraction = 0.5;
    streaming.kv.policy.sink = 4;
    streaming.kv.policy.window = 8;
    assert_eq!(why(&u280, &streaming, Phase::Prefill { seq: 12 }, 1), "");
    let why_13 = why(&u280, &streaming, Phase::Prefill { seq: 13 }, 1);
    assert!(why_13.contains("do not see every earlier key"), "{why_13}");
    assert_eq!(why(&u280, &w4, decode, 3), "");
    // More sequences than the u280's 16 PE rows: the products' results still land in place.
    assert_eq!(why(&u280, &w4, decode, 16), "");
    assert_eq!(why(&u280, &w4, decode, 17), "");
    // The `tiny` accelerator streams weights through the buffer that holds its activations.
    assert!(why(&tiny, &w4, decode, 1).contains("weight or KV buffer"));
    let kv4 = compression::preset("w4a8-kv4-duo").unwrap();
    assert!(why(&u280, &kv4, decode, 1).contains("int4 KV cache"));
    let mut kv8 = kv4.clone();
    kv8.kv.format = KvFormat::Int8;
    assert_eq!(why(&u280, &kv8, decode, 1), "");
    // `dequantize` reads an int8 embedding row's scale, not a zero point.
    let mut asymmetric = w4.clone();
    let mut embedding = w4.weight(OpClass::Embedding);
    embedding.format.symmetric = false;
    asymmetric.weights.insert(OpClass::Embedding, embedding);
    assert!(why(&u280, &asymmetric, decode, 1).contains("no zero point"));
}

#[test]
fn compiled_decode_steps_equal_the_reference_decoder() {
    let tiny_llama = model::preset("tiny-llama").unwrap();
    let cases = [
        ("w4a8-g128", 40, 1),
        ("w8a8", 17, 2),
        ("w4a8-nm8", 33, 3),
        ("w4a16-g128", 24, 4),
    ];
    for (preset, context, seed) in cases {
        let comp = compression::preset(preset).unwrap();
        check_step(&tiny_llama, &comp, context, 1, seed);
    }
    // One streaming KV head (4 sink + 8 recent keys) beside a full one: softmax runs per head
    // over rows of different lengths.
    let mut comp = compression::preset("w4a8-g128").unwrap();
    comp.kv.policy.streaming_fraction = 0.5;
    comp.kv.policy.sink = 4;
    comp.kv.policy.window = 8;
    check_step(&tiny_llama, &comp, 30, 1, 5);
    // An int8 KV cache, with int8 and fp16 activations, and with the streaming head.
    for (preset, context, seed) in [("w4a8-g128", 40, 6), ("w4a16-g128", 21, 7)] {
        let mut comp = compression::preset(preset).unwrap();
        comp.kv.format = KvFormat::Int8;
        check_step(&tiny_llama, &comp, context, 1, seed);
    }
    comp.kv.format = KvFormat::Int8;
    check_step(&tiny_llama, &comp, 30, 1, 8);
    // Asymmetric int4 and int8 weights (a zero point per group) in every linear layer, int8 and
    // fp16 activations. (The embedding stays symmetric: `dequantize` reads one scale per row.)
    for (preset, context, seed) in [
        ("w4a8-g128", 20, 11),
        ("w4a16-g128", 25, 12),
        ("w8a8", 18, 13),
    ] {
        let mut comp = compression::preset(preset).unwrap();
        let asymmetric: Vec<_> = comp
            .weights
            .iter()
            .filter(|(class, _)| **class != OpClass::Embedding)
            .map(|(class, wc)| {
                let mut wc = *wc;
                wc.format.symmetric = !wc.format.is_quantised();
                (*class, wc)
            })
            .collect();
        comp.weights.extend(asymmetric);
        check_step(&tiny_llama, &comp, context, 1, seed);
    }
    // Biases on every projection (fused q/k/v and gate/up siblings load theirs side by side),
    // int8 and fp16 activations: the matrix instructions' epilogue adds them to the results.
    let biased = with_biases(&tiny_llama);
    for (preset, context, seed) in [("w4a8-g128", 19, 9), ("w4a16-g128", 27, 10)] {
        check_step(
            &biased,
            &compression::preset(preset).unwrap(),
            context,
            1,
            seed,
        );
    }
}

#[test]
fn batched_decode_steps_equal_the_reference_decoder_per_sequence() {
    let tiny_llama = model::preset("tiny-llama").unwrap();
    // Two, three and sixteen sequences at one context (the graph's sequences share their
    // position), each with its own token and cache: products of `batch` rows over shared weights,
    // per-row int8 scales, each sequence's attention over its own cache region.
    let cases = [
        ("w4a8-g128", KvFormat::Fp16, 2, 40, 11),
        ("w4a16-g128", KvFormat::Fp16, 3, 24, 12),
        ("w4a8-g128", KvFormat::Int8, 3, 21, 13),
        ("w4a16-g128", KvFormat::Int8, 2, 33, 14),
        // As many sequences as the u280 has PE rows: one product over every row.
        ("w4a8-g128", KvFormat::Int8, 16, 33, 17),
        // More sequences than PE rows (the engine tiles the rows in time; the results land in
        // place): int4 groups with scaled int8 rows, N:M with int8 rows, fp16 rows.
        ("w4a8-g128", KvFormat::Int8, 20, 21, 18),
        ("w4a8-nm8", KvFormat::Fp16, 17, 12, 19),
        ("w4a16-g128", KvFormat::Fp16, 40, 9, 20),
    ];
    for (preset, kv, batch, context, seed) in cases {
        let mut comp = compression::preset(preset).unwrap();
        comp.kv.format = kv;
        check_step(&tiny_llama, &comp, context, batch, seed);
    }
    // A streaming KV head beside a full one over an int8 cache: each sequence's softmax rows of
    // different lengths after the previous sequence's.
    let mut comp = compression::preset("w4a8-g128").unwrap();
    comp.kv.policy.streaming_fraction = 0.5;
    comp.kv.policy.sink = 4;
    comp.kv.policy.window = 8;
    comp.kv.format = KvFormat::Int8;
    check_step(&tiny_llama, &comp, 30, 2, 15);
    // Biases on every projection: `add_row` adds each bias to every sequence's row.
    let biased = with_biases(&tiny_llama);
    let comp = compression::preset("w4a16-g128").unwrap();
    check_step(&biased, &comp, 19, 3, 16);
}

/// A two-layer model of the GPT-2 family (learned positions, LayerNorm, GELU, biases on every
/// projection), or of OPT's (`opt`: ReLU), as small as tiny-llama.
fn tiny_learned_positions(opt: bool) -> ModelConfig {
    let config = match opt {
        false => {
            r#"{"model_type": "gpt2", "n_embd": 128, "n_head": 4, "n_layer": 2,
            "n_positions": 512, "vocab_size": 256, "activation_function": "gelu_new"}"#
        }
        true => {
            r#"{"model_type": "opt", "hidden_size": 128, "ffn_dim": 256,
            "num_attention_heads": 4, "num_hidden_layers": 2, "max_position_embeddings": 512,
            "vocab_size": 256, "activation_function": "relu", "do_layer_norm_before": true,
            "word_embed_proj_dim": 128}"#
        }
    };
    model::from_hf_json(config, "tiny.json", "tiny").unwrap()
}

#[test]
fn models_with_learned_positions_compute_on_data() {
    // The token's row and its position's row of the tables, each dequantised, then added;
    // LayerNorm with gains and biases; an ungated FFN; no rotary embedding.
    for (opt, preset, context, seed) in [
        (false, "w4a8-g128", 23, 21),
        (false, "w4a16-g128", 9, 22),
        (true, "w8a8", 31, 23),
    ] {
        let m = tiny_learned_positions(opt);
        assert!(matches!(m.positions, Positions::Learned { .. }));
        check_step(&m, &compression::preset(preset).unwrap(), context, 1, seed);
    }
    // fp16 embedding tables (the rows added as gathered; the tied head's weights fp16 too), an
    // int8 KV cache, two sequences.
    let mut comp = compression::preset("w4a16-g128").unwrap();
    comp.kv.format = KvFormat::Int8;
    check_step(&tiny_learned_positions(false), &comp, 17, 2, 24);
    // Prompts: without a rotary embedding, each query block's rows are copied per head out of
    // the fused projection's rows; one and several blocks, one and two sequences; int8 tables'
    // rows dequantised 64 tokens at a time (150 tokens: three times).
    for (opt, preset, kv, batch, seq, seed) in [
        (false, "w4a8-g128", KvFormat::Fp16, 1, 150, 25),
        (true, "w4a16-g128", KvFormat::Int8, 1, 150, 26),
        (false, "w4a8-g128", KvFormat::Int8, 2, 40, 27),
    ] {
        let mut comp = compression::preset(preset).unwrap();
        comp.kv.format = kv;
        let m = tiny_learned_positions(opt);
        check_pass(&m, &comp, Phase::Prefill { seq }, batch, seed);
    }
}

#[test]
fn compiled_prefills_equal_the_reference_decoder_token_by_token() {
    // A prompt into an empty cache: every linear layer one product of all the prompt's rows
    // (more than the u280's 16 PE rows), attention in query blocks over the keys up to each
    // block's last query with a causal softmax, the head over the last token; its logits and
    // every appended key and value equal decode steps run token by token.
    let tiny_llama = model::preset("tiny-llama").unwrap();
    let cases = [
        ("w4a8-g128", KvFormat::Fp16, 24, 21),
        ("w4a16-g128", KvFormat::Int8, 33, 22),
        ("w4a8-nm8", KvFormat::Int8, 20, 23),
        ("w8a8", KvFormat::Fp16, 17, 24),
        // Several query blocks, the last one partial.
        ("w4a8-g128", KvFormat::Int8, 300, 25),
        ("w4a16-g128", KvFormat::Fp16, 150, 26),
    ];
    for (preset, kv, seq, seed) in cases {
        let mut comp = compression::preset(preset).unwrap();
        comp.kv.format = kv;
        check_pass(&tiny_llama, &comp, Phase::Prefill { seq }, 1, seed);
    }
    // Prompts of several sequences, each with its own tokens and cache: the final norm reads
    // each one's last row and the head computes their logits in one product.
    for (preset, kv, batch, seq, seed) in [
        ("w4a8-g128", KvFormat::Int8, 2, 24, 29),
        ("w4a16-g128", KvFormat::Fp16, 3, 40, 30),
    ] {
        let mut comp = compression::preset(preset).unwrap();
        comp.kv.format = kv;
        check_pass(&tiny_llama, &comp, Phase::Prefill { seq }, batch, seed);
    }
    // Biases on every projection (fp16 rows): `add_row` adds each to every token's row.
    let biased = with_biases(&tiny_llama);
    let comp = compression::preset("w4a16-g128").unwrap();
    check_pass(&biased, &comp, Phase::Prefill { seq: 19 }, 1, 28);
}
