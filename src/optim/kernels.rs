//! Elementwise update kernels, each reproducing one reference implementation's f32 arithmetic
//! operation by operation (which products are fused, where scalars are rounded to f32).
//!
//! The reference kernels were pinned down by running them (see docs/optim.md):
//! - torch's CPU kernels fuse `add(a, b, alpha)` into `fma(b, alpha, a)`, `lerp` into
//!   `fma(w, end - start, start)` (`fma(w - 1, end - start, end)` for weights >= 0.5) and
//!   `addcmul(s, t1, t2, value)` into `fma(value * t1, t2, s)`; `addcdiv(s, t1, t2, value)` is
//!   `s + (value * t1) / t2`. Python scalars are rounded to f32 before use.
//! - bitsandbytes' CPU optimizers are written with the same torch ops in another order.
//!
//! Each kernel has one body (`#[inline(always)]`, using `f32::mul_add` for every fused step) and
//! is compiled twice: plainly (scalar level; `mul_add` is a correctly rounded library call on
//! x86-64 without FMA, an instruction on aarch64) and with AVX2+FMA enabled, where the compiler
//! vectorises it. fma, +, *, / and sqrt are all correctly rounded, so every level gives the same
//! bits; tests check it at every level in `crate::cpu::available_levels()`.
#![deny(unsafe_op_in_unsafe_fn)]

use crate::cpu::{available_levels, SimdLevel};

/// f32 scalars of one torch AdamW step (`_single_tensor_adam`, decoupled weight decay).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TorchAdamW {
    /// `f32(1 - lr * wd)`; 1.0 when wd is 0 (torch then skips the multiply; x * 1 == x).
    pub decay: f32,
    /// `f32(1 - beta1)`, the lerp weight.
    pub lerp_weight: f32,
    pub beta2: f32,
    /// `f32(1 - beta2)`.
    pub one_minus_beta2: f32,
    /// `f32(sqrt(1 - beta2^t))` (Python's `** 0.5`).
    pub bc2_sqrt: f32,
    pub eps: f32,
    /// `f32(-(lr / (1 - beta1^t)))`.
    pub neg_step: f32,
}

/// f32 scalars of one torch SGD step (`_single_tensor_sgd`, dampening 0, no Nesterov).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct TorchSgd {
    /// `f32(wd)`, 0 for none.
    pub weight_decay: f32,
    pub momentum: f32,
    /// `f32(-lr)`.
    pub neg_lr: f32,
    /// First step: the momentum buffer is set to the gradient instead of updated.
    pub first: bool,
}

/// f32 scalars of one bitsandbytes CPU Adam step (`_optimizer_update_8bit_blockwise_cpu` on
/// dequantized state, or `_optimizer_update_32bit_cpu`).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct BnbAdam {
    pub beta1: f32,
    /// `f32(1 - beta1)`.
    pub one_minus_beta1: f32,
    pub beta2: f32,
    pub one_minus_beta2: f32,
    /// `f32(1 - lr * wd)`; 1.0 when wd is 0.
    pub decay: f32,
    /// 8-bit kernel: `f32(sqrt(1 - beta2^t))`. 32-bit kernel: unused.
    pub c2: f32,
    /// 8-bit kernel: `f32(eps)`. 32-bit kernel: `f32(eps * c2)` (c2 in f64).
    pub eps: f32,
    /// 8-bit kernel: `f32(-lr / c1)`. 32-bit kernel: `f32(-lr * c2 / c1)` (f64).
    pub step: f32,
}

/// The level a kernel really runs at: `level` if this CPU has it, else scalar (so a caller can
/// never reach code for missing instructions).
fn effective(level: SimdLevel) -> SimdLevel {
    if available_levels().contains(&level) {
        level
    } else {
        SimdLevel::Scalar
    }
}

macro_rules! dispatch {
    ($level:expr, $body:ident, $($arg:expr),*) => {
        match effective($level) {
            #[cfg(target_arch = "x86_64")]
            SimdLevel::Avx2 | SimdLevel::Avx512 => {
                // SAFETY: `effective` returned an AVX2 level, so this CPU has AVX2 and FMA
                // (`available_levels` checks both).
                unsafe { x86::$body($($arg),*) }
            }
            _ => $body($($arg),*),
        }
    };
}

/// torch AdamW on one chunk: `p`, `g`, `m` (exp_avg), `v` (exp_avg_sq) of equal lengths.
pub fn torch_adamw(
    level: SimdLevel,
    s: &TorchAdamW,
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
) {
    dispatch!(level, torch_adamw_body, s, p, g, m, v)
}

/// torch SGD on one chunk; `buf` is the momentum buffer (`None` without momentum).
pub fn torch_sgd(
    level: SimdLevel,
    s: &TorchSgd,
    p: &mut [f32],
    g: &[f32],
    buf: Option<&mut [f32]>,
) {
    match buf {
        Some(buf) => dispatch!(level, torch_sgd_momentum_body, s, p, g, buf),
        None => dispatch!(level, torch_sgd_plain_body, s, p, g),
    }
}

/// bitsandbytes' CPU 8-bit Adam arithmetic on dequantized `m`, `v` (weight decay first).
pub fn bnb_adam8(
    level: SimdLevel,
    s: &BnbAdam,
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
) {
    dispatch!(level, bnb_adam8_body, s, p, g, m, v)
}

/// bitsandbytes' CPU 32-bit Adam (parameters below `min_8bit_size` in AdamW8bit).
pub fn bnb_adam32(
    level: SimdLevel,
    s: &BnbAdam,
    p: &mut [f32],
    g: &[f32],
    m: &mut [f32],
    v: &mut [f32],
) {
    dispatch!(level, bnb_adam32_body, s, p, g, m, v)
}

