//! AVX-512 (F + BW + VL) decode kernels (x86-64), 16 f32 lanes: the AVX2 kernels' arithmetic with
//! twice the width, for the formats used most (the others fall back to AVX2).

#![deny(unsafe_op_in_unsafe_fn)]

use super::avx2::read_f16_slice;
use crate::quant::{q4_k, q6_k};
use std::arch::x86_64::*;

/// # Safety
/// `at + 16 <= p.len()`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn load16(p: &[u8], at: usize) -> __m128i {
    debug_assert!(at + 16 <= p.len());
    // SAFETY: the caller guarantees 16 readable bytes at `at`.
    unsafe { _mm_loadu_si128(p.as_ptr().add(at).cast()) }
}

/// # Safety
/// `at + 32 <= p.len()`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn load32(p: &[u8], at: usize) -> __m256i {
    debug_assert!(at + 32 <= p.len());
    // SAFETY: the caller guarantees 32 readable bytes at `at`.
    unsafe { _mm256_loadu_si256(p.as_ptr().add(at).cast()) }
}

/// # Safety
/// `at + 16 <= y.len()`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn store16(y: &mut [f32], at: usize, v: __m512) {
    debug_assert!(at + 16 <= y.len());
    // SAFETY: the caller guarantees 16 writable f32 at `at`.
    unsafe { _mm512_storeu_ps(y.as_mut_ptr().add(at), v) }
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn u8x16_to_f32(v: __m128i) -> __m512 {
    _mm512_cvtepi32_ps(_mm512_cvtepu8_epi32(v))
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn i8x16_to_f32(v: __m128i) -> __m512 {
    _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(v))
}

/// Low and high nibbles of the 16 bytes at `b[at..]`.
///
/// # Safety
/// `at + 16 <= b.len()`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
unsafe fn nibbles16(b: &[u8], at: usize) -> [__m128i; 2] {
    // SAFETY: forwarded from the caller.
    let qs = unsafe { load16(b, at) };
    let m4 = _mm_set1_epi8(0x0f);
    [
        _mm_and_si128(qs, m4),
        _mm_and_si128(_mm_srli_epi16::<4>(qs), m4),
    ]
}

#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
fn halves(v: __m256i) -> [__m128i; 2] {
    [_mm256_castsi256_si128(v), _mm256_extracti128_si256::<1>(v)]
}

/// Q4_0: y = d·(q − 8).
///
/// # Safety
/// The CPU supports AVX-512 F, BW and VL.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(super) unsafe fn q4_0(src: &[u8], dst: &mut [f32]) {
    use crate::quant::q4_0::{BLOCK_BYTES, BLOCK_ELEMS, D, QS};
    let eight = _mm512_set1_epi32(8);
    for (b, y) in src
        .chunks_exact(BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(BLOCK_ELEMS))
    {
        let d = _mm512_set1_ps(read_f16_slice(b, D));
        // SAFETY: QS + 16 == BLOCK_BYTES == b.len().
        let nibbles = unsafe { nibbles16(b, QS) };
        for (h, n) in nibbles.into_iter().enumerate() {
            let q = _mm512_cvtepi32_ps(_mm512_sub_epi32(_mm512_cvtepu8_epi32(n), eight));
            // SAFETY: 16h + 16 <= 32 == y.len().
            unsafe { store16(y, 16 * h, _mm512_mul_ps(d, q)) };
        }
    }
}

/// Q4_1: y = d·q + m (multiply, then add).
///
/// # Safety
/// The CPU supports AVX-512 F, BW and VL.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(super) unsafe fn q4_1(src: &[u8], dst: &mut [f32]) {
    use crate::quant::q4_1::{BLOCK_BYTES, BLOCK_ELEMS, D, M, QS};
    for (b, y) in src
        .chunks_exact(BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(BLOCK_ELEMS))
    {
        let d = _mm512_set1_ps(read_f16_slice(b, D));
        let m = _mm512_set1_ps(read_f16_slice(b, M));
        // SAFETY: QS + 16 == BLOCK_BYTES == b.len().
        let nibbles = unsafe { nibbles16(b, QS) };
        for (h, n) in nibbles.into_iter().enumerate() {
            let v = _mm512_add_ps(_mm512_mul_ps(d, u8x16_to_f32(n)), m);
            // SAFETY: 16h + 16 <= 32 == y.len().
            unsafe { store16(y, 16 * h, v) };
        }
    }
}

/// Q8_0: y = q·d.
///
/// # Safety
/// The CPU supports AVX-512 F, BW and VL.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
pub(super) unsafe fn q8_0(src: &[u8], dst: &mut [f32]) {
    use crate::quant::q8_0::{BLOCK_BYTES, BLOCK_ELEMS, D, QS};
    for (b, y) in src
        .chunks_exact(BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(BLOCK_ELEMS))
    {
        let d = _mm512_set1_ps(read_f16_slice(b, D));
        for h in 0..2 {
            // SAFETY: QS + 16h + 16 <= BLOCK_BYTES == b.len(); 16h + 16 <= 32 == y.len().
            unsafe {
                let q = i8x16_to_f32(load16(b, QS + 16 * h));
                store16(y, 16 * h, _mm512_mul_ps(q, d));
            }
        }
    }
}

/// Q4_K: y = (d·sc)·q − dmin·m per 32-element sub-block.
///
/// # Safety
/// The CPU supports AVX-512 F, BW and VL.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
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
            let nibbles = [
                _mm256_and_si256(qs, m4),
                _mm256_and_si256(_mm256_srli_epi16::<4>(qs), m4),
            ];
            for (s, n) in nibbles.into_iter().enumerate() {
                let (sc, mn) = (_mm512_set1_ps(ds[2 * c + s]), _mm512_set1_ps(ms[2 * c + s]));
                for (k, g) in halves(n).into_iter().enumerate() {
                    let v = _mm512_sub_ps(_mm512_mul_ps(sc, u8x16_to_f32(g)), mn);
                    // SAFETY: 64c + 32s + 16k + 16 <= 256 == y.len().
                    unsafe { store16(y, 64 * c + 32 * s + 16 * k, v) };
                }
            }
        }
    }
}

/// Q6_K: y = (d·sc)·(q − 32).
///
/// # Safety
/// The CPU supports AVX-512 F, BW and VL.
#[target_feature(enable = "avx512f,avx512bw,avx512vl")]
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
                for (k, part) in halves(q).into_iter().enumerate() {
                    let s = _mm512_set1_ps(ds[8 * h + 2 * g + k]);
                    // SAFETY: 128h + 32g + 16k + 16 <= 256 == y.len().
                    unsafe {
                        store16(
                            y,
                            128 * h + 32 * g + 16 * k,
                            _mm512_mul_ps(s, i8x16_to_f32(part)),
                        )
                    };
                }
            }
        }
    }
}
