//! Q5_K: 256 elements in 176 bytes: f16 `d`, f16 `dmin`, 12 bytes of packed 6-bit (scale, min)
//! pairs (as Q4_K), 32 bytes `qh`, 128 bytes of low nibbles. Sub-block t (0..8) of 32 takes its low
//! 4 bits from the nibbles of chunk t/2 (low nibble if t is even) and bit 4 from bit t of qh[l];
//! y = (d·sc)·q − dmin·m (FORMATS.md §2.4).

use super::q4_k::sub_block_scales;
use super::read_f16;

pub const BLOCK_ELEMS: usize = 256;
pub const BLOCK_BYTES: usize = 176;
pub const D: usize = 0;
pub const DMIN: usize = 2;
pub const SCALES: usize = 4;
pub const QH: usize = 16;
pub const QS: usize = 48;
const _: () = assert!(QS + BLOCK_ELEMS / 2 == BLOCK_BYTES && QH + 32 == QS);

pub fn decode(src: &[u8], dst: &mut [f32]) {
    super::for_each_block(
        src,
        dst,
        |b: &[u8; BLOCK_BYTES], y: &mut [f32; BLOCK_ELEMS]| {
            let (ds, ms) = sub_block_scales(read_f16(b, D), read_f16(b, DMIN), &b[SCALES..QH]);
            let qh = &b[QH..QS];
            for t in 0..8 {
                let qs = &b[QS + 32 * (t / 2)..QS + 32 * (t / 2) + 32];
                let shift = 4 * (t % 2);
                for l in 0..32 {
                    let q = ((qs[l] >> shift) & 0xf) | (((qh[l] >> t) & 1) << 4);
                    y[32 * t + l] = ds[t] * f32::from(q) - ms[t];
                }
            }
        },
    );
}
