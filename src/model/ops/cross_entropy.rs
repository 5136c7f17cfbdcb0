//! Cross-entropy over the vocabulary, fused with the output projection and computed a chunk of
//! rows at a time, so the largest logits buffer is `[chunk_rows, n_vocab]` however many tokens
//! there are. Rows whose target is `IGNORE_INDEX` are skipped entirely (no logits computed).
//!
//! `loss[r] = logsumexp(logits[r]) − logits[r, target[r]]`, `logits = hidden · Wᵀ`. Backward
//! recomputes each chunk's logits, turns them into `dloss[r] · (softmax − onehot)` and sends that
//! through the backend's `linear_backward_input` to get `dhidden`.

use super::{check_len, vexp, IGNORE_INDEX};
use crate::backend::{Backend, LinearWeight};
use crate::error::{Error, Result};
use std::sync::Mutex;

/// The output projection and how many rows of logits to materialise at once.
pub struct LmHead<'a, 'w> {
    pub weight: &'a LinearWeight<'w>, // [n_vocab, d]
    pub backend: &'a dyn Backend,
    pub chunk_rows: usize,
}

enum Mode<'a> {
    Forward,
    Backward {
        dhidden: &'a mut [f32],
        dlosses: &'a [f32],
    },
}

/// `losses[r]` for every row with a target (0 for ignored rows).
pub fn cross_entropy_forward(
    losses: &mut [f32], // [n]
    hidden: &[f32],     // [n, d]
    targets: &[i32],    // [n]
    head: &LmHead,
) -> Result<()> {
    run(Some(losses), Mode::Forward, hidden, targets, head)
}

/// `dhidden[n, d] += dlosses[r] · (softmax(logits[r]) − onehot(target[r])) · W` (logits recomputed).
pub fn cross_entropy_backward(
    dhidden: &mut [f32], // [n, d]
    dlosses: &[f32],     // [n]
    hidden: &[f32],      // [n, d]
    targets: &[i32],     // [n]
    head: &LmHead,
) -> Result<()> {
    run(
        None,
        Mode::Backward { dhidden, dlosses },
        hidden,
        targets,
        head,
    )
}

/// Forward and backward in one pass (each chunk's logits are computed once): what training uses.
pub fn cross_entropy_forward_backward(
    losses: &mut [f32],  // [n]
    dhidden: &mut [f32], // [n, d]
    dlosses: &[f32],     // [n]
    hidden: &[f32],      // [n, d]
    targets: &[i32],     // [n]
    head: &LmHead,
) -> Result<()> {
    run(
        Some(losses),
        Mode::Backward { dhidden, dlosses },
        hidden,
        targets,
        head,
    )
}

fn run(
    mut losses: Option<&mut [f32]>,
    mut mode: Mode,
    hidden: &[f32],
    targets: &[i32],
    head: &LmHead,
) -> Result<()> {
    let (d, n_vocab) = (head.weight.n_in, head.weight.n_out);
    let n = targets.len();
    check_len("cross-entropy hidden", hidden.len(), &[n, d])?;
    if let Some(l) = losses.as_deref_mut() {
        check_len("cross-entropy losses", l.len(), &[n])?;
        l.fill(0.0);
    }
    if let Mode::Backward { dhidden, dlosses } = &mode {
        check_len("cross-entropy dhidden", dhidden.len(), &[n, d])?;
        check_len("cross-entropy dlosses", dlosses.len(), &[n])?;
    }
    if head.chunk_rows == 0 {
        return Err(Error::InvalidArgument(
            "cross-entropy: chunk_rows must be at least 1".into(),
        ));
    }
    let mut rows = Vec::with_capacity(n);
    for (r, &t) in targets.iter().enumerate() {
        if t == IGNORE_INDEX {
            continue;
        }
        if t < 0 || t as usize >= n_vocab {
            return Err(Error::InvalidArgument(format!(
                "target {t} at row {r} is outside the vocabulary of {n_vocab} tokens (use {IGNORE_INDEX} to ignore)"
            )));
        }
        rows.push(r);
    }
    let c_max = head.chunk_rows.min(rows.len());
    let mut x = vec![0f32; c_max * d]; // [c, d]
    let mut logits = vec![0f32; c_max * n_vocab]; // [c, n_vocab]
    let mut dx = match mode {
        Mode::Backward { .. } => vec![0f32; c_max * d], // [c, d]
        Mode::Forward => Vec::new(),
    };
    let dlosses = match &mode {
        Mode::Backward { dlosses, .. } => Some(*dlosses),
        Mode::Forward => None,
    };
    for chunk in rows.chunks(head.chunk_rows.max(1)) {
        let c = chunk.len();
        for (xr, &r) in x.chunks_exact_mut(d).zip(chunk) {
            xr.copy_from_slice(&hidden[r * d..(r + 1) * d]);
        }
        head.backend
            .linear_forward(&x[..c * d], c, head.weight, &mut logits[..c * n_vocab])?;
        // Rows are independent: softmax them on the backend's threads, each row's loss kept
        // next to it.
        let slots: Vec<Mutex<(&mut [f32], f32)>> = logits[..c * n_vocab]
            .chunks_exact_mut(n_vocab)
            .map(|lr| Mutex::new((lr, 0.0)))
            .collect();
        head.backend.parallel_for(c, &|i| {
            let mut slot = slots[i]
                .lock()
                .map_err(|_| Error::InvalidArgument("cross-entropy: a worker panicked".into()))?;
            let (lr, loss) = &mut *slot;
            let r = chunk[i];
            let t = targets[r] as usize;
            let target = lr[t];
            let max = vexp::max(lr);
            lr.iter_mut().for_each(|v| *v = vexp::exp(*v - max));
            let sum = vexp::sum_f64(lr);
            let lse = max + sum.ln() as f32;
            *loss = lse - target;
            if let Some(dlosses) = dlosses {
                // softmax · g = exp(v − max) · g / sum.
                let g = dlosses[r];
                let s = (g as f64 / sum) as f32;
                lr.iter_mut().for_each(|v| *v *= s);
                lr[t] -= g;
            }
            Ok(())
        })?;
        if let Some(l) = losses.as_deref_mut() {
            for (slot, &r) in slots.iter().zip(chunk) {
                l[r] = slot.lock().map_or(f32::NAN, |s| s.1);
            }
        }
        drop(slots);
        if let Mode::Backward { dhidden, .. } = &mut mode {
            let dxc = &mut dx[..c * d];
            dxc.fill(0.0);
            head.backend
                .linear_backward_input(&logits[..c * n_vocab], c, head.weight, dxc)?;
            for (g, &r) in dxc.chunks_exact(d).zip(chunk) {
                for (a, &b) in dhidden[r * d..(r + 1) * d].iter_mut().zip(g) {
                    *a += b;
                }
            }
        }
    }
    Ok(())
}
