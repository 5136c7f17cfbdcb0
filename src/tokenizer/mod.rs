//! Tokenizers built from GGUF metadata, with the ids Hugging Face transformers gives for the same
//! file (`AutoTokenizer.from_pretrained(dir, gguf_file=...)`).
//!
//! `Tokenizer::from_gguf` reads `tokenizer.ggml.*` (FORMATS.md §4) and builds the same
//! `tokenizers` pipeline transformers builds (see `pipeline`); `encode` gives the ids of
//! `tokenizer(text, add_special_tokens=...)`, with special and user-defined tokens written in
//! the text recognised; `decode` gives `tokenizer.decode(ids)`. Chat templates live in
//! `crate::chat`.

pub mod bytes;
pub mod merges;
pub mod meta;
mod pipeline;

pub use meta::TokenizerMeta;
pub use pipeline::Family;

use crate::error::{Error, Result};
use crate::gguf::Header;

/// Texts of end-of-turn tokens, in the order we prefer them when the file names no EOT id.
const EOT_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<end_of_turn>",
    "<|end|>",
    "<|endoftext|>",
    "<EOT>",
    "_<EOT>",
    "<｜end▁of▁sentence｜>",
    "<end_of_utterance>",
];

/// Texts that end generation besides EOS/EOT/EOM (llama.cpp's EOG set).
const EOG_TEXTS: &[&str] = &[
    "<|eot_id|>",
    "<|im_end|>",
    "<|end|>",
    "<|return|>",
    "<|call|>",
    "<|flush|>",
    "<|calls|>",
    "<end_of_turn>",
    "<|endoftext|>",
    "<|eom_id|>",
    "<EOT>",
    "_<EOT>",
    "<end_of_utterance>",
];

/// Ids of the special tokens a model uses; `None` where the file has none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SpecialTokens {
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    /// End of turn: from `tokenizer.ggml.eot_token_id`, else found by its text.
    pub eot: Option<u32>,
    pub eom: Option<u32>,
    pub unk: Option<u32>,
    pub pad: Option<u32>,
}

/// A tokenizer for one GGUF vocabulary.
pub struct Tokenizer {
    inner: tokenizers::Tokenizer,
    family: Family,
    special: SpecialTokens,
    /// Tokens that end generation (EOS, EOT, EOM and tokens with end-of-turn texts), sorted.
    eog: Vec<u32>,
    add_bos: bool,
    add_eos: bool,
    n_vocab: usize,
}

impl std::fmt::Debug for Tokenizer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Tokenizer")
            .field("family", &self.family)
            .field("n_vocab", &self.n_vocab)
            .field("special", &self.special)
            .field("add_bos", &self.add_bos)
            .field("add_eos", &self.add_eos)
            .finish_non_exhaustive()
    }
}

impl Tokenizer {
    /// Builds the tokenizer a GGUF header describes.
    pub fn from_gguf(header: &Header) -> Result<Tokenizer> {
        let meta = TokenizerMeta::from_header(header)?;
        Self::from_meta(&meta)
    }

    /// Builds the tokenizer from metadata already read (lets callers adjust it first).
    pub fn from_meta(meta: &TokenizerMeta<'_>) -> Result<Tokenizer> {
        let built = pipeline::build(meta)?;
        let find = |texts: &[&str]| -> Vec<u32> {
            texts
                .iter()
                .filter_map(|t| {
                    let inner = &built.inner;
                    inner
                        .token_to_id(t)
                        .or_else(|| inner.token_to_id(&bytes::to_byte_level(t)))
                })
                .collect()
        };
        let eot = meta.eot.or_else(|| find(EOT_TEXTS).first().copied());
        let special = SpecialTokens {
            bos: meta.bos,
            eos: meta.eos,
            eot,
            eom: meta.eom,
            unk: meta.unk,
            pad: meta.pad,
        };
        let mut eog: Vec<u32> = find(EOG_TEXTS);
        eog.extend(
            [special.eos, special.eot, special.eom]
                .into_iter()
                .flatten(),
        );
        eog.sort_unstable();
        eog.dedup();
        Ok(Tokenizer {
            inner: built.inner,
            family: built.family,
            special,
            eog,
            add_bos: built.add_bos,
            add_eos: built.add_eos,
            n_vocab: meta.tokens.len(),
        })
    }

