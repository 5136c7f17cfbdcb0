//! How long does opening a model take? `GgufFile::open` on SmolLM2 (file in the page cache): map
//! the file and parse/validate the ~1.8 MB header (33 KVs incl. 49k tokens and 49k merges, 272
//! tensor infos). It reads no tensor data. Target: median well under 10 ms.
//! Run: `cargo bench --bench open`.

use criterion::{criterion_group, criterion_main, Criterion};
use edgetune::gguf::{parse_header, GgufFile};
use std::hint::black_box;
use std::path::Path;
use std::time::{Duration, Instant};

fn bench_open(c: &mut Criterion) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("models/SmolLM2-135M-Instruct.Q4_1.gguf");
    if !path.is_file() {
        eprintln!(
            "open bench skipped: {} is missing (run scripts/fetch-models.sh)",
            path.display()
        );
        return;
    }
    // Dropping the header (freeing ~100k token strings) is not part of opening.
    c.bench_function("open SmolLM2 (cached)", |b| {
        b.iter_with_large_drop(|| GgufFile::open(black_box(&path)).unwrap())
    });
    // The parse alone, over the already-mapped file.
    let map = GgufFile::open(&path).unwrap();
    c.bench_function("parse_header SmolLM2 (in memory)", |b| {
        b.iter_with_large_drop(|| parse_header(black_box(map.bytes())).unwrap())
    });

    // Criterion reports mean estimates; print the median of plain samples too, and (on Linux)
    // the mean CPU time of this thread per open, which a loaded machine disturbs much less
    // (schedstat advances in scheduler ticks, so only a whole batch is meaningful).
    let mut wall = Vec::new();
    let cpu_start = thread_cpu_ns();
    for _ in 0..101 {
        let t = Instant::now();
        let file = GgufFile::open(&path).unwrap();
        wall.push(t.elapsed());
        drop(black_box(file));
    }
    println!("open SmolLM2 wall: {}", summary(&mut wall));
    if let (Some(a), Some(b)) = (cpu_start, thread_cpu_ns()) {
        let per_open = Duration::from_nanos((b - a) / wall.len() as u64);
        println!("open SmolLM2 thread CPU: mean {per_open:.2?} per open+drop");
    }
}

fn summary(samples: &mut [Duration]) -> String {
    samples.sort();
    format!(
        "median {:.2?} (min {:.2?}, max {:.2?}, n = {})",
        samples[samples.len() / 2],
        samples[0],
        samples[samples.len() - 1],
        samples.len()
    )
}

/// CPU time of the calling thread in ns (Linux schedstat), if available.
fn thread_cpu_ns() -> Option<u64> {
    std::fs::read_to_string("/proc/thread-self/schedstat")
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

criterion_group!(benches, bench_open);
criterion_main!(benches);
