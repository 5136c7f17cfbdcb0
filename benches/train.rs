//! Training throughput on workload W (issue 4): SmolLM2-135M-Instruct, LoRA r=8 alpha=16 on
//! q,k,v,o (and on all linear layers), one 256-token sequence a step, batch 1, 2 threads, f32.
//! One iteration = one optimizer step through `train::session::Session` (forward, backward, AdamW),
//! exactly what `edgetune train` runs.
//!
//! `cargo bench --bench train` prints criterion's timings and then a summary: median step time,
//! tokens/s and the process's anonymous RSS. `EDGETUNE_BENCH_MODEL=PATH` trains on another GGUF
//! (e.g. an NF4 copy from `edgetune quantize`). The side-by-side comparison with PyTorch + PEFT is
//! `scripts/bench/train_w.py`.

use criterion::{criterion_group, Criterion};
use edgetune::adapters::parse_targets;
use edgetune::backend::cpu::CpuBackend;
use edgetune::gguf::GgufFile;
use edgetune::model::Llama;
use edgetune::optim::ScheduleKind;
use edgetune::train::model::AdapterSpec;
use edgetune::train::rss_anon_bytes;
use edgetune::train::session::{AdapterInit, Session, SessionConfig};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SEQ: usize = 256;
const THREADS: usize = 2;
const CASES: [(&str, &str); 2] = [
    ("qkvo", "q_proj,k_proj,v_proj,o_proj"),
    ("all-linear", "all-linear"),
];

fn model_path() -> Option<PathBuf> {
    let p = match std::env::var_os("EDGETUNE_BENCH_MODEL") {
        Some(p) => PathBuf::from(p),
        None => {
            Path::new(env!("CARGO_MANIFEST_DIR")).join("models/SmolLM2-135M-Instruct.Q4_1.gguf")
        }
    };
    if p.is_file() {
        Some(p)
    } else {
        eprintln!(
            "train bench skipped: {} is missing (run scripts/fetch-models.sh)",
            p.display()
        );
        None
    }
}

/// 8 pre-tokenized sequences of `SEQ` deterministic ids (the first 100 ids are avoided).
fn write_data(dir: &Path, n_vocab: usize) -> PathBuf {
    let mut s = 0x2545_f491u32;
    let mut text = String::new();
    for _ in 0..8 {
        let ids: Vec<u32> = (0..SEQ)
            .map(|_| {
                s ^= s << 13;
                s ^= s >> 17;
                s ^= s << 5;
                (100 + s as usize % (n_vocab - 100)) as u32
            })
            .collect();
        text += &format!("{{\"input_ids\": {ids:?}}}\n");
    }
    let path = dir.join("w.jsonl");
    std::fs::write(&path, text).expect("writing bench data");
    path
}

fn session<'w>(file: &'w GgufFile, data: &Path, out: &Path, targets: &str) -> Session<'w> {
    let model =
        Llama::new(file, Arc::new(CpuBackend::new(THREADS).expect("backend"))).expect("model");
    let mut cfg = SessionConfig::new(out);
    cfg.adapter = AdapterInit::New(AdapterSpec {
        targets: Some(parse_targets(targets).expect("targets")),
        rank: 8,
        alpha: 16.0,
        ..AdapterSpec::default()
    });
    cfg.steps = Some(1_000_000);
    cfg.seq_len = SEQ;
    cfg.shuffle = false;
    cfg.train.schedule = ScheduleKind::Constant;
    Session::new(file, model, data, cfg).expect("session")
}

/// The model file, a temp dir and the data file in it.
fn setup() -> Option<(PathBuf, GgufFile, tempfile::TempDir, PathBuf)> {
    let path = model_path()?;
    let file = GgufFile::open(&path).expect("model file");
    let tmp = tempfile::tempdir().expect("tempdir");
    let n_vocab = Llama::new(&file, Arc::new(CpuBackend::new(1).expect("backend")))
        .expect("model")
        .config
        .n_vocab;
    let data = write_data(tmp.path(), n_vocab);
    Some((path, file, tmp, data))
}

fn bench_train(c: &mut Criterion) {
    let Some((_, file, tmp, data)) = setup() else {
        return;
    };
    let mut g = c.benchmark_group("train_w");
    g.sample_size(10).measurement_time(Duration::from_secs(20));
    for (name, targets) in CASES {
        let mut s = session(&file, &data, &tmp.path().join(name), targets);
        g.bench_function(format!("lora_r8_{name}_seq{SEQ}_t{THREADS}"), |b| {
            b.iter(|| s.step().expect("step"))
        });
    }
    g.finish();
}

/// Median step time of `n` steps after 2 warm-up steps, as tokens/s, with the RSS after them.
fn summary() {
    let Some((path, file, tmp, data)) = setup() else {
        return;
    };
    println!(
        "\nworkload W: {} , seq {SEQ}, batch 1, {THREADS} threads",
        path.display()
    );
    for (name, targets) in CASES {
        let mut s = session(&file, &data, &tmp.path().join(name), targets);
        let mut times: Vec<f64> = (0..8)
            .filter_map(|i| {
                let t = Instant::now();
                s.step().expect("step");
                (i >= 2).then(|| t.elapsed().as_secs_f64())
            })
            .collect();
        times.sort_by(f64::total_cmp);
        let median = times[times.len() / 2];
        println!(
            "  LoRA r8 {name:>10}: median step {:.1} ms = {:.1} tokens/s, RssAnon {:.1} MiB",
            median * 1e3,
            SEQ as f64 / median,
            rss_anon_bytes().unwrap_or(0) as f64 / (1 << 20) as f64
        );
    }
}

criterion_group!(benches, bench_train);

fn main() {
    let summary_only = std::env::args().any(|a| a == "summary");
    // `cargo bench` passes --bench; `cargo test` passes nothing (criterion's test mode: each
    // bench once) and gets no summary.
    let benching = std::env::args().any(|a| a == "--bench");
    if !summary_only {
        benches();
        Criterion::default().configure_from_args().final_summary();
    }
    if benching || summary_only {
        summary();
    }
}
