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
use super::bufs::BufferPool;
use super::config::Config;
use super::hook::{BaseLinear, LinearHook, LinearKind, LinearSite};
use super::ops::attention::{AttnDims, AttnGrads, AttnInputs};
use super::ops::attention_gemm::{attention_backward_gemm, attention_forward_gemm};
use super::ops::cross_entropy::LmHead;
use super::ops::embedding::embedding_forward;
use super::ops::residual::residual_forward_on;
use super::ops::rmsnorm::{rmsnorm_backward_on, rmsnorm_forward_on};
use super::ops::rope::{rope_backward_on, rope_forward_on, RopeTable};
use super::ops::swiglu::{swiglu_backward_on, swiglu_forward_on};
use super::ops::zero_on;
use super::pass::{BackwardOutput, Forward, LossStats};
use super::weights::{LayerWeights, ModelWeights};
use super::PrefixKv;
use crate::backend::{Backend, LinearWeight};
use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::weights::Weights;
use std::ops::Range;
use std::sync::Arc;

/// Rows of logits the output projection materialises at once, unless set otherwise.
pub const DEFAULT_LM_CHUNK_ROWS: usize = 512;

/// `n_seq` sequences of `seq_len` tokens, row-major (`tokens[b·seq_len + t]`). Shorter sequences
/// are right-padded (any token) with label −100 at the padding: causal attention never lets a
/// real token see the padding after it.
#[derive(Clone, Copy, Debug)]
pub struct Batch<'a> {
    pub tokens: &'a [u32],
    pub n_seq: usize,
    pub seq_len: usize,
    /// Packed sequences: the lengths of the documents in each sequence (`n_seq` lists, each
    /// summing to at most `seq_len`; the rest is padding). A token attends only to earlier tokens
    /// of its own document, and positions restart at 0 for each document, so a packed sequence
    /// computes exactly what its documents would one by one. `None`: one document a sequence.
    pub docs: Option<&'a [Vec<usize>]>,
}

impl<'a> Batch<'a> {
    pub fn single(tokens: &'a [u32]) -> Batch<'a> {
        Batch {
            tokens,
            n_seq: 1,
            seq_len: tokens.len(),
            docs: None,
        }
    }
}

/// How to run a forward pass.
#[derive(Clone, Copy)]
pub struct ForwardOptions<'a> {
    pub mode: ActivationMode,
    /// Prefix-tuning keys/values, visible to every token of every sequence of every block.
    pub prefix: Option<&'a PrefixKv>,
    /// Prompt-tuning embeddings `[n_virtual, n_embd]`, put before every sequence's tokens (they
    /// take positions, rows of the activations and rows of `d_embeds`; labels stay per token).
    pub virtual_tokens: Option<&'a [f32]>,
}

impl<'a> ForwardOptions<'a> {
    /// A pass that keeps nothing for backward (evaluation, generation).
    pub fn inference() -> ForwardOptions<'a> {
        ForwardOptions {
            mode: ActivationMode::Inference,
            ..Default::default()
        }
    }
}

impl Default for ForwardOptions<'_> {
    fn default() -> Self {
        ForwardOptions {
            mode: ActivationMode::Full,
            prefix: None,
            virtual_tokens: None,
        }
    }
}

