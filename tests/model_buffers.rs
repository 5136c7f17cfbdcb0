//! Do passes that reuse the model's kept buffers (stale memory from earlier passes of other
//! shapes and modes) compute bit for bit what a fresh model computes? Does the pool keep only
//! what training passes used, never grow from inference passes, and free everything on
//! `release_buffers`?

mod model_support;

use edgetune::backend::cpu::CpuBackend;
use edgetune::backend::Backend;
use edgetune::gguf::GgufFile;
use edgetune::model::{ActivationMode, Batch, ForwardOptions, Llama, NoHook};
use model_support::{fixture, TestRng};
use std::sync::Arc;

fn backend() -> Arc<dyn Backend> {
    Arc::new(CpuBackend::new(2).unwrap())
}

/// `(tokens, n_seq, seq_len)` of random ids.
fn batch(rng: &mut TestRng, n_vocab: usize, n_seq: usize, seq_len: usize) -> Vec<u32> {
    (0..n_seq * seq_len)
        .map(|_| (rng.next_u64() % n_vocab as u64) as u32)
        .collect()
}

/// Loss and d(embeddings) of one training pass.
fn train_pass(
    model: &Llama,
    tokens: &[u32],
    n_seq: usize,
    mode: ActivationMode,
) -> (f64, Vec<f32>) {
    let b = Batch {
        tokens,
        n_seq,
        seq_len: tokens.len() / n_seq,
        docs: None,
    };
    let labels: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
    let opts = ForwardOptions {
        mode,
        ..Default::default()
    };
    let out = model
        .forward_backward(&b, &labels, &opts, None, &mut NoHook, None)
        .unwrap();
    (out.loss.sum_nll, out.d_embeds)
}

#[test]
fn reused_buffers_give_what_fresh_ones_give() {
    let file = GgufFile::open(fixture("tiny-llama/tiny-llama.gguf")).unwrap();
    let kept = Llama::new(&file, backend()).unwrap();
    let nv = kept.config.n_vocab;
    let mut rng = TestRng::new(11);
    // Shapes grow, shrink and change mode, so buffers are reused with other contents and sizes.
    let passes = [
        (2, 9, ActivationMode::Full),
        (1, 5, ActivationMode::Full),
        (3, 12, ActivationMode::Checkpoint),
        (2, 9, ActivationMode::Full),
        (1, 16, ActivationMode::Checkpoint),
        (2, 7, ActivationMode::Full),
    ];
    for (i, &(n_seq, len, mode)) in passes.iter().enumerate() {
        let tokens = batch(&mut rng, nv, n_seq, len);
        let fresh = Llama::new(&file, backend()).unwrap();
        let want = train_pass(&fresh, &tokens, n_seq, mode);
        assert!(
            fresh.retained_buffer_bytes() > 0,
            "a training pass keeps its buffers"
        );
        // An inference pass in between reuses kept buffers (stale) but adds none.
        let before = kept.retained_buffer_bytes();
        let b = Batch {
            tokens: &tokens,
            n_seq,
            seq_len: len,
            docs: None,
        };
        let labels: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
        let fwd = kept
            .forward(&b, &ForwardOptions::inference(), &mut NoHook)
            .unwrap();
        let nll_kept = fwd.loss(&labels).unwrap();
        drop(fwd);
        let nll_fresh = Llama::new(&file, backend())
            .unwrap()
            .loss(&b, &labels)
            .unwrap();
        assert_eq!(nll_kept, nll_fresh, "inference pass {i}");
        assert!(
            kept.retained_buffer_bytes() <= before,
            "inference pass {i} grew the pool"
        );
        let got = train_pass(&kept, &tokens, n_seq, mode);
        assert_eq!(got.0.to_bits(), want.0.to_bits(), "loss of pass {i}");
        assert_eq!(got.1, want.1, "d_embeds of pass {i}");
    }
    assert!(kept.retained_buffer_bytes() > 0);
    kept.release_buffers();
    assert_eq!(kept.retained_buffer_bytes(), 0);
}

#[test]
fn inference_alone_keeps_nothing() {
    let file = GgufFile::open(fixture("tiny-llama/tiny-llama.gguf")).unwrap();
    let model = Llama::new(&file, backend()).unwrap();
    let tokens = batch(&mut TestRng::new(3), model.config.n_vocab, 2, 8);
    let labels: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
    let b = Batch {
        tokens: &tokens,
        n_seq: 2,
        seq_len: 8,
        docs: None,
    };
    model.loss(&b, &labels).unwrap();
    assert_eq!(model.retained_buffer_bytes(), 0);
}
