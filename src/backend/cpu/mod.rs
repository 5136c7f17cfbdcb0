//! The CPU backend: packed, cache-blocked f32 GEMM with register-tiled SIMD microkernels
//! (scalar / AVX2+FMA / AVX-512 / NEON, chosen at run time), and linear layers over any weight
//! storage that dequantize L2-sized tiles of the weight into per-thread scratch on the way into
//! the GEMM, never a full copy of the weight (DESIGN.md decisions 2, 3, 9).
//!
//! Threads come from one `pool::Pool` per backend (the caller plus `threads − 1` workers that spin
//! briefly between calls, see `pool.rs`) whose size the caller sets. Every output element
//! is computed by one thread with a fixed summation order, so results are deterministic; for the
//! GEMMs they do not even depend on the thread count (see `gemm.rs`).
//!
//! Files: `kernels/` (microkernels, dot, axpy per level), `pack.rs` (panel layouts), `gemm.rs`
//! (blocking and threading), `skinny.rs` (products with `m` or `n` at most 16, LoRA's rank:
//! `CpuBackend::gemm` routes them there), `pool.rs` (the threads), `weight.rs`
//! (decoding ranges of weight rows),
//! `linear.rs` (linear forward/backward and the matrix-vector path), `bf16.rs` (bf16 compute:
//! rounding and pair packing).
//!
//! `Compute::Bf16` rounds the inputs of every product to bf16 while they are packed and
//! accumulates in f32: with the AVX-512 BF16 kernel where the CPU has one (pair panels, half the
//! bytes, `vdpbf16ps`), elsewhere by rounding f32 panels and running the f32 kernels (the same
//! inputs, no speed-up). Either way deterministic, as the f32 path.

#![deny(unsafe_op_in_unsafe_fn)]

mod bf16;
#[cfg(target_arch = "x86_64")]
mod bf16_x86;
mod gemm;
mod kernels;
mod linear;
mod pack;
mod pool;
mod skinny;
mod weight;

pub use bf16::round_bf16;

use super::{Backend, Compute, LinearWeight};
use crate::cpu::SimdLevel;
use crate::error::{Error, Result};
use gemm::Path;
use kernels::{Bf16Kernel, Kernels};
use pack::Dense;
pub(crate) use pool::Pool;

/// Which operands of `C = beta·C + op(A)·op(B)` are stored transposed (see the `Backend` GEMMs).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum GemmOp {
    /// `a[m, k]`, `b[n, k]`: `C = A·Bᵀ`.
    Nt,
    /// `a[m, k]`, `b[k, n]`: `C = A·B`.
    Nn,
    /// `a[k, m]`, `b[k, n]`: `C = Aᵀ·B`.
    Tn,
}

/// The CPU implementation of `Backend`.
pub struct CpuBackend {
    pool: Pool,
    kernels: &'static Kernels,
    compute: Compute,
    path: Path,
}

impl CpuBackend {
    /// A backend with `threads` worker threads at the best SIMD level (`crate::cpu::simd_level()`).
    pub fn new(threads: usize) -> Result<CpuBackend> {
        CpuBackend::with_level(threads, crate::cpu::simd_level())
    }

    /// A backend forced to one SIMD level (tests compare every level against `Scalar`).
    pub fn with_level(threads: usize, level: SimdLevel) -> Result<CpuBackend> {
        let kernels = Kernels::for_level(level).ok_or_else(|| {
            Error::Unsupported(format!(
                "SIMD level {} on this CPU (available: {:?})",
                level.name(),
                crate::cpu::available_levels()
            ))
        })?;
        Ok(CpuBackend {
            pool: Pool::new(threads)?,
            kernels,
            compute: Compute::F32,
            path: Path::F32,
        })
    }

    /// This backend computing products with `compute` inputs. Every CPU can run bf16: with the
    /// bf16 dot-product kernel where `crate::cpu::has_bf16_dot()` (and the level is AVX-512),
    /// else by rounding and the f32 kernels.
    pub fn with_compute(self, compute: Compute) -> CpuBackend {
        let path = match compute {
            Compute::F32 => Path::F32,
            Compute::Bf16 => match Bf16Kernel::for_level(self.level()) {
                Some(k) => Path::Pairs(k),
                None => Path::Rounded,
            },
        };
        CpuBackend {
            compute,
            path,
            ..self
        }
    }

    /// Whether bf16 compute runs on a bf16 dot-product kernel (false: f32 compute, or bf16 by
    /// rounding into the f32 kernels).
    pub fn bf16_kernel(&self) -> bool {
        matches!(self.path, Path::Pairs(_))
    }

    /// The SIMD level this backend's kernels use.
    pub fn level(&self) -> SimdLevel {
        self.kernels.level()
    }

    /// The register tile `(MR, NR)` of this backend's GEMM microkernel.
    pub fn tile(&self) -> (usize, usize) {
        (self.kernels.mr, self.kernels.nr)
    }