/// A loaded model: config, weight views and the backend that runs its matrix products.
pub struct Llama<'w> {
    pub config: Config,
    pub weights: ModelWeights<'w>,
    backend: Arc<dyn Backend>,
    lm_chunk_rows: usize,
    /// Buffers kept between passes (activations, gradient scratch); see `release_buffers`.
    pub(crate) bufs: BufferPool,
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
            bufs: BufferPool::new(),
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

    /// Frees the buffers training passes keep for the next one (saved activations, gradient
    /// scratch). A `Full`/`Checkpoint` pass gives its buffers back when its `Forward` is dropped
    /// and the next takes them again, so steps of one shape touch no fresh pages; call this when
    /// the memory should go elsewhere (the trainer does before writing a file). `Inference`
    /// passes reuse what is kept but never add to it.
    pub fn release_buffers(&self) {
        self.bufs.release();
    }

    /// Bytes of the buffers kept between passes.
    pub fn retained_buffer_bytes(&self) -> usize {
        self.bufs.bytes()
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

    /// Checks the batch shape and that `n_extra` more positions (prefix and virtual tokens) still
    /// fit the context.
    fn check_batch(&self, batch: &Batch, n_extra: usize) -> Result<()> {
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
        if batch.seq_len + n_extra > self.config.n_ctx_train {
            let extra = if n_extra > 0 {
                format!(" (+{n_extra} prefix/virtual)")
            } else {
                String::new()
            };
            return Err(Error::InvalidArgument(format!(
                "sequence of {} tokens{extra} exceeds the model's context of {} tokens",
                batch.seq_len, self.config.n_ctx_train
            )));
        }
        Ok(())
    }

    /// Rows of `virtual_tokens` (`[n, n_embd]`).
    fn check_virtual(&self, v: Option<&[f32]>) -> Result<usize> {
        let d = self.config.n_embd;
        match v {
            None => Ok(0),
            Some(v) if !v.is_empty() && v.len().is_multiple_of(d) => Ok(v.len() / d),
            Some(v) => Err(Error::InvalidArgument(format!(
                "virtual tokens: {} values are not whole rows of n_embd {d}",
                v.len()
            ))),
        }
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
        let n_virtual = self.check_virtual(opts.virtual_tokens)?;
        self.check_batch(batch, n_prefix + n_virtual)?;
        let (d, t) = (self.config.n_embd, n_virtual + batch.seq_len);
        let (mut acts, recycle) =
            Activations::new_in(&self.bufs, &self.config, batch.n_seq, t, opts.mode);
        let (positions, segments) = segments(batch, n_virtual, n_prefix)?;
        let rope = self.rope_table(n_prefix, t)?;
        let x0 = acts.resid_mut(0);
        for (b, rows) in x0.chunks_exact_mut(t * d).enumerate() {
            let (virt, real) = rows.split_at_mut(n_virtual * d);
            if let Some(v) = opts.virtual_tokens {
                virt.copy_from_slice(v);
            }
            let tokens = &batch.tokens[b * batch.seq_len..(b + 1) * batch.seq_len];
            embedding_forward(real, tokens, &self.weights.token_embd)?;
        }
        let step = StepCtx {
            positions: &positions,
            rope: &rope,
            prefix: opts.prefix,
            segments: &segments,
        };
        for l in 0..self.config.n_layer {
            let mut buf = acts.block(l);
            self.block_forward(l, &mut buf, &step, None, hook)?;
        }
        let (x, lnf, rstdf) = acts.final_norm();
        rmsnorm_forward_on(
            &*self.backend,
            lnf,
            rstdf,
            x,
            &self.weights.output_norm,
            batch.n_seq * t,
            d,
            self.config.rms_eps,
        )?;
        Ok(Forward::new(
            self,
            (acts, recycle),
            positions,
            segments,
            rope,
            opts.prefix,
            batch.n_seq,
            t,
            n_virtual,
        ))
    }

    /// Loss over `labels` (HF causal-LM loss: position `t` predicts `labels[t+1]`, −100 ignored).
    pub fn loss(&self, batch: &Batch, labels: &[i32]) -> Result<LossStats> {
        self.forward(
            batch,
            &ForwardOptions::inference(),
            &mut super::hook::NoHook,
        )?
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
        let be = &*self.backend;
        rmsnorm_forward_on(
            be,
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
        let (pos, rope) = (step.positions, step.rope);
        rope_forward_on(be, a.q, pos, rope, cfg.n_head, cfg.head_dim)?;
        rope_forward_on(be, a.k, pos, rope, cfg.n_head_kv, cfg.head_dim)?;
        let (pk, pv) = step
            .prefix
            .map_or((&[][..], &[][..]), |p| (p.keys(l), p.values(l)));
        let n_prefix = step.prefix.map_or(0, |p| p.n_prefix());
        match cache {
            None => {
                let (qd, kvd, h) = (cfg.q_dim(), cfg.kv_dim(), cfg.n_head);
                for seg in step.segments {
                    let (r0, r1) = (seg.start, seg.end);
                    let dims = self.attn_dims(r1 - r0, r1 - r0, n_prefix);
                    let x = AttnInputs {
                        q: &a.q[r0 * qd..r1 * qd],
                        k: &a.k[r0 * kvd..r1 * kvd],
                        v: &a.v[r0 * kvd..r1 * kvd],
                        prefix_k: pk,
                        prefix_v: pv,
                    };
                    let out = &mut a.att[r0 * qd..r1 * qd];
                    let lse = &mut a.lse[r0 * h..r1 * h];
                    attention_forward_gemm(out, lse, &x, &dims, &*self.backend)?;
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
                attention_forward_gemm(a.att, a.lse, &x, &dims, &*self.backend)?;
            }
        }
        run(hook, LinearKind::O, a.att, buf.scratch)?;
        residual_forward_on(be, a.x_mid, buf.x_in, buf.scratch)?;
        rmsnorm_forward_on(
            be,
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
        swiglu_forward_on(be, a.h, a.gate, a.up)?;
        run(hook, LinearKind::Down, a.h, buf.scratch)?;
        residual_forward_on(be, buf.x_out, a.x_mid, buf.scratch)
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
    pub(crate) fn block_backward(
        &self,
        l: usize,
        a: &LayerActs,
        x_in: &[f32],
        dres: &mut [f32],
        g: &mut super::pass::GradScratch,
        step: &StepCtx,
        hook: &mut dyn LinearHook,
        mut dprefix: Option<&mut PrefixKv>,
    ) -> Result<()> {
        let cfg = &self.config;
        let w = &self.weights.layers[l];
        let n = x_in.len() / cfg.n_embd;
        let be = &*self.backend;
        // Every gradient below is added into: zero them all at once (dln is reused, zeroed again).
        zero_on(be, g.all())?;
        let g = g.split();
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
        back(hook, LinearKind::Down, a.h, dres, g.dh)?;
        swiglu_backward_on(be, g.dgate, g.dup, g.dh, a.gate, a.up)?;
        back(hook, LinearKind::Gate, a.ln2, g.dgate, g.dln)?;
        back(hook, LinearKind::Up, a.ln2, g.dup, g.dln)?;
        let d = cfg.n_embd;
        rmsnorm_backward_on(be, dres, g.dln, a.x_mid, a.rstd2, &w.ffn_norm, n, d)?;
        // Attention: x_mid = x_in + o(attention(rope(q(ln1)), rope(k(ln1)), v(ln1))).
        back(hook, LinearKind::O, a.att, dres, g.datt)?;
        let (pk, pv) = step
            .prefix
            .map_or((&[][..], &[][..]), |p| (p.keys(l), p.values(l)));
        let n_prefix = step.prefix.map_or(0, |p| p.n_prefix());
        let (qd, kvd, h) = (cfg.q_dim(), cfg.kv_dim(), cfg.n_head);
        for seg in step.segments {
            let (r0, r1) = (seg.start, seg.end);
            let dims = self.attn_dims(r1 - r0, r1 - r0, n_prefix);
            let x = AttnInputs {
                q: &a.q[r0 * qd..r1 * qd],
                k: &a.k[r0 * kvd..r1 * kvd],
                v: &a.v[r0 * kvd..r1 * kvd],
                prefix_k: pk,
                prefix_v: pv,
            };
            let (dpk, dpv) = match dprefix.as_deref_mut() {
                Some(p) => p.layer_mut(l),
                None => (&mut [][..], &mut [][..]),
            };
            let grads = AttnGrads {
                dq: &mut g.dq[r0 * qd..r1 * qd],
                dk: &mut g.dk[r0 * kvd..r1 * kvd],
                dv: &mut g.dv[r0 * kvd..r1 * kvd],
                dprefix_k: dpk,
                dprefix_v: dpv,
            };
            let out = &a.att[r0 * qd..r1 * qd];
            let lse = &a.lse[r0 * h..r1 * h];
            attention_backward_gemm(
                grads,
                &g.datt[r0 * qd..r1 * qd],
                out,
                lse,
                &x,
                &dims,
                &*self.backend,
            )?;
        }
        let (pos, rope) = (step.positions, step.rope);
        rope_backward_on(be, g.dq, pos, rope, cfg.n_head, cfg.head_dim)?;
        rope_backward_on(be, g.dk, pos, rope, cfg.n_head_kv, cfg.head_dim)?;
        zero_on(be, g.dln)?;
        back(hook, LinearKind::Q, a.ln1, g.dq, g.dln)?;
        back(hook, LinearKind::K, a.ln1, g.dk, g.dln)?;
        back(hook, LinearKind::V, a.ln1, g.dv, g.dln)?;
        rmsnorm_backward_on(be, dres, g.dln, x_in, a.rstd1, &w.attn_norm, n, d)
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
    /// Row ranges that attend among themselves (sequences, or documents of packed sequences).
    pub segments: &'a [Range<usize>],
}

/// The position of every row and the row ranges that attend among themselves: one range per
/// sequence (its virtual tokens included), or with `batch.docs` one per document plus one for
/// the padding after the last. Positions start after the prefix and restart in each range.
fn segments(
    batch: &Batch,
    n_virtual: usize,
    n_prefix: usize,
) -> Result<(Vec<usize>, Vec<Range<usize>>)> {
    let t = n_virtual + batch.seq_len;
    let mut segs = Vec::new();
    match batch.docs {
        None => segs.extend((0..batch.n_seq).map(|b| b * t..(b + 1) * t)),
        Some(docs) => {
            if docs.len() != batch.n_seq {
                return Err(Error::InvalidArgument(format!(
                    "packed batch: {} document lists for {} sequences",
                    docs.len(),
                    batch.n_seq
                )));
            }
            if n_virtual > 0 && docs.iter().any(|d| d.len() > 1) {
                return Err(Error::Unsupported(
                    "prompt tuning on packed sequences (virtual tokens belong to one document)"
                        .into(),
                ));
            }
            for (b, lens) in docs.iter().enumerate() {
                let mut start = b * t;
                let end = (b + 1) * t;
                for (i, &len) in lens.iter().enumerate() {
                    let len = len + if i == 0 { n_virtual } else { 0 };
                    if len == 0 || start + len > end {
                        return Err(Error::InvalidArgument(format!(
                            "packed sequence {b}: document lengths {lens:?} do not fit {} tokens",
                            batch.seq_len
                        )));
                    }
                    segs.push(start..start + len);
                    start += len;
                }
                if start < end {
                    segs.push(start..end);
                }
            }
        }
    }
    let mut positions = vec![0; batch.n_seq * t];
    for s in &segs {
        for (i, r) in s.clone().enumerate() {
            positions[r] = n_prefix + i;
        }
    }
    Ok((positions, segs))
}
