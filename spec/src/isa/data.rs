//! Operand data formats: how the bytes an instruction reads and writes encode its tensors. The
//! simulator's functional mode decodes them, the compiler encodes them, the RTL reads them.
//!
//! **Matrix instructions** compute `C[m×n] (+)= A[m×k] · W[k×n]`:
//! - `A` at `a`: row-major, int8 (`act_int8`) or fp16, `m × k` elements.
//! - `W` at `b`: column by column (output feature `j` holds its `k` weights, or for N:M its
//!   `k/16 × N` kept weights, in order), all packed into one little-endian bit stream of
//!   two's-complement `bits`-wide integers ([`pack_ints`]), or fp16 for `weight=fp16`. Integer
//!   weights are followed, from the next byte, by their fp16 scales: per column, one per group of
//!   `group` reduction indices (`group = 0`: one per column) — [`weight_scales_offset`].
//! - N:M metadata at `meta`: one 4-bit index (position within its 16-wide block) per kept weight,
//!   in the weights' order, packed like 4-bit unsigned integers.
//! - Block-skip and unstructured sparsity store weights dense (skipped ones are zero); their
//!   bitmaps at `meta` tell the hardware what to skip and do not change the result.
//! - `C` at `c`: row-major fp32. Each output is `Σ_g scale_g · psum_g` over the column's groups in
//!   order, accumulated in fp32, where `psum_g` is the group's int32 dot product (int8
//!   activations) or its fp32 dot product in reduction order (fp16 activations). fp16 weights: one
//!   fp32 dot product in reduction order. `accumulate` adds the result to the fp32 already there.
//!
//! **Special-function instructions** read `rows × cols` fp16 at `src` (row-major) and write the
//! same shape as fp16 at `dst`, computing in fp32 (see [`crate::accel::SfuOp`] for each op's
//! `aux` operand and [`LAYER_NORM_EPS`], [`RMS_NORM_EPS`]).

use half::f16;

/// ε added to the variance by `layer_norm` (the value of OPT, GPT-2 and BERT configs).
pub const LAYER_NORM_EPS: f32 = 1e-5;
/// ε added to the mean square by `rms_norm` (the value of LLaMA configs).
pub const RMS_NORM_EPS: f32 = 1e-6;

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
    fn fp16_round_trips() {
        let v = [0.0, 1.5, -2.25, 65504.0];
        assert_eq!(f16_values(&f16_bytes(&v)), v);
    }
}
