//! Functional mode: data computed through the instruction stream (DMA, tiles, packed weights,
//! scales, N:M indices, SFU rows) equals the golden reference bit for bit.

mod common;

use half::f16;
use tessera_compiler::kv::{visible_keys, AttentionOperands, KvLayout, Rows};
use tessera_compiler::lower::{lower_linear, BufferRoles};
use tessera_sim::golden::{quantize_rows, round_f16, QuantWeights, Rng};
use tessera_sim::{simulate_functional, simulate_with, DataState, SimOptions};
use tessera_spec::accel::{Accelerator, SfuOp};
use tessera_spec::analytical::matrix_operand_bytes;
use tessera_spec::compression::{self, Compression, OpClass};
use tessera_spec::isa::data::{encode_weights, f16_bytes, f16_values, f32_values, sfu_row};
use tessera_spec::isa::{assemble, BufRef, Instruction, Program, Sync, SysInstr, SysOp, UnitMask};
use tessera_spec::model;

const WEIGHTS: u8 = 0;
const ACTS: u8 = 1;
const ACCUM: u8 = 3;
const OUT: u64 = 0x10_0000;

fn u280() -> Accelerator {
    Accelerator::preset("u280").unwrap()
}

/// Runs `x[rows × k] · W` on the u280: a load of the activations, a load of each tile's encoded
/// weights (and N:M indices) from its own channel, one matrix instruction per tile of `tile`
/// columns (with `split_k`, two accumulating halves of the reduction, `rows` must be 1), and a
/// store of every tile's result. Returns the results as `rows × n` fp32.
fn run_linear(w: &QuantWeights, x: &[i8], rows: usize, tile: usize, split_k: bool) -> Vec<f32> {
    let accel = u280();
    let mut data = DataState::new(&accel);
    let x_bytes: Vec<u8> = x.iter().map(|v| *v as u8).collect();
    data.write_dram(31, 0, &x_bytes);
    let weight = format!("int{}", w.bits);
    let (sparse, nm_n) = match &w.kept {
        Some(mask) => ("nm", mask[..16].iter().filter(|k| **k).count()),
        None => ("dense", 0),
    };
    let groups = w.k.checked_div(w.group).unwrap_or(1);
    let parts = if split_k { 2 } else { 1 };
    let (k_part, g_part) = (w.k / parts, groups / parts);
    let mut loads = vec![format!(
        "load buffer={ACTS} channel=31 bytes={} release=sys",
        x_bytes.len()
    )];
    let mut compute = Vec::new();
    let mut stores = Vec::new();
    let (mut b_addr, mut meta_addr) = (0usize, 0x1_0000usize);
    for t in 0..w.n / tile {
        for part in 0..parts {
            let cols = t * tile..(t + 1) * tile;
            let ks = part * k_part..(part + 1) * k_part;
            let pick = |j: usize| ks.clone().map(move |p| j * w.k + p);
            let values: Vec<i32> = cols.clone().flat_map(pick).map(|i| w.values[i]).collect();
            // The tile's scales, then its zero points in the same order.
            let at: Vec<usize> = cols
                .clone()
                .flat_map(|j| (part * g_part..(part + 1) * g_part).map(move |g| j * groups + g))
                .collect();
            let mut scales: Vec<f32> = at.iter().map(|&i| w.scales[i]).collect();
            if let Some(z) = &w.zero_points {
                scales.extend(at.iter().map(|&i| z[i]));
            }
            let mask: Option<Vec<bool>> = w
                .kept
                .as_ref()
                .map(|m| cols.clone().flat_map(pick).map(|i| m[i]).collect());
            let (b, meta) =
                encode_weights(&values, &scales, k_part as u64, w.bits, mask.as_deref());
            let channel = (t * parts + part) % 31;
            data.write_dram(channel as u8, 0x4000, &b);
            loads.push(format!(
                "load buffer={WEIGHTS} channel={channel} dram_addr_lo=0x4000 buf_addr={b_addr} \
                 bytes={} release=sys",
                b.len()
            ));
            if w.kept.is_some() {
                data.write_dram(channel as u8, 0x8_0000, &meta);
                loads.push(format!(
                    "load buffer={ACCUM} channel={channel} dram_addr_lo=0x80000 \
                     buf_addr={meta_addr} bytes={} release=sys",
                    meta.len()
                ));
            }
            let c_addr = t * tile * rows * 4;
            let last = part + 1 == parts;
            compute.push(format!(
                "matmul {} a_buffer={ACTS} a_addr={} b_buffer={WEIGHTS} b_addr={b_addr} \
                 c_buffer={ACCUM} c_addr={c_addr} meta_buffer={ACCUM} meta_addr={meta_addr} \
                 m={rows} n={tile} k={k_part} weight={weight} act_int8=1 sparse={sparse} \
                 nm_n={nm_n} group={} accumulate={} zero_points={} {}",
                if compute.is_empty() { "wait=sys" } else { "" },
                part * k_part,
                w.group,
                u8::from(part > 0),
                u8::from(w.zero_points.is_some()),
                if last { "release=st" } else { "" },
            ));
            if last {
                stores.push(format!(
                    "store wait=mm buffer={ACCUM} buf_addr={c_addr} channel=31 \
                     dram_addr_lo={} bytes={}",
                    OUT as usize + c_addr,
                    tile * rows * 4
                ));
            }
            b_addr += b.len().next_multiple_of(64);
            meta_addr += meta.len().next_multiple_of(64);
        }
    }
    // The system unit collects one token per load, then lets the matrix unit go.
    let mut sync: Vec<String> = (0..loads.len())
        .map(|_| "sys op=nop wait=ld".into())
        .collect();
    if let Some(last) = sync.last_mut() {
        last.push_str(" release=mm");
    }
    let text = [loads, sync, compute, stores].concat().join("\n");
    let program = assemble(&text).unwrap();
    let report = simulate_functional(&accel, &program, SimOptions::default(), &mut data).unwrap();
    assert!(report.functional);
    // Timing does not depend on the mode.
    let mut timing = simulate_with(&accel, &program, SimOptions::default()).unwrap();
    timing.functional = true;
    assert_eq!(timing, report);
    // Reassemble the tiles (each rows × tile, row-major) into rows × n.
    let out = f32_values(&data.read_dram(31, OUT, (rows * w.n * 4) as u64));
    let mut y = vec![0f32; rows * w.n];
    for t in 0..w.n / tile {
        for r in 0..rows {
            for c in 0..tile {
                y[r * w.n + t * tile + c] = out[t * tile * rows + r * tile + c];
            }
        }
    }
    y
}

