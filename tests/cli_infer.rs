//! Do `edgetune generate` and `edgetune perplexity` reproduce transformers on the real model?
//! Reference: tests/fixtures/model/smollm2/manifest.json (scripts/reference/make_model_fixtures.py:
//! transformers on the same GGUF, f32): per-sequence mean NLL and greedy continuations.

use edgetune::gguf::GgufFile;
use edgetune::tokenizer::Tokenizer;
use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn smollm2() -> PathBuf {
    let p = root().join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    assert!(
        p.exists(),
        "{} is missing: run scripts/fetch-models.sh",
        p.display()
    );
    p
}

fn manifest() -> serde_json::Value {
    let p = root().join("tests/fixtures/model/smollm2/manifest.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn edgetune(args: &[&str]) -> (bool, String, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_edgetune"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8(out.stdout).unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

#[test]
fn perplexity_json_matches_transformers_nll() {
    let m = manifest();
    let seqs = m["sequences"].as_array().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("seqs.jsonl");
    let lines: Vec<String> = seqs
        .iter()
        .map(|s| serde_json::json!({ "input_ids": s }).to_string())
        .collect();
    std::fs::write(&data, lines.join("\n")).unwrap();
    let model = smollm2();
    let (ok, out, err) = edgetune(&[
        "perplexity",
        model.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--json",
    ]);
    assert!(ok, "{err}");
    let got: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let tokens: usize = seqs.iter().map(|s| s.as_array().unwrap().len() - 1).sum();
    assert_eq!(got["tokens"].as_u64().unwrap() as usize, tokens);
    // All sequences have the same length, so the token mean is the mean of the per-sequence means.
    let per_seq: Vec<f64> = m["mean_nll"]
        .as_array()
        .unwrap()
        .iter()
        .map(|v| v.as_f64().unwrap())
        .collect();
    let want = per_seq.iter().sum::<f64>() / per_seq.len() as f64;
    let mean = got["mean_nll"].as_f64().unwrap();
    assert!(
        ((mean - want) / want).abs() <= 1e-4,
        "mean NLL {mean} vs transformers {want}"
    );
    let ppl = got["ppl"].as_f64().unwrap();
    assert!(
        (ppl - mean.exp()).abs() <= 1e-9 * ppl,
        "ppl {ppl} should be exp(mean_nll)"
    );
}

#[test]
fn greedy_generation_streams_transformers_tokens() {
    let model = smollm2();
    let file = GgufFile::open(&model).unwrap();
    let tok = Tokenizer::from_gguf(file.header()).unwrap();
    let m = manifest();
    for case in m["greedy"].as_array().unwrap().iter().take(3) {
        let ids = |k: &str| -> Vec<u32> {
            case[k]
                .as_array()
                .unwrap()
                .iter()
                .map(|v| v.as_u64().unwrap() as u32)
                .collect()
        };
        let prompt = tok.decode(&ids("prompt")).unwrap();
        assert_eq!(
            tok.encode(&prompt, false).unwrap(),
            ids("prompt"),
            "prompt text must round-trip"
        );
        let cont = ids("continuation");
        let stop = cont
            .iter()
            .position(|&t| tok.is_end_of_generation(t))
            .unwrap_or(cont.len());
        let want = tok.decode(&cont[..stop]).unwrap();
        let n = cont.len().to_string();
        let (ok, out, err) =
            edgetune(&["generate", model.to_str().unwrap(), "-p", &prompt, "-n", &n]);
        assert!(ok, "{err}");
        assert_eq!(out.trim_end_matches('\n'), want, "prompt {prompt:?}");
    }
}

#[test]
fn chat_flag_applies_the_template() {
    let model = smollm2();
    let (ok, out, err) = edgetune(&[
        "generate",
        model.to_str().unwrap(),
        "--chat",
        "-p",
        "What is the capital of France?",
        "-n",
        "16",
    ]);
    assert!(ok, "{err}");
    assert!(out.contains("Paris"), "{out}");
    assert!(
        !out.contains("<|im_end|>"),
        "stop token must not be printed: {out}"
    );
}

#[test]
fn bad_inference_input_is_a_clear_error() {
    let model = smollm2();
    let m = model.to_str().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.jsonl");
    std::fs::write(&bad, "{\"input_ids\": [1, 99999999]}\n").unwrap();
    let empty = dir.path().join("empty.txt");
    std::fs::write(&empty, "").unwrap();
    let long = "word ".repeat(9000);
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (
            vec!["perplexity", m, "--data", bad.to_str().unwrap()],
            "bad.jsonl:1: token id 99999999",
        ),
        (
            vec!["perplexity", m, "--data", empty.to_str().unwrap()],
            "no sequence",
        ),
        (vec!["generate", m, "-p", ""], "empty"),
        (
            vec!["generate", m, "-p", &long],
            "exceeds the model's context",
        ),
    ];
    for (args, needle) in cases {
        let (ok, _, err) = edgetune(&args);
        assert!(!ok, "{:?} should fail", &args[..2]);
        assert!(
            err.contains(needle),
            "{:?}: {err:?} should contain {needle:?}",
            &args[..2]
        );
        assert!(!err.contains("panicked"), "{err}");
    }
}

/// `perplexity --adapter` equals PEFT's first-step loss: the loss PEFT logged before its first
/// update is the adapter's loss on that step's sequences (tests/fixtures/train, from
/// scripts/reference/make_train_fixtures.py; sequences cut to the run's 64 tokens). The LoRA run
/// has batch 2 x accumulation 2, so its first step covers 4 sequences, token-weighted as the
/// perplexity mean is.
#[test]
fn perplexity_with_adapter_matches_peft_loss() {
    let fixtures = root().join("tests/fixtures/train");
    let lines: Vec<serde_json::Value> = std::fs::read_to_string(fixtures.join("sequences.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    let dir = tempfile::tempdir().unwrap();
    for method in ["lora", "ia3", "prefix", "prompt"] {
        let run: serde_json::Value = serde_json::from_str(
            &std::fs::read_to_string(fixtures.join(format!("{method}_run.json"))).unwrap(),
        )
        .unwrap();
        let n =
            (run["batch_size"].as_u64().unwrap() * run["grad_accum"].as_u64().unwrap()) as usize;
        let mut text = String::new();
        for l in &lines[..n] {
            let cut = |k: &str| -> Vec<i64> {
                l[k].as_array().unwrap()[..]
                    .iter()
                    .take(64)
                    .map(|v| v.as_i64().unwrap())
                    .collect()
            };
            text += &serde_json::json!({"input_ids": cut("input_ids"), "labels": cut("labels")})
                .to_string();
            text.push('\n');
        }
        let data = dir.path().join(format!("{method}.jsonl"));
        std::fs::write(&data, text).unwrap();
        let adapter = fixtures.join(format!("{method}_init"));
        let (ok, out, err) = edgetune(&[
            "perplexity",
            smollm2().to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--adapter",
            adapter.to_str().unwrap(),
            "--json",
        ]);
        assert!(ok, "{method}: {err}");
        let got: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        let want = &run["steps_log"][0];
        assert_eq!(got["tokens"], want["targets"], "{method}");
        let (g, w) = (
            got["mean_nll"].as_f64().unwrap(),
            want["loss"].as_f64().unwrap(),
        );
        assert!(
            (g - w).abs() / w < 1e-4,
            "{method}: mean NLL {g} vs PEFT's {w}"
        );
    }
    // Without the adapter the loss differs (the adapters are not identity).
    let data = dir.path().join("ia3.jsonl");
    let (ok, out, _) = edgetune(&[
        "perplexity",
        smollm2().to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--json",
    ]);
    assert!(ok);
    let base: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
    let run: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(fixtures.join("ia3_run.json")).unwrap())
            .unwrap();
    let with = run["steps_log"][0]["loss"].as_f64().unwrap();
    let without = base["mean_nll"].as_f64().unwrap();
    assert!((with - without).abs() / with > 1e-3, "{with} vs {without}");
}

/// PEFT opens the adapters `edgetune train` writes and computes what we compute with them:
/// tests/fixtures/peft_load holds adapters our trainer wrote (LoRA on q,k,v, IA3, prefix,
/// prompt), and the mean NLL `PeftModel.from_pretrained` gives with each on 4 sequences
/// (scripts/reference/make_peft_load_fixtures.py, which also checks that PEFT loads every key
/// with the file's exact values). `perplexity --adapter` must agree.
#[test]
fn peft_loads_our_adapters_and_agrees_on_the_loss() {
    let dir = root().join("tests/fixtures/peft_load");
    let peft: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("peft.json")).unwrap()).unwrap();
    let methods = peft["methods"].as_object().unwrap();
    assert_eq!(methods.len(), 4);
    for (method, want) in methods {
        let (ok, out, err) = edgetune(&[
            "perplexity",
            smollm2().to_str().unwrap(),
            "--data",
            dir.join("eval.jsonl").to_str().unwrap(),
            "--adapter",
            dir.join(method).to_str().unwrap(),
            "--json",
        ]);
        assert!(ok, "{method}: {err}");
        let got: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        assert_eq!(got["tokens"], want["tokens"], "{method}");
        let (g, w) = (
            got["mean_nll"].as_f64().unwrap(),
            want["mean_nll"].as_f64().unwrap(),
        );
        assert!(
            (g - w).abs() / w < 1e-4,
            "{method}: mean NLL {g}, PEFT's {w}"
        );
    }
}

