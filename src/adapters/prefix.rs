//! Prefix tuning (FORMATS.md Part II §3.3, §4.3): `num_virtual_tokens` learned keys and values per
//! layer that every real query attends to, used as they are (never rotated). The tensor is kept
//! exactly as PEFT stores `prompt_embeddings`: `[T, L·2·kv_dim]`, flat offset within a row
//! `((l·2 + kv)·H_kv + h)·D + d` (kv = 0 keys, 1 values; GQA-aware: H_kv heads).
//!
//! For a GGUF `llama` model (Q/K rows permuted, `ModelDims::qk_permuted`), the model's keys live in
//! the permuted channel order within each head, so the accessors hand out keys permuted the same way
//! (attention scores are unchanged: q and k are permuted alike) and gradients are scattered back.

use super::config::PeftMeta;
use super::params::ParamSet;
use super::permute::hf_row_of_gguf_row;
use super::rng::Rng;
use super::target::ModelDims;
use super::{Adapter, Method, MethodConfig, PeftConfig};
use crate::error::{Error, Result};

/// How a fresh prefix is initialised (PEFT `init_weights`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum PrefixInit {
    /// `nn.Embedding`'s default: N(0, 1).
    Random,
    /// All zeros (`init_weights="zero"`).
    Zero,
}

#[derive(Clone, Debug, PartialEq)]
pub struct PrefixConfig {
    pub num_virtual_tokens: usize,
    pub init: PrefixInit,
}

/// Prefix-tuning parameters of a whole model.
#[derive(Clone, Debug)]
pub struct PrefixTuning {
    dims: ModelDims,
    cfg: PrefixConfig,
    params: ParamSet,
    /// Config keys carried from a loaded adapter_config.json.
    pub meta: PeftMeta,
}

/// The key of the single tensor in PEFT's file (prefix and prompt tuning alike).
pub const PROMPT_EMBEDDINGS: &str = "prompt_embeddings";

impl PrefixTuning {
    /// A fresh prefix initialised as `cfg.init` says (random: N(0, 1) from `seed`).
    pub fn new(dims: &ModelDims, cfg: PrefixConfig, seed: u64) -> Result<PrefixTuning> {
        let mut p = PrefixTuning::zeros(dims, cfg)?;
        if p.cfg.init == PrefixInit::Random {
            let mut rng = Rng::new(seed);
            p.params
                .get_mut(0)
                .data_mut()
                .iter_mut()
                .for_each(|v| *v = rng.normal());
        }
        Ok(p)
    }

    /// A prefix of zeros (loaders fill it).
    pub fn zeros(dims: &ModelDims, cfg: PrefixConfig) -> Result<PrefixTuning> {
        dims.validate()?;
        if cfg.num_virtual_tokens == 0 {
            return Err(Error::InvalidArgument(
                "prefix tuning: num_virtual_tokens is 0".into(),
            ));
        }
        let row = dims.n_layer * 2 * dims.kv_dim();
        let mut params = ParamSet::new();
        params.push(
            PROMPT_EMBEDDINGS.to_string(),
            vec![cfg.num_virtual_tokens, row],
            vec![0.0; cfg.num_virtual_tokens * row],
        );
        Ok(PrefixTuning {
            dims: dims.clone(),
            cfg,
            params,
            meta: PeftMeta::default(),
        })
    }

    pub fn config(&self) -> &PrefixConfig {
        &self.cfg
    }

    pub fn num_virtual_tokens(&self) -> usize {
        self.cfg.num_virtual_tokens
    }

    /// The flat tensor `[T, L·2·kv_dim]` in PEFT's layout and order.
    pub fn embedding(&self) -> &[f32] {
        self.params.get(0).data()
    }

    pub fn embedding_mut(&mut self) -> &mut [f32] {
        self.params.get_mut(0).data_mut()
    }

    /// Where channel `c` of the model's keys (within one head) comes from in PEFT's layout.
    fn key_source(&self, c: usize) -> usize {
        if self.dims.qk_permuted {
            hf_row_of_gguf_row(c, self.dims.head_dim)
        } else {
            c
        }
    }

    /// Offset of (layer l, keys/values kv, token t) within the flat tensor; `kv_dim` values follow.
    fn span_start(&self, t: usize, l: usize, kv: usize) -> usize {
        let row = self.dims.n_layer * 2 * self.dims.kv_dim();
        t * row + (l * 2 + kv) * self.dims.kv_dim()
    }

    fn check_layer(&self, l: usize, lens: [(&str, usize); 2]) -> Result<()> {
        if l >= self.dims.n_layer {
            return Err(Error::InvalidArgument(format!(
                "prefix: layer {l} of a {}-layer model",
                self.dims.n_layer
            )));
        }
        let want = self.cfg.num_virtual_tokens * self.dims.kv_dim();
        for (what, len) in lens {
            if len != want {
                return Err(Error::InvalidArgument(format!(
                    "prefix layer {l}: {what} has {len} values, expected {} tokens x {}",
                    self.cfg.num_virtual_tokens,
                    self.dims.kv_dim()
                )));
            }
        }
        Ok(())
    }

