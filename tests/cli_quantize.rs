//! Does the `edgetune` binary do what the command-line contract says, on the real model?
//! `inspect` (text, --json, --npy) and `quantize` (nf4 with and without double quant, q8_0, f16),
//! checked by an independent reader (gguf-py + numpy, scripts/check_quantized.py), and bad input.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

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

fn python() -> PathBuf {
    let p = std::env::var_os("EDGETUNE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join(".venv/bin/python"));
    assert!(
        p.exists(),
        "{} is missing: run scripts/setup-python.sh (or set EDGETUNE_PYTHON)",
        p.display()
    );
    p
}

fn edgetune(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_edgetune"))
        .args(args)
        .output()
        .expect("run edgetune")
}

fn ok(out: Output, what: &str) -> String {
    assert!(
        out.status.success(),
        "{what} failed ({}):\nstdout: {}\nstderr: {}",
        out.status,
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("utf-8 output")
}

fn err(out: Output, what: &str) -> String {
    assert!(!out.status.success(), "{what} should fail but succeeded");
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn s(p: &Path) -> &str {
    p.to_str().expect("utf-8 path")
}

#[test]
fn inspect_lists_every_tensor_and_the_memory_estimate() {
    let model = smollm2();
    let text = ok(edgetune(&["inspect", s(&model)]), "inspect");
    assert!(
        text.contains("GGUF v3, 33 metadata keys, 272 tensors"),
        "{text}"
    );
    assert!(text.contains("memory estimate"), "{text}");
    assert!(text.contains("blk.29.ffn_down.weight"), "{text}");

    let json: serde_json::Value = serde_json::from_str(&ok(
        edgetune(&["inspect", s(&model), "--json"]),
        "inspect --json",
    ))
    .unwrap();
    let tensors = json["tensors"].as_array().unwrap();
    assert_eq!(tensors.len(), 272);
    assert_eq!(json["data_offset"], 1785664);
    assert_eq!(json["metadata"]["llama.block_count"], 30);
    let q = tensors
        .iter()
        .find(|t| t["name"] == "blk.0.attn_q.weight")
        .unwrap();
    assert_eq!(q["type"], "Q4_1");
    assert_eq!(q["shape"], serde_json::json!([576, 576]));
    assert_eq!(q["bytes"], 576 * 576 / 32 * 20);
    let total: u64 = json["memory"]["weight_bytes"].as_u64().unwrap();
    let sum: u64 = tensors.iter().map(|t| t["bytes"].as_u64().unwrap()).sum();
    assert_eq!(total, sum);
}

#[test]
fn quantized_files_pass_the_independent_check() {
    let model = smollm2();
    let dir = tempfile::tempdir().unwrap();
    let cases: &[(&str, &[&str])] = &[
        ("nf4-dq.gguf", &["--type", "nf4"]),
        (
            "nf4-128.gguf",
            &["--type", "nf4", "--no-double-quant", "--block-size", "128"],
        ),
        ("q8_0.gguf", &["--type", "q8_0", "--embeddings", "same"]),
        ("f16.gguf", &["--type", "f16"]),
    ];
    for (name, extra) in cases {
        let out = dir.path().join(name);
        let mut args = vec!["quantize", s(&model), "-o", s(&out)];
        args.extend_from_slice(extra);
        let summary = ok(edgetune(&args), &format!("quantize {extra:?}"));
        assert!(summary.contains("bits/weight"), "{summary}");
        // Dump two NF4 weights with inspect --npy so the checker compares our decoding with its own.
        let npy_dir = dir.path().join(format!("{name}.npy"));
        std::fs::create_dir_all(&npy_dir).unwrap();
        if name.starts_with("nf4") {
            for t in ["blk.0.attn_q.weight", "blk.7.ffn_down.weight"] {
                let npy = npy_dir.join(format!("{t}.npy"));
                ok(
                    edgetune(&["inspect", s(&out), "--tensor", t, "--npy", s(&npy)]),
                    "inspect --npy",
                );
            }
        }
        let check = Command::new(python())
            .arg(root().join("scripts/check_quantized.py"))
            .args([s(&model), s(&out), "--npy-dir", s(&npy_dir)])
            .output()
            .expect("run python");
        ok(check, &format!("check_quantized.py on {name}"));
    }
}

#[test]
fn bad_input_gives_clear_errors_and_no_output() {
    let model = smollm2();
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("out.gguf");
    let o = s(&out);
    let not_gguf = root().join("Cargo.toml");
    let cases: &[(&[&str], &str)] = &[
        (
            &["quantize", "/nonexistent/model.gguf", "-o", o],
            "/nonexistent/model.gguf",
        ),
        (
            &["quantize", s(&model), "-o", o, "--type", "q5_k"],
            "unknown target type 'q5_k'",
        ),
        (
            &["quantize", s(&model), "-o", o, "--block-size", "48"],
            "48",
        ),
        (
            &["quantize", s(&model), "-o", o, "--embeddings", "zip"],
            "unknown embeddings policy 'zip'",
        ),
        (
            &["inspect", s(&model), "--tensor", "nope", "--npy", o],
            "no tensor named 'nope'",
        ),
        (&["inspect", s(&not_gguf)], "Cargo.toml"),
    ];
    for (args, needle) in cases {
        let e = err(edgetune(args), &format!("{args:?}"));
        assert!(
            e.contains(needle),
            "{args:?}: stderr should mention {needle:?}: {e}"
        );
        assert!(!e.contains("panicked"), "{args:?} panicked: {e}");
        assert!(!out.exists(), "{args:?} left an output file behind");
    }
}
