//! The key/value cache for incremental generation: every block's rotated keys and values of the
//! tokens seen so far, plus an optional prefix (prefix tuning) that every token attends to.

use super::config::Config;
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
