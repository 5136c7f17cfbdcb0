//! Does encoding stay linear on long uniform inputs (no regex that backtracks without end)?
//! Generous bounds only; the speed itself is measured by `cargo bench --bench tokenizer`.

use edgetune::gguf::GgufFile;
use edgetune::tokenizer::Tokenizer;
use std::path::PathBuf;
use std::time::Instant;

#[test]
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
