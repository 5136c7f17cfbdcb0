//! AVX-512 BF16 microkernel (`vdpbf16ps`): the 14x32 register tile of the AVX-512 f32 kernel, fed
//! with bf16 pairs. Each packed element is a `u32` holding two bf16 values of consecutive `k`
//! (the even one in the low half); one `vdpbf16ps` adds both products of a pair to an f32
//! accumulator, so a `kc`-deep slice takes `ceil(kc/2)` steps.
//!
//! Products of two bf16 values are exact in f32; the instruction adds them to the accumulator
//! with round-to-nearest-even, treating bf16 denormals as zero and flushing denormal results
//! (values below 1.2e-38, far below anything a model computes).

use std::arch::x86_64::*;

pub const MR: usize = super::avx512::MR;
pub const NR: usize = super::avx512::NR;
const LANES: usize = 16;

/// `c[i, j] = beta·c[i, j] + Σ_q a[q·MR + i] · b[q·NR + j]` over `q in 0..kc2`, where each term
/// is a pair dot product (see the module docs); beta as `super::merge`.
///
/// # Safety
/// `a` must be valid for `kc2·MR` reads, `b` for `kc2·NR`, and `c` for reads and writes of rows
/// `0..MR` (row stride `ldc`), columns `0..NR`; the CPU must have AVX-512F and AVX-512 BF16.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16,avx2,fma")]
pub unsafe fn micro(kc2: usize, a: *const u32, b: *const u32, c: *mut f32, ldc: usize, beta: f32) {
    // SAFETY: forwarded (the full tile).
    unsafe { tile::<MR>(kc2, a, b, c, ldc, beta) }
}

/// The first `rows` rows (`1..MR`) of the tile `micro` computes, bit for bit.
///
/// # Safety
/// As `micro`, with C valid for rows `0..rows`.
#[target_feature(enable = "avx512f,avx512bw,avx512bf16,avx2,fma")]
pub unsafe fn micro_rows(
    rows: usize,
    kc2: usize,
    a: *const u32,
    b: *const u32,
    c: *mut f32,
    ldc: usize,
    beta: f32,
) {
    // SAFETY: forwarded; `tile::<R>` touches rows `0..R` of C with `R == rows`.
    unsafe {
        match rows {
            1 => tile::<1>(kc2, a, b, c, ldc, beta),
            2 => tile::<2>(kc2, a, b, c, ldc, beta),
            3 => tile::<3>(kc2, a, b, c, ldc, beta),
            4 => tile::<4>(kc2, a, b, c, ldc, beta),
            5 => tile::<5>(kc2, a, b, c, ldc, beta),
            6 => tile::<6>(kc2, a, b, c, ldc, beta),
            7 => tile::<7>(kc2, a, b, c, ldc, beta),
            8 => tile::<8>(kc2, a, b, c, ldc, beta),
            9 => tile::<9>(kc2, a, b, c, ldc, beta),
            10 => tile::<10>(kc2, a, b, c, ldc, beta),
            11 => tile::<11>(kc2, a, b, c, ldc, beta),
            12 => tile::<12>(kc2, a, b, c, ldc, beta),
            13 => tile::<13>(kc2, a, b, c, ldc, beta),
            _ => tile::<MR>(kc2, a, b, c, ldc, beta),
        }
    }
}

/// Rows `0..R` of the pair tile (A panel stride `MR`).
///
/// # Safety
/// As `micro`, with C valid for rows `0..R`.
#[inline]
#[target_feature(enable = "avx512f,avx512bw,avx512bf16,avx2,fma")]
unsafe fn tile<const R: usize>(
    kc2: usize,
    a: *const u32,
    b: *const u32,
    c: *mut f32,
    ldc: usize,
    beta: f32,
) {
    // SAFETY: the caller guarantees `a` holds `kc2·MR` and `b` `kc2·NR` pairs, and `c` spans `R`
    // rows of stride `ldc` with `NR` columns; every access below stays inside those ranges.
    // `__m512i` and `__m512bh` are both 64-byte vectors: the transmutes reinterpret bits.
    unsafe {
        let mut acc = [[_mm512_setzero_ps(); 2]; R];
        let (mut a, mut b) = (a, b);
        for _ in 0..kc2 {
            let b0: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.cast()));
            let b1: __m512bh = std::mem::transmute(_mm512_loadu_si512(b.add(LANES).cast()));
            for (i, row) in acc.iter_mut().enumerate() {
                let ai: __m512bh = std::mem::transmute(_mm512_set1_epi32(*a.add(i) as i32));
                row[0] = _mm512_dpbf16_ps(row[0], ai, b0);
                row[1] = _mm512_dpbf16_ps(row[1], ai, b1);
            }
            a = a.add(MR);
            b = b.add(NR);
        }
        super::avx512::store(&acc, c, ldc, beta);
    }
}