fn bits_of(v: &[f32]) -> Vec<u32> {
    v.iter().map(|x| x.to_bits()).collect()
}

fn activations(rng: &mut Rng, len: usize) -> Vec<i8> {
    let mut x: Vec<i8> = (0..len).map(|_| rng.int(-128, 127) as i8).collect();
    // Edge values: the extremes, and an all-zero stretch.
    x[0] = -128;
    x[1] = 127;
    x[2..6].fill(0);
    x
}

#[test]
fn quantised_linear_layers_equal_the_golden_reference() {
    let mut rng = Rng::new(0x7e55e7a);
    // (bits, group, N of 16 kept, rows, split k, zero points)
    let cases = [
        (4, 128, None, 1, false, false),
        (4, 128, None, 4, false, false),
        (4, 128, None, 1, true, false),
        (8, 0, None, 2, false, false),
        (3, 64, None, 1, false, false),
        (2, 32, None, 3, false, false),
        (4, 128, Some(8), 1, false, false),
        (4, 64, Some(2), 2, false, false),
        (8, 128, Some(4), 1, true, false),
        (4, 32, Some(16), 1, false, false),
        // Asymmetric weights: each group's term is scale · (dot − z · Σ kept activations).
        (4, 128, None, 2, false, true),
        (8, 0, None, 1, false, true),
        (3, 32, None, 1, false, true),
        (4, 64, Some(8), 3, false, true),
        (4, 128, None, 1, true, true),
    ];
    for (bits, group, nm, rows, split, asymmetric) in cases {
        let (k, n) = (256, 128);
        let mut w = QuantWeights::random(&mut rng, k, n, bits, group, nm);
        if asymmetric {
            w = w.with_zero_points(&mut rng);
        }
        let x = activations(&mut rng, rows * k);
        let got = run_linear(&w, &x, rows, 32, split);
        let want = w.linear_int8(&x, rows);
        assert_eq!(
            bits_of(&got),
            bits_of(&want),
            "int{bits} g{group} {nm:?}:{rows} rows, split {split}, zero points {asymmetric}"
        );
        assert!(want.iter().any(|v| *v != 0.0));
    }
}

/// A symmetric int8-activation compression of the FFN weights: `bits`, `group`, N of 16 kept.
fn ffn_compression(bits: u32, group: u32, nm: Option<u32>) -> Compression {
    let sparsity = nm.map_or(String::new(), |n| {
        format!("[weights.ffn]\nsparsity = {{ kind = \"nm\", n = {n}, m = 16 }}\n")
    });
    let text = format!(
        "name = \"t\"\nactivations = \"int8\"\n[weights]\nbits = {bits}\ngroup_size = {group}\n\
         symmetric = true\n{sparsity}[kv]\nformat = \"fp16\"\n"
    );
    compression::from_toml_str(&text, "test.toml").unwrap()
}

/// Runs the compiler's lowering of `x[m × k] · W` on the u280: every wave's columns encoded as
/// the matrix instruction reads them, cut into the compiler's slices and written where its waves
/// say, the input at the start of the activation buffer. Returns the results as `m × n` fp32.
fn run_compiled_linear(comp: &Compression, w: &QuantWeights, x: &[i8], m: usize) -> Vec<f32> {
    let accel = u280();
    let (k, n) = (w.k, w.n);
    let lowered = lower_linear(
        &accel,
        comp,
        "fc",
        OpClass::Ffn,
        (m as u64, k as u64, n as u64),
    )
    .unwrap();
    assert!(lowered.waves.len() >= 4, "{} waves", lowered.waves.len());
    let roles = BufferRoles::by_name(&accel, "fc").unwrap();
    let mut data = DataState::new(&accel);
    let x_bytes: Vec<u8> = x.iter().map(|v| *v as u8).collect();
    data.write_buffer(roles.activations, 0, &x_bytes);
    let groups = k.checked_div(w.group).unwrap_or(1);
    for wave in &lowered.waves {
        let cols = wave.rows.start as usize..wave.rows.end as usize;
        let values: Vec<i32> = w.values[cols.start * k..cols.end * k].to_vec();
        let scales: Vec<f32> = w.scales[cols.start * groups..cols.end * groups].to_vec();
        let mask = w
            .kept
            .as_ref()
            .map(|m| m[cols.start * k..cols.end * k].to_vec());
        let (mut bytes, meta) = encode_weights(&values, &scales, k as u64, w.bits, mask.as_deref());
        bytes.extend(meta);
        // The compiler streams exactly the bytes the encoder writes.
        let streamed: u64 = wave.slices.iter().map(|s| s.bytes).sum();
        assert_eq!(streamed, bytes.len() as u64, "wave {cols:?}");
        for s in &wave.slices {
            let piece = &bytes[s.offset as usize..(s.offset + s.bytes) as usize];
            data.write_dram(s.channel, s.dram_addr, piece);
        }
    }
    let program = &lowered.program;
    let report = simulate_functional(&accel, program, SimOptions::default(), &mut data).unwrap();
    assert!(report.functional);
    // One row-major `m × n` tensor: each wave's product writes its columns of every row.
    for ins in &program.instructions {
        if let Instruction::Matvec(op) | Instruction::Matmul(op) = ins {
            assert_eq!(op.m as usize, m, "results that fit take every row at once");
        }
    }
    f32_values(&data.buffer(roles.results)[..m * n * 4])
}

