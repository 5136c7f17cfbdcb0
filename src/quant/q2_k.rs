//! Q2_K: 256 elements in 84 bytes: 16 scale bytes (low nibble scale, high nibble min, one per 16
//! elements), 64 bytes of 2-bit codes, f16 `d`, f16 `dmin`. Half n (0..2) uses code bytes
//! 32n..32n+32; shift s = 2·(0..4) selects 32 consecutive outputs; y = (d·sc)·q − dmin·m
//! (FORMATS.md §2.4).

use super::read_f16;

pub const BLOCK_ELEMS: usize = 256;
pub const BLOCK_BYTES: usize = 84;
pub const SCALES: usize = 0;
pub const QS: usize = 16;
pub const D: usize = 80;
pub const DMIN: usize = 82;
const _: () = assert!(QS + 64 == D && DMIN + 2 == BLOCK_BYTES);

pub fn decode(src: &[u8], dst: &mut [f32]) {
    super::for_each_block(
        src,
        dst,
        |b: &[u8; BLOCK_BYTES], y: &mut [f32; BLOCK_ELEMS]| {
            let (d, dmin) = (read_f16(b, D), read_f16(b, DMIN));
            for t in 0..8 {
                let (n, s) = (t / 4, 2 * (t % 4));
                let qs = &b[QS + 32 * n..][..32];
                for l in 0..32 {
                    let sc = b[SCALES + 2 * t + l / 16];
                    let dl = d * f32::from(sc & 0xf);
                    let ml = dmin * f32::from(sc >> 4);
                    y[32 * t + l] = dl * f32::from((qs[l] >> s) & 3) - ml;
                }
            }
        },
    );
}
