//! Cross-entropy over the vocabulary, fused with the output projection and computed a chunk of
//! rows at a time, so the largest logits buffer is `[chunk_rows, n_vocab]` however many tokens
//! there are. Rows whose target is `IGNORE_INDEX` are skipped entirely (no logits computed).
//!
//! `loss[r] = logsumexp(logits[r]) − logits[r, target[r]]`, `logits = hidden · Wᵀ`. The vocabulary
//! is walked in tiles of `VOCAB_TILE` weight rows, each decoded once and used for every row of the
//! chunk, with a running log-sum-exp per row (a max and a sum of exponentials rescaled when the
//! max grows). With the gradient the same single pass also accumulates `acc = Σ exp(logit − max)·W`
//! per row (rescaled with the sum, as flash attention accumulates its output), so each tile's
//! logits are computed once; at the end `dhidden = g·(acc / sum − W[target])`. A training step
//! thus runs the output projection twice (logits, and `dlogits·W`), decodes its weight once per
//! chunk of rows, and no buffer holds a whole vocabulary row.

use super::{check_len, vexp, IGNORE_INDEX};
use crate::backend::{Backend, LinearWeight};
use crate::error::{Error, Result};
use crate::model::bufs::BufferPool;
use std::sync::atomic::{AtomicU32, Ordering};
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
    run(Some(losses), Mode::Forward, hidden, targets, head, None)
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
        None,
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
        None,
    )
}

/// `cross_entropy_forward_backward` with its scratch (row inputs, a weight tile, a logits tile,
/// accumulated row gradients, target weight rows) taken from `pool` and given back (training
/// reuses it every step).
pub(crate) fn cross_entropy_train(
    pool: &BufferPool,
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
        Some(pool),
    )
}

fn run(
    mut losses: Option<&mut [f32]>,
    mut mode: Mode,
    hidden: &[f32],
    targets: &[i32],
    head: &LmHead,
    pool: Option<&BufferPool>,
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
    let dlosses = match &mode {
        Mode::Backward { dlosses, .. } => Some(*dlosses),
        Mode::Forward => None,
    };
    let tile = VOCAB_TILE.min(n_vocab);
    let c_max = head.chunk_rows.min(rows.len());
    // One scratch buffer, every part written before it is read (stale memory from a pool is
    // fine): x [c, d] rows copied in, w [tile, d] decoded, logits [c, tile] a product with
    // beta = 0; backward: acc [c, d] (the accumulated softmax·W) zeroed per chunk, wt [c, d]
    // (each row's target weight row) written when its target's tile is seen.
    let backward = matches!(mode, Mode::Backward { .. });
    let row_grads = if backward { c_max * d } else { 0 };
    let sizes = [c_max * d, tile * d, c_max * tile, row_grads, row_grads];
    let total = sizes.iter().sum();
    let mut scratch = pool.map_or_else(|| vec![0f32; total], |p| p.take(total));
    let (x, rest) = scratch.split_at_mut(sizes[0]);
    let (w, rest) = rest.split_at_mut(sizes[1]);
    let (logits, rest) = rest.split_at_mut(sizes[2]);
    let (dx, wt_rows) = rest.split_at_mut(sizes[3]);
    for chunk in rows.chunks(head.chunk_rows.max(1)) {
        let c = chunk.len();
        for (xr, &r) in x.chunks_exact_mut(d).zip(chunk) {
            xr.copy_from_slice(&hidden[r * d..(r + 1) * d]);
        }
        let mut stats: Vec<Mutex<RowStats>> = (0..c).map(|_| Mutex::new(RowStats::new())).collect();
        let target_in = |v0: usize, tv: usize, i: usize| {
            let t = targets[chunk[i]] as usize;
            (v0..v0 + tv).contains(&t).then(|| t - v0)
        };
        let grad = match (&mut mode, dlosses) {
            (Mode::Backward { dhidden, .. }, Some(dlosses)) => Some((dhidden, dlosses)),
            _ => None,
        };
        let Some((dhidden, dlosses)) = grad else {
            // Loss only: the log-sum-exp of every row, one vocabulary tile at a time (online: a
            // running max and a sum of exponentials rescaled when the max grows), and the
            // target's logit.
            walk_tiles(
                head,
                &x[..c * d],
                w,
                logits,
                &|v0, i, row| {
                    let target = target_in(v0, row.len(), i).map(|t| row[t]);
                    lock(&stats[i])?.add(row, target);
                    Ok(())
                },
                &mut |_, _, _, _| Ok(()),
            )?;
            if let Some(l) = losses.as_deref_mut() {
                for (st, &r) in stats.iter_mut().zip(chunk) {
                    let (lse, target) = st.get_mut().map_or((f32::NAN, f32::NAN), |s| s.finish());
                    l[r] = lse - target;
                }
            }
            continue;
        };
        // With the gradient, one pass too (each tile's logits computed once): the tile's
        // logits become `exp(logit − running max)` and `acc += that · W_tile`, after `acc` is
        // rescaled by `exp(old max − new max)` whenever a row's max grows (as flash attention
        // accumulates its output). At the end `sum = Σ exp(logit − max)` is known and
        // `dx = g·softmax·W − g·W[target] = (g / sum)·acc − g·W[target]`.
        let acc = &mut dx[..c * d];
        acc.fill(0.0);
        let wt = &mut wt_rows[..c * d];
        let scales: Vec<AtomicU32> = (0..c).map(|_| AtomicU32::new(1f32.to_bits())).collect();
        walk_tiles(
            head,
            &x[..c * d],
            w,
            logits,
            &|v0, i, row| {
                let target = target_in(v0, row.len(), i).map(|t| row[t]);
                let mut st = lock(&stats[i])?;
                let old = st.max;
                st.add(row, target);
                let scale = if old == st.max {
                    1.0
                } else {
                    (old - st.max).exp()
                };
                scales[i].store(scale.to_bits(), Ordering::Relaxed);
                Ok(())
            },
            &mut |v0, tv, p, w_tile| {
                for (i, a) in acc.chunks_exact_mut(d).enumerate() {
                    let scale = f32::from_bits(scales[i].load(Ordering::Relaxed));
                    if scale != 1.0 {
                        a.iter_mut().for_each(|v| *v *= scale);
                    }
                    if let Some(t) = target_in(v0, tv, i) {
                        wt[i * d..(i + 1) * d].copy_from_slice(&w_tile[t * d..(t + 1) * d]);
                    }
                }
                head.backend.gemm_nn(p, w_tile, acc, c, d, tv, 1.0);
                Ok(())
            },
        )?;
        for (i, &r) in chunk.iter().enumerate() {
            let st = stats[i]
                .get_mut()
                .map_err(|_| Error::InvalidArgument("cross-entropy: a worker panicked".into()))?;
            let (lse, target) = st.finish();
            if let Some(l) = losses.as_deref_mut() {
                l[r] = lse - target;
            }
            let g = dlosses[r];
            let k = (g as f64 / st.sum) as f32;
            let out = &mut dhidden[r * d..(r + 1) * d];
            for ((o, &a), &wv) in out.iter_mut().zip(&acc[i * d..]).zip(&wt[i * d..]) {
                *o += k * a - g * wv;
            }
        }
    }
    if let Some(p) = pool {
        p.give_back(scratch);
    }
    Ok(())
}

