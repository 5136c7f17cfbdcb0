//! Residual connections: `out = a + b`.

use super::{check_len, for_each_part, rows_per_task};
use crate::backend::Backend;
use crate::error::Result;

/// `out[n] = a[n] + b[n]`.
pub fn residual_forward(
    out: &mut [f32], // [n]
    a: &[f32],       // [n]
    b: &[f32],       // [n]
) -> Result<()> {
    check_len("residual a", a.len(), &[out.len()])?;
    check_len("residual b", b.len(), &[out.len()])?;
    for ((o, &x), &y) in out.iter_mut().zip(a).zip(b) {
        *o = x + y;
    }
    Ok(())
}

/// `da[n] += dout[n]`, `db[n] += dout[n]`.
pub fn residual_backward(
    da: &mut [f32], // [n]
    db: &mut [f32], // [n]
    dout: &[f32],   // [n]
) -> Result<()> {
    check_len("residual da", da.len(), &[dout.len()])?;
    check_len("residual db", db.len(), &[dout.len()])?;
    for ((a, b), &g) in da.iter_mut().zip(db.iter_mut()).zip(dout) {
        *a += g;
        *b += g;
    }
    Ok(())
}

/// `acc[n] += x[n]` (the residual add done in place on the stream).
pub fn add_inplace(
    acc: &mut [f32], // [n]
    x: &[f32],       // [n]
) -> Result<()> {
    check_len("residual add", x.len(), &[acc.len()])?;
    for (a, &v) in acc.iter_mut().zip(x) {
        *a += v;
    }
    Ok(())
}

/// `residual_forward` on the backend's threads, over contiguous ranges (same result).
pub fn residual_forward_on(
    backend: &dyn Backend,
    out: &mut [f32], // [n]
    a: &[f32],       // [n]
    b: &[f32],       // [n]
) -> Result<()> {
    check_len("residual a", a.len(), &[out.len()])?;
    check_len("residual b", b.len(), &[out.len()])?;
    let per = rows_per_task(backend, out.len(), 1);
    let parts: Vec<&mut [f32]> = out.chunks_mut(per).collect();
    for_each_part(backend, "residual", parts, &|i, o| {
        let r = i * per..i * per + o.len();
        residual_forward(o, &a[r.clone()], &b[r])
    })
}
