//! Does the GGUF reader read real models exactly as gguf-py does, and does it reject every kind of
//! malformed file with an error that names the offending field?

#[path = "common/gguf.rs"]
mod common;

use common::*;
use edgetune::gguf::{parse_header, GgmlType, GgufFile, Value, ValueType};
use edgetune::Error;
use std::collections::BTreeMap;

#[test]
fn smollm2_known_facts() {
    let file = GgufFile::open(model(SMOLLM2)).unwrap();
    let h = file.header();
    // FORMATS.md §1.1 / §1.4, confirmed with gguf-py.
    assert_eq!(h.version, 3);
    assert_eq!(h.tensors.len(), 272);
    assert_eq!(h.metadata.len(), 33);
    assert_eq!(h.data_offset, 1_785_664);
    assert_eq!(h.alignment, 32);
    assert_eq!(file.bytes().len(), 98_362_432);
    assert_eq!(h.get_str("general.architecture").unwrap(), "llama");
    assert_eq!(h.get_u32("llama.block_count").unwrap(), 30);
    assert_eq!(h.get_u64("llama.block_count").unwrap(), 30);
    assert_eq!(h.get_u32("llama.embedding_length").unwrap(), 576);
    assert_eq!(h.get_f32("llama.rope.freq_base").unwrap(), 100_000.0);
    assert!(!h.get_bool("tokenizer.ggml.add_bos_token").unwrap());
    let vocab = h.get_u32("llama.vocab_size").unwrap() as usize;
    assert_eq!(vocab, 49152);
    assert_eq!(h.get_array("tokenizer.ggml.tokens").unwrap().len(), vocab);
    assert_eq!(
        h.get_array("tokenizer.ggml.token_type")
            .unwrap()
            .elem_type(),
        ValueType::I32
    );
    assert_eq!(h.metadata[0].0, "general.architecture", "file order kept");

    let embd = h.tensor("token_embd.weight").unwrap();
    assert_eq!(
        (embd.ty, embd.ne.as_slice()),
        (GgmlType::Q8_0, &[576, 49152][..])
    );
    assert_eq!(h.tensor_index("token_embd.weight"), Some(0));
    let down = h.tensor("blk.0.ffn_down.weight").unwrap();
    assert_eq!(
        (down.ty, down.ne.as_slice()),
        (GgmlType::Q4_1, &[1536, 576][..])
    );
    assert_eq!(down.bytes, 1536 / 32 * 20 * 576);
    let mut by_type = BTreeMap::new();
    for t in &h.tensors {
        *by_type.entry(t.ty).or_insert(0) += 1;
    }
    let expected = BTreeMap::from([
        (GgmlType::F32, 61),
        (GgmlType::Q4_1, 210),
        (GgmlType::Q8_0, 1),
    ]);
    assert_eq!(by_type, expected);

    // Every tensor is a view into the map, inside the file; the last one ends at EOF.
    let whole = file.bytes().as_ptr_range();
    for t in &h.tensors {
        let data = file.tensor_data(t);
        assert_eq!(data.len() as u64, t.bytes, "{}", t.name);
        let r = data.as_ptr_range();
        assert!(whole.start <= r.start && r.end <= whole.end, "{}", t.name);
        assert_eq!(
            r.start as usize - whole.start as usize,
            (h.data_offset + t.offset) as usize
        );
    }
    let last = h.tensors.last().unwrap();
    assert_eq!(
        h.data_offset + last.offset + last.bytes,
        file.bytes().len() as u64
    );
}

#[test]
fn typed_getters_name_the_key_and_type() {
    let file = GgufFile::open(model(SMOLLM2)).unwrap();
    let h = file.header();
    let msg = h.get_u32("general.architecture").unwrap_err().to_string();
    assert!(
        msg.contains("general.architecture") && msg.contains("STRING"),
        "{msg}"
    );
    let msg = h.get_str("llama.nonexistent").unwrap_err().to_string();
    assert!(
        msg.contains("llama.nonexistent") && msg.contains("missing"),
        "{msg}"
    );
    assert_eq!(h.get_opt::<u32>("llama.nonexistent").unwrap(), None);
    assert!(h.get_opt::<f32>("llama.block_count").is_err());
}

