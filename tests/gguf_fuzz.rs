//! Does the GGUF parser survive hostile input? A deterministic fuzz-style test: random truncations,
//! random byte flips and targeted overwrites of header fields (counts, lengths, types, dims,
//! offsets) of the real SmolLM2 header and of small files from our writer. Every case must end in
//! `Ok` or `Err(Error::Gguf)` — never a panic — and no single allocation may exceed a small
//! multiple of the input length (checked by a tracking global allocator).

#[path = "common/gguf.rs"]
mod common;

use common::*;
use edgetune::gguf::{parse_header, GgmlType, GgufWriter, Header, TensorSpec, Value, ValueType};
use edgetune::Error;
use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::Instant;

/// Cases per synthetic seed file and for the real header (whose parses cost ~1000x more).
const SYNTHETIC_CASES: u64 = 40_000;
const REAL_HEADER_CASES: u64 = 2_500;

// ---- allocation tracking -------------------------------------------------------------------

/// Wraps the system allocator to record, per thread, the largest single allocation requested.
struct Tracking;

thread_local! {
    static LARGEST: Cell<usize> = const { Cell::new(0) };
}

fn note(size: usize) {
    // try_with: the slot may be gone while a thread is being torn down.
    let _ = LARGEST.try_with(|m| m.set(m.get().max(size)));
}

