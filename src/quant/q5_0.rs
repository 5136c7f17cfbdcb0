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

/// The 5-bit code of element `i` (0..32) of a Q5_0/Q5_1 block, given its `qh` word and `qs`.
#[inline(always)]
pub(crate) fn code5(qh: u32, qs: &[u8], i: usize) -> u8 {
    let nibble = if i < 16 { qs[i] & 0xf } else { qs[i - 16] >> 4 };
    nibble | ((((qh >> i) & 1) as u8) << 4)
}

pub fn decode(src: &[u8], dst: &mut [f32]) {
    super::for_each_block(
        src,
        dst,
        |b: &[u8; BLOCK_BYTES], y: &mut [f32; BLOCK_ELEMS]| {
            let d = read_f16(b, D);
            let qh = u32::from_le_bytes([b[QH], b[QH + 1], b[QH + 2], b[QH + 3]]);
            let qs = &b[QS..];
            for (i, out) in y.iter_mut().enumerate() {
                *out = d * (i32::from(code5(qh, qs, i)) - 16) as f32;
            }
        },
    );
}