    /// Upper bound of the scratch memory (bytes) this backend keeps for products with at most
    /// `m` rows and depth `k` (for linear layers: `k = max(n_in, n_out)`), for the memory
    /// planner. The packed A copy lives on the calling thread; each worker keeps one packed B
    /// block and its decode buffers. The buffers are kept between calls (per thread) and grow
    /// to the largest call seen.
    pub fn scratch_bytes(&self, m: usize, k: usize) -> usize {
        let (mr, nr) = self.tile();
        let a_pack = m.div_ceil(mr) * mr * k;
        let per_thread =
            (gemm::KC * gemm::NC).max(k) + linear::decode_floats(nr) + 2 * pack::ALIGN_FLOATS;
        4 * (a_pack + pack::ALIGN_FLOATS + self.threads() * per_thread)
    }

    /// Checked dense GEMM: `c[m, n] = beta·c + op(a)·op(b)` with the layouts of `op`, sizes
    /// `[m, n, k]`. Errors if a slice does not have exactly the length its sizes give.
    pub fn gemm(
        &self,
        op: GemmOp,
        a: &[f32],
        b: &[f32],
        c: &mut [f32],
        [m, n, k]: [usize; 3],
        beta: f32,
    ) -> Result<()> {
        let check = |what: &str, len: usize, rows: usize, cols: usize| {
            if rows.checked_mul(cols) == Some(len) {
                Ok(())
            } else {
                Err(Error::InvalidArgument(format!(
                    "gemm {op:?} (m={m}, n={n}, k={k}): {what} has {len} elements, expected {rows}x{cols}"
                )))
            }
        };
        check("a", a.len(), m, k)?;
        check("b", b.len(), n, k)?;
        check("c", c.len(), m, n)?;
        if skinny::fits([m, n, k]) {
            return skinny::gemm(
                &self.pool,
                self.kernels,
                self.path,
                op,
                a,
                b,
                c,
                [m, n, k],
                beta,
            );
        }
        let (av, bv) = match op {
            GemmOp::Nt => (Dense::row_major(a, k), Dense::transposed(b, k)),
            GemmOp::Nn => (Dense::row_major(a, k), Dense::row_major(b, n)),
            GemmOp::Tn => (Dense::transposed(a, m), Dense::row_major(b, n)),
        };
        let g = gemm::Gemm {
            m,
            n,
            k,
            a: av,
            b: &bv,
            beta,
            path: self.path,
        };
        gemm::gemm(&self.pool, self.kernels, &g, c)
    }

    fn gemm_or_panic(
        &self,
        op: GemmOp,
        a: &[f32],
        b: &[f32],
        c: &mut [f32],
        mnk: [usize; 3],
        beta: f32,
    ) {
        // The trait's GEMMs return nothing: a length mismatch is a caller bug, like an index out
        // of bounds. Callers that take sizes from input use `CpuBackend::gemm`.
        if let Err(e) = self.gemm(op, a, b, c, mnk, beta) {
            panic!("{e}");
        }
    }
}

impl Backend for CpuBackend {
    fn linear_forward(&self, x: &[f32], m: usize, w: &LinearWeight, y: &mut [f32]) -> Result<()> {
        linear::forward(&self.pool, self.kernels, self.path, x, m, w, y)
    }

    fn linear_backward_input(
        &self,
        dy: &[f32],
        m: usize,
        w: &LinearWeight,
        dx: &mut [f32],
    ) -> Result<()> {
        linear::backward_input(&self.pool, self.kernels, self.path, dy, m, w, dx)
    }

    /// Panics if a slice length does not match the sizes (use `CpuBackend::gemm` for an error).
    fn gemm_nt(
        &self,
        a: &[f32],
        b: &[f32],
        c: &mut [f32],
        m: usize,
        n: usize,
        k: usize,
        beta: f32,
    ) {
        self.gemm_or_panic(GemmOp::Nt, a, b, c, [m, n, k], beta)
    }

    /// Panics if a slice length does not match the sizes (use `CpuBackend::gemm` for an error).
    fn gemm_nn(
        &self,
        a: &[f32],
        b: &[f32],
        c: &mut [f32],
        m: usize,
        n: usize,
        k: usize,
        beta: f32,
    ) {
        self.gemm_or_panic(GemmOp::Nn, a, b, c, [m, n, k], beta)
    }

    /// Panics if a slice length does not match the sizes (use `CpuBackend::gemm` for an error).
    fn gemm_tn(
        &self,
        a: &[f32],
        b: &[f32],
        c: &mut [f32],
        m: usize,
        n: usize,
        k: usize,
        beta: f32,
    ) {
        self.gemm_or_panic(GemmOp::Tn, a, b, c, [m, n, k], beta)
    }

    fn threads(&self) -> usize {
        self.pool.threads()
    }

    fn compute(&self) -> Compute {
        self.compute
    }

    fn parallel_for(&self, n_tasks: usize, f: &(dyn Fn(usize) -> Result<()> + Sync)) -> Result<()> {
        self.pool.run(n_tasks, f)
    }
}
