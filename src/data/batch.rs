//! Sequences → micro-batches, epoch after epoch, from a position that a checkpoint can save.
//!
//! Epoch `e` visits the sequences in a fixed order: file order with `shuffle` off, else the
//! permutation `rng::permutation(n, seed, stream = e)`, so each pass has a new order and any
//! position `(epoch, index)` can be rebuilt from the seed alone. A micro-batch is the next
//! `batch_size` sequences of the order (the last of an epoch may be smaller, as with PyTorch's
//! `DataLoader(drop_last=False)`), right-padded to the longest with the pad token, label -100.
//! An optimizer step takes up to `grad_accum` micro-batches and never crosses the end of an
//! epoch (the last step of an epoch may have fewer), as in transformers' `Trainer`.

use super::encode::IGNORE;
use super::pack::Sequence;
use super::rng;
use crate::error::{Error, Result};
use serde::{Deserialize, Serialize};

/// A micro-batch, row-major `[rows, width]`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Batch {
    pub rows: usize,
    /// Length of the longest row; shorter rows are padded to it.
    pub width: usize,
    pub input_ids: Vec<u32>,
    /// -100 at padding and at tokens that are not targets.
    pub labels: Vec<i32>,
    /// Position of each token within its document (0 at padding).
    pub position_ids: Vec<u32>,
    /// Real (unpadded) length of each row.
    pub lengths: Vec<usize>,
    /// Document lengths of each row: a token attends only to earlier tokens of its document.
    pub doc_lengths: Vec<Vec<usize>>,
    /// Tokens the loss predicts: per row, `labels[1..len]` that are not -100.
    pub targets: usize,
    /// Epoch of the batch and index, in that epoch's order, of its first row.
    pub epoch: u64,
    pub index: usize,
    /// Whether this batch ends its epoch.
    pub ends_epoch: bool,
}

impl Batch {
    /// Pads `rows` into one batch.
    pub fn from_sequences(rows: &[&Sequence], pad_id: u32) -> Batch {
        let width = rows.iter().map(|s| s.len()).max().unwrap_or(0);
        let n = rows.len() * width;
        let mut b = Batch {
            rows: rows.len(),
            width,
            input_ids: Vec::with_capacity(n),
            labels: Vec::with_capacity(n),
            position_ids: Vec::with_capacity(n),
            lengths: Vec::with_capacity(rows.len()),
            doc_lengths: Vec::with_capacity(rows.len()),
            targets: 0,
            epoch: 0,
            index: 0,
            ends_epoch: false,
        };
        for s in rows {
            let pad = width - s.len();
            b.input_ids.extend_from_slice(&s.input_ids);
            b.input_ids.extend(std::iter::repeat_n(pad_id, pad));
            b.labels.extend_from_slice(&s.labels);
            b.labels.extend(std::iter::repeat_n(IGNORE, pad));
            b.position_ids.extend(s.position_ids());
            b.position_ids.extend(std::iter::repeat_n(0, pad));
            b.lengths.push(s.len());
            b.doc_lengths.push(s.doc_lengths.clone());
            b.targets += s.targets();
        }
        b
    }

    /// Row `r`'s ids and labels, padding included.
    pub fn row(&self, r: usize) -> (&[u32], &[i32]) {
        let span = r * self.width..(r + 1) * self.width;
        (&self.input_ids[span.clone()], &self.labels[span])
    }

    /// The label each position predicts: `labels[r][i + 1]`, and -100 at each row's last
    /// position (transformers' `shift_labels`). Exactly `targets` entries are not -100.
    pub fn shifted_labels(&self) -> Vec<i32> {
        let mut out = vec![IGNORE; self.labels.len()];
        for r in 0..self.rows {
            let row = r * self.width..(r + 1) * self.width;
            out[row.start..row.end - 1].copy_from_slice(&self.labels[row.start + 1..row.end]);
        }
        out
    }
}

/// Targets over several micro-batches: the divisor of one optimizer step's loss.
pub fn count_targets(batches: &[Batch]) -> usize {
    batches.iter().map(|b| b.targets).sum()
}

/// How micro-batches are drawn.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct BatchOptions {
    pub batch_size: usize,
    /// A new order each epoch (else file order every epoch: `--no-shuffle`).
    pub shuffle: bool,
    pub seed: u64,
    /// Token written at padding (the tokenizer's pad token, else EOS).
    pub pad_id: u32,
}

/// Where the iterator stands: `index` sequences of epoch `epoch` have been handed out.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Position {
    pub epoch: u64,
    pub index: usize,
}

/// What a checkpoint saves to resume the data exactly: the position and a fingerprint of the
/// sequences and options (a changed data file or batch size is refused at resume).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct DataState {
    pub epoch: u64,
    pub index: usize,
    /// FNV-1a 64 of the sequences and options, as 16 hex digits.
    pub fingerprint: String,
}

/// Micro-batches over the training sequences, epoch after epoch.
#[derive(Debug)]
pub struct Batcher {
    seqs: Vec<Sequence>,
    opts: BatchOptions,
    order: Vec<u32>,
    pos: Position,
    fingerprint: u64,
}

impl Batcher {
    /// Starts at epoch 0. Errors when there is nothing to batch or the batch size is 0.
    pub fn new(seqs: Vec<Sequence>, opts: BatchOptions) -> Result<Batcher> {
        if seqs.is_empty() {
            return Err(Error::InvalidArgument(
                "no training sequences to batch".into(),
            ));
        }
        if opts.batch_size == 0 {
            return Err(Error::InvalidArgument("batch size 0".into()));
        }
        let fingerprint = fingerprint(&seqs, &opts);
        let mut b = Batcher {
            seqs,
            opts,
            order: Vec::new(),
            pos: Position { epoch: 0, index: 0 },
            fingerprint,
        };
        b.order = b.order_of(0)?;
        Ok(b)
    }

