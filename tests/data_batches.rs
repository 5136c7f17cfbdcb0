//! Are shuffling, splitting, packing and batching deterministic, complete and resumable?

use edgetune::data::rng::Pcg32;
use edgetune::data::{self, Batch, BatchOptions, Batcher, DataOptions, DataState, Example, IGNORE};
use std::collections::BTreeMap;

/// `n` examples of 1..=max_len tokens; every third token of some examples is ignored. Token ids
/// encode (example, position) so any token can be traced back.
fn examples(n: usize, max_len: u32, seed: u64) -> Vec<Example> {
    let mut rng = Pcg32::new(seed, 9);
    (0..n)
        .map(|e| {
            let len = 1 + rng.below(max_len) as usize;
            let ids: Vec<u32> = (0..len).map(|p| (e * 1000 + p) as u32).collect();
            let masked = rng.below(2) == 0;
            let labels = ids
                .iter()
                .enumerate()
                .map(|(p, &i)| {
                    if masked && p % 3 == 0 {
                        IGNORE
                    } else {
                        i as i32
                    }
                })
                .collect();
            Example {
                input_ids: ids,
                labels,
                line: e + 1,
            }
        })
        .collect()
}

fn opts(seq_len: usize, pack: bool) -> DataOptions {
    DataOptions {
        seq_len,
        pack,
        train_on_prompt: false,
        shuffle: true,
        seed: 1234,
        val_split: 0.0,
    }
}

fn bopts(batch_size: usize, shuffle: bool) -> BatchOptions {
    BatchOptions {
        batch_size,
        shuffle,
        seed: 77,
        pad_id: 2,
    }
}

/// First token of each row: identifies the sequence.
fn heads(b: &Batch) -> Vec<u32> {
    (0..b.rows).map(|r| b.row(r).0[0]).collect()
}

#[test]
fn truncation_keeps_the_start_and_examples_without_targets_are_dropped() {
    let exs = examples(200, 40, 1);
    let p = data::prepare(
        exs.clone(),
        &DataOptions {
            shuffle: false,
            ..opts(16, false)
        },
    )
    .unwrap();
    let mut kept = 0;
    for ex in &exs {
        let n = ex.len().min(16);
        let has_target = ex.labels[1..n].iter().any(|&l| l != IGNORE);
        if has_target {
            let s = &p.train[kept];
            assert_eq!(s.input_ids, ex.input_ids[..n]);
            assert_eq!(s.labels, ex.labels[..n]);
            kept += 1;
        }
    }
    assert_eq!(kept, p.train.len());
    let s = &p.stats;
    assert_eq!(s.records, 200);
    assert_eq!(s.dropped, 200 - kept);
    assert!(s.dropped > 0, "the data should have single-token examples");
    assert_eq!(s.truncated, exs.iter().filter(|e| e.len() > 16).count());
    assert_eq!(
        s.truncated_tokens,
        exs.iter()
            .map(|e| e.len().saturating_sub(16))
            .sum::<usize>()
    );
    assert_eq!(s.warnings(16).len(), 2);
}

#[test]
fn validation_split_is_seeded_disjoint_and_in_file_order() {
    let exs = examples(101, 30, 2);
    let all = data::prepare(
        exs.clone(),
        &DataOptions {
            shuffle: false,
            ..opts(64, false)
        },
    )
    .unwrap();
    let n = all.train.len();
    for frac in [0.001, 0.1, 0.33, 0.9] {
        let o = DataOptions {
            val_split: frac,
            ..opts(64, false)
        };
        let p = data::prepare(exs.clone(), &o).unwrap();
        let want_val = ((frac * n as f64).ceil() as usize).max(1);
        assert_eq!(p.val.len(), want_val, "{frac}");
        assert_eq!(p.train.len() + p.val.len(), n);
        // Disjoint, complete, each part in file order.
        let mut seen: Vec<u32> = p
            .train
            .iter()
            .chain(&p.val)
            .map(|s| s.input_ids[0])
            .collect();
        for part in [&p.train, &p.val] {
            let h: Vec<u32> = part.iter().map(|s| s.input_ids[0]).collect();
            assert!(
                h.windows(2).all(|w| w[0] < w[1]),
                "{frac}: not in file order"
            );
        }
        seen.sort_unstable();
        let mut want: Vec<u32> = all.train.iter().map(|s| s.input_ids[0]).collect();
        want.sort_unstable();
        assert_eq!(seen, want);
        // Same seed, same split; another seed, another split.
        assert_eq!(data::prepare(exs.clone(), &o).unwrap(), p);
        let other = data::prepare(exs.clone(), &DataOptions { seed: 99, ..o }).unwrap();
        if want_val > 1 && want_val < n - 1 {
            assert_ne!(other.val, p.val, "{frac}");
        }
    }
}

