//! The Llama-family decoder: forward over a batch of equally long sequences, saving what backward
//! needs block by block; the loss (mean NLL over shifted targets, as transformers computes it);
//! and backward down to the input embeddings. Base weights are frozen, so backward produces only
//! activation gradients (and whatever the `LinearHook` and the prefix accumulate).
//!
//! Block `l` (HF `LlamaDecoderLayer`):
//! ```text
//! ln1 = rmsnorm(x)            q,k,v = ln1·Wq,k,vᵀ (+b)     q,k = rope(q,k)
//! att = attention(q,k,v)      x_mid = x + att·Woᵀ (+b)
//! ln2 = rmsnorm(x_mid)        h = silu(ln2·Wgᵀ) ⊙ (ln2·Wuᵀ)  x_out = x_mid + h·Wdᵀ
//! ```

use super::acts::{ActivationMode, Activations, BlockBuffers, LayerActs};
use super::cache::KvCache;
use super::config::Config;
use super::hook::{BaseLinear, LinearHook, LinearKind, LinearSite};
use super::ops::attention::{
    attention_backward, attention_forward, AttnDims, AttnGrads, AttnInputs,
};
use super::ops::cross_entropy::{cross_entropy_forward, cross_entropy_forward_backward, LmHead};
use super::ops::embedding::embedding_forward;
use super::ops::residual::add_inplace;
use super::ops::rmsnorm::{rmsnorm_backward, rmsnorm_forward};
use super::ops::rope::{rope_backward, rope_forward, RopeTable};
use super::ops::swiglu::{swiglu_backward, swiglu_forward};
use super::ops::IGNORE_INDEX;
use super::weights::{LayerWeights, ModelWeights};
use super::PrefixKv;
use crate::backend::{Backend, LinearWeight};
use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::weights::Weights;
use std::sync::Arc;

/// Rows of logits the output projection materialises at once, unless set otherwise.
pub const DEFAULT_LM_CHUNK_ROWS: usize = 64;

/// `n_seq` sequences of `seq_len` tokens, row-major (`tokens[b·seq_len + t]`). Shorter sequences
/// are right-padded (any token) with label −100 at the padding: causal attention never lets a
/// real token see the padding after it.
#[derive(Clone, Copy, Debug)]
pub struct Batch<'a> {
    pub tokens: &'a [u32],
    pub n_seq: usize,
    pub seq_len: usize,
}

impl<'a> Batch<'a> {
    pub fn single(tokens: &'a [u32]) -> Batch<'a> {
        Batch {
            tokens,
            n_seq: 1,
            seq_len: tokens.len(),
        }
    }
}

/// How to run a forward pass.
#[derive(Clone, Copy)]
pub struct ForwardOptions<'a> {
    pub mode: ActivationMode,
    /// Prefix-tuning keys/values, visible to every token of every sequence of every block.
    pub prefix: Option<&'a PrefixKv>,
}

impl Default for ForwardOptions<'_> {
    fn default() -> Self {
        ForwardOptions {
            mode: ActivationMode::Full,
            prefix: None,
        }
    }
}

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
    /// d(loss)/d(input embeddings) `[n_seq·seq_len, n_embd]`.
    pub d_embeds: Vec<f32>,
}

/// A loaded model: config, weight views and the backend that runs its matrix products.
pub struct Llama<'w> {
    pub config: Config,
    pub weights: ModelWeights<'w>,
    backend: Arc<dyn Backend>,
    lm_chunk_rows: usize,
}

impl<'w> Llama<'w> {
    /// Reads the config from the file's metadata and checks every tensor against it.
    pub fn new(file: &'w GgufFile, backend: Arc<dyn Backend>) -> Result<Llama<'w>> {
        let config = Config::from_header(file.header())?;
        let weights = Weights::new(file)?;
        Self::from_parts(config, &weights, backend)
    }

    pub fn from_parts(
        config: Config,
        weights: &Weights<'w>,
        backend: Arc<dyn Backend>,
    ) -> Result<Llama<'w>> {
        let weights = ModelWeights::load(&config, weights)?;
        Ok(Llama {
            config,
            weights,
            backend,
            lm_chunk_rows: DEFAULT_LM_CHUNK_ROWS,
        })
    }

    pub fn backend(&self) -> &dyn Backend {
        &*self.backend
    }

