//! Skinny products: GEMMs with `m` or `n` at most `SMALL` (LoRA's rank `r`), where the blocked
//! GEMM (`gemm.rs`) would pad the small side to its register tile (`NR` = 32 columns: 4x the
//! multiply-adds at r = 8), pack the large operand whole and dispatch to the pool twice.
//!
//! Two kernel forms cover every layout (`GemmOp`) and every small side without packing; at most a
//! small operand is transposed first:
//! - **dot** `out(i, j) = Σ_p x[i·lx + p] · y[j·ly + p]`: both operands contiguous along the
//!   reduction `p` (a `Nt` product with a small `m` or `n`; `Nn` with a small `n` after transposing
//!   the small `B`). A tile of `R x J` dot products shares its vector loads; each accumulates
//!   `LANES` partial sums (`p` by lane), reduced by a fixed halving tree, then adds the `p` tail one
//!   by one.
//! - **broadcast** `out(r, c) = Σ_p s[p·sp + r·sr] · v[p·lv + c]`: the long operand `v` contiguous
//!   along the long output index `c`, the small one broadcast (`Tn` with a small `n` or `m`; `Nn`
//!   with a small `m`; a small `k` beside a small `m` or `n`: any layout, `Nt` transposing `B`).
//!   A tile of `R` rows x two vectors of `c`, summed over `p` in order, one accumulator per
//!   element, as the GEMM microkernels do.
//!
//! Determinism: every output element is computed by one task with the same arithmetic whatever
//! the tile it falls in (edge tiles repeat a valid row and drop it; the column tail of the
//! broadcast form runs the same fused or unfused multiply-add one element at a time), so results
//! depend on the SIMD level only, never on the thread count or the split. `beta` is merged as in
//! `kernels::merge` (multiply, then add).
//!
//! bf16 compute (`Path::Rounded`/`Pairs`): the operands are rounded to bf16 (copies) and the f32
//! kernels accumulate their exact products in f32, the meaning of bf16 compute in `bf16.rs`.

use super::bf16;
use super::gemm::{ranges, Path, SharedC};
use super::kernels::{merge, Kernels};
use super::{GemmOp, Pool};
use crate::cpu::SimdLevel;
use crate::error::Result;
use std::borrow::Cow;

/// Largest small side routed here (LoRA ranks up to 16).
pub(crate) const SMALL: usize = 16;

/// Below this many multiply-adds a product runs on the calling thread.
const PARALLEL_MIN: usize = 1 << 15;

/// Tasks per thread: more tasks than threads, so a slow or busy core does not hold the others up
/// (as `gemm.rs`).
const TASKS_PER_THREAD: usize = 4;

/// Whether `[m, n, k]` is a skinny product (and not empty): `m` or `n` at most `SMALL`. A small
/// `k` alone stays with the blocked GEMM: its tile then wastes no lanes, and it measured
/// faster than the broadcast form on LoRA's `h·Bᵀ` and `g·A` (m = 256, k = 8; 1.5-3.6x).
pub(crate) fn fits([m, n, k]: [usize; 3]) -> bool {
    m > 0 && n > 0 && k > 0 && m.min(n) <= SMALL
}

/// One SIMD register type: the few operations the two kernel forms need. `fma` and `madd` round
/// the same way (both fused, or both multiply-then-add), so a vector lane and the scalar tail give
/// the same bits.
trait Lanes {
    const L: usize;
    type V: Copy;
    /// # Safety
    /// The CPU has the level's features (true for all methods: callers run under them).
    unsafe fn zero() -> Self::V;
    /// # Safety
    /// As `zero`.
    unsafe fn splat(x: f32) -> Self::V;
    /// # Safety
    /// `p` is valid for `L` reads; as `zero`.
    unsafe fn load(p: *const f32) -> Self::V;
    /// # Safety
    /// `p` is valid for `L` writes; as `zero`.
    unsafe fn store(p: *mut f32, v: Self::V);
    /// `a·b + acc` per lane.
    ///
    /// # Safety
    /// As `zero`.
    unsafe fn fma(a: Self::V, b: Self::V, acc: Self::V) -> Self::V;
    /// # Safety
    /// As `zero`.
    unsafe fn add(a: Self::V, b: Self::V) -> Self::V;
    /// # Safety
    /// As `zero`.
    unsafe fn mul(a: Self::V, b: Self::V) -> Self::V;
    /// The scalar `fma`.
    fn madd(a: f32, b: f32, acc: f32) -> f32;
    /// Sum of the lanes by a fixed halving tree.
    ///
    /// # Safety
    /// As `zero`.
    unsafe fn reduce(v: Self::V) -> f32;
}

