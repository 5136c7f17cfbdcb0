//! Q6_K: 256 elements in 210 bytes: 128 bytes `ql` (low 4 bits), 64 bytes `qh` (high 2 bits),
//! 16 signed 8-bit scales (one per 16 elements), f16 `d` last. Two halves of 128; in half h,
//! group g (0..4) of 32 takes its low bits from ql[64h + 32·(g%2) + l] (low nibble for g < 2) and
//! bits 4..5 from (qh[32h + l] >> 2g) & 3; y = (d·sc)·(q − 32) (FORMATS.md §2.4).

use super::read_f16;

pub const BLOCK_ELEMS: usize = 256;
pub const BLOCK_BYTES: usize = 210;
pub const QL: usize = 0;
pub const QH: usize = 128;
pub const SCALES: usize = 192;
pub const D: usize = 208;
const _: () = assert!(D + 2 == BLOCK_BYTES && QH + 64 == SCALES && SCALES + 16 == D);

/// d·sc for each of the 16 scales (gguf-py multiplies these first).
#[inline(always)]
pub(crate) fn scales(b: &[u8; BLOCK_BYTES]) -> [f32; 16] {
    let d = read_f16(b, D);
    let mut ds = [0f32; 16];
    for (k, out) in ds.iter_mut().enumerate() {
        *out = d * f32::from(b[SCALES + k] as i8);
    }
    ds
}

pub fn decode(src: &[u8], dst: &mut [f32]) {
    super::for_each_block(
        src,
        dst,
        |b: &[u8; BLOCK_BYTES], y: &mut [f32; BLOCK_ELEMS]| {
            let ds = scales(b);
            for h in 0..2 {
                for g in 0..4 {
                    let ql = &b[QL + 64 * h + 32 * (g % 2)..][..32];
                    let qh = &b[QH + 32 * h..][..32];
                    let shift = if g < 2 { 0 } else { 4 };
                    for l in 0..32 {
                        let q = ((ql[l] >> shift) & 0xf) | (((qh[l] >> (2 * g)) & 3) << 4);
                        let o = 128 * h + 32 * g + l;
                        y[o] = ds[o / 16] * (i32::from(q) - 32) as f32;
                    }
                }
            }
        },
    );
}