    /// Rows of logits computed at once by the loss and `logits` (bounds that buffer to
    /// `rows × n_vocab` f32).
    pub fn set_lm_chunk_rows(&mut self, rows: usize) -> Result<()> {
        if rows == 0 {
            return Err(Error::InvalidArgument(
                "lm_chunk_rows must be at least 1".into(),
            ));
        }
        self.lm_chunk_rows = rows;
        Ok(())
    }

    pub fn lm_chunk_rows(&self) -> usize {
        self.lm_chunk_rows
    }

    pub(crate) fn lm_head(&self) -> LmHead<'_, 'w> {
        LmHead {
            weight: &self.weights.output,
            backend: &*self.backend,
            chunk_rows: self.lm_chunk_rows,
        }
    }

    pub(crate) fn rope_table(&self, first_pos: usize, n_pos: usize) -> Result<RopeTable> {
        RopeTable::new(
            &self.config.rope,
            self.weights.rope_freqs.as_deref(),
            first_pos,
            n_pos,
        )
    }

    fn check_batch(&self, batch: &Batch, n_prefix: usize) -> Result<()> {
        if batch.n_seq == 0 || batch.seq_len == 0 || batch.tokens.is_empty() {
            return Err(Error::InvalidArgument(
                "empty input: no tokens to run".into(),
            ));
        }
        if batch.n_seq.checked_mul(batch.seq_len) != Some(batch.tokens.len()) {
            return Err(Error::InvalidArgument(format!(
                "batch of {} tokens is not {} sequences of {}",
                batch.tokens.len(),
                batch.n_seq,
                batch.seq_len
            )));
        }
        if batch.seq_len + n_prefix > self.config.n_ctx_train {
            return Err(Error::InvalidArgument(format!(
                "sequence of {} tokens{} exceeds the model's context of {} tokens",
                batch.seq_len,
                if n_prefix > 0 {
                    format!(" (+{n_prefix} prefix)")
                } else {
                    String::new()
                },
                self.config.n_ctx_train
            )));
        }
        Ok(())
    }

    fn check_prefix(&self, prefix: Option<&PrefixKv>) -> Result<usize> {
        match prefix {
            None => Ok(0),
            Some(p) => {
                p.check(&self.config)?;
                Ok(p.n_prefix())
            }
        }
    }

