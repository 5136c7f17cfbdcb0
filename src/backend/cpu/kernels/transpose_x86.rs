//! Transposing copy for packing (x86): 8x8 blocks through AVX registers (the AVX2 level), 16x16
//! blocks through AVX-512 registers (the AVX-512 level).

use std::arch::x86_64::*;

/// `dst[p·width + r] = src[r·ld + p]` for `r < rows`, `p < kc` (see `scalar::transpose`).
/// Rows go in groups of 8 (the last group overlaps the previous one when `rows % 8 != 0`, writing
/// some values twice); 4 to 7 rows go in groups of 4 the same way; fewer than 4 rows, and the
/// `kc % 8` (`kc % 4`) tail, are copied one by one.
///
/// # Safety
/// The CPU must have AVX2; `src.len() >= (rows-1)·ld + kc`, `dst.len() >= (kc-1)·width + rows`,
/// `rows <= width` (checked by the caller, `Kernels::transpose`).
#[target_feature(enable = "avx2")]
pub unsafe fn transpose(
    src: &[f32],
    ld: usize,
    rows: usize,
    kc: usize,
    dst: &mut [f32],
    width: usize,
) {
    if rows < 4 {
        return super::scalar::transpose(src, ld, rows, kc, dst, width);
    }
    if rows < 8 {
        // SAFETY: same contract; the CPU has AVX2 (so SSE).
        return unsafe { transpose4(src, ld, rows, kc, dst, width) };
    }
    let kc8 = kc / 8 * 8;
    let mut g = 0;
    loop {
        let (s, d) = (src[g * ld..].as_ptr(), dst[g..].as_mut_ptr());
        for p in (0..kc8).step_by(8) {
            // SAFETY: rows `g..g+8` exist (`g + 8 <= rows`), so the loads read
            // `src[(g+r)·ld + p..+8]` with `p + 8 <= kc`, inside `src`; the stores write
            // `dst[(p+q)·width + g..+8]` with `g + 8 <= rows <= width`, inside `dst`.
            unsafe {
                let r: [__m256; 8] = std::array::from_fn(|i| _mm256_loadu_ps(s.add(i * ld + p)));
                let out = transpose8(r);
                for (q, v) in out.iter().enumerate() {
                    _mm256_storeu_ps(d.add((p + q) * width), *v);
                }
            }
        }
        for r in g..g + 8 {
            for p in kc8..kc {
                dst[p * width + r] = src[r * ld + p];
            }
        }
        if g + 8 == rows {
            break;
        }
        g = (g + 8).min(rows - 8);
    }
}

/// `transpose` for 4 <= rows < 8, in 4x4 blocks (128-bit registers).
///
/// # Safety
/// As `transpose`, and `rows >= 4`.
#[target_feature(enable = "avx2")]
unsafe fn transpose4(
    src: &[f32],
    ld: usize,
    rows: usize,
    kc: usize,
    dst: &mut [f32],
    width: usize,
) {
    let kc4 = kc / 4 * 4;
    let mut g = 0;
    loop {
        let (s, d) = (src[g * ld..].as_ptr(), dst[g..].as_mut_ptr());
        for p in (0..kc4).step_by(4) {
            // SAFETY: rows `g..g+4` exist (`g + 4 <= rows`), so the loads read
            // `src[(g+r)·ld + p..+4]` with `p + 4 <= kc`, inside `src`; the stores write
            // `dst[(p+q)·width + g..+4]` with `g + 4 <= rows <= width`, inside `dst`.
            unsafe {
                let r: [__m128; 4] = std::array::from_fn(|i| _mm_loadu_ps(s.add(i * ld + p)));
                let t0 = _mm_unpacklo_ps(r[0], r[1]);
                let t1 = _mm_unpackhi_ps(r[0], r[1]);
                let t2 = _mm_unpacklo_ps(r[2], r[3]);
                let t3 = _mm_unpackhi_ps(r[2], r[3]);
                let cols = [
                    _mm_movelh_ps(t0, t2),
                    _mm_movehl_ps(t2, t0),
                    _mm_movelh_ps(t1, t3),
                    _mm_movehl_ps(t3, t1),
                ];
                for (q, v) in cols.iter().enumerate() {
                    _mm_storeu_ps(d.add((p + q) * width), *v);
                }
            }
        }
        for r in g..g + 4 {
            for p in kc4..kc {
                dst[p * width + r] = src[r * ld + p];
            }
        }
        if g + 4 == rows {
            break;
        }
        g = (g + 4).min(rows - 4);
    }
}