/// Vocabulary rows per tile: the weight tile `[VOCAB_TILE, d]` is decoded once per pass over a
/// chunk of rows, and the logits buffer is `[chunk_rows, VOCAB_TILE]`.
pub const VOCAB_TILE: usize = 1024;

/// Per-row work on one tile's logits: `(v0, row index, the row's logits of the tile)`.
type RowFn<'a> = dyn Fn(usize, usize, &mut [f32]) -> Result<()> + Sync + 'a;

/// Work after a tile: `(v0, tile rows, the tile's logits [c, tile] after the per-row work, its
/// decoded weight [tile, d])`.
type TileFn<'a> = dyn FnMut(usize, usize, &[f32], &[f32]) -> Result<()> + 'a;

/// For each vocabulary tile: its logits for the `c` rows of `x` (`tile_logits`), `per_row` on
/// every row (on the backend's threads), then `after(v0, tv, logits, decoded weight tile)`.
fn walk_tiles(
    head: &LmHead,
    x: &[f32],
    w: &mut [f32],
    logits: &mut [f32],
    per_row: &RowFn,
    after: &mut TileFn,
) -> Result<()> {
    let (d, n_vocab) = (head.weight.n_in, head.weight.n_out);
    let c = x.len() / d;
    let tile = w.len() / d;
    for v0 in (0..n_vocab).step_by(tile) {
        let tv = tile.min(n_vocab - v0);
        tile_logits(head, x, v0, &mut w[..tv * d], &mut logits[..c * tv], c)?;
        let rows: Vec<Mutex<&mut [f32]>> = logits[..c * tv]
            .chunks_exact_mut(tv)
            .map(Mutex::new)
            .collect();
        head.backend
            .parallel_for(c, &|i| per_row(v0, i, &mut lock(&rows[i])?))?;
        drop(rows);
        after(v0, tv, &logits[..c * tv], &w[..tv * d])?;
    }
    Ok(())
}

/// `logits[c, tv] = x[c, d] · W[v0..v0 + tv]ᵀ`, decoding the weight rows into `w`.
fn tile_logits(
    head: &LmHead,
    x: &[f32],
    v0: usize,
    w: &mut [f32],
    logits: &mut [f32],
    c: usize,
) -> Result<()> {
    let d = head.weight.n_in;
    let tv = w.len() / d;
    // Decode in parallel pieces (the GEMM that follows is threaded too).
    let parts = head.backend.threads().clamp(1, tv);
    let per = tv.div_ceil(parts);
    let pieces: Vec<Mutex<&mut [f32]>> = w.chunks_mut(per * d).map(Mutex::new).collect();
    head.backend.parallel_for(pieces.len(), &|i| {
        let mut piece = lock(&pieces[i])?;
        head.weight.decode_rows(v0 + i * per, &mut piece)
    })?;
    drop(pieces);
    head.backend.gemm_nt(x, w, logits, c, tv, d, 0.0);
    Ok(())
}

fn lock<T>(m: &Mutex<T>) -> Result<std::sync::MutexGuard<'_, T>> {
    m.lock()
        .map_err(|_| Error::InvalidArgument("cross-entropy: a worker panicked".into()))
}

/// A row's running maximum and sum of `exp(logit − max)` over the tiles seen, and its target's
/// logit once seen.
struct RowStats {
    max: f32,
    sum: f64,
    target: f32,
}

impl RowStats {
    fn new() -> RowStats {
        RowStats {
            max: f32::NEG_INFINITY,
            sum: 0.0,
            target: f32::NAN,
        }
    }

    /// Takes in one tile of the row's logits (overwritten with scratch).
    fn add(&mut self, row: &mut [f32], target: Option<f32>) {
        let m = vexp::max(row).max(self.max);
        if m > self.max && self.sum > 0.0 {
            self.sum *= ((self.max - m) as f64).exp();
        }
        self.max = m;
        self.sum += vexp::exp_sub_sum_f64(crate::cpu::simd_level(), row, m);
        if let Some(t) = target {
            self.target = t;
        }
    }

    /// `(logsumexp, target logit)`.
    fn finish(&self) -> (f32, f32) {
        (self.max + self.sum.ln() as f32, self.target)
    }
}