    /// Runs the blocks over `batch`, keeping activations as `opts.mode` says.
    pub fn forward<'m>(
        &'m self,
        batch: &Batch,
        opts: &ForwardOptions<'m>,
        hook: &mut dyn LinearHook,
    ) -> Result<Forward<'m, 'w>> {
        let n_prefix = self.check_prefix(opts.prefix)?;
        self.check_batch(batch, n_prefix)?;
        let mut acts = Activations::new(&self.config, batch.n_seq, batch.seq_len, opts.mode);
        let positions: Vec<usize> = (0..batch.tokens.len())
            .map(|r| n_prefix + r % batch.seq_len)
            .collect();
        let rope = self.rope_table(n_prefix, batch.seq_len)?;
        embedding_forward(acts.resid_mut(0), batch.tokens, &self.weights.token_embd)?;
        let step = StepCtx {
            positions: &positions,
            rope: &rope,
            prefix: opts.prefix,
            n_seq: batch.n_seq,
        };
        for l in 0..self.config.n_layer {
            let mut buf = acts.block(l);
            self.block_forward(l, &mut buf, &step, None, hook)?;
        }
        let (n, d) = (batch.tokens.len(), self.config.n_embd);
        let (x, lnf, rstdf) = acts.final_norm();
        rmsnorm_forward(
            lnf,
            rstdf,
            x,
            &self.weights.output_norm,
            n,
            d,
            self.config.rms_eps,
        )?;
        Ok(Forward {
            model: self,
            acts,
            positions,
            rope,
            prefix: opts.prefix,
            n_seq: batch.n_seq,
            seq_len: batch.seq_len,
        })
    }

    /// Mean NLL over `labels` (HF causal-LM loss: position `t` predicts `labels[t+1]`, −100 ignored).
    pub fn loss(&self, batch: &Batch, labels: &[i32]) -> Result<LossStats> {
        let opts = ForwardOptions {
            mode: ActivationMode::Inference,
            prefix: None,
        };
        self.forward(batch, &opts, &mut super::hook::NoHook)?
            .loss(labels)
    }

    /// Forward, loss and backward in one call: the loss and d(loss)/d(input embeddings), with the
    /// hook's and the prefix's gradients accumulated. `denominator` divides the summed NLL in the
    /// gradient (default: the number of predicted tokens, i.e. the mean).
    pub fn forward_backward(
        &self,
        batch: &Batch,
        labels: &[i32],
        opts: &ForwardOptions,
        denominator: Option<usize>,
        hook: &mut dyn LinearHook,
        dprefix: Option<&mut PrefixKv>,
    ) -> Result<BackwardOutput> {
        if opts.mode == ActivationMode::Inference {
            return Err(Error::InvalidArgument(
                "forward_backward needs ActivationMode::Full or Checkpoint".into(),
            ));
        }
        let mut fwd = self.forward(batch, opts, hook)?;
        fwd.backward(labels, denominator, hook, dprefix)
    }

    /// One block forward. `cache`: the block's KV cache rows and how many are filled (generation);
    /// `None` for a batch of whole sequences.
    pub(crate) fn block_forward(
        &self,
        l: usize,
        buf: &mut BlockBuffers,
        step: &StepCtx,
        cache: Option<(&mut [f32], &mut [f32], usize)>,
        hook: &mut dyn LinearHook,
    ) -> Result<()> {
        let cfg = &self.config;
        let w = &self.weights.layers[l];
        let n = buf.x_in.len() / cfg.n_embd;
        let a = &mut buf.acts;
        rmsnorm_forward(
            a.ln1,
            a.rstd1,
            buf.x_in,
            &w.attn_norm,
            n,
            cfg.n_embd,
            cfg.rms_eps,
        )?;
        let run = |hook: &mut dyn LinearHook, kind, x: &[f32], y: &mut [f32]| -> Result<()> {
            let (weight, bias) = linear_of(w, kind);
            let base = BaseLinear {
                weight,
                bias,
                backend: &*self.backend,
            };
            hook.forward(LinearSite { layer: l, kind }, &base, x, n, y)
        };
        run(hook, LinearKind::Q, a.ln1, a.q)?;
        run(hook, LinearKind::K, a.ln1, a.k)?;
        run(hook, LinearKind::V, a.ln1, a.v)?;
        rope_forward(a.q, step.positions, step.rope, cfg.n_head, cfg.head_dim)?;
        rope_forward(a.k, step.positions, step.rope, cfg.n_head_kv, cfg.head_dim)?;
        let (pk, pv) = step
            .prefix
            .map_or((&[][..], &[][..]), |p| (p.keys(l), p.values(l)));
        let n_prefix = step.prefix.map_or(0, |p| p.n_prefix());
        match cache {
            None => {
                let t = n / step.n_seq;
                let dims = self.attn_dims(t, t, n_prefix);
                for b in 0..step.n_seq {
                    let x = AttnInputs {
                        q: &a.q[b * t * cfg.q_dim()..(b + 1) * t * cfg.q_dim()],
                        k: &a.k[b * t * cfg.kv_dim()..(b + 1) * t * cfg.kv_dim()],
                        v: &a.v[b * t * cfg.kv_dim()..(b + 1) * t * cfg.kv_dim()],
                        prefix_k: pk,
                        prefix_v: pv,
                    };
                    let out = &mut a.att[b * t * cfg.q_dim()..(b + 1) * t * cfg.q_dim()];
                    let lse = &mut a.lse[b * t * cfg.n_head..(b + 1) * t * cfg.n_head];
                    attention_forward(out, lse, &x, &dims, self.backend.threads())?;
                }
            }
            Some((ck, cv, past)) => {
                let kvd = cfg.kv_dim();
                ck[past * kvd..(past + n) * kvd].copy_from_slice(a.k);
                cv[past * kvd..(past + n) * kvd].copy_from_slice(a.v);
                let dims = self.attn_dims(n, past + n, n_prefix);
                let x = AttnInputs {
                    q: a.q,
                    k: &ck[..(past + n) * kvd],
                    v: &cv[..(past + n) * kvd],
                    prefix_k: pk,
                    prefix_v: pv,
                };
                attention_forward(a.att, a.lse, &x, &dims, self.backend.threads())?;
            }
        }
        run(hook, LinearKind::O, a.att, buf.scratch)?;
        a.x_mid.copy_from_slice(buf.x_in);
        add_inplace(a.x_mid, buf.scratch)?;
        rmsnorm_forward(
            a.ln2,
            a.rstd2,
            a.x_mid,
            &w.ffn_norm,
            n,
            cfg.n_embd,
            cfg.rms_eps,
        )?;
        run(hook, LinearKind::Gate, a.ln2, a.gate)?;
        run(hook, LinearKind::Up, a.ln2, a.up)?;
        swiglu_forward(a.h, a.gate, a.up)?;
        run(hook, LinearKind::Down, a.h, buf.scratch)?;
        buf.x_out.copy_from_slice(a.x_mid);
        add_inplace(buf.x_out, buf.scratch)
    }

    fn attn_dims(&self, n_q: usize, n_kv: usize, n_prefix: usize) -> AttnDims {
        AttnDims {
            n_q,
            n_kv,
            n_prefix,
            n_head: self.config.n_head,
            n_head_kv: self.config.n_head_kv,
            head_dim: self.config.head_dim,
        }
    }

    /// One block backward: `dres` holds d(loss)/d(block output) on entry and d(loss)/d(block
    /// input) on return.
    #[allow(clippy::too_many_arguments)]
    fn block_backward(
        &self,
        l: usize,
        a: &LayerActs,
        x_in: &[f32],
        dres: &mut [f32],
        g: &mut GradScratch,
        step: &StepCtx,
        hook: &mut dyn LinearHook,
        mut dprefix: Option<&mut PrefixKv>,
    ) -> Result<()> {
        let cfg = &self.config;
        let w = &self.weights.layers[l];
        let n = x_in.len() / cfg.n_embd;
        let back = |hook: &mut dyn LinearHook,
                    kind,
                    x: &[f32],
                    dy: &[f32],
                    dx: &mut [f32]|
         -> Result<()> {
            let (weight, bias) = linear_of(w, kind);
            let base = BaseLinear {
                weight,
                bias,
                backend: &*self.backend,
            };
            hook.backward(LinearSite { layer: l, kind }, &base, x, dy, n, dx)
        };
        // MLP: x_out = x_mid + down(silu(gate(ln2)) * up(ln2)).
        g.dh.fill(0.0);
        back(hook, LinearKind::Down, a.h, dres, &mut g.dh)?;
        g.dgate.fill(0.0);
        g.dup.fill(0.0);
        swiglu_backward(&mut g.dgate, &mut g.dup, &g.dh, a.gate, a.up)?;
        g.dln.fill(0.0);
        back(hook, LinearKind::Gate, a.ln2, &g.dgate, &mut g.dln)?;
        back(hook, LinearKind::Up, a.ln2, &g.dup, &mut g.dln)?;
        rmsnorm_backward(dres, &g.dln, a.x_mid, a.rstd2, &w.ffn_norm, n, cfg.n_embd)?;
        // Attention: x_mid = x_in + o(attention(rope(q(ln1)), rope(k(ln1)), v(ln1))).
        g.datt.fill(0.0);
        back(hook, LinearKind::O, a.att, dres, &mut g.datt)?;
        g.dq.fill(0.0);
        g.dk.fill(0.0);
        g.dv.fill(0.0);
        let (pk, pv) = step
            .prefix
            .map_or((&[][..], &[][..]), |p| (p.keys(l), p.values(l)));
        let n_prefix = step.prefix.map_or(0, |p| p.n_prefix());
        let t = n / step.n_seq;
        let dims = self.attn_dims(t, t, n_prefix);
        let (qd, kvd, h) = (cfg.q_dim(), cfg.kv_dim(), cfg.n_head);
        for b in 0..step.n_seq {
            let x = AttnInputs {
                q: &a.q[b * t * qd..(b + 1) * t * qd],
                k: &a.k[b * t * kvd..(b + 1) * t * kvd],
                v: &a.v[b * t * kvd..(b + 1) * t * kvd],
                prefix_k: pk,
                prefix_v: pv,
            };
            let (dpk, dpv) = match dprefix.as_deref_mut() {
                Some(p) => p.layer_mut(l),
                None => (&mut [][..], &mut [][..]),
            };
            let grads = AttnGrads {
                dq: &mut g.dq[b * t * qd..(b + 1) * t * qd],
                dk: &mut g.dk[b * t * kvd..(b + 1) * t * kvd],
                dv: &mut g.dv[b * t * kvd..(b + 1) * t * kvd],
                dprefix_k: dpk,
                dprefix_v: dpv,
            };
            let out = &a.att[b * t * qd..(b + 1) * t * qd];
            let lse = &a.lse[b * t * h..(b + 1) * t * h];
            attention_backward(
                grads,
                &g.datt[b * t * qd..(b + 1) * t * qd],
                out,
                lse,
                &x,
                &dims,
                self.backend.threads(),
            )?;
        }
        rope_backward(
            &mut g.dq,
            step.positions,
            step.rope,
            cfg.n_head,
            cfg.head_dim,
        )?;
        rope_backward(
            &mut g.dk,
            step.positions,
            step.rope,
            cfg.n_head_kv,
            cfg.head_dim,
        )?;
        g.dln.fill(0.0);
        back(hook, LinearKind::Q, a.ln1, &g.dq, &mut g.dln)?;
        back(hook, LinearKind::K, a.ln1, &g.dk, &mut g.dln)?;
        back(hook, LinearKind::V, a.ln1, &g.dv, &mut g.dln)?;
        rmsnorm_backward(dres, &g.dln, x_in, a.rstd1, &w.attn_norm, n, cfg.n_embd)
    }

    /// Runs `tokens` through the model after what `cache` already holds, appending their keys and
    /// values, and returns the logits of the last token `[n_vocab]`.
    pub fn forward_cached(
        &self,
        cache: &mut KvCache,
        tokens: &[u32],
        hook: &mut dyn LinearHook,
    ) -> Result<Vec<f32>> {
        cache.check(&self.config)?;
        if tokens.is_empty() {
            return Err(Error::InvalidArgument(
                "empty input: no tokens to run".into(),
            ));
        }
        let past = cache.len();
        let n_prefix = cache.prefix().map_or(0, |p| p.n_prefix());
        if past + tokens.len() > cache.capacity() {
            return Err(Error::InvalidArgument(format!(
                "{} tokens after {past} exceed the context of {} tokens",
                tokens.len(),
                cache.capacity()
            )));
        }
        let n = tokens.len();
        let mut acts = Activations::new(&self.config, 1, n, ActivationMode::Inference);
        let positions: Vec<usize> = (0..n).map(|i| n_prefix + past + i).collect();
        let rope = self.rope_table(n_prefix + past, n)?;
        embedding_forward(acts.resid_mut(0), tokens, &self.weights.token_embd)?;
        let (prefix, layers) = cache.parts_mut();
        let step = StepCtx {
            positions: &positions,
            rope: &rope,
            prefix,
            n_seq: 1,
        };
        for (l, (ck, cv)) in layers.enumerate() {
            let mut buf = acts.block(l);
            self.block_forward(l, &mut buf, &step, Some((ck, cv, past)), hook)?;
        }
        cache.advance(n);
        let d = self.config.n_embd;
        let last = &acts.resid(self.config.n_layer)[(n - 1) * d..];
        let mut normed = vec![0f32; d];
        let mut rstd = [0f32];
        rmsnorm_forward(
            &mut normed,
            &mut rstd,
            last,
            &self.weights.output_norm,
            1,
            d,
            self.config.rms_eps,
        )?;
        let mut logits = vec![0f32; self.config.n_vocab];
        self.backend
            .linear_forward(&normed, 1, &self.weights.output, &mut logits)?;
        Ok(logits)
    }
}