/// Portable lanes: plain multiply then add (the scalar level's arithmetic).
struct Plain;

impl Lanes for Plain {
    const L: usize = 4;
    type V = [f32; 4];
    #[inline(always)]
    unsafe fn zero() -> [f32; 4] {
        [0.0; 4]
    }
    #[inline(always)]
    unsafe fn splat(x: f32) -> [f32; 4] {
        [x; 4]
    }
    #[inline(always)]
    unsafe fn load(p: *const f32) -> [f32; 4] {
        // SAFETY: the caller guarantees 4 readable floats at `p`.
        unsafe { p.cast::<[f32; 4]>().read_unaligned() }
    }
    #[inline(always)]
    unsafe fn store(p: *mut f32, v: [f32; 4]) {
        // SAFETY: the caller guarantees 4 writable floats at `p`.
        unsafe { p.cast::<[f32; 4]>().write_unaligned(v) }
    }
    #[inline(always)]
    unsafe fn fma(a: [f32; 4], b: [f32; 4], acc: [f32; 4]) -> [f32; 4] {
        std::array::from_fn(|l| a[l] * b[l] + acc[l])
    }
    #[inline(always)]
    unsafe fn add(a: [f32; 4], b: [f32; 4]) -> [f32; 4] {
        std::array::from_fn(|l| a[l] + b[l])
    }
    #[inline(always)]
    unsafe fn mul(a: [f32; 4], b: [f32; 4]) -> [f32; 4] {
        std::array::from_fn(|l| a[l] * b[l])
    }
    #[inline(always)]
    fn madd(a: f32, b: f32, acc: f32) -> f32 {
        a * b + acc
    }
    #[inline(always)]
    unsafe fn reduce(v: [f32; 4]) -> f32 {
        (v[0] + v[2]) + (v[1] + v[3])
    }
}

/// Defines a `Lanes` over one x86 or Arm register type from its intrinsics.
macro_rules! lanes {
    ($name:ident, $l:expr, $v:ty, $zero:expr, $splat:path, $load:path, $store:path,
     fma: |$fa:ident, $fb:ident, $fc:ident| $fma:expr, $add:path, $mul:path,
     reduce: |$rv:ident| $reduce:expr) => {
        struct $name;

        impl Lanes for $name {
            const L: usize = $l;
            type V = $v;
            #[inline(always)]
            unsafe fn zero() -> $v {
                // SAFETY: register-only; the caller guarantees the CPU features.
                unsafe { $zero }
            }
            #[inline(always)]
            unsafe fn splat(x: f32) -> $v {
                // SAFETY: register-only; the caller guarantees the CPU features.
                unsafe { $splat(x) }
            }
            #[inline(always)]
            unsafe fn load(p: *const f32) -> $v {
                // SAFETY: the caller guarantees `L` readable floats and the CPU features.
                unsafe { $load(p) }
            }
            #[inline(always)]
            unsafe fn store(p: *mut f32, v: $v) {
                // SAFETY: the caller guarantees `L` writable floats and the CPU features.
                unsafe { $store(p, v) }
            }
            #[inline(always)]
            unsafe fn fma($fa: $v, $fb: $v, $fc: $v) -> $v {
                // SAFETY: register-only; the caller guarantees the CPU features.
                unsafe { $fma }
            }
            #[inline(always)]
            unsafe fn add(a: $v, b: $v) -> $v {
                // SAFETY: register-only; the caller guarantees the CPU features.
                unsafe { $add(a, b) }
            }
            #[inline(always)]
            unsafe fn mul(a: $v, b: $v) -> $v {
                // SAFETY: register-only; the caller guarantees the CPU features.
                unsafe { $mul(a, b) }
            }
            #[inline(always)]
            fn madd(a: f32, b: f32, acc: f32) -> f32 {
                a.mul_add(b, acc)
            }
            #[inline(always)]
            unsafe fn reduce($rv: $v) -> f32 {
                // SAFETY: register-only; the caller guarantees the CPU features.
                unsafe { $reduce }
            }
        }
    };
}

