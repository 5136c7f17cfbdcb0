//! AVX2 + FMA kernels: a 6x16 register tile (12 accumulators, 2 B vectors, 1 A broadcast of the
//! 16 ymm registers).

use std::arch::x86_64::*;

pub const MR: usize = 6;
pub const NR: usize = 16;
const LANES: usize = 8;

/// # Safety
/// See `super::MicroKernel`; the CPU must have AVX2 and FMA.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn micro(kc: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, beta: f32) {
    // SAFETY: the caller guarantees `a` holds `kc·MR` and `b` `kc·NR` floats, and `c` spans `MR`
    // rows of stride `ldc` with `NR` columns; every access below stays inside those ranges.
    unsafe {
        let mut acc = [[_mm256_setzero_ps(); 2]; MR];
        let (mut a, mut b) = (a, b);
        for _ in 0..kc {
            let b0 = _mm256_loadu_ps(b);
            let b1 = _mm256_loadu_ps(b.add(LANES));
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = _mm256_broadcast_ss(&*a.add(i));
                row[0] = _mm256_fmadd_ps(ai, b0, row[0]);
                row[1] = _mm256_fmadd_ps(ai, b1, row[1]);
            }
            a = a.add(MR);
            b = b.add(NR);
        }
        let vbeta = _mm256_set1_ps(beta);
        for (i, row) in acc.iter().enumerate() {
            for (v, &x) in row.iter().enumerate() {
                let p = c.add(i * ldc + v * LANES);
                let out = if beta == 0.0 {
                    x
                } else if beta == 1.0 {
                    _mm256_add_ps(_mm256_loadu_ps(p), x)
                } else {
                    _mm256_add_ps(_mm256_mul_ps(vbeta, _mm256_loadu_ps(p)), x)
                };
                _mm256_storeu_ps(p, out);
            }
        }
    }
}

/// Sums the 8 lanes of `v` in a fixed order.
#[target_feature(enable = "avx2,fma")]
unsafe fn hsum(v: __m256) -> f32 {
    // SAFETY: register-only intrinsics (unsafe to call before Rust 1.87); the caller
    // guarantees the CPU features.
    #[allow(unused_unsafe)]
    unsafe {
        let s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
        let s = _mm_add_ps(s, _mm_movehl_ps(s, s));
        let s = _mm_add_ss(s, _mm_shuffle_ps(s, s, 1));
        _mm_cvtss_f32(s)
    }
}

/// # Safety
/// The CPU must have AVX2 and FMA; `a.len() == b.len()`.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let body = n / (4 * LANES) * (4 * LANES);
    // SAFETY: all loads read `a[i..i+8]`, `b[i..i+8]` with `i + 8 <= n`.
    unsafe {
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut s = [_mm256_setzero_ps(); 4];
        let mut i = 0;
        while i < body {
            for (u, su) in s.iter_mut().enumerate() {
                let o = i + u * LANES;
                *su = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(o)), _mm256_loadu_ps(pb.add(o)), *su);
            }
            i += 4 * LANES;
        }
        while i + LANES <= n {
            s[0] = _mm256_fmadd_ps(_mm256_loadu_ps(pa.add(i)), _mm256_loadu_ps(pb.add(i)), s[0]);
            i += LANES;
        }
        let v = _mm256_add_ps(_mm256_add_ps(s[0], s[1]), _mm256_add_ps(s[2], s[3]));
        let mut total = hsum(v);
        for j in i..n {
            total += a[j] * b[j];
        }
        total
    }
}

/// # Safety
/// The CPU must have AVX2 and FMA; `x.len() == y.len()`.
#[target_feature(enable = "avx2,fma")]
pub unsafe fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    // SAFETY: every access reads/writes `[i..i+8]` with `i + 8 <= n`.
    unsafe {
        let va = _mm256_set1_ps(alpha);
        let (px, py) = (x.as_ptr(), y.as_mut_ptr());
        let mut i = 0;
        while i + LANES <= n {
            let r = _mm256_fmadd_ps(va, _mm256_loadu_ps(px.add(i)), _mm256_loadu_ps(py.add(i)));
            _mm256_storeu_ps(py.add(i), r);
            i += LANES;
        }
        for j in i..n {
            y[j] += alpha * x[j];
        }
    }
}
