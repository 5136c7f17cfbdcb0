//! The same attention as `attention.rs`, with its products run as dense GEMMs on the backend:
//! per query head and block of `QB` query rows, `s = q·kᵀ` over the keys the block's last row
//! sees, the masked softmax row by row, then `o = p·v`. Backward recomputes `p` from the saved
//! log-sum-exp as `attention_backward` does and forms `dq = ds·k`, `dk = dsᵀ·q`, `dv = pᵀ·dout`.
//!
//! Tasks (one per head and query block forward, one per head backward) run on the backend's
//! threads through `Backend::parallel_for`. Each task's arithmetic is fixed (the GEMMs do not
//! depend on the thread count) and per-head key/value gradients are summed in head order, so the
//! results do not depend on the thread count at all. Few query rows (generation) take the
//! row-by-row path of `attention.rs`, where a GEMM would mostly pad.

use super::attention::{
    attention_backward, attention_forward, dot, n_visible, AttnDims, AttnGrads, AttnInputs,
};
use super::{check_len, vexp};
use crate::backend::Backend;
use crate::error::{Error, Result};
use std::ops::Range;
use std::sync::Mutex;

/// Query rows per task (forward) or step (backward).
const QB: usize = 64;

/// Below this many query rows the row-by-row path is used.
const MIN_ROWS: usize = 8;

/// Keys or values of every kv head, contiguous `[n_head_kv, n_prefix + n_kv, head_dim]`, prefix
/// rows first.
fn gather_kv(prefix: &[f32], seq: &[f32], d: &AttnDims) -> Vec<f32> {
    let (hd, kvd, nk) = (d.head_dim, d.kv_dim(), d.n_prefix + d.n_kv);
    let mut out = vec![0f32; d.n_head_kv * nk * hd];
    for (g, dst) in out.chunks_exact_mut(nk * hd).enumerate() {
        for (j, row) in dst.chunks_exact_mut(hd).enumerate() {
            let (buf, r) = if j < d.n_prefix {
                (prefix, j)
            } else {
                (seq, j - d.n_prefix)
            };
            row.copy_from_slice(&buf[r * kvd + g * hd..][..hd]);
        }
    }
    out
}

/// Rows `rows` of head `h` of a `[n, n_head·head_dim]` buffer, contiguous in `dst`.
fn gather_head(src: &[f32], d: &AttnDims, h: usize, rows: Range<usize>, dst: &mut [f32]) {
    let (hd, qd) = (d.head_dim, d.q_dim());
    for (i, row) in rows.zip(dst.chunks_exact_mut(hd)) {
        row.copy_from_slice(&src[i * qd + h * hd..][..hd]);
    }
}

fn poisoned<T>(_: T) -> Error {
    Error::InvalidArgument("attention: a worker panicked".into())
}

