//! Text generation with a KV cache (greedy or sampled with a seeded RNG) and perplexity.
//!
//! Sampling follows Hugging Face's order: divide the logits by the temperature, keep the `top_k`
//! largest, then the smallest set of most probable tokens whose probability reaches `top_p`, and
//! draw from what is left. Temperature 0 is greedy (argmax, lowest id on ties, as `torch.argmax`).

use super::cache::{Input, KvCache};
use super::hook::{LinearHook, NoHook};
use super::llama::{Batch, Llama};
use super::pass::LossStats;
use super::PrefixKv;
use crate::error::{Error, Result};

/// Generation settings.
#[derive(Clone, Debug, PartialEq)]
pub struct GenerateParams {
    /// Most new tokens to produce.
    pub max_tokens: usize,
    /// 0 = greedy.
    pub temperature: f32,
    /// Keep only the `top_k` most likely tokens (0 = all).
    pub top_k: usize,
    /// Nucleus sampling threshold in (0, 1] (1 = off).
    pub top_p: f32,
    pub seed: u64,
    /// Tokens that end generation; they are neither passed to `on_token` nor returned.
    pub stop_tokens: Vec<u32>,
}

impl Default for GenerateParams {
    fn default() -> Self {
        GenerateParams {
            max_tokens: 128,
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            seed: 0,
            stop_tokens: Vec::new(),
        }
    }
}

impl GenerateParams {
    fn validate(&self) -> Result<()> {
        if !(self.temperature.is_finite() && self.temperature >= 0.0) {
            return Err(Error::InvalidArgument(format!(
                "temperature {} must be >= 0",
                self.temperature
            )));
        }
        if !(self.top_p > 0.0 && self.top_p <= 1.0) {
            return Err(Error::InvalidArgument(format!(
                "top_p {} must be in (0, 1]",
                self.top_p
            )));
        }
        Ok(())
    }
}

/// Generates up to `params.max_tokens` tokens after `prompt_ids`, calling `on_token` with each
/// (return `false` to stop). Returns the generated ids.
pub fn generate(
    model: &Llama,
    prompt_ids: &[u32],
    params: &GenerateParams,
    on_token: &mut dyn FnMut(u32) -> bool,
) -> Result<Vec<u32>> {
    generate_with(
        model,
        prompt_ids,
        params,
        GenerateAdapters::default(),
        on_token,
    )
}

/// Adapters active during generation.
#[derive(Default)]
pub struct GenerateAdapters<'a> {
    /// Wraps every linear layer (LoRA, IA3, ...).
    pub hook: Option<&'a mut dyn LinearHook>,
    /// Prefix-tuning keys/values.
    pub prefix: Option<PrefixKv>,
    /// Prompt-tuning embeddings `[n_virtual, n_embd]`, run before the prompt.
    pub virtual_tokens: Option<&'a [f32]>,
}

/// `generate` with adapters.
pub fn generate_with(
    model: &Llama,
    prompt_ids: &[u32],
    params: &GenerateParams,
    adapters: GenerateAdapters,
    on_token: &mut dyn FnMut(u32) -> bool,
) -> Result<Vec<u32>> {
    params.validate()?;
    let GenerateAdapters {
        hook,
        prefix,
        virtual_tokens,
    } = adapters;
    let mut no_hook = NoHook;
    let hook: &mut dyn LinearHook = match hook {
        Some(h) => h,
        None => &mut no_hook,
    };
    if prompt_ids.is_empty() {
        return Err(Error::InvalidArgument(
            "empty prompt: generation needs at least one token".into(),
        ));
    }
    let d = model.config.n_embd;
    let n_virtual = virtual_tokens.map_or(0, |v| v.len() / d.max(1));
    let n_ctx = model
        .config
        .n_ctx_train
        .saturating_sub(prefix.as_ref().map_or(0, |p| p.n_prefix()));
    if n_virtual + prompt_ids.len() > n_ctx {
        return Err(Error::InvalidArgument(format!(
            "prompt of {} tokens{} exceeds the model's context of {n_ctx} tokens",
            prompt_ids.len(),
            if n_virtual > 0 {
                format!(" (+{n_virtual} virtual)")
            } else {
                String::new()
            }
        )));
    }
    let mut out = Vec::new();
    if params.max_tokens == 0 {
        return Ok(out);
    }
    let capacity = (n_virtual + prompt_ids.len() + params.max_tokens).min(n_ctx);
    let mut cache = match prefix {
        Some(p) => KvCache::with_prefix(&model.config, capacity, p)?,
        None => KvCache::new(&model.config, capacity)?,
    };
    if let Some(v) = virtual_tokens {
        model.forward_cached(&mut cache, Input::Embeddings(v), hook)?;
    }
    let mut rng = Rng::new(params.seed);
    let mut logits = model.forward_cached(&mut cache, Input::Tokens(prompt_ids), hook)?;
    loop {
        let tok = sample(&mut logits, params, &mut rng)?;
        if params.stop_tokens.contains(&tok) {
            break;
        }
        out.push(tok);
        if !on_token(tok) || out.len() == params.max_tokens || cache.len() == cache.capacity() {
            break;
        }
        logits = model.forward_cached(&mut cache, Input::Tokens(&[tok]), hook)?;
    }
    Ok(out)
}

