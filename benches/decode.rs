//! Decode throughput per format, in bytes of f32 output per second, for a 4096 × 256 tensor
//! (4 MiB of f32), at every SIMD level this CPU has (scalar first). Run:
//! `cargo bench --bench decode` (filter with e.g. `-- Q4_K`). `EDGETUNE_BENCH_ELEMS=65536` measures
//! a cache-resident size instead (what a row-at-a-time matmul sees).

#[path = "../tests/quant_util/mod.rs"]
mod quant_util;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use edgetune::cpu::available_levels;
use edgetune::quant::{decode_level, dequantize_at, FORMATS};
use std::time::Duration;

const ELEMS: usize = 4096 * 256;

fn decode(c: &mut Criterion) {
    let elems = std::env::var("EDGETUNE_BENCH_ELEMS")
        .ok()
        .and_then(|s| s.parse::<usize>().ok())
        .map_or(ELEMS, |n| n.next_multiple_of(256).max(256));
    for f in &FORMATS {
        let blocks = elems / f.block_elems;
        let src = quant_util::random_blocks(f.ty, blocks, &mut quant_util::Rng(7), true);
        let mut dst = vec![0f32; elems];
        let mut group = c.benchmark_group(format!("decode/{}", f.ty));
        group.throughput(Throughput::Bytes((elems * 4) as u64));
        group.sample_size(20);
        group.warm_up_time(Duration::from_millis(300));
        group.measurement_time(Duration::from_secs(1));
        for &level in available_levels() {
            // Skip levels that would only rerun a lower level's kernel.
            let used = decode_level(level, f.ty).unwrap_or(level);
            if used != level {
                continue;
            }
            group.bench_function(BenchmarkId::from_parameter(level.name()), |b| {
                b.iter(|| dequantize_at(level, f.ty, &src, &mut dst).unwrap())
            });
        }
        group.finish();
    }
}

criterion_group!(benches, decode);
criterion_main!(benches);
