//! Operand data formats: how the bytes an instruction reads and writes encode its tensors. The
//! simulator's functional mode decodes them, the compiler encodes them, the RTL reads them.
//!
//! **Matrix instructions** compute `C[m×n] (+)= A[m×k] · W[k×n]`:
//! - `A` at `a`: row-major, int8 (`act_int8`) or fp16, `m × k` elements. Scaled int8
//!   activations (`a_scaled`) are followed, from byte `m·k`, by one fp16 scale `s_r` per row, as
//!   the special-function unit's `quantize` writes them ([`quantize_scale`]).
//! - `W` at `b`: column by column (output feature `j` holds its `k` weights, or for N:M its
//!   `k/16 × N` kept weights, in order), all packed into one little-endian bit stream of
//!   two's-complement `bits`-wide integers ([`pack_ints`]), or fp16 for `weight=fp16`. Integer
//!   weights are followed, from the next byte, by their fp16 scales: per column, one per group of
//!   `group` reduction indices (`group = 0`: one per column) — [`weight_scales_offset`] —, and
//!   with `zero_points` (asymmetric quantisation) then one fp16 zero point `z` per scale, in the
//!   same order: the weight stands for `scale · (w − z)`.
//!   With `b_rows` (dense int8 or fp16 weights) `W` is stored by reduction rows instead: row `p`
//!   holds `w(p, 0..n)`, as a value cache's token-major rows are. Int8 rows carry no scales
//!   (`k × n` bytes): a row's scale `s_p` is folded into `A` beforehand, since
//!   `Σ_p a_p · (s_p · w_p) = Σ_p (a_p · s_p) · w_p`.
//! - `batch` products run one after another: product `h` reads `A`, `W` and the metadata `h`
//!   operands (their byte sizes) after the first's and writes its results `c_batch` elements
//!   after the previous product's (0: `m · c_stride`, its rows after the previous product's
//!   rows; or a step within the rows, its columns beside the previous product's).
//! - N:M metadata at `meta`: one 4-bit index (position within its 16-wide block) per kept weight,
//!   in the weights' order, packed like 4-bit unsigned integers.
//! - Block-skip and unstructured sparsity store weights dense (skipped ones are zero); their
//!   bitmaps at `meta` tell the hardware what to skip and do not change the result.
//! - `C` at `c`: row-major, fp32 or fp16 (`out`), row `r` starting `r · c_stride` elements
//!   after `c` (`c_stride = 0`: `n`, rows packed). Each output is `Σ_g scale_g · psum_g` over the
//!   column's groups in order, accumulated in fp32, where `psum_g` is the group's int32 dot
//!   product (int8 activations) or its fp32 dot product in reduction order (fp16 activations);
//!   with zero points each term is `scale_g · (psum_g − z_g · asum_g)` in fp32, `asum_g` the sum
//!   of the group's activations at the kept positions (int32, or fp32 in reduction order).
//!   fp16 weights: one fp32 dot product in reduction order. Int8 `b_rows` weights: the plain
//!   dot product over the whole reduction, int32 (int8 activations) or fp32 in reduction order
//!   (fp16 activations, each int8 weight converted exactly), with no weight scale. With
//!   `a_scaled` the sum is then multiplied by its row's `s_r` in fp32. `accumulate` adds, in
//!   fp32, the value already there (read in the `out` format). fp16 results are the fp32 value
//!   rounded to nearest, ties to even.
//! - The epilogue (not with `accumulate` or a batch): with `bias`, an fp16 row of `n` values at
//!   `bias_addr` in `bias_buffer`, column `j`'s added to each of its results; with `act`, the
//!   activation applied after it. Each step takes the result in the `out` format (fp16: rounded)
//!   and computes as the special-function unit's `add_row` and activation ([`sfu_row`]), so the
//!   results equal the plain product's followed by those special-function passes, bit for bit.
//!
//! **Special-function instructions** read `rows × cols` fp16 at `src` (row-major) and write the
//! same shape as fp16 at `dst`, computing in fp32 (see [`crate::accel::SfuOp`] for each op's
//! `aux` operand and [`LAYER_NORM_EPS`], [`RMS_NORM_EPS`]). `quantize` writes int8 instead,
//! `rows × cols` values and then one fp16 scale per row: the scale is `max |x| / 127` rounded
//! to fp16 ([`quantize_scale`]), each value `x / scale` in fp32 rounded to nearest (ties to even)
//! and clamped to ±127, or 0 when the scale is 0. `dequantize` reads that format and writes each
//! value times its row's scale, in fp32 rounded to fp16.

