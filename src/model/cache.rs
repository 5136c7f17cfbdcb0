//! The key/value cache for incremental generation: every block's rotated keys and values of the
//! tokens seen so far, plus an optional prefix (prefix tuning) that every token attends to; and
//! `Llama::forward_cached`, which runs new tokens against it.

use super::acts::{ActivationMode, Activations};
use super::config::Config;
use super::hook::LinearHook;
use super::llama::{Llama, StepCtx};
use super::ops::embedding::embedding_forward;
use super::ops::rmsnorm::rmsnorm_forward;
use super::PrefixKv;
use crate::error::{Error, Result};

pub struct KvCache {
    n_layer: usize,
    kv_dim: usize,
    capacity: usize,
    len: usize,
    k: Vec<f32>, // [n_layer, capacity, kv_dim]
    v: Vec<f32>, // [n_layer, capacity, kv_dim]
    prefix: Option<PrefixKv>,
}

impl KvCache {
    /// A cache for up to `capacity` tokens (prompt and generated), at most the model's context.
    pub fn new(cfg: &Config, capacity: usize) -> Result<KvCache> {
        Self::build(cfg, capacity, None)
    }

    /// A cache whose blocks also attend to `prefix` (which counts toward the context).
    pub fn with_prefix(cfg: &Config, capacity: usize, prefix: PrefixKv) -> Result<KvCache> {
        prefix.check(cfg)?;
        Self::build(cfg, capacity, Some(prefix))
    }

    fn build(cfg: &Config, capacity: usize, prefix: Option<PrefixKv>) -> Result<KvCache> {
        let n_prefix = prefix.as_ref().map_or(0, |p| p.n_prefix());
        if capacity == 0 || capacity + n_prefix > cfg.n_ctx_train {
            return Err(Error::InvalidArgument(format!(
                "KV cache of {capacity} tokens (+{n_prefix} prefix) must be between 1 and the model's context of {} tokens",
                cfg.n_ctx_train
            )));
        }
        let floats = cfg.n_layer * capacity * cfg.kv_dim();
        Ok(KvCache {
            n_layer: cfg.n_layer,
            kv_dim: cfg.kv_dim(),
            capacity,
            len: 0,
            k: vec![0.0; floats],
            v: vec![0.0; floats],
            prefix,
        })
    }

    /// Tokens held.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn capacity(&self) -> usize {
        self.capacity
    }

    /// Forgets every token after the first `len` (e.g. to reuse a shared prompt).
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    pub fn bytes(&self) -> usize {
        4 * (self.k.len() + self.v.len())
    }

    pub fn prefix(&self) -> Option<&PrefixKv> {
        self.prefix.as_ref()
    }

    pub(crate) fn check(&self, cfg: &Config) -> Result<()> {
        if self.n_layer != cfg.n_layer || self.kv_dim != cfg.kv_dim() {
            return Err(Error::InvalidArgument(format!(
                "KV cache for {} blocks of width {} does not fit a model with {} blocks of width {}",
                self.n_layer,
                self.kv_dim,
                cfg.n_layer,
                cfg.kv_dim()
            )));
        }
        Ok(())
    }

    /// The prefix, and each block's `(keys, values)` rows `[capacity, kv_dim]`.
    pub(crate) fn parts_mut(
        &mut self,
    ) -> (
        Option<&PrefixKv>,
        impl Iterator<Item = (&mut [f32], &mut [f32])>,
    ) {
        let per = self.capacity * self.kv_dim;
        (
            self.prefix.as_ref(),
            self.k
                .chunks_exact_mut(per)
                .zip(self.v.chunks_exact_mut(per)),
        )
    }

    pub(crate) fn advance(&mut self, n: usize) {
        self.len += n;
    }
}

/// What to feed the model: token ids, or embeddings `[n, n_embd]` (prompt-tuning virtual
/// tokens).
#[derive(Clone, Copy, Debug)]
pub enum Input<'a> {
    Tokens(&'a [u32]),
    Embeddings(&'a [f32]),
}

impl Llama<'_> {
    /// Runs `input` after what `cache` already holds, appending its keys and values, and returns
    /// the logits of its last row `[n_vocab]`. A refused call leaves the cache unchanged.
    pub fn forward_cached(
        &self,
        cache: &mut KvCache,
        input: Input,
        hook: &mut dyn LinearHook,
    ) -> Result<Vec<f32>> {
        let cfg = &self.config;
        cache.check(cfg)?;
        let d = cfg.n_embd;
        let n = match input {
            Input::Tokens(t) => t.len(),
            Input::Embeddings(e) if e.len().is_multiple_of(d) => e.len() / d,
            Input::Embeddings(e) => {
                return Err(Error::InvalidArgument(format!(
                    "embeddings input: {} values are not whole rows of n_embd {d}",
                    e.len()
                )))
            }
        };
        if n == 0 {
            return Err(Error::InvalidArgument(
                "empty input: no tokens to run".into(),
            ));
        }
        let past = cache.len();
        if past + n > cache.capacity() {
            return Err(Error::InvalidArgument(format!(
                "{n} tokens after {past} exceed the cache's context of {} tokens",
                cache.capacity()
            )));
        }
        let n_prefix = cache.prefix().map_or(0, |p| p.n_prefix());
        let mut acts = Activations::new(cfg, 1, n, ActivationMode::Inference);
        match input {
            Input::Tokens(t) => embedding_forward(acts.resid_mut(0), t, &self.weights.token_embd)?,
            Input::Embeddings(e) => acts.resid_mut(0).copy_from_slice(e),
        }
        let positions: Vec<usize> = (0..n).map(|i| n_prefix + past + i).collect();
        let rope = self.rope_table(n_prefix + past, n)?;
        let (prefix, layers) = cache.parts_mut();
        // One segment: the cached path attends over the cache, not over segments.
        let whole = std::iter::once(0..n).collect::<Vec<_>>();
        let step = StepCtx {
            positions: &positions,
            rope: &rope,
            prefix,
            segments: &whole,
        };
        for (l, (ck, cv)) in layers.enumerate() {
            let mut buf = acts.block(l);
            self.block_forward(l, &mut buf, &step, Some((ck, cv, past)), hook)?;
        }
        cache.advance(n);
        let last = &acts.resid(cfg.n_layer)[(n - 1) * d..];
        let (mut normed, mut rstd) = (vec![0f32; d], [0f32]);
        rmsnorm_forward(
            &mut normed,
            &mut rstd,
            last,
            &self.weights.output_norm,
            1,
            d,
            cfg.rms_eps,
        )?;
        let mut logits = vec![0f32; cfg.n_vocab];
        self.backend()
            .linear_forward(&normed, 1, &self.weights.output, &mut logits)?;
        Ok(logits)
    }
}
