//! The emitted engine through Yosys's generic `synth` (the ASIC path), and, behind
//! `TESSERA_HDL_LARGE=1`, the agreement grid on a larger engine.

use tessera_hdl::{EngineOptions, EngineParams, MatrixEngine};
use tessera_spec::accel::Accelerator;
use tessera_spec::resource_model::Datapath;
use tessera_testbench::agreement::run_grid;
use tessera_testbench::calibrate::{accelerator, GridPoint};
use tessera_testbench::synth::{split_modules, synthesize, SynthTarget};
use tessera_testbench::tools::in_test;
use tessera_testbench::verilog_tb::Simulator;

#[test]
fn tiny_engine_passes_generic_synthesis() {
    let accel = Accelerator::preset("tiny").unwrap();
    let p = EngineParams::from_accel(&accel).unwrap();
    let mut engine = MatrixEngine::new(&p, EngineOptions { bank_words: 4 });
    let verilog = tessera_hdl::verilog::emit(&mut engine).unwrap();
    let dir = std::env::temp_dir().join(format!("tessera-generic-synth-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut files = Vec::new();
    for (name, text) in split_modules(&verilog) {
        std::fs::write(dir.join(format!("{name}.v")), text).unwrap();
        files.push(format!("{name}.v"));
    }
    let log = dir.join("yosys.log").to_string_lossy().to_string();
    if let Some(r) = in_test(synthesize(&dir, &files, SynthTarget::Generic, &log)) {
        // Flip-flops: at least every PE's input registers (16 activations of 8 bits each).
        assert!(r.ff >= 4 * 16 * 8, "{r:?}");
        assert!(r.cells.values().sum::<u64>() > r.ff);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn larger_engine_agrees_when_asked() {
    if std::env::var("TESSERA_HDL_LARGE").is_err() {
        eprintln!("skipped: set TESSERA_HDL_LARGE=1 for the 4 × 4 × 8 engine");
        return;
    }
    let point = GridPoint {
        rows: 4,
        cols: 4,
        chain: 8,
        datapath: Datapath::Mixed,
        sparse: true,
        pack: false,
    };
    let accel = accelerator(&point);
    let p = EngineParams::from_accel(&accel).unwrap();
    let dir = std::env::temp_dir().join(format!("tessera-large-{}", std::process::id()));
    let options = EngineOptions { bank_words: 256 };
    if let Some(a) = in_test(run_grid(
        &accel,
        &p,
        options,
        Simulator::Verilator,
        &dir,
        false,
    )) {
        assert!(a.mismatches.is_empty(), "{:#?}", a.mismatches);
    }
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn the_shipped_calibration_reproduces_with_the_same_yosys() {
    use tessera_spec::resource_model::Calibration;
    use tessera_testbench::calibrate::{default_grid, synthesize_point};
    use tessera_testbench::synth::yosys_version;
    let Some(version) = in_test(yosys_version()) else {
        return;
    };
    let cal = Calibration::builtin();
    if version != cal.yosys {
        eprintln!(
            "skipped: calibrated with `{}`, this is `{version}`",
            cal.yosys
        );
        return;
    }
    let grid = default_grid();
    assert_eq!(grid.len(), cal.points.len());
    let dir = std::env::temp_dir().join(format!("tessera-calibration-{}", std::process::id()));
    let point = synthesize_point(&grid[0], &dir).unwrap();
    assert_eq!(point, cal.points[0]);
    let _ = std::fs::remove_dir_all(&dir);
}

/// Yosys `synth_xilinx` DSP48E2s of one PE built from `p`, or `None` without Yosys.
fn pe_dsps(p: &EngineParams, name: &str) -> Option<u64> {
    let mut pe = tessera_hdl::Pe::new(p);
    let verilog = tessera_hdl::verilog::emit(&mut pe).unwrap();
    let dir = std::env::temp_dir().join(format!("tessera-pe-dsp-{}-{name}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let mut files = Vec::new();
    for (module, text) in split_modules(&verilog) {
        std::fs::write(dir.join(format!("{module}.v")), text).unwrap();
        files.push(format!("{module}.v"));
    }
    let log = dir.join("yosys.log").to_string_lossy().to_string();
    let r = in_test(synthesize(
        &dir,
        &files,
        SynthTarget::XilinxUltrascalePlus,
        &log,
    ));
    let _ = std::fs::remove_dir_all(&dir);
    r.map(|r| r.dsp)
}

#[test]
fn a_packed_lane_maps_onto_one_dsp48e2() {
    // Dense-only PEs (two output segments either way, so the same dequantisers): packing two
    // columns per lane costs no DSP over one column, and each further packed lane costs one, so
    // the chain takes rows × cols × chain DSPs, not twice that.
    let packed = EngineParams::from_accel(&tessera_testbench::agreement::packed_tiny()).unwrap();
    let dense = |p: EngineParams, lanes: usize| EngineParams {
        lanes,
        min_segment_log2: lanes.ilog2(),
        pipeline_depth: p.pipeline_depth + lanes,
        ..p
    };
    let plain = EngineParams {
        min_segment_log2: 1,
        pack: 1,
        ..dense(packed.clone(), 4)
    };
    assert_eq!(plain.max_segments(), 2);
    assert_eq!(dense(packed.clone(), 4).max_segments(), 2);
    let Some(one_column) = pe_dsps(&plain, "plain4") else {
        return;
    };
    let four = pe_dsps(&dense(packed.clone(), 4), "packed4").unwrap();
    let eight = pe_dsps(&dense(packed, 8), "packed8").unwrap();
    assert_eq!(
        four, one_column,
        "a packed lane is one DSP, as an unpacked one"
    );
    assert_eq!(eight - four, 4, "four more packed lanes, four more DSPs");
}
