//! IQ4_NL: 32 elements in 18 bytes: f16 scale `d`, 16 bytes of 4-bit indices into the non-linear
//! table [`KVALUES`] (low nibbles = elements 0..16, high = 16..32); y = d·T[q] (FORMATS.md §2.3).

use super::read_f16;

pub const BLOCK_ELEMS: usize = 32;
pub const BLOCK_BYTES: usize = 18;
pub const D: usize = 0;
pub const QS: usize = 2;
const _: () = assert!(QS + BLOCK_ELEMS / 2 == BLOCK_BYTES);

/// ggml's `kvalues_iq4nl`.
pub const KVALUES: [i8; 16] = [
    -127, -104, -83, -65, -49, -35, -22, -10, 1, 13, 25, 38, 53, 69, 89, 113,
];

/// y = d·T[q] for the 16 bytes `qs`: low nibbles to `y[..16]`, high nibbles to `y[16..]`.
#[inline(always)]
pub(crate) fn decode_nl32(d: f32, qs: &[u8], y: &mut [f32; 32]) {
    for (j, &q) in qs.iter().take(16).enumerate() {
        y[j] = d * f32::from(KVALUES[usize::from(q & 0xf)]);
        y[j + 16] = d * f32::from(KVALUES[usize::from(q >> 4)]);
    }
}

pub fn decode(src: &[u8], dst: &mut [f32]) {
    super::for_each_block(
        src,
        dst,
        |b: &[u8; BLOCK_BYTES], y: &mut [f32; BLOCK_ELEMS]| {
            decode_nl32(read_f16(b, D), &b[QS..], y);
        },
    );
}