// SAFETY: every call forwards to `System` with the caller's arguments unchanged; `note` only
// touches a const-initialised thread-local `Cell` and never allocates.
unsafe impl GlobalAlloc for Tracking {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: same contract as our caller's.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        note(new_size);
        // SAFETY: same contract as our caller's.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: same contract as our caller's.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Tracking = Tracking;

// ---- where the fields are --------------------------------------------------------------------

/// Byte positions (and widths) of the fields worth aiming at in a valid little-endian image.
#[derive(Default)]
struct Fields {
    /// Counts, key lengths, value types, array element types and lengths.
    kv_heads: Vec<(usize, usize)>,
    /// Tensor infos: name lengths, n_dims, dims, types, offsets.
    tensor_infos: Vec<(usize, usize)>,
    /// Lengths of string values and string array elements.
    string_lengths: Vec<(usize, usize)>,
}

fn r32(b: &[u8], p: usize) -> u32 {
    u32::from_le_bytes(b[p..p + 4].try_into().unwrap())
}

fn r64(b: &[u8], p: usize) -> usize {
    u64::from_le_bytes(b[p..p + 8].try_into().unwrap()) as usize
}

/// An independent, trusting walk over a valid image (ours and SmolLM2's) recording field positions.
fn find_fields(b: &[u8]) -> Fields {
    fn value(b: &[u8], p: &mut usize, ty: u32, f: &mut Fields) {
        match ValueType::from_id(ty).unwrap() {
            ValueType::String => {
                f.string_lengths.push((*p, 8));
                *p += 8 + r64(b, *p);
            }
            ValueType::Array => {
                let elem = r32(b, *p);
                f.kv_heads.push((*p, 4));
                f.kv_heads.push((*p + 4, 8));
                let n = r64(b, *p + 4);
                *p += 12;
                for _ in 0..n {
                    value(b, p, elem, f);
                }
            }
            t => *p += t.fixed_size().unwrap(),
        }
    }
    let mut f = Fields {
        kv_heads: vec![(4, 4), (8, 8), (16, 8)],
        ..Fields::default()
    };
    let (n_tensors, n_kv) = (r64(b, 8), r64(b, 16));
    let mut p = 24;
    for _ in 0..n_kv {
        f.kv_heads.push((p, 8));
        p += 8 + r64(b, p);
        f.kv_heads.push((p, 4));
        let ty = r32(b, p);
        p += 4;
        value(b, &mut p, ty, &mut f);
    }
    for _ in 0..n_tensors {
        f.tensor_infos.push((p, 8));
        p += 8 + r64(b, p);
        f.tensor_infos.push((p, 4));
        let n_dims = r32(b, p) as usize;
        p += 4;
        for _ in 0..n_dims {
            f.tensor_infos.push((p, 8));
            p += 8;
        }
        f.tensor_infos.push((p, 4));
        f.tensor_infos.push((p + 4, 8));
        p += 12;
    }
    f
}

// ---- mutations -------------------------------------------------------------------------------

#[derive(Debug)]
enum Mutation {
    Truncate(usize),
    /// (position, new byte) pairs.
    Write(Vec<(usize, u8)>),
}

fn interesting_u64(rng: &mut Rng, old: u64, len: u64) -> u64 {
    let choices = [
        0,
        1,
        2,
        4,
        5,
        31,
        32,
        33,
        63,
        64,
        u32::MAX as u64,
        1 << 32,
        1 << 30,
        (1 << 30) + 1,
        i64::MAX as u64,
        1 << 63,
        u64::MAX,
        len,
        len.wrapping_sub(1),
        len + 1,
        old.wrapping_add(1),
        old.wrapping_sub(1),
        old.wrapping_mul(2),
        old ^ (1 << rng.below(64)),
        rng.next_u64(),
        rng.below(len + 1),
    ];
    choices[rng.below(choices.len() as u64) as usize]
}

fn interesting_u32(rng: &mut Rng, old: u32) -> u32 {
    let choices = [
        0,
        1,
        2,
        3,
        4,
        5,
        6,
        8,
        9,
        12,
        13,
        39,
        43,
        1000,
        u32::MAX,
        0x0300_0000,
        old.wrapping_add(1),
        old.wrapping_sub(1),
        old ^ (1 << rng.below(32)),
        rng.next_u64() as u32,
    ];
    choices[rng.below(choices.len() as u64) as usize]
}

fn pick_field(rng: &mut Rng, fields: &Fields) -> (usize, usize) {
    let lists = [
        &fields.kv_heads,
        &fields.tensor_infos,
        &fields.string_lengths,
    ];
    loop {
        let list = lists[rng.below(3) as usize];
        if !list.is_empty() {
            return list[rng.below(list.len() as u64) as usize];
        }
    }
}

fn mutate(rng: &mut Rng, base: &[u8], fields: &Fields) -> Mutation {
    let len = base.len() as u64;
    match rng.below(6) {
        0 => Mutation::Truncate(rng.below(len) as usize),
        1 => {
            // Cut inside or just after a field.
            let (p, w) = pick_field(rng, fields);
            Mutation::Truncate((p + rng.below(w as u64 + 2) as usize).min(base.len() - 1))
        }
        2 => {
            let n = 1 + rng.below(8) as usize;
            Mutation::Write(
                (0..n)
                    .map(|_| (rng.below(len) as usize, rng.next_u64() as u8))
                    .collect(),
            )
        }
        3 => {
            // A few random bytes near a field.
            let (p, _) = pick_field(rng, fields);
            let n = 1 + rng.below(8) as usize;
            Mutation::Write(
                (0..n)
                    .map(|_| {
                        (
                            (p + rng.below(16) as usize).min(base.len() - 1),
                            rng.next_u64() as u8,
                        )
                    })
                    .collect(),
            )
        }
        _ => {
            let (p, w) = pick_field(rng, fields);
            let new: Vec<u8> = if w == 8 {
                interesting_u64(rng, r64(base, p) as u64, len)
                    .to_le_bytes()
                    .to_vec()
            } else {
                interesting_u32(rng, r32(base, p)).to_le_bytes().to_vec()
            };
            Mutation::Write(
                new.into_iter()
                    .enumerate()
                    .map(|(i, b)| (p + i, b))
                    .collect(),
            )
        }
    }
}

// ---- checks ----------------------------------------------------------------------------------

/// What an accepted header must satisfy whatever the input: everything it holds fits in the input.
fn check_accepted(h: &Header, len: u64) -> Result<(), String> {
    let mut string_bytes = 0u64;
    let mut elements = 0u64;
    for (k, v) in &h.metadata {
        string_bytes += k.len() as u64;
        match v {
            Value::String(s) => string_bytes += s.len() as u64,
            Value::Array(edgetune::gguf::Array::String(a)) => {
                string_bytes += a.iter().map(|s| s.len() as u64).sum::<u64>();
                elements += a.len() as u64;
            }
            Value::Array(a) => elements += a.len() as u64,
            _ => {}
        }
    }
    string_bytes += h.tensors.iter().map(|t| t.name.len() as u64).sum::<u64>();
    if string_bytes > len || elements > len || h.metadata.len() as u64 * 12 > len {
        return Err(format!(
            "accepted {string_bytes} string bytes, {elements} array elements, {} KVs from {len} bytes",
            h.metadata.len()
        ));
    }
    let mut next = 0;
    for t in &h.tensors {
        let ok = t.offset == next
            && !t.ne.is_empty()
            && t.ne.len() <= 4
            && t.ty.tensor_bytes(&t.ne) == Some(t.bytes)
            && h.data_offset + t.offset + t.bytes <= len;
        if !ok {
            return Err(format!("accepted inconsistent tensor {t:?}"));
        }
        next += t.bytes.next_multiple_of(h.alignment);
    }
    Ok(())
}

struct Stats {
    ok: u64,
    err: u64,
}

/// Runs `cases` mutations of `base`; panics (failing the test) with the seed, case and mutation on
/// a parser panic, a non-GGUF error, an inconsistent accept or an oversized allocation.
fn fuzz(label: &str, base: &[u8], seed: u64, cases: u64) -> Stats {
    parse_header(base).unwrap_or_else(|e| panic!("{label}: base image must parse: {e}"));
    let fields = find_fields(base);
    let mut buf = base.to_vec();
    let mut stats = Stats { ok: 0, err: 0 };
    for case in 0..cases {
        let mut rng = Rng::new(seed.wrapping_mul(1_000_003) ^ case);
        let m = mutate(&mut rng, base, &fields);
        let len = match &m {
            Mutation::Truncate(n) => *n,
            Mutation::Write(w) => {
                for &(p, b) in w {
                    buf[p] = b;
                }
                buf.len()
            }
        };
        LARGEST.with(|l| l.set(0));
        let result = catch_unwind(AssertUnwindSafe(|| parse_header(&buf[..len])));
        let largest = LARGEST.with(|l| l.get());
        if let Mutation::Write(w) = &m {
            for &(p, _) in w {
                buf[p] = base[p];
            }
        }
        macro_rules! fail {
            ($($why:tt)*) => {
                panic!("{label}: seed {seed} case {case}: {}; mutation {m:?}", format!($($why)*))
            };
        }
        match result {
            Err(_) => fail!("parse_header panicked"),
            Ok(Ok(h)) => {
                if let Err(e) = check_accepted(&h, len as u64) {
                    fail!("{e}");
                }
                stats.ok += 1;
            }
            Ok(Err(Error::Gguf { offset, .. })) if offset <= len as u64 => stats.err += 1,
            Ok(Err(e)) => fail!("unexpected error {e:?}"),
        }
        // Vec<(String, Value)> slots are ~56 bytes per >= 12 input bytes, hash sets a few times
        // more per entry: 8x the input bounds every legitimate allocation.
        if largest > 8 * len + 4096 {
            fail!("allocated {largest} bytes at once for {len} input bytes");
        }
    }
    stats
}

/// The image `w` writes with `data`, built in memory.
fn image(w: &GgufWriter, data: &[Vec<u8>]) -> Vec<u8> {
    let (mut out, layout) = w.encode_header().unwrap();
    for d in data {
        out.extend(d);
        out.resize(out.len().next_multiple_of(layout.alignment as usize), 0);
    }
    assert_eq!(out.len() as u64, layout.file_size);
    out
}

fn synthetic_seeds() -> Vec<(&'static str, Vec<u8>)> {
    let mut rng = Rng::new(7);
    let mut seeds = vec![("raw valid", RawFile::valid().bytes())];
    seeds.push((
        "raw v2",
        RawFile {
            version: 2,
            ..RawFile::valid()
        }
        .bytes(),
    ));

    let mut w = GgufWriter::new();
    w.set("general.architecture", Value::String("llama".into()));
    w.set("general.alignment", Value::U32(64));
    w.set(
        "t.strs",
        Value::Array(edgetune::gguf::Array::String(vec![
            "a".into(),
            "bc".into(),
            "é".into(),
        ])),
    );
    w.set(
        "t.f32s",
        Value::Array(edgetune::gguf::Array::F32(vec![1.0, 2.0])),
    );
    w.set(
        "t.bools",
        Value::Array(edgetune::gguf::Array::Bool(vec![true, false])),
    );
    w.set("t.i64", Value::I64(-5));
    w.set("t.flag", Value::Bool(true));
    let mut data = Vec::new();
    for (name, ty, ne) in [
        ("tok", GgmlType::Q4_0, &[64u64, 2][..]),
        ("norm", GgmlType::F32, &[5][..]),
        ("k", GgmlType::Q4_K, &[256, 1, 1, 2][..]),
        ("h", GgmlType::F16, &[3, 3][..]),
    ] {
        let spec = TensorSpec::new(name, ty, ne);
        data.push(rng.bytes(spec.validate().unwrap() as usize));
        w.add_tensor(spec).unwrap();
    }
    seeds.push(("writer, 4 tensors, alignment 64", image(&w, &data)));

    let mut meta_only = GgufWriter::new();
    meta_only.set(
        "tokenizer.ggml.tokens",
        Value::Array(edgetune::gguf::Array::String(
            (0..40).map(|i| format!("tok{i}")).collect(),
        )),
    );
    meta_only.set(
        "tokenizer.ggml.scores",
        Value::Array(edgetune::gguf::Array::F32(
            (0..40).map(|i| i as f32).collect(),
        )),
    );
    meta_only.set("x.u8", Value::U8(1));
    meta_only.set("x.f64", Value::F64(0.5));
    seeds.push(("writer, metadata only", image(&meta_only, &[])));

    let mut one = GgufWriter::new();
    one.add_tensor(TensorSpec::new("w", GgmlType::Q8_0, &[32, 3]))
        .unwrap();
    seeds.push(("writer, one tensor", image(&one, &[rng.bytes(102)])));
    seeds
}

#[test]
fn fuzz_synthetic_files() {
    let start = Instant::now();
    let (mut total, mut ok) = (0, 0);
    for (i, (label, base)) in synthetic_seeds().iter().enumerate() {
        let s = fuzz(label, base, 1000 + i as u64, SYNTHETIC_CASES);
        assert!(
            s.err > SYNTHETIC_CASES / 4,
            "{label}: too few rejects ({})",
            s.err
        );
        total += s.ok + s.err;
        ok += s.ok;
    }
    assert!(total >= 100_000);
    println!(
        "fuzz_synthetic_files: {total} cases ({ok} accepted) in {:.2?}",
        start.elapsed()
    );
}

/// SmolLM2's real header (33 KVs incl. 49152 tokens and 48900 merges, 272 tensor infos) with each
/// tensor shrunk to one row of blocks, so the image is the real ~1.8 MB header plus tiny data.
#[test]
fn fuzz_smollm2_header() {
    let src = edgetune::gguf::GgufFile::open(model(SMOLLM2)).unwrap();
    let mut w = GgufWriter::from_header(src.header());
    let mut rng = Rng::new(11);
    let mut data = Vec::new();
    for t in &mut w.tensors {
        let n = t.ne.len();
        t.ne = vec![1; n];
        t.ne[0] = t.ty.block_size() as u64;
        data.push(rng.bytes(t.ty.type_size()));
    }
    let base = image(&w, &data);
    // Same names and dims widths, so the header is byte-for-byte as long as the real one.
    assert_eq!(
        w.encode_header().unwrap().1.data_offset,
        src.header().data_offset
    );
    assert_eq!(
        &base[..1 << 20],
        &src.bytes()[..1 << 20],
        "KV region is the real one"
    );

    let t0 = Instant::now();
    parse_header(&base).unwrap();
    let one_parse = t0.elapsed();
    let start = Instant::now();
    let s = fuzz("smollm2 header", &base, 42, REAL_HEADER_CASES);
    println!(
        "fuzz_smollm2_header: {} cases ({} accepted) on a {} byte image in {:.2?} (one clean parse {:.2?})",
        s.ok + s.err,
        s.ok,
        base.len(),
        start.elapsed(),
        one_parse
    );
}
