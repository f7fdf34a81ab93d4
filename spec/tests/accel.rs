//! Accelerator spec: presets, accessors, and one test per kind of bad input.

use tessera_spec::accel::{Accelerator, Holds, MemoryKind, SfuOp, PRESET_NAMES};
use tessera_spec::compression::{ActivationFormat, Sparsity};
use tessera_spec::units::Cycles;

const TINY: &str = include_str!("../../examples/accelerators/tiny.toml");
const U280: &str = include_str!("../../examples/accelerators/u280.toml");

/// Parses `TINY` with `from` replaced by `to` and returns the error text, which must name `key`.
fn check_err(base: &str, from: &str, to: &str, key: &str) -> String {
    assert!(base.contains(from), "test edit `{from}` not found");
    let text = base.replacen(from, to, 1);
    let err = Accelerator::from_toml_str(&text, "edited.toml")
        .expect_err("the edited file must be rejected");
    assert!(
        err.problems.iter().any(|p| p.key.contains(key)),
        "no problem names `{key}`:\n{err}"
    );
    let s = err.to_string();
    assert!(s.starts_with("edited.toml:"), "{s}");
    s
}

#[test]
fn every_preset_parses() {
    for name in PRESET_NAMES {
        let a = Accelerator::preset(name).unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(a.name(), *name);
        assert!(a.memory_for(Holds::Weights).is_some());
    }
}

#[test]
fn u280_accessors_match_the_file() {
    let a = Accelerator::from_toml_str(U280, "u280.toml").unwrap();
    assert!(a.is_fpga());
    assert_eq!(a.clock().0, 225e6);
    let hbm = a.memory_for(Holds::Weights).unwrap();
    assert_eq!(hbm.kind(), MemoryKind::Hbm2);
    // 32 pseudo-channels x 14.375 GB/s = 460 GB/s (REFERENCE.md).
    assert!((hbm.peak_bandwidth().gb_per_s() - 460.0).abs() < 1e-9);
    assert_eq!(hbm.capacity().0, 8 << 30);
    assert_eq!(hbm.burst_bytes(), 32);
    assert_eq!(a.memory_for(Holds::Instructions).unwrap().name(), "ddr");
    let m = a.matrix();
    assert_eq!(m.dsps(), 16 * 16 * 16);
    assert!(m.dsps() <= a.resources().fpga.as_ref().unwrap().dsp);
    assert_eq!(
        m.peak_macs_per_cycle(8, ActivationFormat::Int8),
        Some(8192.0)
    );
    assert_eq!(
        m.peak_macs_per_cycle(16, ActivationFormat::Fp16),
        Some(2048.0)
    );
    assert_eq!(m.peak_macs_per_cycle(16, ActivationFormat::Int8), None);
    assert_eq!(a.on_chip_bytes().0, (16 + 8 + 8 + 2) << 20);
    assert_eq!(a.energy().memory_pj_per_bit(MemoryKind::Hbm2), Some(3.9));
    assert!(a.energy().buffer_access("weights").is_some());
    assert!(a.energy().mac(4, ActivationFormat::Int8).is_some());
}

#[test]
fn sparsity_and_group_support() {
    let a = Accelerator::preset("u280").unwrap();
    let m = a.matrix();
    assert!(m.supports_sparsity(&Sparsity::Dense));
    assert!(m.supports_sparsity(&Sparsity::NM { n: 8, m: 16 }));
    assert!(!m.supports_sparsity(&Sparsity::NM { n: 2, m: 4 }));
    assert!(!m.supports_sparsity(&Sparsity::NM { n: 6, m: 16 }));
    assert!(m.supports_sparsity(&Sparsity::Block {
        block: 64,
        density: 0.5
    }));
    assert!(!m.supports_sparsity(&Sparsity::Block {
        block: 32,
        density: 0.5
    }));
    assert!(m.supports_sparsity(&Sparsity::Unstructured { density: 0.3 }));
    let edge = Accelerator::preset("edge-asic").unwrap();
    assert!(!edge
        .matrix()
        .supports_sparsity(&Sparsity::Unstructured { density: 0.3 }));
    assert!(m.supports_group_size(0) && m.supports_group_size(128) && !m.supports_group_size(256));
}

