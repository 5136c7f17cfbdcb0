//! Does the GGUF writer produce files that our reader and gguf-py read back exactly, laid out byte
//! for byte as ggml writes them, and does it refuse bad specs without leaving a broken file?

#[path = "common/gguf.rs"]
mod common;

use common::*;
use edgetune::gguf::{Array, GgmlType, GgufFile, GgufWriter, TensorSpec, Value};
use edgetune::Error;
use std::fs::File;
use std::io::Read;
use std::path::Path;

/// Every scalar type and every array element type, with edge values (NaN, -0.0, extremes,
/// empty and non-ASCII strings, empty arrays).
fn all_values() -> Vec<(String, Value)> {
    let v = |k: &str, v: Value| (k.to_string(), v);
    vec![
        v("general.architecture", Value::String("llama".into())),
        v("t.u8", Value::U8(255)),
        v("t.i8", Value::I8(-128)),
        v("t.u16", Value::U16(65535)),
        v("t.i16", Value::I16(-32768)),
        v("t.u32", Value::U32(u32::MAX)),
        v("t.i32", Value::I32(i32::MIN)),
        v("t.f32", Value::F32(-0.0)),
        v("t.f32_nan", Value::F32(f32::from_bits(0x7fc0_1234))),
        v("t.bool_true", Value::Bool(true)),
        v("t.bool_false", Value::Bool(false)),
        v("t.str", Value::String("héllo ✓ 日本".into())),
        v("t.str_empty", Value::String(String::new())),
        v("t.u64", Value::U64(u64::MAX)),
        v("t.i64", Value::I64(i64::MIN)),
        v("t.f64", Value::F64(std::f64::consts::PI)),
        v("t.f64_inf", Value::F64(f64::NEG_INFINITY)),
        v("a.u8", Value::Array(Array::U8(vec![0, 1, 255]))),
        v("a.i8", Value::Array(Array::I8(vec![-1, 0, 127]))),
        v("a.u16", Value::Array(Array::U16(vec![1, 65535]))),
        v("a.i16", Value::Array(Array::I16(vec![-300, 300]))),
        v("a.u32", Value::Array(Array::U32(vec![7, u32::MAX]))),
        v("a.i32", Value::Array(Array::I32(vec![-7, i32::MAX]))),
        v(
            "a.f32",
            Value::Array(Array::F32(vec![1.5, f32::NAN, f32::INFINITY])),
        ),
        v("a.bool", Value::Array(Array::Bool(vec![true, false, true]))),
        v(
            "a.str",
            Value::Array(Array::String(vec![
                "a".into(),
                String::new(),
                "ü Ġt".into(),
            ])),
        ),
        v("a.u64", Value::Array(Array::U64(vec![0, u64::MAX]))),
        v("a.i64", Value::Array(Array::I64(vec![i64::MIN, 5]))),
        v("a.f64", Value::Array(Array::F64(vec![-2.25, 1e300]))),
        v("a.empty_u32", Value::Array(Array::U32(vec![]))),
        v("a.empty_str", Value::Array(Array::String(vec![]))),
    ]
}

/// Tensors of plain and block types, 1 to 4 dims, sizes that need padding.
fn specs() -> Vec<TensorSpec> {
    vec![
        TensorSpec::new("f32.odd", GgmlType::F32, &[3]),
        TensorSpec::new("f16", GgmlType::F16, &[5, 3]),
        TensorSpec::new("q4_0", GgmlType::Q4_0, &[64, 2]),
        TensorSpec::new("q8_0", GgmlType::Q8_0, &[32]),
        TensorSpec::new("q4_k.3d", GgmlType::Q4_K, &[256, 1, 2]),
        TensorSpec::new("i8", GgmlType::I8, &[7]),
        TensorSpec::new("bf16", GgmlType::BF16, &[9]),
        TensorSpec::new("q6_k", GgmlType::Q6_K, &[256]),
        TensorSpec::new("f64.4d", GgmlType::F64, &[2, 2, 2, 2]),
        TensorSpec::new("zero", GgmlType::F32, &[0]),
        TensorSpec::new("n".repeat(63), GgmlType::I32, &[1]),
    ]
}

fn build(alignment: Option<u32>) -> (GgufWriter, Vec<Vec<u8>>) {
    let mut w = GgufWriter::new();
    for (k, v) in all_values() {
        w.set(&k, v);
    }
    if let Some(a) = alignment {
        w.set("general.alignment", Value::U32(a));
    }
    let mut rng = Rng::new(alignment.unwrap_or(0) as u64 + 1);
    let mut data = Vec::new();
    for spec in specs() {
        data.push(rng.bytes(spec.validate().unwrap() as usize));
        w.add_tensor(spec).unwrap();
    }
    (w, data)
}

fn refs(data: &[Vec<u8>]) -> Vec<&[u8]> {
    data.iter().map(|d| d.as_slice()).collect()
}