    fn order_of(&self, epoch: u64) -> Result<Vec<u32>> {
        if self.opts.shuffle {
            rng::permutation(self.seqs.len(), self.opts.seed, epoch)
        } else {
            Ok((0..self.seqs.len() as u32).collect())
        }
    }

    pub fn sequences(&self) -> &[Sequence] {
        &self.seqs
    }

    pub fn options(&self) -> &BatchOptions {
        &self.opts
    }

    /// Micro-batches in one epoch.
    pub fn batches_per_epoch(&self) -> usize {
        self.seqs.len().div_ceil(self.opts.batch_size)
    }

    /// Optimizer steps in one epoch with `grad_accum` micro-batches a step.
    pub fn steps_per_epoch(&self, grad_accum: usize) -> usize {
        self.batches_per_epoch().div_ceil(grad_accum.max(1))
    }

    pub fn position(&self) -> Position {
        self.pos
    }

    /// Epochs done, with the fraction of the current one (for logs).
    pub fn epochs_done(&self) -> f64 {
        self.pos.epoch as f64 + self.pos.index as f64 / self.seqs.len() as f64
    }

    /// The next micro-batch; starts the next epoch when the current one is spent.
    pub fn next_batch(&mut self) -> Result<Batch> {
        if self.pos.index >= self.seqs.len() {
            self.pos = Position {
                epoch: self.pos.epoch + 1,
                index: 0,
            };
            self.order = self.order_of(self.pos.epoch)?;
        }
        let start = self.pos.index;
        let end = (start + self.opts.batch_size).min(self.seqs.len());
        let rows: Vec<&Sequence> = self.order[start..end]
            .iter()
            .map(|&i| &self.seqs[i as usize])
            .collect();
        let mut batch = Batch::from_sequences(&rows, self.opts.pad_id);
        batch.epoch = self.pos.epoch;
        batch.index = start;
        batch.ends_epoch = end == self.seqs.len();
        self.pos.index = end;
        Ok(batch)
    }

    /// The micro-batches of one optimizer step: up to `grad_accum`, stopping at an epoch's end.
    pub fn next_step(&mut self, grad_accum: usize) -> Result<Vec<Batch>> {
        let mut out = Vec::with_capacity(grad_accum.max(1));
        for _ in 0..grad_accum.max(1) {
            let b = self.next_batch()?;
            let last = b.ends_epoch;
            out.push(b);
            if last {
                break;
            }
        }
        Ok(out)
    }

    /// The state a checkpoint stores.
    pub fn state(&self) -> DataState {
        DataState {
            epoch: self.pos.epoch,
            index: self.pos.index,
            fingerprint: format!("{:016x}", self.fingerprint),
        }
    }

    /// Continues from a saved state; the data and options must be the ones it was saved with.
    pub fn restore(&mut self, state: &DataState) -> Result<()> {
        let ours = format!("{:016x}", self.fingerprint);
        if state.fingerprint != ours {
            return Err(Error::InvalidArgument(format!(
                "the training data or its batching changed since the checkpoint (fingerprint \
                 {} there, {ours} now): resume with the same data file, model, --seq-len, \
                 --pack, --val-split, --seed, --batch-size and shuffling",
                state.fingerprint
            )));
        }
        if state.index > self.seqs.len() {
            return Err(Error::InvalidArgument(format!(
                "checkpoint data position {} is past the {} sequences of an epoch",
                state.index,
                self.seqs.len()
            )));
        }
        self.order = self.order_of(state.epoch)?;
        self.pos = Position {
            epoch: state.epoch,
            index: state.index,
        };
        Ok(())
    }
}

/// The validation batches: sequences in order, `batch_size` at a time.
pub fn eval_batches(
    seqs: &[Sequence],
    batch_size: usize,
    pad_id: u32,
) -> impl Iterator<Item = Batch> + '_ {
    let size = batch_size.max(1);
    seqs.chunks(size).enumerate().map(move |(k, chunk)| {
        let rows: Vec<&Sequence> = chunk.iter().collect();
        let mut b = Batch::from_sequences(&rows, pad_id);
        b.index = k * size;
        b.ends_epoch = (k + 1) * size >= seqs.len();
        b
    })
}

fn fingerprint(seqs: &[Sequence], opts: &BatchOptions) -> u64 {
    let mut h = Fnv::default();
    for v in [
        seqs.len() as u64,
        opts.batch_size as u64,
        opts.shuffle as u64,
        opts.seed,
        opts.pad_id as u64,
    ] {
        h.write(&v.to_le_bytes());
    }
    for s in seqs {
        h.write(&(s.len() as u64).to_le_bytes());
        for &id in &s.input_ids {
            h.write(&id.to_le_bytes());
        }
        for &l in &s.labels {
            h.write(&l.to_le_bytes());
        }
        h.write(&(s.doc_lengths.len() as u64).to_le_bytes());
        for &d in &s.doc_lengths {
            h.write(&(d as u64).to_le_bytes());
        }
    }
    h.0
}

/// FNV-1a, 64-bit.
struct Fnv(u64);

impl Default for Fnv {
    fn default() -> Fnv {
        Fnv(0xcbf2_9ce4_8422_2325)
    }
}

impl Fnv {
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = (self.0 ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
    }
}
