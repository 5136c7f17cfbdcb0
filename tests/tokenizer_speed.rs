//! How fast are tokenizer loading, encoding and decoding? A measurement, not a check of numbers
//! against a reference: it asserts only generous bounds that catch pathological slowdowns
//! (a quadratic loader, a regex that backtracks without end).
//!
//! Run: `cargo test --release --test tokenizer_speed -- --ignored --nocapture`

use edgetune::gguf::GgufFile;
use edgetune::tokenizer::Tokenizer;
use std::path::PathBuf;
use std::time::Instant;

fn corpus() -> Vec<String> {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/tokenizer/corpus.jsonl");
    std::fs::read_to_string(&p)
        .expect("corpus fixture")
        .lines()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("JSON");
            v["text"].as_str().expect("text").to_owned()
        })
        .collect()
}

/// CPU time of this thread in seconds (Linux `schedstat`), so a busy machine does not inflate
/// the numbers; `None` elsewhere.
fn thread_cpu_seconds() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/thread-self/schedstat").ok()?;
    let ns: f64 = s.split_whitespace().next()?.parse().ok()?;
    Some(ns / 1e9)
}

#[test]
#[ignore = "timing; run with --release --ignored --nocapture"]
fn load_encode_decode_speed() {
    let texts = corpus();
    let bytes: usize = texts.iter().map(String::len).sum();
    for file in [
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "gemma-3-270m-q4_k_m.gguf",
    ] {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("models")
            .join(file);
        let t0 = Instant::now();
        let gguf = GgufFile::open(&p).expect("open");
        let opened = t0.elapsed();
        // The best of a few builds: the machine may be shared.
        let mut built = std::time::Duration::MAX;
        let mut built_cpu = f64::MAX;
        let mut tok = None;
        for _ in 0..5 {
            let (t1, c1) = (Instant::now(), thread_cpu_seconds());
            tok = Some(Tokenizer::from_gguf(gguf.header()).expect("tokenizer"));
            built = built.min(t1.elapsed());
            if let (Some(a), Some(b)) = (c1, thread_cpu_seconds()) {
                built_cpu = built_cpu.min(b - a);
            }
        }
        let tok = tok.expect("built");

        let rounds = 20;
        let (t2, c2) = (Instant::now(), thread_cpu_seconds());
        let mut n_tokens = 0usize;
        let mut all = Vec::new();
        for r in 0..rounds {
            for t in &texts {
                let ids = tok.encode(t, false).expect("encode");
                n_tokens += ids.len();
                if r == 0 {
                    all.push(ids);
                }
            }
        }
        let enc_wall = t2.elapsed().as_secs_f64();
        let enc = match (c2, thread_cpu_seconds()) {
            (Some(a), Some(b)) => b - a,
            _ => enc_wall,
        };
        let (t3, c3) = (Instant::now(), thread_cpu_seconds());
        for _ in 0..rounds {
            for ids in &all {
                tok.decode(ids).expect("decode");
            }
        }
        let dec = match (c3, thread_cpu_seconds()) {
            (Some(a), Some(b)) => b - a,
            _ => t3.elapsed().as_secs_f64(),
        };
        eprintln!(
            "{file}: open {:.0} ms, build tokenizer ({} tokens) {:.0} ms wall, {:.0} ms CPU; \
             per CPU second: encode {:.2} M tokens ({:.1} MB), decode {:.2} M tokens",
            opened.as_secs_f64() * 1e3,
            tok.vocab_size(),
            built.as_secs_f64() * 1e3,
            built_cpu * 1e3,
            n_tokens as f64 / enc / 1e6,
            (bytes * rounds) as f64 / enc / 1e6,
            n_tokens as f64 / dec / 1e6,
        );
        assert!(
            built.as_secs_f64() < 10.0,
            "{file}: building took {built:?}"
        );
    }
}

#[test]
#[ignore = "timing; run with --release --ignored --nocapture"]
fn long_uniform_inputs_stay_linear() {
    let cases: [(&str, String); 5] = [
        ("spaces then a letter", " ".repeat(200_000) + "a"),
        ("one letter", "a".repeat(200_000)),
        ("digits", "7".repeat(200_000)),
        ("emoji", "👍🏽".repeat(50_000)),
        ("newlines and tabs", "\n\t ".repeat(70_000)),
    ];
    for file in [
        "SmolLM2-135M-Instruct.Q4_1.gguf",
        "gemma-3-270m-q4_k_m.gguf",
    ] {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("models")
            .join(file);
        let gguf = GgufFile::open(&p).expect("open");
        let tok = Tokenizer::from_gguf(gguf.header()).expect("tokenizer");
        for (what, text) in &cases {
            let t = Instant::now();
            let n = tok.encode(text, false).expect("encode").len();
            let secs = t.elapsed().as_secs_f64();
            eprintln!(
                "{file}: {what}: {} bytes -> {n} tokens in {:.0} ms",
                text.len(),
                secs * 1e3
            );
            assert!(secs < 20.0, "{file}: {what} took {secs:.1} s");
        }
    }
}
