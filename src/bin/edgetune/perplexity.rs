//! `edgetune perplexity MODEL --data FILE [--adapter DIR] [--seq-len N] [--json]`

use crate::common;
use edgetune::backend::Compute;
use edgetune::gguf::GgufFile;
use edgetune::infer::InferenceAdapters;
use edgetune::tokenizer::Tokenizer;
use edgetune::{Error, Result};
use std::path::{Path, PathBuf};

#[derive(clap::Args)]
#[command(
    after_help = "Data: a text file is one document, tokenized once (with BOS if the model \
adds one) and cut into windows of --seq-len tokens. A .jsonl file holds one record a line: \
{\"text\": ...} is tokenized and cut into windows the same way; {\"input_ids\": [...]} is one \
sequence, evaluated on its own (with \"labels\": [...], -100 marks tokens not predicted). The mean NLL is averaged over every predicted token (a window of n \
tokens predicts n-1)."
)]
pub struct Args {
    /// The GGUF model.
    model: PathBuf,
    /// Text (.txt or any non-.jsonl file) or JSONL data.
    #[arg(long)]
    data: PathBuf,
    /// Window length in tokens for text.
    #[arg(long, default_value_t = 512)]
    seq_len: usize,
    /// Print {"tokens": N, "mean_nll": x, "ppl": y}.
    #[arg(long)]
    json: bool,
    /// Threads (default: all cores).
    #[arg(long)]
    threads: Option<usize>,
    /// Apply this PEFT adapter directory (LoRA, IA3, prefix or prompt tuning, e.g. written by
    /// `edgetune train`); repeat it to apply several LoRA (or several IA3) adapters together, as
    /// PEFT does with several active adapters. With prompt tuning the last virtual token also
    /// predicts each sequence's first token, as in PEFT's loss.
    #[arg(long, value_name = "DIR")]
    adapter: Vec<PathBuf>,
    /// Precision of the matrix-product inputs: f32, or bf16 (f32 accumulation).
    #[arg(long, default_value = "f32", value_name = "f32|bf16")]
    compute: Compute,
}

fn windows(ids: &[u32], seq_len: usize, out: &mut Vec<Vec<u32>>) {
    out.extend(
        ids.chunks(seq_len)
            .filter(|c| c.len() >= 2)
            .map(<[u32]>::to_vec),
    );
}

/// Sequences to evaluate, and their labels when any record gives them.
struct Sequences {
    ids: Vec<Vec<u32>>,
    labels: Vec<Option<Vec<i32>>>,
}

impl Sequences {
    fn labels(&self) -> Option<Vec<Vec<i32>>> {
        self.labels.iter().any(Option::is_some).then(|| {
            self.labels
                .iter()
                .zip(&self.ids)
                .map(|(l, ids)| {
                    l.clone()
                        .unwrap_or_else(|| ids.iter().map(|&t| t as i32).collect())
                })
                .collect()
        })
    }
}

fn read_sequences(path: &Path, tok: &Tokenizer, seq_len: usize) -> Result<Sequences> {
    let bytes =
        std::fs::read(path).map_err(|e| Error::io(format!("reading {}", path.display()), e))?;
    let mut seqs = Vec::new();
    let mut labels_of = Vec::new();
    let is_jsonl = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("jsonl"));
    if !is_jsonl {
        let text = std::str::from_utf8(&bytes).map_err(|e| {
            Error::InvalidArgument(format!(
                "{}: not valid UTF-8 (first bad byte at offset {})",
                path.display(),
                e.valid_up_to()
            ))
        })?;
        windows(&tok.encode(text, true)?, seq_len, &mut seqs);
    } else {
        for (i, line) in bytes.split(|&b| b == b'\n').enumerate() {
            let at = |msg: String| {
                Error::InvalidArgument(format!("{}:{}: {msg}", path.display(), i + 1))
            };
            let line = std::str::from_utf8(line).map_err(|e| at(format!("invalid UTF-8 ({e})")))?;
            if line.trim().is_empty() {
                continue;
            }
            let v: serde_json::Value =
                serde_json::from_str(line).map_err(|e| at(format!("invalid JSON ({e})")))?;
            if let Some(ids) = v.get("input_ids") {
                let ids: Vec<u32> = serde_json::from_value(ids.clone())
                    .map_err(|_| at("\"input_ids\" must be an array of token ids".into()))?;
                if let Some(bad) = ids.iter().find(|&&t| t as usize >= tok.vocab_size()) {
                    return Err(at(format!(
                        "token id {bad} is outside the vocabulary of {}",
                        tok.vocab_size()
                    )));
                }
                let labels = match v.get("labels") {
                    None => None,
                    Some(l) => {
                        let l: Vec<i32> = serde_json::from_value(l.clone()).map_err(|_| {
                            at("\"labels\" must be an array of token ids or -100".into())
                        })?;
                        if l.len() != ids.len() {
                            return Err(at(format!(
                                "{} labels for {} input_ids",
                                l.len(),
                                ids.len()
                            )));
                        }
                        if let Some(bad) = l
                            .iter()
                            .find(|&&t| t != -100 && (t < 0 || t as usize >= tok.vocab_size()))
                        {
                            return Err(at(format!(
                                "label {bad} is neither -100 nor a token id of the vocabulary of {}",
                                tok.vocab_size()
                            )));
                        }
                        Some(l)
                    }
                };
                while labels_of.len() < seqs.len() {
                    labels_of.push(None);
                }
                seqs.push(ids);
                labels_of.push(labels);
            } else if let Some(text) = v.get("text").and_then(|t| t.as_str()) {
                windows(&tok.encode(text, true)?, seq_len, &mut seqs);
            } else {
                return Err(at(
                    "expected {\"text\": ...} or {\"input_ids\": [...]}".into()
                ));
            }
        }
    }
    if seqs.iter().all(|s| s.len() < 2) {
        return Err(Error::InvalidArgument(format!(
            "{}: no sequence of at least 2 tokens to evaluate",
            path.display()
        )));
    }
    labels_of.resize(seqs.len(), None);
    Ok(Sequences {
        ids: seqs,
        labels: labels_of,
    })
}

pub fn run(args: Args) -> Result<()> {
    if args.seq_len < 2 {
        return Err(Error::InvalidArgument(format!(
            "--seq-len {} must be at least 2",
            args.seq_len
        )));
    }
    let file = GgufFile::open(&args.model)?;
    let tok = common::tokenizer(&args.model, &file)?;
    let model = common::model(
        &args.model,
        &file,
        common::backend(common::threads(args.threads), args.compute)?,
    )?;
    let seqs = read_sequences(&args.data, &tok, args.seq_len)?;
    let start = std::time::Instant::now();
    let labels = seqs.labels();
    let p = InferenceAdapters::load(&model, &args.adapter)?.perplexity(
        &model,
        &seqs.ids,
        labels.as_deref(),
    )?;
    let secs = start.elapsed().as_secs_f64();
    if args.json {
        println!(
            "{}",
            serde_json::json!({"tokens": p.tokens, "mean_nll": p.mean_nll, "ppl": p.ppl})
        );
    } else {
        println!(
            "tokens {}  mean NLL {:.6}  perplexity {:.4}",
            p.tokens, p.mean_nll, p.ppl
        );
    }
    eprintln!(
        "{} sequences, {} predicted tokens in {secs:.2} s ({:.1} tokens/s)",
        seqs.ids.len(),
        p.tokens,
        p.tokens as f64 / secs.max(1e-9)
    );
    Ok(())
}
