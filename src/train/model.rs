//! The glue between the adapters and the model (docs/adapters.md, "How the model plugs in"):
//! LoRA and IA3 run inside the model's `LinearHook` seam, prefix tuning hands the model its
//! (already permuted) keys and values, prompt tuning its virtual-token embeddings. `LlamaObjective`
//! is the trainer's `Objective` over a `Llama`.

use super::{LossStats, MicroBatch, Objective};
use crate::adapters::{
    Adapter, AnyAdapter, FrozenLinear, Ia3, Ia3Config, Lora, LoraConfig, Method, ModelDims,
    PrefixConfig, PrefixInit, PrefixTuning, PromptConfig, PromptTuning, Site, Target,
};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::{
    ActivationMode, BaseLinear, Batch, ForwardOptions, LinearHook, LinearKind, LinearSite, Llama,
    PrefixKv,
};

impl From<LinearKind> for Target {
    fn from(k: LinearKind) -> Target {
        match k {
            LinearKind::Q => Target::AttnQ,
            LinearKind::K => Target::AttnK,
            LinearKind::V => Target::AttnV,
            LinearKind::O => Target::AttnOutput,
            LinearKind::Gate => Target::FfnGate,
            LinearKind::Up => Target::FfnUp,
            LinearKind::Down => Target::FfnDown,
        }
    }
}

impl From<LinearSite> for Site {
    fn from(s: LinearSite) -> Site {
        Site::new(s.layer, s.kind.into())
    }
}

impl FrozenLinear for BaseLinear<'_, '_> {
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
        BaseLinear::forward(self, x, m, y)
    }

    fn backward_input(&self, dy: &[f32], m: usize, dx: &mut [f32]) -> Result<()> {
        BaseLinear::backward_input(self, dy, m, dx)
    }
}

/// Routes every linear layer of the model through an adapter.
pub struct AdapterHook<'a>(pub &'a mut dyn Adapter);

impl LinearHook for AdapterHook<'_> {
    fn forward(
        &mut self,
        site: LinearSite,
        base: &BaseLinear,
        x: &[f32],
        m: usize,
        y: &mut [f32],
    ) -> Result<()> {
        self.0.linear_forward(site.into(), base, x, m, y)
    }

    fn backward(
        &mut self,
        site: LinearSite,
        base: &BaseLinear,
        x: &[f32],
        dy: &[f32],
        m: usize,
        dx: &mut [f32],
    ) -> Result<()> {
        self.0.linear_backward(site.into(), base, x, dy, m, dx)
    }
}

/// What the model needs besides the hook: prefix keys/values or virtual tokens.
enum Extra {
    None,
    Prefix(PrefixKv),
    Virtual(Vec<f32>),
}

fn extra_of(model: &Llama, adapter: &AnyAdapter) -> Result<Extra> {
    match adapter {
        AnyAdapter::Prefix(p) => {
            let cfg = &model.config;
            let n = p.num_virtual_tokens();
            let mut kv = vec![0f32; cfg.n_layer * 2 * n * cfg.kv_dim()];
            p.gather(&mut kv)?;
            Ok(Extra::Prefix(PrefixKv::from_vec(cfg, n, kv)?))
        }
        AnyAdapter::Prompt(p) => Ok(Extra::Virtual(p.embeddings().to_vec())),
        _ => Ok(Extra::None),
    }
}

/// Prefix-tuning keys/values (permuted for the model) or prompt-tuning embeddings of `adapter`.
pub(crate) fn extra_parts(
    model: &Llama,
    adapter: &AnyAdapter,
) -> Result<(Option<PrefixKv>, Option<Vec<f32>>)> {
    Ok(match extra_of(model, adapter)? {
        Extra::None => (None, None),
        Extra::Prefix(p) => (Some(p), None),
        Extra::Virtual(v) => (None, Some(v)),
    })
}

fn options(extra: &Extra, mode: ActivationMode) -> ForwardOptions<'_> {
    ForwardOptions {
        mode,
        prefix: match extra {
            Extra::Prefix(p) => Some(p),
            _ => None,
        },
        virtual_tokens: match extra {
            Extra::Virtual(v) => Some(v),
            _ => None,
        },
    }
}

fn model_batch(b: &MicroBatch) -> Result<Batch<'_>> {
    if b.input_ids.len() != b.rows * b.width || b.labels.len() != b.input_ids.len() {
        return Err(Error::InvalidArgument(format!(
            "micro-batch of {} ids and {} labels is not {} rows x {}",
            b.input_ids.len(),
            b.labels.len(),
            b.rows,
            b.width
        )));
    }
    let packed = b.doc_lengths.iter().any(|d| d.len() > 1);
    Ok(Batch {
        tokens: &b.input_ids,
        n_seq: b.rows,
        seq_len: b.width,
        docs: packed.then_some(&b.doc_lengths[..]),
    })
}

fn stats(s: crate::model::LossStats) -> LossStats {
    LossStats {
        sum_nll: s.sum_nll,
        n_tokens: s.n_tokens,
    }
}

/// The trainer's `Objective` over a Llama-family model.
pub struct LlamaObjective<'m, 'w> {
    pub model: &'m Llama<'w>,
    /// `Full` (fastest) or `Checkpoint` (least memory, recomputes each block in backward).
    pub mode: ActivationMode,
}

