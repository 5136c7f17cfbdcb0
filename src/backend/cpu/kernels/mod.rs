//! Register-tiled microkernels and the vector helpers (dot, axpy) of the CPU backend, one set per
//! `SimdLevel`. The scalar set is the specification; every SIMD set is tested against it.
//!
//! A GEMM microkernel computes one `MR x NR` tile of C from packed operands:
//! `c[i, j] = beta·c[i, j] + Σ_p a[p·MR + i] · b[p·NR + j]` for `p in 0..kc`, where `a` is an
//! `MR`-row micro-panel of A and `b` an `NR`-column micro-panel of B (see `pack.rs`). The sum runs
//! over `p` in order, one accumulator per element. `beta == 0` stores without reading C,
//! `beta == 1` adds, any other beta multiplies then adds (never fused), so a tile computed into a
//! scratch buffer and merged with `merge_tile` is bit-identical to one computed in place.

mod scalar;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "x86_64")]
mod avx512_bf16;
#[cfg(target_arch = "aarch64")]
mod neon;
#[cfg(target_arch = "x86_64")]
mod transpose_x86;
#[cfg(target_arch = "x86_64")]
pub(crate) use transpose_x86::transpose16;

use crate::cpu::{available_levels, SimdLevel};

/// Raw microkernel: see the module docs. `kc` may be 0 (then C becomes `beta·C`).
///
/// # Safety
/// `a` must be valid for `kc·MR` reads, `b` for `kc·NR` reads, and `c` for reads and writes of
/// rows `0..MR` (row stride `ldc`), columns `0..NR`; the CPU must have the kernel's features.
pub(crate) type MicroKernel =
    unsafe fn(kc: usize, a: *const f32, b: *const f32, c: *mut f32, ldc: usize, beta: f32);

/// Rows `0..rows` (`rows < MR`) of the tile a `MicroKernel` computes, bit for bit: the last
/// row panel of A when `m` is not a multiple of `MR` (its packed panel keeps the `MR` stride).
///
/// # Safety
/// As `MicroKernel`, with `c` valid for rows `0..rows` only.
pub(crate) type RowsKernel = unsafe fn(
    rows: usize,
    kc: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    beta: f32,
);

/// The kernels of one SIMD level. Only `Kernels::for_level` makes one, and only for a level the
/// CPU runs, so its function pointers are safe to call on this machine.
pub(crate) struct Kernels {
    level: SimdLevel,
    /// Rows of the register tile.
    pub mr: usize,
    /// Columns of the register tile.
    pub nr: usize,
    micro: MicroKernel,
    /// Partial row panels; `None`: they go through a full tile in scratch.
    micro_rows: Option<RowsKernel>,
    dot: unsafe fn(&[f32], &[f32]) -> f32,
    axpy: unsafe fn(f32, &[f32], &mut [f32]),
    transpose: unsafe fn(&[f32], usize, usize, usize, &mut [f32], usize),
}

/// Largest `MR·NR` of any kernel (edge tiles are computed into a stack buffer of this size).
pub(crate) const MAX_TILE: usize = 14 * 32;

const _: () = assert!(scalar::MR * scalar::NR <= MAX_TILE);
#[cfg(target_arch = "x86_64")]
const _: () = assert!(avx2::MR * avx2::NR <= MAX_TILE && avx512::MR * avx512::NR <= MAX_TILE);
#[cfg(target_arch = "aarch64")]
const _: () = assert!(neon::MR * neon::NR <= MAX_TILE);

static SCALAR: Kernels = Kernels {
    level: SimdLevel::Scalar,
    mr: scalar::MR,
    nr: scalar::NR,
    micro: scalar::micro,
    micro_rows: None,
    dot: scalar::dot_unsafe,
    axpy: scalar::axpy_unsafe,
    transpose: scalar::transpose_unsafe,
};

#[cfg(target_arch = "x86_64")]
static AVX2: Kernels = Kernels {
    level: SimdLevel::Avx2,
    mr: avx2::MR,
    nr: avx2::NR,
    micro: avx2::micro,
    micro_rows: None,
    dot: avx2::dot,
    axpy: avx2::axpy,
    transpose: transpose_x86::transpose,
};

