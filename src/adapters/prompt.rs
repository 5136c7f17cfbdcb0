//! Prompt tuning (FORMATS.md Part II §4.4): `num_virtual_tokens` learned input embeddings
//! `[T, n_embd]` placed before the real tokens' embeddings (RoPE positions 0..T−1, the real tokens
//! follow). The model does the concatenation; this module owns the tensor, its init and its file.

use super::config::PeftMeta;
use super::params::ParamSet;
use super::prefix::PROMPT_EMBEDDINGS;
use super::rng::Rng;
use super::target::ModelDims;
use super::{Adapter, Method, MethodConfig, PeftConfig};
use crate::error::{Error, Result};

#[derive(Clone, Debug, PartialEq)]
pub struct PromptConfig {
    pub num_virtual_tokens: usize,
}

/// Prompt-tuning parameters.
#[derive(Clone, Debug)]
pub struct PromptTuning {
    dims: ModelDims,
    cfg: PromptConfig,
    params: ParamSet,
    /// Config keys carried from a loaded adapter_config.json.
    pub meta: PeftMeta,
}

impl PromptTuning {
    /// PEFT's `prompt_tuning_init="RANDOM"`: `nn.Embedding`'s default N(0, 1), drawn from `seed`.
    pub fn new(dims: &ModelDims, cfg: PromptConfig, seed: u64) -> Result<PromptTuning> {
        let mut p = PromptTuning::zeros(dims, cfg)?;
        let mut rng = Rng::new(seed);
        p.embeddings_mut()
            .iter_mut()
            .for_each(|v| *v = rng.normal());
        Ok(p)
    }

    /// Initialised from given rows `[T, n_embd]`: PEFT's TEXT / SAMPLE_VOCAB inits, where the caller
    /// looks up the token embeddings of the init text or of sampled ids.
    pub fn from_rows(dims: &ModelDims, cfg: PromptConfig, rows: &[f32]) -> Result<PromptTuning> {
        let mut p = PromptTuning::zeros(dims, cfg)?;
        if rows.len() != p.embeddings().len() {
            return Err(Error::InvalidArgument(format!(
                "prompt tuning init: {} values, expected {} tokens x {}",
                rows.len(),
                p.cfg.num_virtual_tokens,
                dims.n_embd
            )));
        }
        p.embeddings_mut().copy_from_slice(rows);
        Ok(p)
    }

    pub fn zeros(dims: &ModelDims, cfg: PromptConfig) -> Result<PromptTuning> {
        dims.validate()?;
        if cfg.num_virtual_tokens == 0 {
            return Err(Error::InvalidArgument(
                "prompt tuning: num_virtual_tokens is 0".into(),
            ));
        }
        let mut params = ParamSet::new();
        params.push(
            PROMPT_EMBEDDINGS.to_string(),
            vec![cfg.num_virtual_tokens, dims.n_embd],
            vec![0.0; cfg.num_virtual_tokens * dims.n_embd],
        );
        Ok(PromptTuning {
            dims: dims.clone(),
            cfg,
            params,
            meta: PeftMeta::default(),
        })
    }

    pub fn config(&self) -> &PromptConfig {
        &self.cfg
    }

    pub fn num_virtual_tokens(&self) -> usize {
        self.cfg.num_virtual_tokens
    }

    /// The virtual tokens' embeddings `[T, n_embd]`.
    pub fn embeddings(&self) -> &[f32] {
        self.params.get(0).data()
    }

    pub fn embeddings_mut(&mut self) -> &mut [f32] {
        self.params.get_mut(0).data_mut()
    }

    /// Adds the gradient of the virtual tokens' embeddings `[T, n_embd]` (summed over the batch).
    pub fn accumulate_grad(&mut self, d: &[f32]) -> Result<()> {
        let g = self.params.get_mut(0).grad_mut();
        if d.len() != g.len() {
            return Err(Error::InvalidArgument(format!(
                "prompt tuning gradient: {} values, expected {} tokens x {}",
                d.len(),
                self.cfg.num_virtual_tokens,
                self.dims.n_embd
            )));
        }
        g.iter_mut().zip(d).for_each(|(a, b)| *a += b);
        Ok(())
    }
}

impl Adapter for PromptTuning {
    fn method(&self) -> Method {
        Method::Prompt
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
            method: MethodConfig::Prompt(self.cfg.clone()),
            meta: self.meta.clone(),
        }
    }
}
