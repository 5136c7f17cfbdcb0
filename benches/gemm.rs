//! GEMM throughput of the CPU backend at SmolLM2-135M's linear shapes (m = 256 tokens), with 1
//! and 2 threads, against the machine's f32 ceiling measured in the same run with the
//! `matrixmultiply` crate (2 threads: two independent halves of the product on two threads).
//! Throughput is reported in elements/s where one element is one flop (2·m·n·k per product).
//!
//! Groups: `f32_gemm` (dense `x·Wᵀ`), `bf16_gemm` (the same with `Compute::Bf16`: bf16 inputs,
//! f32 accumulation), `ceiling` (matrixmultiply), `q4_1_forward` / `q4_1_backward` (linear layers
//! through Q4_1 weights in the real block layout); then a best-of-N summary table with f32 and
//! bf16 side by side and the ratios to the f32 ceiling (`cargo bench --bench gemm -- summary`
//! prints only the table). `skinny_*`: the six products of a rank-8 LoRA step (`cargo bench
//! --bench gemm -- skinny`).

use criterion::{criterion_group, BenchmarkId, Criterion, Throughput};
use edgetune::backend::cpu::{CpuBackend, GemmOp};
use edgetune::backend::{Backend, Compute, LinearWeight};
use edgetune::gguf::GgmlType;
use edgetune::weights::WeightData;
use std::time::{Duration, Instant};

const M: usize = 256;
/// (n_in, n_out) of SmolLM2-135M's linear layers: q/o, k/v, gate/up, down, output (vocab).
const SHAPES: [(usize, usize); 5] = [
    (576, 576),
    (576, 192),
    (576, 1536),
    (1536, 576),
    (576, 49152),
];
const THREADS: [usize; 2] = [1, 2];

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

fn name(n_in: usize, n_out: usize) -> String {
    format!("{n_in}x{n_out}")
}

fn configure<'a>(
    c: &'a mut Criterion,
    group: &str,
    n_in: usize,
    n_out: usize,
) -> criterion::BenchmarkGroup<'a, criterion::measurement::WallTime> {
    let mut g = c.benchmark_group(group);
    let big = n_out > 10_000;
    g.sample_size(10)
        .warm_up_time(Duration::from_millis(if big { 500 } else { 300 }))
        .measurement_time(Duration::from_secs(if big { 4 } else { 2 }))
        .throughput(Throughput::Elements((2 * M * n_in * n_out) as u64));
    g
}

/// A backend per thread count with `compute`.
fn backends(compute: Compute) -> Vec<CpuBackend> {
    THREADS
        .iter()
        .map(|&t| CpuBackend::new(t).expect("backend").with_compute(compute))
        .collect()
}

fn f32_gemm(c: &mut Criterion) {
    dense_gemm(c, Compute::F32);
}

fn bf16_gemm(c: &mut Criterion) {
    dense_gemm(c, Compute::Bf16);
}

fn dense_gemm(c: &mut Criterion, compute: Compute) {
    let backends = backends(compute);
    for (n_in, n_out) in SHAPES {
        let x = data(M * n_in, 1);
        let w = data(n_out * n_in, 2);
        let mut y = vec![0f32; M * n_out];
        let mut g = configure(c, &format!("{compute}_gemm"), n_in, n_out);
        for be in &backends {
            g.bench_function(
                BenchmarkId::new(format!("ours_t{}", be.threads()), name(n_in, n_out)),
                |b| b.iter(|| be.gemm_nt(&x, &w, &mut y, M, n_out, n_in, 0.0)),
            );
        }
        g.finish();
    }
}

