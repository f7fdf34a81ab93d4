//! The golden reference for functional mode: the same quantised math as
//! [`tessera_spec::isa::data`] describes, computed directly from logical tensors (no packing, no
//! buffers, no tiling), so that a functional simulation can be checked against it bit for bit.

use half::f16;
use tessera_spec::accel::SfuOp;
use tessera_spec::isa::data::{quantize_scale, sfu_row};

/// A quantised weight matrix in logical form: `k × n`, stored column by column.
#[derive(Debug, Clone, PartialEq)]
pub struct QuantWeights {
    /// Reduction length.
    pub k: usize,
    /// Output features.
    pub n: usize,
    /// Bits per weight (2..=8).
    pub bits: u32,
    /// Group size along `k` (0: one scale per column).
    pub group: usize,
    /// `values[j·k + p]`: column `j`, reduction index `p` (0 where pruned).
    pub values: Vec<i32>,
    /// `scales[j·groups + g]`, each exactly representable in fp16.
    pub scales: Vec<f32>,
    /// For N:M sparsity, the kept weights (`nm_n` per 16-wide block).
    pub kept: Option<Vec<bool>>,
    /// Asymmetric weights: a zero point per scale (integers, exact in fp16), the weight standing
    /// for `scale · (w − z)`.
    pub zero_points: Option<Vec<f32>>,
}

/// A seeded xorshift64* generator, so golden data is the same everywhere.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    /// A generator from a non-zero seed.
    pub fn new(seed: u64) -> Self {
        Rng(seed.max(1))
    }
    /// The next 64 random bits.
    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    /// A uniform integer in `lo..=hi`.
    pub fn int(&mut self, lo: i32, hi: i32) -> i32 {
        lo + (self.next_u64() % (hi - lo + 1) as u64) as i32
    }
}

impl QuantWeights {
    /// Random weights over the whole `bits`-wide range (so edge values occur) with positive fp16
    /// scales; `nm_n` of each 16 kept (at random positions) if given.
    pub fn random(
        rng: &mut Rng,
        k: usize,
        n: usize,
        bits: u32,
        group: usize,
        nm_n: Option<usize>,
    ) -> Self {
        let (lo, hi) = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1);
        let kept = nm_n.map(|keep| {
            let mut mask = vec![false; k * n];
            for block in 0..k * n / 16 {
                let mut chosen = 0;
                while chosen < keep {
                    let i = block * 16 + rng.int(0, 15) as usize;
                    if !mask[i] {
                        mask[i] = true;
                        chosen += 1;
                    }
                }
            }
            mask
        });
        let values = (0..k * n)
            .map(|i| match &kept {
                Some(mask) if !mask[i] => 0,
                _ => rng.int(lo, hi),
            })
            .collect();
        let groups = if group == 0 { 1 } else { k.div_ceil(group) };
        let scales = (0..n * groups)
            .map(|_| f16::from_f32(rng.int(1, 1000) as f32 / 4096.0).to_f32())
            .collect();
        QuantWeights {
            k,
            n,
            bits,
            group,
            values,
            scales,
            kept,
            zero_points: None,
        }
    }

    /// The same weights made asymmetric: a random zero point per scale within the `bits`-wide
    /// range.
    pub fn with_zero_points(mut self, rng: &mut Rng) -> Self {
        let (lo, hi) = (-(1 << (self.bits - 1)), (1 << (self.bits - 1)) - 1);
        self.zero_points = Some(self.scales.iter().map(|_| rng.int(lo, hi) as f32).collect());
        self
    }

    /// Whether reduction index `p` of column `j` holds a weight (not pruned).
    fn is_kept(&self, j: usize, p: usize) -> bool {
        self.kept.as_ref().is_none_or(|k| k[j * self.k + p])
    }

    /// Group `g` of column `j`'s term: `scale · dot`, or `scale · (dot − z · asum)` with zero
    /// points, in fp32.
    fn term(&self, j: usize, g: usize, groups: usize, dot: f32, asum: f32) -> f32 {
        let i = j * groups + g;
        self.scales[i]
            * match &self.zero_points {
                Some(z) => dot - z[i] * asum,
                None => dot,
            }
    }

    /// [`Self::linear_int8`] of scaled int8 activations: each row's results times its scale
    /// `row_scales[r]`, in fp32.
    pub fn linear_int8_scaled(&self, x: &[i8], row_scales: &[f32]) -> Vec<f32> {
        let mut y = self.linear_int8(x, row_scales.len());
        for (row, s) in y.chunks_exact_mut(self.n).zip(row_scales) {
            row.iter_mut().for_each(|v| *v *= s);
        }
        y
    }

    /// `y[r·n + j] = Σ_g scale(j, g) · Σ_{p ∈ g} x[r·k + p] · w(p, j)` for int8 activations:
    /// integer partial sums per group, scaled and summed over groups in order in fp32 (with zero
    /// points, `scale · (psum − z · Σ_{p ∈ g, kept} x)`).
    pub fn linear_int8(&self, x: &[i8], rows: usize) -> Vec<f32> {
        let group = if self.group == 0 { self.k } else { self.group };
        let groups = self.k.div_ceil(group);
        let mut y = vec![0f32; rows * self.n];
        for r in 0..rows {
            for j in 0..self.n {
                let mut acc = 0f32;
                for g in 0..groups {
                    let kept =
                        (g * group..((g + 1) * group).min(self.k)).filter(|&p| self.is_kept(j, p));
                    let (psum, asum) = kept.fold((0i32, 0i32), |(d, s), p| {
                        let a = x[r * self.k + p] as i32;
                        (d + a * self.values[j * self.k + p], s + a)
                    });
                    acc += self.term(j, g, groups, psum as f32, asum as f32);
                }
                y[r * self.n + j] = acc;
            }
        }
        y
    }
}