#[cfg(target_arch = "x86_64")]
use std::arch::x86_64::*;

/// Halving tree over the 4 lanes of an SSE register: `(v0 + v2) + (v1 + v3)`.
///
/// # Safety
/// Register-only (SSE, always present on x86_64).
#[cfg(target_arch = "x86_64")]
#[inline(always)]
unsafe fn reduce128(v: __m128) -> f32 {
    // SAFETY: SSE is baseline on x86_64.
    unsafe {
        let s = _mm_add_ps(v, _mm_movehl_ps(v, v));
        _mm_cvtss_f32(_mm_add_ss(s, _mm_shuffle_ps::<1>(s, s)))
    }
}

#[cfg(target_arch = "x86_64")]
lanes!(Avx2, 8, __m256, _mm256_setzero_ps(), _mm256_set1_ps, _mm256_loadu_ps, _mm256_storeu_ps,
    fma: |a, b, c| _mm256_fmadd_ps(a, b, c), _mm256_add_ps, _mm256_mul_ps,
    reduce: |v| reduce128(_mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps::<1>(v))));

#[cfg(target_arch = "x86_64")]
lanes!(Avx512, 16, __m512, _mm512_setzero_ps(), _mm512_set1_ps, _mm512_loadu_ps, _mm512_storeu_ps,
fma: |a, b, c| _mm512_fmadd_ps(a, b, c), _mm512_add_ps, _mm512_mul_ps,
reduce: |v| {
    let h = _mm256_add_ps(_mm512_castps512_ps256(v), _mm256_castpd_ps(_mm512_extractf64x4_pd::<1>(_mm512_castps_pd(v))));
    reduce128(_mm_add_ps(_mm256_castps256_ps128(h), _mm256_extractf128_ps::<1>(h)))
});

#[cfg(target_arch = "aarch64")]
use std::arch::aarch64::*;

#[cfg(target_arch = "aarch64")]
lanes!(Neon, 4, float32x4_t, vdupq_n_f32(0.0), vdupq_n_f32, vld1q_f32, vst1q_f32,
fma: |a, b, c| vfmaq_f32(c, a, b), vaddq_f32, vmulq_f32,
reduce: |v| {
    let h = vadd_f32(vget_low_f32(v), vget_high_f32(v));
    vget_lane_f32::<0>(h) + vget_lane_f32::<1>(h)
});

/// A dot-form product: `out[i·rs + j·cs] = beta·out + Σ_p x[i·lx + p]·y[j·ly + p]` for `i` in
/// `0..ni`, `j` in `0..nj`.
struct DotJob<'a> {
    x: &'a [f32],
    lx: usize,
    y: &'a [f32],
    ly: usize,
    k: usize,
    out: SharedC,
    rs: usize,
    cs: usize,
    beta: f32,
}

/// A broadcast-form product: `out[r·rs + c·cs] = beta·out + Σ_p s[p·sp + r·sr]·v[p·lv + c]`.
struct BcastJob<'a> {
    s: &'a [f32],
    sp: usize,
    sr: usize,
    v: &'a [f32],
    lv: usize,
    k: usize,
    out: SharedC,
    rs: usize,
    cs: usize,
    beta: f32,
}

/// The part of the output one task computes: rows `r0..r1`, columns `c0..c1` (for a dot job, rows
/// index `x` and columns `y`).
#[derive(Clone, Copy, Debug)]
struct Rect {
    r0: usize,
    r1: usize,
    c0: usize,
    c1: usize,
}

/// Vectors of `c` per broadcast tile.
const NV: usize = 2;