    /// The token ids of `text`. Special and user-defined tokens written in the text are
    /// recognised. With `add_special`, BOS/EOS are added as the model's metadata says
    /// (transformers' `add_special_tokens=True`).
    pub fn encode(&self, text: &str, add_special: bool) -> Result<Vec<u32>> {
        let enc = self
            .inner
            .encode_fast(text, false)
            .map_err(|e| Error::Tokenizer(format!("encoding {} bytes of text: {e}", text.len())))?;
        let body = enc.get_ids();
        let mut ids = Vec::with_capacity(body.len() + 2);
        if add_special && self.add_bos {
            ids.extend(self.special.bos);
        }
        ids.extend_from_slice(body);
        if add_special && self.add_eos {
            ids.extend(self.special.eos);
        }
        Ok(ids)
    }

    /// The text of `ids` (transformers' `decode(ids)`: special tokens kept, invalid UTF-8
    /// replaced by U+FFFD). An id outside the vocabulary is an error.
    pub fn decode(&self, ids: &[u32]) -> Result<String> {
        self.check_ids(ids)?;
        self.inner
            .decode(ids, false)
            .map_err(|e| Error::Tokenizer(format!("decoding {} ids: {e}", ids.len())))
    }

    fn check_ids(&self, ids: &[u32]) -> Result<()> {
        match ids.iter().position(|&id| id as usize >= self.n_vocab) {
            Some(i) => Err(Error::InvalidArgument(format!(
                "token id {} at position {i} is outside the vocabulary of {} tokens",
                ids[i], self.n_vocab
            ))),
            None => Ok(()),
        }
    }

    /// The bytes token `id` contributes to decoded text on its own: byte-level characters
    /// mapped back to bytes, `▁` as a space, `<0xNN>` as one byte. Concatenating pieces gives
    /// the decoded bytes, except that SentencePiece's decode drops the leading space of the
    /// first token (Llama flavour). A piece may be an incomplete UTF-8 sequence.
    pub fn token_to_piece(&self, id: u32) -> Result<Vec<u8>> {
        self.check_ids(&[id])?;
        let text = self.inner.id_to_token(id).ok_or_else(|| {
            Error::Tokenizer(format!("token id {id} has no string in the vocabulary"))
        })?;
        Ok(match self.family {
            Family::ByteLevel => {
                let mapped: Option<Vec<u8>> = text.chars().map(bytes::char_to_byte).collect();
                mapped.unwrap_or_else(|| text.into_bytes())
            }
            Family::SentencePiece => match byte_token(&text) {
                Some(b) => vec![b],
                None => text.replace('\u{2581}', " ").into_bytes(),
            },
        })
    }

    /// The token's string as the tokenizer spells it (byte-level tokens in the byte alphabet).
    pub fn token_text(&self, id: u32) -> Option<String> {
        if id as usize >= self.n_vocab {
            return None;
        }
        self.inner.id_to_token(id)
    }

    /// The id of a token string, or `None`.
    pub fn token_id(&self, text: &str) -> Option<u32> {
        self.inner.token_to_id(text)
    }

    /// Number of tokens in the file's vocabulary (rows of the embedding matrix).
    pub fn vocab_size(&self) -> usize {
        self.n_vocab
    }

    pub fn special_tokens(&self) -> &SpecialTokens {
        &self.special
    }

    pub fn bos(&self) -> Option<u32> {
        self.special.bos
    }

    pub fn eos(&self) -> Option<u32> {
        self.special.eos
    }

    pub fn eot(&self) -> Option<u32> {
        self.special.eot
    }

    /// Whether generation should stop at `id` (EOS, EOT, EOM or another end-of-turn token).
    pub fn is_end_of_generation(&self, id: u32) -> bool {
        self.eog.binary_search(&id).is_ok()
    }

    /// Whether `encode(.., true)` adds BOS / EOS.
    pub fn adds_bos(&self) -> bool {
        self.add_bos
    }

    pub fn adds_eos(&self) -> bool {
        self.add_eos
    }

    pub fn family(&self) -> Family {
        self.family
    }

    /// The underlying Hugging Face `tokenizers` pipeline (for inspection and tests).
    pub fn hf(&self) -> &tokenizers::Tokenizer {
        &self.inner
    }
}

/// The byte of a SentencePiece byte token `<0xNN>` (what the ByteFallback decoder accepts).
fn byte_token(text: &str) -> Option<u8> {
    let hex = text.strip_prefix("<0x")?.strip_suffix('>')?;
    if hex.len() != 2 {
        return None;
    }
    u8::from_str_radix(hex, 16).ok()
}

/// The split regex transformers uses for a `tokenizer.ggml.pre` value, if it replaces GPT-2's.
pub fn pre_tokenizer_regex(pre: &str) -> Option<&'static str> {
    pipeline::split_regex(pre)
}
