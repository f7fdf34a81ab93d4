//! The generator's parameters: what the accelerator spec asks of the matrix engine, checked
//! against what the generated hardware can build. Every refusal names the spec key.
//!
//! The generator builds int8-activation precisions at one MAC per DSP or two (`macs_per_dsp = 2`,
//! AMD WP486's DSP48E2 packing: two weights share one activation, so a lane computes two output
//! columns of a dense instruction; [`EngineParams::pack`]); fp16 datapaths and other packings are
//! refused by `matrix.precisions[i]`.

use tessera_spec::accel::{Accelerator, WeightType};
use tessera_spec::compression::ActivationFormat;
use tessera_spec::error::{Problem, SpecError};

/// Width of one N:M block along the reduction: the sparse multiplexer picks among 16 activations.
pub const BLOCK: usize = 16;

/// The matrix engine the generator builds, derived from one [`Accelerator`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineParams {
    /// PE rows.
    pub rows: usize,
    /// PE columns.
    pub cols: usize,
    /// Lanes (DSPs) per PE chain; a power of two up to [`BLOCK`].
    pub lanes: usize,
    /// log2 of the shortest chain segment the reduction nodes cut: `log2(min(N, lanes))` over
    /// the supported N of N:16 (dense is N = 16).
    pub min_segment_log2: u32,
    /// Whether some precision multiplies int8 weights in the DSP multiplier.
    pub has_multiplier: bool,
    /// Whether some precision uses the shift-and-add datapath for 4-bit-or-narrower weights.
    pub has_shift_add: bool,
    /// Output columns a lane's DSP computes at once on dense steps: 2 when some precision packs
    /// two MACs per DSP (`macs_per_dsp = 2`, AMD WP486), else 1 (see [`crate::pe`]).
    pub pack: usize,
    /// Cycles of the pipelined per-group dequantiser (`matrix.dequant_cycles_per_group`).
    pub dequant_latency: usize,
    /// The spec's `matrix.pipeline_depth`, which the generated engine meets exactly.
    pub pipeline_depth: usize,
}

/// Fixed pipeline stages of a PE besides the DSP cascade and the dequantiser: input registers,
/// product registers (the DSPs' `MREG`), group accumulator, output accumulator.
pub(crate) const PE_FIXED_STAGES: usize = 4;
/// Stages the engine adds around the PEs: the operand-bank read.
const ENGINE_FIXED_STAGES: usize = 1;

/// DSP48E2 slices in one DSP column of one clock region of an UltraScale+ device, the family the
/// generator synthesises for (`synth_xilinx -family xcup`): "For UltraScale devices the height
/// of a clock region is 60 CLBs, 24 DSP slices, and 12 block RAMs" (AMD UG912, Vivado Design
/// Suite Properties Reference Guide, `CLOCK_REGION`). The `PCOUT → PCIN` cascade runs up a DSP
/// column (AMD UG579, UltraScale Architecture DSP Slice User Guide); a column may continue into
/// the clock regions above (UG579's Table 1-2 gives each device's longest cascade, and the
/// UltraScale+ data sheets, e.g. DS923, note that cascades crossing a clock region's centre may
/// run below the rated Fmax at 0.72 V), but one clock region's 24 slices are the column every
/// UltraScale+ device has, so a chain no longer than this fits one column anywhere in the family.
/// It is longer than the 16 lanes the sparse multiplexer's block already allows
/// ([`BLOCK`]), so today that limit refuses first; [`check_cascade_column`] keeps the target's
/// limit checked on its own.
pub const XCUP_DSP_CASCADE_COLUMN: u64 = 24;

