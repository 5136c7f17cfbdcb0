//! F16: IEEE binary16, one element per 2-byte block. Decoding widens exactly (NaN payloads kept,
//! like numpy's `astype(np.float32)`); encoding rounds to nearest, ties to even (the `half` crate,
//! like numpy's `astype(np.float16)` and ggml's `GGML_FP32_TO_FP16`).
//!
//! NaN payloads are the one place levels and references differ: F16C (the AVX2/AVX-512 decoders)
//! quiets signalling NaNs while this scalar decoder, like numpy, keeps them; `half` (our encoder)
//! sets the quiet bit where numpy keeps the payload. Every non-NaN value is bit-identical.

pub const BLOCK_ELEMS: usize = 1;
pub const BLOCK_BYTES: usize = 2;

/// Exact binary16 → binary32 widening. NaNs keep their payload (a signalling NaN stays
/// signalling), as numpy's `npy_halfbits_to_floatbits` does.
#[inline(always)]
pub fn f16_to_f32(h: u16) -> f32 {
    let sign = u32::from(h & 0x8000) << 16;
    let exp = u32::from((h >> 10) & 0x1f);
    let man = u32::from(h & 0x3ff);
    let magnitude = match exp {
        // Zero or subnormal: man · 2^-24, exact in f32.
        0 => (man as f32 * (1.0 / 16_777_216.0)).to_bits(),
        31 => 0x7f80_0000 | (man << 13),
        _ => ((exp + 112) << 23) | (man << 13),
    };
    f32::from_bits(sign | magnitude)
}

/// binary32 → binary16, round to nearest even; overflow gives ±inf, NaN stays NaN.
#[inline]
pub fn f32_to_f16(x: f32) -> u16 {
    half::f16::from_f32(x).to_bits()
}

pub fn decode(src: &[u8], dst: &mut [f32]) {
    super::for_each_block(src, dst, |b: &[u8; 2], y: &mut [f32; 1]| {
        y[0] = f16_to_f32(u16::from_le_bytes(*b));
    });
}

pub fn encode(src: &[f32], dst: &mut [u8]) {
    super::for_each_block_encode(src, dst, |x: &[f32; 1], b: &mut [u8; 2]| {
        *b = f32_to_f16(x[0]).to_le_bytes();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every binary16 value widens to the same value `half` computes, and narrows back to itself
    /// (NaNs compared as NaN; their payload handling differs between the two directions).
    #[test]
    fn all_65536_values_round_trip() {
        for h in 0..=u16::MAX {
            let x = f16_to_f32(h);
            let reference = half::f16::from_bits(h).to_f32();
            if x.is_nan() {
                assert!(reference.is_nan(), "{h:#06x}");
                assert_eq!(
                    x.to_bits() >> 13 & 0x3ff,
                    u32::from(h & 0x3ff),
                    "payload {h:#06x}"
                );
                continue;
            }
            assert_eq!(x.to_bits(), reference.to_bits(), "{h:#06x}");
            assert_eq!(f32_to_f16(x), h, "{h:#06x}");
        }
    }

    /// Halfway cases round to even; the bound for other values is half a unit in the last place.
    #[test]
    fn encode_rounds_ties_to_even() {
        // 1 + 2^-11 is halfway between 1 and 1 + 2^-10: even mantissa (1.0) wins.
        assert_eq!(f32_to_f16(1.0 + 2f32.powi(-11)), 0x3c00);
        // 1 + 3·2^-11 is halfway between 1 + 2^-10 (odd) and 1 + 2^-9 (even).
        assert_eq!(f32_to_f16(1.0 + 3.0 * 2f32.powi(-11)), 0x3c02);
        assert_eq!(f32_to_f16(65520.0), 0x7c00, "rounds up to inf");
        assert_eq!(f32_to_f16(65519.99), 0x7bff);
    }
}
