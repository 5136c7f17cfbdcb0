//! Builds the Hugging Face `tokenizers` pipeline a GGUF vocabulary describes, exactly as
//! transformers does when it loads a tokenizer from a GGUF file
//! (`integrations/gguf/gguf_tokenizer_mapping.py`, transformers 5.24):
//!
//! - `gpt2` → byte-level BPE (GPT2Tokenizer): the file's merges, tokens respelled into the byte
//!   alphabet when needed, the GPT-2 split regex, or the family's regex for `tokenizer.ggml.pre`
//!   values transformers knows (llama3, qwen2, ...); others (e.g. `smollm`) keep the GPT-2 regex.
//! - `llama` → SentencePiece as BPE with byte fallback (LlamaTokenizer), merges recovered from the
//!   scores; Gemma architectures use GemmaTokenizer's pipeline and merge order instead.
//! - Tokens typed CONTROL become special added tokens, USER_DEFINED ones plain added tokens, so
//!   both are matched whole in the text.
//!
//! Where this differs from llama.cpp or from a model's original `tokenizer.json`, the reason is
//! that we follow transformers' GGUF loading (docs/tokenizer.md lists the cases).

use super::bytes;
use super::merges::{merges_from_vocab, Priority};
use super::meta::{token_type, TokenizerMeta};
use crate::error::{Error, Result};
use tokenizers::decoders::byte_fallback::ByteFallback;
use tokenizers::decoders::fuse::Fuse;
use tokenizers::decoders::sequence::Sequence as DecoderSequence;
use tokenizers::decoders::strip::Strip;
use tokenizers::models::bpe::{Vocab, BPE};
use tokenizers::normalizers::{Prepend, Replace, Sequence as NormalizerSequence};
use tokenizers::pre_tokenizers::byte_level::ByteLevel;
use tokenizers::pre_tokenizers::metaspace::{Metaspace, PrependScheme};
use tokenizers::pre_tokenizers::sequence::Sequence as PreSequence;
use tokenizers::pre_tokenizers::split::{Split, SplitPattern};
use tokenizers::{
    AddedToken, DecoderWrapper, NormalizerWrapper, PreTokenizerWrapper, SplitDelimiterBehavior,
};

/// How token strings map to text; decides `token_to_piece`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Family {
    /// Byte-level BPE: each character of a token stands for one byte (FORMATS.md §4.4).
    ByteLevel,
    /// SentencePiece: `▁` is a space and `<0xNN>` tokens are raw bytes.
    SentencePiece,
}

/// The built pipeline and the choices made on the way.
pub struct Built {
    pub inner: tokenizers::Tokenizer,
    pub family: Family,
    /// Whether transformers adds BOS / EOS with `add_special_tokens=True`.
    pub add_bos: bool,
    pub add_eos: bool,
}

/// The split regexes transformers substitutes for GPT-2's, by `tokenizer.ggml.pre`
/// (`GGUF_PRE_TOKENIZER_SPLITS`). Any other value keeps the GPT-2 regex of the ByteLevel step.
pub(super) fn split_regex(pre: &str) -> Option<&'static str> {
    const LLAMA3: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const QWEN2: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const QWEN35: &str = r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?[\p{L}\p{M}]+|\p{N}| ?[^\s\p{L}\p{M}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const TEKKEN: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    const GPT4O: &str = r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]*[\p{Ll}\p{Lm}\p{Lo}\p{M}]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?|[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}]+[\p{Ll}\p{Lm}\p{Lo}\p{M}]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n/]*|\s*[\r\n]+|\s+(?!\S)|\s+";
    Some(match pre {
        "llama3" | "llama-v3" | "llama-bpe" | "falcon3" | "falcon-h1" | "pixtral" | "midm-2.0"
        | "lfm2" | "jina-v5-nano" | "dbrx" | "smaug-bpe" => LLAMA3,
        "qwen2" | "deepseek-r1-qwen" | "kormo" | "f2llmv2" | "megrez" => QWEN2,
        "qwen35" => QWEN35,
        "tekken" => TEKKEN,
        "gpt-4o" | "llama4" | "kanana2" | "talkie" | "minimax-m2" => GPT4O,
        _ => return None,
    })
}

fn tk_err(what: &str) -> impl FnOnce(tokenizers::Error) -> Error + '_ {
    move |e| Error::Tokenizer(format!("{what}: {e}"))
}

/// Python's `str.isspace` (Unicode White_Space plus the separators U+001C..U+001F).
fn py_isspace(c: char) -> bool {
    c.is_whitespace() || ('\u{1c}'..='\u{1f}').contains(&c)
}