#[test]
fn compiled_linear_layers_equal_the_golden_reference() {
    let mut rng = Rng::new(0xc0de);
    // (bits, group, N of 16 kept, input rows): products on the matrix-vector unit (one row) and
    // the matrix-matrix unit (several), every wave split over the u280's 32 channels.
    let cases = [
        (4, 128, None, 1),
        (4, 128, None, 5),
        (8, 0, None, 1),
        (3, 64, None, 2),
        (2, 32, None, 1),
        (4, 128, Some(8), 1),
        (4, 64, Some(2), 3),
        (8, 128, Some(4), 1),
        // Prefill-sized inputs, more rows than the u280's 16 PE rows: the results (fp32) fit
        // the results buffer, so each wave's one product lands its columns in place.
        (4, 128, None, 40),
        (4, 64, Some(8), 17),
        (8, 0, None, 100),
    ];
    for (bits, group, nm, m) in cases {
        let (k, n) = (384, 700);
        let comp = ffn_compression(bits, group as u32, nm.map(|n| n as u32));
        let w = QuantWeights::random(&mut rng, k, n, bits, group, nm);
        let x = activations(&mut rng, m * k);
        let got = run_compiled_linear(&comp, &w, &x, m);
        let want = w.linear_int8(&x, m);
        assert_eq!(
            bits_of(&got),
            bits_of(&want),
            "int{bits} g{group} {nm:?}: {m} rows"
        );
        assert!(want.iter().all(|v| v.is_finite()) && want.iter().any(|v| *v != 0.0));
    }
}

#[test]
fn strided_results_land_in_a_wider_row_major_tensor() {
    // y[3 × 48] = x[3 × 64] · W in three tiles of 16 columns, each tile's two halves of the
    // reduction accumulating, every tile writing its rows 48 elements apart (fp16).
    let accel = u280();
    let mut rng = Rng::new(0x5721de);
    let (rows, k, n, tile) = (3usize, 64usize, 48usize, 16usize);
    let w = QuantWeights::random(&mut rng, k, n, 8, 32, None);
    let x = activations(&mut rng, rows * k);
    let mut data = DataState::new(&accel);
    data.write_buffer(ACTS, 0, &x.iter().map(|v| *v as u8).collect::<Vec<_>>());
    // The activations' halves, each `rows × 32`, side by side after the whole input.
    let halves: Vec<Vec<u8>> = (0..2)
        .map(|h| {
            (0..rows)
                .flat_map(|r| {
                    x[r * k + h * 32..r * k + (h + 1) * 32]
                        .iter()
                        .map(|v| *v as u8)
                })
                .collect()
        })
        .collect();
    let mut lines = Vec::new();
    let mut b_addr = 0;
    for t in 0..n / tile {
        for (h, half) in halves.iter().enumerate() {
            let a_addr = 0x1000 + h * 0x100;
            data.write_buffer(ACTS, a_addr as u64, half);
            let cols = t * tile..(t + 1) * tile;
            let values: Vec<i32> = cols
                .clone()
                .flat_map(|j| (h * 32..(h + 1) * 32).map(move |p| j * k + p))
                .map(|i| w.values[i])
                .collect();
            let scales: Vec<f32> = cols.clone().map(|j| w.scales[j * 2 + h]).collect();
            let (b, _) = encode_weights(&values, &scales, 32, 8, None);
            data.write_buffer(WEIGHTS, b_addr as u64, &b);
            lines.push(format!(
                "matmul a_buffer={ACTS} a_addr={a_addr} b_buffer={WEIGHTS} b_addr={b_addr} \
                 c_buffer={ACTS} c_addr={} m={rows} n={tile} k=32 weight=int8 act_int8=1 \
                 group=32 out=fp16 accumulate={h} c_stride={n}",
                0x2000 + t * tile * 2
            ));
            b_addr += b.len().next_multiple_of(64);
        }
    }
    let program = assemble(&lines.join("\n")).unwrap();
    simulate_functional(&accel, &program, SimOptions::default(), &mut data).unwrap();
    let got = f16_values(&data.buffer(ACTS)[0x2000..0x2000 + rows * n * 2]);
    // The first half rounds to fp16 before the second adds to it.
    let first = QuantWeights {
        k: 32,
        values: (0..n)
            .flat_map(|j| w.values[j * k..j * k + 32].to_vec())
            .collect(),
        scales: (0..n).map(|j| w.scales[j * 2]).collect(),
        ..w.clone()
    };
    let second = QuantWeights {
        values: (0..n)
            .flat_map(|j| w.values[j * k + 32..(j + 1) * k].to_vec())
            .collect(),
        scales: (0..n).map(|j| w.scales[j * 2 + 1]).collect(),
        ..first.clone()
    };
    let (x0, x1): (Vec<i8>, Vec<i8>) = (
        halves[0].iter().map(|b| *b as i8).collect(),
        halves[1].iter().map(|b| *b as i8).collect(),
    );
    let partial = round_f16(&first.linear_int8(&x0, rows));
    let sum: Vec<f32> = second
        .linear_int8(&x1, rows)
        .iter()
        .zip(&partial)
        .map(|(a, b)| a + b)
        .collect();
    assert_eq!(bits_of(&got), bits_of(&round_f16(&sum)));
    // Nothing is written between or after the rows.
    assert!(data.buffer(ACTS)[0x2000 + rows * n * 2..0x3000]
        .iter()
        .all(|b| *b == 0));
}

