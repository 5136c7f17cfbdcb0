//! Q4_1: 32 elements in 20 bytes: f16 scale `d`, f16 minimum `m`, then 16 bytes of 4-bit codes
//! (low nibbles = elements 0..16, high nibbles = 16..32); y = q·d + m, a multiply then an add
//! (no fused multiply-add), as gguf-py computes it (FORMATS.md §2.3).

use super::read_f16;

pub const BLOCK_ELEMS: usize = 32;
pub const BLOCK_BYTES: usize = 20;
pub const D: usize = 0;
pub const M: usize = 2;
pub const QS: usize = 4;
const _: () = assert!(QS + BLOCK_ELEMS / 2 == BLOCK_BYTES);

pub fn decode(src: &[u8], dst: &mut [f32]) {
    super::for_each_block(
        src,
        dst,
        |b: &[u8; BLOCK_BYTES], y: &mut [f32; BLOCK_ELEMS]| {
            let (d, m) = (read_f16(b, D), read_f16(b, M));
            for j in 0..16 {
                let q = b[QS + j];
                y[j] = d * f32::from(q & 0xf) + m;
                y[j + 16] = d * f32::from(q >> 4) + m;
            }
        },
    );
}