/// Builds the pipeline for `meta`.
pub fn build(meta: &TokenizerMeta<'_>) -> Result<Built> {
    match meta.model {
        "gpt2" => byte_level(meta),
        "llama" => {
            let family = match meta.architecture {
                "gemma" | "gemma2" | "gemma3" => SpmFlavor::Gemma,
                "phi3" => SpmFlavor::Phi3,
                _ => SpmFlavor::Llama,
            };
            sentencepiece(meta, family)
        }
        "gemma4" => sentencepiece(meta, SpmFlavor::Gemma4),
        other => Err(Error::Unsupported(format!(
            "tokenizer.ggml.model {other:?} (supported: gpt2, llama, gemma4)"
        ))),
    }
}

/// The file's merges ("LEFT RIGHT", rank = index), as transformers splits them.
fn file_merges(merges: &[String]) -> Result<Vec<(String, String)>> {
    merges
        .iter()
        .enumerate()
        .map(|(i, m)| {
            let mut parts = m.split(' ');
            match (parts.next(), parts.next(), parts.next()) {
                (Some(l), Some(r), None) => Ok((l.to_owned(), r.to_owned())),
                _ => Err(Error::Tokenizer(format!(
                    "tokenizer.ggml.merges[{i}] = {m:?}: expected two tokens separated by one space"
                ))),
            }
        })
        .collect()
}

