//! One forward pass over a batch and what follows from it: logits for chosen rows, per-token NLL,
//! the causal-LM loss, and backward down to the input embeddings.

use super::acts::{ActivationMode, Activations, Recycle};
use super::bufs::BufferPool;
use super::config::Config;
use super::hook::LinearHook;
use super::llama::{Llama, StepCtx};
use super::ops::cross_entropy::{cross_entropy_forward, cross_entropy_train};
use super::ops::rmsnorm::rmsnorm_backward_on;
use super::ops::rope::RopeTable;
use super::ops::IGNORE_INDEX;
use super::PrefixKv;
use crate::error::{Error, Result};

/// Summed NLL over the predicted tokens and their count.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LossStats {
    pub sum_nll: f64,
    pub n_tokens: usize,
}

impl LossStats {
    /// Mean NLL (0 when nothing was predicted).
    pub fn mean(&self) -> f64 {
        if self.n_tokens == 0 {
            0.0
        } else {
            self.sum_nll / self.n_tokens as f64
        }
    }
}

/// What `backward` returns.
#[derive(Clone, Debug)]
pub struct BackwardOutput {
    pub loss: LossStats,
    /// d(loss)/d(input embeddings) `[n_seq, n_virtual + seq_len, n_embd]`: virtual-token rows
    /// first in each sequence, then one row per token.
    pub d_embeds: Vec<f32>,
}

/// Gradient buffers of one block, reused across blocks: one buffer (from the model's pool), zeroed
/// by `block_backward` before each block adds into it.
pub(crate) struct GradScratch {
    buf: Vec<f32>,
    sizes: [usize; 8],
}

/// Views of `GradScratch`.
pub(crate) struct GradBufs<'a> {
    pub dln: &'a mut [f32],   // [n, d]
    pub dq: &'a mut [f32],    // [n, q_dim]
    pub dk: &'a mut [f32],    // [n, kv_dim]
    pub dv: &'a mut [f32],    // [n, kv_dim]
    pub datt: &'a mut [f32],  // [n, q_dim]
    pub dh: &'a mut [f32],    // [n, n_ff]
    pub dgate: &'a mut [f32], // [n, n_ff]
    pub dup: &'a mut [f32],   // [n, n_ff]
}

impl GradScratch {
    fn new(pool: &BufferPool, cfg: &Config, n: usize) -> GradScratch {
        let (d, q, kv, ff) = (cfg.n_embd, cfg.q_dim(), cfg.kv_dim(), cfg.n_ff);
        let sizes = [d, q, kv, kv, q, ff, ff, ff].map(|w| n * w);
        GradScratch {
            buf: pool.take(sizes.iter().sum()),
            sizes,
        }
    }

    /// The whole buffer (to zero it at once).
    pub fn all(&mut self) -> &mut [f32] {
        &mut self.buf
    }

    pub fn split(&mut self) -> GradBufs<'_> {
        let mut rest = &mut self.buf[..];
        let [dln, dq, dk, dv, datt, dh, dgate, dup] = self.sizes.map(|n| {
            let (a, b) = std::mem::take(&mut rest).split_at_mut(n);
            rest = b;
            a
        });
        GradBufs {
            dln,
            dq,
            dk,
            dv,
            datt,
            dh,
            dgate,
            dup,
        }
    }
}

/// The state of one forward pass over a batch: its activations, and what can be computed from
/// them. Rows are `b·seq_len + t`, where each sequence's first `n_virtual` rows are the virtual
/// tokens (prompt tuning) and the rest its tokens.
pub struct Forward<'m, 'w> {
    model: &'m Llama<'w>,
    acts: Activations,
    /// Which of `acts`' buffers go back to the model's pool when the pass ends.
    recycle: Recycle,
    positions: Vec<usize>,
    segments: Vec<std::ops::Range<usize>>,
    rope: RopeTable,
    prefix: Option<&'m PrefixKv>,
    pub n_seq: usize,
    /// Rows per sequence: virtual tokens plus tokens.
    pub seq_len: usize,
    pub n_virtual: usize,
}