/// The reader agrees with gguf-py on every metadata value and tensor info of SmolLM2. (Gemma's
/// 262k-token vocabulary takes gguf-py ~15 s to read, so it gets the facts test below instead.)
#[test]
fn smollm2_matches_gguf_py() {
    let path = model(SMOLLM2);
    let file = GgufFile::open(&path).unwrap();
    assert_same_view(&our_view(&file, false), &pyread(&path, false));
}

/// Facts of gemma-3-270m (Q4_K_M: five tensor types, 262144-token SentencePiece vocabulary) as
/// gguf-py reports them, and every tensor inside the file.
#[test]
fn gemma3_known_facts() {
    let file = GgufFile::open(model(GEMMA3)).unwrap();
    let h = file.header();
    assert_eq!((h.version, h.tensors.len(), h.metadata.len()), (3, 236, 33));
    assert_eq!((h.alignment, h.data_offset), (32, 6_525_120));
    assert_eq!(h.get_str("general.architecture").unwrap(), "gemma3");
    assert_eq!(h.get_u32("gemma3.block_count").unwrap(), 18);
    assert_eq!(h.get_u32("gemma3.attention.head_count_kv").unwrap(), 1);
    assert_eq!(h.get_array("tokenizer.ggml.tokens").unwrap().len(), 262_144);
    assert_eq!(h.get_array("tokenizer.ggml.scores").unwrap().len(), 262_144);
    let mut by_type = BTreeMap::new();
    for t in &h.tensors {
        *by_type.entry(t.ty).or_insert(0) += 1;
        assert_eq!(file.try_tensor_data(t).unwrap().len() as u64, t.bytes);
    }
    let expected = BTreeMap::from([
        (GgmlType::F32, 109),
        (GgmlType::Q5_0, 81),
        (GgmlType::Q8_0, 10),
        (GgmlType::Q4_K, 27),
        (GgmlType::Q6_K, 9),
    ]);
    assert_eq!(by_type, expected);
    let last = h.tensors.last().unwrap();
    assert_eq!(
        h.data_offset + last.offset + last.bytes,
        file.bytes().len() as u64
    );
}

#[test]
fn open_names_the_file_in_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.gguf");
    std::fs::write(&path, b"GGML\x03\0\0\0").unwrap();
    let e = GgufFile::open(&path).unwrap_err();
    assert!(
        matches!(&e, Error::InFile { source, .. } if matches!(**source, Error::Gguf { offset: 0, .. }))
    );
    assert!(
        e.to_string().contains("bad.gguf") && e.to_string().contains("magic"),
        "{e}"
    );
    let e = GgufFile::open(dir.path().join("absent.gguf")).unwrap_err();
    assert!(e.to_string().contains("absent.gguf"), "{e}");
    std::fs::write(&path, b"").unwrap();
    assert!(GgufFile::open(&path).is_err());
}

#[test]
fn accepts_valid_variants() {
    let ok = |f: RawFile| GgufFile::from_bytes(f.bytes()).unwrap();
    let h = ok(RawFile::valid()).header().clone();
    assert_eq!((h.tensors[1].bytes, h.data_offset % 32), (36, 0));
    // Version 2 has the same layout.
    assert_eq!(
        ok(RawFile {
            version: 2,
            ..RawFile::valid()
        })
        .header()
        .version,
        2
    );
    // No tensors, no data section at all.
    let f = ok(RawFile {
        tensors: vec![],
        data_len: 0,
        ..RawFile::valid()
    });
    assert!(f.header().tensors.is_empty());
    // The last tensor need not be followed by its padding (llama.cpp checks only its bytes).
    ok(RawFile {
        data_len: 32 + 36,
        ..RawFile::valid()
    });
    // A custom alignment.
    let mut f = RawFile::valid();
    f.kvs.push(kv("general.alignment", 4, &64u32.to_le_bytes()));
    f.alignment = 64;
    f.tensors[1].offset = 64;
    f.data_len = 128;
    let g = ok(f);
    assert_eq!((g.header().alignment, g.header().data_offset % 64), (64, 0));
    // Zero-sized tensor (ggml allows ne = 0).
    let mut f = RawFile::valid();
    f.tensors.push(RawTensor::new("empty", &[0, 4], 0, 96));
    ok(f);
}

/// One hand-made bad file: how to break `RawFile::valid()`, the byte offset the error must
/// report (when fixed), and words the message must contain.
struct Bad {
    name: &'static str,
    make: fn() -> Vec<u8>,
    offset: Option<u64>,
    needles: &'static [&'static str],
}