use crate::accel::SfuOp;
use half::f16;

/// ε added to the variance by `layer_norm` (the value of OPT, GPT-2 and BERT configs).
pub const LAYER_NORM_EPS: f32 = 1e-5;
/// ε added to the mean square by `rms_norm` (the value of LLaMA configs).
pub const RMS_NORM_EPS: f32 = 1e-6;

/// One row of a special-function instruction in fp32: `x` is the row of `src`, `aux` the
/// instruction's `aux` operand as [`SfuOp`] describes it (the row's part for same-shape operands,
/// the whole `γ`/`β` vector for norms, the angles' row for rotary, the bias row for `add_row`, the scale row for `mul_row`,
/// the row's scale for `dequantize`, whose `x` holds the row's int8 values). Returns the row to
/// round to fp16 for `dst`, or for `quantize` the row's int8 values (its scale is
/// [`quantize_scale`]).
pub fn sfu_row(op: SfuOp, x: &[f32], aux: &[f32]) -> Vec<f32> {
    let n = x.len() as f32;
    match op {
        SfuOp::Softmax => {
            let max = x.iter().copied().fold(f32::NEG_INFINITY, f32::max);
            let e: Vec<f32> = x.iter().map(|v| (v - max).exp()).collect();
            let sum: f32 = e.iter().sum();
            e.iter().map(|v| v / sum).collect()
        }
        SfuOp::LayerNorm => {
            let mean = x.iter().sum::<f32>() / n;
            let var = x.iter().map(|v| (v - mean) * (v - mean)).sum::<f32>() / n;
            let inv = 1.0 / (var + LAYER_NORM_EPS).sqrt();
            let (gamma, beta) = aux.split_at(x.len());
            (0..x.len())
                .map(|i| (x[i] - mean) * inv * gamma[i] + beta[i])
                .collect()
        }
        SfuOp::RmsNorm => {
            let ms = x.iter().map(|v| v * v).sum::<f32>() / n;
            let inv = 1.0 / (ms + RMS_NORM_EPS).sqrt();
            x.iter().zip(aux).map(|(v, g)| v * inv * g).collect()
        }
        SfuOp::Silu => x.iter().map(|v| v / (1.0 + (-v).exp())).collect(),
        SfuOp::Gelu => {
            let c = (2.0 / std::f32::consts::PI).sqrt();
            x.iter()
                .map(|v| 0.5 * v * (1.0 + (c * (v + 0.044715 * v * v * v)).tanh()))
                .collect()
        }
        SfuOp::Relu => x.iter().map(|v| v.max(0.0)).collect(),
        SfuOp::Copy => x.to_vec(),
        SfuOp::Rotary => {
            let mut y = x.to_vec();
            for i in (0..x.len() - x.len() % 2).step_by(2) {
                let (cos, sin) = (aux[i], aux[i + 1]);
                y[i] = x[i] * cos - x[i + 1] * sin;
                y[i + 1] = x[i] * sin + x[i + 1] * cos;
            }
            y
        }
        SfuOp::Add | SfuOp::AddRow => x.iter().zip(aux).map(|(a, b)| a + b).collect(),
        SfuOp::Dequantize => x.iter().map(|v| v * aux[0]).collect(),
        SfuOp::Mul | SfuOp::MulRow => x.iter().zip(aux).map(|(a, b)| a * b).collect(),
        SfuOp::Quantize => {
            let scale = quantize_scale(x).to_f32();
            x.iter()
                .map(|v| {
                    if scale == 0.0 {
                        0.0
                    } else {
                        (v / scale).round_ties_even().clamp(-127.0, 127.0)
                    }
                })
                .collect()
        }
    }
}