fn byte_level(meta: &TokenizerMeta<'_>) -> Result<Built> {
    let merges = meta.merges.ok_or_else(|| {
        Error::Unsupported("a gpt2 tokenizer without tokenizer.ggml.merges".into())
    })?;
    let vocab: Vocab = meta
        .tokens
        .iter()
        .enumerate()
        .map(|(i, t)| {
            let spelled = if bytes::is_byte_level(t) {
                t.clone()
            } else {
                bytes::to_byte_level(t)
            };
            (spelled, i as u32)
        })
        .collect();
    let model = BPE::builder()
        .vocab_and_merges(vocab, file_merges(merges)?)
        .continuing_subword_prefix(String::new())
        .end_of_word_suffix(String::new())
        .fuse_unk(false)
        .build()
        .map_err(tk_err("building the BPE model"))?;
    let mut inner = tokenizers::Tokenizer::new(model);
    let pre: PreTokenizerWrapper = match meta.pre.and_then(split_regex) {
        Some(re) => {
            let split = Split::new(
                SplitPattern::Regex(re.into()),
                SplitDelimiterBehavior::Isolated,
                false,
            )
            .map_err(tk_err("compiling the split regex"))?;
            PreSequence::new(vec![
                split.into(),
                ByteLevel::new(false, true, false).into(),
            ])
            .into()
        }
        None => ByteLevel::new(false, true, true).into(),
    };
    inner.with_pre_tokenizer(Some(pre));
    inner.with_decoder(Some(DecoderWrapper::ByteLevel(ByteLevel::default())));
    // A CONTROL token spelled outside the byte alphabet is a conversion mislabel; transformers
    // skips it rather than grow the vocabulary.
    add_gguf_tokens(&mut inner, meta, bytes::is_byte_level)?;
    Ok(Built {
        inner,
        family: Family::ByteLevel,
        add_bos: meta.add_bos.unwrap_or(false) && meta.bos.is_some(),
        add_eos: meta.add_eos.unwrap_or(false) && meta.eos.is_some(),
    })
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum SpmFlavor {
    /// LlamaTokenizer: Metaspace pre-tokenizer, prefix space on the first piece.
    Llama,
    /// Phi-3: the prefix space comes from a normalizer.
    Phi3,
    /// GemmaTokenizer, with Gemma's repairs (whitespace tokens respelled, merges in vocabulary order).
    Gemma,
    /// GemmaTokenizer for the `gemma4` vocabulary type: merges from the file or the scores.
    Gemma4,
}

fn sentencepiece(meta: &TokenizerMeta<'_>, flavor: SpmFlavor) -> Result<Built> {
    // Gemma stores tokens of two or more spaces with real spaces; GemmaTokenizer looks them up as
    // "▁▁", so transformers renames every whitespace-only token that contains a space.
    let respell = |t: &String| -> String {
        if flavor == SpmFlavor::Gemma && t.contains(' ') && t.chars().all(py_isspace) {
            "\u{2581}".repeat(t.chars().count())
        } else {
            t.clone()
        }
    };
    let tokens: Vec<String> = meta.tokens.iter().map(respell).collect();
    let merges = match (flavor, meta.merges) {
        (SpmFlavor::Gemma, _) => merges_from_vocab(&tokens, Priority::Position),
        (_, Some(m)) => file_merges(m)?,
        (_, None) => {
            let scores = meta.scores.as_deref().ok_or_else(|| {
                Error::Tokenizer(
                    "tokenizer.ggml.scores: missing, and there are no merges to use instead".into(),
                )
            })?;
            merges_from_vocab(&tokens, Priority::Scores(scores))
        }
    };
    let gemma = matches!(flavor, SpmFlavor::Gemma | SpmFlavor::Gemma4);
    let vocab: Vocab = tokens
        .into_iter()
        .enumerate()
        .map(|(i, t)| (t, i as u32))
        .collect();
    let mut builder = BPE::builder()
        .vocab_and_merges(vocab, merges)
        .fuse_unk(true)
        .byte_fallback(true);
    if gemma {
        builder = builder.unk_token("<unk>".into());
    }
    let model = builder.build().map_err(tk_err("building the BPE model"))?;
    let mut inner = tokenizers::Tokenizer::new(model);

    let space = || Replace::new(" ", "\u{2581}").map_err(tk_err("space normalizer"));
    let mut decoders: Vec<DecoderWrapper> = vec![
        Replace::new("\u{2581}", " ")
            .map_err(tk_err("space decoder"))?
            .into(),
        ByteFallback::new().into(),
        Fuse::new().into(),
    ];
    match flavor {
        SpmFlavor::Gemma | SpmFlavor::Gemma4 => {
            inner
                .with_normalizer(Some(NormalizerWrapper::Replace(space()?)))
                .map_err(tk_err("normalizer"))?;
            let split = Split::new(" ", SplitDelimiterBehavior::MergedWithPrevious, false)
                .map_err(tk_err("space split"))?;
            inner.with_pre_tokenizer(Some(split));
        }
        SpmFlavor::Llama => {
            inner.with_pre_tokenizer(Some(Metaspace::new(
                '\u{2581}',
                PrependScheme::First,
                false,
            )));
            decoders.push(Strip::new(' ', 1, 0).into());
        }
        SpmFlavor::Phi3 => {
            let norm = NormalizerSequence::new(vec![
                Prepend::new("\u{2581}".into()).into(),
                space()?.into(),
            ]);
            inner
                .with_normalizer(Some(norm))
                .map_err(tk_err("normalizer"))?;
            decoders.push(Strip::new(' ', 1, 0).into());
        }
    }
    inner.with_decoder(Some(DecoderSequence::new(decoders)));
    add_gguf_tokens(&mut inner, meta, |_| true)?;

    // transformers: SentencePiece files add BOS unless they say otherwise; gemma4 never does
    // (its chat template writes <bos> itself).
    let add_bos = match flavor {
        SpmFlavor::Gemma4 => false,
        _ => meta.add_bos.unwrap_or(true),
    };
    Ok(Built {
        inner,
        family: Family::SentencePiece,
        add_bos: add_bos && meta.bos.is_some(),
        add_eos: meta.add_eos.unwrap_or(false) && meta.eos.is_some(),
    })
}

/// Adds the tokens the file types CONTROL (special) and USER_DEFINED (plain), then the named
/// special tokens (bos, eos, unk, pad) that are not added yet, as transformers does.
fn add_gguf_tokens(
    inner: &mut tokenizers::Tokenizer,
    meta: &TokenizerMeta<'_>,
    control_ok: impl Fn(&str) -> bool,
) -> Result<()> {
    let typed = |ty: i32| {
        meta.tokens
            .iter()
            .enumerate()
            .filter(move |&(i, _)| meta.token_types.is_some() && meta.token_type(i) == ty)
            .map(|(_, t)| t)
    };
    let control: Vec<AddedToken> = typed(token_type::CONTROL)
        .filter(|t| control_ok(t))
        .map(|t| AddedToken::from(t.clone(), true).normalized(false))
        .collect();
    inner
        .add_special_tokens(control)
        .map_err(tk_err("adding control tokens"))?;
    // Only those the vocabulary spells the same way (a respelled one would get a new id).
    let user: Vec<AddedToken> = typed(token_type::USER_DEFINED)
        .filter(|t| inner.token_to_id(t).is_some())
        .map(|t| AddedToken::from(t.clone(), false).normalized(false))
        .collect();
    inner
        .add_tokens(user)
        .map_err(tk_err("adding user-defined tokens"))?;

    let added = inner.get_added_vocabulary();
    let named: Vec<AddedToken> = [meta.bos, meta.eos, meta.unk, meta.pad]
        .into_iter()
        .flatten()
        .map(|id| &meta.tokens[id as usize])
        .filter(|t| added.token_to_id(t, inner.get_model()).is_some())
        .filter(|t| !added.get_vocab().contains_key(t.as_str()))
        .map(|t| AddedToken::from(t.clone(), true).normalized(false))
        .collect();
    inner
        .add_special_tokens(named)
        .map_err(tk_err("adding named special tokens"))?;
    Ok(())
}
