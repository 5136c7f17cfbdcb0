//! Whole-model throughput of SmolLM2-135M (Q4_1) on the CPU backend, at 1 and 2 threads, in f32
//! and bf16 compute, against GEMM ceilings measured in the same run at m = 256 on the model's
//! linear shapes, weighted by how often each shape occurs: f32 rows against `matrixmultiply`
//! (as `benches/gemm.rs`), bf16 rows against our own dense bf16 GEMM (no other bf16 GEMM here).
//!
//! Environment: `EDGETUNE_BENCH_MODEL=PATH` benchmarks another Llama-family GGUF (e.g. NF4 and F32
//! copies made by `edgetune quantize`); `EDGETUNE_BENCH_COMPUTE=f32|bf16|f32,bf16` (default both);
//! `EDGETUNE_BENCH_ONLY=train,gen,...` keeps the summary rows whose names contain one of the words;
//! `EDGETUNE_BENCH_THREADS=1,2`; `EDGETUNE_BENCH_REPS=N` (default 5).
//!
//! Measured (one 256-token sequence):
//! - `loss`: forward and the fused LM-head cross-entropy over 255 predicted rows (the NLL path),
//! - `last`: forward and the logits of the last position only (prompt processing),
//! - `train`: forward + backward to the input embeddings (what training runs; no weight grads),
//! - `loss chunk256` (summary only): `loss` with `lm_chunk_rows = 256` (one LM-head product),
//! - `gen`: generation, one token at a time (`m = 1`) through the KV cache after a 32-token prompt.
//!
//! FLOPs are counted as computed: `2·m·n·k` for every linear (LM head included, over the rows it
//! runs on) and for attention's `q·kᵀ` and `p·v` over the causal (visible) keys only; backward
//! counts the input-gradient products, the LM head's backward, and attention's five products
//! (score recompute, `dp`, `dq`, `dk`, `dv`).
//!
//! `cargo bench --bench forward` runs the criterion groups and then prints the summary table
//! (medians of N timed runs); `cargo bench --bench forward -- summary` prints only the table.
//! The machine may be shared: compare medians within one run, and check `uptime`.

use criterion::{criterion_group, Criterion};
use edgetune::backend::cpu::CpuBackend;
use edgetune::backend::{Backend, Compute};
use edgetune::gguf::GgufFile;
use edgetune::model::{Batch, ForwardOptions, Input, KvCache, Llama, NoHook};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

const SEQ: usize = 256;
const THREADS: [usize; 2] = [1, 2];
const PROMPT: usize = 32;
const GEN: usize = 32;

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
            "forward bench skipped: {} is missing (run scripts/fetch-models.sh)",
            p.display()
        );
        None
    }
}

/// Deterministic token ids below `n_vocab` (avoids the first 100 special ids).
fn tokens(n: usize, n_vocab: usize) -> Vec<u32> {
    let mut s = 0x9e37_79b9u32;
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (100 + s as usize % (n_vocab - 100)) as u32
        })
        .collect()
}

fn load(file: &GgufFile, threads: usize, compute: Compute) -> Llama<'_> {
    let be = CpuBackend::new(threads)
        .expect("backend")
        .with_compute(compute);
    Llama::new(file, Arc::new(be)).expect("model")
}

/// A comma-separated list from the environment, or `default`.
fn env_list(name: &str, default: &str) -> Vec<String> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .collect()
}

fn computes() -> Vec<Compute> {
    env_list("EDGETUNE_BENCH_COMPUTE", "f32,bf16")
        .iter()
        .map(|s| s.parse().expect("EDGETUNE_BENCH_COMPUTE: f32 or bf16"))
        .collect()
}

fn thread_counts() -> Vec<usize> {
    env_list("EDGETUNE_BENCH_THREADS", "1,2")
        .iter()
        .map(|s| s.parse().expect("EDGETUNE_BENCH_THREADS: numbers"))
        .collect()
}

/// What one pass computes, in flops.
struct Flops {
    /// Linear layers of the blocks, per token.
    block_linear: f64,
    /// LM head, per row it runs on.
    head: f64,
    /// Attention `q·kᵀ` + `p·v` over a causal sequence of `t` tokens after `past` cached ones.
    attn_per_key: f64,
    n_layer: f64,
}