/// `R x J` dot products of full length `k`: vector partial sums, the halving tree, the tail.
///
/// # Safety
/// Every `x[r]` and `y[j]` is valid for `k` reads; the CPU has `S`'s features.
#[inline(always)]
unsafe fn dot_tile<S: Lanes, const R: usize, const J: usize>(
    x: [*const f32; R],
    y: [*const f32; J],
    k: usize,
) -> [[f32; J]; R] {
    // SAFETY: every read is at `p < k` of a row the caller guarantees.
    unsafe {
        let mut acc = [[S::zero(); J]; R];
        let body = k / S::L * S::L;
        let mut p = 0;
        while p < body {
            let mut yv = [S::zero(); J];
            for (v, yj) in yv.iter_mut().zip(&y) {
                *v = S::load(yj.add(p));
            }
            for (row, xr) in acc.iter_mut().zip(&x) {
                let xv = S::load(xr.add(p));
                for (a, &v) in row.iter_mut().zip(&yv) {
                    *a = S::fma(xv, v, *a);
                }
            }
            p += S::L;
        }
        let mut out = [[0f32; J]; R];
        for r in 0..R {
            for j in 0..J {
                let mut s = S::reduce(acc[r][j]);
                for q in body..k {
                    s = S::madd(*x[r].add(q), *y[j].add(q), s);
                }
                out[r][j] = s;
            }
        }
        out
    }
}

/// Runs the dot job over `t` in `R x J` tiles; edge tiles repeat their last valid row or column.
///
/// # Safety
/// The job's slices cover every row it names and `out` every element of `t`, written by no other
/// task; the CPU has `S`'s features.
#[inline(always)]
unsafe fn dot_task<S: Lanes, const R: usize, const J: usize>(job: &DotJob, t: Rect) {
    let (xp, yp) = (job.x.as_ptr(), job.y.as_ptr());
    for i0 in (t.r0..t.r1).step_by(R) {
        let ni = R.min(t.r1 - i0);
        let mut x = [xp; R];
        for (r, xr) in x.iter_mut().enumerate() {
            // SAFETY: row `i0 + min(r, ni-1) < t.r1` of x is in the slice (caller).
            *xr = unsafe { xp.add((i0 + r.min(ni - 1)) * job.lx) };
        }
        for j0 in (t.c0..t.c1).step_by(J) {
            let nj = J.min(t.c1 - j0);
            let mut y = [yp; J];
            for (j, yj) in y.iter_mut().enumerate() {
                // SAFETY: as for x.
                *yj = unsafe { yp.add((j0 + j.min(nj - 1)) * job.ly) };
            }
            // SAFETY: rows valid for `k` reads (caller); features (caller).
            let sums = unsafe { dot_tile::<S, R, J>(x, y, job.k) };
            for (r, row) in sums.iter().enumerate().take(ni) {
                for (j, &acc) in row.iter().enumerate().take(nj) {
                    // SAFETY: `(i0 + r, j0 + j)` lies in `t`, this task's part of `out`.
                    let o =
                        unsafe { &mut *job.out.ptr().add((i0 + r) * job.rs + (j0 + j) * job.cs) };
                    merge(o, acc, job.beta);
                }
            }
        }
    }
}

/// Merges one vector of sums into `L` consecutive outputs.
///
/// # Safety
/// `o` is valid for `L` contiguous reads and writes (reads only if `beta != 0`); features.
#[inline(always)]
unsafe fn merge_run<S: Lanes>(o: *mut f32, acc: S::V, beta: f32) {
    // SAFETY: forwarded from the caller.
    unsafe {
        let v = if beta == 0.0 {
            acc
        } else if beta == 1.0 {
            S::add(S::load(o), acc)
        } else {
            S::add(S::mul(S::splat(beta), S::load(o)), acc)
        };
        S::store(o, v)
    }
}

