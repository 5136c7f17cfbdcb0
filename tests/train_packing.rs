//! Does a packed sequence train exactly like its documents one by one? TRL's padding-free packing
//! (which `--pack` follows, see src/data/pack.rs) gives every document its own positions from 0
//! and lets no token attend across documents, so the summed loss and the adapter gradients of a
//! packed row must equal those of its documents run as separate sequences. Checked on the tiny
//! random Llama and Qwen2 models for LoRA (all linear layers), IA3 and prefix tuning, with padding
//! after the packed documents and a second row in the batch.

use edgetune::adapters::{AnyAdapter, Method, Target};
use edgetune::backend::cpu::CpuBackend;
use edgetune::gguf::GgufFile;
use edgetune::model::{ActivationMode, Llama};
use edgetune::train::model::{model_dims, new_adapter, AdapterSpec, LlamaObjective};
use edgetune::train::{MicroBatch, Objective};
use std::path::PathBuf;
use std::sync::Arc;

fn model_path(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/model")
        .join(name)
        .join(format!("{name}.gguf"))
}

/// A deterministic pseudo-random stream (SplitMix64).
struct Stream(u64);

impl Stream {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn uniform(&mut self) -> f32 {
        (self.next() >> 40) as f32 / (1u64 << 24) as f32 * 2.0 - 1.0
    }
}

/// A document as packing leaves it: its first label is -100 (nothing predicts a document's start
/// from the one before), one more label inside is ignored too.
fn document(s: &mut Stream, len: usize, vocab: u64) -> (Vec<u32>, Vec<i32>) {
    let ids: Vec<u32> = (0..len).map(|_| (s.next() % vocab) as u32).collect();
    let mut labels: Vec<i32> = ids.iter().map(|&i| i as i32).collect();
    labels[0] = -100;
    if len > 3 {
        labels[len / 2] = -100;
    }
    (ids, labels)
}

/// Rows of (ids, labels, document lengths), right-padded to `width`.
fn batch(rows: &[Vec<&(Vec<u32>, Vec<i32>)>], width: usize, packed: bool) -> MicroBatch {
    let mut b = MicroBatch {
        rows: rows.len(),
        width,
        input_ids: Vec::new(),
        labels: Vec::new(),
        tokens: 0,
        doc_lengths: Vec::new(),
    };
    for docs in rows {
        let mut used = 0;
        for (ids, labels) in docs {
            b.input_ids.extend(ids);
            b.labels.extend(labels);
            used += ids.len();
        }
        assert!(used <= width);
        b.input_ids.resize(b.input_ids.len() + width - used, 0);
        b.labels.resize(b.labels.len() + width - used, -100);
        b.tokens += used;
        if packed {
            b.doc_lengths.push(docs.iter().map(|d| d.0.len()).collect());
        }
    }
    b
}

fn grads(a: &AnyAdapter) -> Vec<f32> {
    a.as_adapter()
        .params()
        .iter()
        .flat_map(|p| p.grad().to_vec())
        .collect()
}