#[test]
fn vector_unit_cycles_formula() {
    let a = Accelerator::preset("tiny").unwrap();
    let v = a.vector();
    // softmax: 2 passes x (latency 8 + ceil(10 / (4 lanes x 1.0)))
    assert_eq!(v.cycles(SfuOp::Softmax, 10), Cycles(2 * (8 + 3)));
    // rotary: 1 pass x (3 + ceil(10 / (4 x 0.5)))
    assert_eq!(v.cycles(SfuOp::Rotary, 10), Cycles(3 + 5));
    assert_eq!(v.cycles(SfuOp::Add, 0), Cycles(0));
}

#[test]
fn unknown_key_is_named() {
    check_err(TINY, "rows = 2", "rows = 2\nrowz = 2", "matrix.rowz");
}

#[test]
fn malformed_toml_gives_the_line() {
    let s = check_err(TINY, "[matrix]", "[matrix", "");
    assert!(s.contains("line"), "{s}");
}

#[test]
fn wrong_type_is_named() {
    check_err(TINY, "rows = 2", "rows = \"two\"", "matrix.rows");
    check_err(
        TINY,
        "kind = \"ddr4\"",
        "kind = \"ddr9\"",
        "memories[0].kind",
    );
}

#[test]
fn missing_key_is_named() {
    check_err(TINY, "clock_mhz = 200.0\n", "", "clock_mhz");
}

#[test]
fn zero_rows_is_out_of_range() {
    let s = check_err(TINY, "rows = 2", "rows = 0", "matrix.rows");
    assert!(s.contains("allowed: 1 ..= 4096"), "{s}");
}

#[test]
fn clock_out_of_range() {
    check_err(TINY, "clock_mhz = 200.0", "clock_mhz = 0.0", "clock_mhz");
    check_err(TINY, "clock_mhz = 200.0", "clock_mhz = nan", "clock_mhz");
    check_err(TINY, "clock_mhz = 200.0", "clock_mhz = -5.0", "clock_mhz");
}

#[test]
fn prices_are_optional_and_positive() {
    assert_eq!(Accelerator::preset("tiny").unwrap().price_usd(), None);
    let priced = TINY.replace("clock_mhz = 200.0", "clock_mhz = 200.0\nprice_usd = 2500.0");
    let a = Accelerator::from_toml_str(&priced, "priced.toml").unwrap();
    assert_eq!(a.price_usd(), Some(2500.0));
    let p = "clock_mhz = 200.0\nprice_usd";
    check_err(
        TINY,
        "clock_mhz = 200.0",
        &format!("{p} = 0.0"),
        "price_usd",
    );
    check_err(
        TINY,
        "clock_mhz = 200.0",
        &format!("{p} = -1.0"),
        "price_usd",
    );
}

#[test]
fn n_of_n16_out_of_range() {
    let s = check_err(
        TINY,
        "nm = [2, 4, 8, 16]",
        "nm = [2, 4, 8, 32]",
        "matrix.sparse.nm[3]",
    );
    assert!(s.contains("1 ..= 16"), "{s}");
}

#[test]
fn duplicate_buffer_name() {
    let dup =
        "[[buffers]]\nname = \"scratch\"\nbytes = 65536\nbanks = 4\nports = 2\nword_bits = 64\n\n";
    check_err(
        TINY,
        "[[buffers]]",
        &format!("{dup}[[buffers]]"),
        "buffers[1].name",
    );
}

#[test]
fn buffer_bytes_must_divide_into_banks_and_words() {
    let s = check_err(TINY, "bytes = 65536", "bytes = 65540", "buffers[0].bytes");
    assert!(s.contains("multiple of 32"), "{s}");
}

#[test]
fn energy_entry_missing_for_a_precision() {
    let line = "  { weight = \"int2\", activation = \"int8\", pj = 2.0, source = \"same DSP as int8, REFERENCE.md placeholder (?)\" },\n";
    let s = check_err(TINY, line, "", "energy.mac");
    assert!(s.contains("int2×int8"), "{s}");
}

#[test]
fn empty_source_is_rejected() {
    check_err(
        TINY,
        "source = \"DDR4 15-20 pJ/bit midpoint, REFERENCE.md (?)\"",
        "source = \"  \"",
        "energy.memory[0].source",
    );
}

#[test]
fn memory_kind_without_energy() {
    let s = check_err(
        TINY,
        "kind = \"ddr4\"\nchannels",
        "kind = \"lpddr5\"\nchannels",
        "energy.memory",
    );
    assert!(s.contains("no entry for memory kind lpddr5"), "{s}");
}

