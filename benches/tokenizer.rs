//! Tokenizer speed: building from GGUF metadata (SmolLM2 49k vocab, Gemma 3 262k vocab), encoding and
//! decoding the parity corpus (tests/fixtures/tokenizer/corpus.jsonl).

use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use edgetune::gguf::GgufFile;
use edgetune::tokenizer::Tokenizer;
use std::path::PathBuf;

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

fn bench(c: &mut Criterion) {
    let texts = corpus();
    for (label, file) in [
        ("smollm2", "SmolLM2-135M-Instruct.Q4_1.gguf"),
        ("gemma3", "gemma-3-270m-q4_k_m.gguf"),
    ] {
        let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("models")
            .join(file);
        if !p.exists() {
            eprintln!("{} missing: run scripts/fetch-models.sh", p.display());
            return;
        }
        let gguf = GgufFile::open(&p).expect("open");
        let mut g = c.benchmark_group(format!("tokenizer/{label}"));
        g.sample_size(10);
        g.bench_function("build", |b| {
            b.iter(|| Tokenizer::from_gguf(gguf.header()).expect("tokenizer"))
        });
        let tok = Tokenizer::from_gguf(gguf.header()).expect("tokenizer");
        let ids: Vec<Vec<u32>> = texts
            .iter()
            .map(|t| tok.encode(t, false).expect("encode"))
            .collect();
        let n_tokens: usize = ids.iter().map(Vec::len).sum();
        g.throughput(Throughput::Elements(n_tokens as u64));
        g.bench_function("encode corpus", |b| {
            b.iter(|| {
                texts
                    .iter()
                    .map(|t| tok.encode(t, false).expect("encode").len())
                    .sum::<usize>()
            })
        });
        g.bench_function("decode corpus", |b| {
            b.iter(|| {
                ids.iter()
                    .map(|i| tok.decode(i).expect("decode").len())
                    .sum::<usize>()
            })
        });
        g.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
