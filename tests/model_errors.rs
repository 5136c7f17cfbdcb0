//! Does the model refuse bad files and bad input with a clear error (never a panic)? Broken
//! models are made by rewriting the tiny Llama fixture with one change each; bad input is run
//! against the intact model.

mod model_support;

use edgetune::gguf::{GgmlType, GgufFile, GgufWriter, TensorSpec, Value};
use edgetune::model::{
    generate, ActivationMode, Batch, ForwardOptions, GenerateParams, Input, KvCache, Llama, NoHook,
    PrefixKv,
};
use model_support::{fixture, NaiveBackend};
use std::sync::Arc;

fn tiny() -> GgufFile {
    GgufFile::open(fixture("tiny-llama/tiny-llama.gguf")).unwrap()
}

/// The tiny Llama rewritten by `edit` (metadata and tensor list); tensors keep their data, new
/// ones are zero-filled.
fn rewritten(edit: impl FnOnce(&mut GgufWriter)) -> (tempfile::TempDir, GgufFile) {
    let src = tiny();
    let mut w = GgufWriter::from_header(src.header());
    edit(&mut w);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("broken.gguf");
    let specs = w.tensors.clone();
    w.write(&path, &mut |i, out| {
        let s = &specs[i];
        match src.header().tensor(&s.name) {
            Some(t) if t.ne == s.ne && t.ty == s.ty => out.write_all(src.tensor_data(t)),
            _ => out.write_all(&vec![0u8; s.validate().unwrap() as usize]),
        }
        .map_err(|e| edgetune::Error::io("writing test tensor", e))
    })
    .unwrap();
    let file = GgufFile::open(&path).unwrap();
    (dir, file)
}

fn load_err(file: &GgufFile) -> String {
    match Llama::new(file, Arc::new(NaiveBackend)) {
        Ok(_) => panic!("the broken model loaded"),
        Err(e) => e.to_string(),
    }
}

#[test]
fn broken_models_are_refused_naming_the_problem() {
    type Edit = Box<dyn FnOnce(&mut GgufWriter)>;
    let cases: Vec<(Edit, &[&str])> = vec![
        (
            Box::new(|w| w.set("general.architecture", Value::String("gpt2".into()))),
            &["architecture 'gpt2'"],
        ),
        (
            Box::new(|w| w.tensors.retain(|t| t.name != "blk.1.ffn_up.weight")),
            &["'blk.1.ffn_up.weight' is missing"],
        ),
        (
            Box::new(|w| w.set("llama.feed_forward_length", Value::U32(100))),
            &["blk.0.ffn_gate.weight", "[64, 96]", "[64, 100]"],
        ),
        (
            Box::new(|w| w.set("llama.attention.head_count_kv", Value::U32(4))),
            &["blk.0.attn_k.weight", "[64, 32]", "[64, 64]"],
        ),
        (
            Box::new(|w| w.set("llama.vocab_size", Value::U32(300))),
            &["token_embd.weight", "[64, 300]"],
        ),
        (
            Box::new(|w| {
                w.add_tensor(TensorSpec::new(
                    "blk.0.attn_q_norm.weight",
                    GgmlType::F32,
                    &[16],
                ))
                .unwrap()
            }),
            &["blk.0.attn_q_norm.weight", "does not use"],
        ),
        (
            Box::new(|w| {
                w.add_tensor(TensorSpec::new("rope_freqs.weight", GgmlType::F32, &[3]))
                    .unwrap()
            }),
            &["rope_freqs.weight", "[3]", "[8]"],
        ),
        (
            Box::new(|w| w.set("llama.rope.scaling.type", Value::String("yarn".into()))),
            &["yarn"],
        ),
    ];
    for (edit, needles) in cases {
        let (_dir, file) = rewritten(edit);
        let err = load_err(&file);
        for n in needles {
            assert!(err.contains(n), "expected '{n}' in: {err}");
        }
    }
}

