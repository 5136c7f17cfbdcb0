//! Causal grouped-query attention: `softmax(q·kᵀ / sqrt(head_dim)) · v` per head, query head `h`
//! reading key/value head `h / (n_head / n_head_kv)`.
//!
//! One sequence per call. Keys are the sequence's own rows (`n_kv` of them; with a KV cache the
//! first `n_kv − n_q` are earlier tokens) plus optional prefix rows visible to every query and
//! never rotated (prefix tuning's virtual tokens). Query `i` sees every prefix row and sequence
//! rows `0..=n_kv − n_q + i`.
//!
//! Only the log-sum-exp of each query's scores is saved; backward recomputes the probabilities
//! from it (as FlashAttention does), so no `[n_head, n_q, n_keys]` buffer is ever kept.

use super::check_len;
use crate::error::{Error, Result};

/// Sizes of one attention call.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AttnDims {
    /// Query rows (tokens computed by this call).
    pub n_q: usize,
    /// Key/value rows of the sequence, `>= n_q` (earlier tokens first).
    pub n_kv: usize,
    /// Extra key/value rows before the sequence, visible to all queries.
    pub n_prefix: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
}

impl AttnDims {
    pub(crate) fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }

    pub(crate) fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }

    fn validate(&self) -> Result<()> {
        if self.n_kv < self.n_q
            || self.n_head_kv == 0
            || !self.n_head.is_multiple_of(self.n_head_kv)
        {
            return Err(Error::InvalidArgument(format!(
                "attention: inconsistent sizes {self:?}"
            )));
        }
        Ok(())
    }
}

/// The key/value rows one attention call reads.
pub struct AttnInputs<'a> {
    pub q: &'a [f32],        // [n_q, n_head·head_dim], rotated
    pub k: &'a [f32],        // [n_kv, n_head_kv·head_dim], rotated
    pub v: &'a [f32],        // [n_kv, n_head_kv·head_dim]
    pub prefix_k: &'a [f32], // [n_prefix, n_head_kv·head_dim], used as is
    pub prefix_v: &'a [f32], // [n_prefix, n_head_kv·head_dim]
}

impl AttnInputs<'_> {
    pub(crate) fn check(&self, d: &AttnDims) -> Result<()> {
        d.validate()?;
        check_len("attention q", self.q.len(), &[d.n_q, d.q_dim()])?;
        check_len("attention k", self.k.len(), &[d.n_kv, d.kv_dim()])?;
        check_len("attention v", self.v.len(), &[d.n_kv, d.kv_dim()])?;
        check_len(
            "attention prefix k",
            self.prefix_k.len(),
            &[d.n_prefix, d.kv_dim()],
        )?;
        check_len(
            "attention prefix v",
            self.prefix_v.len(),
            &[d.n_prefix, d.kv_dim()],
        )
    }

    /// Key row `j` of kv head `g`, prefix rows first.
    fn key(&self, d: &AttnDims, j: usize, g: usize) -> &[f32] {
        row(
            if j < d.n_prefix {
                (self.prefix_k, j)
            } else {
                (self.k, j - d.n_prefix)
            },
            d,
            g,
        )
    }

    fn value(&self, d: &AttnDims, j: usize, g: usize) -> &[f32] {
        row(
            if j < d.n_prefix {
                (self.prefix_v, j)
            } else {
                (self.v, j - d.n_prefix)
            },
            d,
            g,
        )
    }
}

fn row<'a>((buf, j): (&'a [f32], usize), d: &AttnDims, g: usize) -> &'a [f32] {
    let start = j * d.kv_dim() + g * d.head_dim;
    &buf[start..start + d.head_dim]
}

pub(crate) fn dot(a: &[f32], b: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let (ca, cb) = (a.chunks_exact(8), b.chunks_exact(8));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for l in 0..8 {
            acc[l] += x[l] * y[l];
        }
    }
    let mut s = (acc[0] + acc[4]) + (acc[1] + acc[5]) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for (x, y) in ra.iter().zip(rb) {
        s += x * y;
    }
    s
}

fn axpy(y: &mut [f32], a: f32, x: &[f32]) {
    for (yi, &xi) in y.iter_mut().zip(x) {
        *yi += a * xi;
    }
}

/// Keys visible to query `i`: all prefix rows and sequence rows up to its own position.
pub(crate) fn n_visible(d: &AttnDims, i: usize) -> usize {
    d.n_prefix + d.n_kv - d.n_q + i + 1
}

