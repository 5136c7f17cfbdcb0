//! Q8_0: 32 elements in 34 bytes: f16 scale `d` and 32 signed bytes; y = q·d (FORMATS.md §2.3).
//! The encoder is ggml's `quantize_row_q8_0_ref`.

use super::f16::f32_to_f16;
use super::read_f16;

pub const BLOCK_ELEMS: usize = 32;
pub const BLOCK_BYTES: usize = 34;
pub const D: usize = 0;
pub const QS: usize = 2;
const _: () = assert!(QS + BLOCK_ELEMS == BLOCK_BYTES);

pub fn decode(src: &[u8], dst: &mut [f32]) {
    super::for_each_block(
        src,
        dst,
        |b: &[u8; BLOCK_BYTES], y: &mut [f32; BLOCK_ELEMS]| {
            let d = read_f16(b, D);
            for (out, &q) in y.iter_mut().zip(&b[QS..]) {
                *out = f32::from(q as i8) * d;
            }
        },
    );
}

/// ggml's reference: d = max|x| / 127, q = round-half-away-from-zero(x / d) (`roundf`).
pub fn encode(src: &[f32], dst: &mut [u8]) {
    super::for_each_block_encode(
        src,
        dst,
        |x: &[f32; BLOCK_ELEMS], b: &mut [u8; BLOCK_BYTES]| {
            let amax = x.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let d = amax / 127.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            b[D..D + 2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
            for (q, &v) in b[QS..].iter_mut().zip(x) {
                // |v·id| ≤ 127 (up to rounding), so the saturating cast never clips a real code.
                *q = (v * id).round() as i8 as u8;
            }
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::f16::f16_to_f32;
    use crate::quant::testing::normal;

    /// Round trip on random normal data. Named bound, per block with d = max|x|/127 and stored
    /// d16 = f16(d): |x − x̂| ≤ d/2 + 127·|d − d16| (half a step, plus the scale's f16 rounding
    /// times |q| ≤ 127).
    #[test]
    fn round_trip_error_is_within_half_a_step() {
        let mut state = 42u64;
        let x: Vec<f32> = (0..32 * 200).map(|_| normal(&mut state)).collect();
        let mut bytes = vec![0u8; 200 * BLOCK_BYTES];
        encode(&x, &mut bytes);
        let mut y = vec![0f32; x.len()];
        decode(&bytes, &mut y);
        for (blk, (xb, yb)) in x.chunks(32).zip(y.chunks(32)).enumerate() {
            let d = xb.iter().fold(0f32, |m, v| m.max(v.abs())) / 127.0;
            let d16 = f16_to_f32(u16::from_le_bytes([bytes[blk * 34], bytes[blk * 34 + 1]]));
            let bound = d * 0.5001 + 127.0 * (d - d16).abs();
            for (a, b) in xb.iter().zip(yb) {
                assert!(
                    (a - b).abs() <= bound,
                    "block {blk}: {a} vs {b}, bound {bound}"
                );
            }
        }
    }
}