#[test]
fn weights_stored_by_rows_multiply_as_their_layout_says() {
    // o[3 × 8] = p[3 × 5] · v[5 × 8], v token-major (b_rows), fp16 in, fp32 sums in order.
    let accel = u280();
    let mut rng = Rng::new(0xb0);
    let (m, k, n) = (3usize, 5usize, 8usize);
    let value = |rng: &mut Rng| rng.int(-2000, 2000) as f32 / 1024.0;
    let p = round_f16(&(0..m * k).map(|_| value(&mut rng)).collect::<Vec<_>>());
    let v = round_f16(&(0..k * n).map(|_| value(&mut rng)).collect::<Vec<_>>());
    let mut data = DataState::new(&accel);
    data.write_buffer(ACTS, 0, &f16_bytes(&p));
    data.write_buffer(WEIGHTS, 0, &f16_bytes(&v));
    let program = assemble(&format!(
        "matmul a_buffer={ACTS} b_buffer={WEIGHTS} c_buffer={ACTS} c_addr=4096 m={m} n={n} k={k} \
         weight=fp16 b_rows=1 out=fp16"
    ))
    .unwrap();
    simulate_functional(&accel, &program, SimOptions::default(), &mut data).unwrap();
    let got = f16_values(&data.buffer(ACTS)[4096..4096 + m * n * 2]);
    let want: Vec<f32> = (0..m * n)
        .map(|i| {
            let (r, j) = (i / n, i % n);
            (0..k).fold(0f32, |acc, q| acc + p[r * k + q] * v[q * n + j])
        })
        .collect();
    assert_eq!(bits_of(&got), bits_of(&round_f16(&want)));
}

#[test]
fn int8_weights_stored_by_rows_multiply_without_scales() {
    // W[3 × 2] by rows, int8, no scales: k × n = 6 bytes.
    let accel = u280();
    let w: [i8; 6] = [10, -1, 5, 2, -3, 7];
    let run = |a: &[u8], act: &str| {
        let mut data = DataState::new(&accel);
        data.write_buffer(ACTS, 0, a);
        data.write_buffer(WEIGHTS, 0, &w.map(|v| v as u8));
        let program = assemble(&format!(
            "matmul a_buffer={ACTS} b_buffer={WEIGHTS} c_buffer={ACTS} c_addr=4096 m=2 n=2 k=3 \
             weight=int8 b_rows=1 out=fp32 {act}"
        ))
        .unwrap();
        let Instruction::Matmul(op) = program.instructions[0] else {
            panic!("a matmul")
        };
        assert_eq!(matrix_operand_bytes(&op).b, 6);
        simulate_functional(&accel, &program, SimOptions::default(), &mut data).unwrap();
        f32_values(&data.buffer(ACTS)[4096..4096 + 16])
    };
    // Int8 rows [1, −2, 3] (scale 0.5) and [4, 0, −1] (scale 2): int32 dot products
    // (−9, 16; 43, −11) times the row scales.
    let mut a: Vec<u8> = [1i8, -2, 3, 4, 0, -1].map(|v| v as u8).to_vec();
    a.extend(f16_bytes(&[0.5, 2.0]));
    assert_eq!(
        run(&a, "act_int8=1 a_scaled=1"),
        vec![-4.5, 8.0, 86.0, -22.0]
    );
    // fp16 rows [0.5, −1.25, 2] and [−1, 0.25, 0]: fp32 dot products with the exact int8 weights.
    let a = f16_bytes(&[0.5, -1.25, 2.0, -1.0, 0.25, 0.0]);
    assert_eq!(run(&a, "act_int8=0"), vec![-7.25, 11.0, -8.75, 1.5]);
}

/// `instructions` and a `halt`, each instruction waiting for nothing its predecessors do not
/// release (the attention lowering's own tokens order it).
fn program(mut instructions: Vec<Instruction>) -> Program {
    instructions.push(Instruction::Sys(SysInstr {
        sync: Sync {
            wait: UnitMask::NONE,
            release: UnitMask::NONE,
        },
        op: SysOp::Halt,
    }));
    Program { instructions }
}

