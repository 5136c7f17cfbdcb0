//! AVX2 + F16C decode kernels (x86-64), 8 f32 lanes. Per block: scales are widened by the same
//! scalar helpers the reference decoders use, codes are unpacked with byte ops, widened to i32,
//! converted (exactly) to f32, then multiplied/added in the reference's order. No FMA: the
//! reference computes `q·d + m` as two rounded operations.

#![deny(unsafe_op_in_unsafe_fn)]

use crate::quant::iq4_nl::KVALUES;
use crate::quant::{bf16 as bf16_fmt, f16 as f16_fmt, iq4_xs, q4_k, q5_k, q6_k, read_f16};
use std::arch::x86_64::*;

/// Loads the 16 bytes `p[at..at + 16]`.
///
/// # Safety
/// `at + 16 <= p.len()`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn load16(p: &[u8], at: usize) -> __m128i {
    debug_assert!(at + 16 <= p.len());
    // SAFETY: the caller guarantees 16 readable bytes at `at`; loadu has no alignment need.
    unsafe { _mm_loadu_si128(p.as_ptr().add(at).cast()) }
}

/// # Safety
/// `at + 32 <= p.len()`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn load32(p: &[u8], at: usize) -> __m256i {
    debug_assert!(at + 32 <= p.len());
    // SAFETY: the caller guarantees 32 readable bytes at `at`.
    unsafe { _mm256_loadu_si256(p.as_ptr().add(at).cast()) }
}

/// # Safety
/// `at + 8 <= y.len()`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn store8(y: &mut [f32], at: usize, v: __m256) {
    debug_assert!(at + 8 <= y.len());
    // SAFETY: the caller guarantees 8 writable f32 at `at`.
    unsafe { _mm256_storeu_ps(y.as_mut_ptr().add(at), v) }
}

/// The two 8-byte halves of a 16-byte vector, each in the low half of an xmm.
#[inline]
#[target_feature(enable = "avx2")]
fn halves(v: __m128i) -> [__m128i; 2] {
    [v, _mm_unpackhi_epi64(v, v)]
}

/// The four 8-byte quarters of a 32-byte vector, each in the low half of an xmm.
#[inline]
#[target_feature(enable = "avx2")]
fn quarters(v: __m256i) -> [__m128i; 4] {
    let (lo, hi) = (_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v));
    [
        lo,
        _mm_unpackhi_epi64(lo, lo),
        hi,
        _mm_unpackhi_epi64(hi, hi),
    ]
}

/// Low 8 unsigned bytes → 8 f32.
#[inline]
#[target_feature(enable = "avx2")]
fn u8x8_to_f32(v: __m128i) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_cvtepu8_epi32(v))
}

/// Low 8 signed bytes → 8 f32.
#[inline]
#[target_feature(enable = "avx2")]
fn i8x8_to_f32(v: __m128i) -> __m256 {
    _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(v))
}

/// Writes `scale·q − bias` for 32 unsigned bytes `q` to `y[at..at + 32]`.
///
/// # Safety
/// `at + 32 <= y.len()`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn store_u8x32_affine(y: &mut [f32], at: usize, q: __m256i, scale: f32, bias: f32) {
    let (s, m) = (_mm256_set1_ps(scale), _mm256_set1_ps(bias));
    for (k, g) in quarters(q).into_iter().enumerate() {
        let v = _mm256_sub_ps(_mm256_mul_ps(s, u8x8_to_f32(g)), m);
        // SAFETY: k < 4, so at + 8k + 8 <= at + 32 <= y.len().
        unsafe { store8(y, at + 8 * k, v) };
    }
}

/// Writes `s·q` for 32 signed bytes `q` to `y[at..at + 32]`, `s = s0` for the first 16 and `s1`
/// for the last 16.
///
/// # Safety
/// `at + 32 <= y.len()`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn store_i8x32_scaled(y: &mut [f32], at: usize, q: __m256i, s0: f32, s1: f32) {
    let s = [_mm256_set1_ps(s0), _mm256_set1_ps(s1)];
    for (k, g) in quarters(q).into_iter().enumerate() {
        let v = _mm256_mul_ps(s[k / 2], i8x8_to_f32(g));
        // SAFETY: k < 4, so at + 8k + 8 <= at + 32 <= y.len().
        unsafe { store8(y, at + 8 * k, v) };
    }
}

