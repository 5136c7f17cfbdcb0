//! NF4 throughput, scalar and each SIMD level side by side, in GB/s of f32 (4 bytes per element):
//! decode (the training hot path: every forward and backward pass dequantizes the frozen
//! weights) and encode with double quantization (done once per model).
//!
//! `cargo bench --bench nf4`

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use edgetune::cpu::available_levels;
use edgetune::quant::nf4::{self, Nf4Params};
use std::hint::black_box;
use std::time::Duration;

/// 1 Mi elements: a 1024 x 1024 weight, 4 MiB of f32, 0.5 MiB of codes.
const N: usize = 1 << 20;

fn weights() -> Vec<f32> {
    // Deterministic, roughly normal: sum of four uniforms from an LCG, centred.
    let mut state = 0x2545_f491_4f6c_dd1du64;
    let mut uniform = move || {
        state = state
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (state >> 40) as f32 / (1u64 << 24) as f32
    };
    (0..N)
        .map(|_| (uniform() + uniform() + uniform() + uniform() - 2.0) * 0.05)
        .collect()
}

fn bench(c: &mut Criterion) {
    let x = weights();
    let params = Nf4Params::default();
    let t = nf4::quantize(&x, params).unwrap();
    let view = t.view().unwrap();
    let mut out = vec![0.0f32; N];

    let mut g = c.benchmark_group("nf4_decode");
    g.throughput(Throughput::Bytes(4 * N as u64));
    for &level in available_levels() {
        g.bench_with_input(
            BenchmarkId::from_parameter(level.name()),
            &level,
            |b, &l| b.iter(|| view.dequantize_range_at(l, 0, black_box(&mut out)).unwrap()),
        );
    }
    g.finish();

    // One 4096-wide row (elements 4096..8192), as a matmul decodes it: output stays in L1.
    let mut g = c.benchmark_group("nf4_decode_row4096");
    g.throughput(Throughput::Bytes(4 * 4096));
    for &level in available_levels() {
        g.bench_with_input(
            BenchmarkId::from_parameter(level.name()),
            &level,
            |b, &l| {
                b.iter(|| {
                    view.dequantize_range_at(l, 4096, black_box(&mut out[..4096]))
                        .unwrap()
                })
            },
        );
    }
    g.finish();

    let mut g = c.benchmark_group("nf4_encode_double_quant");
    g.throughput(Throughput::Bytes(4 * N as u64));
    for &level in available_levels() {
        g.bench_with_input(
            BenchmarkId::from_parameter(level.name()),
            &level,
            |b, &l| b.iter(|| nf4::quantize_at(l, black_box(&x), params).unwrap()),
        );
    }
    g.finish();
}

criterion_group! {
    name = benches;
    config = Criterion::default()
        .sample_size(20)
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2));
    targets = bench
}
criterion_main!(benches);
