//! Training data: a JSONL or `.txt` file → token ids and labels → sequences → micro-batches.
//!
//! The rules follow Hugging Face TRL 1.16's `SFTTrainer` (see `encode`, `assistant`, `pack`)
//! and are checked against it (tests/data_reference.rs, fixtures from
//! scripts/reference/make_data_fixtures.py). docs/data.md describes them for users.
//!
//! `load` runs the whole preparation:
//! 1. every line is parsed and checked; bad lines are reported together (up to `MAX_REPORTED`),
//!    each with its line number, and nothing is trained — a bad line is never skipped;
//! 2. records are tokenized (`encode::Encoder`), in parallel;
//! 3. each example is cut to `seq_len` tokens, keeping the start (`.txt`: cut into windows);
//! 4. examples with no target left (no label after the shift that is not -100) are dropped and
//!    counted; a file with none left is an error;
//! 5. with `val_split > 0`, `ceil(val_split * n)` examples (at least 1, leaving at least 1 for
//!    training) are chosen by a seeded permutation for validation; both parts keep file order;
//! 6. with `pack`, the training examples (shuffled first unless `shuffle` is off) and the
//!    validation examples (in order) are packed (`pack`); else each example is a sequence.
//!
//! Records held in memory take the same path (`examples_from_bytes`, then `prepare_from`).
//!
//! `batch::Batcher` then draws micro-batches epoch after epoch and can be saved and restored.

pub mod assistant;
pub mod batch;
pub mod encode;
pub mod pack;
pub mod record;
pub mod rng;

pub use assistant::ChatFormat;
pub use batch::{count_targets, eval_batches, Batch, BatchOptions, Batcher, DataState, Position};
pub use encode::{Encoder, Example, IGNORE};
pub use pack::Sequence;
pub use record::Record;

use crate::error::{Error, Result};
use crate::tokenizer::Tokenizer;
use rayon::prelude::*;
use std::path::Path;

/// Bad lines listed in one error.
pub const MAX_REPORTED: usize = 10;

/// How a file becomes sequences (the `train` flags of the same names).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct DataOptions {
    /// `--seq-len`: the longest sequence, in tokens.
    pub seq_len: usize,
    /// `--pack`.
    pub pack: bool,
    /// `--train-on-prompt`: prompt and non-assistant tokens are trained too.
    pub train_on_prompt: bool,
    /// Off with `--no-shuffle`.
    pub shuffle: bool,
    /// `--seed`.
    pub seed: u64,
    /// `--val-split`: the fraction of examples held out, in `[0, 1)`.
    pub val_split: f64,
}

impl Default for DataOptions {
    fn default() -> DataOptions {
        DataOptions {
            seq_len: 1024,
            pack: false,
            train_on_prompt: false,
            shuffle: true,
            seed: 42,
            val_split: 0.0,
        }
    }
}

/// What `load` did, for the log.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct DataStats {
    /// Records read (`.txt`: windows).
    pub records: usize,
    /// Examples cut to `seq_len`, and the tokens that cut removed.
    pub truncated: usize,
    pub truncated_tokens: usize,
    /// Examples dropped because no target was left, and the first line of one.
    pub dropped: usize,
    pub first_dropped_line: Option<usize>,
    pub train_examples: usize,
    pub val_examples: usize,
    pub train_sequences: usize,
    pub val_sequences: usize,
    /// Tokens and targets of the training sequences (one epoch).
    pub train_tokens: usize,
    pub train_targets: usize,
}

impl DataStats {
    /// Lines worth showing a user (dropped and truncated examples).
    pub fn warnings(&self, seq_len: usize) -> Vec<String> {
        let mut w = Vec::new();
        if self.dropped > 0 {
            w.push(format!(
                "{} record(s) have no token to train on (e.g. line {}) and were dropped: a \
                 conversation without an assistant turn, or a prompt that fills --seq-len \
                 {seq_len}",
                self.dropped,
                self.first_dropped_line.unwrap_or(0)
            ));
        }
        if self.truncated > 0 {
            w.push(format!(
                "{} record(s) are longer than --seq-len {seq_len} and were cut ({} tokens left \
                 out)",
                self.truncated, self.truncated_tokens
            ));
        }
        w
    }
}