impl EngineParams {
    /// Checks that the hardware generator can build `accel`'s matrix engine.
    pub fn from_accel(accel: &Accelerator) -> Result<EngineParams, SpecError> {
        let m = accel.matrix();
        let mut problems = Vec::new();
        let lanes = m.chain();
        if !(lanes.is_power_of_two() && lanes as usize <= BLOCK) {
            problems.push(Problem::new(
                "matrix.chain",
                format!("the hardware generator cannot build a chain of {lanes} DSPs"),
                "the sparse DSP chain reads one 16-wide activation block per step: use 1, 2, 4, 8 or 16",
            ));
        }
        problems.extend(check_cascade_column(lanes, XCUP_DSP_CASCADE_COLUMN));
        let mut has_multiplier = false;
        let mut has_shift_add = false;
        let mut pack = 1;
        for (i, p) in m.precisions().iter().enumerate() {
            let key = format!("matrix.precisions[{i}]");
            let help = "the generated PE supports int8 activations × int8/int4/int3/int2 weights at macs_per_dsp = 1 or 2 (shift_add only for 4-bit or narrower weights)";
            if p.activation() != ActivationFormat::Int8 || p.weight() == WeightType::Fp16 {
                problems.push(Problem::new(
                    &key,
                    format!("the hardware generator has no {p} datapath"),
                    help,
                ));
                continue;
            }
            if p.macs_per_dsp() == 2.0 {
                pack = 2;
            } else if p.macs_per_dsp() != 1.0 {
                problems.push(Problem::new(
                    &key,
                    format!(
                        "{p} packs {} MACs per DSP; the generated PE performs one, or two sharing an activation",
                        p.macs_per_dsp()
                    ),
                    help,
                ));
                continue;
            }
            if p.shift_add() {
                if p.weight().bits() > 4 {
                    problems.push(Problem::new(
                        &key,
                        format!("shift-and-add for {} weights", p.weight().name()),
                        help,
                    ));
                }
                has_shift_add = true;
            } else {
                has_multiplier = true;
            }
        }
        let mut min_n = BLOCK as u64;
        for (i, &n) in m.sparse().nm().iter().enumerate() {
            if !n.is_power_of_two() {
                problems.push(Problem::new(
                    format!("matrix.sparse.nm[{i}]"),
                    format!("N = {n} does not split the chain into equal segments"),
                    "the reduction nodes cut the chain at powers of two: use 1, 2, 4, 8 or 16",
                ));
            }
            min_n = min_n.min(n as u64);
        }
        let dequant_latency = m.dequant_cycles_per_group() as usize;
        if dequant_latency == 0 {
            problems.push(Problem::new(
                "matrix.dequant_cycles_per_group",
                "the generated dequantiser needs at least one pipeline stage",
                "use 1 or more",
            ));
        }
        let params = EngineParams {
            rows: m.rows() as usize,
            cols: m.cols() as usize,
            lanes: lanes as usize,
            min_segment_log2: min_n.min(lanes).max(1).ilog2(),
            has_multiplier,
            has_shift_add,
            pack,
            dequant_latency,
            pipeline_depth: m.pipeline_depth() as usize,
        };
        if problems.is_empty() && params.pipeline_depth < params.structural_depth() {
            problems.push(Problem::new(
                "matrix.pipeline_depth",
                format!(
                    "the generated engine needs at least {} pipeline stages, the spec gives {}",
                    params.structural_depth(),
                    params.pipeline_depth
                ),
                format!(
                    "operand read 1 + PE {} (input, product, {} cascade stages (one per lane), group accumulator, {} dequantiser, output accumulator): set matrix.pipeline_depth ≥ {}",
                    params.pe_structural_depth(),
                    params.lanes,
                    params.dequant_latency,
                    params.structural_depth()
                ),
            ));
        }
        SpecError::check(accel.source(), problems)?;
        Ok(params)
    }

    /// `log2(lanes)`: the longest segment's segment field.
    pub fn lanes_log2(&self) -> usize {
        self.lanes.ilog2() as usize
    }

    /// Output segments a PE can emit at once: `lanes / 2^min_segment_log2`, and at least the
    /// two columns of a packed step.
    pub fn max_segments(&self) -> usize {
        (self.lanes >> self.min_segment_log2).max(self.pack)
    }

