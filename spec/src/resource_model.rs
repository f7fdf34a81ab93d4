//! Measured resources of the generated matrix engine: Yosys counts over a grid of engines
//! (`spec/data/resources-yosys-xcup.json`, written by `tessera calibrate`), fitted per datapath
//! by least squares to `resource ≈ c₀ + c₁·rows + c₂·PEs + c₃·PEs·lanes + c₄·PEs·segments`,
//! where `rows` counts the activation banks (one per PE row) and `segments = lanes / min(N,
//! lanes)` (at least 2 on a packing engine) the dequantisers per PE. Sweeps use the fit for engines the generator can build (int8 activations, `macs_per_dsp`
//! 1 or 2, chains of 1 to 16), fitted over the points with the same datapath and packing; other
//! engines have no measured estimate.

use crate::accel::MatrixEngine;
use crate::compression::ActivationFormat;
use serde::{Deserialize, Serialize};
use std::sync::OnceLock;

/// Which multipliers the PE lanes have.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Datapath {
    /// DSP multipliers only (no shift-and-add precision).
    Multiplier,
    /// Shift-and-add only (every precision is 4-bit or narrower with `shift_add`).
    ShiftAdd,
    /// Both.
    Mixed,
}

/// One synthesised engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CalibrationPoint {
    /// PE rows.
    pub rows: u64,
    /// PE columns.
    pub cols: u64,
    /// Lanes per chain.
    pub chain: u64,
    /// Output segments per PE.
    pub segments: u64,
    /// Lane multipliers.
    pub datapath: Datapath,
    /// Whether its precisions pack two MACs per DSP (points written before packing have none).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub pack: bool,
    /// DSP slices.
    pub dsp: u64,
    /// LUTs (logic and memory).
    pub lut: u64,
    /// Flip-flops.
    pub ff: u64,
    /// 36 Kb block RAMs.
    pub bram36: f64,
}

/// A calibration file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Calibration {
    /// The Yosys that produced the counts (`yosys -V`).
    pub yosys: String,
    /// The synthesis command.
    pub synthesis: String,
    /// Words per operand and result bank of every point.
    pub bank_words: u64,
    /// Dequantiser stages and pipeline depth of every point (minimum + 1).
    pub note: String,
    /// The synthesised engines.
    pub points: Vec<CalibrationPoint>,
}

/// Resources estimated for one engine.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ResourceEstimate {
    /// DSP slices.
    pub dsp: u64,
    /// LUTs.
    pub lut: u64,
    /// Flip-flops.
    pub ff: u64,
    /// 36 Kb block RAMs.
    pub bram36: f64,
    /// Where the figures come from.
    pub source: String,
}

const BUILTIN: &str = include_str!("../data/resources-yosys-xcup.json");

impl Calibration {
    /// The calibration shipped with Tessera.
    pub fn builtin() -> &'static Calibration {
        static CAL: OnceLock<Calibration> = OnceLock::new();
        CAL.get_or_init(|| {
            serde_json::from_str(BUILTIN).expect("spec/data/resources-yosys-xcup.json is valid")
        })
    }

    /// The estimate for `matrix`, or `None` when the generator cannot build it or the
    /// calibration has too few points of its datapath.
    pub fn estimate(&self, matrix: &MatrixEngine) -> Option<ResourceEstimate> {
        let (datapath, pack, segments) = buildable(matrix)?;
        let points: Vec<&CalibrationPoint> = self
            .points
            .iter()
            .filter(|p| p.datapath == datapath && p.pack == pack)
            .collect();
        let features = |rows: u64, cols: u64, lanes: u64, segs: u64| {
            let pes = rows as f64 * cols as f64;
            [1.0, rows as f64, pes, pes * lanes as f64, pes * segs as f64]
        };
        let rows: Vec<[f64; FEATURES]> = points
            .iter()
            .map(|p| features(p.rows, p.cols, p.chain, p.segments))
            .collect();
        let x = features(matrix.rows(), matrix.cols(), matrix.chain(), segments);
        let fit = |value: &dyn Fn(&CalibrationPoint) -> f64| -> Option<f64> {
            let y: Vec<f64> = points.iter().map(|p| value(p)).collect();
            let c = least_squares(&rows, &y)?;
            Some(c.iter().zip(x).map(|(c, x)| c * x).sum::<f64>().max(0.0))
        };
        Some(ResourceEstimate {
            dsp: fit(&|p| p.dsp as f64)?.round() as u64,
            lut: fit(&|p| p.lut as f64)?.round() as u64,
            ff: fit(&|p| p.ff as f64)?.round() as u64,
            bram36: (fit(&|p| p.bram36)? * 2.0).round() / 2.0,
            source: format!(
                "fit over {} {}{} engines synthesised by {} ({}, banks of {} words)",
                points.len(),
                match datapath {
                    Datapath::Multiplier => "multiplier",
                    Datapath::ShiftAdd => "shift-and-add",
                    Datapath::Mixed => "mixed",
                },
                if pack { " packing" } else { "" },
                self.yosys,
                self.synthesis,
                self.bank_words
            ),
        })
    }
}