fn with(edit: impl FnOnce(&mut RawFile)) -> Vec<u8> {
    let mut f = RawFile::valid();
    edit(&mut f);
    f.bytes()
}

fn array_kv(key: &str, elem: u32, n: u64, elems: &[u8]) -> Vec<u8> {
    let mut p = elem.to_le_bytes().to_vec();
    p.extend(n.to_le_bytes());
    p.extend(elems);
    kv(key, 9, &p)
}

const BAD: &[Bad] = &[
    Bad {
        name: "empty file",
        make: || vec![],
        offset: Some(0),
        needles: &["0 bytes", "magic"],
    },
    Bad {
        name: "bad magic",
        make: || with(|f| f.magic = *b"GGML"),
        offset: Some(0),
        needles: &["bad magic", "GGML"],
    },
    Bad {
        name: "version 1",
        make: || with(|f| f.version = 1),
        offset: Some(4),
        needles: &["version 1"],
    },
    Bad {
        name: "version 4",
        make: || with(|f| f.version = 4),
        offset: Some(4),
        needles: &["version 4"],
    },
    Bad {
        name: "version 0",
        make: || with(|f| f.version = 0),
        offset: Some(4),
        needles: &["version 0"],
    },
    Bad {
        name: "big-endian file",
        make: || {
            with(|f| {
                f.big_endian = true;
                f.kvs.clear();
            })
        },
        offset: Some(4),
        needles: &["big-endian", "version 3"],
    },
    Bad {
        name: "truncated version",
        make: || with(|_| {})[..6].to_vec(),
        offset: Some(4),
        needles: &["truncated", "version"],
    },
    Bad {
        name: "huge tensor count",
        make: || with(|f| f.n_tensors = Some(u64::MAX)),
        offset: Some(8),
        needles: &["tensor count 18446744073709551615"],
    },
    Bad {
        name: "huge KV count",
        make: || with(|f| f.n_kv = Some(1 << 40)),
        offset: Some(16),
        needles: &["KV count 1099511627776"],
    },
    Bad {
        name: "KV count past the KVs",
        make: || with(|f| f.n_kv = Some(4)),
        offset: None,
        needles: &["metadata KV #"],
    },
    Bad {
        name: "truncated key",
        make: || {
            with(|f| {
                f.n_kv = Some(1);
                f.tensors.clear();
            })[..24 + 8 + 5]
                .to_vec()
        },
        offset: Some(24),
        needles: &["truncated", "key of metadata KV #0", "length 20"],
    },
    Bad {
        name: "string length over 1 GiB",
        make: || with(|f| f.kvs[0] = kv("general.name", 8, &(1u64 << 40).to_le_bytes())),
        offset: None,
        needles: &["value of 'general.name'", "1099511627776", "limit"],
    },
    Bad {
        name: "string length past EOF",
        make: || with(|f| f.kvs[0] = kv("general.name", 8, &100_000u64.to_le_bytes())),
        offset: None,
        needles: &["value of 'general.name'", "length 100000", "left"],
    },
    Bad {
        name: "key not UTF-8",
        make: || with(|f| f.kvs[0] = kv_raw_key(b"general.\xff", 4, &[0; 4])),
        offset: Some(24 + 8 + 8),
        needles: &["key of metadata KV #0", "UTF-8"],
    },
    Bad {
        name: "string value not UTF-8",
        make: || with(|f| f.kvs[0] = kv("general.name", 8, &gguf_str(b"ok\xc3("))),
        offset: None,
        needles: &["value of 'general.name'", "UTF-8"],
    },
    Bad {
        name: "empty key",
        make: || with(|f| f.kvs[0] = kv("", 4, &[0; 4])),
        offset: Some(24),
        needles: &["empty key"],
    },
    Bad {
        name: "duplicate key",
        make: || with(|f| f.kvs.push(kv("llama.block_count", 4, &[0; 4]))),
        offset: None,
        needles: &["duplicate metadata key 'llama.block_count'"],
    },
    Bad {
        name: "unknown value type",
        make: || with(|f| f.kvs[1] = kv("x.y", 13, &[0; 8])),
        offset: None,
        needles: &["'x.y'", "unknown value type id 13"],
    },
    Bad {
        name: "bool byte 2",
        make: || with(|f| f.kvs[1] = kv("x.flag", 7, &[2])),
        offset: None,
        needles: &["'x.flag'", "BOOL byte 2"],
    },
    Bad {
        name: "nested array",
        make: || with(|f| f.kvs[1] = array_kv("x.nested", 9, 1, &array_kv("", 4, 0, &[])[12..])),
        offset: None,
        needles: &["'x.nested'", "nested"],
    },
    Bad {
        name: "array of unknown element type",
        make: || with(|f| f.kvs[1] = array_kv("x.arr", 77, 0, &[])),
        offset: None,
        needles: &["'x.arr'", "element type id 77"],
    },
    Bad {
        name: "array longer than the file",
        make: || with(|f| f.kvs[1] = array_kv("x.arr", 10, 1 << 20, &[])),
        offset: None,
        needles: &["'x.arr'", "1048576 UINT64 elements", "left"],
    },
    Bad {
        name: "array over ggml's limit",
        make: || with(|f| f.kvs[1] = array_kv("x.arr", 0, (1 << 30) + 1, &[])),
        offset: None,
        needles: &["'x.arr'", "1073741825 elements", "limit"],
    },
    Bad {
        name: "string array element past EOF",
        make: || {
            with(|f| {
                f.kvs[1] = array_kv("x.strs", 8, 2, &gguf_str(b"one long enough string"));
                f.tensors.clear();
                f.alignment = 0;
            })
        },
        offset: None,
        needles: &["element 1 of array 'x.strs'"],
    },
    Bad {
        name: "alignment not a power of two",
        make: || with(|f| f.kvs.push(kv("general.alignment", 4, &48u32.to_le_bytes()))),
        offset: None,
        needles: &["general.alignment", "48", "power of two"],
    },
    Bad {
        name: "alignment zero",
        make: || with(|f| f.kvs.push(kv("general.alignment", 4, &0u32.to_le_bytes()))),
        offset: None,
        needles: &["general.alignment = 0"],
    },
    Bad {
        name: "alignment of type UINT64",
        make: || {
            with(|f| {
                f.kvs
                    .push(kv("general.alignment", 10, &32u64.to_le_bytes()))
            })
        },
        offset: None,
        needles: &["general.alignment", "UINT32", "UINT64"],
    },
    Bad {
        name: "duplicate tensor name",
        make: || with(|f| f.tensors[1].name = b"a".to_vec()),
        offset: None,
        needles: &["duplicate tensor name 'a'"],
    },
    Bad {
        name: "tensor name of 64 bytes",
        make: || with(|f| f.tensors[1].name = vec![b'n'; 64]),
        offset: None,
        needles: &["tensor #1", "64 bytes", "63"],
    },
    Bad {
        name: "tensor name not UTF-8",
        make: || with(|f| f.tensors[0].name = b"\xe2\x82".to_vec()),
        offset: None,
        needles: &["name of tensor #0", "UTF-8"],
    },
    Bad {
        name: "n_dims 0",
        make: || {
            with(|f| {
                f.tensors[0].n_dims = 0;
                f.tensors[0].ne.clear();
            })
        },
        offset: None,
        needles: &["tensor 'a'", "n_dims=0"],
    },
    Bad {
        name: "n_dims 5",
        make: || {
            with(|f| {
                f.tensors[0].n_dims = 5;
                f.tensors[0].ne = vec![8, 1, 1, 1, 1];
            })
        },
        offset: None,
        needles: &["tensor 'a'", "n_dims=5"],
    },
    Bad {
        name: "ne[0] not a multiple of the block size",
        make: || with(|f| f.tensors[1].ne[0] = 33),
        offset: None,
        needles: &["tensor 'b': ne[0]=33 is not a multiple of Q4_0's block size 32"],
    },
    Bad {
        name: "negative dim",
        make: || with(|f| f.tensors[0].ne[0] = 1 << 63),
        offset: None,
        needles: &["tensor 'a'", "ne[0]=9223372036854775808", "negative"],
    },
    Bad {
        name: "element count overflow",
        make: || {
            with(|f| {
                f.tensors[0].n_dims = 3;
                f.tensors[0].ne = vec![1 << 31, 1 << 31, 4];
            })
        },
        offset: None,
        needles: &["tensor 'a'", "element count", "overflows"],
    },
    Bad {
        name: "removed type id",
        make: || with(|f| f.tensors[0].ty = 4),
        offset: None,
        needles: &["tensor 'a'", "type id 4"],
    },
    Bad {
        name: "unknown type id",
        make: || with(|f| f.tensors[0].ty = 1000),
        offset: None,
        needles: &["tensor 'a'", "type id 1000"],
    },
    Bad {
        name: "misaligned offset",
        make: || with(|f| f.tensors[1].offset = 16),
        offset: None,
        needles: &["tensor 'b'", "offset 16", "alignment 32"],
    },
    Bad {
        name: "gap between tensors",
        make: || {
            with(|f| {
                f.tensors[1].offset = 64;
                f.data_len = 128;
            })
        },
        offset: None,
        needles: &["tensor 'b'", "offset 64", "expected 32"],
    },
    Bad {
        name: "tensors out of order",
        make: || {
            with(|f| {
                f.tensors[0].offset = 64;
                f.tensors[1].offset = 0;
            })
        },
        offset: None,
        needles: &["tensor 'a'", "offset 64", "expected 0"],
    },
    Bad {
        name: "data past EOF",
        make: || with(|f| f.data_len = 32 + 35),
        offset: None,
        needles: &["tensor 'b'", "past the end"],
    },
    Bad {
        name: "8 GiB tensor past EOF (sizes are u64)",
        make: || with(|f| f.tensors = vec![RawTensor::new("big", &[1 << 31], 0, 0)]),
        offset: None,
        needles: &["tensor 'big'", "8589934592 bytes", "past the end"],
    },
    Bad {
        name: "offset beyond 4 GiB",
        make: || with(|f| f.tensors[1].offset = (1 << 32) + 32),
        offset: None,
        needles: &["tensor 'b'", "offset 4294967328", "expected 32"],
    },
    Bad {
        name: "last tensor info truncated",
        make: || {
            let b = with(|f| f.alignment = 0);
            b[..b.len() - 3].to_vec()
        },
        offset: None,
        needles: &["truncated", "offset of tensor 'b'"],
    },
    Bad {
        name: "tensor count past the infos",
        make: || {
            with(|f| {
                f.n_tensors = Some(3);
                f.alignment = 0;
            })
        },
        offset: None,
        needles: &["tensor count 3 is impossible"],
    },
];

