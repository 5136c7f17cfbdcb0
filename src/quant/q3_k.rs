//! Q3_K: 256 elements in 110 bytes: 32 bytes `hmask` (bit 2 of each code, inverted), 64 bytes of
//! 2-bit codes, 12 bytes packing sixteen 6-bit scales, f16 `d`. Output group t (0..8) of 32 uses
//! code bytes 32·(t/4).. shifted by 2·(t%4) and bit t of hmask[l]; q = low − (bit ? 0 : 4);
//! y = (d·(sc − 32))·q (FORMATS.md §2.4).

use super::read_f16;

pub const BLOCK_ELEMS: usize = 256;
pub const BLOCK_BYTES: usize = 110;
pub const HMASK: usize = 0;
pub const QS: usize = 32;
pub const SCALES: usize = 96;
pub const D: usize = 108;
const _: () = assert!(QS + 64 == SCALES && SCALES + 12 == D && D + 2 == BLOCK_BYTES);

/// The sixteen signed scales (sc − 32): low 4 bits from bytes 0..8 (low nibbles first), high 2
/// bits from bytes 8..12 (shift 2·(k/4) of byte 8 + k%4).
#[inline(always)]
pub(crate) fn unpack_scales(s: &[u8]) -> [i8; 16] {
    let mut out = [0i8; 16];
    for (k, o) in out.iter_mut().enumerate() {
        let lo = if k < 8 { s[k] & 0xf } else { s[k - 8] >> 4 };
        let hi = (s[8 + k % 4] >> (2 * (k / 4))) & 3;
        *o = (lo | (hi << 4)) as i8 - 32;
    }
    out
}

pub fn decode(src: &[u8], dst: &mut [f32]) {
    super::for_each_block(
        src,
        dst,
        |b: &[u8; BLOCK_BYTES], y: &mut [f32; BLOCK_ELEMS]| {
            let d = read_f16(b, D);
            let sc = unpack_scales(&b[SCALES..D]);
            let hmask = &b[HMASK..QS];
            for t in 0..8 {
                let (n, s) = (t / 4, 2 * (t % 4));
                let qs = &b[QS + 32 * n..][..32];
                for l in 0..32 {
                    let low = i32::from((qs[l] >> s) & 3);
                    let high = if (hmask[l] >> t) & 1 == 1 { 0 } else { 4 };
                    let dl = d * f32::from(sc[2 * t + l / 16]);
                    y[32 * t + l] = dl * (low - high) as f32;
                }
            }
        },
    );
}