#[test]
fn compiled_decode_attention_equals_the_golden_reference() {
    // tiny-llama: 4 query heads in 2 KV groups of 32 dimensions; the second KV head streams
    // (sink 4 + window 60). Context 600: 601 keys, several waves of keys.
    let accel = u280();
    let m = model::preset("tiny-llama").unwrap();
    let mut comp = compression::preset("w4a8-g128").unwrap();
    comp.kv.policy.streaming_fraction = 0.5;
    comp.kv.policy.sink = 4;
    comp.kv.policy.window = 60;
    let (d, heads, kv_heads) = (32usize, 4usize, 2usize);
    let group = heads / kv_heads;
    let context = 600u64;
    let layout = KvLayout::new(&accel, &comp, &m, 1, 1024, "test").unwrap();
    let roles = BufferRoles::by_name(&accel, "attn").unwrap();
    let kv_buffer = 2; // u280's `kv` buffer
    let mut rng = Rng::new(0xa77e);
    let mut value = || f16::from_f32(rng.int(-3000, 3000) as f32 / 2048.0).to_f32();
    let mut data = DataState::new(&accel);
    // The cache before the step: keys and values of positions 0..context.
    let k: Vec<Vec<Vec<f32>>> = (0..kv_heads)
        .map(|_| {
            (0..=context)
                .map(|_| (0..d).map(|_| value()).collect())
                .collect()
        })
        .collect();
    let v: Vec<Vec<Vec<f32>>> = (0..kv_heads)
        .map(|_| {
            (0..=context)
                .map(|_| (0..d).map(|_| value()).collect())
                .collect()
        })
        .collect();
    let part = layout.part_dims() as usize;
    for h in 0..kv_heads {
        for pos in 0..context as usize {
            let (ch, at) = layout.key(0, 1, h as u64, pos as u64);
            data.write_dram(ch, at, &f16_bytes(&k[h][pos]));
            for p in 0..layout.parts() as usize {
                let (ch, at) = layout.value(0, 1, h as u64, p as u64, pos as u64);
                data.write_dram(ch, at, &f16_bytes(&v[h][pos][p * part..(p + 1) * part]));
            }
        }
    }
    // The step's own key and value, appended from on chip.
    let (k_new, v_new) = (0x10000u64, 0x11000u64);
    let row = |x: &Vec<Vec<Vec<f32>>>| -> Vec<f32> {
        (0..kv_heads)
            .flat_map(|h| x[h][context as usize].clone())
            .collect()
    };
    data.write_buffer(roles.activations, k_new, &f16_bytes(&row(&k)));
    data.write_buffer(roles.activations, v_new, &f16_bytes(&row(&v)));
    let rows = |addr| Rows {
        buffer: roles.activations,
        addr,
        token_stride: (kv_heads * d * 2) as u64,
        head_stride: (d * 2) as u64,
        scales: None,
    };
    let span = context..context + 1;
    let mut append = layout.append((0, 1), span.clone(), rows(k_new), false);
    append.extend(layout.append((0, 1), span, rows(v_new), true));
    simulate_functional(&accel, &program(append), SimOptions::default(), &mut data).unwrap();
    // Scores of the step's queries against every visible key.
    let keys = visible_keys(&m, &comp, context);
    assert_eq!(keys[0], vec![0..601]);
    assert_eq!(keys[1], vec![0..4, 541..601]);
    let q: Vec<f32> = (0..heads * d).map(|_| value()).collect();
    data.write_buffer(roles.activations, 0, &f16_bytes(&q));
    let at = |a: u64, c: u64| AttentionOperands {
        a: BufRef {
            buffer: roles.activations,
            addr: a as u32,
        },
        c: BufRef {
            buffer: roles.activations,
            addr: c as u32,
        },
        kv_buffer,
        split: None,
    };
    let scores = layout
        .attention(
            &accel,
            &comp,
            (0, 1),
            group as u64,
            &keys,
            false,
            at(0, 0x20000),
            "s",
        )
        .unwrap();
    assert!(
        scores
            .iter()
            .filter(|i| matches!(i, Instruction::Matmul(_)))
            .count()
            > 2
    );
    simulate_functional(&accel, &program(scores), SimOptions::default(), &mut data).unwrap();
    let positions = common::positions(&keys);
    let total: usize = positions.iter().map(|p| p.len() * group).sum();
    let got = f16_values(&data.buffer(roles.activations)[0x20000..0x20000 + total * 2]);
    let mut want = Vec::new();
    for (h, pos) in positions.iter().enumerate() {
        for r in 0..group {
            let qh = &q[(h * group + r) * d..(h * group + r + 1) * d];
            for &p in pos {
                want.push((0..d).fold(0f32, |acc, i| acc + qh[i] * k[h][p][i]));
            }
        }
    }
    assert_eq!(bits_of(&got), bits_of(&round_f16(&want)));
    // The weighted sum of the values, with probabilities in the scores' layout.
    let probs: Vec<f32> = (0..total).map(|_| value().abs() / 4.0).collect();
    data.write_buffer(roles.activations, 0x30000, &f16_bytes(&probs));
    let values = layout
        .attention(
            &accel,
            &comp,
            (0, 1),
            group as u64,
            &keys,
            true,
            at(0x30000, 0x40000),
            "v",
        )
        .unwrap();
    simulate_functional(&accel, &program(values), SimOptions::default(), &mut data).unwrap();
    let got = f16_values(&data.buffer(roles.activations)[0x40000..0x40000 + heads * d * 2]);
    let mut want = Vec::new();
    let mut at_prob = 0;
    for (h, pos) in positions.iter().enumerate() {
        for _ in 0..group {
            let pr = &probs[at_prob..at_prob + pos.len()];
            at_prob += pos.len();
            want.extend((0..d).map(|i| {
                pr.iter()
                    .zip(pos)
                    .fold(0f32, |acc, (p, &j)| acc + p * v[h][j][i])
            }));
        }
    }
    assert_eq!(bits_of(&got), bits_of(&round_f16(&want)));
}