fn linear_of<'a, 'w>(
    w: &'a LayerWeights<'w>,
    kind: LinearKind,
) -> (&'a LinearWeight<'w>, Option<&'a [f32]>) {
    match kind {
        LinearKind::Q => (&w.q, w.q_bias.as_deref()),
        LinearKind::K => (&w.k, w.k_bias.as_deref()),
        LinearKind::V => (&w.v, w.v_bias.as_deref()),
        LinearKind::O => (&w.o, w.o_bias.as_deref()),
        LinearKind::Gate => (&w.gate, None),
        LinearKind::Up => (&w.up, None),
        LinearKind::Down => (&w.down, None),
    }
}

/// Per-call context shared by every block.
pub(crate) struct StepCtx<'a> {
    pub positions: &'a [usize], // [n]
    pub rope: &'a RopeTable,
    pub prefix: Option<&'a PrefixKv>,
    pub n_seq: usize,
}

/// Gradient buffers of one block, reused across blocks.
struct GradScratch {
    dln: Vec<f32>,   // [n, d]
    dq: Vec<f32>,    // [n, q_dim]
    dk: Vec<f32>,    // [n, kv_dim]
    dv: Vec<f32>,    // [n, kv_dim]
    datt: Vec<f32>,  // [n, q_dim]
    dh: Vec<f32>,    // [n, n_ff]
    dgate: Vec<f32>, // [n, n_ff]
    dup: Vec<f32>,   // [n, n_ff]
}