/// Several adapters at once, as PEFT runs several active adapters (`set_adapter([...])`): two
/// LoRA adapters (ours and one PEFT saved) add their deltas, two IA3 adapters multiply their
/// scalings. Fixture: the "stacked" part of tests/fixtures/peft_load/peft.json. Each stack's loss
/// differs from either adapter alone by more than the tolerance, so applying one is caught.
#[test]
fn several_adapters_apply_together_as_in_peft() {
    let fixtures = root().join("tests/fixtures");
    let peft: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(fixtures.join("peft_load/peft.json")).unwrap(),
    )
    .unwrap();
    let stacked = peft["stacked"].as_object().unwrap();
    assert_eq!(stacked.len(), 2);
    for (name, want) in stacked {
        let mut args = vec![
            "perplexity".to_string(),
            smollm2().to_str().unwrap().to_string(),
            "--data".into(),
            fixtures
                .join("peft_load/eval.jsonl")
                .to_str()
                .unwrap()
                .into(),
            "--json".into(),
        ];
        for d in want["dirs"].as_array().unwrap() {
            args.push("--adapter".into());
            args.push(fixtures.join(d.as_str().unwrap()).to_str().unwrap().into());
        }
        let (ok, out, err) = edgetune(&args.iter().map(String::as_str).collect::<Vec<_>>());
        assert!(ok, "{name}: {err}");
        let got: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        let (g, w) = (
            got["mean_nll"].as_f64().unwrap(),
            want["mean_nll"].as_f64().unwrap(),
        );
        assert!((g - w).abs() / w < 1e-4, "{name}: {g} vs PEFT's {w}");
        let single = peft["methods"][name]["mean_nll"].as_f64().unwrap();
        assert!(
            (single - w).abs() / w > 1e-4,
            "{name}: stack equals one adapter"
        );
    }
    // Mixed methods are refused with the reason.
    let (ok, _, err) = edgetune(&[
        "perplexity",
        smollm2().to_str().unwrap(),
        "--data",
        fixtures.join("peft_load/eval.jsonl").to_str().unwrap(),
        "--adapter",
        fixtures.join("peft_load/lora").to_str().unwrap(),
        "--adapter",
        fixtures.join("peft_load/ia3").to_str().unwrap(),
    ]);
    assert!(!ok && err.contains("all be LoRA or all IA3"), "{err}");
}

/// `--compute bf16` rounds the matrix-product inputs to bf16: the NLL moves by the size of that
/// rounding (well under 1%), and is not bit-identical to f32 (the flag reaches the backend).
#[test]
fn bf16_compute_stays_close_to_f32() {
    let data = root().join("tests/fixtures/peft_load/eval.jsonl");
    let nll = |compute: &str| -> f64 {
        let (ok, out, err) = edgetune(&[
            "perplexity",
            smollm2().to_str().unwrap(),
            "--data",
            data.to_str().unwrap(),
            "--json",
            "--compute",
            compute,
        ]);
        assert!(ok, "{compute}: {err}");
        let v: serde_json::Value = serde_json::from_str(out.trim()).unwrap();
        v["mean_nll"].as_f64().unwrap()
    };
    let (f32_nll, bf16_nll) = (nll("f32"), nll("bf16"));
    let rel = (f32_nll - bf16_nll).abs() / f32_nll;
    assert!(rel > 0.0 && rel < 1e-2, "f32 {f32_nll} bf16 {bf16_nll}");
    let (ok, _, err) = edgetune(&["perplexity", "x.gguf", "--data", "y", "--compute", "fp16"]);
    assert!(!ok && err.contains("fp16"), "{err}");
}