/// Picks the next token from `logits` (modified in place when sampling).
pub fn sample(logits: &mut [f32], params: &GenerateParams, rng: &mut Rng) -> Result<u32> {
    if logits.is_empty() {
        return Err(Error::InvalidArgument("no logits to sample from".into()));
    }
    if let Some(i) = logits.iter().position(|v| v.is_nan()) {
        return Err(Error::InvalidArgument(format!("logit {i} is NaN")));
    }
    if params.temperature == 0.0 {
        return Ok(argmax(logits) as u32);
    }
    for v in logits.iter_mut() {
        *v /= params.temperature;
    }
    let mut cand: Vec<(u32, f32)> = logits
        .iter()
        .enumerate()
        .map(|(i, &v)| (i as u32, v))
        .collect();
    let by_logit = |a: &(u32, f32), b: &(u32, f32)| b.1.total_cmp(&a.1).then(a.0.cmp(&b.0));
    if params.top_k > 0 && params.top_k < cand.len() {
        cand.select_nth_unstable_by(params.top_k - 1, by_logit);
        cand.truncate(params.top_k);
    }
    cand.sort_unstable_by(by_logit);
    let max = cand[0].1 as f64;
    let mut probs: Vec<f64> = cand.iter().map(|c| (c.1 as f64 - max).exp()).collect();
    let total: f64 = probs.iter().sum();
    if params.top_p < 1.0 {
        let mut cum = 0.0;
        let mut keep = probs.len();
        for (i, p) in probs.iter().enumerate() {
            cum += p / total;
            if cum >= params.top_p as f64 {
                keep = i + 1;
                break;
            }
        }
        probs.truncate(keep);
    }
    let total: f64 = probs.iter().sum();
    let mut u = rng.next_f64() * total;
    for (c, p) in cand.iter().zip(&probs) {
        if u < *p {
            return Ok(c.0);
        }
        u -= p;
    }
    Ok(cand[probs.len() - 1].0)
}

/// Index of the largest value (the first one on ties).
pub fn argmax(v: &[f32]) -> usize {
    let mut best = 0;
    for (i, &x) in v.iter().enumerate() {
        if x > v[best] {
            best = i;
        }
    }
    best
}

pub use crate::rng::Rng;

/// Perplexity over whole sequences.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Perplexity {
    /// Predicted tokens (each sequence of n tokens predicts n − 1).
    pub tokens: usize,
    pub mean_nll: f64,
    pub ppl: f64,
}

/// Tokens per forward pass when consecutive sequences of equal length are evaluated together.
const PERPLEXITY_BATCH_TOKENS: usize = 2048;

/// Evaluates each sequence on its own (consecutive sequences of equal length share a forward
/// pass, which changes nothing but speed) and averages the NLL over all predicted tokens.
pub fn perplexity(model: &Llama, sequences: &[Vec<u32>]) -> Result<Perplexity> {
    perplexity_by(model, sequences, None, &mut |batch, labels| {
        model.loss(batch, labels)
    })
}

/// `perplexity` with labels (−100 = not predicted; `None`: every token) and another loss of a
/// batch (an adapter's, see `train::model::adapter_perplexity`): `loss(batch, labels)` returns
/// the summed NLL and the predicted tokens.
pub fn perplexity_by(
    model: &Llama,
    sequences: &[Vec<u32>],
    labels: Option<&[Vec<i32>]>,
    loss: &mut dyn FnMut(&Batch, &[i32]) -> Result<LossStats>,
) -> Result<Perplexity> {
    if let Some(labels) = labels {
        let bad = labels.len() != sequences.len()
            || labels
                .iter()
                .zip(sequences)
                .any(|(l, s)| l.len() != s.len());
        if bad {
            return Err(Error::InvalidArgument(
                "perplexity: labels do not have the shape of the sequences".into(),
            ));
        }
    }
    for (i, seq) in sequences.iter().enumerate() {
        if seq.len() > model.config.n_ctx_train {
            return Err(Error::InvalidArgument(format!(
                "sequence {i} has {} tokens, more than the model's context of {} tokens",
                seq.len(),
                model.config.n_ctx_train
            )));
        }
    }
    let mut sum = 0.0;
    let mut tokens = 0;
    let mut start = 0;
    while start < sequences.len() {
        let len = sequences[start].len();
        let mut end = start + 1;
        while end < sequences.len()
            && sequences[end].len() == len
            && (end + 1 - start) * len <= PERPLEXITY_BATCH_TOKENS
        {
            end += 1;
        }
        if len >= 2 {
            let flat: Vec<u32> = sequences[start..end].concat();
            let labels: Vec<i32> = match labels {
                Some(l) => l[start..end].concat(),
                None => flat.iter().map(|&t| t as i32).collect(),
            };
            let batch = Batch {
                tokens: &flat,
                n_seq: end - start,
                seq_len: len,
                docs: None,
            };
            let s = loss(&batch, &labels)
                .map_err(|e| Error::InvalidArgument(format!("sequences {start}..{end}: {e}")))?;
            sum += s.sum_nll;
            tokens += s.n_tokens;
        }
        start = end;
    }
    if tokens == 0 {
        return Err(Error::InvalidArgument(
            "perplexity: nothing to predict (no sequence of two or more tokens with a label)"
                .into(),
        ));
    }
    let mean_nll = sum / tokens as f64;
    Ok(Perplexity {
        tokens,
        mean_nll,
        ppl: mean_nll.exp(),
    })
}