#[inline(always)]
fn torch_adamw_body(s: &TorchAdamW, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    // torch's lerp: fma(w, end - start, start) for |w| < 0.5, else fma(w - 1, end - start, end).
    let small = s.lerp_weight.abs() < 0.5;
    let coeff = if small {
        s.lerp_weight
    } else {
        s.lerp_weight - 1.0
    };
    let n = p.len().min(g.len()).min(m.len()).min(v.len());
    let (p, g, m, v) = (&mut p[..n], &g[..n], &mut m[..n], &mut v[..n]);
    for i in 0..n {
        let (gi, mi) = (g[i], m[i]);
        let pd = p[i] * s.decay;
        let m_new = coeff.mul_add(gi - mi, if small { mi } else { gi });
        let v_new = (s.one_minus_beta2 * gi).mul_add(gi, v[i] * s.beta2);
        let denom = v_new.sqrt() / s.bc2_sqrt + s.eps;
        p[i] = pd + (s.neg_step * m_new) / denom;
        m[i] = m_new;
        v[i] = v_new;
    }
}

#[inline(always)]
fn torch_sgd_momentum_body(s: &TorchSgd, p: &mut [f32], g: &[f32], buf: &mut [f32]) {
    let n = p.len().min(g.len()).min(buf.len());
    let (p, g, buf) = (&mut p[..n], &g[..n], &mut buf[..n]);
    for i in 0..n {
        // grad.add(param, alpha=wd); with wd == 0 torch skips it (fma(p, 0, g) == g anyway,
        // except for the sign of a zero gradient, hence the branch).
        let gw = if s.weight_decay != 0.0 {
            p[i].mul_add(s.weight_decay, g[i])
        } else {
            g[i]
        };
        // buf.mul_(momentum).add_(grad) — alpha 1, so a plain rounded add.
        let b = if s.first {
            gw
        } else {
            buf[i] * s.momentum + gw
        };
        buf[i] = b;
        p[i] = b.mul_add(s.neg_lr, p[i]);
    }
}

#[inline(always)]
fn torch_sgd_plain_body(s: &TorchSgd, p: &mut [f32], g: &[f32]) {
    let n = p.len().min(g.len());
    let (p, g) = (&mut p[..n], &g[..n]);
    for i in 0..n {
        let gw = if s.weight_decay != 0.0 {
            p[i].mul_add(s.weight_decay, g[i])
        } else {
            g[i]
        };
        p[i] = gw.mul_add(s.neg_lr, p[i]);
    }
}

#[inline(always)]
fn bnb_adam8_body(s: &BnbAdam, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    let n = p.len().min(g.len()).min(m.len()).min(v.len());
    let (p, g, m, v) = (&mut p[..n], &g[..n], &mut m[..n], &mut v[..n]);
    for i in 0..n {
        let gi = g[i];
        // state1.mul_(beta1).add_(grad, alpha=1-beta1); state2.mul_(beta2).addcmul_(...)
        let m_new = gi.mul_add(s.one_minus_beta1, m[i] * s.beta1);
        let v_new = (s.one_minus_beta2 * gi).mul_add(gi, v[i] * s.beta2);
        // denom = (sqrt(v) / c2).add_(eps); p.mul_(1 - lr*wd); p.addcdiv_(m, denom, -lr/c1)
        let denom = v_new.sqrt() / s.c2 + s.eps;
        let pd = p[i] * s.decay;
        p[i] = pd + (s.step * m_new) / denom;
        m[i] = m_new;
        v[i] = v_new;
    }
}

#[inline(always)]
fn bnb_adam32_body(s: &BnbAdam, p: &mut [f32], g: &[f32], m: &mut [f32], v: &mut [f32]) {
    let n = p.len().min(g.len()).min(m.len()).min(v.len());
    let (p, g, m, v) = (&mut p[..n], &g[..n], &mut m[..n], &mut v[..n]);
    for i in 0..n {
        let gi = g[i];
        let m_new = gi.mul_add(s.one_minus_beta1, m[i] * s.beta1);
        let v_new = (s.one_minus_beta2 * gi).mul_add(gi, v[i] * s.beta2);
        // p.mul_(1 - lr*wd); update = m / (sqrt(v) + eps*c2); p.add_(update, alpha=step_size)
        let pd = p[i] * s.decay;
        let update = m_new / (v_new.sqrt() + s.eps);
        p[i] = update.mul_add(s.step, pd);
        m[i] = m_new;
        v[i] = v_new;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::*;

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn torch_adamw_body(
        s: &TorchAdamW,
        p: &mut [f32],
        g: &[f32],
        m: &mut [f32],
        v: &mut [f32],
    ) {
        super::torch_adamw_body(s, p, g, m, v)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn torch_sgd_momentum_body(s: &TorchSgd, p: &mut [f32], g: &[f32], buf: &mut [f32]) {
        super::torch_sgd_momentum_body(s, p, g, buf)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn torch_sgd_plain_body(s: &TorchSgd, p: &mut [f32], g: &[f32]) {
        super::torch_sgd_plain_body(s, p, g)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn bnb_adam8_body(
        s: &BnbAdam,
        p: &mut [f32],
        g: &[f32],
        m: &mut [f32],
        v: &mut [f32],
    ) {
        super::bnb_adam8_body(s, p, g, m, v)
    }

    #[target_feature(enable = "avx2,fma")]
    pub(super) fn bnb_adam32_body(
        s: &BnbAdam,
        p: &mut [f32],
        g: &[f32],
        m: &mut [f32],
        v: &mut [f32],
    ) {
        super::bnb_adam32_body(s, p, g, m, v)
    }
}