/// The prepared data.
#[derive(Clone, Debug, PartialEq)]
pub struct Prepared {
    pub train: Vec<Sequence>,
    pub val: Vec<Sequence>,
    pub stats: DataStats,
}

/// Reads, tokenizes and prepares a training file (steps 1–6 above). `chat` is the model's chat
/// template, needed only for `messages` records.
pub fn load(
    path: &Path,
    tok: &Tokenizer,
    chat: Option<&ChatFormat>,
    opts: &DataOptions,
) -> Result<Prepared> {
    check_options(opts)?;
    let examples = read_examples(path, tok, chat, opts)?;
    prepare_from(path, examples, opts)
}

/// `prepare` with `path` (the data's name) in its errors.
pub fn prepare_from(path: &Path, examples: Vec<Example>, opts: &DataOptions) -> Result<Prepared> {
    prepare(examples, opts).map_err(|e| match e {
        Error::InvalidArgument(msg) => Error::Data {
            path: path.to_owned(),
            line: None,
            msg,
        },
        e => e,
    })
}

fn check_options(opts: &DataOptions) -> Result<()> {
    if opts.seq_len < 2 {
        return Err(Error::InvalidArgument(format!(
            "--seq-len {} is too short: a sequence needs 2 tokens to predict one",
            opts.seq_len
        )));
    }
    if !(0.0..1.0).contains(&opts.val_split) {
        return Err(Error::InvalidArgument(format!(
            "--val-split {} is not in [0, 1)",
            opts.val_split
        )));
    }
    Ok(())
}

/// Steps 1–2: the file's examples in file order, not yet truncated (`.txt`: its windows).
pub fn read_examples(
    path: &Path,
    tok: &Tokenizer,
    chat: Option<&ChatFormat>,
    opts: &DataOptions,
) -> Result<Vec<Example>> {
    let bytes =
        std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let is_txt = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("txt"));
    examples_from_bytes(path, &bytes, is_txt, tok, chat, opts)
}

/// Steps 1–2 on records held in memory (the C ABI's data passed by the caller): `bytes` is JSONL,
/// or with `is_txt` one document. `path` only names the data in errors (e.g. `<memory>`).
pub fn examples_from_bytes(
    path: &Path,
    bytes: &[u8],
    is_txt: bool,
    tok: &Tokenizer,
    chat: Option<&ChatFormat>,
    opts: &DataOptions,
) -> Result<Vec<Example>> {
    check_options(opts)?;
    let enc = Encoder::new(tok, chat, opts.train_on_prompt);
    let data_error = |line, msg| Error::Data {
        path: path.to_owned(),
        line,
        msg,
    };
    if is_txt {
        let text = std::str::from_utf8(bytes).map_err(|e| {
            let at = e.valid_up_to();
            let line = 1 + bytes[..at].iter().filter(|&&b| b == b'\n').count();
            data_error(Some(line), "invalid UTF-8".into())
        })?;
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let windows = enc
            .document(text, opts.seq_len)
            .map_err(|e| data_error(None, e.to_string()))?;
        if windows.is_empty() {
            return Err(data_error(
                None,
                "no usable example: the text has fewer than 2 tokens".into(),
            ));
        }
        return Ok(windows);
    }
    let (records, mut errors) = record::parse_jsonl(bytes);
    if errors.is_empty() {
        let encoded: Vec<Result<Example>> = records
            .par_iter()
            .map(|r| enc.encode(&r.record, r.line))
            .collect();
        let mut examples = Vec::with_capacity(encoded.len());
        for (r, e) in records.iter().zip(encoded) {
            match e {
                Ok(ex) => examples.push(ex),
                Err(e) => errors.push((r.line, e.to_string())),
            }
        }
        if errors.is_empty() {
            if examples.is_empty() {
                return Err(data_error(None, "no records (the file is empty)".into()));
            }
            return Ok(examples);
        }
    }
    Err(report(path, &errors))
}

