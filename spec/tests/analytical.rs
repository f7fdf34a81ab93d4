//! The analytical model against hand-computed formulas and physical bounds.

use tessera_spec::accel::{Accelerator, Holds};
use tessera_spec::analytical::{matrix_tiling, streaming_bandwidth, AccelModel, Bound, GpuModel};
use tessera_spec::compression::{self, Compression, OpClass, Sparsity};
use tessera_spec::gpu::{Gpu, ServingStack};
use tessera_spec::graph::{DType, Graph, Op, OpCost, OpKind, Phase, Tensor, TensorKind};
use tessera_spec::units::Cycles;

/// A graph with one linear operator `m × k → n` whose weight bytes come from `comp`.
fn one_linear(comp: &Compression, m: u64, k: u64, n: u64) -> Graph {
    linear_with_activations(comp, (m, k, n), (0, 0))
}

/// [`one_linear`] reading and writing `(act_in, act_out)` activation bytes.
fn linear_with_activations(
    comp: &Compression,
    (m, k, n): (u64, u64, u64),
    (act_in_bytes, act_out_bytes): (u64, u64),
) -> Graph {
    let mut g = Graph::new("test", Phase::Prefill { seq: m }, 1);
    let wb = comp.weight(OpClass::Ffn).encoded_bytes(n, k);
    let w = g.add_tensor(Tensor {
        name: "w".into(),
        shape: vec![n, k],
        dtype: DType::Int4,
        kind: TensorKind::Weight,
        bytes: wb.total(),
        weight_bytes: Some(wb),
        params: n * k,
        producer: None,
    });
    g.add_op(Op {
        name: "fc".into(),
        kind: OpKind::Linear {
            class: OpClass::Ffn,
            m,
            k,
            n,
            bias: false,
            weight_copies: 1,
        },
        layer: None,
        inputs: vec![w],
        outputs: vec![],
        cost: OpCost {
            macs: m * k * n,
            weight_bytes: wb.total(),
            act_in_bytes,
            act_out_bytes,
            ..OpCost::default()
        },
    });
    g
}

#[test]
fn hbm2_streaming_bandwidth_is_peak_less_refresh() {
    let a = Accelerator::preset("u280").unwrap();
    let hbm = a.memory_for(Holds::Weights).unwrap();
    let expected = 32.0 * 14.375e9 * (1.0 - 260.0 / 3900.0);
    assert!((streaming_bandwidth(hbm).0 - expected).abs() < 1.0);
}

#[test]
fn row_cycle_limits_small_rows() {
    // One bank of 64-byte rows: one row per tRAS + tRP = 47 ns caps a channel at 64 B / 47 ns.
    let text = include_str!("../../examples/accelerators/u280.toml").replacen(
        "banks = 16\nrow_bytes = 1024",
        "banks = 1\nrow_bytes = 64",
        1,
    );
    let a = Accelerator::from_toml_str(&text, "x.toml").unwrap();
    let hbm = a.memory_for(Holds::Weights).unwrap();
    let expected = 32.0 * 64.0 / 47e-9 * (1.0 - 260.0 / 3900.0);
    assert!((streaming_bandwidth(hbm).0 - expected).abs() < 1.0);
}