    /// Cycles from a step entering a PE to its result leaving, without padding: the fixed
    /// stages, one cascade stage per lane and the dequantiser.
    pub fn pe_structural_depth(&self) -> usize {
        PE_FIXED_STAGES + self.lanes + self.dequant_latency
    }

    /// The shortest pipeline the generated engine can have.
    pub fn structural_depth(&self) -> usize {
        ENGINE_FIXED_STAGES + self.pe_structural_depth()
    }

    /// Delay registers a PE adds after its output accumulator so that the engine's depth equals
    /// `matrix.pipeline_depth`.
    pub fn pe_padding(&self) -> usize {
        self.pipeline_depth - self.structural_depth()
    }

    /// Whether the spec's weight type × int8 activations packs two MACs per DSP, so that its dense
    /// instructions run two columns per lane (`analytical::MatrixTiling::pack`).
    pub fn uses_pack(accel: &Accelerator, weight: WeightType) -> bool {
        accel
            .matrix()
            .precision(weight.bits(), ActivationFormat::Int8)
            .is_some_and(|p| p.macs_per_dsp() == 2.0)
    }

    /// Whether the spec's weight type runs on the shift-and-add datapath.
    pub fn uses_shift_add(accel: &Accelerator, weight: WeightType) -> bool {
        accel
            .matrix()
            .precision(weight.bits(), ActivationFormat::Int8)
            .is_some_and(|p| p.shift_add())
    }
}

/// The refusal of a chain of `lanes` DSPs longer than a DSP cascade column of `column` slices in
/// the target (for the generator's target, [`XCUP_DSP_CASCADE_COLUMN`]).
pub fn check_cascade_column(lanes: u64, column: u64) -> Option<Problem> {
    (lanes > column).then(|| {
        Problem::new(
            "matrix.chain",
            format!(
                "a chain of {lanes} DSPs is longer than the target's DSP cascade column of {column}"
            ),
            format!("the partial sums cascade up one DSP column: use a chain of at most {column}"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chain_longer_than_the_cascade_column_is_refused_by_key() {
        assert!(check_cascade_column(24, 24).is_none());
        let p = check_cascade_column(25, 24).expect("25 DSPs do not fit a column of 24");
        assert_eq!(p.key, "matrix.chain");
        assert!(p.message.contains("25") && p.help.contains("24"), "{p:?}");
        // A target with a shorter column refuses a chain the sparse multiplexer allows.
        assert!(check_cascade_column(BLOCK as u64, 8).is_some());
        // The generator's own limit admits every chain the multiplexer allows.
        for lanes in [1, 2, 4, 8, 16] {
            assert!(check_cascade_column(lanes, XCUP_DSP_CASCADE_COLUMN).is_none());
        }
    }

    #[test]
    fn a_chain_of_32_is_refused_by_matrix_chain() {
        let text = Accelerator::preset_text("tiny")
            .unwrap()
            .replace("chain = 4", "chain = 32")
            .replace("dsp = 64", "dsp = 100000");
        let accel = Accelerator::from_toml_str(&text, "long.toml").unwrap();
        let err = EngineParams::from_accel(&accel).unwrap_err().to_string();
        assert!(err.contains("matrix.chain"), "{err}");
        assert!(err.contains("DSP cascade column of 24"), "{err}");
    }

    #[test]
    fn the_structural_depth_has_one_cascade_stage_per_lane() {
        let tiny = EngineParams::from_accel(&Accelerator::preset("tiny").unwrap()).unwrap();
        assert_eq!(tiny.lanes, 4);
        // Operand read, input, product, 4 lanes, group accumulator, 2 dequantiser stages,
        // output accumulator.
        assert_eq!(tiny.structural_depth(), 1 + 1 + 1 + 4 + 1 + 2 + 1);
        assert_eq!(tiny.pe_padding(), tiny.pipeline_depth - 11);
    }
}