#[test]
fn special_function_rows_land_where_the_operands_say() {
    // rms_norm (γ shared by rows), rotary (one row of angles shared by rows), add (per-row aux)
    // and dequantize over a 3 × 64 tile, each reading the previous result, against the row math
    // applied to the logical values.
    let accel = u280();
    let mut data = DataState::new(&accel);
    let mut rng = Rng::new(9);
    let (rows, cols) = (3usize, 64usize);
    let mut random = |len: usize| -> Vec<f32> {
        let v: Vec<f32> = (0..len)
            .map(|_| rng.int(-4000, 4000) as f32 / 1000.0)
            .collect();
        f16_values(&f16_bytes(&v))
    };
    let x = random(rows * cols);
    let gamma = random(cols);
    let angles = random(cols);
    let residual = random(rows * cols);
    data.write_dram(0, 0, &f16_bytes(&x));
    data.write_dram(0, 0x1000, &f16_bytes(&gamma));
    data.write_dram(0, 0x2000, &f16_bytes(&angles));
    // int8 rows and their fp16 scales, as an embedding table stores them.
    let row_scales = random(rows);
    let int8: Vec<i8> = random(rows * cols)
        .iter()
        .map(|v| (v * 31.0) as i8)
        .collect();
    let mut stored: Vec<u8> = int8.iter().map(|v| *v as u8).collect();
    stored.extend(f16_bytes(&row_scales));
    data.write_dram(0, 0x5000, &stored);
    data.write_dram(0, 0x3000, &f16_bytes(&residual));
    let n = rows * cols * 2;
    let text = format!(
        "load buffer=1 channel=0 bytes={n} release=sys
         load buffer=1 channel=0 dram_addr_lo=0x1000 buf_addr=0x1000 bytes={} release=sys
         load buffer=1 channel=0 dram_addr_lo=0x2000 buf_addr=0x2000 bytes={} release=sys
         load buffer=1 channel=0 dram_addr_lo=0x3000 buf_addr=0x3000 bytes={n} release=sys
         load buffer=1 channel=0 dram_addr_lo=0x5000 buf_addr=0x5000 bytes={} release=sys
         sys op=nop wait=ld
         sys op=nop wait=ld
         sys op=nop wait=ld
         sys op=nop wait=ld
         sys op=nop wait=ld release=sfu
         sfu wait=sys op=rms_norm src_buffer=1 aux_buffer=1 aux_addr=0x1000 dst_buffer=2 rows={rows} cols={cols}
         sfu op=rotary src_buffer=2 aux_buffer=1 aux_addr=0x2000 dst_buffer=2 dst_addr=0x4000 rows={rows} cols={cols}
         sfu op=add src_buffer=2 src_addr=0x4000 aux_buffer=1 aux_addr=0x3000 dst_buffer=2 dst_addr=0x8000 rows={rows} cols={cols}
         sfu op=dequantize src_buffer=1 src_addr=0x5000 dst_buffer=2 dst_addr={} rows={rows} cols={cols} release=st
         store wait=sfu buffer=2 buf_addr=0x8000 channel=1 bytes={}",
        cols * 2,
        cols * 2,
        stored.len(),
        0x8000 + n,
        2 * n
    );
    let program = assemble(&text).unwrap();
    simulate_functional(&accel, &program, SimOptions::default(), &mut data).unwrap();
    let got = f16_values(&data.read_dram(1, 0, 2 * n as u64));
    let round = |v: Vec<f32>| f16_values(&f16_bytes(&v));
    let mut want = Vec::new();
    for r in 0..rows {
        let row = |v: &[f32]| v[r * cols..(r + 1) * cols].to_vec();
        let normed = round(sfu_row(SfuOp::RmsNorm, &row(&x), &gamma));
        let rotated = round(sfu_row(SfuOp::Rotary, &normed, &angles));
        want.extend(round(sfu_row(SfuOp::Add, &rotated, &row(&residual))));
    }
    for r in 0..rows {
        let values: Vec<f32> = int8[r * cols..(r + 1) * cols]
            .iter()
            .map(|v| *v as f32)
            .collect();
        let scaled: Vec<f32> = values.iter().map(|v| v * row_scales[r]).collect();
        assert_eq!(
            sfu_row(SfuOp::Dequantize, &values, &row_scales[r..r + 1]),
            scaled
        );
        want.extend(round(scaled));
    }
    assert_eq!(bits_of(&got), bits_of(&want));
}

#[test]
fn strided_rows_and_the_causal_softmax_read_and_write_where_they_say() {
    // A 4 × 16 tile held in rows 40 elements apart: `mul` by a same-shape operand in rows 32
    // apart writes packed rows; a causal `softmax` of those, first row over 3 elements and the
    // mask restarting every 3 rows, writes its rows 24 elements apart with zeros after each
    // row's visible part; a packed `silu`
    // reads them back, and a `rotary` turns each of its rows by its own row of angles (20
    // apart). Every byte between the strided rows stays as it was.
    let accel = u280();
    let mut data = DataState::new(&accel);
    let mut rng = Rng::new(17);
    let (rows, cols, src_stride, dst_stride, causal) = (4usize, 16usize, 40usize, 24usize, 3);
    let mut random = |len: usize| -> Vec<f32> {
        let v: Vec<f32> = (0..len)
            .map(|_| rng.int(-3000, 3000) as f32 / 1000.0)
            .collect();
        f16_values(&f16_bytes(&v))
    };
    let x = random(rows * src_stride);
    let aux_stride = 32;
    let y = random(rows * aux_stride);
    let angles = random(rows * 20);
    data.write_dram(0, 0x3000, &f16_bytes(&angles));
    let filler = random(rows * dst_stride);
    data.write_dram(0, 0, &f16_bytes(&x));
    data.write_dram(0, 0x1000, &f16_bytes(&y));
    data.write_dram(0, 0x2000, &f16_bytes(&filler));
    let (n, m) = (2 * rows * src_stride, 2 * rows * dst_stride);
    let text = format!(
        "load buffer=1 channel=0 bytes={n} release=sys
         load buffer=1 channel=0 dram_addr_lo=0x1000 buf_addr=0x1000 bytes={n} release=sys
         load buffer=2 channel=0 dram_addr_lo=0x2000 buf_addr=0x2000 bytes={m} release=sys
         load buffer=1 channel=0 dram_addr_lo=0x3000 buf_addr=0x3000 bytes={} release=sys
         sys op=nop wait=ld
         sys op=nop wait=ld
         sys op=nop wait=ld
         sys op=nop wait=ld release=sfu
         sfu wait=sys op=mul src_buffer=1 aux_buffer=1 aux_addr=0x1000 dst_buffer=2 rows={rows} cols={cols} src_stride={src_stride} aux_stride={aux_stride}
         sfu op=softmax src_buffer=2 dst_buffer=2 dst_addr=0x2000 rows={rows} cols={cols} dst_stride={dst_stride} causal={causal} causal_period=3
         sfu op=silu src_buffer=2 src_addr=0x2000 dst_buffer=2 dst_addr=0x4000 rows={rows} cols={cols} src_stride={dst_stride}
         sfu op=rotary src_buffer=2 src_addr=0x4000 aux_buffer=1 aux_addr=0x3000 dst_buffer=2 dst_addr=0x4000 rows={rows} cols={cols} aux_stride=20 release=st
         store wait=sfu buffer=2 buf_addr=0x2000 channel=1 bytes={m} release=st
         store wait=st buffer=2 buf_addr=0x4000 channel=1 dram_addr_lo=0x4000 bytes={}",
        2 * rows * 20,
        2 * rows * cols
    );
    let program = assemble(&text).unwrap();
    simulate_functional(&accel, &program, SimOptions::default(), &mut data).unwrap();
    let round = |v: Vec<f32>| f16_values(&f16_bytes(&v));
    let mut want_soft = filler.clone();
    let mut want_silu = Vec::new();
    for r in 0..rows {
        let at = |v: &[f32], stride: usize| v[r * stride..r * stride + cols].to_vec();
        let product = round(sfu_row(
            SfuOp::Mul,
            &at(&x, src_stride),
            &at(&y, aux_stride),
        ));
        let seen = causal + r % 3;
        let mut soft = round(sfu_row(SfuOp::Softmax, &product[..seen], &[]));
        soft.resize(cols, 0.0);
        let silu = round(sfu_row(SfuOp::Silu, &soft, &[]));
        want_silu.extend(round(sfu_row(SfuOp::Rotary, &silu, &at(&angles, 20))));
        want_soft[r * dst_stride..r * dst_stride + cols].copy_from_slice(&soft);
    }
    let got_soft = f16_values(&data.read_dram(1, 0, m as u64));
    let got_silu = f16_values(&data.read_dram(1, 0x4000, 2 * (rows * cols) as u64));
    assert_eq!(bits_of(&got_soft), bits_of(&want_soft));
    assert_eq!(bits_of(&got_silu), bits_of(&want_silu));
}

