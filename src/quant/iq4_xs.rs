//! IQ4_XS: 256 elements in 136 bytes: f16 `d`, u16 `scales_h` (2 high bits per sub-block), 4 bytes
//! `scales_l` (4 low bits per sub-block), 128 bytes of 4-bit indices into the IQ4_NL table. Sub-block
//! ib (0..8) of 32 elements: dl = d·(ls − 32), then like an IQ4_NL block (FORMATS.md §2.4).

use super::iq4_nl::decode_nl32;
use super::read_f16;

pub const BLOCK_ELEMS: usize = 256;
pub const BLOCK_BYTES: usize = 136;
pub const D: usize = 0;
pub const SCALES_H: usize = 2;
pub const SCALES_L: usize = 4;
pub const QS: usize = 8;
const _: () = assert!(QS + BLOCK_ELEMS / 2 == BLOCK_BYTES);

/// dl = d·(ls − 32) of sub-block `ib`.
#[inline(always)]
pub(crate) fn sub_block_scale(b: &[u8; BLOCK_BYTES], d: f32, ib: usize) -> f32 {
    let scales_h = u16::from_le_bytes([b[SCALES_H], b[SCALES_H + 1]]);
    let lo = (b[SCALES_L + ib / 2] >> (4 * (ib % 2))) & 0xf;
    let hi = ((scales_h >> (2 * ib)) & 3) as u8;
    d * f32::from((lo | (hi << 4)) as i8 - 32)
}

pub fn decode(src: &[u8], dst: &mut [f32]) {
    super::for_each_block(
        src,
        dst,
        |b: &[u8; BLOCK_BYTES], y: &mut [f32; BLOCK_ELEMS]| {
            let d = read_f16(b, D);
            let mut sub = y.chunks_exact_mut(32);
            for ib in 0..8 {
                let Some(Ok(out)) = sub.next().map(<&mut [f32; 32]>::try_from) else {
                    return;
                };
                decode_nl32(sub_block_scale(b, d, ib), &b[QS + 16 * ib..], out);
            }
        },
    );
}
