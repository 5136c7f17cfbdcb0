//! Parameter-efficient adapters (DESIGN.md): LoRA, IA3, prefix tuning and prompt tuning, their
//! trainable parameters and gradients, and their files (PEFT directories, llama.cpp LoRA GGUF).
//!
//! The model calls an adapter around each linear layer of a block through `Adapter::linear_forward`
//! / `linear_backward` with the frozen base layer behind `FrozenLinear`; prefix and prompt tuning
//! instead hand the model extra keys/values or input embeddings (`prefix`, `prompt`). Every method
//! exposes its tensors through one registry (`params::ParamSet`) in a fixed order for the optimizer.
//!
//! Row order: in memory, tensors indexed by output rows of q_proj/k_proj (LoRA B, IA3 vectors) are in
//! the model file's (GGUF) order, so they line up with the base weight; PEFT files are written in
//! Hugging Face order (`permute`). Prefix tensors are kept exactly as PEFT stores them and permuted
//! when handed to the model.

pub mod config;
pub mod ia3;
pub mod llama_cpp;
pub mod lora;
pub mod params;
pub mod peft;
pub mod permute;
pub mod prefix;
pub mod prompt;
pub mod rng;
pub mod stack;
pub mod target;

pub use config::{MethodConfig, PeftConfig};
pub use ia3::{Ia3, Ia3Config};
pub use lora::{Lora, LoraConfig};
pub use params::{Param, ParamSet};
pub use peft::{load_peft_dir, save_peft_dir};
pub use prefix::{PrefixConfig, PrefixInit, PrefixTuning};
pub use prompt::{PromptConfig, PromptTuning};
pub use target::{parse_targets, ModelDims, Site, Target};

use crate::backend::{Backend, LinearWeight};
use crate::error::{Error, Result};

/// The adapter methods (`--method`), with PEFT's `peft_type` names.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Method {
    Lora,
    Ia3,
    Prefix,
    Prompt,
}

impl Method {
    /// The `--method` spelling.
    pub fn cli_name(self) -> &'static str {
        match self {
            Method::Lora => "lora",
            Method::Ia3 => "ia3",
            Method::Prefix => "prefix",
            Method::Prompt => "prompt",
        }
    }

    /// PEFT's `peft_type`.
    pub fn peft_type(self) -> &'static str {
        match self {
            Method::Lora => "LORA",
            Method::Ia3 => "IA3",
            Method::Prefix => "PREFIX_TUNING",
            Method::Prompt => "PROMPT_TUNING",
        }
    }

    pub fn from_cli_name(s: &str) -> Result<Method> {
        [Method::Lora, Method::Ia3, Method::Prefix, Method::Prompt]
            .into_iter()
            .find(|m| m.cli_name().eq_ignore_ascii_case(s.trim()))
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "--method '{s}': expected one of lora, ia3, prefix, prompt"
                ))
            })
    }

    pub fn from_peft_type(s: &str) -> Option<Method> {
        [Method::Lora, Method::Ia3, Method::Prefix, Method::Prompt]
            .into_iter()
            .find(|m| m.peft_type() == s)
    }
}

/// A frozen linear layer `y = x·Wᵀ (+ b)` as an adapter sees it. The model implements this for
/// its own base-layer type; `DenseLinear` is a plain implementation over a `LinearWeight`.
pub trait FrozenLinear {
    /// Inputs per row.
    fn n_in(&self) -> usize;
    /// Outputs per row.
    fn n_out(&self) -> usize;
    /// The backend adapters use for their own products.
    fn backend(&self) -> &dyn Backend;
    /// `y[m, n_out] = x[m, n_in]·Wᵀ (+ b)`, overwriting `y`.
    fn forward(&self, x: &[f32], m: usize, y: &mut [f32]) -> Result<()>;
    /// `dx[m, n_in] += dy[m, n_out]·W`.
    fn backward_input(&self, dy: &[f32], m: usize, dx: &mut [f32]) -> Result<()>;
}

/// A `FrozenLinear` over a backend weight view and an optional bias.
pub struct DenseLinear<'a, 'w> {
    pub weight: &'a LinearWeight<'w>,
    pub bias: Option<&'a [f32]>,
    pub backend: &'a dyn Backend,
}

impl FrozenLinear for DenseLinear<'_, '_> {
    fn n_in(&self) -> usize {
        self.weight.n_in
    }

    fn n_out(&self) -> usize {
        self.weight.n_out
    }

    fn backend(&self) -> &dyn Backend {
        self.backend
    }

    fn forward(&self, x: &[f32], m: usize, y: &mut [f32]) -> Result<()> {
        self.backend.linear_forward(x, m, self.weight, y)?;
        if let Some(b) = self.bias {
            for row in y.chunks_exact_mut(self.weight.n_out) {
                for (v, &bi) in row.iter_mut().zip(b) {
                    *v += bi;
                }
            }
        }
        Ok(())
    }

    fn backward_input(&self, dy: &[f32], m: usize, dx: &mut [f32]) -> Result<()> {
        self.backend.linear_backward_input(dy, m, self.weight, dx)
    }
}

