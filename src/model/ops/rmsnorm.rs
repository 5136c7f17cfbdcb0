//! RMSNorm as Hugging Face's `LlamaRMSNorm`: `y = x / sqrt(mean(x²) + eps) · w`, in f32.

use super::check_len;
use crate::error::Result;

/// `out[n, d] = x[n, d] · rstd[n] · w[d]` with `rstd[n] = 1 / sqrt(mean(x²) + eps)` (saved).
pub fn rmsnorm_forward(
    out: &mut [f32],  // [n, d]
    rstd: &mut [f32], // [n]
    x: &[f32],        // [n, d]
    w: &[f32],        // [d]
    n: usize,
    d: usize,
    eps: f32,
) -> Result<()> {
    check_len("rmsnorm out", out.len(), &[n, d])?;
    check_len("rmsnorm rstd", rstd.len(), &[n])?;
    check_len("rmsnorm x", x.len(), &[n, d])?;
    check_len("rmsnorm weight", w.len(), &[d])?;
    for ((o, xr), r) in out
        .chunks_exact_mut(d)
        .zip(x.chunks_exact(d))
        .zip(rstd.iter_mut())
    {
        let ss: f64 = xr.iter().map(|&v| (v as f64) * (v as f64)).sum();
        let var = (ss / d as f64) as f32;
        *r = 1.0 / (var + eps).sqrt();
        for ((oi, &xi), &wi) in o.iter_mut().zip(xr).zip(w) {
            *oi = wi * (xi * *r);
        }
    }
    Ok(())
}

/// `dx[n, d] += rstd·w·dout − rstd³/d · x · Σ(dout·w·x)` per row.
pub fn rmsnorm_backward(
    dx: &mut [f32], // [n, d]
    dout: &[f32],   // [n, d]
    x: &[f32],      // [n, d]
    rstd: &[f32],   // [n]
    w: &[f32],      // [d]
    n: usize,
    d: usize,
) -> Result<()> {
    check_len("rmsnorm dx", dx.len(), &[n, d])?;
    check_len("rmsnorm dout", dout.len(), &[n, d])?;
    check_len("rmsnorm x", x.len(), &[n, d])?;
    check_len("rmsnorm rstd", rstd.len(), &[n])?;
    check_len("rmsnorm weight", w.len(), &[d])?;
    for (((dxr, dor), xr), &r) in dx
        .chunks_exact_mut(d)
        .zip(dout.chunks_exact(d))
        .zip(x.chunks_exact(d))
        .zip(rstd)
    {
        let dot: f64 = dor
            .iter()
            .zip(xr)
            .zip(w)
            .map(|((&g, &xi), &wi)| (g * wi) as f64 * xi as f64)
            .sum();
        let c = (dot as f32) * r * r * r / d as f32;
        for (((dxi, &g), &xi), &wi) in dxr.iter_mut().zip(dor).zip(xr).zip(w) {
            *dxi += r * wi * g - c * xi;
        }
    }
    Ok(())
}