impl GradScratch {
    fn new(cfg: &Config, n: usize) -> GradScratch {
        GradScratch {
            dln: vec![0.0; n * cfg.n_embd],
            dq: vec![0.0; n * cfg.q_dim()],
            dk: vec![0.0; n * cfg.kv_dim()],
            dv: vec![0.0; n * cfg.kv_dim()],
            datt: vec![0.0; n * cfg.q_dim()],
            dh: vec![0.0; n * cfg.n_ff],
            dgate: vec![0.0; n * cfg.n_ff],
            dup: vec![0.0; n * cfg.n_ff],
        }
    }
}

/// The state of one forward pass over a batch: its activations, and what can be computed from
/// them (logits, per-token NLL, the loss, backward).
pub struct Forward<'m, 'w> {
    model: &'m Llama<'w>,
    acts: Activations,
    positions: Vec<usize>,
    rope: RopeTable,
    prefix: Option<&'m PrefixKv>,
    pub n_seq: usize,
    pub seq_len: usize,
}

impl Forward<'_, '_> {
    /// The final hidden states after the output norm `[n, n_embd]`.
    pub fn hidden(&self) -> &[f32] {
        &self.acts.lnf
    }

    /// Logits `[rows.len(), n_vocab]` for the given rows (`b·seq_len + t`).
    pub fn logits(&self, rows: &[usize]) -> Result<Vec<f32>> {
        let (d, nv) = (self.model.config.n_embd, self.model.config.n_vocab);
        let n = self.n_seq * self.seq_len;
        if let Some(&r) = rows.iter().find(|&&r| r >= n) {
            return Err(Error::InvalidArgument(format!(
                "logits: row {r} is outside the batch of {n} tokens"
            )));
        }
        let mut out = vec![0f32; rows.len() * nv];
        let chunk = self.model.lm_chunk_rows;
        let mut x = vec![0f32; chunk.min(rows.len()) * d];
        for (rs, o) in rows.chunks(chunk).zip(out.chunks_mut(chunk * nv)) {
            for (xr, &r) in x.chunks_exact_mut(d).zip(rs) {
                xr.copy_from_slice(&self.acts.lnf[r * d..(r + 1) * d]);
            }
            self.model.backend.linear_forward(
                &x[..rs.len() * d],
                rs.len(),
                &self.model.weights.output,
                o,
            )?;
        }
        Ok(out)
    }