/// What every adapter method provides. Methods that do not touch linear layers keep the default
/// hooks (base layer only). Backward passes add into the gradient buffers of `params()`.
pub trait Adapter: Send {
    fn method(&self) -> Method;

    /// The model geometry the adapter was built for.
    fn dims(&self) -> &ModelDims;

    /// The trainable tensors and their gradients, in a fixed order.
    fn params(&self) -> &ParamSet;

    fn params_mut(&mut self) -> &mut ParamSet;

    /// Training mode with the id of the forward pass (`Some(step)`: dropout active and masks drawn
    /// from `step`; give every micro-batch its own id, and the same id when a forward is recomputed),
    /// or inference (`None`, the default: no dropout, nothing saved for backward).
    fn set_training(&mut self, step: Option<u64>) {
        let _ = step;
    }

    /// `y = layer(x)` with the adapter applied at `site` (overwrites `y[m, n_out]`).
    fn linear_forward(
        &mut self,
        site: Site,
        base: &dyn FrozenLinear,
        x: &[f32],
        m: usize,
        y: &mut [f32],
    ) -> Result<()> {
        let _ = site;
        base.forward(x, m, y)
    }

    /// Adds the input gradient of the adapted layer into `dx[m, n_in]` given `dy[m, n_out]` and the
    /// layer input `x` of the matching training forward, and accumulates parameter gradients.
    fn linear_backward(
        &mut self,
        site: Site,
        base: &dyn FrozenLinear,
        x: &[f32],
        dy: &[f32],
        m: usize,
        dx: &mut [f32],
    ) -> Result<()> {
        let _ = (site, x);
        base.backward_input(dy, m, dx)
    }

    /// The adapter_config.json content this adapter corresponds to.
    fn peft_config(&self) -> PeftConfig;

    /// For parameter `param` (index into `params()`): the number of heads whose rows are held in
    /// the model's permuted Q/K order (`permute`) rather than Hugging Face's, or `None` when the
    /// parameter is stored in file order. PEFT files are written and read through this map.
    fn hf_row_permutation(&self, param: usize) -> Option<usize> {
        let _ = param;
        None
    }

    fn zero_grad(&mut self) {
        self.params_mut().zero_grad();
    }
}

/// Any adapter this crate implements, for code that picks the method at run time (CLI, loading).
pub enum AnyAdapter {
    Lora(Lora),
    Ia3(Ia3),
    Prefix(PrefixTuning),
    Prompt(PromptTuning),
}

impl AnyAdapter {
    pub fn as_adapter(&self) -> &dyn Adapter {
        match self {
            AnyAdapter::Lora(a) => a,
            AnyAdapter::Ia3(a) => a,
            AnyAdapter::Prefix(a) => a,
            AnyAdapter::Prompt(a) => a,
        }
    }

    pub fn as_adapter_mut(&mut self) -> &mut dyn Adapter {
        match self {
            AnyAdapter::Lora(a) => a,
            AnyAdapter::Ia3(a) => a,
            AnyAdapter::Prefix(a) => a,
            AnyAdapter::Prompt(a) => a,
        }
    }

    pub fn as_lora(&self) -> Option<&Lora> {
        match self {
            AnyAdapter::Lora(a) => Some(a),
            _ => None,
        }
    }

    pub fn as_ia3(&self) -> Option<&Ia3> {
        match self {
            AnyAdapter::Ia3(a) => Some(a),
            _ => None,
        }
    }

    pub fn as_prefix(&self) -> Option<&PrefixTuning> {
        match self {
            AnyAdapter::Prefix(a) => Some(a),
            _ => None,
        }
    }

    pub fn as_prefix_mut(&mut self) -> Option<&mut PrefixTuning> {
        match self {
            AnyAdapter::Prefix(a) => Some(a),
            _ => None,
        }
    }

    pub fn as_prompt(&self) -> Option<&PromptTuning> {
        match self {
            AnyAdapter::Prompt(a) => Some(a),
            _ => None,
        }
    }

    pub fn as_prompt_mut(&mut self) -> Option<&mut PromptTuning> {
        match self {
            AnyAdapter::Prompt(a) => Some(a),
            _ => None,
        }
    }
}

/// Checks an activation buffer's length (`what` names it in the error).
pub(crate) fn check_len(
    what: &str,
    site: Site,
    len: usize,
    rows: usize,
    cols: usize,
) -> Result<()> {
    if rows.checked_mul(cols) != Some(len) {
        return Err(Error::InvalidArgument(format!(
            "{site}: {what} has {len} values, expected {rows} rows x {cols}"
        )));
    }
    Ok(())
}

/// Checks that a base layer has the shape the adapter was built for at `site`.
pub(crate) fn check_base(site: Site, base: &dyn FrozenLinear, dims: &ModelDims) -> Result<()> {
    let (n_in, n_out) = site.target.shape(dims);
    if (base.n_in(), base.n_out()) != (n_in, n_out) {
        return Err(Error::InvalidArgument(format!(
            "{site}: base layer is {}x{} (in x out), the adapter expects {n_in}x{n_out}",
            base.n_in(),
            base.n_out()
        )));
    }
    Ok(())
}