/// The datapath, whether it packs two MACs per DSP, and the segments per PE of an engine the
/// generator can build.
pub fn buildable(matrix: &MatrixEngine) -> Option<(Datapath, bool, u64)> {
    let lanes = matrix.chain();
    if !(lanes.is_power_of_two() && lanes <= 16) {
        return None;
    }
    let (mut mul, mut sa, mut pack) = (false, false, false);
    for p in matrix.precisions() {
        if p.activation() != ActivationFormat::Int8
            || p.weight().bits() > 8
            || !(p.macs_per_dsp() == 1.0 || p.macs_per_dsp() == 2.0)
        {
            return None;
        }
        pack |= p.macs_per_dsp() == 2.0;
        if p.shift_add() {
            sa = true;
        } else {
            mul = true;
        }
    }
    let datapath = match (mul, sa) {
        (true, true) => Datapath::Mixed,
        (false, true) => Datapath::ShiftAdd,
        _ => Datapath::Multiplier,
    };
    let min_n = matrix
        .sparse()
        .nm()
        .iter()
        .copied()
        .min()
        .unwrap_or(16)
        .min(16) as u64;
    let segments = (lanes / min_n.min(lanes).max(1)).max(1);
    Some((
        datapath,
        pack,
        if pack { segments.max(2) } else { segments },
    ))
}

/// Unknowns of the fit: the constant, rows, PEs, PEs × lanes and PEs × segments.
const FEATURES: usize = 5;

/// Ordinary least squares by the normal equations; `None` when singular.
fn least_squares(rows: &[[f64; FEATURES]], y: &[f64]) -> Option<[f64; FEATURES]> {
    let mut a = [[0.0; FEATURES + 1]; FEATURES];
    for (r, &v) in rows.iter().zip(y) {
        for i in 0..FEATURES {
            for j in 0..FEATURES {
                a[i][j] += r[i] * r[j];
            }
            a[i][FEATURES] += r[i] * v;
        }
    }
    for col in 0..FEATURES {
        let pivot = (col..FEATURES).max_by(|&i, &j| a[i][col].abs().total_cmp(&a[j][col].abs()))?;
        if a[pivot][col].abs() < 1e-9 {
            return None;
        }
        a.swap(col, pivot);
        let pivot_row = a[col];
        for (i, row) in a.iter_mut().enumerate() {
            if i != col {
                let f = row[col] / pivot_row[col];
                for (x, p) in row.iter_mut().zip(pivot_row).skip(col) {
                    *x -= f * p;
                }
            }
        }
    }
    Some(std::array::from_fn(|i| a[i][FEATURES] / a[i][i]))
}

/// The matrix engine's DSP count for budgets and sweeps: the measured estimate when the
/// calibration covers the engine, otherwise one DSP per lane (`rows × cols × chain`).
pub fn engine_dsps(matrix: &MatrixEngine) -> u64 {
    Calibration::builtin()
        .estimate(matrix)
        .map_or(matrix.dsps(), |e| e.dsp)
}