    /// Layer `l`'s keys and values, each `[T, H_kv, D]` (keys in the model's channel order).
    pub fn layer_kv(&self, l: usize, keys: &mut [f32], values: &mut [f32]) -> Result<()> {
        self.check_layer(l, [("keys", keys.len()), ("values", values.len())])?;
        let (kvd, hd) = (self.dims.kv_dim(), self.dims.head_dim);
        let e = self.embedding();
        for t in 0..self.cfg.num_virtual_tokens {
            let ks = &e[self.span_start(t, l, 0)..][..kvd];
            for (h, head) in keys[t * kvd..(t + 1) * kvd]
                .chunks_exact_mut(hd)
                .enumerate()
            {
                for (c, v) in head.iter_mut().enumerate() {
                    *v = ks[h * hd + self.key_source(c)];
                }
            }
            let vs = &e[self.span_start(t, l, 1)..][..kvd];
            values[t * kvd..(t + 1) * kvd].copy_from_slice(vs);
        }
        Ok(())
    }

    /// Adds gradients of layer `l`'s keys and values (`[T, H_kv, D]` each, keys in the model's
    /// channel order) into the parameter gradient.
    pub fn accumulate_layer_grad(
        &mut self,
        l: usize,
        dkeys: &[f32],
        dvalues: &[f32],
    ) -> Result<()> {
        self.check_layer(
            l,
            [
                ("key gradient", dkeys.len()),
                ("value gradient", dvalues.len()),
            ],
        )?;
        let (kvd, hd) = (self.dims.kv_dim(), self.dims.head_dim);
        let starts: Vec<(usize, usize)> = (0..self.cfg.num_virtual_tokens)
            .map(|t| (self.span_start(t, l, 0), self.span_start(t, l, 1)))
            .collect();
        let src: Vec<usize> = (0..hd).map(|c| self.key_source(c)).collect();
        let g = self.params.get_mut(0).grad_mut();
        for (t, &(k0, v0)) in starts.iter().enumerate() {
            let dk = &dkeys[t * kvd..(t + 1) * kvd];
            for h in 0..kvd / hd {
                for c in 0..hd {
                    g[k0 + h * hd + src[c]] += dk[h * hd + c];
                }
            }
            let dv = &dvalues[t * kvd..(t + 1) * kvd];
            g[v0..v0 + kvd]
                .iter_mut()
                .zip(dv)
                .for_each(|(a, b)| *a += b);
        }
        Ok(())
    }

    /// All layers as `[L, 2, T, kv_dim]` (layer l's keys, then its values), the layout of the
    /// model's prefix buffer.
    pub fn gather(&self, out: &mut [f32]) -> Result<()> {
        let per = self.cfg.num_virtual_tokens * self.dims.kv_dim();
        self.check_all(out.len())?;
        for (l, chunk) in out.chunks_exact_mut(2 * per).enumerate() {
            let (k, v) = chunk.split_at_mut(per);
            self.layer_kv(l, k, v)?;
        }
        Ok(())
    }

    /// Adds a `[L, 2, T, kv_dim]` gradient (the layout of `gather`) into the parameter gradient.
    pub fn accumulate_grad(&mut self, d: &[f32]) -> Result<()> {
        let per = self.cfg.num_virtual_tokens * self.dims.kv_dim();
        self.check_all(d.len())?;
        for (l, chunk) in d.chunks_exact(2 * per).enumerate() {
            let (k, v) = chunk.split_at(per);
            self.accumulate_layer_grad(l, k, v)?;
        }
        Ok(())
    }

    fn check_all(&self, len: usize) -> Result<()> {
        let want = self.params.get(0).len();
        if len != want {
            return Err(Error::InvalidArgument(format!(
                "prefix buffer of {len} values, expected {} layers x 2 x {} tokens x {} = {want}",
                self.dims.n_layer,
                self.cfg.num_virtual_tokens,
                self.dims.kv_dim()
            )));
        }
        Ok(())
    }
}

impl Adapter for PrefixTuning {
    fn method(&self) -> Method {
        Method::Prefix
    }

    fn dims(&self) -> &ModelDims {
        &self.dims
    }

    fn params(&self) -> &ParamSet {
        &self.params
    }

    fn params_mut(&mut self) -> &mut ParamSet {
        &mut self.params
    }

    fn peft_config(&self) -> PeftConfig {
        PeftConfig {
            method: MethodConfig::Prefix(self.cfg.clone()),
            meta: self.meta.clone(),
        }
    }
}
