//! Do our decoders and encoders give gguf-py's bits? Fixtures come from
//! scripts/reference/make_quant_fixtures.py (gguf-py 0.19.0): random blocks of every decodable
//! format with gguf-py's f32 output, and f32 inputs (normal, uniform, exact ties, zeros, tiny,
//! overflowing) with gguf-py's encoded bytes. Decoding is checked at every SIMD level.

mod quant_util;

use edgetune::cpu::available_levels;
use edgetune::gguf::GgmlType;
use edgetune::quant::{dequantize_at, quantize};
use quant_util::same_f32;
use serde_json::Value;
use std::path::{Path, PathBuf};

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/quant")
}

fn read(name: &str) -> Vec<u8> {
    let path = dir().join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn f32s(bytes: &[u8]) -> Vec<f32> {
    bytes
        .chunks_exact(4)
        .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
        .collect()
}

fn index() -> Value {
    serde_json::from_slice(&read("index.json")).expect("index.json parses")
}

/// (case name, first block, block count) for each case of an index entry.
fn cases(entry: &Value) -> Vec<(String, usize, usize)> {
    let mut start = 0;
    entry["cases"]
        .as_array()
        .expect("cases")
        .iter()
        .map(|c| {
            let n = c["blocks"].as_u64().expect("blocks") as usize;
            start += n;
            (c["name"].as_str().expect("name").to_string(), start - n, n)
        })
        .collect()
}

fn case_of(cases: &[(String, usize, usize)], block: usize) -> &str {
    cases
        .iter()
        .find(|(_, s, n)| (*s..s + n).contains(&block))
        .map_or("?", |c| c.0.as_str())
}

#[test]
fn decoders_match_gguf_py() {
    let index = index();
    let entries = index["decode"].as_array().expect("decode entries");
    assert_eq!(entries.len(), 15, "one fixture per decodable format");
    for entry in entries {
        let ty = GgmlType::from_name(entry["type"].as_str().unwrap()).unwrap();
        let input = read(entry["input"].as_str().unwrap());
        let want = f32s(&read(entry["output"].as_str().unwrap()));
        let cases = cases(entry);
        let blocks: usize = cases.iter().map(|c| c.2).sum();
        assert_eq!(input.len(), blocks * ty.type_size(), "{ty}: fixture size");
        assert_eq!(want.len(), blocks * ty.block_size(), "{ty}: fixture size");
        for &level in available_levels() {
            let mut got = vec![0f32; want.len()];
            dequantize_at(level, ty, &input, &mut got).unwrap();
            if let Some(i) = got.iter().zip(&want).position(|(a, b)| !same_f32(*a, *b)) {
                let block = i / ty.block_size();
                panic!(
                    "{ty} at {}: element {i} (block {block}, case {}) is {} ({:#010x}), gguf-py \
                     gives {} ({:#010x})",
                    level.name(),
                    case_of(&cases, block),
                    got[i],
                    got[i].to_bits(),
                    want[i],
                    want[i].to_bits()
                );
            }
        }
    }
}

#[test]
fn encoders_match_gguf_py() {
    let index = index();
    let entries = index["encode"].as_array().expect("encode entries");
    let types: Vec<&str> = entries
        .iter()
        .map(|e| e["type"].as_str().unwrap())
        .collect();
    assert_eq!(types, ["Q8_0", "Q4_0", "BF16", "F16"]);
    for entry in entries {
        let ty = GgmlType::from_name(entry["type"].as_str().unwrap()).unwrap();
        let x = f32s(&read(entry["input"].as_str().unwrap()));
        let want = read(entry["output"].as_str().unwrap());
        let cases = cases(entry);
        let mut got = vec![0u8; want.len()];
        quantize(ty, &x, &mut got).unwrap();
        let size = ty.type_size();
        for (block, (g, w)) in got.chunks(size).zip(want.chunks(size)).enumerate() {
            let n = ty.block_size();
            assert_eq!(
                g,
                w,
                "{ty}: block {block} (case {}) differs from gguf-py; input {:?}",
                case_of(&cases, block),
                &x[block * n..block * n + n]
            );
        }
    }
}