/// Low nibbles (elements 0..16) and high nibbles (16..32) of 16 code bytes at `b[at..]`.
///
/// # Safety
/// `at + 16 <= b.len()`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn nibbles16(b: &[u8], at: usize) -> [__m128i; 2] {
    // SAFETY: forwarded from the caller.
    let qs = unsafe { load16(b, at) };
    let m4 = _mm_set1_epi8(0x0f);
    [
        _mm_and_si128(qs, m4),
        _mm_and_si128(_mm_srli_epi16::<4>(qs), m4),
    ]
}

/// The 32 codes of a 4-bit block as four groups of 8 (in element order).
#[inline]
#[target_feature(enable = "avx2")]
fn groups_of_nibbles(n: [__m128i; 2]) -> [__m128i; 4] {
    let [lo, hi] = n;
    let [a, b] = halves(lo);
    let [c, d] = halves(hi);
    [a, b, c, d]
}

/// Q4_0: y = d·(q − 8).
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q4_0(src: &[u8], dst: &mut [f32]) {
    use crate::quant::q4_0::{BLOCK_BYTES, BLOCK_ELEMS, D, QS};
    let eight = _mm256_set1_epi32(8);
    for (b, y) in src
        .chunks_exact(BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(BLOCK_ELEMS))
    {
        let d = _mm256_set1_ps(read_f16_slice(b, D));
        // SAFETY: QS + 16 == BLOCK_BYTES == b.len().
        let groups = groups_of_nibbles(unsafe { nibbles16(b, QS) });
        for (k, g) in groups.into_iter().enumerate() {
            let q = _mm256_cvtepi32_ps(_mm256_sub_epi32(_mm256_cvtepu8_epi32(g), eight));
            // SAFETY: 8k + 8 <= 32 == y.len().
            unsafe { store8(y, 8 * k, _mm256_mul_ps(d, q)) };
        }
    }
}

/// Q4_1: y = d·q + m (multiply, then add).
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q4_1(src: &[u8], dst: &mut [f32]) {
    use crate::quant::q4_1::{BLOCK_BYTES, BLOCK_ELEMS, D, M, QS};
    for (b, y) in src
        .chunks_exact(BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(BLOCK_ELEMS))
    {
        let d = _mm256_set1_ps(read_f16_slice(b, D));
        let m = _mm256_set1_ps(read_f16_slice(b, M));
        // SAFETY: QS + 16 == BLOCK_BYTES == b.len().
        let groups = groups_of_nibbles(unsafe { nibbles16(b, QS) });
        for (k, g) in groups.into_iter().enumerate() {
            let v = _mm256_add_ps(_mm256_mul_ps(d, u8x8_to_f32(g)), m);
            // SAFETY: 8k + 8 <= 32 == y.len().
            unsafe { store8(y, 8 * k, v) };
        }
    }
}

/// The 5-bit codes of a Q5_0/Q5_1 block as four i32x8 groups: element i takes bit i of `qh`.
///
/// # Safety
/// `qs_at + 16 <= b.len()`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn codes5(b: &[u8], qh: u32, qs_at: usize) -> [__m256i; 4] {
    // SAFETY: forwarded from the caller.
    let groups = groups_of_nibbles(unsafe { nibbles16(b, qs_at) });
    let qh = _mm256_set1_epi32(qh as i32);
    let one = _mm256_set1_epi32(1);
    let mut out = [_mm256_setzero_si256(); 4];
    for (k, g) in groups.into_iter().enumerate() {
        let base = 8 * k as i32;
        let shifts = _mm256_setr_epi32(
            base,
            base + 1,
            base + 2,
            base + 3,
            base + 4,
            base + 5,
            base + 6,
            base + 7,
        );
        let high = _mm256_slli_epi32::<4>(_mm256_and_si256(_mm256_srlv_epi32(qh, shifts), one));
        out[k] = _mm256_or_si256(_mm256_cvtepu8_epi32(g), high);
    }
    out
}

