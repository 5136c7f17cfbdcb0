//! Does our Llama run SmolLM2-135M-Instruct (Q4_1 GGUF, the real model) as transformers does on
//! the same file? Compared with `scripts/reference/make_model_fixtures.py`'s fixture: logits at a
//! fixed subset of the vocabulary at every position of four 256-token sequences, the argmax, the
//! NLL per position and per sequence, and 32-token greedy continuations of five prompts.
//! Fails (does not skip) when the model or the fixture is missing.

mod model_support;

use edgetune::backend::cpu::CpuBackend;
use edgetune::gguf::GgufFile;
use edgetune::model::check::Tolerance;
use edgetune::model::generate::argmax;
use edgetune::model::{generate, perplexity, Batch, ForwardOptions, GenerateParams, Llama, NoHook};
use model_support::{fixture, model_path, read_npy};
use serde_json::Value;
use std::sync::Arc;

const LOGITS_TOL: Tolerance = Tolerance::new(2e-3, 0.0);
const NLL_TOL: Tolerance = Tolerance::new(2e-3, 0.0);
const MEAN_NLL_TOL: Tolerance = Tolerance::new(0.0, 1e-4);

fn load() -> (GgufFile, Value) {
    let file = GgufFile::open(model_path("SmolLM2-135M-Instruct.Q4_1.gguf")).unwrap();
    let text = std::fs::read_to_string(fixture("smollm2/manifest.json")).unwrap();
    (file, serde_json::from_str(&text).unwrap())
}

fn threads() -> usize {
    std::thread::available_parallelism().map_or(1, |n| n.get())
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

#[test]
fn smollm2_logits_argmax_and_nll_match_transformers() {
    let (file, m) = load();
    let model = Llama::new(&file, Arc::new(CpuBackend::new(threads()).unwrap())).unwrap();
    let nv = model.config.n_vocab;
    let seqs: Vec<Vec<u32>> = m["sequences"].as_array().unwrap().iter().map(ids).collect();
    let subset: Vec<usize> = ids(&m["vocab_subset"])
        .iter()
        .map(|&v| v as usize)
        .collect();
    let (n_seq, t) = (seqs.len(), seqs[0].len());
    let want_logits = read_npy(&fixture("smollm2/logits.npy"));
    let want_argmax = read_npy(&fixture("smollm2/argmax.npy"));
    let want_nll = read_npy(&fixture("smollm2/nll.npy"));
    assert_eq!(want_logits.shape, vec![n_seq, t, subset.len()]);

    let tokens: Vec<u32> = seqs.concat();
    let batch = Batch {
        tokens: &tokens,
        n_seq,
        seq_len: t,
        docs: None,
    };
    let opts = ForwardOptions::inference();
    let fwd = model.forward(&batch, &opts, &mut NoHook).unwrap();
    let mut ours_subset = Vec::with_capacity(n_seq * t * subset.len());
    let mut worst_argmax_gap = 0f32;
    for rows in (0..n_seq * t).collect::<Vec<_>>().chunks(64) {
        let logits = fwd.logits(rows).unwrap();
        for (lr, &r) in logits.chunks_exact(nv).zip(rows) {
            ours_subset.extend(subset.iter().map(|&v| lr[v]));
            // HF's argmax must be our argmax up to the logits tolerance (near-ties may swap).
            let hf = want_argmax.i64[r] as usize;
            let gap = lr[argmax(lr)] - lr[hf];
            worst_argmax_gap = worst_argmax_gap.max(gap);
            assert!(
                gap <= LOGITS_TOL.abs as f32,
                "row {r}: HF argmax {hf} is {gap} below our max"
            );
        }
    }
    let c = LOGITS_TOL
        .check(
            "smollm2 logits (vocab subset)",
            want_logits.f32.iter().copied(),
            ours_subset,
        )
        .unwrap();

    let labels: Vec<i32> = tokens.iter().map(|&x| x as i32).collect();
    let nll = fwd.token_nll(&labels).unwrap();
    let mut rel = 0f64;
    for b in 0..n_seq {
        let ours = &nll[b * t..(b + 1) * t - 1];
        NLL_TOL
            .check(
                &format!("smollm2 nll seq {b}"),
                want_nll.f32[b * (t - 1)..(b + 1) * (t - 1)].iter().copied(),
                ours.iter().copied(),
            )
            .unwrap();
        let mean: f64 = ours.iter().map(|&v| v as f64).sum::<f64>() / (t - 1) as f64;
        let want = m["mean_nll"][b].as_f64().unwrap();
        MEAN_NLL_TOL
            .check(&format!("smollm2 mean nll seq {b}"), [want], [mean])
            .unwrap();
        rel = rel.max((mean - want).abs() / want);
    }
    eprintln!(
        "smollm2: logits max abs diff {:.2e}, mean NLL max rel diff {rel:.2e}, worst HF-argmax gap {worst_argmax_gap:.2e}",
        c.max_abs_diff
    );

    // perplexity() evaluates each sequence on its own: the same numbers.
    let p = perplexity(&model, &seqs[..2]).unwrap();
    let want = (m["mean_nll"][0].as_f64().unwrap() + m["mean_nll"][1].as_f64().unwrap()) / 2.0;
    assert_eq!(p.tokens, 2 * (t - 1));
    MEAN_NLL_TOL
        .check("smollm2 perplexity mean nll", [want], [p.mean_nll])
        .unwrap();
    assert!((p.ppl - p.mean_nll.exp()).abs() < 1e-9);
}

#[test]
fn smollm2_greedy_continuations_match_transformers() {
    let (file, m) = load();
    let model = Llama::new(&file, Arc::new(CpuBackend::new(threads()).unwrap())).unwrap();
    for g in m["greedy"].as_array().unwrap() {
        let prompt = ids(&g["prompt"]);
        let want = ids(&g["continuation"]);
        let params = GenerateParams {
            max_tokens: want.len(),
            ..GenerateParams::default()
        };
        let got = generate(&model, &prompt, &params, &mut |_| true).unwrap();
        assert_eq!(got, want, "greedy continuation of prompt {prompt:?}");
    }
}