#[test]
fn packing_keeps_every_document_and_every_target() {
    let exs = examples(2500, 50, 3);
    for seq_len in [50, 64, 257] {
        let o = DataOptions {
            shuffle: false,
            ..opts(seq_len, false)
        };
        let single = data::prepare(exs.clone(), &o).unwrap();
        let packed = data::prepare(exs.clone(), &DataOptions { pack: true, ..o }).unwrap();
        assert!(packed.train.len() < single.train.len());
        let mut docs = BTreeMap::new();
        for s in &packed.train {
            assert!(s.len() <= seq_len);
            assert_eq!(s.doc_lengths.iter().sum::<usize>(), s.len());
            let mut at = 0;
            for &d in &s.doc_lengths {
                assert_eq!(
                    s.labels[at], IGNORE,
                    "a document's first token is never a target"
                );
                docs.insert(
                    s.input_ids[at],
                    (
                        s.input_ids[at..at + d].to_vec(),
                        s.labels[at + 1..at + d].to_vec(),
                    ),
                );
                at += d;
            }
            let pos: Vec<u32> = s.position_ids().collect();
            assert_eq!(pos.iter().filter(|&&p| p == 0).count(), s.doc_lengths.len());
        }
        assert_eq!(docs.len(), single.train.len());
        for s in &single.train {
            let (ids, labels) = &docs[&s.input_ids[0]];
            assert_eq!(ids, &s.input_ids);
            assert_eq!(labels, &s.labels[1..].to_vec());
        }
        assert_eq!(packed.stats.train_targets, single.stats.train_targets);
        assert_eq!(packed.stats.train_tokens, single.stats.train_tokens);
    }
    // Shuffling before packing follows the seed.
    let a = data::prepare(exs.clone(), &opts(64, true)).unwrap();
    assert_eq!(a, data::prepare(exs.clone(), &opts(64, true)).unwrap());
    let b = data::prepare(
        exs,
        &DataOptions {
            seed: 5,
            ..opts(64, true)
        },
    )
    .unwrap();
    assert_ne!(a.train, b.train);
}

#[test]
fn batches_are_padded_and_count_their_targets() {
    let p = data::prepare(examples(30, 20, 4), &opts(20, false)).unwrap();
    let mut b = Batcher::new(p.train.clone(), bopts(4, true)).unwrap();
    for _ in 0..b.batches_per_epoch() {
        let batch = b.next_batch().unwrap();
        assert_eq!(batch.width, *batch.lengths.iter().max().unwrap());
        let shifted = batch.shifted_labels();
        assert_eq!(
            shifted.iter().filter(|&&l| l != IGNORE).count(),
            batch.targets
        );
        for r in 0..batch.rows {
            let (ids, labels) = batch.row(r);
            let n = batch.lengths[r];
            assert!(ids[n..].iter().all(|&i| i == 2));
            assert!(labels[n..].iter().all(|&l| l == IGNORE));
            assert_eq!(
                &shifted[r * batch.width..r * batch.width + n - 1],
                &labels[1..n]
            );
            assert_eq!(shifted[(r + 1) * batch.width - 1], IGNORE);
            let pos = &batch.position_ids[r * batch.width..(r + 1) * batch.width];
            assert!(pos[..n].iter().enumerate().all(|(i, &p)| p as usize == i));
        }
        let per_row: usize = (0..batch.rows)
            .map(|r| {
                batch.row(r).1[1..batch.lengths[r]]
                    .iter()
                    .filter(|&&l| l != IGNORE)
                    .count()
            })
            .sum();
        assert_eq!(batch.targets, per_row);
    }
    let val: Vec<Batch> = data::eval_batches(&p.train, 7, 2).collect();
    assert_eq!(val.len(), p.train.len().div_ceil(7));
    assert!(val.last().unwrap().ends_epoch);
    assert_eq!(data::count_targets(&val), p.stats.train_targets);
}

