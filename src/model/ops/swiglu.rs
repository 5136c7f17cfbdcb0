//! The SwiGLU gate of the Llama MLP: `h = silu(gate) · up`, `silu(g) = g · σ(g)`.

use super::{check_len, for_each_part, rows_per_task, vexp};
use crate::backend::Backend;
use crate::cpu::per_level;
use crate::error::Result;

#[inline(always)]
fn sigmoid(x: f32) -> f32 {
    1.0 / (1.0 + vexp::exp(-x))
}

/// `out[n] = silu(gate[n]) · up[n]` (any shape, element-wise).
pub fn swiglu_forward(
    out: &mut [f32], // [n]
    gate: &[f32],    // [n]
    up: &[f32],      // [n]
) -> Result<()> {
    check_len("swiglu gate", gate.len(), &[out.len()])?;
    check_len("swiglu up", up.len(), &[out.len()])?;
    forward_rows(crate::cpu::simd_level(), out, gate, up);
    Ok(())
}

per_level! {
    fn forward_rows(out: &mut [f32], gate: &[f32], up: &[f32]) {
        for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
            *o = g * sigmoid(g) * u;
        }
    }
}

per_level! {
    fn backward_rows(dgate: &mut [f32], dup: &mut [f32], dout: &[f32], gate: &[f32], up: &[f32]) {
        let n = dout.len();
        let (dgate, dup, gate, up) = (&mut dgate[..n], &mut dup[..n], &gate[..n], &up[..n]);
        for i in 0..n {
            let g = gate[i];
            let s = sigmoid(g);
            dgate[i] += dout[i] * up[i] * s * (1.0 + g * (1.0 - s));
            dup[i] += dout[i] * g * s;
        }
    }
}

/// `dgate += dout · up · σ(g)(1 + g(1 − σ(g)))`, `dup += dout · silu(g)`.
pub fn swiglu_backward(
    dgate: &mut [f32], // [n]
    dup: &mut [f32],   // [n]
    dout: &[f32],      // [n]
    gate: &[f32],      // [n]
    up: &[f32],        // [n]
) -> Result<()> {
    let n = dout.len();
    check_len("swiglu dgate", dgate.len(), &[n])?;
    check_len("swiglu dup", dup.len(), &[n])?;
    check_len("swiglu gate", gate.len(), &[n])?;
    check_len("swiglu up", up.len(), &[n])?;
    backward_rows(crate::cpu::simd_level(), dgate, dup, dout, gate, up);
    Ok(())
}

/// `swiglu_forward` on the backend's threads (contiguous ranges; same result).
pub fn swiglu_forward_on(
    backend: &dyn Backend,
    out: &mut [f32],
    gate: &[f32],
    up: &[f32],
) -> Result<()> {
    check_len("swiglu gate", gate.len(), &[out.len()])?;
    check_len("swiglu up", up.len(), &[out.len()])?;
    let per = rows_per_task(backend, out.len(), 1);
    let parts: Vec<&mut [f32]> = out.chunks_mut(per).collect();
    for_each_part(backend, "swiglu", parts, &|i, o| {
        let r = i * per..i * per + o.len();
        swiglu_forward(o, &gate[r.clone()], &up[r])
    })
}

/// `swiglu_backward` on the backend's threads (contiguous ranges; same result).
pub fn swiglu_backward_on(
    backend: &dyn Backend,
    dgate: &mut [f32],
    dup: &mut [f32],
    dout: &[f32],
    gate: &[f32],
    up: &[f32],
) -> Result<()> {
    let n = dout.len();
    for (what, len) in [
        ("dgate", dgate.len()),
        ("dup", dup.len()),
        ("gate", gate.len()),
    ] {
        check_len(what, len, &[n])?;
    }
    check_len("swiglu up", up.len(), &[n])?;
    let per = rows_per_task(backend, n, 1);
    let parts: Vec<(&mut [f32], &mut [f32])> =
        dgate.chunks_mut(per).zip(dup.chunks_mut(per)).collect();
    for_each_part(backend, "swiglu", parts, &|i, (dg, du)| {
        let r = i * per..i * per + dg.len();
        swiglu_backward(dg, du, &dout[r.clone()], &gate[r.clone()], &up[r])
    })
}

#[cfg(test)]
mod tests {
    use super::super::PARALLEL_MIN;
    use super::*;
    use crate::backend::cpu::CpuBackend;

    /// The threaded versions equal the serial ones bit for bit (sizes below and above the
    /// threshold, odd lengths so the ranges are uneven).
    #[test]
    fn threaded_equals_serial() {
        let be = CpuBackend::new(2).unwrap();
        for n in [7, PARALLEL_MIN + 13, 3 * PARALLEL_MIN + 1] {
            let v = |k: usize| -> Vec<f32> {
                (0..n)
                    .map(|i| ((i * 7919 + k * 104_729) % 1000) as f32 / 250.0 - 2.0)
                    .collect()
            };
            let (gate, up, dout) = (v(1), v(2), v(3));
            let (mut a, mut b) = (vec![0f32; n], vec![0f32; n]);
            swiglu_forward(&mut a, &gate, &up).unwrap();
            swiglu_forward_on(&be, &mut b, &gate, &up).unwrap();
            assert_eq!(a, b, "forward, n = {n}");
            let (mut dg1, mut du1) = (v(4), v(5));
            let (mut dg2, mut du2) = (dg1.clone(), du1.clone());
            swiglu_backward(&mut dg1, &mut du1, &dout, &gate, &up).unwrap();
            swiglu_backward_on(&be, &mut dg2, &mut du2, &dout, &gate, &up).unwrap();
            assert_eq!((dg1, du1), (dg2, du2), "backward, n = {n}");
        }
    }
}