#[cfg(target_arch = "x86_64")]
static AVX512: Kernels = Kernels {
    level: SimdLevel::Avx512,
    mr: avx512::MR,
    nr: avx512::NR,
    micro: avx512::micro,
    micro_rows: Some(avx512::micro_rows),
    dot: avx512::dot,
    axpy: avx512::axpy,
    transpose: transpose_x86::transpose512,
};

#[cfg(target_arch = "aarch64")]
static NEON: Kernels = Kernels {
    level: SimdLevel::Neon,
    mr: neon::MR,
    nr: neon::NR,
    micro: neon::micro,
    micro_rows: None,
    dot: neon::dot,
    axpy: neon::axpy,
    transpose: neon::transpose,
};

impl Kernels {
    /// The kernels of `level`, or `None` if this CPU cannot run that level.
    pub fn for_level(level: SimdLevel) -> Option<&'static Kernels> {
        if !available_levels().contains(&level) {
            return None;
        }
        match level {
            SimdLevel::Scalar => Some(&SCALAR),
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx2 => Some(&AVX2),
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx512 => Some(&AVX512),
            #[cfg(target_arch = "aarch64")]
            SimdLevel::Neon => Some(&NEON),
            #[allow(unreachable_patterns)]
            _ => None,
        }
    }

    pub fn level(&self) -> SimdLevel {
        self.level
    }

    /// Runs the microkernel on rows `0..rows` of a tile, straight into C, if this level has a
    /// kernel for partial row panels (returns false otherwise, and does nothing).
    ///
    /// # Safety
    /// As `RowsKernel`, minus the CPU-feature condition (guaranteed by construction).
    #[allow(clippy::too_many_arguments)] // the microkernel's arguments plus the row count
    #[inline]
    pub unsafe fn micro_rows(
        &self,
        rows: usize,
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        beta: f32,
    ) -> bool {
        match self.micro_rows {
            // SAFETY: the caller upholds the pointer conditions; `for_level` checked the features.
            Some(k) => unsafe {
                k(rows, kc, a, b, c, ldc, beta);
                true
            },
            None => false,
        }
    }

    /// Runs the microkernel on one full tile.
    ///
    /// # Safety
    /// As `MicroKernel`, minus the CPU-feature condition (guaranteed by construction).
    #[inline]
    pub unsafe fn micro(
        &self,
        kc: usize,
        a: *const f32,
        b: *const f32,
        c: *mut f32,
        ldc: usize,
        beta: f32,
    ) {
        // SAFETY: the caller upholds the pointer conditions; `for_level` checked the features.
        unsafe { (self.micro)(kc, a, b, c, ldc, beta) }
    }

    /// `Σ a[i]·b[i]` over `min(a.len(), b.len())` elements, in this level's fixed order.
    #[inline]
    pub fn dot(&self, a: &[f32], b: &[f32]) -> f32 {
        let n = a.len().min(b.len());
        // SAFETY: slices are valid; `for_level` checked the CPU features.
        unsafe { (self.dot)(&a[..n], &b[..n]) }
    }

    /// `y[i] += alpha·x[i]` over `min(x.len(), y.len())` elements.
    #[inline]
    pub fn axpy(&self, alpha: f32, x: &[f32], y: &mut [f32]) {
        let n = x.len().min(y.len());
        // SAFETY: slices are valid; `for_level` checked the CPU features.
        unsafe { (self.axpy)(alpha, &x[..n], &mut y[..n]) }
    }
}

/// Raw bf16-pair microkernel: as `MicroKernel`, over `kc2` packed pairs (see `avx512_bf16`).
///
/// # Safety
/// `a` must be valid for `kc2·MR` reads, `b` for `kc2·NR` reads, `c` as for `MicroKernel`; the
/// CPU must have the kernel's features.
pub(crate) type PairKernel =
    unsafe fn(kc2: usize, a: *const u32, b: *const u32, c: *mut f32, ldc: usize, beta: f32);

/// A microkernel that takes bf16 pairs (two bf16 of consecutive `k` per `u32`, the even one low)
/// and accumulates in f32, with the register tile of the `Kernels` it runs beside (the AVX-512
/// kernel defines its `MR`/`NR` as the AVX-512 level's). Only
/// `Bf16Kernel::for_level` makes one, and only when the CPU has its features.
pub(crate) struct Bf16Kernel {
    micro: PairKernel,
    /// Rows `0..rows` of the tile (`RowsKernel` on pairs).
    micro_rows: unsafe fn(usize, usize, *const u32, *const u32, *mut f32, usize, f32),
}