/// The int8 scale `quantize` gives a row: `max |x| / 127` in fp32, rounded to fp16.
pub fn quantize_scale(x: &[f32]) -> f16 {
    f16::from_f32(x.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0)
}

/// Encodes a weight matrix for a matrix instruction's `b` and `meta` operands.
///
/// `values[j·k + p]` is column `j`'s weight at reduction index `p` (`bits`-wide integers);
/// `scales[j·groups + g]` its scale for group `g` (rounded to fp16), followed, for asymmetric
/// weights, by the zero points in the same order; `kept`, for N:M, marks the
/// weights kept (exactly `nm_n` per 16-wide block, in index order). Returns the `b` bytes
/// (packed weights, then scales) and the `meta` bytes (empty when dense).
pub fn encode_weights(
    values: &[i32],
    scales: &[f32],
    k: u64,
    bits: u32,
    kept: Option<&[bool]>,
) -> (Vec<u8>, Vec<u8>) {
    let mut stored = Vec::with_capacity(values.len());
    let mut indices = Vec::new();
    for (i, v) in values.iter().enumerate() {
        match kept {
            Some(mask) if !mask[i] => {}
            Some(_) => {
                stored.push(*v);
                indices.push((i as u64 % k % 16) as i32);
            }
            None => stored.push(*v),
        }
    }
    let mut b = pack_ints(&stored, bits);
    b.extend(f16_bytes(scales));
    (b, pack_ints(&indices, 4))
}

/// Packs `values` (each representable in `bits` bits, two's complement) into a little-endian bit
/// stream.
pub fn pack_ints(values: &[i32], bits: u32) -> Vec<u8> {
    let mut out = vec![0u8; (values.len() as u64 * bits as u64).div_ceil(8) as usize];
    let mask = (1u64 << bits) - 1;
    for (i, &v) in values.iter().enumerate() {
        let mut bit = i as u64 * bits as u64;
        let mut raw = v as u64 & mask;
        let mut left = bits as u64;
        while left > 0 {
            let byte = (bit / 8) as usize;
            let shift = bit % 8;
            let take = (8 - shift).min(left);
            out[byte] |= ((raw & ((1 << take) - 1)) << shift) as u8;
            raw >>= take;
            bit += take;
            left -= take;
        }
    }
    out
}

/// Reads `count` `bits`-wide integers from the bit stream `bytes`, starting at element `first`;
/// `signed` sign-extends them.
pub fn unpack_ints(bytes: &[u8], first: u64, count: u64, bits: u32, signed: bool) -> Vec<i32> {
    (first..first + count)
        .map(|i| {
            let mut bit = i * bits as u64;
            let mut raw = 0u64;
            let mut got = 0u64;
            while got < bits as u64 {
                let byte = bytes.get((bit / 8) as usize).copied().unwrap_or(0) as u64;
                let shift = bit % 8;
                let take = (8 - shift).min(bits as u64 - got);
                raw |= ((byte >> shift) & ((1 << take) - 1)) << got;
                got += take;
                bit += take;
            }
            if signed && bits < 32 && raw >> (bits - 1) & 1 == 1 {
                (raw | !((1u64 << bits) - 1)) as i64 as i32
            } else {
                raw as i32
            }
        })
        .collect()
}

/// fp16 values as little-endian bytes.
pub fn f16_bytes(values: &[f32]) -> Vec<u8> {
    values
        .iter()
        .flat_map(|v| f16::from_f32(*v).to_le_bytes())
        .collect()
}

/// Little-endian fp16 bytes as fp32 values.
pub fn f16_values(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(2)
        .map(|c| f16::from_le_bytes([c[0], c[1]]).to_f32())
        .collect()
}

