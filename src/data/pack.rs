//! Examples → training sequences: one example per sequence, or several packed into one.
//!
//! Packing is TRL 1.16's default (`packing=True`, `packing_strategy="bfd"`, `data_utils._pack_bfd`):
//! best-fit decreasing. Examples are taken in groups of 1000 (the batch `datasets.map` hands to
//! the packer); within a group they are sorted by length, longest first (stable), and each goes
//! into the open row with the least room that still fits it, or a new row. Rows come out in the
//! order they were opened, their documents in the order they were placed.
//!
//! A packed row keeps its documents apart, as TRL's padding-free collator does: position ids
//! restart at 0 for each document, each document's first label is -100 (no token predicts the
//! start of the next document), and attention must not cross documents (`doc_lengths` gives the
//! boundaries). The loss over a packed row is then the loss of its documents trained one by one.

use super::encode::{count_targets, Example, IGNORE};
use std::collections::{BTreeMap, VecDeque};

/// Examples packed per group (`datasets.Dataset.map`'s default `batch_size`).
pub const PACK_GROUP: usize = 1000;

/// One row of training data: one document, or several packed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Sequence {
    pub input_ids: Vec<u32>,
    /// `IGNORE` (-100) where the token is not a target.
    pub labels: Vec<i32>,
    /// Lengths of the documents in the row, in order; they sum to the row's length.
    pub doc_lengths: Vec<usize>,
}

impl Sequence {
    /// A row holding one example.
    pub fn single(ex: Example) -> Sequence {
        let n = ex.input_ids.len();
        Sequence {
            input_ids: ex.input_ids,
            labels: ex.labels,
            doc_lengths: vec![n],
        }
    }

    pub fn len(&self) -> usize {
        self.input_ids.len()
    }

    pub fn is_empty(&self) -> bool {
        self.input_ids.is_empty()
    }

    /// Tokens the loss predicts in this row (labels after the shift that are not -100).
    pub fn targets(&self) -> usize {
        count_targets(&self.labels)
    }

    /// Position of each token within its document.
    pub fn position_ids(&self) -> impl Iterator<Item = u32> + '_ {
        self.doc_lengths.iter().flat_map(|&n| 0..n as u32)
    }
}

/// Cuts `ex` to its first `seq_len` tokens; returns how many were dropped.
pub fn truncate(ex: &mut Example, seq_len: usize) -> usize {
    let dropped = ex.input_ids.len().saturating_sub(seq_len);
    ex.input_ids.truncate(seq_len);
    ex.labels.truncate(seq_len);
    dropped
}

/// Packs examples (each at most `seq_len` tokens, none empty) into rows of at most `seq_len`.
pub fn pack_bfd(examples: Vec<Example>, seq_len: usize) -> Vec<Sequence> {
    let mut rows = Vec::new();
    let mut examples = examples.into_iter().peekable();
    while examples.peek().is_some() {
        let group: Vec<Example> = examples.by_ref().take(PACK_GROUP).collect();
        pack_group(group, seq_len, &mut rows);
    }
    rows
}

fn pack_group(group: Vec<Example>, seq_len: usize, rows: &mut Vec<Sequence>) {
    let len = |ex: usize| group[ex].len().min(seq_len);
    let mut order: Vec<usize> = (0..group.len()).collect();
    // Stable: ties keep input order.
    order.sort_by_key(|&ex| std::cmp::Reverse(len(ex)));
    // Room left → bins with exactly that room, oldest first (TRL's segment tree + deques).
    let mut by_room: BTreeMap<usize, VecDeque<usize>> = BTreeMap::new();
    let mut bins: Vec<(Vec<usize>, usize)> = Vec::new(); // (examples, room left)
    for &ex in &order {
        let len = len(ex);
        let fit = by_room.range(len..).next().map(|(&room, _)| room);
        let bin = match fit {
            Some(room) => {
                let queue = by_room.get_mut(&room).expect("a listed room has bins");
                let bin = queue.pop_front().expect("queues in the map are not empty");
                if queue.is_empty() {
                    by_room.remove(&room);
                }
                bin
            }
            None => {
                bins.push((Vec::new(), seq_len));
                bins.len() - 1
            }
        };
        bins[bin].0.push(ex);
        bins[bin].1 -= len;
        if bins[bin].1 > 0 {
            by_room.entry(bins[bin].1).or_default().push_back(bin);
        }
    }
    let mut group: Vec<Option<Example>> = group.into_iter().map(Some).collect();
    for (members, _) in bins {
        let mut seq = Sequence {
            input_ids: Vec::new(),
            labels: Vec::new(),
            doc_lengths: Vec::with_capacity(members.len()),
        };
        for m in members {
            let ex = group[m].take().expect("each example goes into one bin");
            let n = ex.input_ids.len().min(seq_len);
            seq.input_ids.extend_from_slice(&ex.input_ids[..n]);
            let first = seq.labels.len();
            seq.labels.extend_from_slice(&ex.labels[..n]);
            seq.labels[first] = IGNORE;
            seq.doc_lengths.push(n);
        }
        rows.push(seq);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ex(ids: &[u32]) -> Example {
        Example {
            input_ids: ids.to_vec(),
            labels: ids.iter().map(|&i| i as i32).collect(),
            line: 1,
        }
    }

    /// The example in TRL's `pack_dataset` docstring (strategy "bfd", seq_length 4).
    #[test]
    fn packs_like_the_trl_docstring() {
        let rows = pack_bfd(
            vec![
                ex(&[1, 2, 3, 4, 5]),
                ex(&[6, 7]),
                ex(&[8, 9, 10]),
                ex(&[11]),
            ],
            4,
        );
        let ids: Vec<Vec<u32>> = rows.iter().map(|r| r.input_ids.clone()).collect();
        assert_eq!(ids, [vec![1, 2, 3, 4], vec![8, 9, 10, 11], vec![6, 7]]);
        let docs: Vec<Vec<usize>> = rows.iter().map(|r| r.doc_lengths.clone()).collect();
        assert_eq!(docs, [vec![4], vec![3, 1], vec![2]]);
        assert_eq!(rows[1].labels, [IGNORE, 9, 10, IGNORE]);
        assert_eq!(rows[1].position_ids().collect::<Vec<_>>(), [0, 1, 2, 0]);
    }
}
