//! Recovering BPE merges from a SentencePiece vocabulary, the way transformers does when a GGUF
//! file has no `tokenizer.ggml.merges` (`generate_merges` in tokenization_utils_base.py).
//!
//! Every token that can be cut into two tokens yields one merge per cut. Merges are ranked by the
//! token's priority (highest first), then by longer left piece, then longer right piece; ties keep
//! the order of generation: tokens in vocabulary order (first occurrence), cuts of one token by
//! the ids of their pieces. Lengths are counted in characters, as Python does.

use std::collections::{HashMap, HashSet};
use std::hash::{BuildHasherDefault, Hasher};

/// A fast, non-cryptographic hasher for the vocabulary maps (rustc's FxHash): the keys are
/// short strings from the model file, so SipHash's flood resistance buys nothing here.
#[derive(Default, Clone, Copy)]
pub struct FxHasher(u64);

impl Hasher for FxHasher {
    fn write(&mut self, bytes: &[u8]) {
        const K: u64 = 0x51_7c_c1_b7_27_22_0a_95;
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let w = u64::from_le_bytes([c[0], c[1], c[2], c[3], c[4], c[5], c[6], c[7]]);
            self.0 = (self.0.rotate_left(5) ^ w).wrapping_mul(K);
        }
        for &b in chunks.remainder() {
            self.0 = (self.0.rotate_left(5) ^ u64::from(b)).wrapping_mul(K);
        }
    }

    fn write_u8(&mut self, b: u8) {
        self.write(&[b]);
    }

    fn finish(&self) -> u64 {
        self.0
    }
}

pub type FxBuild = BuildHasherDefault<FxHasher>;

/// How a token's priority is decided.
#[derive(Clone, Copy, Debug)]
pub enum Priority<'a> {
    /// `tokenizer.ggml.scores`: higher score merges first.
    Scores(&'a [f32]),
    /// Vocabulary order: a lower id merges first (Gemma, whose scores do not follow merge order).
    Position,
}

/// One candidate merge: where it comes from and its sort key.
struct Candidate {
    score: f64,
    left_chars: u32,
    right_chars: u32,
    token: u32,
    split: u32,
}

/// The merges implied by `tokens`, best first, as (left, right) strings.
pub fn merges_from_vocab(tokens: &[String], priority: Priority<'_>) -> Vec<(String, String)> {
    // A Python dict built from the list keeps the last id of a repeated string but the position
    // of its first occurrence; mirror both.
    let mut last_id: HashMap<&str, u32, FxBuild> =
        HashMap::with_capacity_and_hasher(tokens.len(), FxBuild::default());
    for (i, t) in tokens.iter().enumerate() {
        last_id.insert(t.as_str(), i as u32);
    }
    let first: Option<Vec<bool>> = (last_id.len() != tokens.len()).then(|| {
        let mut seen: HashSet<&str, FxBuild> = HashSet::default();
        tokens.iter().map(|t| seen.insert(t.as_str())).collect()
    });

    // Cutting every token is the costly part and each token is independent: split the
    // vocabulary into contiguous ranges, one per thread, and concatenate in order.
    let threads = if tokens.len() < 65_536 {
        1
    } else {
        std::thread::available_parallelism().map_or(1, |n| n.get().min(8))
    };
    let chunk = tokens.len().div_ceil(threads).max(1);
    let cut_range = |start: usize| -> Vec<Candidate> {
        let end = (start + chunk).min(tokens.len());
        let mut out = Vec::with_capacity((end - start) * 2);
        let mut local: Vec<(u32, u32, Candidate)> = Vec::new();
        for i in start..end {
            if first.as_ref().is_some_and(|f| !f[i]) {
                continue; // a repeat: the first occurrence already produced this token's merges
            }
            let token = &tokens[i];
            let last = last_id[token.as_str()];
            let score = match priority {
                Priority::Scores(s) => f64::from(s[last as usize]),
                Priority::Position => -f64::from(last),
            };
            let total_chars = token.chars().count() as u32;
            local.clear();
            for (left_chars, (split, _)) in token.char_indices().enumerate().skip(1) {
                let (l, r) = token.split_at(split);
                let Some(&vl) = last_id.get(l) else { continue };
                if let Some(&vr) = last_id.get(r) {
                    let c = Candidate {
                        score,
                        left_chars: left_chars as u32,
                        right_chars: total_chars - left_chars as u32,
                        token: i as u32,
                        split: split as u32,
                    };
                    local.push((vl, vr, c));
                }
            }
            local.sort_by_key(|&(vl, vr, _)| (vl, vr));
            out.extend(local.drain(..).map(|(_, _, c)| c));
        }
        out
    };
    let mut candidates: Vec<Candidate> = if threads == 1 {
        cut_range(0)
    } else {
        std::thread::scope(|s| {
            let handles: Vec<_> = (0..threads)
                .map(|t| s.spawn(move || cut_range(t * chunk)))
                .collect();
            handles
                .into_iter()
                .flat_map(|h| match h.join() {
                    Ok(v) => v,
                    Err(panic) => std::panic::resume_unwind(panic),
                })
                .collect()
        })
    };
    // Stable sort, descending on (score, left length, right length).
    candidates.sort_by(|a, b| {
        b.score
            .total_cmp(&a.score)
            .then(b.left_chars.cmp(&a.left_chars))
            .then(b.right_chars.cmp(&a.right_chars))
    });
    candidates
        .iter()
        .map(|c| {
            let (l, r) = tokens[c.token as usize].split_at(c.split as usize);
            (l.to_owned(), r.to_owned())
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn position_priority_orders_by_id_then_longer_left() {
        let t = toks(&["a", "b", "c", "abc", "ab", "bc"]);
        let m = merges_from_vocab(&t, Priority::Position);
        let m: Vec<(&str, &str)> = m.iter().map(|(l, r)| (l.as_str(), r.as_str())).collect();
        assert_eq!(m, [("ab", "c"), ("a", "bc"), ("a", "b"), ("b", "c")]);
    }

    #[test]
    fn score_ties_keep_vocabulary_order_and_lengths_count_chars() {
        // "é" is one character but two bytes: counted in bytes it would sort before "a".
        let t = toks(&["a", "c", "é", "ac", "éc", "éc"]);
        let scores = [0.0, 0.0, 0.0, 1.0, 1.0, 2.0];
        let m = merges_from_vocab(&t, Priority::Scores(&scores));
        let m: Vec<(&str, &str)> = m.iter().map(|(l, r)| (l.as_str(), r.as_str())).collect();
        // The repeated "éc" keeps its first position but takes the last score.
        assert_eq!(m, [("é", "c"), ("a", "c")]);
        let scores = [0.0, 0.0, 0.0, 1.0, 1.0, 1.0];
        let m = merges_from_vocab(&t, Priority::Scores(&scores));
        let m: Vec<(&str, &str)> = m.iter().map(|(l, r)| (l.as_str(), r.as_str())).collect();
        assert_eq!(m, [("a", "c"), ("é", "c")]);
    }
}