/// Splits query rows `0..n_q` into at most `parts` contiguous ranges of about equal work (query
/// `i` reads `n_visible(i)` keys, so later rows cost more). Returns the boundaries.
fn split_rows(d: &AttnDims, parts: usize) -> Vec<usize> {
    let cost = |i: usize| (n_visible(d, i) * d.n_head * d.head_dim) as u64;
    let total: u64 = (0..d.n_q).map(cost).sum();
    // Below this much work a thread costs more than it saves.
    const MIN_WORK_PER_THREAD: u64 = 1 << 16;
    let parts = parts
        .min((total / MIN_WORK_PER_THREAD) as usize)
        .clamp(1, d.n_q.max(1));
    let mut bounds = vec![0];
    let mut acc = 0u64;
    for i in 0..d.n_q {
        acc += cost(i);
        let k = bounds.len() as u64;
        if acc * parts as u64 >= k * total && bounds.len() < parts && i + 1 < d.n_q {
            bounds.push(i + 1);
        }
    }
    bounds.push(d.n_q);
    bounds
}

/// `out = softmax(q·kᵀ·scale)·v` per head; saves `lse[i, h]`, the log-sum-exp of query `i`'s
/// scaled scores in head `h`. Query rows are spread over up to `threads` threads.
pub fn attention_forward(
    out: &mut [f32], // [n_q, n_head·head_dim]
    lse: &mut [f32], // [n_q, n_head]
    x: &AttnInputs,
    d: &AttnDims,
    threads: usize,
) -> Result<()> {
    x.check(d)?;
    check_len("attention out", out.len(), &[d.n_q, d.q_dim()])?;
    check_len("attention lse", lse.len(), &[d.n_q, d.n_head])?;
    let bounds = split_rows(d, threads);
    if bounds.len() == 2 {
        forward_rows(0..d.n_q, out, lse, x, d);
        return Ok(());
    }
    std::thread::scope(|s| {
        let (mut out, mut lse) = (out, lse);
        for w in bounds.windows(2) {
            let (o, rest) = std::mem::take(&mut out).split_at_mut((w[1] - w[0]) * d.q_dim());
            out = rest;
            let (l, rest) = std::mem::take(&mut lse).split_at_mut((w[1] - w[0]) * d.n_head);
            lse = rest;
            let rows = w[0]..w[1];
            s.spawn(move || forward_rows(rows, o, l, x, d));
        }
    });
    Ok(())
}

/// Forward for query rows `rows`; `out` and `lse` hold just those rows.
fn forward_rows(
    rows: std::ops::Range<usize>,
    out: &mut [f32],
    lse: &mut [f32],
    x: &AttnInputs,
    d: &AttnDims,
) {
    let scale = 1.0 / (d.head_dim as f32).sqrt();
    let group = d.n_head / d.n_head_kv;
    let mut p = vec![0f32; d.n_prefix + d.n_kv]; // scores, then probabilities
    for (r, i) in rows.enumerate() {
        let nv = n_visible(d, i);
        for h in 0..d.n_head {
            let g = h / group;
            let qi = &x.q[i * d.q_dim() + h * d.head_dim..][..d.head_dim];
            let mut max = f32::NEG_INFINITY;
            for (j, pj) in p[..nv].iter_mut().enumerate() {
                *pj = dot(qi, x.key(d, j, g)) * scale;
                max = max.max(*pj);
            }
            let mut sum = 0f32;
            for pj in &mut p[..nv] {
                *pj = (*pj - max).exp();
                sum += *pj;
            }
            let oi = &mut out[r * d.q_dim() + h * d.head_dim..][..d.head_dim];
            oi.fill(0.0);
            let inv = 1.0 / sum;
            for (j, &pj) in p[..nv].iter().enumerate() {
                axpy(oi, pj * inv, x.value(d, j, g));
            }
            lse[r * d.n_head + h] = max + sum.ln();
        }
    }
}

/// Gradients of the attention inputs (added): `dq`, `dk`, `dv`, and the prefix rows' `dprefix_k`,
/// `dprefix_v` unless those are empty (a frozen or absent prefix).
pub struct AttnGrads<'a> {
    pub dq: &'a mut [f32],        // [n_q, n_head·head_dim]
    pub dk: &'a mut [f32],        // [n_kv, n_head_kv·head_dim]
    pub dv: &'a mut [f32],        // [n_kv, n_head_kv·head_dim]
    pub dprefix_k: &'a mut [f32], // [n_prefix, n_head_kv·head_dim] or empty
    pub dprefix_v: &'a mut [f32], // [n_prefix, n_head_kv·head_dim] or empty
}