    /// The targets of every row: `labels` shifted left by one within each sequence, −100 last.
    pub fn targets(&self, labels: &[i32]) -> Result<Vec<i32>> {
        shifted_targets(labels, self.n_seq, self.seq_len)
    }

    /// NLL of each row's target `[n]` (0 where ignored).
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
        if let (Some(dp), Some(p)) = (dprefix.as_deref(), self.prefix) {
            if dp.n_prefix() != p.n_prefix() {
                return Err(Error::InvalidArgument(format!(
                    "prefix gradient has {} tokens, the prefix {}",
                    dp.n_prefix(),
                    p.n_prefix()
                )));
            }
            dp.check(cfg)?;
        } else if dprefix.is_some() {
            return Err(Error::InvalidArgument(
                "prefix gradient requested for a forward without prefix".into(),
            ));
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
        let mut dlnf = vec![0f32; n * d];
        cross_entropy_forward_backward(
            &mut losses,
            &mut dlnf,
            &dlosses,
            &self.acts.lnf,
            &targets,
            &model.lm_head(),
        )?;
        let mut dres = vec![0f32; n * d];
        let x_final = self.acts.resid(cfg.n_layer);
        rmsnorm_backward(
            &mut dres,
            &dlnf,
            x_final,
            &self.acts.rstdf,
            &model.weights.output_norm,
            n,
            d,
        )?;
        drop(dlnf);
        let mut g = GradScratch::new(cfg, n);
        let step = StepCtx {
            positions: &self.positions,
            rope: &self.rope,
            prefix: self.prefix,
            n_seq: self.n_seq,
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

/// `targets[b, t] = labels[b, t + 1]`, and −100 at each sequence's last position.
pub fn shifted_targets(labels: &[i32], n_seq: usize, seq_len: usize) -> Result<Vec<i32>> {
    if labels.len() != n_seq * seq_len {
        return Err(Error::InvalidArgument(format!(
            "{} labels for a batch of {n_seq} x {seq_len} tokens",
            labels.len()
        )));
    }
    let mut t = vec![IGNORE_INDEX; labels.len()];
    for b in 0..n_seq {
        let row = b * seq_len;
        t[row..row + seq_len - 1].copy_from_slice(&labels[row + 1..row + seq_len]);
    }
    Ok(t)
}