/// Little-endian fp32 bytes as values.
pub fn f32_values(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

/// Scale groups per column for reduction length `k` and group size `group` (0: one).
pub fn groups_per_column(k: u64, group: u64) -> u64 {
    if group == 0 {
        1
    } else {
        k.div_ceil(group)
    }
}

/// Byte offset of the fp16 scales after `stored` packed `bits`-wide integer weights.
pub fn weight_scales_offset(stored: u64, bits: u32) -> u64 {
    (stored * bits as u64).div_ceil(8)
}

/// Bytes of fp16 scales for `n` columns of reduction length `k` in groups of `group`.
pub fn weight_scale_bytes(n: u64, k: u64, group: u64) -> u64 {
    2 * n * groups_per_column(k, group)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packing_round_trips_every_width() {
        for bits in [2u32, 3, 4, 8] {
            let lo = -(1i32 << (bits - 1));
            let hi = (1i32 << (bits - 1)) - 1;
            let values: Vec<i32> = (0..37).map(|i| lo + (i * 7) % (hi - lo + 1)).collect();
            let packed = pack_ints(&values, bits);
            assert_eq!(packed.len(), (37 * bits as usize).div_ceil(8));
            assert_eq!(unpack_ints(&packed, 0, 37, bits, true), values, "{bits}");
            assert_eq!(
                unpack_ints(&packed, 5, 3, bits, true),
                values[5..8],
                "{bits}"
            );
        }
        // int4: low nibble first.
        assert_eq!(pack_ints(&[1, -1], 4), vec![0xf1]);
        assert_eq!(unpack_ints(&[0xf1], 0, 2, 4, false), vec![1, 15]);
    }

    #[test]
    fn sfu_rows_compute_what_each_op_names() {
        let close = |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| (x - y).abs() < 1e-5);
        let s = sfu_row(SfuOp::Softmax, &[1.0, 2.0, 3.0], &[]);
        assert!((s.iter().sum::<f32>() - 1.0).abs() < 1e-6 && s[2] > s[1] && s[1] > s[0]);
        // A row of equal values normalises to β; RMSNorm of ±2 is ±γ.
        let ln = sfu_row(
            SfuOp::LayerNorm,
            &[3.0; 4],
            &[2.0, 2.0, 2.0, 2.0, 0.5, 0.5, 0.5, 0.5],
        );
        assert!(close(&ln, &[0.5; 4]), "{ln:?}");
        let rms = sfu_row(SfuOp::RmsNorm, &[2.0, -2.0], &[3.0, 1.0]);
        assert!(close(&rms, &[3.0, -1.0]), "{rms:?}");
        assert!(close(&sfu_row(SfuOp::Silu, &[0.0], &[]), &[0.0]));
        let g = sfu_row(SfuOp::Gelu, &[-10.0, 0.0, 10.0], &[]);
        assert!(close(&g, &[0.0, 0.0, 10.0]), "{g:?}");
        assert_eq!(sfu_row(SfuOp::Relu, &[-1.0, 2.0], &[]), vec![0.0, 2.0]);
        // A quarter turn maps (1, 0) to (0, 1).
        let r = sfu_row(SfuOp::Rotary, &[1.0, 0.0], &[0.0, 1.0]);
        assert!(close(&r, &[0.0, 1.0]), "{r:?}");
        assert_eq!(sfu_row(SfuOp::Add, &[1.0], &[2.0]), vec![3.0]);
        assert_eq!(sfu_row(SfuOp::Mul, &[1.5], &[2.0]), vec![3.0]);
        // max |x| = 254 gives scale 2; 3 / 2 rounds to even, −254 / 2 is the clamp's edge.
        assert_eq!(quantize_scale(&[3.0, -254.0, 1.0]).to_f32(), 2.0);
        assert_eq!(
            sfu_row(SfuOp::Quantize, &[3.0, -254.0, 1.0, 5.0], &[]),
            vec![2.0, -127.0, 0.0, 2.0]
        );
        assert_eq!(sfu_row(SfuOp::Quantize, &[0.0, 0.0], &[]), vec![0.0, 0.0]);
        assert_eq!(
            sfu_row(SfuOp::Dequantize, &[2.0, -127.0], &[0.5]),
            vec![1.0, -63.5]
        );
    }

    #[test]
    fn fp16_round_trips() {
        let v = [0.0, 1.5, -2.25, 65504.0];
        assert_eq!(f16_values(&f16_bytes(&v)), v);
    }
}
