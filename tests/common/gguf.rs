//! Helpers shared by the GGUF tests: where the real models and the Python reference live, a JSON
//! view of a parsed file in the shape scripts/check_gguf_pyread.py prints (so ours and gguf-py's
//! can be compared field by field), and a raw byte builder for hand-made, possibly invalid, images.
#![allow(dead_code)]

use edgetune::gguf::{Array, GgufFile, Value};
use serde_json::{json, Value as Json};
use sha2::{Digest, Sha256};
use std::path::{Path, PathBuf};
use std::process::Command;

pub const SMOLLM2: &str = "models/SmolLM2-135M-Instruct.Q4_1.gguf";
pub const GEMMA3: &str = "models/gemma-3-270m-q4_k_m.gguf";

pub fn crate_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

/// A real model file; fails (never skips) when it is absent.
pub fn model(rel: &str) -> PathBuf {
    let p = crate_root().join(rel);
    assert!(
        p.is_file(),
        "{} is missing: run scripts/fetch-models.sh",
        p.display()
    );
    p
}

/// The Python with gguf-py: $EDGETUNE_PYTHON, else .venv/bin/python in the crate root. Fails
/// (never skips) when it is missing or cannot import gguf.
pub fn python() -> PathBuf {
    let py = std::env::var_os("EDGETUNE_PYTHON")
        .map(PathBuf::from)
        .unwrap_or_else(|| crate_root().join(".venv/bin/python"));
    let ok = Command::new(&py)
        .args(["-c", "import gguf, numpy"])
        .output()
        .map(|o| o.status.success())
        .unwrap_or(false);
    assert!(
        ok,
        "{} cannot import gguf: run scripts/setup-python.sh (or set EDGETUNE_PYTHON to a python \
         with gguf==0.19.0 and numpy)",
        py.display()
    );
    py
}

