//! The Llama-family model (DESIGN.md "Model family"): config from GGUF metadata, layers as
//! forward/backward pairs (`ops`), the decoder (`llama`) with saved activations for training, a
//! KV cache and generation, and perplexity.
//!
//! Entry points: `Llama::new(file, backend)`, `Llama::forward` / `forward_backward` / `loss`,
//! `generate`, `perplexity`. Adapters attach through `hook::LinearHook` (every linear of a block)
//! and `PrefixKv` (prefix tuning's per-block keys and values).

pub mod acts;
pub mod bufs;
pub mod cache;
pub mod check;
pub mod config;
pub mod generate;
pub mod hook;
pub mod llama;
pub mod ops;
pub mod pass;
pub mod weights;

pub use acts::ActivationMode;
pub use cache::{Input, KvCache};
pub use config::{Arch, Config, RopeConfig, RopeLayout};
pub use generate::{
    generate, generate_with, perplexity, GenerateAdapters, GenerateParams, Perplexity, Rng,
};
pub use hook::{BaseLinear, LinearHook, LinearKind, LinearSite, NoHook};
pub use llama::{Batch, ForwardOptions, Llama};
pub use pass::{BackwardOutput, Forward, LossStats};

use crate::error::{Error, Result};

/// Per-block keys and values of `n_prefix` virtual tokens (prefix tuning), used as they are
/// (never rotated). Layout `[n_layer, 2, n_prefix, kv_dim]`: block `l`'s keys, then its values.
/// The same type holds their gradient.
#[derive(Clone, Debug, PartialEq)]
pub struct PrefixKv {
    n_layer: usize,
    n_prefix: usize,
    kv_dim: usize,
    data: Vec<f32>,
}

impl PrefixKv {
    pub fn zeros(cfg: &Config, n_prefix: usize) -> PrefixKv {
        PrefixKv {
            n_layer: cfg.n_layer,
            n_prefix,
            kv_dim: cfg.kv_dim(),
            data: vec![0.0; cfg.n_layer * 2 * n_prefix * cfg.kv_dim()],
        }
    }

    /// Wraps `data` laid out `[n_layer, 2, n_prefix, kv_dim]`.
    pub fn from_vec(cfg: &Config, n_prefix: usize, data: Vec<f32>) -> Result<PrefixKv> {
        let p = PrefixKv {
            n_layer: cfg.n_layer,
            n_prefix,
            kv_dim: cfg.kv_dim(),
            data,
        };
        p.check(cfg)?;
        Ok(p)
    }

    pub fn n_prefix(&self) -> usize {
        self.n_prefix
    }

    pub fn data(&self) -> &[f32] {
        &self.data
    }

    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    fn span(&self, l: usize, kv: usize) -> std::ops::Range<usize> {
        let per = self.n_prefix * self.kv_dim;
        let start = (2 * l + kv) * per;
        start..start + per
    }

    /// Block `l`'s keys `[n_prefix, kv_dim]`.
    pub fn keys(&self, l: usize) -> &[f32] {
        &self.data[self.span(l, 0)]
    }

    /// Block `l`'s values `[n_prefix, kv_dim]`.
    pub fn values(&self, l: usize) -> &[f32] {
        &self.data[self.span(l, 1)]
    }

    /// Block `l`'s keys and values, mutable.
    pub fn layer_mut(&mut self, l: usize) -> (&mut [f32], &mut [f32]) {
        let per = self.n_prefix * self.kv_dim;
        let start = 2 * l * per;
        self.data[start..start + 2 * per].split_at_mut(per)
    }

    pub(crate) fn check(&self, cfg: &Config) -> Result<()> {
        if self.n_layer != cfg.n_layer
            || self.kv_dim != cfg.kv_dim()
            || self.data.len() != cfg.n_layer * 2 * self.n_prefix * cfg.kv_dim()
        {
            return Err(Error::InvalidArgument(format!(
                "prefix of {} values for {} blocks x 2 x {} tokens x {} does not fit the model ({} blocks, kv width {})",
                self.data.len(),
                self.n_layer,
                self.n_prefix,
                self.kv_dim,
                cfg.n_layer,
                cfg.kv_dim()
            )));
        }
        Ok(())
    }
}