#[cfg(target_arch = "x86_64")]
static AVX512_BF16: Bf16Kernel = Bf16Kernel {
    micro: avx512_bf16::micro,
    micro_rows: avx512_bf16::micro_rows,
};

impl Bf16Kernel {
    /// The bf16 kernel that runs beside the kernels of `level`, if this CPU has one (AVX-512 BF16
    /// at the AVX-512 level); `None` means bf16 compute falls back to rounded f32 panels.
    pub fn for_level(level: SimdLevel) -> Option<&'static Bf16Kernel> {
        if !available_levels().contains(&level) || !crate::cpu::has_bf16_dot() {
            return None;
        }
        match level {
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx512 => Some(&AVX512_BF16),
            _ => None,
        }
    }

    /// Runs the pair microkernel on one full tile.
    ///
    /// # Safety
    /// As `PairKernel`, minus the CPU-feature condition (guaranteed by construction).
    #[inline]
    pub unsafe fn micro(
        &self,
        kc2: usize,
        a: *const u32,
        b: *const u32,
        c: *mut f32,
        ldc: usize,
        beta: f32,
    ) {
        // SAFETY: the caller upholds the pointer conditions; `for_level` checked the features.
        unsafe { (self.micro)(kc2, a, b, c, ldc, beta) }
    }

    /// Runs the pair microkernel on rows `0..rows` of a tile.
    ///
    /// # Safety
    /// As `PairKernel` with `c` valid for rows `0..rows`, minus the CPU-feature condition.
    #[allow(clippy::too_many_arguments)] // the microkernel's arguments plus the row count
    #[inline]
    pub unsafe fn micro_rows(
        &self,
        rows: usize,
        kc2: usize,
        a: *const u32,
        b: *const u32,
        c: *mut f32,
        ldc: usize,
        beta: f32,
    ) {
        // SAFETY: as `micro`.
        unsafe { (self.micro_rows)(rows, kc2, a, b, c, ldc, beta) }
    }
}

impl Kernels {
    /// `transpose` on 32-bit patterns (bf16 pairs): the transposes only move values, never
    /// compute with them, so any bit pattern goes through unchanged.
    ///
    /// # Panics
    /// As `transpose`.
    #[inline]
    pub fn transpose_bits(
        &self,
        src: &[u32],
        ld: usize,
        rows: usize,
        kc: usize,
        dst: &mut [u32],
        width: usize,
    ) {
        self.transpose(
            super::bf16::as_f32(src),
            ld,
            rows,
            kc,
            super::bf16::as_f32_mut(dst),
            width,
        )
    }

    /// Transposing copy used by packing: `dst[p·width + r] = src[r·ld + p]` for `r < rows`,
    /// `p < kc` (rows of a row-major source become the lanes of a panel).
    ///
    /// # Panics
    /// If the slices are too short or `rows > width` (a packing bug, never input-dependent).
    #[inline]
    pub fn transpose(
        &self,
        src: &[f32],
        ld: usize,
        rows: usize,
        kc: usize,
        dst: &mut [f32],
        width: usize,
    ) {
        if rows == 0 || kc == 0 {
            return;
        }
        assert!(
            rows <= width
                && src.len() >= (rows - 1) * ld + kc
                && dst.len() >= (kc - 1) * width + rows,
            "transpose: rows {rows} ld {ld} kc {kc} width {width}, src {} dst {}",
            src.len(),
            dst.len()
        );
        // SAFETY: lengths checked above; `for_level` checked the CPU features.
        unsafe { (self.transpose)(src, ld, rows, kc, dst, width) }
    }
}

/// Merges a tile computed with `beta = 0` into C with the same arithmetic the kernels use.
#[inline]
pub(crate) fn merge(c: &mut f32, acc: f32, beta: f32) {
    *c = if beta == 0.0 {
        acc
    } else if beta == 1.0 {
        *c + acc
    } else {
        beta * *c + acc
    };
}

#[cfg(test)]
mod tests {
    use super::*;

    fn data(n: usize, seed: u32) -> Vec<f32> {
        (0..n)
            .map(|i| ((i as u32).wrapping_mul(2654435761) ^ seed) as f32 / u32::MAX as f32 - 0.5)
            .collect()
    }