impl Flops {
    fn new(m: &Llama) -> Flops {
        let c = &m.config;
        let (d, qd, kvd, ff) = (c.n_embd, c.q_dim(), c.kv_dim(), c.n_ff);
        let per_token = d * qd + 2 * d * kvd + qd * d + 3 * d * ff;
        Flops {
            block_linear: 2.0 * (per_token * c.n_layer) as f64,
            head: 2.0 * (d * c.n_vocab) as f64,
            // Two products of head_dim-long dots, per head, per (query, visible key) pair.
            attn_per_key: 2.0 * 2.0 * (c.n_head * c.head_dim) as f64,
            n_layer: c.n_layer as f64,
        }
    }

    /// (query, key) pairs of `t` causal queries after `past` cached tokens.
    fn pairs(t: usize, past: usize) -> f64 {
        (0..t).map(|i| (past + i + 1) as f64).sum()
    }

    fn forward(&self, t: usize, past: usize, head_rows: usize) -> f64 {
        self.block_linear * t as f64
            + self.attn_per_key * self.n_layer * Self::pairs(t, past)
            + self.head * head_rows as f64
    }

    /// Forward with the loss, then backward to the inputs.
    fn train(&self, t: usize) -> f64 {
        let fw = self.forward(t, 0, t - 1);
        let bw = self.block_linear * t as f64
            + self.head * (t - 1) as f64
            + 2.5 * self.attn_per_key * self.n_layer * Self::pairs(t, 0);
        fw + bw
    }
}

/// The four measured workloads on one model.
fn run_loss(m: &Llama, toks: &[u32], labels: &[i32]) -> f64 {
    let f = m
        .forward(
            &Batch::single(toks),
            &ForwardOptions::inference(),
            &mut NoHook,
        )
        .expect("forward");
    f.loss(labels).expect("loss").mean()
}

fn run_last(m: &Llama, toks: &[u32]) -> f32 {
    let f = m
        .forward(
            &Batch::single(toks),
            &ForwardOptions::inference(),
            &mut NoHook,
        )
        .expect("forward");
    f.logits(&[toks.len() - 1]).expect("logits")[0]
}

fn run_train(m: &Llama, toks: &[u32], labels: &[i32]) -> f64 {
    let out = m
        .forward_backward(
            &Batch::single(toks),
            labels,
            &ForwardOptions::default(),
            None,
            &mut NoHook,
            None,
        )
        .expect("forward_backward");
    out.loss.mean()
}

/// Prefills `PROMPT` tokens, then times `GEN` single-token steps; returns their seconds.
fn run_gen(m: &Llama, toks: &[u32]) -> f64 {
    let mut cache = KvCache::new(&m.config, PROMPT + GEN).expect("cache");
    m.forward_cached(&mut cache, Input::Tokens(&toks[..PROMPT]), &mut NoHook)
        .expect("prefill");
    let t = Instant::now();
    for i in 0..GEN {
        let tok = [toks[PROMPT + i]];
        m.forward_cached(&mut cache, Input::Tokens(&tok), &mut NoHook)
            .expect("decode");
    }
    t.elapsed().as_secs_f64()
}

fn bench(c: &mut Criterion) {
    let Some(path) = model_path() else { return };
    let file = GgufFile::open(&path).expect("open");
    for (threads, compute) in THREADS
        .into_iter()
        .flat_map(|t| computes().into_iter().map(move |c| (t, c)))
    {
        let m = load(&file, threads, compute);
        let toks = tokens(SEQ, m.config.n_vocab);
        let labels: Vec<i32> = toks.iter().map(|&t| t as i32).collect();
        let mut g = c.benchmark_group(format!("smollm2_t{threads}_{compute}"));
        g.sample_size(10)
            .warm_up_time(Duration::from_millis(500))
            .measurement_time(Duration::from_secs(5));
        g.bench_function("loss_256", |b| b.iter(|| run_loss(&m, &toks, &labels)));
        g.bench_function("last_256", |b| b.iter(|| run_last(&m, &toks)));
        g.bench_function("train_256", |b| b.iter(|| run_train(&m, &toks, &labels)));
        g.bench_function("gen_32", |b| b.iter(|| run_gen(&m, &toks)));
        g.finish();
    }
}

criterion_group!(benches, bench);

// ---- the ceiling: matrixmultiply at m = 256 on SmolLM2's shapes ----