#[test]
fn bad_input_is_an_error() {
    let file = tiny();
    let model = Llama::new(&file, Arc::new(NaiveBackend)).unwrap();
    let ctx = model.config.n_ctx_train;
    assert_eq!(ctx, 128);
    let params = GenerateParams {
        max_tokens: 4,
        ..GenerateParams::default()
    };
    let err_of = |r: edgetune::Result<Vec<u32>>| r.unwrap_err().to_string();

    let e = err_of(generate(&model, &[], &params, &mut |_| true));
    assert!(e.contains("empty prompt"), "{e}");
    let long = vec![7u32; ctx + 1];
    let e = err_of(generate(&model, &long, &params, &mut |_| true));
    assert!(
        e.contains("129 tokens exceeds the model's context of 128"),
        "{e}"
    );
    let e = err_of(generate(&model, &[3, 256], &params, &mut |_| true));
    assert!(e.contains("token id 256"), "{e}");
    let bad = GenerateParams {
        top_p: 0.0,
        ..params.clone()
    };
    assert!(err_of(generate(&model, &[1], &bad, &mut |_| true)).contains("top_p"));
    let bad = GenerateParams {
        temperature: -1.0,
        ..params.clone()
    };
    assert!(err_of(generate(&model, &[1], &bad, &mut |_| true)).contains("temperature"));
    // A prompt that fills the context exactly still yields one token.
    let full = vec![7u32; ctx];
    assert_eq!(
        generate(&model, &full, &params, &mut |_| true)
            .unwrap()
            .len(),
        1
    );

    let inference = ForwardOptions {
        mode: ActivationMode::Inference,
        prefix: None,
        ..Default::default()
    };
    let fwd_err = |tokens: &[u32], n_seq, seq_len, opts: &ForwardOptions| match model.forward(
        &Batch {
            tokens,
            n_seq,
            seq_len,
            docs: None,
        },
        opts,
        &mut NoHook,
    ) {
        Ok(_) => panic!(
            "forward accepted {n_seq} x {seq_len} over {} tokens",
            tokens.len()
        ),
        Err(e) => e.to_string(),
    };
    assert!(fwd_err(&[], 0, 0, &inference).contains("empty input"));
    assert!(fwd_err(&[1, 2, 3], 2, 2, &inference).contains("not 2 sequences of 2"));
    assert!(fwd_err(&long, 1, ctx + 1, &inference).contains("exceeds the model's context"));
    let prefix = PrefixKv::zeros(&model.config, 8);
    let with_prefix = ForwardOptions {
        mode: ActivationMode::Full,
        prefix: Some(&prefix),
        ..Default::default()
    };
    let e = fwd_err(&long[..ctx - 4], 1, ctx - 4, &with_prefix);
    assert!(e.contains("(+8 prefix/virtual)"), "{e}");

    let tokens = [1u32, 2, 3, 4];
    let batch = Batch::single(&tokens);
    let fwd = model.forward(&batch, &inference, &mut NoHook).unwrap();
    assert!(fwd
        .loss(&[1, 2, 3])
        .unwrap_err()
        .to_string()
        .contains("3 labels"));
    assert!(fwd.logits(&[4]).unwrap_err().to_string().contains("row 4"));
    let e = model
        .forward_backward(&batch, &[1, 2, 3, 4], &inference, None, &mut NoHook, None)
        .unwrap_err();
    assert!(e.to_string().contains("Full or Checkpoint"), "{e}");
    let full_opts = ForwardOptions::default();
    let mut dp = PrefixKv::zeros(&model.config, 2);
    let e = model
        .forward_backward(
            &batch,
            &[1, 2, 3, 4],
            &full_opts,
            None,
            &mut NoHook,
            Some(&mut dp),
        )
        .unwrap_err();
    assert!(e.to_string().contains("without prefix"), "{e}");
    let e = model
        .forward_backward(&batch, &[1, 2, 300, 4], &full_opts, None, &mut NoHook, None)
        .unwrap_err();
    assert!(e.to_string().contains("target 300"), "{e}");

    assert!(KvCache::new(&model.config, ctx + 1).is_err());
    let mut cache = KvCache::new(&model.config, 4).unwrap();
    assert!(model
        .forward_cached(&mut cache, Input::Tokens(&[]), &mut NoHook)
        .is_err());
    assert!(model
        .forward_cached(&mut cache, Input::Tokens(&[1, 2, 3, 4, 5]), &mut NoHook)
        .is_err());
    assert!(model
        .forward_cached(&mut cache, Input::Embeddings(&[0.0; 65]), &mut NoHook)
        .is_err());
    assert_eq!(cache.len(), 0, "a refused call must not change the cache");
    let odd = [0f32; 65];
    let opts = ForwardOptions {
        virtual_tokens: Some(&odd),
        ..Default::default()
    };
    let e = fwd_err(&tokens, 1, 4, &opts);
    assert!(e.contains("whole rows of n_embd 64"), "{e}");
}