/// Q5_0: y = d·(q − 16).
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q5_0(src: &[u8], dst: &mut [f32]) {
    use crate::quant::q5_0::{BLOCK_BYTES, BLOCK_ELEMS, D, QH, QS};
    let sixteen = _mm256_set1_epi32(16);
    for (b, y) in src
        .chunks_exact(BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(BLOCK_ELEMS))
    {
        let d = _mm256_set1_ps(read_f16_slice(b, D));
        let qh = u32::from_le_bytes([b[QH], b[QH + 1], b[QH + 2], b[QH + 3]]);
        // SAFETY: QS + 16 == BLOCK_BYTES == b.len().
        let codes = unsafe { codes5(b, qh, QS) };
        for (k, q) in codes.into_iter().enumerate() {
            let q = _mm256_cvtepi32_ps(_mm256_sub_epi32(q, sixteen));
            // SAFETY: 8k + 8 <= 32 == y.len().
            unsafe { store8(y, 8 * k, _mm256_mul_ps(d, q)) };
        }
    }
}

/// Q5_1: y = d·q + m.
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q5_1(src: &[u8], dst: &mut [f32]) {
    use crate::quant::q5_1::{BLOCK_BYTES, BLOCK_ELEMS, D, M, QH, QS};
    for (b, y) in src
        .chunks_exact(BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(BLOCK_ELEMS))
    {
        let d = _mm256_set1_ps(read_f16_slice(b, D));
        let m = _mm256_set1_ps(read_f16_slice(b, M));
        let qh = u32::from_le_bytes([b[QH], b[QH + 1], b[QH + 2], b[QH + 3]]);
        // SAFETY: QS + 16 == BLOCK_BYTES == b.len().
        let codes = unsafe { codes5(b, qh, QS) };
        for (k, q) in codes.into_iter().enumerate() {
            let v = _mm256_add_ps(_mm256_mul_ps(d, _mm256_cvtepi32_ps(q)), m);
            // SAFETY: 8k + 8 <= 32 == y.len().
            unsafe { store8(y, 8 * k, v) };
        }
    }
}

/// Q8_0: y = q·d.
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q8_0(src: &[u8], dst: &mut [f32]) {
    use crate::quant::q8_0::{BLOCK_BYTES, BLOCK_ELEMS, D, QS};
    for (b, y) in src
        .chunks_exact(BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(BLOCK_ELEMS))
    {
        let d = _mm256_set1_ps(read_f16_slice(b, D));
        for h in 0..2 {
            // SAFETY: QS + 16h + 16 <= QS + 32 == BLOCK_BYTES == b.len().
            let qs = unsafe { load16(b, QS + 16 * h) };
            for (k, g) in halves(qs).into_iter().enumerate() {
                // SAFETY: 16h + 8k + 8 <= 32 == y.len().
                unsafe { store8(y, 16 * h + 8 * k, _mm256_mul_ps(i8x8_to_f32(g), d)) };
            }
        }
    }
}

/// IQ4_NL-style sub-block: y[..16] = d·T[low nibbles], y[16..32] = d·T[high nibbles] of the 16
/// bytes at `b[qs_at..]`, written at `y[at..]`.
///
/// # Safety
/// `qs_at + 16 <= b.len()` and `at + 32 <= y.len()`.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn nl_sub_block(b: &[u8], qs_at: usize, d: f32, y: &mut [f32], at: usize) {
    // SAFETY: KVALUES is 16 bytes.
    let table = unsafe { _mm_loadu_si128(KVALUES.as_ptr().cast()) };
    let d = _mm256_set1_ps(d);
    // SAFETY: forwarded from the caller.
    let [lo, hi] = unsafe { nibbles16(b, qs_at) };
    let values = [_mm_shuffle_epi8(table, lo), _mm_shuffle_epi8(table, hi)];
    for (h, v) in values.into_iter().enumerate() {
        for (k, g) in halves(v).into_iter().enumerate() {
            // SAFETY: 16h + 8k + 8 <= 32 and the caller guarantees at + 32 <= y.len().
            unsafe { store8(y, at + 16 * h + 8 * k, _mm256_mul_ps(d, i8x8_to_f32(g))) };
        }
    }
}

