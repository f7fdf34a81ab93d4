//! Resource calibration: synthesise the generated engine over a grid of sizes and datapaths and
//! record Yosys's counts as [`tessera_spec::resource_model::Calibration`] data.

use crate::synth::{split_modules, synthesize, yosys_version, SynthTarget};
use crate::tools::ToolError;
use rayon::prelude::*;
use std::path::Path;
use tessera_hdl::{EngineOptions, EngineParams, MatrixEngine};
use tessera_spec::accel::Accelerator;
use tessera_spec::resource_model::{Calibration, CalibrationPoint, Datapath};

/// Words per bank of every calibration point.
pub const BANK_WORDS: usize = 256;
const SYNTHESIS: &str = "synth_xilinx -family xcup";

/// One engine of the grid.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GridPoint {
    /// PE rows.
    pub rows: u64,
    /// PE columns.
    pub cols: u64,
    /// Lanes per chain.
    pub chain: u64,
    /// Lane multipliers.
    pub datapath: Datapath,
    /// Whether N:16 sparsity down to 2:16 is supported (otherwise dense only).
    pub sparse: bool,
    /// Whether the precisions pack two MACs per DSP (`macs_per_dsp = 2`).
    pub pack: bool,
}

/// The default grid: arrays of 1 × 1, 1 × 2 and 2 × 2 PEs (the PE rows and the PEs apart, for
/// the activation banks shared by a PE row), chains of 2, 4 and 8, every datapath, sparse and
/// dense, one MAC per DSP; then the same sizes packing two MACs per DSP with the datapaths that
/// have DSP multipliers (u280's and vhk158's).
pub fn default_grid() -> Vec<GridPoint> {
    let mut g = Vec::new();
    for pack in [false, true] {
        for (rows, cols) in [(1, 1), (1, 2), (2, 2)] {
            for chain in [2, 4, 8] {
                for datapath in [Datapath::Multiplier, Datapath::ShiftAdd, Datapath::Mixed] {
                    if pack && datapath == Datapath::ShiftAdd {
                        continue;
                    }
                    for sparse in [true, false] {
                        g.push(GridPoint {
                            rows,
                            cols,
                            chain,
                            datapath,
                            sparse,
                            pack,
                        });
                    }
                }
            }
        }
    }
    g
}

/// The accelerator of a grid point: the `tiny` preset resized, its pipeline one stage deeper
/// than the generator's minimum.
pub fn accelerator(p: &GridPoint) -> Accelerator {
    let mut v: toml::Value = toml::from_str(Accelerator::preset_text("tiny").expect("tiny preset"))
        .expect("tiny parses");
    let m = v["matrix"].as_table_mut().expect("matrix table");
    m.insert("rows".into(), (p.rows as i64).into());
    m.insert("cols".into(), (p.cols as i64).into());
    m.insert("chain".into(), (p.chain as i64).into());
    m.insert("pipeline_depth".into(), 4096.into());
    let precision = |w: &str, sa: bool| -> toml::Value {
        let mut t = toml::map::Map::new();
        t.insert("weight".into(), w.into());
        t.insert("activation".into(), "int8".into());
        t.insert("macs_per_dsp".into(), if p.pack { 2.0 } else { 1.0 }.into());
        t.insert("shift_add".into(), sa.into());
        toml::Value::Table(t)
    };
    let precisions: Vec<toml::Value> = match p.datapath {
        Datapath::Multiplier => vec![precision("int8", false)],
        Datapath::ShiftAdd => vec![precision("int4", true), precision("int2", true)],
        Datapath::Mixed => vec![
            precision("int8", false),
            precision("int4", true),
            precision("int2", true),
        ],
    };
    m.insert("precisions".into(), precisions.into());
    let nm: Vec<toml::Value> = if p.sparse {
        vec![2.into(), 4.into(), 8.into(), 16.into()]
    } else {
        vec![16.into()]
    };
    m["sparse"]
        .as_table_mut()
        .expect("sparse table")
        .insert("nm".into(), nm.into());
    let energy = v["energy"].as_table_mut().expect("energy table");
    let macs: Vec<toml::Value> = ["int8", "int4", "int2"]
        .iter()
        .map(|w| {
            let mut t = toml::map::Map::new();
            t.insert("weight".into(), (*w).into());
            t.insert("activation".into(), "int8".into());
            t.insert("pj".into(), 2.0.into());
            t.insert("source".into(), "calibration point: energy unused".into());
            toml::Value::Table(t)
        })
        .collect();
    energy.insert("mac".into(), macs.into());
    let budget = v["resources"]["fpga"].as_table_mut().expect("fpga budget");
    budget.insert("dsp".into(), 1_000_000.into());
    let deep = Accelerator::from_toml_value(v.clone(), "calibration point")
        .expect("grid point is a valid spec");
    let minimum = EngineParams::from_accel(&deep)
        .expect("grid point is buildable")
        .structural_depth();
    v["matrix"]
        .as_table_mut()
        .expect("matrix table")
        .insert("pipeline_depth".into(), ((minimum + 1) as i64).into());
    Accelerator::from_toml_value(v, "calibration point").expect("grid point is a valid spec")
}