#[test]
fn round_trip_every_value_type_and_layout() {
    for alignment in [None, Some(64), Some(8)] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("all.gguf");
        let (w, data) = build(alignment);
        w.write_with_data(&path, &refs(&data)).unwrap();
        let layout = w.layout().unwrap();
        let a = alignment.unwrap_or(32) as u64;
        assert_eq!(layout.alignment, a);

        let file = GgufFile::open(&path).unwrap();
        let h = file.header();
        let bytes = file.bytes();
        // File size = data_offset + Σ PAD(nbytes_i, A), the header is what encode_header built.
        let padded: u64 = layout.sizes.iter().map(|s| s.next_multiple_of(a)).sum();
        assert_eq!(
            bytes.len() as u64,
            layout.data_offset + padded,
            "alignment {a}"
        );
        assert_eq!(bytes.len() as u64, layout.file_size);
        assert_eq!(
            &bytes[..h.data_offset as usize],
            w.encode_header().unwrap().0.as_slice()
        );
        assert_eq!(
            (h.version, h.alignment, h.data_offset),
            (3, a, layout.data_offset)
        );
        assert_eq!(h.data_offset % a, 0);

        assert_eq!(metadata_json(&h.metadata), metadata_json(&w.metadata));
        assert_eq!(h.tensors.len(), data.len());
        for (i, t) in h.tensors.iter().enumerate() {
            let spec = &w.tensors[i];
            assert_eq!((&t.name, t.ty, &t.ne), (&spec.name, spec.ty, &spec.ne));
            assert_eq!((t.offset, t.bytes), (layout.offsets[i], layout.sizes[i]));
            assert_eq!(file.tensor_data(t), data[i].as_slice(), "{}", t.name);
            // Zero padding after every tensor, the last one included.
            let end = (h.data_offset + t.offset + t.bytes) as usize;
            let next = (h.data_offset + t.offset + t.bytes.next_multiple_of(a)) as usize;
            assert!(
                bytes[end..next].iter().all(|&b| b == 0),
                "padding after {}",
                t.name
            );
        }
    }
}

/// gguf-py's GGUFReader reads our files exactly as our reader does, tensor bytes included.
#[test]
fn gguf_py_reads_our_files() {
    for alignment in [None, Some(64)] {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("py.gguf");
        let (w, data) = build(alignment);
        w.write_with_data(&path, &refs(&data)).unwrap();
        let file = GgufFile::open(&path).unwrap();
        assert_same_view(&our_view(&file, true), &pyread(&path, true));
    }
}

/// Re-encoding SmolLM2's header and streaming its tensors from the map reproduces the original
/// file byte for byte (padding, offsets, n_dims, metadata order and encoding).
#[test]
fn rewriting_smollm2_reproduces_it_byte_for_byte() {
    let src = GgufFile::open(model(SMOLLM2)).unwrap();
    let w = GgufWriter::from_header(src.header());
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("smollm2.gguf");
    let tensors = &src.header().tensors;
    w.write(&out, &mut |i, o| {
        o.write_all(src.tensor_data(&tensors[i]))
            .map_err(|e| Error::io("copy", e))
    })
    .unwrap();
    assert_files_equal(src.bytes(), &out);
}

/// Streams `path` in 1 MiB chunks and compares with `expected`, naming the first differing byte.
fn assert_files_equal(expected: &[u8], path: &Path) {
    let mut f = File::open(path).unwrap();
    assert_eq!(
        f.metadata().unwrap().len(),
        expected.len() as u64,
        "file size"
    );
    let mut buf = vec![0u8; 1 << 20];
    let mut pos = 0usize;
    loop {
        let n = f.read(&mut buf).unwrap();
        if n == 0 {
            break;
        }
        let want = &expected[pos..pos + n];
        if let Some(i) = (0..n).find(|&i| buf[i] != want[i]) {
            panic!(
                "first difference at byte {}: {} vs {}",
                pos + i,
                buf[i],
                want[i]
            );
        }
        pos += n;
    }
    assert_eq!(pos, expected.len());
}

#[test]
fn add_tensor_rejects_bad_specs() {
    let cases: &[(TensorSpec, &str)] = &[
        (
            TensorSpec::new("n".repeat(64), GgmlType::F32, &[1]),
            "64 bytes",
        ),
        (TensorSpec::new("no_dims", GgmlType::F32, &[]), "0 dims"),
        (
            TensorSpec::new("five", GgmlType::F32, &[1, 1, 1, 1, 1]),
            "5 dims",
        ),
        (
            TensorSpec::new("q", GgmlType::Q4_0, &[33]),
            "ne[0]=33 is not a multiple of Q4_0's block size 32",
        ),
        (
            TensorSpec::new("big", GgmlType::F32, &[1 << 32, 1 << 32]),
            "overflows",
        ),
        (
            TensorSpec::new("neg", GgmlType::F32, &[4, 1 << 63, 0]),
            "ne[1]=9223372036854775808",
        ),
        (
            TensorSpec::new("dup", GgmlType::F32, &[1]),
            "duplicate tensor name 'dup'",
        ),
    ];
    let mut w = GgufWriter::new();
    w.add_tensor(TensorSpec::new("dup", GgmlType::F32, &[4]))
        .unwrap();
    for (spec, needle) in cases {
        let msg = w.add_tensor(spec.clone()).unwrap_err().to_string();
        assert!(
            msg.contains(needle) && msg.contains(&format!("'{}'", spec.name)),
            "{msg:?} lacks {needle:?}"
        );
    }
    assert_eq!(w.tensors.len(), 1);
}