impl<'m, 'w> Forward<'m, 'w> {
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn new(
        model: &'m Llama<'w>,
        (acts, recycle): (Activations, Recycle),
        positions: Vec<usize>,
        segments: Vec<std::ops::Range<usize>>,
        rope: RopeTable,
        prefix: Option<&'m PrefixKv>,
        n_seq: usize,
        seq_len: usize,
        n_virtual: usize,
    ) -> Forward<'m, 'w> {
        Forward {
            model,
            acts,
            recycle,
            positions,
            segments,
            rope,
            prefix,
            n_seq,
            seq_len,
            n_virtual,
        }
    }

    /// The final hidden states after the output norm `[n_seq·seq_len, n_embd]`.
    pub fn hidden(&self) -> &[f32] {
        &self.acts.lnf
    }

    /// Logits `[rows.len(), n_vocab]` for the given rows, computed `lm_chunk_rows` at a time.
    pub fn logits(&self, rows: &[usize]) -> Result<Vec<f32>> {
        let (d, nv) = (self.model.config.n_embd, self.model.config.n_vocab);
        let n = self.n_seq * self.seq_len;
        if let Some(&r) = rows.iter().find(|&&r| r >= n) {
            return Err(Error::InvalidArgument(format!(
                "logits: row {r} is outside the batch of {n} rows"
            )));
        }
        let mut out = vec![0f32; rows.len() * nv];
        let chunk = self.model.lm_chunk_rows();
        let mut x = vec![0f32; chunk.min(rows.len()) * d];
        for (rs, o) in rows.chunks(chunk).zip(out.chunks_mut(chunk * nv)) {
            for (xr, &r) in x.chunks_exact_mut(d).zip(rs) {
                xr.copy_from_slice(&self.acts.lnf[r * d..(r + 1) * d]);
            }
            self.model.backend().linear_forward(
                &x[..rs.len() * d],
                rs.len(),
                &self.model.weights.output,
                o,
            )?;
        }
        Ok(out)
    }

    /// The target of every row: `labels` (`[n_seq, tokens per sequence]`, −100 = ignored) put
    /// after −100 for the virtual tokens, then shifted left by one within each sequence (HF's
    /// causal-LM shift), −100 last. The last virtual token thus predicts the first label, as in
    /// PEFT prompt tuning.
    pub fn targets(&self, labels: &[i32]) -> Result<Vec<i32>> {
        let per_seq = self.seq_len - self.n_virtual;
        if labels.len() != self.n_seq * per_seq {
            return Err(Error::InvalidArgument(format!(
                "{} labels for a batch of {} x {per_seq} tokens",
                labels.len(),
                self.n_seq
            )));
        }
        let mut t = vec![IGNORE_INDEX; self.n_seq * self.seq_len];
        for b in 0..self.n_seq {
            let row = b * self.seq_len;
            // Row r predicts the label of row r + 1; rows n_virtual-1 .. seq_len-2 have one.
            let first = self.n_virtual.saturating_sub(1);
            let src = &labels[b * per_seq + usize::from(self.n_virtual == 0)..(b + 1) * per_seq];
            t[row + first..row + first + src.len()].copy_from_slice(src);
        }
        Ok(t)
    }

    /// NLL of each row's target `[n_seq·seq_len]` (0 where ignored).
    pub fn token_nll(&self, labels: &[i32]) -> Result<Vec<f32>> {
        let targets = self.targets(labels)?;
        let mut losses = vec![0f32; targets.len()];
        cross_entropy_forward(&mut losses, &self.acts.lnf, &targets, &self.model.lm_head())?;
        Ok(losses)
    }

    pub fn loss(&self, labels: &[i32]) -> Result<LossStats> {
        let targets = self.targets(labels)?;
        let nll = self.token_nll(labels)?;
        Ok(stats(&nll, &targets))
    }