/// (n_in, n_out, occurrences per block or model) of SmolLM2-135M's linears; the LM head once.
fn shapes(m: &Llama) -> Vec<(usize, usize, f64)> {
    let c = &m.config;
    let l = c.n_layer as f64;
    vec![
        (c.n_embd, c.q_dim(), 2.0 * l), // q, o (square for SmolLM2)
        (c.n_embd, c.kv_dim(), 2.0 * l),
        (c.n_embd, c.n_ff, 2.0 * l),
        (c.n_ff, c.n_embd, l),
        (c.n_embd, c.n_vocab, 1.0),
    ]
}

fn data(n: usize, seed: u32) -> Vec<f32> {
    let mut s = seed.wrapping_mul(2654435761).wrapping_add(1);
    (0..n)
        .map(|_| {
            s ^= s << 13;
            s ^= s >> 17;
            s ^= s << 5;
            (s >> 8) as f32 / (1u32 << 23) as f32 - 1.0
        })
        .collect()
}

/// `y = x·Wᵀ` (`x[SEQ, n_in]`, `W[n_out, n_in]`) with matrixmultiply on `threads` std threads,
/// each owning a contiguous range of W's rows (as `benches/gemm.rs`).
fn mm_gemm_nt(x: &[f32], w: &[f32], y: &mut [f32], n_in: usize, n_out: usize, threads: usize) {
    let chunk = n_out.div_ceil(threads);
    let run = |j0: usize, y: &mut [f32]| {
        let nc = chunk.min(n_out - j0);
        // SAFETY: x is [SEQ, n_in] (row stride n_in), W's rows j0..j0+nc read transposed (row
        // stride 1, column stride n_in), y's columns j0..j0+nc of [SEQ, n_out] (row stride
        // n_out); every index stays inside the slices.
        unsafe {
            matrixmultiply::sgemm(
                SEQ,
                n_in,
                nc,
                1.0,
                x.as_ptr(),
                n_in as isize,
                1,
                w.as_ptr().add(j0 * n_in),
                1,
                n_in as isize,
                0.0,
                y.as_mut_ptr().add(j0),
                n_out as isize,
                1,
            )
        }
    };
    if threads == 1 {
        run(0, y);
        return;
    }
    struct Out(*mut f32);
    // SAFETY: the threads write disjoint column ranges of y and are joined before it is used.
    unsafe impl Send for Out {}
    // SAFETY: as above.
    unsafe impl Sync for Out {}
    let out = Out(y.as_mut_ptr());
    let len = y.len();
    std::thread::scope(|s| {
        for t in 0..threads {
            let (out, run) = (&out, &run);
            s.spawn(move || {
                // SAFETY: see `Out`; each thread touches only its own columns through `run`.
                let y = unsafe { std::slice::from_raw_parts_mut(out.0, len) };
                run(t * chunk, y)
            });
        }
    });
}

/// Median seconds of `reps` timed runs of `f` (after one warm-up run).
fn median_secs(reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let mut t: Vec<f64> = (0..reps)
        .map(|_| {
            let s = Instant::now();
            f();
            s.elapsed().as_secs_f64()
        })
        .collect();
    t.sort_by(f64::total_cmp);
    t[t.len() / 2]
}

/// The ceiling in GFLOP/s: total flops of one m = 256 pass through every linear shape (weighted
/// by occurrence) over the summed median times of matrixmultiply on them (f32), or of our dense
/// bf16 GEMM (bf16).
fn ceiling(m: &Llama, threads: usize, compute: Compute) -> f64 {
    let (mut flop, mut secs) = (0.0, 0.0);
    let be = CpuBackend::new(threads)
        .expect("backend")
        .with_compute(compute);
    for (n_in, n_out, count) in shapes(m) {
        let x = data(SEQ * n_in, 1);
        let w = data(n_out * n_in, 2);
        let mut y = vec![0f32; SEQ * n_out];
        let reps = if n_out > 10_000 { 5 } else { 15 };
        let s = match compute {
            Compute::F32 => median_secs(reps, || mm_gemm_nt(&x, &w, &mut y, n_in, n_out, threads)),
            Compute::Bf16 => {
                median_secs(reps, || be.gemm_nt(&x, &w, &mut y, SEQ, n_out, n_in, 0.0))
            }
        };
        flop += count * (2 * SEQ * n_in * n_out) as f64;
        secs += count * s;
    }
    flop / secs / 1e9
}