/// gguf-py's view of `path` (scripts/check_gguf_pyread.py).
pub fn pyread(path: &Path, hash: bool) -> Json {
    let mut cmd = Command::new(python());
    cmd.arg(crate_root().join("scripts/check_gguf_pyread.py"))
        .arg(path);
    if hash {
        cmd.arg("--hash");
    }
    let out = cmd.output().expect("running check_gguf_pyread.py");
    assert!(
        out.status.success(),
        "check_gguf_pyread.py {} failed:\n{}",
        path.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("check_gguf_pyread.py printed invalid JSON")
}

/// Our reader's view of `file` in the same JSON shape as check_gguf_pyread.py.
pub fn our_view(file: &GgufFile, hash: bool) -> Json {
    let h = file.header();
    let metadata = metadata_json(&h.metadata);
    let tensors: Vec<Json> = h
        .tensors
        .iter()
        .map(|t| {
            let sha = hash.then(|| hex(&Sha256::digest(file.tensor_data(t))));
            json!({
                "name": t.name, "type": t.ty.id(), "ne": t.ne, "offset": t.offset,
                "data_offset": h.data_offset + t.offset, "n_bytes": t.bytes, "sha256": sha,
            })
        })
        .collect();
    json!({
        "version": h.version, "alignment": h.alignment, "data_offset": h.data_offset,
        "metadata": metadata, "tensors": tensors,
    })
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Metadata in the JSON shape of `our_view`'s "metadata" (to compare what was written with what
/// was read back, floats bit for bit).
pub fn metadata_json(metadata: &[(String, Value)]) -> Json {
    metadata
        .iter()
        .map(|(k, v)| {
            let mut m = json!({"key": k, "type": v.value_type().id(), "value": value_json(v)});
            if let Value::Array(a) = v {
                m["elem_type"] = json!(a.elem_type().id());
            }
            m
        })
        .collect()
}

/// Floats as IEEE bit patterns, like the Python side, so NaN and -0.0 compare exactly.
fn value_json(v: &Value) -> Json {
    match v {
        Value::U8(x) => json!(x),
        Value::I8(x) => json!(x),
        Value::U16(x) => json!(x),
        Value::I16(x) => json!(x),
        Value::U32(x) => json!(x),
        Value::I32(x) => json!(x),
        Value::F32(x) => json!(x.to_bits()),
        Value::Bool(x) => json!(x),
        Value::String(x) => json!(x),
        Value::U64(x) => json!(x),
        Value::I64(x) => json!(x),
        Value::F64(x) => json!(x.to_bits()),
        Value::Array(a) => match a {
            Array::U8(v) => json!(v),
            Array::I8(v) => json!(v),
            Array::U16(v) => json!(v),
            Array::I16(v) => json!(v),
            Array::U32(v) => json!(v),
            Array::I32(v) => json!(v),
            Array::F32(v) => json!(v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()),
            Array::Bool(v) => json!(v),
            Array::String(v) => json!(v),
            Array::U64(v) => json!(v),
            Array::I64(v) => json!(v),
            Array::F64(v) => json!(v.iter().map(|x| x.to_bits()).collect::<Vec<_>>()),
        },
    }
}

/// Asserts two views are equal, reporting the first difference by path (the views of a real
/// model are megabytes; a whole-value diff would be unreadable).
pub fn assert_same_view(ours: &Json, theirs: &Json) {
    fn walk(path: &str, a: &Json, b: &Json) {
        match (a, b) {
            (Json::Object(x), Json::Object(y)) => {
                let mut kx: Vec<_> = x.keys().collect();
                let mut ky: Vec<_> = y.keys().collect();
                kx.sort();
                ky.sort();
                assert_eq!(kx, ky, "{path}: different fields");
                for k in kx {
                    walk(&format!("{path}.{k}"), &x[k], &y[k]);
                }
            }
            (Json::Array(x), Json::Array(y)) => {
                assert_eq!(x.len(), y.len(), "{path}: different lengths");
                for (i, (p, q)) in x.iter().zip(y).enumerate() {
                    // Name the metadata key or tensor in the path when there is one.
                    let tag = p
                        .get("key")
                        .or_else(|| p.get("name"))
                        .and_then(Json::as_str)
                        .map(|s| format!("[{i} '{s}']"))
                        .unwrap_or_else(|| format!("[{i}]"));
                    walk(&format!("{path}{tag}"), p, q);
                }
            }
            _ => assert_eq!(a, b, "{path}: ours vs gguf-py"),
        }
    }
    walk("$", ours, theirs);
}

/// A hand-made tensor info; every field is raw so tests can make it invalid.
#[derive(Clone, Debug)]
pub struct RawTensor {
    pub name: Vec<u8>,
    pub n_dims: u32,
    pub ne: Vec<u64>,
    pub ty: u32,
    pub offset: u64,
}

impl RawTensor {
    pub fn new(name: &str, ne: &[u64], ty: u32, offset: u64) -> Self {
        RawTensor {
            name: name.as_bytes().to_vec(),
            n_dims: ne.len() as u32,
            ne: ne.to_vec(),
            ty,
            offset,
        }
    }
}

/// A hand-made GGUF image. `valid()` is a small correct file; tests change one field.
#[derive(Clone, Debug)]
pub struct RawFile {
    pub magic: [u8; 4],
    pub version: u32,
    /// Overrides for the counts (default: the number of KVs / tensors given).
    pub n_tensors: Option<u64>,
    pub n_kv: Option<u64>,
    /// Encoded KVs (see `kv`), written as is.
    pub kvs: Vec<Vec<u8>>,
    pub tensors: Vec<RawTensor>,
    /// Used to pad the tensor infos up to the data section; 0 = end the image after the infos.
    pub alignment: u64,
    /// Bytes of (zero) data after the data section start.
    pub data_len: u64,
    /// Writes every integer big-endian (the KVs are re-encoded by the caller if needed).
    pub big_endian: bool,
}

impl RawFile {
    /// Two KVs and two tensors: 'a' F32 [8] at 0 (32 bytes), 'b' Q4_0 [32, 2] at 32 (36 bytes,
    /// padded to 64), so the data section is 96 bytes.
    pub fn valid() -> Self {
        RawFile {
            magic: *b"GGUF",
            version: 3,
            n_tensors: None,
            n_kv: None,
            kvs: vec![
                kv_str("general.architecture", "llama"),
                kv("llama.block_count", 4, &7u32.to_le_bytes()),
            ],
            tensors: vec![
                RawTensor::new("a", &[8], 0, 0),
                RawTensor::new("b", &[32, 2], 2, 32),
            ],
            alignment: 32,
            data_len: 96,
            big_endian: false,
        }
    }

    pub fn bytes(&self) -> Vec<u8> {
        let be = self.big_endian;
        let u32b = |v: u32| if be { v.to_be_bytes() } else { v.to_le_bytes() };
        let u64b = |v: u64| if be { v.to_be_bytes() } else { v.to_le_bytes() };
        let mut b = self.magic.to_vec();
        b.extend(u32b(self.version));
        b.extend(u64b(self.n_tensors.unwrap_or(self.tensors.len() as u64)));
        b.extend(u64b(self.n_kv.unwrap_or(self.kvs.len() as u64)));
        for kv in &self.kvs {
            b.extend(kv);
        }
        for t in &self.tensors {
            b.extend(u64b(t.name.len() as u64));
            b.extend(&t.name);
            b.extend(u32b(t.n_dims));
            for &d in &t.ne {
                b.extend(u64b(d));
            }
            b.extend(u32b(t.ty));
            b.extend(u64b(t.offset));
        }
        if self.alignment == 0 {
            return b; // header only: no padding, no data
        }
        let data_start = (b.len() as u64).next_multiple_of(self.alignment);
        b.resize((data_start + self.data_len) as usize, 0);
        b
    }
}

/// An encoded KV: key (u64 length + bytes), value type id, payload bytes.
pub fn kv(key: &str, type_id: u32, payload: &[u8]) -> Vec<u8> {
    kv_raw_key(key.as_bytes(), type_id, payload)
}

pub fn kv_raw_key(key: &[u8], type_id: u32, payload: &[u8]) -> Vec<u8> {
    let mut b = (key.len() as u64).to_le_bytes().to_vec();
    b.extend(key);
    b.extend(type_id.to_le_bytes());
    b.extend(payload);
    b
}

pub fn kv_str(key: &str, s: &str) -> Vec<u8> {
    kv(key, 8, &gguf_str(s.as_bytes()))
}

/// A GGUF string payload: u64 length + bytes.
pub fn gguf_str(s: &[u8]) -> Vec<u8> {
    let mut b = (s.len() as u64).to_le_bytes().to_vec();
    b.extend(s);
    b
}

/// A deterministic xorshift64* generator (no rand dependency; seeds are printed on failure).
#[derive(Clone, Debug)]
pub struct Rng(pub u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform in 0..n (n > 0).
    pub fn below(&mut self, n: u64) -> u64 {
        self.next_u64() % n
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next_u64() as u8).collect()
    }
}