/// One broadcast tile: rows `r0..r0+nr` (`nr <= R`; the last row repeats to fill `R`), columns
/// `c..c + NV·L`, summed over `p` in order, merged into the output.
///
/// # Safety
/// As `bcast_task`; the tile lies in the task's rectangle.
#[inline(always)]
unsafe fn bcast_tile<S: Lanes, const R: usize>(job: &BcastJob, r0: usize, nr: usize, c: usize) {
    let (sp, out) = (job.s.as_ptr(), job.out.ptr());
    let mut s = [sp; R];
    for (r, sr) in s.iter_mut().enumerate() {
        // SAFETY: row `r0 + min(r, nr-1)` of s is in the slice (caller).
        *sr = unsafe { sp.add((r0 + r.min(nr - 1)) * job.sr) };
    }
    // SAFETY: reads of s at `p·sp` and of v at `p·lv + c..c + NV·L` for `p < k` are in the slices
    // (caller: the tile's columns are below the rectangle's end); features (caller).
    unsafe {
        let mut acc = [[S::zero(); NV]; R];
        let mut v = job.v.as_ptr().add(c);
        for p in 0..job.k {
            let vv = [S::load(v), S::load(v.add(S::L))];
            for (row, sr) in acc.iter_mut().zip(&s) {
                let b = S::splat(*sr.add(p * job.sp));
                for (a, &x) in row.iter_mut().zip(&vv) {
                    *a = S::fma(b, x, *a);
                }
            }
            v = v.add(job.lv);
        }
        for (r, row) in acc.iter().enumerate().take(nr) {
            let o = out.add((r0 + r) * job.rs + c * job.cs);
            if job.cs == 1 {
                for (q, &a) in row.iter().enumerate() {
                    merge_run::<S>(o.add(q * S::L), a, job.beta);
                }
            } else {
                let mut tmp = [0f32; 64];
                for (q, &a) in row.iter().enumerate() {
                    S::store(tmp.as_mut_ptr().add(q * S::L), a);
                }
                for (e, &x) in tmp[..NV * S::L].iter().enumerate() {
                    merge(&mut *o.add(e * job.cs), x, job.beta);
                }
            }
        }
    }
}

/// Runs the broadcast job over `t` in `R`-row by `NV·L`-column tiles; the columns left over one
/// element at a time with the same multiply-add. A short sum (`k <= SMALL`) walks tiles along
/// the rows of the output (its rows of `s` stay in registers' reach, `v` in L1); a long one
/// along the columns (each `k x NV·L` strip of `v` serves every row).
///
/// # Safety
/// As `dot_task`, for the broadcast job's slices.
#[inline(always)]
unsafe fn bcast_task<S: Lanes, const R: usize>(job: &BcastJob, t: Rect) {
    let w = NV * S::L;
    let c_end = t.c0 + (t.c1 - t.c0) / w * w;
    if job.k <= SMALL {
        for r0 in (t.r0..t.r1).step_by(R) {
            for c in (t.c0..c_end).step_by(w) {
                // SAFETY: the tile lies in `t` (rows below t.r1, columns below c_end <= t.c1);
                // the rest is the caller's.
                unsafe { bcast_tile::<S, R>(job, r0, R.min(t.r1 - r0), c) };
            }
        }
    } else {
        for c in (t.c0..c_end).step_by(w) {
            for r0 in (t.r0..t.r1).step_by(R) {
                // SAFETY: as above.
                unsafe { bcast_tile::<S, R>(job, r0, R.min(t.r1 - r0), c) };
            }
        }
    }
    let out = job.out.ptr();
    for r in t.r0..t.r1 {
        for e in c_end..t.c1 {
            let mut acc = 0f32;
            for p in 0..job.k {
                acc = S::madd(job.s[p * job.sp + r * job.sr], job.v[p * job.lv + e], acc);
            }
            // SAFETY: `(r, e)` lies in `t`, this task's part of `out`.
            merge(
                unsafe { &mut *out.add(r * job.rs + e * job.cs) },
                acc,
                job.beta,
            );
        }
    }
}

/// The widest `NV·L` (the transposed-merge buffer of `bcast_task`).
const _: () = assert!(NV * 16 <= 64);

/// One level's task functions.
struct Funcs {
    dot: unsafe fn(&DotJob, Rect),
    bcast: unsafe fn(&BcastJob, Rect),
}