#[test]
fn a_quantised_mlp_block_chains_formats_through_the_units() {
    // x → rms_norm → quantize → matmul (int4 N:8 of 16, g32, scaled rows, fp16 out) → silu →
    // quantize → matmul (int8, g64, scaled rows) accumulated in fp16 onto the residual x; every
    // operand in the format the previous instruction wrote, against the logical chain.
    let accel = u280();
    let mut data = DataState::new(&accel);
    let mut rng = Rng::new(21);
    let (rows, d, hidden) = (2usize, 64usize, 128usize);
    let mut random = |len: usize, scale: f32| -> Vec<f32> {
        let v: Vec<f32> = (0..len)
            .map(|_| rng.int(-4000, 4000) as f32 / 1000.0 * scale)
            .collect();
        round_f16(&v)
    };
    let x = random(rows * d, 1.0);
    let gamma = random(d, 1.0);
    let mut rng = Rng::new(22);
    let w1 = QuantWeights::random(&mut rng, d, hidden, 4, 32, Some(8));
    let w2 = QuantWeights::random(&mut rng, hidden, d, 8, 64, None);
    let (b1, meta1) = encode_weights(&w1.values, &w1.scales, d as u64, 4, w1.kept.as_deref());
    let (b2, _) = encode_weights(&w2.values, &w2.scales, hidden as u64, 8, None);
    let x_bytes = f16_bytes(&x);
    data.write_dram(0, 0, &x_bytes);
    data.write_dram(0, 0x1000, &f16_bytes(&gamma));
    data.write_dram(1, 0, &b1);
    data.write_dram(1, 0x8000, &meta1);
    data.write_dram(2, 0, &b2);
    let text = format!(
        "load buffer={ACTS} channel=0 bytes={xn} release=sys
         load buffer={ACTS} channel=0 dram_addr_lo=0x1000 buf_addr=0x1000 bytes={gn} release=sys
         load buffer={WEIGHTS} channel=1 bytes={b1n} release=sys
         load buffer={ACCUM} channel=1 dram_addr_lo=0x8000 bytes={m1n} release=sys
         load buffer={WEIGHTS} channel=2 buf_addr=0x8000 bytes={b2n} release=sys
         load buffer={ACCUM} channel=0 buf_addr=0x10000 bytes={xn} release=sys
         sys op=nop wait=ld
         sys op=nop wait=ld
         sys op=nop wait=ld
         sys op=nop wait=ld
         sys op=nop wait=ld
         sys op=nop wait=ld release=sfu
         sfu wait=sys op=rms_norm src_buffer={ACTS} aux_buffer={ACTS} aux_addr=0x1000 dst_buffer={ACTS} dst_addr=0x2000 rows={rows} cols={d}
         sfu op=quantize src_buffer={ACTS} src_addr=0x2000 dst_buffer={ACTS} dst_addr=0x3000 rows={rows} cols={d} release=mm
         matmul wait=sfu a_buffer={ACTS} a_addr=0x3000 b_buffer={WEIGHTS} c_buffer={ACTS} c_addr=0x4000 meta_buffer={ACCUM} m={rows} n={hidden} k={d} weight=int4 act_int8=1 a_scaled=1 out=fp16 sparse=nm nm_n=8 group=32 release=sfu
         sfu wait=mm op=silu src_buffer={ACTS} src_addr=0x4000 dst_buffer={ACTS} dst_addr=0x5000 rows={rows} cols={hidden}
         sfu op=quantize src_buffer={ACTS} src_addr=0x5000 dst_buffer={ACTS} dst_addr=0x6000 rows={rows} cols={hidden} release=mm
         matmul wait=sfu a_buffer={ACTS} a_addr=0x6000 b_buffer={WEIGHTS} b_addr=0x8000 c_buffer={ACCUM} c_addr=0x10000 m={rows} n={d} k={hidden} weight=int8 act_int8=1 a_scaled=1 out=fp16 accumulate=1 group=64 release=st
         store wait=mm buffer={ACCUM} buf_addr=0x10000 channel=3 bytes={xn}",
        xn = x_bytes.len(),
        gn = d * 2,
        b1n = b1.len(),
        m1n = meta1.len(),
        b2n = b2.len(),
    );
    let program = assemble(&text).unwrap();
    simulate_functional(&accel, &program, SimOptions::default(), &mut data).unwrap();
    let got = f16_values(&data.read_dram(3, 0, x_bytes.len() as u64));

    let normed: Vec<f32> = x
        .chunks_exact(d)
        .flat_map(|row| round_f16(&sfu_row(SfuOp::RmsNorm, row, &gamma)))
        .collect();
    let (q1, s1) = quantize_rows(&normed, d);
    let up = round_f16(&w1.linear_int8_scaled(&q1, &s1));
    let act: Vec<f32> = up
        .chunks_exact(hidden)
        .flat_map(|row| round_f16(&sfu_row(SfuOp::Silu, row, &[])))
        .collect();
    let (q2, s2) = quantize_rows(&act, hidden);
    let down = w2.linear_int8_scaled(&q2, &s2);
    let want: Vec<f32> = round_f16(&down.iter().zip(&x).map(|(y, r)| y + r).collect::<Vec<_>>());
    assert_eq!(bits_of(&got), bits_of(&want));
    // The chain is not trivial: the block changes x, and quantisation used the int8 range.
    assert_ne!(bits_of(&got), bits_of(&x));
    assert!(q2.iter().any(|v| v.abs() == 127));
}