#[test]
fn linear_cost_follows_the_formulas() {
    let a = Accelerator::preset("u280").unwrap();
    let comp = compression::preset("w4a8-g128").unwrap();
    let model = AccelModel::new(&a, &comp).unwrap();
    let (m, k, n) = (512, 4096, 4096);
    let g = one_linear(&comp, m, k, n);
    model.check_graph(&g).unwrap();
    let e = model.pass(&g);
    let op = &e.ops[0];
    // int4 x int8: 4,096 DSPs x 2 MACs; plus the 24-cycle pipeline.
    let compute = (m * k * n).div_ceil(8192) + 24;
    assert_eq!(op.compute_cycles, Cycles(compute));
    let bytes = comp.weight(OpClass::Ffn).encoded_bytes(n, k).total();
    let bw = streaming_bandwidth(a.memory_for(Holds::Weights).unwrap()).0;
    let memory = (bytes as f64 / bw * 225e6).ceil() as u64;
    assert_eq!(op.memory_cycles, Cycles(memory));
    assert_eq!(op.cycles, Cycles(compute.max(memory)));
    assert_eq!(op.bound, Bound::Compute);
    assert_eq!(op.dram_bytes, bytes);
    // Energy: MACs x 2 pJ, DRAM bits x 3.9 pJ, static 25 W x time.
    assert!((op.energy.mac.0 - (m * k * n) as f64 * 2.0).abs() < 1e-3);
    assert!((op.energy.dram.0 - bytes as f64 * 8.0 * 3.9).abs() < 1e-3);
    let seconds = op.cycles.0 as f64 / 225e6;
    assert!((op.energy.r#static.0 - 25.0 * seconds * 1e12).abs() < 1.0);
    // A single-token (decode-shaped) linear is memory-bound.
    let e = model.pass(&one_linear(&comp, 1, k, n));
    assert_eq!(e.ops[0].bound, Bound::Memory);
    assert_eq!(e.bound(), Bound::Memory);
}

#[test]
fn activations_that_fit_stay_on_chip_and_larger_ones_spill() {
    let a = Accelerator::preset("u280").unwrap();
    let comp = compression::preset("w4a8-g128").unwrap();
    let model = AccelModel::new(&a, &comp).unwrap();
    let weights = comp.weight(OpClass::Ffn).encoded_bytes(4096, 4096).total();
    // 4 KiB in, 4 KiB out: kept on chip, not moved off chip.
    let e = model.pass(&linear_with_activations(
        &comp,
        (1, 4096, 4096),
        (4096, 4096),
    ));
    assert_eq!(
        (e.ops[0].act_on_chip_bytes, e.ops[0].dram_bytes),
        (8192, weights)
    );
    assert_eq!(e.act_on_chip_bytes, 8192);
    // More than the 34 MiB of buffers: the activations go off chip instead.
    let big = 20 << 20;
    let e = model.pass(&linear_with_activations(&comp, (1, 4096, 4096), (big, big)));
    assert_eq!(e.ops[0].act_on_chip_bytes, 0);
    assert_eq!(e.ops[0].dram_bytes, weights + 2 * big);
}

/// Compute cycles of one `m × k → n` linear layer under `comp` on `accel`, less the pipeline.
fn linear_steps(accel: &Accelerator, comp: &Compression, (m, k, n): (u64, u64, u64)) -> u64 {
    let e = AccelModel::new(accel, comp)
        .unwrap()
        .pass(&one_linear(comp, m, k, n));
    e.ops[0].compute_cycles.0 - accel.matrix().pipeline_depth()
}

#[test]
fn n_m_sparsity_halves_matrix_work_unless_it_undoes_packing() {
    let dense = compression::preset("w4a8-g128").unwrap();
    let sparse = compression::preset("w4a8-nm8").unwrap();
    let shape = (1024, 4096, 4096);
    // One MAC per DSP (tiny): N:8 takes half the steps of dense.
    let tiny = Accelerator::preset("tiny").unwrap();
    assert_eq!(
        linear_steps(&tiny, &sparse, shape) * 2,
        linear_steps(&tiny, &dense, shape)
    );
    // Two MACs per DSP (u280): packing needs two columns at the same kept positions, which only
    // dense weights have, so N:8 runs at the rate of dense: 1024 × 4096 × 4096 / (4,096 DSPs ×
    // 2) steps either way.
    let u280 = Accelerator::preset("u280").unwrap();
    let d = AccelModel::new(&u280, &dense)
        .unwrap()
        .pass(&one_linear(&dense, shape.0, shape.1, shape.2));
    let s = AccelModel::new(&u280, &sparse)
        .unwrap()
        .pass(&one_linear(&sparse, shape.0, shape.1, shape.2));
    assert_eq!(s.ops[0].effective_macs * 2, d.ops[0].effective_macs);
    assert_eq!(linear_steps(&u280, &dense, shape), (1 << 34) / 8192);
    assert_eq!(linear_steps(&u280, &sparse, shape), (1 << 34) / 8192);
}

#[test]
fn the_tile_loop_packs_two_columns_only_for_dense_weights() {
    let u280 = Accelerator::preset("u280").unwrap();
    let tiny = Accelerator::preset("tiny").unwrap();
    // (engine, macs per DSP, m, n, k, N) → (lanes, pack, segments, steps per block, steps).
    let cases = [
        // 16 lanes, dense, packed: 2 columns per item; 64 × 2048 items / 256 PEs = 512 passes
        // of 256 blocks.
        (&u280, 2.0, 64, 4096, 4096, 16, (16, 2, 2, 1, 512 * 256)),
        // N:8 cannot pack: 2 segments of 8 lanes, the same 512 passes.
        (&u280, 2.0, 64, 4096, 4096, 8, (16, 1, 2, 1, 512 * 256)),
        // N:2: 8 segments of 2 lanes: 64 × 512 items = 128 passes.
        (&u280, 2.0, 64, 4096, 4096, 2, (16, 1, 8, 1, 128 * 256)),
        // fp16 at 0.5 MACs per DSP: 8 lanes, a dense block in 2 steps, 1024 passes.
        (&u280, 0.5, 64, 4096, 4096, 16, (8, 1, 1, 2, 1024 * 256 * 2)),
        // 4 lanes packed: 2 columns × 4 positions per step, 4 steps a block; ⌈5/2⌉ = 3 column
        // groups, 2 slots of 2 PEs per row, 6 slots on 2 PE rows = 3 passes of 3 blocks.
        (&tiny, 2.0, 3, 5, 40, 16, (4, 2, 2, 4, 3 * 3 * 4)),
        // The same at one MAC per DSP: 5 groups, 3 slots per row, 9 slots, 5 passes (every PE
        // taking any item would need 4: a PE row works on one output row at a time).
        (&tiny, 1.0, 3, 5, 40, 16, (4, 1, 1, 4, 5 * 3 * 4)),
        // A matrix-vector product: 5 groups, 3 slots on 2 PE rows, 2 passes (⌈5 / 4⌉).
        (&tiny, 1.0, 1, 5, 40, 16, (4, 1, 1, 4, 2 * 3 * 4)),
        // N:2 on 4 lanes: 2 segments, one step a block, unpacked at 2 MACs per DSP too.
        (&tiny, 2.0, 3, 5, 40, 2, (4, 1, 2, 1, 3 * 3)),
    ];
    for (accel, mpd, m, n, k, nm, want) in cases {
        let t = matrix_tiling(accel.matrix(), mpd, m, n, k, nm);
        assert_eq!(
            (t.lanes, t.pack, t.segments, t.steps_per_block, t.steps),
            want,
            "{} at {mpd} MACs/DSP, {m}×{n}×{k}, N = {nm}",
            accel.name()
        );
    }
}

#[test]
fn unsupported_modes_name_the_key() {
    let edge = Accelerator::preset("edge-asic").unwrap();
    let mut comp = compression::preset("w4a8-g128").unwrap();
    let mut ffn = comp.weight(OpClass::Ffn);
    ffn.sparsity = Sparsity::Unstructured { density: 0.5 };
    comp.weights.insert(OpClass::Ffn, ffn);
    let model = AccelModel::new(&edge, &comp).unwrap();
    let e = model
        .check_graph(&one_linear(&comp, 4, 64, 64))
        .unwrap_err();
    assert_eq!(e.problems[0].key, "matrix.sparse");
    let u280 = Accelerator::preset("u280").unwrap();
    let mut comp = compression::preset("w4a8-g128").unwrap();
    let mut ffn = comp.weight(OpClass::Ffn);
    ffn.format.group_size = 256;
    comp.weights.insert(OpClass::Ffn, ffn);
    let e = AccelModel::new(&u280, &comp)
        .unwrap()
        .check_graph(&one_linear(&comp, 4, 512, 64))
        .unwrap_err();
    assert_eq!(e.problems[0].key, "matrix.group_sizes");
    let fp16 = Compression::fp16();
    let tiny = Accelerator::preset("tiny").unwrap();
    let e = AccelModel::new(&tiny, &fp16)
        .unwrap()
        .check_graph(&one_linear(&fp16, 4, 64, 64))
        .unwrap_err();
    assert_eq!(e.problems[0].key, "matrix.precisions");
    assert!(e.to_string().contains("int8×int8"), "{e}");
}

#[test]
fn pass_cycles_respect_both_bounds() {
    let a = Accelerator::preset("u280").unwrap();
    let comp = compression::preset("w4a8-g128").unwrap();
    let model = AccelModel::new(&a, &comp).unwrap();
    for (m, k, n) in [(1, 4096, 4096), (64, 4096, 11008), (2048, 4096, 4096)] {
        let g = one_linear(&comp, m, k, n);
        let e = model.pass(&g);
        let peak = 8192.0;
        let bw = streaming_bandwidth(a.memory_for(Holds::Weights).unwrap()).0;
        let compute_bound = (m * k * n) as f64 / peak;
        let memory_bound = g.weight_bytes() as f64 / bw * 225e6;
        assert!(e.cycles.0 as f64 >= compute_bound.max(memory_bound) - 1.0);
        assert!(e.dram_bytes >= g.total_cost().compulsory_bytes());
    }
}

#[test]
fn gpu_roofline() {
    let comp = Compression::fp16();
    let g = one_linear(&comp, 1, 4096, 4096);
    let h100 = Gpu::by_name("h100-sxm5").unwrap();
    let roof = GpuModel::new(h100, ServingStack::by_name("roofline").unwrap(), &comp).pass(&g);
    let bytes = 2.0 * 4096.0 * 4096.0;
    assert!((roof.seconds - bytes / 3350e9).abs() < 1e-12);
    assert_eq!(roof.bound, Bound::Memory);
    assert!((roof.joules - roof.seconds * 700.0).abs() < 1e-12);
    let tuned = GpuModel::new(h100, ServingStack::by_name("tuned").unwrap(), &comp).pass(&g);
    assert!(tuned.seconds > roof.seconds);
    let big = one_linear(&comp, 8192, 4096, 4096);
    let p = GpuModel::new(h100, ServingStack::by_name("roofline").unwrap(), &comp).pass(&big);
    assert_eq!(p.bound, Bound::Compute);
    assert!((p.seconds - 2.0 * 8192.0 * 4096.0 * 4096.0 / 989e12).abs() < 1e-12);
}

#[test]
fn work_without_a_shape_runs_at_the_tile_loops_rate() {
    use tessera_spec::analytical::{matrix_work_cycles, MatrixWork};
    use tessera_spec::compression::ActivationFormat;
    // u280: 256 PEs of 16 lanes at 2 MACs per DSP for int4 × int8. Dense work packs two columns
    // per lane (8,192 MACs a step); N:8 work cannot pack (4,096 kept MACs a step).
    let u280 = Accelerator::preset("u280").unwrap();
    let depth = u280.matrix().pipeline_depth();
    let work = |nm: u32, density: f64| MatrixWork {
        macs: 1 << 24,
        m: 0,
        n: 0,
        k: 0,
        weight_bits: 4,
        act: ActivationFormat::Int8,
        nm,
        density,
        group: None,
    };
    let cycles = |w: &MatrixWork| matrix_work_cycles(u280.matrix(), w).unwrap();
    assert_eq!(cycles(&work(16, 1.0)), (1 << 24, (1 << 24) / 8192 + depth));
    assert_eq!(cycles(&work(8, 0.5)), (1 << 23, (1 << 23) / 4096 + depth));
}