impl Objective for LlamaObjective<'_, '_> {
    fn count_targets(&self, adapter: &AnyAdapter, b: &MicroBatch) -> usize {
        // Row t predicts label t+1; with prompt tuning the last virtual token also predicts
        // label 0 (FORMATS.md Part II §4.4).
        let first = usize::from(!matches!(adapter, AnyAdapter::Prompt(_)));
        (0..b.rows)
            .map(|r| {
                b.labels[r * b.width + first..(r + 1) * b.width]
                    .iter()
                    .filter(|&&l| l != crate::model::ops::IGNORE_INDEX)
                    .count()
            })
            .sum()
    }

    fn forward_backward(
        &mut self,
        adapter: &mut AnyAdapter,
        b: &MicroBatch,
        denominator: usize,
        pass: u64,
    ) -> Result<LossStats> {
        let batch = model_batch(b)?;
        let extra = extra_of(self.model, adapter)?;
        let opts = options(&extra, self.mode);
        adapter.as_adapter_mut().set_training(Some(pass));
        let mut dprefix = match &extra {
            Extra::Prefix(p) => Some(PrefixKv::zeros(&self.model.config, p.n_prefix())),
            _ => None,
        };
        let out = self.model.forward_backward(
            &batch,
            &b.labels,
            &opts,
            Some(denominator),
            &mut AdapterHook(adapter.as_adapter_mut()),
            dprefix.as_mut(),
        )?;
        match adapter {
            AnyAdapter::Prefix(p) => {
                if let Some(d) = &dprefix {
                    p.accumulate_grad(d.data())?;
                }
            }
            AnyAdapter::Prompt(p) => {
                // d_embeds [rows, n_virtual + width, n_embd]: the virtual rows of every sequence.
                let d = self.model.config.n_embd;
                let nv = p.num_virtual_tokens();
                let per_seq = (nv + b.width) * d;
                let mut g = vec![0f32; nv * d];
                for seq in out.d_embeds.chunks_exact(per_seq) {
                    for (gi, &v) in g.iter_mut().zip(&seq[..nv * d]) {
                        *gi += v;
                    }
                }
                p.accumulate_grad(&g)?;
            }
            _ => {}
        }
        Ok(stats(out.loss))
    }

    fn evaluate(&mut self, adapter: &mut AnyAdapter, b: &MicroBatch) -> Result<LossStats> {
        let batch = model_batch(b)?;
        let extra = extra_of(self.model, adapter)?;
        let opts = options(&extra, ActivationMode::Inference);
        adapter.as_adapter_mut().set_training(None);
        let fwd = self
            .model
            .forward(&batch, &opts, &mut AdapterHook(adapter.as_adapter_mut()))?;
        Ok(stats(fwd.loss(&b.labels)?))
    }

    fn release_buffers(&mut self) {
        self.model.release_buffers();
    }
}

/// The geometry adapters need, from the model's config.
pub fn model_dims(cfg: &crate::model::Config) -> ModelDims {
    ModelDims {
        n_layer: cfg.n_layer,
        n_embd: cfg.n_embd,
        n_ff: cfg.n_ff,
        n_head: cfg.n_head,
        n_head_kv: cfg.n_head_kv,
        head_dim: cfg.head_dim,
        qk_permuted: cfg.rope.layout == crate::model::RopeLayout::Norm,
    }
}

/// A fresh adapter (the `train` flags that define one).
#[derive(Clone, Debug, PartialEq)]
pub struct AdapterSpec {
    pub method: Method,
    /// LoRA / IA3 targets; `None` takes PEFT's Llama default (LoRA q,v; IA3 k,v,down).
    pub targets: Option<Vec<Target>>,
    pub rank: usize,
    pub alpha: f32,
    pub dropout: f32,
    pub rslora: bool,
    pub num_virtual_tokens: usize,
}

impl Default for AdapterSpec {
    fn default() -> AdapterSpec {
        AdapterSpec {
            method: Method::Lora,
            targets: None,
            rank: 8,
            alpha: 16.0,
            dropout: 0.0,
            rslora: false,
            num_virtual_tokens: 20,
        }
    }
}

/// Builds a fresh adapter with PEFT's init, drawn from `seed`.
pub fn new_adapter(dims: &ModelDims, spec: &AdapterSpec, seed: u64) -> Result<AnyAdapter> {
    if matches!(spec.method, Method::Prefix | Method::Prompt) && spec.num_virtual_tokens == 0 {
        return Err(Error::InvalidArgument(
            "--num-virtual-tokens must be at least 1".into(),
        ));
    }
    Ok(match spec.method {
        Method::Lora => {
            let targets = spec
                .targets
                .clone()
                .unwrap_or_else(|| vec![Target::AttnQ, Target::AttnV]);
            let mut cfg = LoraConfig::new(spec.rank, spec.alpha, &targets, None, dims);
            cfg.rslora = spec.rslora;
            cfg.dropout = spec.dropout;
            AnyAdapter::Lora(Lora::new(dims, cfg, seed)?)
        }
        Method::Ia3 => AnyAdapter::Ia3(Ia3::new(
            dims,
            match &spec.targets {
                Some(t) => Ia3Config::new(t, None, dims),
                None => Ia3Config::llama_default(dims),
            },
        )?),
        Method::Prefix => AnyAdapter::Prefix(PrefixTuning::new(
            dims,
            PrefixConfig {
                num_virtual_tokens: spec.num_virtual_tokens,
                init: PrefixInit::Random,
            },
            seed,
        )?),
        Method::Prompt => AnyAdapter::Prompt(PromptTuning::new(
            dims,
            PromptConfig {
                num_virtual_tokens: spec.num_virtual_tokens,
            },
            seed,
        )?),
    })
}