/// `y = x·Wᵀ` with matrixmultiply on `threads` std threads, each owning a contiguous range of W's
/// rows (columns of y).
fn mm_gemm_nt(x: &[f32], w: &[f32], y: &mut [f32], n_in: usize, n_out: usize, threads: usize) {
    let chunk = n_out.div_ceil(threads);
    let run = |j0: usize, y: &mut [f32]| {
        let nc = chunk.min(n_out - j0);
        // SAFETY: x is [M, n_in] (row stride n_in), W's rows j0..j0+nc read transposed (row
        // stride 1, column stride n_in), y's columns j0..j0+nc of [M, n_out] (row stride n_out);
        // every index stays inside the slices.
        unsafe {
            matrixmultiply::sgemm(
                M,
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

fn ceiling(c: &mut Criterion) {
    for (n_in, n_out) in SHAPES {
        let x = data(M * n_in, 1);
        let w = data(n_out * n_in, 2);
        let mut y = vec![0f32; M * n_out];
        let mut g = configure(c, "ceiling", n_in, n_out);
        for t in THREADS {
            g.bench_function(
                BenchmarkId::new(format!("matrixmultiply_t{t}"), name(n_in, n_out)),
                |b| b.iter(|| mm_gemm_nt(&x, &w, &mut y, n_in, n_out, t)),
            );
        }
        g.finish();
    }
}

/// Linear layers through a weight stored as `ty` (random data in the real block layout).
fn quantized(c: &mut Criterion, ty: GgmlType, quantize: fn(&[f32]) -> Vec<u8>) {
    let backends = backends(Compute::F32);
    for (n_in, n_out) in SHAPES {
        let bytes = quantize(&data(n_out * n_in, 2));
        let w = LinearWeight {
            data: WeightData::Ggml { ty, bytes: &bytes },
            n_in,
            n_out,
        };
        let x = data(M * n_in, 1);
        let dy = data(M * n_out, 3);
        let mut y = vec![0f32; M * n_out];
        let mut dx = vec![0f32; M * n_in];
        let mut g = configure(
            c,
            &format!("{}_forward", ty.name().to_lowercase()),
            n_in,
            n_out,
        );
        for be in &backends {
            g.bench_function(
                BenchmarkId::new(format!("ours_t{}", be.threads()), name(n_in, n_out)),
                |b| b.iter(|| be.linear_forward(&x, M, &w, &mut y).expect("forward")),
            );
        }
        g.finish();
        let mut g = configure(
            c,
            &format!("{}_backward", ty.name().to_lowercase()),
            n_in,
            n_out,
        );
        for be in &backends {
            g.bench_function(
                BenchmarkId::new(format!("ours_t{}", be.threads()), name(n_in, n_out)),
                |b| {
                    b.iter(|| {
                        be.linear_backward_input(&dy, M, &w, &mut dx)
                            .expect("backward")
                    })
                },
            );
        }
        g.finish();
    }
}

/// Q4_1 blocks in the real layout (f16 scale, f16 min, 16 bytes of nibbles) made from `w`:
/// per block, `d = (max - min) / 15`, codes rounded (ggml has no Q4_1 encoder in this crate).
fn q4_1(w: &[f32]) -> Vec<u8> {
    let mut out = Vec::with_capacity(w.len() / 32 * 20);
    for block in w.chunks_exact(32) {
        let (lo, hi) = block
            .iter()
            .fold((f32::MAX, f32::MIN), |(l, h), &v| (l.min(v), h.max(v)));
        let d = (hi - lo) / 15.0;
        let inv = if d > 0.0 { 1.0 / d } else { 0.0 };
        out.extend(half::f16::from_f32(d).to_le_bytes());
        out.extend(half::f16::from_f32(lo).to_le_bytes());
        let code = |v: f32| (((v - lo) * inv).round() as u8).min(15);
        out.extend((0..16).map(|i| code(block[i]) | (code(block[i + 16]) << 4)));
    }
    out
}

fn q4_1_linear(c: &mut Criterion) {
    quantized(c, GgmlType::Q4_1, q4_1);
}

/// LoRA rank for the skinny products.
const RANK: usize = 8;

/// The six products of a rank-`RANK` LoRA step on a `n_in -> n_out` layer (src/adapters/lora.rs):
/// `(name, op, [m, n, k])`.
fn lora_products(n_in: usize, n_out: usize) -> [(&'static str, GemmOp, [usize; 3]); 6] {
    let r = RANK;
    [
        ("h=x.At", GemmOp::Nt, [M, r, n_in]),
        ("y+=h.Bt", GemmOp::Nt, [M, n_out, r]),
        ("dB=dyt.h", GemmOp::Tn, [n_out, r, M]),
        ("g=dy.B", GemmOp::Nn, [M, r, n_out]),
        ("dA=gt.x", GemmOp::Tn, [r, n_in, M]),
        ("dx+=g.A", GemmOp::Nn, [M, n_in, r]),
    ]
}

/// LoRA's skinny products (rank 8, m = 256) at the q (576 -> 576) and k (576 -> 192) shapes, f32.
fn skinny(c: &mut Criterion) {
    let backends = backends(Compute::F32);
    for (n_in, n_out) in [(576, 576), (576, 192)] {
        let mut g = c.benchmark_group(format!("skinny_{}", name(n_in, n_out)));
        g.sample_size(20)
            .warm_up_time(Duration::from_millis(200))
            .measurement_time(Duration::from_secs(1));
        for (what, op, [m, n, k]) in lora_products(n_in, n_out) {
            let (a, b) = (data(m * k, 1), data(n * k, 2));
            let mut out = data(m * n, 3);
            g.throughput(Throughput::Elements((2 * m * n * k) as u64));
            for be in &backends {
                g.bench_function(
                    BenchmarkId::new(format!("ours_t{}", be.threads()), what),
                    |bch| {
                        bch.iter(|| {
                            be.gemm(op, &a, &b, &mut out, [m, n, k], 1.0)
                                .expect("sizes")
                        })
                    },
                );
            }
        }
        g.finish();
    }
}

criterion_group!(benches, f32_gemm, bf16_gemm, ceiling, q4_1_linear, skinny);

/// Best-of-`reps` GFLOP/s of `f` (the best run is the one least disturbed by other processes,
/// which matters on shared machines where medians measure the neighbours).
fn best_gflops(flop: f64, reps: usize, mut f: impl FnMut()) -> f64 {
    f();
    let best = (0..reps)
        .map(|_| {
            let t = Instant::now();
            f();
            t.elapsed().as_secs_f64()
        })
        .fold(f64::MAX, f64::min);
    flop / best / 1e9
}

/// A table of best-of-N GFLOP/s, f32 and bf16 compute side by side, and the ratio of each of
/// ours to the f32 ceiling at the same thread count, printed after criterion's runs (not in
/// `--test` mode). Run it alone with `cargo bench --bench gemm -- summary`.
fn summary() {
    println!(
        "\nsummary: best-of-N GFLOP/s, m = {M}; mm = matrixmultiply (f32 ceiling); fw/bw = Q4_1 linear \
         forward / backward-input; ratios to mm"
    );
    println!(
        "{:>12} {:>3} {:>7} | {:>7} {:>7} {:>7} | {:>7} {:>7} {:>7} | {:>5} {:>5} {:>5}",
        "n_in x n_out",
        "thr",
        "mm",
        "f32",
        "fw",
        "bw",
        "bf16",
        "fw16",
        "bw16",
        "f32",
        "bf16",
        "fw16"
    );
    for (n_in, n_out) in SHAPES {
        let x = data(M * n_in, 1);
        let w = data(n_out * n_in, 2);
        let dy = data(M * n_out, 3);
        let bytes = q4_1(&w);
        let lw = LinearWeight {
            data: WeightData::Ggml {
                ty: GgmlType::Q4_1,
                bytes: &bytes,
            },
            n_in,
            n_out,
        };
        let (mut y, mut dx) = (vec![0f32; M * n_out], vec![0f32; M * n_in]);
        let flop = (2 * M * n_in * n_out) as f64;
        let reps = if n_out > 10_000 { 4 } else { 15 };
        for t in THREADS {
            let mm = best_gflops(flop, reps, || mm_gemm_nt(&x, &w, &mut y, n_in, n_out, t));
            let mut row = Vec::new();
            for compute in [Compute::F32, Compute::Bf16] {
                let be = CpuBackend::new(t).expect("backend").with_compute(compute);
                row.push(best_gflops(flop, reps, || {
                    be.gemm_nt(&x, &w, &mut y, M, n_out, n_in, 0.0)
                }));
                row.push(best_gflops(flop, reps, || {
                    be.linear_forward(&x, M, &lw, &mut y).expect("forward")
                }));
                row.push(best_gflops(flop, reps, || {
                    be.linear_backward_input(&dy, M, &lw, &mut dx)
                        .expect("backward")
                }));
            }
            println!(
                "{:>12} {t:>3} {mm:>7.1} | {:>7.1} {:>7.1} {:>7.1} | {:>7.1} {:>7.1} {:>7.1} | {:>5.2} {:>5.2} {:>5.2}",
                name(n_in, n_out),
                row[0],
                row[1],
                row[2],
                row[3],
                row[4],
                row[5],
                row[0] / mm,
                row[3] / mm,
                row[4] / mm
            );
        }
    }
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if !args.iter().any(|a| a == "summary") {
        benches();
        Criterion::default().configure_from_args().final_summary();
    }
    // `cargo bench` passes --bench; `cargo test` passes nothing (criterion's test mode: each
    // bench once) and gets no summary.
    // A name filter (`-- skinny`) runs only the matching criterion benches.
    let filtered = args[1..]
        .iter()
        .any(|a| !a.starts_with('-') && a != "summary");
    if args.iter().any(|a| a == "summary") || (args.iter().any(|a| a == "--bench") && !filtered) {
        summary();
    }
}