impl QuantWeights {
    /// `y[r·n + j] = Σ_g scale(j, g) · Σ_{p ∈ g} x[r·k + p] · w(p, j)` for fp16 activations
    /// (given as fp32): fp32 partial sums per group in reduction order, scaled and summed over
    /// groups in order in fp32 (zero points as in [`Self::linear_int8`]).
    pub fn linear_fp16(&self, x: &[f32]) -> Vec<f32> {
        let group = if self.group == 0 { self.k } else { self.group };
        let groups = self.k.div_ceil(group);
        let rows = x.len() / self.k;
        let mut y = vec![0f32; rows * self.n];
        for r in 0..rows {
            for j in 0..self.n {
                let mut acc = 0f32;
                for g in 0..groups {
                    let kept =
                        (g * group..((g + 1) * group).min(self.k)).filter(|&p| self.is_kept(j, p));
                    let (psum, asum) = kept.fold((0f32, 0f32), |(d, s), p| {
                        let a = x[r * self.k + p];
                        (d + a * self.values[j * self.k + p] as f32, s + a)
                    });
                    acc += self.term(j, g, groups, psum, asum);
                }
                y[r * self.n + j] = acc;
            }
        }
        y
    }
}

/// Rounds fp32 values to fp16 (nearest, ties to even) and back.
pub fn round_f16(values: &[f32]) -> Vec<f32> {
    values.iter().map(|v| f16::from_f32(*v).to_f32()).collect()
}

/// Per-row int8 quantisation of `rows × cols` values as the special-function unit's `quantize`
/// defines it ([`tessera_spec::isa::data`]): the int8 values and each row's scale.
pub fn quantize_rows(x: &[f32], cols: usize) -> (Vec<i8>, Vec<f32>) {
    let mut values = Vec::with_capacity(x.len());
    let mut scales = Vec::new();
    for row in x.chunks_exact(cols) {
        values.extend(sfu_row(SfuOp::Quantize, row, &[]).iter().map(|v| *v as i8));
        scales.push(quantize_scale(row).to_f32());
    }
    (values, scales)
}
