//! The tokenizer fields of a GGUF header (FORMATS.md §4.1), read once and checked: every array
//! is the right type and long enough, every special-token id is in range.

use crate::error::{Error, Result};
use crate::gguf::{Array, Header, Value};

/// Token type ids as llama.cpp writes them (`tokenizer.ggml.token_type`).
pub mod token_type {
    pub const NORMAL: i32 = 1;
    pub const UNKNOWN: i32 = 2;
    pub const CONTROL: i32 = 3;
    pub const USER_DEFINED: i32 = 4;
    pub const UNUSED: i32 = 5;
    pub const BYTE: i32 = 6;
}

/// What `tokenizer.ggml.*` says about the vocabulary, borrowed from the header.
#[derive(Debug)]
pub struct TokenizerMeta<'h> {
    /// `general.architecture` (Gemma files need their own SentencePiece repairs).
    pub architecture: &'h str,
    /// `tokenizer.ggml.model`: "gpt2", "llama", ...
    pub model: &'h str,
    /// `tokenizer.ggml.pre`, if present.
    pub pre: Option<&'h str>,
    pub tokens: &'h [String],
    /// One score per token, if the file has them (SentencePiece merge priority).
    pub scores: Option<Vec<f32>>,
    /// One type per token (`token_type`), if the file has them.
    pub token_types: Option<&'h [i32]>,
    pub merges: Option<&'h [String]>,
    pub bos: Option<u32>,
    pub eos: Option<u32>,
    pub unk: Option<u32>,
    pub pad: Option<u32>,
    pub eot: Option<u32>,
    pub eom: Option<u32>,
    pub add_bos: Option<bool>,
    pub add_eos: Option<bool>,
    pub add_space_prefix: Option<bool>,
}

fn bad(key: &str, msg: impl std::fmt::Display) -> Error {
    Error::Tokenizer(format!("{key}: {msg}"))
}

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::U8(_) => "u8",
        Value::I8(_) => "i8",
        Value::U16(_) => "u16",
        Value::I16(_) => "i16",
        Value::U32(_) => "u32",
        Value::I32(_) => "i32",
        Value::F32(_) => "f32",
        Value::Bool(_) => "bool",
        Value::String(_) => "string",
        Value::Array(a) => match a {
            Array::U8(_) => "array of u8",
            Array::I8(_) => "array of i8",
            Array::U16(_) => "array of u16",
            Array::I16(_) => "array of i16",
            Array::U32(_) => "array of u32",
            Array::I32(_) => "array of i32",
            Array::F32(_) => "array of f32",
            Array::Bool(_) => "array of bool",
            Array::String(_) => "array of string",
            Array::U64(_) => "array of u64",
            Array::I64(_) => "array of i64",
            Array::F64(_) => "array of f64",
        },
        Value::U64(_) => "u64",
        Value::I64(_) => "i64",
        Value::F64(_) => "f64",
    }
}

fn get_str<'h>(h: &'h Header, key: &str) -> Result<Option<&'h str>> {
    match h.get(key) {
        None => Ok(None),
        Some(Value::String(s)) => Ok(Some(s)),
        Some(v) => Err(bad(
            key,
            format!("expected a string, found {}", type_name(v)),
        )),
    }
}

fn get_bool(h: &Header, key: &str) -> Result<Option<bool>> {
    match h.get(key) {
        None => Ok(None),
        Some(Value::Bool(b)) => Ok(Some(*b)),
        Some(v) => Err(bad(key, format!("expected a bool, found {}", type_name(v)))),
    }
}

/// An integer-valued key as u64 (GGUF writers use u32, but any integer type is accepted).
fn get_uint(h: &Header, key: &str) -> Result<Option<u64>> {
    let v = match h.get(key) {
        None => return Ok(None),
        Some(v) => v,
    };
    let n: i128 = match *v {
        Value::U8(x) => x.into(),
        Value::I8(x) => x.into(),
        Value::U16(x) => x.into(),
        Value::I16(x) => x.into(),
        Value::U32(x) => x.into(),
        Value::I32(x) => x.into(),
        Value::U64(x) => x.into(),
        Value::I64(x) => x.into(),
        _ => {
            return Err(bad(
                key,
                format!("expected an integer, found {}", type_name(v)),
            ))
        }
    };
    u64::try_from(n)
        .map(Some)
        .map_err(|_| bad(key, format!("negative value {n}")))
}