    /// Backward from the loss over `labels` to the input embeddings; see `Llama::forward_backward`.
    pub fn backward(
        &mut self,
        labels: &[i32],
        denominator: Option<usize>,
        hook: &mut dyn LinearHook,
        mut dprefix: Option<&mut PrefixKv>,
    ) -> Result<BackwardOutput> {
        let model = self.model;
        let cfg = &model.config;
        if self.acts.mode == ActivationMode::Inference {
            return Err(Error::InvalidArgument(
                "backward needs a forward run with ActivationMode::Full or Checkpoint".into(),
            ));
        }
        match (dprefix.as_deref(), self.prefix) {
            (Some(dp), Some(p)) if dp.n_prefix() != p.n_prefix() => {
                return Err(Error::InvalidArgument(format!(
                    "prefix gradient has {} tokens, the prefix {}",
                    dp.n_prefix(),
                    p.n_prefix()
                )))
            }
            (Some(dp), Some(_)) => dp.check(cfg)?,
            (Some(_), None) => {
                return Err(Error::InvalidArgument(
                    "prefix gradient requested for a forward without prefix".into(),
                ))
            }
            _ => {}
        }
        let targets = self.targets(labels)?;
        let n_valid = targets.iter().filter(|&&t| t != IGNORE_INDEX).count();
        let denom = denominator.unwrap_or(n_valid).max(1) as f32;
        let dlosses: Vec<f32> = targets
            .iter()
            .map(|&t| if t == IGNORE_INDEX { 0.0 } else { 1.0 / denom })
            .collect();
        let (n, d) = (targets.len(), cfg.n_embd);
        let mut losses = vec![0f32; n];
        // Not kept between steps: the plan counts it in the Loss phase only (zeroed, a heap block).
        let mut dlnf = vec![0f32; n * d];
        cross_entropy_train(
            &model.bufs,
            &mut losses,
            &mut dlnf,
            &dlosses,
            &self.acts.lnf,
            &targets,
            &model.lm_head(),
        )?;
        let mut dres = vec![0f32; n * d];
        let x_final = self.acts.resid(cfg.n_layer);
        rmsnorm_backward_on(
            model.backend(),
            &mut dres,
            &dlnf,
            x_final,
            &self.acts.rstdf,
            &model.weights.output_norm,
            n,
            d,
        )?;
        drop(dlnf);
        let mut g = GradScratch::new(&model.bufs, cfg, n);
        let step = StepCtx {
            positions: &self.positions,
            rope: &self.rope,
            prefix: self.prefix,
            segments: &self.segments,
        };
        let recompute = self.acts.mode == ActivationMode::Checkpoint;
        for l in (0..cfg.n_layer).rev() {
            let mut buf = self.acts.block(l);
            if recompute {
                model.block_forward(l, &mut buf, &step, None, hook)?;
            }
            model.block_backward(
                l,
                &buf.acts,
                buf.x_in,
                &mut dres,
                &mut g,
                &step,
                hook,
                dprefix.as_deref_mut(),
            )?;
        }
        model.bufs.give_back(g.buf);
        Ok(BackwardOutput {
            loss: stats(&losses, &targets),
            d_embeds: dres,
        })
    }

    /// Bytes held by this pass's activations.
    pub fn activation_bytes(&self) -> usize {
        self.acts.bytes()
    }
}

impl Drop for Forward<'_, '_> {
    fn drop(&mut self) {
        self.acts.recycle_into(&self.model.bufs, self.recycle);
    }
}

fn stats(losses: &[f32], targets: &[i32]) -> LossStats {
    let mut s = LossStats::default();
    for (&l, &t) in losses.iter().zip(targets) {
        if t != IGNORE_INDEX {
            s.sum_nll += l as f64;
            s.n_tokens += 1;
        }
    }
    s
}
