//! Q4_K: 256 elements in 144 bytes: f16 `d`, f16 `dmin`, 12 bytes packing eight 6-bit (scale, min)
//! pairs, then 128 bytes of 4-bit codes. Each 64-element chunk c uses 32 code bytes: low nibbles
//! are sub-block 2c, high nibbles sub-block 2c + 1; y = (d·sc)·q − dmin·m (FORMATS.md §2.4).

use super::read_f16;

pub const BLOCK_ELEMS: usize = 256;
pub const BLOCK_BYTES: usize = 144;
pub const D: usize = 0;
pub const DMIN: usize = 2;
pub const SCALES: usize = 4;
pub const QS: usize = 16;
const _: () = assert!(QS + BLOCK_ELEMS / 2 == BLOCK_BYTES && SCALES + 12 == QS);

/// ggml's `get_scale_min_k4`: the 6-bit (scale, min) of sub-block `j` (0..8) from the 12 packed
/// bytes shared by Q4_K and Q5_K.
#[inline(always)]
pub(crate) fn scale_min_k4(j: usize, s: &[u8]) -> (u8, u8) {
    if j < 4 {
        (s[j] & 63, s[j + 4] & 63)
    } else {
        (
            (s[j + 4] & 0xf) | ((s[j - 4] >> 6) << 4),
            (s[j + 4] >> 4) | ((s[j] >> 6) << 4),
        )
    }
}

/// Per-sub-block multipliers d·sc and dmin·m of a Q4_K/Q5_K block (the products gguf-py forms
/// before touching the codes).
#[inline(always)]
pub(crate) fn sub_block_scales(d: f32, dmin: f32, scales: &[u8]) -> ([f32; 8], [f32; 8]) {
    let (mut ds, mut ms) = ([0f32; 8], [0f32; 8]);
    for j in 0..8 {
        let (sc, m) = scale_min_k4(j, scales);
        ds[j] = d * f32::from(sc);
        ms[j] = dmin * f32::from(m);
    }
    (ds, ms)
}

pub fn decode(src: &[u8], dst: &mut [f32]) {
    super::for_each_block(
        src,
        dst,
        |b: &[u8; BLOCK_BYTES], y: &mut [f32; BLOCK_ELEMS]| {
            let (ds, ms) = sub_block_scales(read_f16(b, D), read_f16(b, DMIN), &b[SCALES..QS]);
            for c in 0..4 {
                let qs = &b[QS + 32 * c..QS + 32 * c + 32];
                let (lo, hi) = y[64 * c..64 * c + 64].split_at_mut(32);
                for l in 0..32 {
                    lo[l] = ds[2 * c] * f32::from(qs[l] & 0xf) - ms[2 * c];
                    hi[l] = ds[2 * c + 1] * f32::from(qs[l] >> 4) - ms[2 * c + 1];
                }
            }
        },
    );
}
