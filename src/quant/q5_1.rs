//! Q5_1: 32 elements in 24 bytes: f16 scale `d`, f16 minimum `m`, u32 `qh` (bit 4 of each code),
//! 16 bytes of low nibbles; y = q·d + m, multiply then add (FORMATS.md §2.3).

use super::q5_0::codes5;
use super::read_f16;

pub const BLOCK_ELEMS: usize = 32;
pub const BLOCK_BYTES: usize = 24;
pub const D: usize = 0;
pub const M: usize = 2;
pub const QH: usize = 4;
pub const QS: usize = 8;
const _: () = assert!(QS + BLOCK_ELEMS / 2 == BLOCK_BYTES);

pub fn decode(src: &[u8], dst: &mut [f32]) {
    super::for_each_block(
        src,
        dst,
        |b: &[u8; BLOCK_BYTES], y: &mut [f32; BLOCK_ELEMS]| {
            let (d, m) = (read_f16(b, D), read_f16(b, M));
            let qh = u32::from_le_bytes([b[QH], b[QH + 1], b[QH + 2], b[QH + 3]]);
            for (out, q) in y.iter_mut().zip(codes5(qh, &b[QS..])) {
                *out = d * f32::from(q) + m;
            }
        },
    );
}
