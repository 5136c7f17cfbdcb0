//! The scalar kernels: the specification every SIMD kernel is tested against. Plain loops, one
//! accumulator per output element, multiply then add (Rust never fuses them).

pub const MR: usize = 4;
pub const NR: usize = 8;

/// Safe core of the microkernel: the `MR x NR` sums, in `p` order.
fn micro_sums(kc: usize, a: &[f32], b: &[f32]) -> [[f32; NR]; MR] {
    let mut acc = [[0f32; NR]; MR];
    for (ap, bp) in a.chunks_exact(MR).zip(b.chunks_exact(NR)).take(kc) {
        for (row, &ai) in acc.iter_mut().zip(ap) {
            for (x, &bj) in row.iter_mut().zip(bp) {
                *x += ai * bj;
            }
        }
    }
    acc
}

/// # Safety
/// See `super::MicroKernel`.
pub unsafe fn micro(kc: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, beta: f32) {
    // SAFETY: the caller guarantees `a`/`b` hold `kc` packed steps.
    let (a, b) = unsafe {
        (
            std::slice::from_raw_parts(a, kc * MR),
            std::slice::from_raw_parts(b, kc * NR),
        )
    };
    for (i, sums) in micro_sums(kc, a, b).iter().enumerate() {
        // SAFETY: the caller guarantees row `i < MR` of the tile has `NR` valid elements at
        // `c + i·ldc`; only this row is borrowed (other threads may own the columns between rows).
        let row = unsafe { std::slice::from_raw_parts_mut(c.add(i * ldc), NR) };
        for (x, &acc) in row.iter_mut().zip(sums) {
            super::merge(x, acc, beta);
        }
    }
}

/// Dot product with four interleaved partial sums (lane `i % 4`), combined as `(s0+s1)+(s2+s3)`.
pub fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut s = [0f32; 4];
    let mut ca = a.chunks_exact(4);
    let mut cb = b.chunks_exact(4);
    for (x, y) in ca.by_ref().zip(cb.by_ref()) {
        for l in 0..4 {
            s[l] += x[l] * y[l];
        }
    }
    for (l, (x, y)) in ca.remainder().iter().zip(cb.remainder()).enumerate() {
        s[l] += x * y;
    }
    (s[0] + s[1]) + (s[2] + s[3])
}

pub fn axpy(alpha: f32, x: &[f32], y: &mut [f32]) {
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi += alpha * xi;
    }
}

/// # Safety
/// Always safe; `unsafe` only to share the function-pointer type of the SIMD levels.
pub unsafe fn dot_unsafe(a: &[f32], b: &[f32]) -> f32 {
    dot(a, b)
}

/// # Safety
/// Always safe; `unsafe` only to share the function-pointer type of the SIMD levels.
pub unsafe fn axpy_unsafe(alpha: f32, x: &[f32], y: &mut [f32]) {
    axpy(alpha, x, y)
}

/// Transposing copy: `dst[p·width + r] = src[r·ld + p]` for `r < rows`, `p < kc`.
pub fn transpose(src: &[f32], ld: usize, rows: usize, kc: usize, dst: &mut [f32], width: usize) {
    for r in 0..rows {
        for (out, &v) in dst[r..]
            .iter_mut()
            .step_by(width)
            .zip(&src[r * ld..r * ld + kc])
        {
            *out = v;
        }
    }
}

/// # Safety
/// Always safe; `unsafe` only to share the function-pointer type of the SIMD levels.
pub unsafe fn transpose_unsafe(
    src: &[f32],
    ld: usize,
    rows: usize,
    kc: usize,
    dst: &mut [f32],
    width: usize,
) {
    transpose(src, ld, rows, kc, dst, width)
}