/// As `attention::attention_forward`, with the products on `backend` and its threads.
pub fn attention_forward_gemm(
    out: &mut [f32], // [n_q, n_head·head_dim]
    lse: &mut [f32], // [n_q, n_head]
    x: &AttnInputs,
    d: &AttnDims,
    backend: &dyn Backend,
) -> Result<()> {
    if d.n_q < MIN_ROWS {
        return attention_forward(out, lse, x, d, backend.threads());
    }
    x.check(d)?;
    check_len("attention out", out.len(), &[d.n_q, d.q_dim()])?;
    check_len("attention lse", lse.len(), &[d.n_q, d.n_head])?;
    let (hd, nk) = (d.head_dim, d.n_prefix + d.n_kv);
    let group = d.n_head / d.n_head_kv;
    let scale = 1.0 / (hd as f32).sqrt();
    let level = crate::cpu::simd_level();
    let keys = gather_kv(x.prefix_k, x.k, d); // [n_head_kv, nk, hd]
    let vals = gather_kv(x.prefix_v, x.v, d); // [n_head_kv, nk, hd]
    let n_blocks = d.n_q.div_ceil(QB);
    let mut o_h = vec![0f32; d.n_head * d.n_q * hd]; // [n_head, n_q, hd]
    let mut l_h = vec![0f32; d.n_head * d.n_q]; // [n_head, n_q]
    let slots: Vec<Mutex<(&mut [f32], &mut [f32])>> = o_h
        .chunks_mut(d.n_q * hd)
        .zip(l_h.chunks_mut(d.n_q))
        .flat_map(|(o, l)| o.chunks_mut(QB * hd).zip(l.chunks_mut(QB)))
        .map(Mutex::new)
        .collect();
    backend.parallel_for(d.n_head * n_blocks, &|t| {
        let (h, b) = (t / n_blocks, t % n_blocks);
        let g = h / group;
        let (i0, i1) = (b * QB, ((b + 1) * QB).min(d.n_q));
        let rows = i1 - i0;
        let nv_max = n_visible(d, i1 - 1);
        let mut q = vec![0f32; rows * hd]; // [rows, hd]
        gather_head(x.q, d, h, i0..i1, &mut q);
        let mut s = vec![0f32; rows * nv_max]; // [rows, nv_max]: scores, then probabilities
        let (k, v) = (
            &keys[g * nk * hd..][..nv_max * hd],
            &vals[g * nk * hd..][..nv_max * hd],
        );
        backend.gemm_nt(&q, k, &mut s, rows, nv_max, hd, 0.0);
        let mut slot = slots[t].lock().map_err(poisoned)?;
        let (o, l) = &mut *slot;
        for (r, sr) in s.chunks_exact_mut(nv_max).enumerate() {
            let nv = n_visible(d, i0 + r);
            // `scale > 0`, so the max of the scaled scores is the scaled max, bit for bit.
            let max = vexp::max(&sr[..nv]) * scale;
            vexp::exp_affine(level, &mut sr[..nv], scale, max);
            let sum = vexp::sum(&sr[..nv]);
            let inv = 1.0 / sum;
            sr[..nv].iter_mut().for_each(|v| *v *= inv);
            sr[nv..].fill(0.0);
            l[r] = max + sum.ln();
        }
        backend.gemm_nn(&s, v, o, rows, hd, nv_max, 0.0);
        Ok(())
    })?;
    drop(slots);
    for h in 0..d.n_head {
        for i in 0..d.n_q {
            out[i * d.q_dim() + h * hd..][..hd].copy_from_slice(&o_h[(h * d.n_q + i) * hd..][..hd]);
            lse[i * d.n_head + h] = l_h[h * d.n_q + i];
        }
    }
    Ok(())
}

