//! AVX-512 (F) kernels: a 14x32 register tile (28 accumulators, 2 B vectors, 1 A broadcast of the
//! 32 zmm registers).

use std::arch::x86_64::*;

pub const MR: usize = 14;
pub const NR: usize = 32;
const LANES: usize = 16;

/// # Safety
/// See `super::MicroKernel`; the CPU must have AVX-512F.
#[target_feature(enable = "avx512f,avx2,fma")]
pub unsafe fn micro(kc: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, beta: f32) {
    // SAFETY: forwarded (the full tile).
    unsafe { tile::<MR>(kc, a, b, c, ldc, beta) }
}

/// The first `rows` rows (`1..MR`) of the tile `micro` computes, bit for bit: the last, partial
/// row panel of A (its packed panel keeps the `MR` stride) without computing padding rows.
///
/// # Safety
/// See `super::RowsKernel`; the CPU must have AVX-512F.
#[target_feature(enable = "avx512f,avx2,fma")]
pub unsafe fn micro_rows(
    rows: usize,
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    beta: f32,
) {
    // SAFETY: forwarded; `tile::<R>` touches rows `0..R` of C with `R == rows`.
    unsafe {
        match rows {
            1 => tile::<1>(kc, a, b, c, ldc, beta),
            2 => tile::<2>(kc, a, b, c, ldc, beta),
            3 => tile::<3>(kc, a, b, c, ldc, beta),
            4 => tile::<4>(kc, a, b, c, ldc, beta),
            5 => tile::<5>(kc, a, b, c, ldc, beta),
            6 => tile::<6>(kc, a, b, c, ldc, beta),
            7 => tile::<7>(kc, a, b, c, ldc, beta),
            8 => tile::<8>(kc, a, b, c, ldc, beta),
            9 => tile::<9>(kc, a, b, c, ldc, beta),
            10 => tile::<10>(kc, a, b, c, ldc, beta),
            11 => tile::<11>(kc, a, b, c, ldc, beta),
            12 => tile::<12>(kc, a, b, c, ldc, beta),
            13 => tile::<13>(kc, a, b, c, ldc, beta),
            _ => tile::<MR>(kc, a, b, c, ldc, beta),
        }
    }
}

/// Rows `0..R` of the `MR x NR` tile (A panel stride `MR`).
///
/// # Safety
/// As `micro`, with C valid for rows `0..R`.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn tile<const R: usize>(
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    beta: f32,
) {
    // SAFETY: the caller guarantees `a` holds `kc·MR` and `b` `kc·NR` floats, and `c` spans `R`
    // rows of stride `ldc` with `NR` columns; every access below stays inside those ranges.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        let (mut a, mut b) = (a, b);
        for _ in 0..kc {
            let b0 = _mm512_loadu_ps(b);
            let b1 = _mm512_loadu_ps(b.add(LANES));
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm512_set1_ps(*a.add(i));
                row[0] = _mm512_fmadd_ps(ai, b0, row[0]);
                row[1] = _mm512_fmadd_ps(ai, b1, row[1]);
            }
            a = a.add(MR);
            b = b.add(NR);
        }
        store(&acc, c, ldc, beta);
    }
}

/// Merges the accumulators of one tile into C (`beta` as `super::merge`).
///
/// # Safety
/// `c` must be valid for reads and writes of rows `0..R` (row stride `ldc`), columns `0..NR`;
/// the CPU must have AVX-512F.
#[inline]
#[target_feature(enable = "avx512f,avx2,fma")]
pub(super) unsafe fn store<const R: usize>(
    acc: &[[__m512; 2]; R],
    c: *mut f32,
    ldc: usize,
    beta: f32,
) {
    // SAFETY: every access is inside the tile the caller vouches for.
    unsafe {
        let vbeta = _mm512_set1_ps(beta);
        for (i, row) in acc.iter().enumerate() {
            for (v, &x) in row.iter().enumerate() {
                let p = c.add(i * ldc + v * LANES);
                let out = if beta == 0.0 {
                    x
                } else if beta == 1.0 {
                    _mm512_add_ps(_mm512_loadu_ps(p), x)
                } else {
                    _mm512_add_ps(_mm512_mul_ps(vbeta, _mm512_loadu_ps(p)), x)
                };
                _mm512_storeu_ps(p, out);
            }
        }
    }
}

/// Sums the 16 lanes of `v` in a fixed order.
#[target_feature(enable = "avx512f,avx2,fma")]
unsafe fn hsum(v: __m512) -> f32 {
    // SAFETY: register-only intrinsics (unsafe to call before Rust 1.87); the caller
    // guarantees the CPU features.
    #[allow(unused_unsafe)]
    unsafe {
        let h = _mm256_add_ps(
            _mm512_castps512_ps256(v),
            _mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)),
        );
        let s = _mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps(h, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }
}

/// # Safety
/// The CPU must have AVX-512F; `a.len() == b.len()`.
#[target_feature(enable = "avx512f,avx2,fma")]
pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let body = n / (4 * LANES) * (4 * LANES);
    // SAFETY: all loads read `a[i..i+16]`, `b[i..i+16]` with `i + 16 <= n`.
    unsafe {
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut s = [_mm512_setzero_ps(); 4];
        let mut i = 0;
        while i < body {
            for (u, su) in s.iter_mut().enumerate() {
                let o = i + u * LANES;
                *su = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(o)), _mm512_loadu_ps(pb.add(o)), *su);
            }
            i += 4 * LANES;
        }
        while i + LANES <= n {
            s[0] = _mm512_fmadd_ps(_mm512_loadu_ps(pa.add(i)), _mm512_loadu_ps(pb.add(i)), s[0]);
            i += LANES;
        }
        let v = _mm512_add_ps(_mm512_add_ps(s[0], s[1]), _mm512_add_ps(s[2], s[3]));
        let mut total = hsum(v);
        for j in i..n {
            total += a[j] * b[j];
        }
        total
    }
}

/// # Safety
/// The CPU must have AVX-512F; `x.len() == y.len()`.
#[target_feature(enable = "avx512f,avx2,fma")]
pub unsafe fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    // SAFETY: every access reads/writes `[i..i+16]` with `i + 16 <= n`.
    unsafe {
        let va = _mm512_set1_ps(alpha);
        let (px, py) = (x.as_ptr(), y.as_mut_ptr());
        let mut i = 0;
        while i + LANES <= n {
            let r = _mm512_fmadd_ps(va, _mm512_loadu_ps(px.add(i)), _mm512_loadu_ps(py.add(i)));
            _mm512_storeu_ps(py.add(i), r);
            i += LANES;
        }
        for j in i..n {
            y[j] += alpha * x[j];
        }
    }
}