/// Transposes an 8x8 block held as 8 row vectors.
///
/// # Safety
/// The CPU must have AVX2.
#[inline]
#[target_feature(enable = "avx2")]
unsafe fn transpose8(r: [__m256; 8]) -> [__m256; 8] {
    // SAFETY: register-only intrinsics (unsafe to call before Rust 1.87); the caller guarantees
    // the CPU features.
    #[allow(unused_unsafe)]
    unsafe {
        let t0 = _mm256_unpacklo_ps(r[0], r[1]);
        let t1 = _mm256_unpackhi_ps(r[0], r[1]);
        let t2 = _mm256_unpacklo_ps(r[2], r[3]);
        let t3 = _mm256_unpackhi_ps(r[2], r[3]);
        let t4 = _mm256_unpacklo_ps(r[4], r[5]);
        let t5 = _mm256_unpackhi_ps(r[4], r[5]);
        let t6 = _mm256_unpacklo_ps(r[6], r[7]);
        let t7 = _mm256_unpackhi_ps(r[6], r[7]);
        let u0 = _mm256_shuffle_ps::<0x44>(t0, t2);
        let u1 = _mm256_shuffle_ps::<0xEE>(t0, t2);
        let u2 = _mm256_shuffle_ps::<0x44>(t1, t3);
        let u3 = _mm256_shuffle_ps::<0xEE>(t1, t3);
        let u4 = _mm256_shuffle_ps::<0x44>(t4, t6);
        let u5 = _mm256_shuffle_ps::<0xEE>(t4, t6);
        let u6 = _mm256_shuffle_ps::<0x44>(t5, t7);
        let u7 = _mm256_shuffle_ps::<0xEE>(t5, t7);
        [
            _mm256_permute2f128_ps::<0x20>(u0, u4),
            _mm256_permute2f128_ps::<0x20>(u1, u5),
            _mm256_permute2f128_ps::<0x20>(u2, u6),
            _mm256_permute2f128_ps::<0x20>(u3, u7),
            _mm256_permute2f128_ps::<0x31>(u0, u4),
            _mm256_permute2f128_ps::<0x31>(u1, u5),
            _mm256_permute2f128_ps::<0x31>(u2, u6),
            _mm256_permute2f128_ps::<0x31>(u3, u7),
        ]
    }
}

/// Transposes 16 vectors of 16 32-bit lanes.
#[inline]
#[target_feature(enable = "avx512f")]
pub(crate) fn transpose16(r: &mut [__m512i; 16]) {
    let mut t = [_mm512_setzero_si512(); 16];
    for i in 0..8 {
        t[2 * i] = _mm512_unpacklo_epi32(r[2 * i], r[2 * i + 1]);
        t[2 * i + 1] = _mm512_unpackhi_epi32(r[2 * i], r[2 * i + 1]);
    }
    for i in 0..4 {
        let (a, b, c, d) = (t[4 * i], t[4 * i + 1], t[4 * i + 2], t[4 * i + 3]);
        r[4 * i] = _mm512_unpacklo_epi64(a, c);
        r[4 * i + 1] = _mm512_unpackhi_epi64(a, c);
        r[4 * i + 2] = _mm512_unpacklo_epi64(b, d);
        r[4 * i + 3] = _mm512_unpackhi_epi64(b, d);
    }
    // Now r[4g + j] holds, in each 128-bit lane L, column 4L + j of rows 4g..4g+4.
    for i in 0..4 {
        let (a, b) = (r[i], r[i + 4]);
        let (c, d) = (r[i + 8], r[i + 12]);
        t[i] = _mm512_shuffle_i32x4::<0x44>(a, b);
        t[i + 4] = _mm512_shuffle_i32x4::<0xee>(a, b);
        t[i + 8] = _mm512_shuffle_i32x4::<0x44>(c, d);
        t[i + 12] = _mm512_shuffle_i32x4::<0xee>(c, d);
    }
    for i in 0..4 {
        let (a, b) = (t[i], t[i + 8]);
        let (c, d) = (t[i + 4], t[i + 12]);
        r[i] = _mm512_shuffle_i32x4::<0x88>(a, b);
        r[i + 4] = _mm512_shuffle_i32x4::<0xdd>(a, b);
        r[i + 8] = _mm512_shuffle_i32x4::<0x88>(c, d);
        r[i + 12] = _mm512_shuffle_i32x4::<0xdd>(c, d);
    }
}

/// `transpose` at the AVX-512 level: rows in groups of 16 (a last partial group with masked
/// stores), `kc` in steps of 16 (the `kc % 16` tail one by one).
///
/// # Safety
/// The CPU must have AVX-512F; slices as `transpose`.
#[target_feature(enable = "avx512f,avx2")]
pub unsafe fn transpose512(
    src: &[f32],
    ld: usize,
    rows: usize,
    kc: usize,
    dst: &mut [f32],
    width: usize,
) {
    if rows < 8 {
        // SAFETY: same contract; AVX-512F implies AVX2.
        return unsafe { transpose(src, ld, rows, kc, dst, width) };
    }
    let kc16 = kc / 16 * 16;
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
    for g in (0..rows).step_by(16) {
        let n = 16.min(rows - g);
        let mask: __mmask16 = if n == 16 { !0 } else { (1 << n) - 1 };
        for p in (0..kc16).step_by(16) {
            // SAFETY: rows `g..g+n` exist, so the loads read `src[(g+r)·ld + p..+16]` with
            // `p + 16 <= kc`, inside `src`; the masked stores write `dst[(p+q)·width + g..+n]`
            // with `g + n <= rows <= width`, inside `dst`.
            unsafe {
                let mut v: [__m512i; 16] = std::array::from_fn(|r| {
                    if r < n {
                        _mm512_loadu_si512(s.add((g + r) * ld + p).cast())
                    } else {
                        _mm512_setzero_si512()
                    }
                });
                transpose16(&mut v);
                for (q, x) in v.iter().enumerate() {
                    _mm512_mask_storeu_epi32(d.add((p + q) * width + g).cast(), mask, *x);
                }
            }
        }
        for r in g..g + n {
            for p in kc16..kc {
                dst[p * width + r] = src[r * ld + p];
            }
        }
    }
}