/// Backward of `attention_forward`, recomputing the probabilities from `lse`:
/// `ds = p ⊙ (dout·vᵀ − rowsum(dout ⊙ out))`, `dq += ds·k·scale`, `dk += dsᵀ·q·scale`, `dv += pᵀ·dout`.
/// Query rows are spread over up to `threads` threads; each accumulates its key/value gradients
/// privately and the sums are added in a fixed order, so results depend only on `threads`.
pub fn attention_backward(
    grads: AttnGrads,
    dout: &[f32], // [n_q, n_head·head_dim]
    out: &[f32],  // [n_q, n_head·head_dim]
    lse: &[f32],  // [n_q, n_head]
    x: &AttnInputs,
    d: &AttnDims,
    threads: usize,
) -> Result<()> {
    x.check(d)?;
    let AttnGrads {
        dq,
        dk,
        dv,
        dprefix_k,
        dprefix_v,
    } = grads;
    let (qd, kvd) = (d.q_dim(), d.kv_dim());
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
    let saved = Saved { dout, out, lse };
    let bounds = split_rows(d, threads);
    if bounds.len() == 2 {
        let kv = KvGrads {
            dk,
            dv,
            dprefix_k,
            dprefix_v,
        };
        backward_rows(0..d.n_q, dq, kv, &saved, x, d);
        return Ok(());
    }
    let n_prefix_grad = if prefix_grads { d.n_prefix * kvd } else { 0 };
    let mut partial: Vec<Vec<f32>> = Vec::new();
    std::thread::scope(|s| {
        let mut dq = dq;
        let mut handles = Vec::new();
        for w in bounds.windows(2) {
            let (dq_rows, rest) = std::mem::take(&mut dq).split_at_mut((w[1] - w[0]) * qd);
            dq = rest;
            let rows = w[0]..w[1];
            let saved = &saved;
            handles.push(s.spawn(move || {
                // [dk | dv | dprefix_k | dprefix_v] of this thread's rows.
                let mut buf = vec![0f32; 2 * d.n_kv * kvd + 2 * n_prefix_grad];
                let (dk, rest) = buf.split_at_mut(d.n_kv * kvd);
                let (dv, rest) = rest.split_at_mut(d.n_kv * kvd);
                let (dprefix_k, dprefix_v) = rest.split_at_mut(n_prefix_grad);
                backward_rows(
                    rows,
                    dq_rows,
                    KvGrads {
                        dk,
                        dv,
                        dprefix_k,
                        dprefix_v,
                    },
                    saved,
                    x,
                    d,
                );
                buf
            }));
        }
        partial = handles
            .into_iter()
            .map(|h| h.join().unwrap_or_default())
            .collect();
    });
    for buf in &partial {
        let (pk, rest) = buf.split_at(d.n_kv * kvd);
        let (pv, rest) = rest.split_at(d.n_kv * kvd);
        let (ppk, ppv) = rest.split_at(n_prefix_grad);
        for (dst, src) in [
            (&mut *dk, pk),
            (&mut *dv, pv),
            (&mut *dprefix_k, ppk),
            (&mut *dprefix_v, ppv),
        ] {
            for (a, &b) in dst.iter_mut().zip(src) {
                *a += b;
            }
        }
    }
    Ok(())
}

/// What backward reads besides the inputs.
struct Saved<'a> {
    dout: &'a [f32],
    out: &'a [f32],
    lse: &'a [f32],
}

struct KvGrads<'a> {
    dk: &'a mut [f32],
    dv: &'a mut [f32],
    dprefix_k: &'a mut [f32],
    dprefix_v: &'a mut [f32],
}

/// Backward for query rows `rows`; `dq` holds just those rows, the key/value gradients are whole.
fn backward_rows(
    rows: std::ops::Range<usize>,
    dq: &mut [f32],
    kv: KvGrads,
    saved: &Saved,
    x: &AttnInputs,
    d: &AttnDims,
) {
    let KvGrads {
        dk,
        dv,
        dprefix_k,
        dprefix_v,
    } = kv;
    let prefix_grads = !dprefix_k.is_empty();
    let (qd, kvd, hd) = (d.q_dim(), d.kv_dim(), d.head_dim);
    let scale = 1.0 / (hd as f32).sqrt();
    let group = d.n_head / d.n_head_kv;
    for (r, i) in rows.enumerate() {
        for h in 0..d.n_head {
            let g = h / group;
            let off = i * qd + h * hd;
            let qi = &x.q[off..off + hd];
            let doi = &saved.dout[off..off + hd];
            let big_d = dot(doi, &saved.out[off..off + hd]);
            let l = saved.lse[i * d.n_head + h];
            let dqi = &mut dq[r * qd + h * hd..][..hd];
            for j in 0..n_visible(d, i) {
                let kj = x.key(d, j, g);
                let p = (dot(qi, kj) * scale - l).exp();
                let dp = dot(doi, x.value(d, j, g));
                let ds = p * (dp - big_d) * scale;
                axpy(dqi, ds, kj);
                let (dk_buf, dv_buf, r) = if j < d.n_prefix {
                    if !prefix_grads {
                        continue;
                    }
                    (&mut *dprefix_k, &mut *dprefix_v, j)
                } else {
                    (&mut *dk, &mut *dv, j - d.n_prefix)
                };
                let start = r * kvd + g * hd;
                axpy(&mut dk_buf[start..start + hd], ds, qi);
                axpy(&mut dv_buf[start..start + hd], p, doi);
            }
        }
    }
}