fn packed_equals_one_by_one(model_name: &str, method: Method, mode: ActivationMode) {
    let file = GgufFile::open(model_path(model_name)).unwrap();
    let model = Llama::new(&file, Arc::new(CpuBackend::new(2).unwrap())).unwrap();
    let dims = model_dims(&model.config);
    let spec = AdapterSpec {
        method,
        targets: (method == Method::Lora).then(|| Target::ALL.to_vec()),
        rank: 4,
        alpha: 8.0,
        num_virtual_tokens: 3,
        ..AdapterSpec::default()
    };
    let mut adapter = new_adapter(&dims, &spec, 7).unwrap();
    // Non-zero everywhere (LoRA's B starts at zero, which would hide A's gradient).
    let mut s = Stream(11);
    for p in adapter.as_adapter_mut().params_mut().iter_mut() {
        for v in p.data_mut() {
            *v += 0.2 * s.uniform();
        }
    }
    let vocab = model.config.n_vocab as u64;
    let docs: Vec<_> = [5, 9, 3, 7, 6]
        .iter()
        .map(|&n| document(&mut s, n, vocab))
        .collect();
    // Row 0: three documents and 2 padding tokens; row 1: two documents, no padding.
    let packed = batch(
        &[vec![&docs[0], &docs[1], &docs[2]], vec![&docs[3], &docs[4]]],
        19,
        true,
    );
    let singles: Vec<MicroBatch> = docs
        .iter()
        .map(|d| batch(&[vec![d]], d.0.len(), false))
        .collect();

    let mut objective = LlamaObjective {
        model: &model,
        mode,
    };
    let denominator = objective.count_targets(&adapter, &packed);
    let one_by_one: usize = singles
        .iter()
        .map(|b| objective.count_targets(&adapter, b))
        .sum();
    assert_eq!(denominator, one_by_one);

    adapter.as_adapter_mut().zero_grad();
    let loss_packed = objective
        .forward_backward(&mut adapter, &packed, denominator, 0)
        .unwrap();
    let g_packed = grads(&adapter);
    adapter.as_adapter_mut().zero_grad();
    let mut loss_single = 0.0;
    for b in &singles {
        loss_single += objective
            .forward_backward(&mut adapter, b, denominator, 0)
            .unwrap()
            .sum_nll;
    }
    let g_single = grads(&adapter);

    let rel = (loss_packed.sum_nll - loss_single).abs() / loss_single.abs();
    assert!(
        rel < 1e-5,
        "{model_name} {method:?}: packed loss {} vs one by one {loss_single}",
        loss_packed.sum_nll
    );
    let scale = g_single.iter().fold(0f32, |m, v| m.max(v.abs()));
    assert!(
        scale > 0.0,
        "{model_name} {method:?}: all gradients are zero"
    );
    let worst = g_packed
        .iter()
        .zip(&g_single)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    assert!(
        worst <= 2e-5 * scale,
        "{model_name} {method:?}: gradient differs by {worst} (largest {scale})"
    );
    // Evaluation (no gradients) agrees too.
    let eval_packed = objective.evaluate(&mut adapter, &packed).unwrap().sum_nll;
    assert!((eval_packed - loss_single).abs() / loss_single.abs() < 1e-5);
}

macro_rules! packing_cases {
    ($($test:ident: $model:literal, $method:expr, $mode:expr;)*) => {$(
        #[test]
        fn $test() {
            packed_equals_one_by_one($model, $method, $mode);
        }
    )*};
}

packing_cases! {
    lora_llama_packed_equals_one_by_one: "tiny-llama", Method::Lora, ActivationMode::Full;
    lora_qwen2_packed_equals_one_by_one: "tiny-qwen2", Method::Lora, ActivationMode::Full;
    lora_llama_packed_with_checkpointing: "tiny-llama", Method::Lora, ActivationMode::Checkpoint;
    ia3_llama_packed_equals_one_by_one: "tiny-llama", Method::Ia3, ActivationMode::Full;
    prefix_llama_packed_equals_one_by_one: "tiny-llama", Method::Prefix, ActivationMode::Full;
}

#[test]
fn prompt_tuning_refuses_packed_rows() {
    let file = GgufFile::open(model_path("tiny-llama")).unwrap();
    let model = Llama::new(&file, Arc::new(CpuBackend::new(1).unwrap())).unwrap();
    let spec = AdapterSpec {
        method: Method::Prompt,
        num_virtual_tokens: 2,
        ..AdapterSpec::default()
    };
    let mut adapter = new_adapter(&model_dims(&model.config), &spec, 1).unwrap();
    let mut s = Stream(3);
    let docs = [document(&mut s, 4, 50), document(&mut s, 5, 50)];
    let packed = batch(&[vec![&docs[0], &docs[1]]], 9, true);
    let mut objective = LlamaObjective {
        model: &model,
        mode: ActivationMode::Full,
    };
    let err = objective
        .forward_backward(&mut adapter, &packed, 5, 0)
        .unwrap_err()
        .to_string();
    assert!(err.contains("packed"), "{err}");
}