/// As `attention::attention_backward`, with the products on `backend` and its threads.
pub fn attention_backward_gemm(
    grads: AttnGrads,
    dout: &[f32], // [n_q, n_head·head_dim]
    out: &[f32],  // [n_q, n_head·head_dim]
    lse: &[f32],  // [n_q, n_head]
    x: &AttnInputs,
    d: &AttnDims,
    backend: &dyn Backend,
) -> Result<()> {
    if d.n_q < MIN_ROWS {
        return attention_backward(grads, dout, out, lse, x, d, backend.threads());
    }
    x.check(d)?;
    let AttnGrads {
        dq,
        dk,
        dv,
        dprefix_k,
        dprefix_v,
    } = grads;
    let (qd, kvd, hd) = (d.q_dim(), d.kv_dim(), d.head_dim);
    check_len("attention dq", dq.len(), &[d.n_q, qd])?;
    check_len("attention dk", dk.len(), &[d.n_kv, kvd])?;
    check_len("attention dv", dv.len(), &[d.n_kv, kvd])?;
    let prefix_grads = !dprefix_k.is_empty() || !dprefix_v.is_empty();
    if prefix_grads {
        check_len("attention dprefix k", dprefix_k.len(), &[d.n_prefix, kvd])?;
        check_len("attention dprefix v", dprefix_v.len(), &[d.n_prefix, kvd])?;
    }
    check_len("attention dout", dout.len(), &[d.n_q, qd])?;
    check_len("attention out", out.len(), &[d.n_q, qd])?;
    check_len("attention lse", lse.len(), &[d.n_q, d.n_head])?;
    let nk = d.n_prefix + d.n_kv;
    let group = d.n_head / d.n_head_kv;
    let scale = 1.0 / (hd as f32).sqrt();
    let level = crate::cpu::simd_level();
    let keys = gather_kv(x.prefix_k, x.k, d); // [n_head_kv, nk, hd]
    let vals = gather_kv(x.prefix_v, x.v, d); // [n_head_kv, nk, hd]
    let mut dq_h = vec![0f32; d.n_head * d.n_q * hd]; // [n_head, n_q, hd]
    let mut dk_h = vec![0f32; d.n_head * nk * hd]; // [n_head, nk, hd]
    let mut dv_h = vec![0f32; d.n_head * nk * hd]; // [n_head, nk, hd]
    type Slot<'a> = Mutex<(&'a mut [f32], &'a mut [f32], &'a mut [f32])>;
    let slots: Vec<Slot> = dq_h
        .chunks_mut(d.n_q * hd)
        .zip(dk_h.chunks_mut(nk * hd))
        .zip(dv_h.chunks_mut(nk * hd))
        .map(|((a, b), c)| Mutex::new((a, b, c)))
        .collect();
    backend.parallel_for(d.n_head, &|h| {
        let g = h / group;
        let mut slot = slots[h].lock().map_err(poisoned)?;
        let (dqh, dkh, dvh) = &mut *slot;
        let mut q = vec![0f32; QB * hd]; // [rows, hd]
        let mut dob = vec![0f32; QB * hd]; // [rows, hd]
        let mut big_d = [0f32; QB];
        for i0 in (0..d.n_q).step_by(QB) {
            let i1 = (i0 + QB).min(d.n_q);
            let rows = i1 - i0;
            let nv_max = n_visible(d, i1 - 1);
            let (q, dob) = (&mut q[..rows * hd], &mut dob[..rows * hd]);
            gather_head(x.q, d, h, i0..i1, q);
            gather_head(dout, d, h, i0..i1, dob);
            for (r, bd) in big_d[..rows].iter_mut().enumerate() {
                let off = (i0 + r) * qd + h * hd;
                *bd = dot(&dout[off..off + hd], &out[off..off + hd]);
            }
            let (k, v) = (
                &keys[g * nk * hd..][..nv_max * hd],
                &vals[g * nk * hd..][..nv_max * hd],
            );
            let mut p = vec![0f32; rows * nv_max]; // [rows, nv_max]
            let mut ds = vec![0f32; rows * nv_max]; // [rows, nv_max]: dp, then ds
            backend.gemm_nt(q, k, &mut p, rows, nv_max, hd, 0.0);
            backend.gemm_nt(dob, v, &mut ds, rows, nv_max, hd, 0.0);
            for (r, (pr, dsr)) in p
                .chunks_exact_mut(nv_max)
                .zip(ds.chunks_exact_mut(nv_max))
                .enumerate()
            {
                let i = i0 + r;
                let nv = n_visible(d, i);
                let l = lse[i * d.n_head + h];
                let bd = big_d[r];
                vexp::exp_affine(level, &mut pr[..nv], scale, l);
                for (pj, dj) in pr[..nv].iter().zip(&mut dsr[..nv]) {
                    *dj = *pj * (*dj - bd) * scale;
                }
                pr[nv..].fill(0.0);
                dsr[nv..].fill(0.0);
            }
            backend.gemm_nn(&ds, k, &mut dqh[i0 * hd..i1 * hd], rows, hd, nv_max, 0.0);
            backend.gemm_tn(&ds, q, &mut dkh[..nv_max * hd], nv_max, hd, rows, 1.0);
            backend.gemm_tn(&p, dob, &mut dvh[..nv_max * hd], nv_max, hd, rows, 1.0);
        }
        Ok(())
    })?;
    drop(slots);
    for h in 0..d.n_head {
        for i in 0..d.n_q {
            let src = &dq_h[(h * d.n_q + i) * hd..][..hd];
            add(&mut dq[i * qd + h * hd..][..hd], src);
        }
    }
    // Heads of a group add into their kv head in head order.
    for h in 0..d.n_head {
        let g = h / group;
        for j in 0..nk {
            let (dkb, dvb, r) = if j < d.n_prefix {
                if !prefix_grads {
                    continue;
                }
                (&mut *dprefix_k, &mut *dprefix_v, j)
            } else {
                (&mut *dk, &mut *dv, j - d.n_prefix)
            };
            let off = r * kvd + g * hd;
            add(&mut dkb[off..off + hd], &dk_h[(h * nk + j) * hd..][..hd]);
            add(&mut dvb[off..off + hd], &dv_h[(h * nk + j) * hd..][..hd]);
        }
    }
    Ok(())
}

