//! The SwiGLU gate of the Llama MLP: `h = silu(gate) · up`, `silu(g) = g · σ(g)`.

use super::{check_len, vexp};
use crate::error::Result;

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
    for ((o, &g), &u) in out.iter_mut().zip(gate).zip(up) {
        *o = g * sigmoid(g) * u;
    }
    Ok(())
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
    for i in 0..n {
        let g = gate[i];
        let s = sigmoid(g);
        dgate[i] += dout[i] * up[i] * s * (1.0 + g * (1.0 - s));
        dup[i] += dout[i] * g * s;
    }
    Ok(())
}