    fn levels() -> impl Iterator<Item = &'static Kernels> {
        available_levels()
            .iter()
            .map(|&l| Kernels::for_level(l).expect("available level"))
    }

    #[test]
    fn transpose_matches_scalar_exactly_at_every_level() {
        for k in levels() {
            for rows in 1..=33 {
                for kc in [1, 7, 8, 9, 17, 64] {
                    for width in [rows, rows + 3, 40] {
                        let ld = kc + 3;
                        // One float in, so the source is not 32-byte aligned.
                        let src = data(1 + rows * ld, 1);
                        let src = &src[1..];
                        let mut want = vec![-1.0; kc * width];
                        scalar::transpose(src, ld, rows, kc, &mut want, width);
                        let mut got = vec![-1.0; kc * width];
                        k.transpose(src, ld, rows, kc, &mut got, width);
                        assert_eq!(
                            got,
                            want,
                            "{:?} rows {rows} kc {kc} width {width}",
                            k.level()
                        );
                    }
                }
            }
        }
    }

    #[test]
    fn dot_and_axpy_match_scalar_at_every_level() {
        for k in levels() {
            for n in (0..70).chain([127, 128, 129, 1000]) {
                let (a, b) = (data(n + 1, 2), data(n + 1, 3));
                let (a, b) = (&a[1..], &b[1..]);
                let want = scalar::dot(a, b) as f64;
                let got = k.dot(a, b) as f64;
                let sum_abs: f64 = a.iter().zip(b).map(|(x, y)| (x * y).abs() as f64).sum();
                assert!(
                    (got - want).abs() <= 1e-6 * sum_abs + 1e-7,
                    "{:?} dot n {n}: {got} vs {want}",
                    k.level()
                );
                let mut want = data(n + 1, 4);
                let mut got = want.clone();
                scalar::axpy(0.37, a, &mut want[1..]);
                k.axpy(0.37, a, &mut got[1..]);
                for (i, (g, w)) in got.iter().zip(&want).enumerate() {
                    assert!(
                        (g - w).abs() <= 1e-6,
                        "{:?} axpy n {n} at {i}: {g} vs {w}",
                        k.level()
                    );
                }
            }
        }
    }

    #[test]
    fn row_kernels_equal_the_full_tile_bit_for_bit() {
        for k in levels() {
            let (mr, nr) = (k.mr, k.nr);
            for kc in [0, 1, 5, 64] {
                let a = data(kc * mr, 11);
                let b = data(kc * nr, 12);
                for beta in [0.0f32, 1.0, -0.5] {
                    let ldc = nr + 3;
                    let c0 = data(1 + mr * ldc, 13);
                    let mut full = c0.clone();
                    // SAFETY: `a`/`b` hold `kc·mr`/`kc·nr` floats; C has `mr` rows of `ldc >= nr`.
                    unsafe {
                        k.micro(
                            kc,
                            a.as_ptr(),
                            b.as_ptr(),
                            full[1..].as_mut_ptr(),
                            ldc,
                            beta,
                        )
                    };
                    for rows in 1..mr {
                        let mut c = c0.clone();
                        // SAFETY: as above, rows `0..rows` only.
                        let ran = unsafe {
                            k.micro_rows(
                                rows,
                                kc,
                                a.as_ptr(),
                                b.as_ptr(),
                                c[1..].as_mut_ptr(),
                                ldc,
                                beta,
                            )
                        };
                        if !ran {
                            break;
                        }
                        let split = 1 + rows * ldc;
                        assert_eq!(
                            c[..split],
                            full[..split],
                            "{:?} rows {rows} kc {kc}",
                            k.level()
                        );
                        assert_eq!(
                            c[split..],
                            c0[split..],
                            "{:?}: wrote below row {rows}",
                            k.level()
                        );
                    }
                }
            }
        }
        let Some((bk, level)) = available_levels()
            .iter()
            .find_map(|&l| Bf16Kernel::for_level(l).map(|b| (b, l)))
        else {
            return;
        };
        let k = Kernels::for_level(level).unwrap();
        let (mr, nr) = (k.mr, k.nr);
        let bits = |v: Vec<f32>| -> Vec<u32> {
            v.chunks_exact(2)
                .map(|p| {
                    super::super::bf16::bf16_bits(p[0]) | super::super::bf16::bf16_bits(p[1]) << 16
                })
                .collect()
        };
        for kc2 in [0, 3, 64] {
            let a = bits(data(2 * kc2 * mr, 14));
            let b = bits(data(2 * kc2 * nr, 15));
            let ldc = nr + 1;
            let c0 = data(mr * ldc, 16);
            let mut full = c0.clone();
            // SAFETY: `a`/`b` hold `kc2·mr`/`kc2·nr` pairs; C has `mr` rows of `ldc >= nr`.
            unsafe { bk.micro(kc2, a.as_ptr(), b.as_ptr(), full.as_mut_ptr(), ldc, 1.0) };
            for rows in 1..mr {
                let mut c = c0.clone();
                // SAFETY: as above, rows `0..rows` only.
                unsafe {
                    bk.micro_rows(rows, kc2, a.as_ptr(), b.as_ptr(), c.as_mut_ptr(), ldc, 1.0)
                };
                assert_eq!(c[..rows * ldc], full[..rows * ldc], "bf16 rows {rows}");
                assert_eq!(
                    c[rows * ldc..],
                    c0[rows * ldc..],
                    "bf16 wrote below row {rows}"
                );
            }
        }
    }

    /// The pair kernel's specification: `vdpbf16ps` adds the odd product, then the even one, to
    /// each accumulator (both products exact in f32).
    fn pair_sums(kc2: usize, a: &[u32], b: &[u32], mr: usize, nr: usize) -> Vec<f32> {
        let v = |x: u32| f32::from_bits(x << 16);
        let mut acc = vec![0f32; mr * nr];
        for q in 0..kc2 {
            for i in 0..mr {
                let ai = a[q * mr + i];
                for j in 0..nr {
                    let bj = b[q * nr + j];
                    let x = &mut acc[i * nr + j];
                    *x += v(ai >> 16) * v(bj >> 16);
                    *x += v(ai & 0xffff) * v(bj & 0xffff);
                }
            }
        }
        acc
    }

    #[test]
    fn bf16_pair_kernel_matches_its_specification() {
        let Some(bk) = available_levels()
            .iter()
            .find_map(|&l| Bf16Kernel::for_level(l).map(|b| (b, l)))
        else {
            eprintln!("no bf16 dot-product kernel on this CPU: nothing to test");
            return;
        };
        let (bk, level) = bk;
        let (mr, nr) = {
            let k = Kernels::for_level(level).unwrap();
            (k.mr, k.nr)
        };
        let pairs = |v: Vec<f32>| -> Vec<u32> {
            v.chunks_exact(2)
                .map(|p| {
                    super::super::bf16::bf16_bits(p[0]) | super::super::bf16::bf16_bits(p[1]) << 16
                })
                .collect()
        };
        for kc2 in [0, 1, 2, 7, 64, 128] {
            let a = pairs(data(2 * kc2 * mr, 5));
            let b = pairs(data(2 * kc2 * nr, 6));
            let want = pair_sums(kc2, &a, &b, mr, nr);
            for beta in [0.0f32, 1.0, -0.5] {
                // One float in, so C is not aligned; row stride larger than the tile.
                let ldc = nr + 3;
                let c0 = data(1 + mr * ldc, 7);
                let mut c = c0.clone();
                // SAFETY: `a`/`b` hold `kc2·mr`/`kc2·nr` pairs; C has `mr` rows of `ldc >= nr`.
                unsafe { bk.micro(kc2, a.as_ptr(), b.as_ptr(), c[1..].as_mut_ptr(), ldc, beta) };
                for i in 0..mr {
                    for j in 0..nr {
                        let mut w = c0[1 + i * ldc + j];
                        merge(&mut w, want[i * nr + j], beta);
                        let g = c[1 + i * ldc + j];
                        // Sums of up to 256 products of values in [-0.5, 0.5]: f32 reordering
                        // error only.
                        assert!(
                            (g - w).abs() <= 1e-6 * (2 * kc2 + 1) as f32,
                            "kc2 {kc2} beta {beta} at ({i}, {j}): {g} vs {w}"
                        );
                    }
                }
                let untouched = (0..mr).all(|i| {
                    c[1 + i * ldc + nr..1 + i * ldc + ldc]
                        == c0[1 + i * ldc + nr..1 + i * ldc + ldc]
                });
                assert!(untouched, "kernel wrote outside its tile");
            }
        }
    }
}