#[test]
fn rejects_bad_files_naming_the_field() {
    let mut failures = Vec::new();
    for case in BAD {
        let bytes = (case.make)();
        match parse_header(&bytes) {
            Ok(_) => failures.push(format!("{}: accepted", case.name)),
            Err(Error::Gguf { offset, msg }) => {
                let missing: Vec<_> = case.needles.iter().filter(|n| !msg.contains(*n)).collect();
                if !missing.is_empty() {
                    failures.push(format!("{}: message {msg:?} lacks {missing:?}", case.name));
                }
                if case.offset.is_some_and(|o| o != offset) {
                    failures.push(format!(
                        "{}: offset {offset}, expected {:?}",
                        case.name, case.offset
                    ));
                }
                if offset > bytes.len() as u64 {
                    failures.push(format!(
                        "{}: offset {offset} past the {} bytes",
                        case.name,
                        bytes.len()
                    ));
                }
            }
            Err(e) => failures.push(format!("{}: not a GGUF error: {e}", case.name)),
        }
        // GgufFile::from_bytes gives the same verdict.
        assert!(GgufFile::from_bytes(bytes).is_err(), "{}", case.name);
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        BAD.len(),
        failures.join("\n")
    );
}

#[test]
fn foreign_tensor_info_is_an_error_not_a_panic() {
    let file = GgufFile::from_bytes(RawFile::valid().bytes()).unwrap();
    let mut info = file.header().tensors[1].clone();
    info.offset = 1 << 40;
    assert!(file.try_tensor_data(&info).is_err());
    assert!(file.tensor_data(&info).is_empty());
    info.offset = u64::MAX;
    assert!(file.try_tensor_data(&info).is_err());
    assert!(file.tensor_by_name("nope").is_err());
    assert_eq!(file.tensor_by_name("b").unwrap().1.len(), 36);
    assert_eq!(
        file.header().get("general.architecture"),
        Some(&Value::String("llama".into()))
    );
}