/// One error for all bad lines: the first in full, then up to `MAX_REPORTED` in all.
fn report(path: &Path, errors: &[(usize, String)]) -> Error {
    let (line, first) = &errors[0];
    let mut msg = first.clone();
    for (l, m) in errors.iter().take(MAX_REPORTED).skip(1) {
        msg.push_str(&format!("\n  {}:{l}: {m}", path.display()));
    }
    if errors.len() > 1 {
        msg.push_str(&format!("\n  ({} bad lines in all)", errors.len()));
    }
    Error::Data {
        path: path.to_owned(),
        line: Some(*line),
        msg,
    }
}

/// Steps 3–6 on examples in file order.
pub fn prepare(examples: Vec<Example>, opts: &DataOptions) -> Result<Prepared> {
    check_options(opts)?;
    let mut stats = DataStats {
        records: examples.len(),
        ..DataStats::default()
    };
    let mut kept = Vec::with_capacity(examples.len());
    for mut ex in examples {
        let cut = pack::truncate(&mut ex, opts.seq_len);
        if cut > 0 {
            stats.truncated += 1;
            stats.truncated_tokens += cut;
        }
        if ex.targets() == 0 {
            stats.dropped += 1;
            stats.first_dropped_line.get_or_insert(ex.line);
        } else {
            kept.push(ex);
        }
    }
    if kept.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "no usable example: all {} record(s) are left with no token to train on (after \
             the one-token shift, at --seq-len {})",
            stats.records, opts.seq_len
        )));
    }
    let (mut train, val) = split(kept, opts)?;
    stats.train_examples = train.len();
    stats.val_examples = val.len();
    let (train, val): (Vec<Sequence>, Vec<Sequence>) = if opts.pack {
        if opts.shuffle {
            rng::Pcg32::new(opts.seed, rng::PACK_STREAM).shuffle(&mut train);
        }
        (
            pack::pack_bfd(train, opts.seq_len),
            pack::pack_bfd(val, opts.seq_len),
        )
    } else {
        (
            train.into_iter().map(Sequence::single).collect(),
            val.into_iter().map(Sequence::single).collect(),
        )
    };
    stats.train_sequences = train.len();
    stats.val_sequences = val.len();
    stats.train_tokens = train.iter().map(Sequence::len).sum();
    stats.train_targets = train.iter().map(Sequence::targets).sum();
    Ok(Prepared { train, val, stats })
}

/// Step 5: (train, validation), each in file order.
fn split(examples: Vec<Example>, opts: &DataOptions) -> Result<(Vec<Example>, Vec<Example>)> {
    if opts.val_split <= 0.0 {
        return Ok((examples, Vec::new()));
    }
    let n = examples.len();
    let n_val = ((opts.val_split * n as f64).ceil() as usize).max(1);
    if n_val >= n {
        return Err(Error::InvalidArgument(format!(
            "--val-split {} of {n} usable example(s) leaves none for training",
            opts.val_split
        )));
    }
    let order = rng::permutation(n, opts.seed, rng::VAL_SPLIT_STREAM)?;
    let mut is_val = vec![false; n];
    for &i in &order[..n_val] {
        is_val[i as usize] = true;
    }
    let (val, train): (Vec<_>, Vec<_>) = examples.into_iter().zip(is_val).partition(|(_, v)| *v);
    Ok((
        train.into_iter().map(|(e, _)| e).collect(),
        val.into_iter().map(|(e, _)| e).collect(),
    ))
}

/// The pad token: the tokenizer's, else EOS, else 0 (pads are never attended to nor trained).
pub fn pad_id(tok: &Tokenizer) -> u32 {
    tok.special_tokens().pad.or(tok.eos()).unwrap_or(0)
}