/// Every epoch visits each sequence once; shuffled epochs differ from each other and follow
/// the seed; without shuffling every epoch is file order.
#[test]
fn epochs_visit_everything_in_seeded_orders() {
    let p = data::prepare(examples(53, 10, 5), &opts(10, false)).unwrap();
    let n = p.train.len();
    let file_order: Vec<u32> = p.train.iter().map(|s| s.input_ids[0]).collect();
    let epoch_orders = |shuffle: bool, seed: u64| {
        let mut b = Batcher::new(
            p.train.clone(),
            BatchOptions {
                seed,
                ..bopts(5, shuffle)
            },
        )
        .unwrap();
        (0..3)
            .map(|e| {
                let mut order = Vec::new();
                loop {
                    let batch = b.next_batch().unwrap();
                    assert_eq!(batch.epoch, e);
                    order.extend(heads(&batch));
                    if batch.ends_epoch {
                        break;
                    }
                }
                order
            })
            .collect::<Vec<_>>()
    };
    let shuffled = epoch_orders(true, 1);
    for order in &shuffled {
        let mut sorted = order.clone();
        sorted.sort_unstable();
        let mut want = file_order.clone();
        want.sort_unstable();
        assert_eq!(sorted, want);
        assert_ne!(order, &file_order);
    }
    assert_ne!(shuffled[0], shuffled[1]);
    assert_eq!(shuffled, epoch_orders(true, 1));
    assert_ne!(shuffled, epoch_orders(true, 2));
    assert!(epoch_orders(false, 1).iter().all(|o| o == &file_order));
    assert_eq!(n, file_order.len());
}

#[test]
fn steps_never_cross_an_epoch() {
    let p = data::prepare(examples(23, 10, 6), &opts(10, false)).unwrap();
    let n = p.train.len();
    for (bs, ga) in [(1, 1), (2, 3), (4, 2), (5, 5), (100, 4)] {
        let mut b = Batcher::new(p.train.clone(), bopts(bs, true)).unwrap();
        let per_epoch = b.steps_per_epoch(ga);
        assert_eq!(per_epoch, n.div_ceil(bs).div_ceil(ga));
        for epoch in 0..3u64 {
            let mut rows = 0;
            for s in 0..per_epoch {
                let step = b.next_step(ga).unwrap();
                assert!(!step.is_empty() && step.len() <= ga);
                assert!(step.iter().all(|m| m.epoch == epoch));
                assert_eq!(step.last().unwrap().ends_epoch, s + 1 == per_epoch);
                rows += step.iter().map(|m| m.rows).sum::<usize>();
            }
            assert_eq!(rows, n, "bs {bs} ga {ga}");
        }
    }
}

/// Stopping anywhere, saving the state (through JSON) and resuming in a new batcher gives the
/// batches an uninterrupted run gives.
#[test]
fn resume_continues_exactly() {
    let p = data::prepare(examples(37, 12, 7), &opts(12, true)).unwrap();
    let make = || Batcher::new(p.train.clone(), bopts(3, true)).unwrap();
    let mut straight = make();
    let reference: Vec<Batch> = (0..60).map(|_| straight.next_batch().unwrap()).collect();
    for stop in [0, 1, 5, 12, 13, 14, 29, 40] {
        let mut first = make();
        for want in &reference[..stop] {
            assert_eq!(&first.next_batch().unwrap(), want);
        }
        let saved = serde_json::to_string(&first.state()).unwrap();
        let state: DataState = serde_json::from_str(&saved).unwrap();
        let mut resumed = make();
        resumed.restore(&state).unwrap();
        assert_eq!(resumed.position(), first.position());
        for (k, want) in reference[stop..].iter().enumerate() {
            assert_eq!(
                &resumed.next_batch().unwrap(),
                want,
                "stop {stop}, batch {k}"
            );
        }
    }
}

#[test]
fn resume_refuses_other_data_or_batching() {
    let p = data::prepare(examples(20, 12, 8), &opts(12, false)).unwrap();
    let b = Batcher::new(p.train.clone(), bopts(3, true)).unwrap();
    let state = b.state();
    let mut fewer = Batcher::new(p.train[1..].to_vec(), bopts(3, true)).unwrap();
    let msg = fewer.restore(&state).unwrap_err().to_string();
    assert!(msg.contains("changed since the checkpoint"), "{msg}");
    let mut other_size = Batcher::new(p.train.clone(), bopts(4, true)).unwrap();
    assert!(other_size.restore(&state).is_err());
    let mut bad = Batcher::new(p.train.clone(), bopts(3, true)).unwrap();
    let past = DataState {
        index: p.train.len() + 1,
        ..state.clone()
    };
    assert!(bad
        .restore(&past)
        .unwrap_err()
        .to_string()
        .contains("past the"));
    assert!(Batcher::new(Vec::new(), bopts(3, true)).is_err());
    assert!(Batcher::new(p.train, bopts(0, true)).is_err());
}