#[test]
fn write_rejects_bad_metadata() {
    type Edit = fn(&mut GgufWriter);
    let cases: Vec<(Edit, &str)> = vec![
        (
            |w| w.set("general.alignment", Value::U32(48)),
            "general.alignment",
        ),
        (
            |w| w.set("general.alignment", Value::U32(0)),
            "general.alignment",
        ),
        (|w| w.set("general.alignment", Value::U64(32)), "UINT64"),
        (
            |w| w.metadata.push(("k".into(), Value::U8(1))),
            "duplicate metadata key 'k'",
        ),
        (
            |w| w.metadata.push((String::new(), Value::U8(1))),
            "empty metadata key",
        ),
        (
            |w| w.tensors.push(TensorSpec::new("t", GgmlType::F32, &[1])),
            "duplicate tensor name 't'",
        ),
        (
            |w| w.tensors.push(TensorSpec::new("u", GgmlType::Q8_0, &[8])),
            "block size",
        ),
    ];
    let dir = tempfile::tempdir().unwrap();
    for (edit, needle) in cases {
        let mut w = GgufWriter::new();
        w.set("k", Value::U8(0));
        w.add_tensor(TensorSpec::new("t", GgmlType::F32, &[1]))
            .unwrap();
        edit(&mut w);
        let path = dir.path().join("bad.gguf");
        let n = w.tensors.len();
        let e = w.write(&path, &mut |_, o| {
            o.write_all(&[0; 4]).map_err(|e| Error::io("w", e))
        });
        let msg = e.unwrap_err().to_string();
        assert!(msg.contains(needle), "{msg:?} lacks {needle:?}");
        assert!(!path.exists() && n > 0);
    }
    assert_eq!(
        std::fs::read_dir(dir.path()).unwrap().count(),
        0,
        "no temp files left"
    );
}

/// A data callback that writes the wrong number of bytes (or fails) leaves neither the target
/// nor a temp file behind, and an existing file at the path is untouched.
#[test]
fn wrong_data_length_fails_atomically() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.gguf");
    std::fs::write(&path, b"previous contents").unwrap();
    let mut w = GgufWriter::new();
    w.add_tensor(TensorSpec::new("first", GgmlType::F32, &[3]))
        .unwrap();
    w.add_tensor(TensorSpec::new("second", GgmlType::Q8_0, &[32]))
        .unwrap();
    let cases: [(&[usize], &str); 3] = [
        (
            &[12, 33],
            "tensor 'second': the data callback wrote 33 bytes, expected 34",
        ),
        (
            &[13, 34],
            "tensor 'first': the data callback wrote 13 bytes, expected 12",
        ),
        (&[12, 0], "callback failed"),
    ];
    for (lens, needle) in cases {
        let e = w.write(&path, &mut |i, o| {
            if lens[i] == 0 {
                return Err(Error::InvalidArgument("callback failed".into()));
            }
            o.write_all(&vec![1u8; lens[i]])
                .map_err(|e| Error::io("w", e))
        });
        let msg = e.unwrap_err().to_string();
        assert!(
            msg.contains(needle) && msg.contains("model.gguf"),
            "{msg:?} lacks {needle:?}"
        );
        assert_eq!(std::fs::read(&path).unwrap(), b"previous contents");
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "temp file left behind"
        );
    }
    let e = w.write_with_data(&path, &[&[0; 12]]).unwrap_err();
    assert!(
        e.to_string().contains("1 data buffers for 2 tensors"),
        "{e}"
    );
    w.write_with_data(&path, &[&[0; 12], &[0; 34]]).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        w.layout().unwrap().file_size
    );
}

#[test]
fn set_replaces_in_place() {
    let mut w = GgufWriter::new();
    w.set("a", Value::U8(1));
    w.set("b", Value::U8(2));
    w.set("a", Value::String("x".into()));
    let keys: Vec<_> = w
        .metadata
        .iter()
        .map(|(k, v)| (k.as_str(), v.clone()))
        .collect();
    assert_eq!(
        keys,
        [("a", Value::String("x".into())), ("b", Value::U8(2))]
    );
}
