//! Inference with adapters, the pieces `edgetune generate`/`perplexity` and the C ABI share: the
//! prompt's token ids (plain or through the chat template), the end-of-generation tokens, the
//! adapters (`InferenceAdapters`: one of any method, or several LoRA or several IA3 at once, as
//! PEFT runs several active adapters — LoRA deltas add up, IA3 scalings multiply; see
//! `adapters::stack`), and streaming of token bytes as whole UTF-8 characters.

use crate::adapters::stack::Stacked;
use crate::adapters::{load_peft_dir, Adapter, AnyAdapter, Method};
use crate::chat::{ChatTemplate, Message};
use crate::error::{Error, Result};
use crate::gguf::Header;
use crate::model::generate::{perplexity_by, Perplexity};
use crate::model::{BaseLinear, ForwardOptions, LinearHook, LinearSite, Llama, PrefixKv};
use crate::tokenizer::Tokenizer;
use crate::train::model::{extra_parts, model_dims};
use std::path::PathBuf;

/// Token ids of `prompt`: with `chat`, wrapped as a user message in the model's chat template
/// (with the generation prompt); else encoded with the tokenizer's BOS rule.
pub fn prompt_ids(header: &Header, tok: &Tokenizer, prompt: &str, chat: bool) -> Result<Vec<u32>> {
    let ids = if chat {
        let template = ChatTemplate::from_gguf(header)?;
        let text = template.render(&[Message::new("user", prompt)], true)?;
        // The rendered template already holds any BOS it wants, as transformers does.
        tok.encode(&text, false)?
    } else {
        tok.encode(prompt, true)?
    };
    if ids.is_empty() {
        return Err(Error::InvalidArgument("the prompt is empty".into()));
    }
    Ok(ids)
}

/// Every token that ends generation (EOS, EOT, ...).
pub fn stop_tokens(tok: &Tokenizer) -> Vec<u32> {
    (0..tok.vocab_size() as u32)
        .filter(|&id| tok.is_end_of_generation(id))
        .collect()
}

/// Adapters for inference, with what the model needs from them prepared once.
pub struct InferenceAdapters {
    adapters: Vec<AnyAdapter>,
    prefix: Option<PrefixKv>,
    virtual_tokens: Option<Vec<f32>>,
}

impl InferenceAdapters {
    /// Checks that `adapters` can run together on `model`: any one adapter, or several of LoRA
    /// or several of IA3 (not mixed: PEFT needs a mixed model for that); prefix and prompt tuning
    /// one at a time.
    pub fn new(model: &Llama, mut adapters: Vec<AnyAdapter>) -> Result<InferenceAdapters> {
        if adapters.len() > 1 {
            let methods: Vec<Method> = adapters.iter().map(|a| a.as_adapter().method()).collect();
            let first = methods[0];
            if !matches!(first, Method::Lora | Method::Ia3) || methods.iter().any(|&m| m != first) {
                let names: Vec<&str> = methods.iter().map(|m| m.cli_name()).collect();
                return Err(Error::Unsupported(format!(
                    "adapters of methods [{}] together: several adapters must all be LoRA or \
                     all IA3",
                    names.join(", ")
                )));
            }
        }
        let (prefix, virtual_tokens) = match adapters.first() {
            Some(a) => extra_parts(model, a)?,
            None => (None, None),
        };
        for a in &mut adapters {
            a.as_adapter_mut().set_training(None);
        }
        Ok(InferenceAdapters {
            adapters,
            prefix,
            virtual_tokens,
        })
    }

    /// Loads PEFT adapter directories for `model`.
    pub fn load(model: &Llama, dirs: &[PathBuf]) -> Result<InferenceAdapters> {
        let dims = model_dims(&model.config);
        let adapters = dirs
            .iter()
            .map(|d| load_peft_dir(d, &dims))
            .collect::<Result<Vec<_>>>()?;
        InferenceAdapters::new(model, adapters)
    }

    pub fn adapters(&self) -> &[AnyAdapter] {
        &self.adapters
    }

    /// Prefix-tuning keys/values and prompt-tuning embeddings, next to the hook.
    pub fn parts(&mut self) -> (Option<&PrefixKv>, Option<&[f32]>, StackHook<'_>) {
        (
            self.prefix.as_ref(),
            self.virtual_tokens.as_deref(),
            StackHook {
                adapters: self
                    .adapters
                    .iter_mut()
                    .map(AnyAdapter::as_adapter_mut)
                    .collect(),
            },
        )
    }

    /// Perplexity with the adapters applied (see `model::generate::perplexity_by`; with prompt
    /// tuning the last virtual token also predicts each sequence's first label, as PEFT's loss).
    pub fn perplexity(
        &mut self,
        model: &Llama,
        sequences: &[Vec<u32>],
        labels: Option<&[Vec<i32>]>,
    ) -> Result<Perplexity> {
        let (prefix, virtual_tokens, mut hook) = self.parts();
        let opts = ForwardOptions {
            prefix,
            virtual_tokens,
            ..ForwardOptions::inference()
        };
        perplexity_by(model, sequences, labels, &mut |batch, labels| {
            model.forward(batch, &opts, &mut hook)?.loss(labels)
        })
    }
}

/// Runs every linear layer through the adapters, innermost first.
pub struct StackHook<'a> {
    adapters: Vec<&'a mut dyn Adapter>,
}

impl LinearHook for StackHook<'_> {
    fn forward(
        &mut self,
        site: LinearSite,
        base: &BaseLinear,
        x: &[f32],
        m: usize,
        y: &mut [f32],
    ) -> Result<()> {
        use crate::adapters::FrozenLinear;
        Stacked::new(&mut self.adapters, site.into(), base).forward(x, m, y)
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
        match self.adapters.as_mut_slice() {
            [] => base.backward_input(dy, m, dx),
            [one] => one.linear_backward(site.into(), base, x, dy, m, dx),
            _ => Err(Error::Unsupported(
                "backward through several stacked adapters".into(),
            )),
        }
    }
}

/// Token bytes in, whole UTF-8 characters out: a character split across tokens is held back until
/// its last byte arrives; bytes that can never be valid pass through as they are.
#[derive(Default)]
pub struct Utf8Stream {
    pending: Vec<u8>,
}

impl Utf8Stream {
    /// Adds a token's bytes and passes the longest complete prefix to `emit`, keeping the rest.
    pub fn push<R>(&mut self, bytes: &[u8], emit: impl FnOnce(&[u8]) -> R) -> R {
        self.pending.extend_from_slice(bytes);
        let valid = match std::str::from_utf8(&self.pending) {
            Ok(s) => s.len(),
            Err(e) if e.error_len().is_none() => e.valid_up_to(),
            Err(_) => self.pending.len(),
        };
        let r = emit(&self.pending[..valid]);
        self.pending.drain(..valid);
        r
    }

    /// The bytes still held back (an incomplete character at the end of generation).
    pub fn finish(&mut self) -> Vec<u8> {
        std::mem::take(&mut self.pending)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utf8_stream_holds_back_a_split_character() {
        let mut s = Utf8Stream::default();
        let euro = "€".as_bytes();
        assert_eq!(s.push(&euro[..1], |b| b.to_vec()), b"");
        assert_eq!(s.push(&euro[1..2], |b| b.to_vec()), b"");
        assert_eq!(s.push(&euro[2..], |b| b.to_vec()), euro);
        assert_eq!(s.push(b"a\xff", |b| b.to_vec()), b"a\xff");
        assert_eq!(s.push(&euro[..2], |b| b.to_vec()), b"");
        assert_eq!(s.finish(), &euro[..2]);
    }
}
