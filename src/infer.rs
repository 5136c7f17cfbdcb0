//! Generation with an optional adapter, the pieces `edgetune generate` and the C ABI share: the
//! prompt's token ids (plain or through the chat template), the end-of-generation tokens, an
//! adapter turned into what `model::generate::generate_with` takes, and streaming of token bytes
//! as whole UTF-8 characters.

use crate::adapters::{load_peft_dir, AnyAdapter};
use crate::chat::{ChatTemplate, Message};
use crate::error::{Error, Result};
use crate::gguf::Header;
use crate::model::generate::GenerateAdapters;
use crate::model::hook::LinearHook;
use crate::model::{Config, PrefixKv};
use crate::tokenizer::Tokenizer;
use crate::train::model::{model_dims, AdapterHook};
use std::path::Path;

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

/// An adapter ready for generation: loaded, in inference mode, prefix keys/values gathered once.
pub struct InferenceAdapter {
    adapter: AnyAdapter,
    /// Prefix tuning: `[n_layer, 2, n_virtual, kv_dim]` and `n_virtual`.
    prefix: Option<(Vec<f32>, usize)>,
    /// Prompt tuning: the virtual token embeddings `[n_virtual, n_embd]`.
    virtual_tokens: Option<Vec<f32>>,
}

impl InferenceAdapter {
    /// Loads a PEFT adapter directory for the model of `config`.
    pub fn load(dir: &Path, config: &Config) -> Result<InferenceAdapter> {
        Self::new(load_peft_dir(dir, &model_dims(config))?, config)
    }

    pub fn new(mut adapter: AnyAdapter, config: &Config) -> Result<InferenceAdapter> {
        adapter.as_adapter_mut().set_training(None);
        let prefix = match adapter.as_prefix() {
            Some(p) => {
                let n = p.num_virtual_tokens();
                let mut kv = vec![0f32; config.n_layer * 2 * n * config.kv_dim()];
                p.gather(&mut kv)?;
                Some((kv, n))
            }
            None => None,
        };
        let virtual_tokens = adapter.as_prompt().map(|p| p.embeddings().to_vec());
        Ok(InferenceAdapter {
            adapter,
            prefix,
            virtual_tokens,
        })
    }

    pub fn adapter(&self) -> &AnyAdapter {
        &self.adapter
    }

    /// What `generate_with` takes; `hook` is caller-owned storage for the linear-layer hook.
    pub fn generate_adapters<'a>(
        &'a mut self,
        config: &Config,
        hook: &'a mut Option<AdapterHook<'a>>,
    ) -> Result<GenerateAdapters<'a>> {
        let prefix = match &self.prefix {
            Some((kv, n)) => Some(PrefixKv::from_vec(config, *n, kv.clone())?),
            None => None,
        };
        let hook = hook.insert(AdapterHook(self.adapter.as_adapter_mut()));
        Ok(GenerateAdapters {
            hook: Some(hook as &mut dyn LinearHook),
            prefix,
            virtual_tokens: self.virtual_tokens.as_deref(),
        })
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
        assert_eq!(s.push(&euro[1..], |b| b.to_vec()), b"");
        assert_eq!(s.push(&euro[2..], |b| b.to_vec()), euro);
        assert_eq!(s.push(b"a\xff", |b| b.to_vec()), b"a\xff");
        assert_eq!(s.push(&euro[..2], |b| b.to_vec()), b"");
        assert_eq!(s.finish(), &euro[..2]);
    }
}
