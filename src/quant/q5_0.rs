//! Q5_0: 32 elements in 22 bytes: f16 scale `d`, a little-endian u32 `qh` holding bit 4 of every
//! code (bit i for element i), then 16 bytes of low nibbles (element j low, j + 16 high);
//! y = (q − 16)·d (FORMATS.md §2.3).

use super::read_f16;

pub const BLOCK_ELEMS: usize = 32;
pub const BLOCK_BYTES: usize = 22;
pub const D: usize = 0;
pub const QH: usize = 2;
pub const QS: usize = 6;
const _: () = assert!(QS + BLOCK_ELEMS / 2 == BLOCK_BYTES);

/// The 32 five-bit codes of a Q5_0/Q5_1 block, in element order: nibbles from `qs` (16 bytes),
/// bit 4 of element i from bit i of `qh`.
#[inline(always)]
pub(crate) fn codes5(qh: u32, qs: &[u8]) -> [u8; 32] {
    let mut out = [0u8; 32];
    for (j, &q) in qs.iter().take(16).enumerate() {
        out[j] = (q & 0xf) | ((((qh >> j) & 1) as u8) << 4);
        out[j + 16] = (q >> 4) | ((((qh >> (j + 16)) & 1) as u8) << 4);
    }
    out
}

pub fn decode(src: &[u8], dst: &mut [f32]) {
    super::for_each_block(
        src,
        dst,
        |b: &[u8; BLOCK_BYTES], y: &mut [f32; BLOCK_ELEMS]| {
            let d = read_f16(b, D);
            let qh = u32::from_le_bytes([b[QH], b[QH + 1], b[QH + 2], b[QH + 3]]);
            for (out, q) in y.iter_mut().zip(codes5(qh, &b[QS..])) {
                *out = d * (i32::from(q) - 16) as f32;
            }
        },
    );
}
