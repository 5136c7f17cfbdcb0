//! Q4_0: 32 elements in 18 bytes: an f16 scale `d`, then 16 bytes of 4-bit codes. Element j < 16
//! is the low nibble of byte j, element j + 16 its high nibble; y = (q − 8)·d (FORMATS.md §2.3).
//! The encoder is ggml's `quantize_row_q4_0_ref`.

use super::f16::f32_to_f16;
use super::read_f16;

pub const BLOCK_ELEMS: usize = 32;
pub const BLOCK_BYTES: usize = 18;
/// Byte offsets of the fields.
pub const D: usize = 0;
pub const QS: usize = 2;
const _: () = assert!(QS + BLOCK_ELEMS / 2 == BLOCK_BYTES);

pub fn decode(src: &[u8], dst: &mut [f32]) {
    super::for_each_block(
        src,
        dst,
        |b: &[u8; BLOCK_BYTES], y: &mut [f32; BLOCK_ELEMS]| {
            let d = read_f16(b, D);
            for j in 0..16 {
                let q = b[QS + j];
                y[j] = d * (i32::from(q & 0xf) - 8) as f32;
                y[j + 16] = d * (i32::from(q >> 4) - 8) as f32;
            }
        },
    );
}

/// ggml's reference: d = (the element of largest magnitude, first one on ties) / −8, codes
/// q = min(15, trunc(x/d + 8.5)). One known difference from gguf-py: for a block of zeros whose
/// first element is −0.0, ggml (and this) stores d = −0.0 and gguf-py d = +0.0; codes agree.
pub fn encode(src: &[f32], dst: &mut [u8]) {
    super::for_each_block_encode(
        src,
        dst,
        |x: &[f32; BLOCK_ELEMS], b: &mut [u8; BLOCK_BYTES]| {
            let (mut amax, mut max) = (0.0f32, 0.0f32);
            for &v in x {
                if amax < v.abs() {
                    amax = v.abs();
                    max = v;
                }
            }
            let d = max / -8.0;
            let id = if d != 0.0 { 1.0 / d } else { 0.0 };
            b[D..D + 2].copy_from_slice(&f32_to_f16(d).to_le_bytes());
            // `as u8` truncates toward zero like ggml's `(int8_t)` cast; the value is in [0, 17).
            let code = |v: f32| ((v * id + 8.5) as u8).min(15);
            for j in 0..16 {
                b[QS + j] = code(x[j]) | (code(x[j + 16]) << 4);
            }
        },
    );
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::quant::f16::f16_to_f32;
    use crate::quant::testing::normal;

    /// Round trip on random normal data. Named bound, per block with stored scale d16 = f16(d):
    /// |x − x̂| ≤ |d| + 8·|d − d16| (half a step in general; a full step for elements near
    /// +|max| where the code clamps from 16 to 15; plus the scale's f16 rounding times |q − 8| ≤ 8).
    #[test]
    fn round_trip_error_is_within_one_step() {
        let mut state = 0x1234_5678_9abc_def0u64;
        let x: Vec<f32> = (0..32 * 200).map(|_| normal(&mut state) * 3.0).collect();
        let mut bytes = vec![0u8; 200 * BLOCK_BYTES];
        encode(&x, &mut bytes);
        let mut y = vec![0f32; x.len()];
        decode(&bytes, &mut y);
        for (blk, (xb, yb)) in x.chunks(32).zip(y.chunks(32)).enumerate() {
            let max = xb
                .iter()
                .copied()
                .fold(0f32, |m, v| if v.abs() > m.abs() { v } else { m });
            let d = max / -8.0;
            let d16 = f16_to_f32(u16::from_le_bytes([bytes[blk * 18], bytes[blk * 18 + 1]]));
            let bound = d.abs() * 1.0001 + 8.0 * (d - d16).abs();
            for (a, b) in xb.iter().zip(yb) {
                assert!(
                    (a - b).abs() <= bound,
                    "block {blk}: {a} vs {b}, bound {bound}"
                );
            }
        }
    }
}