/// Medians of N runs of each workload, tokens/s, GFLOP/s and the ratio to the ceiling.
fn summary() {
    let Some(path) = model_path() else { return };
    let file = GgufFile::open(&path).expect("open");
    let reps: usize = std::env::var("EDGETUNE_BENCH_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(5)
        .max(1);
    let only = env_list("EDGETUNE_BENCH_ONLY", "");
    let keep = |name: &str| only.is_empty() || only.iter().any(|w| name.contains(w.as_str()));
    let model = path.file_name().map_or("?".into(), |n| n.to_string_lossy());
    println!("\n{model}, {SEQ}-token sequence; medians of {reps} runs; ratio = GFLOP/s / ceiling");
    println!(
        "{:>4} {:>5} {:>14} {:>10} {:>10} {:>9} {:>8} {:>7}",
        "thr", "comp", "workload", "ms", "tokens/s", "GFLOP/s", "ceiling", "ratio"
    );
    for threads in thread_counts() {
        for compute in computes() {
            summary_rows(&file, threads, compute, reps, &keep);
        }
    }
}

/// The summary rows of one thread count and compute precision.
fn summary_rows(
    file: &GgufFile,
    threads: usize,
    compute: Compute,
    reps: usize,
    keep: &dyn Fn(&str) -> bool,
) {
    let m = load(file, threads, compute);
    let fl = Flops::new(&m);
    let toks = tokens(SEQ, m.config.n_vocab);
    let labels: Vec<i32> = toks.iter().map(|&t| t as i32).collect();
    let ceil = ceiling(&m, threads, compute);
    // The same loss with the whole sequence's logits at once (W decoded once, not per
    // 64-row chunk), at the cost of a [256, n_vocab] buffer (50 MB for SmolLM2).
    let mut wide = load(file, threads, compute);
    wide.set_lm_chunk_rows(SEQ).expect("chunk rows");
    type Row<'a> = (&'static str, Box<dyn FnMut() -> f64 + 'a>, f64, usize);
    let rows: [Row; 5] = [
        (
            "loss chunk256",
            Box::new(|| {
                median_secs(reps, || {
                    run_loss(&wide, &toks, &labels);
                })
            }),
            fl.forward(SEQ, 0, SEQ - 1),
            SEQ,
        ),
        (
            "loss (fw+NLL)",
            Box::new(|| {
                median_secs(reps, || {
                    run_loss(&m, &toks, &labels);
                })
            }),
            fl.forward(SEQ, 0, SEQ - 1),
            SEQ,
        ),
        (
            "last logits",
            Box::new(|| {
                median_secs(reps, || {
                    run_last(&m, &toks);
                })
            }),
            fl.forward(SEQ, 0, 1),
            SEQ,
        ),
        (
            "fw+bw (input)",
            Box::new(|| {
                median_secs(reps, || {
                    run_train(&m, &toks, &labels);
                })
            }),
            fl.train(SEQ),
            SEQ,
        ),
        (
            "generate m=1",
            Box::new(|| {
                let mut t: Vec<f64> = (0..reps.max(3)).map(|_| run_gen(&m, &toks)).collect();
                t.sort_by(f64::total_cmp);
                t[t.len() / 2]
            }),
            (0..GEN).map(|i| fl.forward(1, PROMPT + i, 1)).sum(),
            GEN,
        ),
    ];
    for (name, mut time, flop, n_tok) in rows {
        if !keep(name) {
            continue;
        }
        let secs = time();
        let gf = flop / secs / 1e9;
        println!(
            "{threads:>4} {compute:>5} {name:>14} {:>10.1} {:>10.1} {gf:>9.1} {ceil:>8.1} {:>7.3}",
            secs * 1e3,
            n_tok as f64 / secs,
            gf / ceil
        );
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let only_summary = args.iter().any(|a| a == "summary");
    if !only_summary {
        benches();
        Criterion::default().configure_from_args().final_summary();
    }
    // `cargo bench` passes --bench; `cargo test` passes nothing (criterion's test mode: each
    // bench once) and gets no summary.
    if args.iter().any(|a| a == "--bench" || a == "summary") {
        summary();
    }
}