/// IQ4_NL: y = d·T[q].
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn iq4_nl(src: &[u8], dst: &mut [f32]) {
    use crate::quant::iq4_nl::{BLOCK_BYTES, BLOCK_ELEMS, D, QS};
    for (b, y) in src
        .chunks_exact(BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(BLOCK_ELEMS))
    {
        // SAFETY: QS + 16 == b.len(), 32 == y.len().
        unsafe { nl_sub_block(b, QS, read_f16_slice(b, D), y, 0) };
    }
}

/// IQ4_XS: eight IQ4_NL-like sub-blocks with 6-bit scales.
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn iq4_xs(src: &[u8], dst: &mut [f32]) {
    use iq4_xs::{BLOCK_BYTES, BLOCK_ELEMS, QS};
    for (b, y) in src
        .chunks_exact(BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(BLOCK_ELEMS))
    {
        let Ok(block) = <&[u8; BLOCK_BYTES]>::try_from(b) else {
            return;
        };
        let d = read_f16(block, iq4_xs::D);
        for ib in 0..8 {
            let dl = iq4_xs::sub_block_scale(block, d, ib);
            // SAFETY: QS + 16·7 + 16 == BLOCK_BYTES; 32·7 + 32 == BLOCK_ELEMS == y.len().
            unsafe { nl_sub_block(b, QS + 16 * ib, dl, y, 32 * ib) };
        }
    }
}

/// Q4_K: y = (d·sc)·q − dmin·m per 32-element sub-block.
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q4_k(src: &[u8], dst: &mut [f32]) {
    use q4_k::{BLOCK_BYTES, BLOCK_ELEMS, D, DMIN, QS, SCALES};
    let m4 = _mm256_set1_epi8(0x0f);
    for (b, y) in src
        .chunks_exact(BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(BLOCK_ELEMS))
    {
        let (d, dmin) = (read_f16_slice(b, D), read_f16_slice(b, DMIN));
        let (ds, ms) = q4_k::sub_block_scales(d, dmin, &b[SCALES..QS]);
        for c in 0..4 {
            // SAFETY: QS + 32·3 + 32 == BLOCK_BYTES == b.len().
            let qs = unsafe { load32(b, QS + 32 * c) };
            let lo = _mm256_and_si256(qs, m4);
            let hi = _mm256_and_si256(_mm256_srli_epi16::<4>(qs), m4);
            // SAFETY: 64c + 64 <= 256 == y.len().
            unsafe {
                store_u8x32_affine(y, 64 * c, lo, ds[2 * c], ms[2 * c]);
                store_u8x32_affine(y, 64 * c + 32, hi, ds[2 * c + 1], ms[2 * c + 1]);
            }
        }
    }
}

/// Q5_K: Q4_K plus a fifth bit per code from `qh`.
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q5_k(src: &[u8], dst: &mut [f32]) {
    use q5_k::{BLOCK_BYTES, BLOCK_ELEMS, D, DMIN, QH, QS, SCALES};
    let m4 = _mm256_set1_epi8(0x0f);
    let bit4 = _mm256_set1_epi8(0x10);
    for (b, y) in src
        .chunks_exact(BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(BLOCK_ELEMS))
    {
        let (d, dmin) = (read_f16_slice(b, D), read_f16_slice(b, DMIN));
        let (ds, ms) = q4_k::sub_block_scales(d, dmin, &b[SCALES..QH]);
        // SAFETY: QH + 32 == QS <= b.len().
        let qh = unsafe { load32(b, QH) };
        for t in 0..8 {
            // SAFETY: QS + 32·3 + 32 == BLOCK_BYTES == b.len().
            let qs = unsafe { load32(b, QS + 32 * (t / 2)) };
            let nib = if t % 2 == 0 {
                _mm256_and_si256(qs, m4)
            } else {
                _mm256_and_si256(_mm256_srli_epi16::<4>(qs), m4)
            };
            let bit = _mm256_set1_epi8((1u8 << t) as i8);
            let has = _mm256_cmpeq_epi8(_mm256_and_si256(qh, bit), bit);
            let q = _mm256_or_si256(nib, _mm256_and_si256(has, bit4));
            // SAFETY: 32t + 32 <= 256 == y.len().
            unsafe { store_u8x32_affine(y, 32 * t, q, ds[t], ms[t]) };
        }
    }
}