fn add(dst: &mut [f32], src: &[f32]) {
    for (a, &b) in dst.iter_mut().zip(src) {
        *a += b;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::backend::cpu::CpuBackend;
    use crate::model::check::Tolerance;

    /// xorshift values in `[-scale, scale)`.
    struct TestRng(u32);

    impl TestRng {
        fn new(seed: u32) -> TestRng {
            TestRng(seed.wrapping_mul(2654435761) | 1)
        }

        fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
            (0..n)
                .map(|_| {
                    self.0 ^= self.0 << 13;
                    self.0 ^= self.0 >> 17;
                    self.0 ^= self.0 << 5;
                    ((self.0 >> 8) as f32 / (1u32 << 23) as f32 - 1.0) * scale
                })
                .collect()
        }
    }

    type Run = (Vec<f32>, Vec<f32>, Vec<Vec<f32>>);

    /// Forward and backward (gradients added to 0.5) through the GEMM path on `be`, or through
    /// the row-by-row reference when `be` is `None`.
    fn run(d: &AttnDims, b: &[Vec<f32>; 6], be: Option<&dyn Backend>) -> Run {
        let x = AttnInputs {
            q: &b[0],
            k: &b[1],
            v: &b[2],
            prefix_k: &b[3],
            prefix_v: &b[4],
        };
        let (mut out, mut lse) = (vec![0f32; d.n_q * d.q_dim()], vec![0f32; d.n_q * d.n_head]);
        match be {
            Some(be) => attention_forward_gemm(&mut out, &mut lse, &x, d, be).unwrap(),
            None => attention_forward(&mut out, &mut lse, &x, d, 1).unwrap(),
        }
        let mut g: Vec<Vec<f32>> = b[..5].iter().map(|v| vec![0.5f32; v.len()]).collect();
        let [gq, gk, gv, gpk, gpv] = &mut g[..] else {
            unreachable!()
        };
        let grads = AttnGrads {
            dq: gq,
            dk: gk,
            dv: gv,
            dprefix_k: gpk,
            dprefix_v: gpv,
        };
        match be {
            Some(be) => attention_backward_gemm(grads, &b[5], &out, &lse, &x, d, be).unwrap(),
            None => attention_backward(grads, &b[5], &out, &lse, &x, d, 1).unwrap(),
        }
        (out, lse, g)
    }

    #[test]
    fn gemm_attention_matches_row_by_row_at_every_thread_count() {
        // (n_q, n_kv, n_prefix, n_head, n_head_kv, head_dim): a partial last block, GQA with a
        // prefix, a KV-cache offset (n_q < n_kv), MQA with an odd head size, and a short call
        // that takes the row-by-row path.
        let cases = [
            (70, 70, 0, 4, 2, 16),
            (130, 130, 5, 6, 2, 8),
            (40, 90, 3, 3, 3, 12),
            (65, 65, 0, 2, 1, 7),
            (5, 9, 2, 2, 1, 4),
        ];
        let mut rng = TestRng::new(11);
        let backends: Vec<CpuBackend> = [1, 2, 3]
            .iter()
            .map(|&t| CpuBackend::new(t).unwrap())
            .collect();
        for (ci, &(n_q, n_kv, n_prefix, n_head, n_head_kv, head_dim)) in cases.iter().enumerate() {
            let d = AttnDims {
                n_q,
                n_kv,
                n_prefix,
                n_head,
                n_head_kv,
                head_dim,
            };
            let (qd, kvd) = (d.q_dim(), d.kv_dim());
            let b = [
                rng.vec(n_q * qd, 1.5),
                rng.vec(n_kv * kvd, 1.5),
                rng.vec(n_kv * kvd, 1.0),
                rng.vec(n_prefix * kvd, 1.5),
                rng.vec(n_prefix * kvd, 1.0),
                rng.vec(n_q * qd, 1.0),
            ];
            let (out0, lse0, g0) = run(&d, &b, None);
            let first = run(&d, &b, Some(&backends[0]));
            let tol = Tolerance::new(2e-5, 1e-4);
            for be in &backends {
                let (out, lse, g) = run(&d, &b, Some(be));
                let t = be.threads();
                tol.check(&format!("case {ci} t{t} out"), out0.clone(), out.clone())
                    .unwrap();
                tol.check(&format!("case {ci} t{t} lse"), lse0.clone(), lse.clone())
                    .unwrap();
                for (i, (a, e)) in g.iter().zip(&g0).enumerate() {
                    tol.check(&format!("case {ci} t{t} grad {i}"), e.clone(), a.clone())
                        .unwrap();
                }
                assert_eq!(
                    (&out, &lse, &g),
                    (&first.0, &first.1, &first.2),
                    "case {ci}: {t} threads differ from 1"
                );
            }
        }
    }
}