/// Synthesises one grid point in `dir`.
pub fn synthesize_point(p: &GridPoint, dir: &Path) -> Result<CalibrationPoint, ToolError> {
    let accel = accelerator(p);
    let params = EngineParams::from_accel(&accel).expect("grid point is buildable");
    let mut engine = MatrixEngine::new(
        &params,
        EngineOptions {
            bank_words: BANK_WORDS,
        },
    );
    let segments = engine.segments() as u64;
    let verilog = tessera_hdl::verilog::emit(&mut engine).map_err(|e| ToolError::Failed {
        program: "rust-hdl".into(),
        output: e.to_string(),
    })?;
    std::fs::create_dir_all(dir).expect("calibration directory");
    let mut files = Vec::new();
    for (name, text) in split_modules(&verilog) {
        let f = format!("{name}.v");
        std::fs::write(dir.join(&f), text).expect("write Verilog");
        files.push(f);
    }
    let log = std::path::absolute(dir.join("yosys.log")).expect("absolute path");
    let r = synthesize(
        dir,
        &files,
        SynthTarget::XilinxUltrascalePlus,
        &log.to_string_lossy(),
    )?;
    Ok(CalibrationPoint {
        rows: p.rows,
        cols: p.cols,
        chain: p.chain,
        segments,
        datapath: p.datapath,
        pack: p.pack,
        dsp: r.dsp,
        lut: r.lut,
        ff: r.ff,
        bram36: r.bram36,
    })
}

/// Whether a calibrated point is the synthesis of grid point `p` (a dense and a sparse point with
/// equal segments are the same engine).
fn same_engine(c: &CalibrationPoint, p: &GridPoint) -> bool {
    let params = EngineParams::from_accel(&accelerator(p)).expect("grid point is buildable");
    (c.rows, c.cols, c.chain, c.segments, c.datapath, c.pack)
        == (
            p.rows,
            p.cols,
            p.chain,
            params.max_segments() as u64,
            p.datapath,
            p.pack,
        )
}

/// Synthesises every point (`jobs` at a time) under `dir` and returns the calibration, points in
/// grid order. Points of `reuse` made by the same Yosys are copied instead of synthesised again.
pub fn calibrate(
    points: &[GridPoint],
    dir: &Path,
    jobs: usize,
    reuse: Option<&Calibration>,
) -> Result<Calibration, ToolError> {
    let yosys = yosys_version()?;
    let reuse = reuse.filter(|c| c.yosys == yosys);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(jobs.max(1))
        .build()
        .expect("thread pool");
    let results: Vec<Result<CalibrationPoint, ToolError>> = pool.install(|| {
        points
            .par_iter()
            .enumerate()
            .map(|(i, p)| {
                let known = reuse.and_then(|c| c.points.iter().find(|c| same_engine(c, p)));
                match known {
                    Some(c) => Ok(c.clone()),
                    None => synthesize_point(p, &dir.join(format!("point-{i:03}"))),
                }
            })
            .collect()
    });
    Ok(Calibration {
        yosys,
        synthesis: SYNTHESIS.into(),
        bank_words: BANK_WORDS as u64,
        note: "dequantiser 2 stages; pipeline depth one stage over the generator's minimum".into(),
        points: results.into_iter().collect::<Result<_, _>>()?,
    })
}
