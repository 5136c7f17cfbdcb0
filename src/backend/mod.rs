//! The backend seam (DESIGN.md decision 9): the heavy operations the model and the adapters call.
//! The CPU backend (`cpu`) is primary and works everywhere; an optional GPU backend can implement the
//! same trait later without touching the model or the adapters.
//!
//! Layout conventions: activations are row-major `[rows, cols]` f32 slices. A weight `W` is a
//! logical weight of the model file with GGUF dims `ne = [n_in, n_out]`, i.e. row-major
//! `[n_out, n_in]` (PyTorch's `nn.Linear.weight` layout); row `o` holds the `n_in` inputs of output `o`.
//! The CPU implementation is `cpu::CpuBackend`.

use crate::error::{Error, Result};
use crate::weights::WeightData;

pub mod cpu;

/// The precision matrix products take their inputs in (`--compute`). Outputs, accumulation and
/// everything outside the products stay f32 either way.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Compute {
    /// f32 inputs: the default, and what the parity tests measure.
    #[default]
    F32,
    /// Inputs of the linear layers and GEMMs rounded to bf16 (round-to-nearest-even, as
    /// PyTorch's `.to(torch.bfloat16)`), products accumulated in f32: QLoRA's compute dtype.
    Bf16,
}

impl Compute {
    pub fn name(self) -> &'static str {
        match self {
            Compute::F32 => "f32",
            Compute::Bf16 => "bf16",
        }
    }
}

impl std::fmt::Display for Compute {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.pad(self.name())
    }
}

impl std::str::FromStr for Compute {
    type Err = Error;

    fn from_str(s: &str) -> Result<Compute> {
        match s.trim().to_ascii_lowercase().as_str() {
            "f32" => Ok(Compute::F32),
            "bf16" => Ok(Compute::Bf16),
            _ => Err(Error::InvalidArgument(format!(
                "compute precision '{s}': expected f32 or bf16"
            ))),
        }
    }
}

/// A weight as the backend sees it: a zero-copy view plus its logical shape.
pub struct LinearWeight<'a> {
    pub data: WeightData<'a>,
    /// Inputs per output (GGUF `ne[0]`).
    pub n_in: usize,
    /// Outputs (GGUF `ne[1]`).
    pub n_out: usize,
}

impl LinearWeight<'_> {
    /// Decodes whole rows `row0..row0 + dst.len() / n_in` to f32 (consecutive rows are
    /// consecutive bytes in every storage, NF4 included: any element range decodes).
    pub fn decode_rows(&self, row0: usize, dst: &mut [f32]) -> Result<()> {
        let n_in = self.n_in.max(1);
        let rows = dst.len() / n_in;
        if rows * n_in != dst.len() || row0 + rows > self.n_out {
            return Err(crate::Error::InvalidArgument(format!(
                "decode_rows: {} values from row {row0} are not whole rows of a [{}, {}] weight",
                dst.len(),
                self.n_out,
                self.n_in
            )));
        }
        match &self.data {
            WeightData::Ggml { ty, bytes } => {
                let rb = ty.row_bytes(self.n_in as u64).ok_or_else(|| {
                    crate::Error::InvalidArgument(format!(
                        "decode_rows: n_in {} is not a multiple of the {ty} block size",
                        self.n_in
                    ))
                })? as usize;
                let src = bytes.get(row0 * rb..(row0 + rows) * rb).ok_or_else(|| {
                    crate::Error::InvalidArgument(format!(
                        "decode_rows: rows {row0}..{} are past the {} bytes of the {ty} weight",
                        row0 + rows,
                        bytes.len()
                    ))
                })?;
                crate::quant::dequantize(*ty, src, dst)
            }
            WeightData::Nf4(view) => view.dequantize_range(row0 * self.n_in, dst),
        }
    }
}

/// Heavy operations. Every method is deterministic for a given thread count.
#[allow(clippy::too_many_arguments)] // BLAS-style GEMM signatures read best flat
pub trait Backend: Send + Sync {
    /// `y[m, n_out] = x[m, n_in] · Wᵀ` (overwrites `y`).
    fn linear_forward(&self, x: &[f32], m: usize, w: &LinearWeight, y: &mut [f32]) -> Result<()>;

    /// `dx[m, n_in] += dy[m, n_out] · W` (accumulates into `dx`, as every backward does).
    fn linear_backward_input(
        &self,
        dy: &[f32],
        m: usize,
        w: &LinearWeight,
        dx: &mut [f32],
    ) -> Result<()>;

    /// Dense f32 GEMM: `c[m, n] = beta·c + a[m, k] · bᵀ` with `b` row-major `[n, k]`.
    fn gemm_nt(&self, a: &[f32], b: &[f32], c: &mut [f32], m: usize, n: usize, k: usize, beta: f32);

    /// Dense f32 GEMM: `c[m, n] = beta·c + a[m, k] · b` with `b` row-major `[k, n]`.
    fn gemm_nn(&self, a: &[f32], b: &[f32], c: &mut [f32], m: usize, n: usize, k: usize, beta: f32);

    /// Dense f32 GEMM: `c[m, n] = beta·c + aᵀ · b` with `a` row-major `[k, m]`, `b` row-major `[k, n]`
    /// (weight gradients: `dW = dyᵀ · x`).
    fn gemm_tn(&self, a: &[f32], b: &[f32], c: &mut [f32], m: usize, n: usize, k: usize, beta: f32);

    /// Threads this backend uses.
    fn threads(&self) -> usize;

    /// The precision of the inputs of `linear_*` and the GEMMs. Default: f32.
    fn compute(&self) -> Compute {
        Compute::F32
    }

    /// Runs `f(0..n_tasks)` on this backend's threads (in any order, possibly concurrently);
    /// returns the first error. Default: one after another on the caller's thread. Tasks may call
    /// the backend's other methods.
    fn parallel_for(&self, n_tasks: usize, f: &(dyn Fn(usize) -> Result<()> + Sync)) -> Result<()> {
        (0..n_tasks).try_for_each(f)
    }
}