#[test]
fn dsp_budget_exceeded() {
    let s = check_err(TINY, "chain = 4", "chain = 32", "matrix.rows");
    assert!(s.contains("128 DSPs"), "{s}");
}

#[test]
fn timing_must_be_consistent() {
    check_err(
        TINY,
        "t_ras_ns = 32.0",
        "t_ras_ns = 10.0",
        "memories[0].timing.t_ras_ns",
    );
    check_err(
        TINY,
        "t_rfc_ns = 350.0",
        "t_rfc_ns = 9000.0",
        "memories[0].timing.t_rfc_ns",
    );
    check_err(
        TINY,
        "burst_length = 8",
        "burst_length = 7",
        "memories[0].timing.burst_length",
    );
}

#[test]
fn every_data_kind_needs_a_home() {
    let s = check_err(
        TINY,
        "holds = [\"weights\", \"kv\", \"activations\", \"instructions\"]",
        "holds = [\"weights\", \"instructions\"]",
        "memories",
    );
    assert!(s.contains("no memory holds kv"), "{s}");
}

#[test]
fn resources_must_match_the_target_kind() {
    check_err(TINY, "kind = \"fpga\"", "kind = \"asic\"", "resources");
}

#[test]
fn all_problems_are_reported_together() {
    let text = TINY
        .replacen("rows = 2", "rows = 0", 1)
        .replacen("lanes = 4", "lanes = 0", 1);
    let err = Accelerator::from_toml_str(&text, "x.toml").unwrap_err();
    assert!(err.problems.len() >= 2, "{err}");
}

#[test]
fn unknown_preset_lists_the_names() {
    let e = Accelerator::preset("u999").unwrap_err().to_string();
    for n in PRESET_NAMES {
        assert!(e.contains(n), "{e}");
    }
}

#[test]
fn toml_value_path_for_sweeps() {
    let mut v: toml::Value = toml::from_str(TINY).unwrap();
    v["matrix"]["rows"] = toml::Value::Integer(1);
    let a = Accelerator::from_toml_value(v, "sweep").unwrap();
    assert_eq!(a.matrix().rows(), 1);
}

#[test]
fn presets_cover_the_required_modes() {
    use ActivationFormat::{Fp16, Int8};
    for name in PRESET_NAMES.iter().filter(|n| **n != "tiny") {
        let a = Accelerator::preset(name).unwrap();
        let m = a.matrix();
        for (bits, act) in [
            (16, Fp16),
            (8, Fp16),
            (4, Fp16),
            (8, Int8),
            (4, Int8),
            (3, Int8),
            (2, Int8),
        ] {
            assert!(
                m.peak_macs_per_cycle(bits, act).is_some(),
                "{name}: w{bits} × {act:?}"
            );
            assert!(a.energy().mac(bits, act).is_some(), "{name}: w{bits}");
        }
        for n in [2, 4, 8, 16] {
            assert!(
                m.supports_sparsity(&Sparsity::NM { n, m: 16 }),
                "{name}: {n}:16"
            );
        }
        for g in [32, 64, 128] {
            assert!(m.supports_group_size(g), "{name}: group {g}");
        }
        if a.is_fpga() {
            let budget = a.resources().fpga.as_ref().unwrap().dsp;
            assert!(m.dsps() <= budget, "{name}: {} DSPs", m.dsps());
        }
    }
}

#[test]
fn tiny_supports_only_its_three_pairs() {
    let a = Accelerator::preset("tiny").unwrap();
    let m = a.matrix();
    assert_eq!(m.dsps(), 16);
    assert_eq!(m.peak_macs_per_cycle(8, ActivationFormat::Int8), Some(16.0));
    assert_eq!(m.peak_macs_per_cycle(2, ActivationFormat::Int8), Some(16.0));
    assert_eq!(m.peak_macs_per_cycle(3, ActivationFormat::Int8), None);
    assert_eq!(m.peak_macs_per_cycle(8, ActivationFormat::Fp16), None);
    assert!(!m.supports_sparsity(&Sparsity::Block {
        block: 64,
        density: 0.5
    }));
    assert!(!m.supports_sparsity(&Sparsity::Unstructured { density: 0.5 }));
}