#[test]
fn a_matrix_epilogue_equals_the_special_function_passes_it_replaces() {
    // fp16 activations and weights, a bias row and an activation: the epilogue writes, byte for
    // byte, what the plain product followed by `add_row` and the activation writes; with fp32
    // results, the same steps without rounding to fp16.
    let accel = u280();
    let mut rng = Rng::new(41);
    let (m, n, k) = (3usize, 24usize, 32usize);
    let mut random = |len: usize, scale: f32| -> Vec<f32> {
        let v: Vec<f32> = (0..len)
            .map(|_| rng.int(-1000, 1000) as f32 / 1000.0 * scale)
            .collect();
        f16_values(&f16_bytes(&v))
    };
    let (x, w, bias) = (random(m * k, 2.0), random(k * n, 0.5), random(n, 1.0));
    for (act, op) in [
        ("gelu", SfuOp::Gelu),
        ("relu", SfuOp::Relu),
        ("silu", SfuOp::Silu),
    ] {
        for out in ["fp16", "fp32"] {
            let mut data = DataState::new(&accel);
            data.write_dram(0, 0, &f16_bytes(&x));
            data.write_dram(0, 0x1000, &f16_bytes(&w));
            data.write_dram(0, 0x2000, &f16_bytes(&bias));
            let (bytes, c_bytes) = (2 * m * k, if out == "fp16" { 2 } else { 4 } * m * n);
            let text = format!(
                "load buffer=1 channel=0 bytes={bytes} release=sys
                 load buffer=0 channel=0 dram_addr_lo=0x1000 bytes={} release=sys
                 load buffer=1 channel=0 dram_addr_lo=0x2000 buf_addr=0x2000 bytes={} release=sys
                 sys op=nop wait=ld
                 sys op=nop wait=ld
                 sys op=nop wait=ld release=mm
                 matmul wait=sys a_buffer=1 b_buffer=0 c_buffer=3 m={m} n={n} k={k} weight=fp16 out={out} bias=1 bias_buffer=1 bias_addr=0x2000 act={act} release=st
                 store wait=mm buffer=3 channel=1 bytes={c_bytes}",
                2 * k * n,
                2 * n
            );
            simulate_functional(
                &accel,
                &assemble(&text).unwrap(),
                SimOptions::default(),
                &mut data,
            )
            .unwrap();
            let got = data.read_dram(1, 0, c_bytes as u64);
            let got = match out {
                "fp16" => f16_values(&got),
                _ => got
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                    .collect(),
            };
            // The plain product, then the special-function unit's passes over its fp16 results.
            let mut want = Vec::new();
            for r in 0..m {
                let row: Vec<f32> = (0..n)
                    .map(|j| (0..k).fold(0f32, |a, p| a + x[r * k + p] * w[j * k + p]))
                    .collect();
                // Each result rounded to the `out` format after each step.
                let round = |v: Vec<f32>| match out {
                    "fp16" => f16_values(&f16_bytes(&v)),
                    _ => v,
                };
                let biased = round(sfu_row(SfuOp::AddRow, &round(row), &bias));
                want.extend(round(sfu_row(op, &biased, &[])));
            }
            assert_eq!(bits_of(&got), bits_of(&want), "{act} {out}");
        }
    }
}

#[test]
fn unsupported_combinations_are_named() {
    let accel = u280();
    let mut data = DataState::new(&accel);
    let p = assemble("matvec a_buffer=1 b_buffer=0 c_buffer=3 m=1 n=16 k=40 weight=int4 act_int8=1 sparse=nm nm_n=8 group=32")
        .unwrap();
    let e = simulate_functional(&accel, &p, SimOptions::default(), &mut data)
        .unwrap_err()
        .to_string();
    assert!(
        e.contains("instruction 0") && e.contains("functional mode"),
        "{e}"
    );
    // Timing-only simulation accepts it.
    assert!(simulate_with(&accel, &p, SimOptions::default()).is_ok());
}
