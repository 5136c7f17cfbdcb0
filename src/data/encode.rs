//! Records → token ids and labels, the way TRL 1.16's `SFTTrainer` prepares them
//! (`_prepare_dataset`: `add_eos`, `tokenize_fn`, `build_labels`).
//!
//! - `text`: the EOS token's text is appended unless the text already ends with it, then the
//!   whole is tokenized with the model's special tokens (BOS where the model adds one). Every
//!   token is a label.
//! - `prompt`/`completion`: EOS text appended to the completion (same rule); `prompt` and
//!   `prompt + completion` are tokenized separately; the completion starts where the two token
//!   lists first differ (TRL's `common_prefix_length`, so a token merged across the boundary is
//!   trained). Prompt tokens get label -100 unless `train_on_prompt`.
//! - `messages`: rendered with the chat template and tokenized without added special tokens;
//!   assistant tokens are labels (see `assistant`), or every token with `train_on_prompt`.
//! - `input_ids`: taken as they are; labels default to the ids; -100 is ignored.
//! - a `.txt` file: one `text` record whose tokens are cut into `seq_len` windows instead of
//!   being truncated (a last window of one token, which predicts nothing, is left out).

use super::assistant::ChatFormat;
use super::record::Record;
use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;

/// Label of a token that is not trained (PyTorch's `ignore_index`).
pub const IGNORE: i32 = -100;

/// One tokenized record.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Example {
    pub input_ids: Vec<u32>,
    /// Same length as `input_ids`; `IGNORE` where the token is not a target.
    pub labels: Vec<i32>,
    /// 1-based line of the record in a JSONL file; for a `.txt` file, the 1-based number of the
    /// window.
    pub line: usize,
}

impl Example {
    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }

    /// Tokens the loss predicts: labels after the one-token shift that are not ignored.
    pub fn targets(&self) -> usize {
        count_targets(&self.labels)
    }
}

/// Count of `labels[1..]` that are not `IGNORE` (what transformers counts per row).
pub fn count_targets(labels: &[i32]) -> usize {
    labels.iter().skip(1).filter(|&&l| l != IGNORE).count()
}

/// Turns records into examples for one model.
pub struct Encoder<'a> {
    tok: &'a Tokenizer,
    chat: Option<&'a ChatFormat>,
    eos_text: Option<String>,
    train_on_prompt: bool,
}

impl<'a> Encoder<'a> {
    pub fn new(tok: &'a Tokenizer, chat: Option<&'a ChatFormat>, train_on_prompt: bool) -> Self {
        let eos_text = tok.eos().and_then(|id| tok.token_text(id));
        Encoder {
            tok,
            chat,
            eos_text,
            train_on_prompt,
        }
    }

    pub fn tokenizer(&self) -> &Tokenizer {
        self.tok
    }

    fn with_eos(&self, text: &str) -> String {
        match &self.eos_text {
            Some(eos) if !text.ends_with(eos.as_str()) => format!("{text}{eos}"),
            _ => text.to_owned(),
        }
    }

    /// The ids and labels of one record. Errors name the field at fault.
    pub fn encode(&self, record: &Record, line: usize) -> Result<Example> {
        let (input_ids, labels) = match record {
            Record::Text(text) => {
                let ids = self.tok.encode(&self.with_eos(text), true)?;
                let labels = ids.iter().map(|&i| i as i32).collect();
                (ids, labels)
            }
            Record::PromptCompletion { prompt, completion } => {
                let completion = self.with_eos(completion);
                let prompt_ids = self.tok.encode(prompt, true)?;
                let ids = self.tok.encode(&format!("{prompt}{completion}"), true)?;
                let shared = prompt_ids
                    .iter()
                    .zip(&ids)
                    .take_while(|(a, b)| a == b)
                    .count();
                let labels = ids
                    .iter()
                    .enumerate()
                    .map(|(k, &i)| {
                        if k < shared && !self.train_on_prompt {
                            IGNORE
                        } else {
                            i as i32
                        }
                    })
                    .collect();
                (ids, labels)
            }
            Record::Messages(messages) => {
                let chat = self.chat.ok_or_else(|| {
                    Error::InvalidArgument(
                        "\"messages\" need a chat template and the model has none \
                         (no tokenizer.chat_template); use \"text\" or \"prompt\"/\"completion\""
                            .into(),
                    )
                })?;
                let m = chat.encode(self.tok, messages, !self.train_on_prompt)?;
                let labels = m
                    .ids
                    .iter()
                    .zip(&m.trained)
                    .map(|(&i, &t)| if t { i as i32 } else { IGNORE })
                    .collect();
                (m.ids, labels)
            }
            Record::Tokens { input_ids, labels } => self.tokens(input_ids, labels.as_deref())?,
        };
        Ok(Example {
            input_ids,
            labels,
            line,
        })
    }

    fn tokens(&self, input_ids: &[u64], labels: Option<&[i64]>) -> Result<(Vec<u32>, Vec<i32>)> {
        let n_vocab = self.tok.vocab_size() as u64;
        let ids = input_ids
            .iter()
            .enumerate()
            .map(|(k, &id)| {
                if id < n_vocab {
                    Ok(id as u32)
                } else {
                    Err(Error::InvalidArgument(format!(
                        "\"input_ids\"[{k}] = {id} is outside the vocabulary of {n_vocab} tokens"
                    )))
                }
            })
            .collect::<Result<Vec<u32>>>()?;
        let labels = match labels {
            None => ids.iter().map(|&i| i as i32).collect(),
            Some(labels) => labels
                .iter()
                .enumerate()
                .map(|(k, &l)| {
                    if l == i64::from(IGNORE) || (0..n_vocab as i64).contains(&l) {
                        Ok(l as i32)
                    } else {
                        Err(Error::InvalidArgument(format!(
                            "\"labels\"[{k}] = {l} is neither -100 nor a token id below {n_vocab}"
                        )))
                    }
                })
                .collect::<Result<Vec<i32>>>()?,
        };
        Ok((ids, labels))
    }

    /// A `.txt` document: one `text` record cut into windows of `seq_len` tokens.
    pub fn document(&self, text: &str, seq_len: usize) -> Result<Vec<Example>> {
        if seq_len < 2 {
            return Err(Error::InvalidArgument(format!(
                "seq_len {seq_len} is too short: a sequence needs 2 tokens to predict one"
            )));
        }
        let ids = self.tok.encode(&self.with_eos(text), true)?;
        Ok(ids
            .chunks(seq_len)
            .enumerate()
            .filter(|(_, w)| w.len() >= 2)
            .map(|(k, w)| Example {
                input_ids: w.to_vec(),
                labels: w.iter().map(|&i| i as i32).collect(),
                line: k + 1,
            })
            .collect())
    }
}