/// Q6_K: y = (d·sc)·(q − 32).
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn q6_k(src: &[u8], dst: &mut [f32]) {
    use q6_k::{BLOCK_BYTES, BLOCK_ELEMS, QH, QL};
    let m4 = _mm256_set1_epi8(0x0f);
    let m2 = _mm256_set1_epi8(0x30);
    let off = _mm256_set1_epi8(32);
    for (b, y) in src
        .chunks_exact(BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(BLOCK_ELEMS))
    {
        let Ok(block) = <&[u8; BLOCK_BYTES]>::try_from(b) else {
            return;
        };
        let ds = q6_k::scales(block);
        for h in 0..2 {
            // SAFETY: QL + 64h + 64 <= QH and QH + 32h + 32 <= QH + 64 < BLOCK_BYTES.
            let (ql0, ql1, qh) = unsafe {
                (
                    load32(b, QL + 64 * h),
                    load32(b, QL + 64 * h + 32),
                    load32(b, QH + 32 * h),
                )
            };
            let codes = [
                _mm256_or_si256(
                    _mm256_and_si256(ql0, m4),
                    _mm256_and_si256(_mm256_slli_epi16::<4>(qh), m2),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(ql1, m4),
                    _mm256_and_si256(_mm256_slli_epi16::<2>(qh), m2),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(ql0), m4),
                    _mm256_and_si256(qh, m2),
                ),
                _mm256_or_si256(
                    _mm256_and_si256(_mm256_srli_epi16::<4>(ql1), m4),
                    _mm256_and_si256(_mm256_srli_epi16::<2>(qh), m2),
                ),
            ];
            for (g, q) in codes.into_iter().enumerate() {
                let q = _mm256_sub_epi8(q, off);
                let s = 8 * h + 2 * g;
                // SAFETY: 128h + 32g + 32 <= 256 == y.len().
                unsafe { store_i8x32_scaled(y, 128 * h + 32 * g, q, ds[s], ds[s + 1]) };
            }
        }
    }
}

/// F16: exact widening with F16C; the tail (< 8 elements) goes through the scalar decoder.
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn f16(src: &[u8], dst: &mut [f32]) {
    let mut src_chunks = src.chunks_exact(16);
    let mut dst_chunks = dst.chunks_exact_mut(8);
    for (b, y) in (&mut src_chunks).zip(&mut dst_chunks) {
        // SAFETY: b holds 16 bytes = 8 f16; y holds 8 f32.
        unsafe { store8(y, 0, _mm256_cvtph_ps(load16(b, 0))) };
    }
    f16_fmt::decode(src_chunks.remainder(), dst_chunks.into_remainder());
}

/// BF16: f32 bits = bf16 << 16.
///
/// # Safety
/// The CPU supports AVX2, FMA and F16C.
#[target_feature(enable = "avx2,fma,f16c")]
pub(super) unsafe fn bf16(src: &[u8], dst: &mut [f32]) {
    let mut src_chunks = src.chunks_exact(16);
    let mut dst_chunks = dst.chunks_exact_mut(8);
    for (b, y) in (&mut src_chunks).zip(&mut dst_chunks) {
        // SAFETY: b holds 16 bytes = 8 bf16.
        let h = unsafe { load16(b, 0) };
        let v = _mm256_castsi256_ps(_mm256_slli_epi32::<16>(_mm256_cvtepu16_epi32(h)));
        // SAFETY: y holds 8 f32.
        unsafe { store8(y, 0, v) };
    }
    bf16_fmt::decode(src_chunks.remainder(), dst_chunks.into_remainder());
}

/// The f16 at `b[at..at + 2]`, widened exactly (0 if out of range, which whole blocks never are).
#[inline(always)]
pub(super) fn read_f16_slice(b: &[u8], at: usize) -> f32 {
    match b.get(at..at + 2) {
        Some(&[lo, hi]) => f16_fmt::f16_to_f32(u16::from_le_bytes([lo, hi])),
        _ => 0.0,
    }
}