/// Defines a level's task functions (compiled with its features, if any) and their table.
macro_rules! level_funcs {
    ($table:ident, $lanes:ty, [$(#[$attr:meta])*], dot: $dr:literal x $dj:literal, bcast: $br:literal) => {
        static $table: Funcs = {
            /// # Safety
            /// As `dot_task`; the CPU has the features.
            $(#[$attr])*
            unsafe fn dot(job: &DotJob, t: Rect) {
                // SAFETY: forwarded from the caller.
                unsafe { dot_task::<$lanes, $dr, $dj>(job, t) }
            }
            /// # Safety
            /// As `bcast_task`; the CPU has the features.
            $(#[$attr])*
            unsafe fn bcast(job: &BcastJob, t: Rect) {
                // SAFETY: forwarded from the caller.
                unsafe { bcast_task::<$lanes, $br>(job, t) }
            }
            Funcs { dot, bcast }
        };
    };
}

// Tiles: dot `R x J` vector accumulators plus `R + J` loads per step, broadcast `R x NV`
// accumulators, within each level's registers (16 for AVX2, 32 for AVX-512 and NEON).
level_funcs!(PLAIN, Plain, [], dot: 2 x 2, bcast: 4);
#[cfg(target_arch = "x86_64")]
level_funcs!(AVX2, Avx2, [#[target_feature(enable = "avx2,fma")]], dot: 2 x 4, bcast: 6);
#[cfg(target_arch = "x86_64")]
level_funcs!(AVX512, Avx512, [#[target_feature(enable = "avx512f,avx2,fma")]], dot: 4 x 4, bcast: 8);
#[cfg(target_arch = "aarch64")]
level_funcs!(NEON, Neon, [], dot: 4 x 4, bcast: 8);

fn funcs(level: SimdLevel) -> &'static Funcs {
    match level {
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx2 => &AVX2,
        #[cfg(target_arch = "x86_64")]
        SimdLevel::Avx512 => &AVX512,
        #[cfg(target_arch = "aarch64")]
        SimdLevel::Neon => &NEON,
        _ => &PLAIN,
    }
}

/// Which kernel form a product runs as, with the operands it reads.
enum Form<'a> {
    Dot(DotJob<'a>),
    Bcast(BcastJob<'a>),
}

/// `src [rows, cols]` transposed into a new `[cols, rows]`.
fn transposed(kern: &Kernels, src: &[f32], rows: usize, cols: usize) -> Vec<f32> {
    let mut t = vec![0f32; rows * cols];
    kern.transpose(src, cols, rows, cols, &mut t, rows);
    t
}

/// `v` as the products read it: rounded to bf16 (a copy) when `path` computes in bf16.
fn rounded<'a>(kern: &Kernels, path: Path, v: &'a [f32]) -> Cow<'a, [f32]> {
    if path.is_bf16() {
        let mut r = v.to_vec();
        bf16::round_in_place(kern.level(), &mut r);
        Cow::Owned(r)
    } else {
        Cow::Borrowed(v)
    }
}

/// The skinny product `c[m, n] = beta·c + op(a)·op(b)` (slice lengths checked by the caller,
/// `fits([m, n, k])`), on `pool` with the kernels of `kern`'s level.
#[allow(clippy::too_many_arguments)] // `CpuBackend::gemm`'s arguments plus the backend's parts
pub(crate) fn gemm(
    pool: &Pool,
    kern: &Kernels,
    path: Path,
    op: GemmOp,
    a: &[f32],
    b: &[f32],
    c: &mut [f32],
    [m, n, k]: [usize; 3],
    beta: f32,
) -> Result<()> {
    debug_assert!(fits([m, n, k]));
    let (a, b) = (rounded(kern, path, a), rounded(kern, path, b));
    let (a, b): (&[f32], &[f32]) = (&a, &b);
    let out = SharedC::new(c);
    // The small operand transposed, when a form needs it (`r x long`: a few KiB).
    let bt: Vec<f32>;
    // The form, how many rows and columns it has, and whether tasks split rows (else columns).
    let (form, rows, cols, split_rows) = if k <= SMALL {
        // Rows of C broadcast from A, columns of C streamed from B's rows.
        let (sp, sr) = match op {
            GemmOp::Nt | GemmOp::Nn => (1, k),
            GemmOp::Tn => (m, 1),
        };
        let v = match op {
            GemmOp::Nt => {
                bt = transposed(kern, b, n, k);
                &bt[..]
            }
            GemmOp::Nn | GemmOp::Tn => b,
        };
        let job = BcastJob {
            s: a,
            sp,
            sr,
            v,
            lv: n,
            k,
            out,
            rs: n,
            cs: 1,
            beta,
        };
        (Form::Bcast(job), m, n, true)
    } else if n <= SMALL {
        match op {
            GemmOp::Nt => {
                let job = DotJob {
                    x: a,
                    lx: k,
                    y: b,
                    ly: k,
                    k,
                    out,
                    rs: n,
                    cs: 1,
                    beta,
                };
                (Form::Dot(job), m, n, true)
            }
            GemmOp::Nn => {
                bt = transposed(kern, b, k, n);
                let job = DotJob {
                    x: a,
                    lx: k,
                    y: &bt,
                    ly: k,
                    k,
                    out,
                    rs: n,
                    cs: 1,
                    beta,
                };
                (Form::Dot(job), m, n, true)
            }
            // Rows of the job are C's columns (from B), its columns C's rows (from A's columns).
            GemmOp::Tn => {
                let job = BcastJob {
                    s: b,
                    sp: n,
                    sr: 1,
                    v: a,
                    lv: m,
                    k,
                    out,
                    rs: 1,
                    cs: n,
                    beta,
                };
                (Form::Bcast(job), n, m, false)
            }
        }
    } else {
        // m <= SMALL: few rows of C, long ones.
        match op {
            GemmOp::Nt => {
                let job = DotJob {
                    x: a,
                    lx: k,
                    y: b,
                    ly: k,
                    k,
                    out,
                    rs: n,
                    cs: 1,
                    beta,
                };
                (Form::Dot(job), m, n, false)
            }
            GemmOp::Nn | GemmOp::Tn => {
                let (sp, sr) = if op == GemmOp::Nn { (1, k) } else { (m, 1) };
                let job = BcastJob {
                    s: a,
                    sp,
                    sr,
                    v: b,
                    lv: n,
                    k,
                    out,
                    rs: n,
                    cs: 1,
                    beta,
                };
                (Form::Bcast(job), m, n, false)
            }
        }
    };
    let threads = pool.threads();
    let parts = if threads > 1 && m * n * k >= PARALLEL_MIN {
        threads * TASKS_PER_THREAD
    } else {
        1
    };
    // Cuts on multiples of a few tiles (a tidy split; any split gives the same bits).
    let rects: Vec<Rect> = if split_rows {
        ranges(rows, 8, parts)
            .map(|(r0, r1)| Rect {
                r0,
                r1,
                c0: 0,
                c1: cols,
            })
            .collect()
    } else {
        ranges(cols, 32, parts)
            .map(|(c0, c1)| Rect {
                r0: 0,
                r1: rows,
                c0,
                c1,
            })
            .filter(|t| t.c0 < t.c1)
            .collect()
    };
    let rects: Vec<Rect> = rects
        .into_iter()
        .filter(|t| t.r0 < t.r1 && t.c0 < t.c1)
        .collect();
    let f = funcs(kern.level());
    pool.run(rects.len(), |t| {
        match &form {
            // SAFETY: the jobs' slices cover every row and column they name (their sizes come
            // from `[m, n, k]`, which the caller checked against the slice lengths; transposes
            // are made to size), the rectangles are disjoint parts of C, and `funcs` gives the
            // level of `kern`, which the CPU runs.
            Form::Dot(job) => unsafe { (f.dot)(job, rects[t]) },
            // SAFETY: as above.
            Form::Bcast(job) => unsafe { (f.bcast)(job, rects[t]) },
        }
        Ok(())
    })
}
