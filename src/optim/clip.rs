//! Gradient norm and clipping as `torch.nn.utils.clip_grad_norm_` computes them for f32 CPU
//! tensors (norm type 2).
//!
//! torch takes the 2-norm of each gradient, then the 2-norm of the vector of those norms, then
//! multiplies every gradient by `clamp(max_norm / (total + 1e-6), max=1)`. Bit-exact agreement
//! needs torch's summation order, which [`torch_sum_squares`] reproduces (measured against torch
//! 2.15 on x86-64, see docs/optim.md).

/// Sum of squares in the order torch's CPU 2-norm kernel uses for a contiguous f32 vector:
/// eight running lane sums `acc[j] += x*x` (not fused) over full groups of 8, the lanes added in
/// order, then the remaining elements added to that total one by one: in groups of four
/// unfused, the last one to three fused (`fma(x, x, acc)`), as torch's compiled tail loop does.
pub fn torch_sum_squares(x: &[f32]) -> f32 {
    let mut lanes = [0.0f32; 8];
    let groups = x.chunks_exact(8);
    let mut tail = groups.remainder();
    for group in groups {
        for (acc, &v) in lanes.iter_mut().zip(group) {
            *acc += v * v;
        }
    }
    let mut total = lanes[0];
    for &lane in &lanes[1..] {
        total += lane;
    }
    while tail.len() >= 4 {
        for &v in &tail[..4] {
            total += v * v;
        }
        tail = &tail[4..];
    }
    for &v in tail {
        total = v.mul_add(v, total);
    }
    total
}

/// `torch.linalg.vector_norm(x)` for a contiguous f32 vector.
pub fn torch_norm(x: &[f32]) -> f32 {
    torch_sum_squares(x).sqrt()
}

/// The global 2-norm of several gradients, as `clip_grad_norm_` computes it: the norm of the
/// per-tensor norms. 0 for no tensors.
pub fn global_grad_norm(grads: &[&[f32]]) -> f32 {
    let norms: Vec<f32> = grads.iter().map(|g| torch_norm(g)).collect();
    torch_norm(&norms)
}

/// The factor `clip_grad_norm_` multiplies gradients by: `clamp(max_norm / (total + 1e-6),
/// max=1)`, where torch evaluates the division as `reciprocal(total + 1e-6) * max_norm` in f32.
/// A NaN norm gives NaN (as in torch, which then poisons the gradients).
pub fn clip_coefficient(total_norm: f32, max_norm: f64) -> f32 {
    let coef = (1.0 / (total_norm + 1e-6f32)) * max_norm as f32;
    if coef > 1.0 {
        1.0
    } else {
        coef
    }
}

/// Clips gradients to a global 2-norm of `max_norm` in place and returns the norm before
/// clipping (what training logs as `grad_norm`). `max_norm <= 0` only measures.
pub fn clip_grad_norm(grads: &mut [&mut [f32]], max_norm: f64) -> f32 {
    let total = {
        let views: Vec<&[f32]> = grads.iter().map(|g| &**g).collect();
        global_grad_norm(&views)
    };
    if max_norm > 0.0 {
        let coef = clip_coefficient(total, max_norm);
        for g in grads.iter_mut() {
            for x in g.iter_mut() {
                *x *= coef;
            }
        }
    }
    total
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_cases_are_exact() {
        assert_eq!(torch_norm(&[]), 0.0);
        assert_eq!(torch_norm(&[3.0, 4.0]), 5.0);
        assert_eq!(global_grad_norm(&[&[3.0], &[4.0]]), 5.0);
        assert_eq!(clip_coefficient(0.5, 1.0), 1.0);
        let mut a = [6.0f32, 8.0];
        let mut slices: Vec<&mut [f32]> = vec![&mut a];
        assert_eq!(clip_grad_norm(&mut slices, 0.0), 10.0);
        assert_eq!(a, [6.0, 8.0]);
        let mut slices: Vec<&mut [f32]> = vec![&mut a];
        assert_eq!(clip_grad_norm(&mut slices, 1.0), 10.0);
        assert!((a[0] - 0.6).abs() < 1e-6 && (a[1] - 0.8).abs() < 1e-6);
        assert!(clip_coefficient(f32::NAN, 1.0).is_nan());
    }
}