#[test]
fn n_of_n16_zero_is_out_of_range() {
    let s = check_err(
        TINY,
        "nm = [2, 4, 8, 16]",
        "nm = [0, 4, 8, 16]",
        "matrix.sparse.nm[0]",
    );
    assert!(s.contains("allowed: 1 ..= 16"), "{s}");
}

#[test]
fn nan_and_negative_floats_name_their_key() {
    // The second memory (DDR4) of the U280 preset; NaN is a valid TOML float.
    let s = check_err(
        U280,
        "t_rcd_ns = 13.32",
        "t_rcd_ns = nan",
        "memories[1].timing.t_rcd_ns",
    );
    assert!(s.contains("allowed: > 0"), "{s}");
    let s = check_err(
        U280,
        "int3\", activation = \"int8\", pj = 2.0",
        "int3\", activation = \"int8\", pj = -2.0",
        "energy.mac[2].pj",
    );
    assert!(s.contains("allowed: a finite number >= 0"), "{s}");
    check_err(
        TINY,
        "capacity_gib = 1.0",
        "capacity_gib = -1.0",
        "memories[0].capacity_gib",
    );
    check_err(
        TINY,
        "macs_per_dsp = 1.0 }",
        "macs_per_dsp = inf }",
        "matrix.precisions[0].macs_per_dsp",
    );
}

#[test]
fn negative_integer_is_a_type_error_naming_the_key() {
    check_err(TINY, "rows = 2", "rows = -2", "matrix.rows");
}

#[test]
fn duplicate_energy_entries_are_rejected() {
    let line = "  { name = \"scratch\", pj_per_access = 10.0, source = \"BRAM36 72-bit access 5-15 pJ, REFERENCE.md placeholder (?)\" },\n";
    check_err(
        TINY,
        line,
        &format!("{line}{line}"),
        "energy.buffer[1].name",
    );
    let mac = "  { weight = \"int8\", activation = \"int8\", pj = 2.0, source = \"DSP48E2 INT8 MAC 1-3 pJ, REFERENCE.md placeholder (?)\" },\n";
    let s = check_err(TINY, mac, &format!("{mac}{mac}"), "energy.mac[1]");
    assert!(s.contains("int8×int8 is listed twice"), "{s}");
}

#[test]
fn zero_or_huge_sizes_are_errors_not_panics() {
    let s = check_err(TINY, "banks = 4", "banks = 0", "buffers[0].banks");
    assert!(s.contains("allowed: 1 ..= 4096"), "{s}");
    check_err(
        TINY,
        "banks = 4",
        "banks = 9223372036854775807",
        "buffers[0].banks",
    );
    check_err(
        TINY,
        "word_bits = 64",
        "word_bits = 0",
        "buffers[0].word_bits",
    );
    // rows × cols overflows u64: both are out of range and the DSP budget is exceeded.
    let s = check_err(
        TINY,
        "rows = 2\ncols = 2",
        "rows = 4294967296\ncols = 4294967296",
        "matrix.cols",
    );
    assert!(s.contains("matrix.rows"), "{s}");
}

#[test]
fn vector_cycles_saturate_instead_of_overflowing() {
    // 1 lane at 0.5 elements per cycle over u64::MAX elements, two passes: past u64.
    let text = TINY.replacen("lanes = 4", "lanes = 1", 1).replacen(
        "softmax = { latency = 8, elements_per_lane_per_cycle = 1.0",
        "softmax = { latency = 8, elements_per_lane_per_cycle = 0.5",
        1,
    );
    let a = Accelerator::from_toml_str(&text, "slow.toml").unwrap();
    assert_eq!(
        a.vector().cycles(SfuOp::Softmax, u64::MAX),
        Cycles(u64::MAX)
    );
    assert_eq!(a.vector().cycles(SfuOp::Softmax, 3), Cycles(2 * (8 + 6)));
    for op in SfuOp::ALL {
        assert!(a.vector().cycles(op, 1).0 > 0, "{}", op.name());
    }
}

#[test]
fn rendered_error_lists_key_value_and_allowed_range() {
    let text = TINY.replacen("rows = 2", "rows = 0", 1);
    let err = Accelerator::from_toml_str(&text, "tiny.toml").unwrap_err();
    assert_eq!(
        err.to_string(),
        "tiny.toml: 1 problem\n  - matrix.rows: 0 is out of range\n    help: allowed: 1 ..= 4096\n"
    );
}
