//! Does `edgetune tokenize --jsonl` give Hugging Face's ids for every corpus text, for both real
//! tokenizers (byte-level BPE and SentencePiece), and reject bad lines with their line number?

use std::path::PathBuf;
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn model(file: &str) -> PathBuf {
    let p = root().join("models").join(file);
    assert!(
        p.exists(),
        "{} is missing: run scripts/fetch-models.sh",
        p.display()
    );
    p
}

fn tokenize_jsonl(model: &PathBuf, jsonl: &PathBuf) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_edgetune"))
        .arg("tokenize")
        .arg(model)
        .arg("--jsonl")
        .arg(jsonl)
        .output()
        .expect("run edgetune")
}

#[test]
fn jsonl_ids_equal_hugging_face_for_the_whole_corpus() {
    let corpus = root().join("tests/fixtures/tokenizer/corpus.jsonl");
    for (file, fixture) in [
        ("SmolLM2-135M-Instruct.Q4_1.gguf", "smollm2.ids.jsonl"),
        ("gemma-3-270m-q4_k_m.gguf", "gemma3.ids.jsonl"),
    ] {
        let out = tokenize_jsonl(&model(file), &corpus);
        assert!(
            out.status.success(),
            "{file}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let ours: Vec<serde_json::Value> = String::from_utf8(out.stdout)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap()["ids"].clone())
            .collect();
        let want: Vec<serde_json::Value> =
            std::fs::read_to_string(root().join("tests/fixtures/tokenizer").join(fixture))
                .unwrap()
                .lines()
                .map(|l| serde_json::from_str(l).unwrap())
                .collect();
        assert_eq!(
            ours.len(),
            want.len(),
            "{file}: one output line per input line"
        );
        let bad: Vec<usize> = (0..want.len()).filter(|&i| ours[i] != want[i]).collect();
        assert!(
            bad.is_empty(),
            "{file}: {} lines differ from HF, first at line {}",
            bad.len(),
            bad[0] + 1
        );
    }
}

#[test]
fn bad_jsonl_lines_are_reported_with_their_number() {
    let dir = tempfile::tempdir().unwrap();
    let smol = model("SmolLM2-135M-Instruct.Q4_1.gguf");
    let cases: &[(&[u8], &str)] = &[
        (
            b"{\"text\": \"ok\"}\n{\"txt\": \"no\"}\n",
            ":2: expected a JSON object with a \"text\" string",
        ),
        (b"{\"text\": \"ok\"}\nnot json\n", ":2: invalid JSON"),
        (b"{\"text\": \"\xff\xfe\"}\n", ":1: invalid UTF-8"),
        (b"\n", ":1: empty line"),
    ];
    for (i, (content, needle)) in cases.iter().enumerate() {
        let p = dir.path().join(format!("bad{i}.jsonl"));
        std::fs::write(&p, content).unwrap();
        let out = tokenize_jsonl(&smol, &p);
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "case {i} should fail");
        assert!(
            err.contains(needle),
            "case {i}: {err:?} should contain {needle:?}"
        );
    }
}
