//! NEON kernels (aarch64): a 12x8 register tile (24 accumulators, 2 B vectors of the 32 q
//! registers).

use std::arch::aarch64::*;

pub const MR: usize = 12;
pub const NR: usize = 8;
const LANES: usize = 4;
const NV: usize = NR / LANES;

/// # Safety
/// See `super::MicroKernel`; the CPU must have NEON.
#[target_feature(enable = "neon")]
pub unsafe fn micro(kc: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, beta: f32) {
    // SAFETY: the caller guarantees `a` holds `kc·MR` and `b` `kc·NR` floats, and `c` spans `MR`
    // rows of stride `ldc` with `NR` columns; every access below stays inside those ranges.
    unsafe {
        let mut acc = [[vdupq_n_f32(0.0); NV]; MR];
        let (mut a, mut b) = (a, b);
        for _ in 0..kc {
            let bv = [vld1q_f32(b), vld1q_f32(b.add(LANES))];
            for (i, row) in acc.iter_mut().enumerate() {
                let ai = *a.add(i);
                for (x, &bj) in row.iter_mut().zip(&bv) {
                    *x = vfmaq_n_f32(*x, bj, ai);
                }
            }
            a = a.add(MR);
            b = b.add(NR);
        }
        let vbeta = vdupq_n_f32(beta);
        for (i, row) in acc.iter().enumerate() {
            for (v, &x) in row.iter().enumerate() {
                let p = c.add(i * ldc + v * LANES);
                let out = if beta == 0.0 {
                    x
                } else if beta == 1.0 {
                    vaddq_f32(vld1q_f32(p), x)
                } else {
                    vaddq_f32(vmulq_f32(vbeta, vld1q_f32(p)), x)
                };
                vst1q_f32(p, out);
            }
        }
    }
}

/// # Safety
/// The CPU must have NEON.
#[target_feature(enable = "neon")]
pub unsafe fn dot(a: &[f32], b: &[f32]) -> f32 {
    let n = a.len().min(b.len());
    let body = n / (4 * LANES) * (4 * LANES);
    // SAFETY: all loads read `a[i..i+4]`, `b[i..i+4]` with `i + 4 <= n`.
    unsafe {
        let (pa, pb) = (a.as_ptr(), b.as_ptr());
        let mut s = [vdupq_n_f32(0.0); 4];
        let mut i = 0;
        while i < body {
            for (u, su) in s.iter_mut().enumerate() {
                let o = i + u * LANES;
                *su = vfmaq_f32(*su, vld1q_f32(pa.add(o)), vld1q_f32(pb.add(o)));
            }
            i += 4 * LANES;
        }
        while i + LANES <= n {
            s[0] = vfmaq_f32(s[0], vld1q_f32(pa.add(i)), vld1q_f32(pb.add(i)));
            i += LANES;
        }
        let v = vaddq_f32(vaddq_f32(s[0], s[1]), vaddq_f32(s[2], s[3]));
        let mut total = vaddvq_f32(v);
        for j in i..n {
            total += a[j] * b[j];
        }
        total
    }
}

/// # Safety
/// The CPU must have NEON.
#[target_feature(enable = "neon")]
pub unsafe fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    let n = x.len().min(y.len());
    // SAFETY: every access reads/writes `[i..i+4]` with `i + 4 <= n`.
    unsafe {
        let (px, py) = (x.as_ptr(), y.as_mut_ptr());
        let mut i = 0;
        while i + LANES <= n {
            let r = vfmaq_n_f32(vld1q_f32(py.add(i)), vld1q_f32(px.add(i)), alpha);
            vst1q_f32(py.add(i), r);
            i += LANES;
        }
        for j in i..n {
            y[j] += alpha * x[j];
        }
    }
}

/// `dst[p·width + r] = src[r·ld + p]` for `r < rows`, `p < kc` (see `scalar::transpose`), in 4x4
/// register blocks. Rows go in groups of 4 (the last group overlaps the previous one when
/// `rows % 4 != 0`); fewer than 4 rows, and the `kc % 4` tail, are copied one by one.
///
/// # Safety
/// The CPU must have NEON; `src.len() >= (rows-1)·ld + kc`, `dst.len() >= (kc-1)·width + rows`,
/// `rows <= width` (checked by the caller, `Kernels::transpose`).
#[target_feature(enable = "neon")]
pub unsafe fn transpose(
    src: &[f32],
    ld: usize,
    rows: usize,
    kc: usize,
    dst: &mut [f32],
    width: usize,
) {
    if rows < LANES {
        return super::scalar::transpose(src, ld, rows, kc, dst, width);
    }
    let kc4 = kc / LANES * LANES;
    let mut g = 0;
    loop {
        let (s, d) = (src[g * ld..].as_ptr(), dst[g..].as_mut_ptr());
        for p in (0..kc4).step_by(LANES) {
            // SAFETY: rows `g..g+4` exist (`g + 4 <= rows`), so the loads read
            // `src[(g+r)·ld + p..+4]` with `p + 4 <= kc`, inside `src`; the stores write
            // `dst[(p+q)·width + g..+4]` with `g + 4 <= rows <= width`, inside `dst`.
            unsafe {
                let r: [float32x4_t; 4] = std::array::from_fn(|i| vld1q_f32(s.add(i * ld + p)));
                let t0 = vreinterpretq_f64_f32(vtrn1q_f32(r[0], r[1]));
                let t1 = vreinterpretq_f64_f32(vtrn2q_f32(r[0], r[1]));
                let t2 = vreinterpretq_f64_f32(vtrn1q_f32(r[2], r[3]));
                let t3 = vreinterpretq_f64_f32(vtrn2q_f32(r[2], r[3]));
                let cols = [
                    vtrn1q_f64(t0, t2),
                    vtrn1q_f64(t1, t3),
                    vtrn2q_f64(t0, t2),
                    vtrn2q_f64(t1, t3),
                ];
                for (q, c) in cols.iter().enumerate() {
                    vst1q_f32(d.add((p + q) * width), vreinterpretq_f32_f64(*c));
                }
            }
        }
        for r in g..g + LANES {
            for p in kc4..kc {
                dst[p * width + r] = src[r * ld + p];
            }
        }
        if g + LANES == rows {
            break;
        }
        g = (g + LANES).min(rows - LANES);
    }
}
