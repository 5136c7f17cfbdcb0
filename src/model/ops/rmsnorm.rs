//! RMSNorm as Hugging Face's `LlamaRMSNorm`: `y = x / sqrt(mean(x²) + eps) · w`, in f32.

use super::{check_len, for_each_part, rows_per_task};
use crate::backend::Backend;
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

/// `rmsnorm_forward` on the backend's threads, over ranges of rows (same result: rows are
/// independent).
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_forward_on(
    backend: &dyn Backend,
    out: &mut [f32],  // [n, d]
    rstd: &mut [f32], // [n]
    x: &[f32],        // [n, d]
    w: &[f32],        // [d]
    n: usize,
    d: usize,
    eps: f32,
) -> Result<()> {
    let per = rows_per_task(backend, n, d);
    if per >= n || d == 0 {
        return rmsnorm_forward(out, rstd, x, w, n, d, eps);
    }
    check_len("rmsnorm out", out.len(), &[n, d])?;
    check_len("rmsnorm rstd", rstd.len(), &[n])?;
    check_len("rmsnorm x", x.len(), &[n, d])?;
    let parts: Vec<(&mut [f32], &mut [f32])> =
        out.chunks_mut(per * d).zip(rstd.chunks_mut(per)).collect();
    for_each_part(backend, "rmsnorm", parts, &|i, (o, r)| {
        let (r0, rows) = (i * per, r.len());
        rmsnorm_forward(o, r, &x[r0 * d..(r0 + rows) * d], w, rows, d, eps)
    })
}

/// `rmsnorm_backward` on the backend's threads, over ranges of rows (same result).
#[allow(clippy::too_many_arguments)]
pub fn rmsnorm_backward_on(
    backend: &dyn Backend,
    dx: &mut [f32], // [n, d]
    dout: &[f32],   // [n, d]
    x: &[f32],      // [n, d]
    rstd: &[f32],   // [n]
    w: &[f32],      // [d]
    n: usize,
    d: usize,
) -> Result<()> {
    let per = rows_per_task(backend, n, d);
    if per >= n || d == 0 {
        return rmsnorm_backward(dx, dout, x, rstd, w, n, d);
    }
    check_len("rmsnorm dx", dx.len(), &[n, d])?;
    check_len("rmsnorm dout", dout.len(), &[n, d])?;
    check_len("rmsnorm x", x.len(), &[n, d])?;
    check_len("rmsnorm rstd", rstd.len(), &[n])?;
    let parts: Vec<&mut [f32]> = dx.chunks_mut(per * d).collect();
    for_each_part(backend, "rmsnorm", parts, &|i, dxs| {
        let (r0, rows) = (i * per, dxs.len() / d);
        let span = r0 * d..(r0 + rows) * d;
        let rs = &rstd[r0..r0 + rows];
        rmsnorm_backward(dxs, &dout[span.clone()], &x[span], rs, w, rows, d)
    })
}