fn get_str_array<'h>(h: &'h Header, key: &str) -> Result<Option<&'h [String]>> {
    match h.get(key) {
        None => Ok(None),
        Some(Value::Array(Array::String(v))) => Ok(Some(v)),
        Some(v) => Err(bad(
            key,
            format!("expected an array of strings, found {}", type_name(v)),
        )),
    }
}

impl<'h> TokenizerMeta<'h> {
    /// Reads and checks the tokenizer keys. Special-token ids outside the vocabulary are treated
    /// as absent (llama.cpp ignores them with a warning too).
    pub fn from_header(h: &'h Header) -> Result<TokenizerMeta<'h>> {
        const TOKENS: &str = "tokenizer.ggml.tokens";
        let model = get_str(h, "tokenizer.ggml.model")?.ok_or_else(|| {
            bad(
                "tokenizer.ggml.model",
                "missing (the file has no tokenizer)",
            )
        })?;
        let tokens = get_str_array(h, TOKENS)?.ok_or_else(|| bad(TOKENS, "missing"))?;
        if tokens.is_empty() {
            return Err(bad(TOKENS, "empty vocabulary"));
        }
        if u32::try_from(tokens.len()).is_err() {
            return Err(bad(
                TOKENS,
                format!("{} tokens do not fit u32 ids", tokens.len()),
            ));
        }
        let n = tokens.len();

        const SCORES: &str = "tokenizer.ggml.scores";
        let scores = match h.get(SCORES) {
            None => None,
            Some(Value::Array(Array::F32(v))) => Some(v.clone()),
            Some(Value::Array(Array::I32(v))) => Some(v.iter().map(|&x| x as f32).collect()),
            Some(v) => {
                return Err(bad(
                    SCORES,
                    format!("expected an array of f32, found {}", type_name(v)),
                ))
            }
        };
        if let Some(s) = &scores {
            if s.len() < n {
                return Err(bad(SCORES, format!("{} scores for {n} tokens", s.len())));
            }
        }

        const TYPES: &str = "tokenizer.ggml.token_type";
        let token_types = match h.get(TYPES) {
            None => None,
            Some(Value::Array(Array::I32(v))) => Some(v.as_slice()),
            Some(v) => {
                return Err(bad(
                    TYPES,
                    format!("expected an array of i32, found {}", type_name(v)),
                ))
            }
        };
        if let Some(t) = token_types {
            if t.len() < n {
                return Err(bad(
                    TYPES,
                    format!("{} token types for {n} tokens", t.len()),
                ));
            }
        }

        let id = |key: &str| -> Result<Option<u32>> {
            Ok(get_uint(h, key)?
                .filter(|&i| i < n as u64)
                .map(|i| i as u32))
        };

        Ok(TokenizerMeta {
            architecture: get_str(h, "general.architecture")?.unwrap_or(""),
            model,
            pre: get_str(h, "tokenizer.ggml.pre")?,
            tokens,
            scores,
            token_types,
            merges: get_str_array(h, "tokenizer.ggml.merges")?,
            bos: id("tokenizer.ggml.bos_token_id")?,
            eos: id("tokenizer.ggml.eos_token_id")?,
            unk: id("tokenizer.ggml.unknown_token_id")?,
            pad: id("tokenizer.ggml.padding_token_id")?,
            eot: id("tokenizer.ggml.eot_token_id")?,
            eom: id("tokenizer.ggml.eom_token_id")?,
            add_bos: get_bool(h, "tokenizer.ggml.add_bos_token")?,
            add_eos: get_bool(h, "tokenizer.ggml.add_eos_token")?,
            add_space_prefix: get_bool(h, "tokenizer.ggml.add_space_prefix")?,
        })
    }

    /// The type of token `id` (NORMAL when the file has no types).
    pub fn token_type(&self, id: usize) -> i32 {
        self.token_types.map_or(token_type::NORMAL, |t| t[id])
    }
}

/// The chat template stored in the file (`tokenizer.chat_template`), if any.
pub fn chat_template(h: &Header) -> Result<Option<&str>> {
    get_str(h, "tokenizer.chat_template")
}
