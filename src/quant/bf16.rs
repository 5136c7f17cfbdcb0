//! BF16: the top 16 bits of an f32, one element per 2-byte block. Decoding shifts the bits back;
//! encoding follows ggml's `ggml_compute_fp32_to_bf16`: NaNs are made quiet by setting bit 6 of
//! the result (payload truncated), every other value rounds to nearest, ties to even.

pub const BLOCK_ELEMS: usize = 1;
pub const BLOCK_BYTES: usize = 2;

#[inline(always)]
pub fn bf16_to_f32(h: u16) -> f32 {
    f32::from_bits(u32::from(h) << 16)
}

#[inline]
pub fn f32_to_bf16(x: f32) -> u16 {
    let bits = x.to_bits();
    if bits & 0x7fff_ffff > 0x7f80_0000 {
        return ((bits >> 16) | 0x40) as u16;
    }
    // Cannot overflow: the largest non-NaN pattern is 0xff80_0000.
    ((bits + 0x7fff + ((bits >> 16) & 1)) >> 16) as u16
}

pub fn decode(src: &[u8], dst: &mut [f32]) {
    super::for_each_block(src, dst, |b: &[u8; 2], y: &mut [f32; 1]| {
        y[0] = bf16_to_f32(u16::from_le_bytes(*b));
    });
}

pub fn encode(src: &[f32], dst: &mut [u8]) {
    super::for_each_block_encode(src, dst, |x: &[f32; 1], b: &mut [u8; 2]| {
        *b = f32_to_bf16(x[0]).to_le_bytes();
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Round trip: every bf16 value survives decode → encode; an f32 lands within half a bf16
    /// unit in the last place (2^-8 relative), ties going to the even neighbour.
    #[test]
    fn round_trip_and_rounding() {
        for h in 0..=u16::MAX {
            let x = bf16_to_f32(h);
            if x.is_nan() {
                assert!(bf16_to_f32(f32_to_bf16(x)).is_nan());
                assert_eq!(f32_to_bf16(x) & 0x40, 0x40, "quiet bit {h:#06x}");
            } else {
                assert_eq!(f32_to_bf16(x), h, "{h:#06x}");
            }
        }
        assert_eq!(
            f32_to_bf16(f32::from_bits(0x3f80_8000)),
            0x3f80,
            "tie to even (down)"
        );
        assert_eq!(
            f32_to_bf16(f32::from_bits(0x3f81_8000)),
            0x3f82,
            "tie to even (up)"
        );
        assert_eq!(
            f32_to_bf16(f32::from_bits(0x7f7f_ffff)),
            0x7f80,
            "overflow to inf"
        );
        let x = 1.234_567_f32;
        let err = (bf16_to_f32(f32_to_bf16(x)) - x).abs();
        assert!(err <= x.abs() * 2f32.powi(-8), "{err}");
    }
}
