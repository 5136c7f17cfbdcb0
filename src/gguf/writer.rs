//! GGUF writer (FORMATS.md §1): version 3, laid out exactly as ggml and gguf-py write files —
//! tensor offsets are the running sum of PAD(nbytes, alignment), zero padding follows the tensor
//! infos and every tensor (the last one too), so file size = data_offset + Σ PAD(nbytes_i, A).
//!
//! The header is built in memory; tensor data are streamed by a caller callback into a temp file
//! that is renamed into place only when everything was written and checked.

use super::reader::{pad_to, Header, MAX_ARRAY_LEN, MAX_STRING_LEN};
use super::types::GgmlType;
use super::value::{Array, Value};
use super::{DEFAULT_ALIGNMENT, MAX_DIMS, MAX_NAME_LEN};
use crate::error::{Error, Result};
use crate::util::write_atomic;
use std::collections::HashSet;
use std::io::{self, Write};
use std::path::Path;

const VERSION: u32 = 3;

/// A tensor to be written: name, type and dims (GGUF order). Its data come later, streamed.
#[derive(Clone, Debug)]
pub struct TensorSpec {
    pub name: String,
    pub ty: GgmlType,
    pub ne: Vec<u64>,
}

impl TensorSpec {
    pub fn new(name: impl Into<String>, ty: GgmlType, ne: &[u64]) -> Self {
        TensorSpec {
            name: name.into(),
            ty,
            ne: ne.to_vec(),
        }
    }

    /// Checks the spec as ggml would and returns its size in bytes.
    pub fn validate(&self) -> Result<u64> {
        let name = &self.name;
        let bad = |msg: String| Error::InvalidArgument(format!("tensor '{name}': {msg}"));
        if name.len() > MAX_NAME_LEN {
            return Err(bad(format!(
                "name is {} bytes, over ggml's limit of {MAX_NAME_LEN}",
                name.len()
            )));
        }
        if self.ne.is_empty() || self.ne.len() > MAX_DIMS {
            return Err(bad(format!(
                "{} dims {:?}, expected 1..={MAX_DIMS}",
                self.ne.len(),
                self.ne
            )));
        }
        if let Some((d, v)) = self
            .ne
            .iter()
            .enumerate()
            .find(|(_, &v)| v > i64::MAX as u64)
        {
            return Err(bad(format!("ne[{d}]={v} is negative as ggml's int64")));
        }
        let elements = self.ne.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
        if elements.is_none_or(|e| e > i64::MAX as u64) {
            return Err(bad(format!(
                "element count of ne={:?} overflows int64",
                self.ne
            )));
        }
        let ty = self.ty;
        if ty.row_bytes(self.ne[0]).is_none() {
            return Err(bad(format!(
                "ne[0]={} is not a multiple of {ty}'s block size {}",
                self.ne[0],
                ty.block_size()
            )));
        }
        ty.tensor_bytes(&self.ne)
            .ok_or_else(|| bad(format!("byte size of {ty} ne={:?} overflows", self.ne)))
    }
}

/// Where everything goes in the file the writer will produce.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Layout {
    pub alignment: u64,
    /// Absolute offset of the data section (= length of the padded header).
    pub data_offset: u64,
    /// Per tensor: offset relative to the data section, and size in bytes (without padding).
    pub offsets: Vec<u64>,
    pub sizes: Vec<u64>,
    pub file_size: u64,
}

#[derive(Clone, Debug, Default)]
pub struct GgufWriter {
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorSpec>,
}

impl GgufWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// A writer holding a copy of `header`'s metadata (file order, `general.alignment` included)
    /// and tensor specs, e.g. to re-encode a model.
    pub fn from_header(header: &Header) -> Self {
        GgufWriter {
            metadata: header.metadata.clone(),
            tensors: header
                .tensors
                .iter()
                .map(|t| TensorSpec::new(t.name.clone(), t.ty, &t.ne))
                .collect(),
        }
    }

    /// Sets a metadata key (replacing an earlier value of the same key, keeping its position).
    pub fn set(&mut self, key: &str, value: Value) {
        match self.metadata.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value,
            None => self.metadata.push((key.to_owned(), value)),
        }
    }

    /// Appends a tensor after checking its spec and that its name is new.
    pub fn add_tensor(&mut self, spec: TensorSpec) -> Result<()> {
        spec.validate()?;
        if self.tensors.iter().any(|t| t.name == spec.name) {
            return Err(Error::InvalidArgument(format!(
                "duplicate tensor name '{}'",
                spec.name
            )));
        }
        self.tensors.push(spec);
        Ok(())
    }

    /// The data alignment: `general.alignment` if set (must be a UINT32 power of two), else 32.
    pub fn alignment(&self) -> Result<u64> {
        match self.metadata.iter().find(|(k, _)| k == "general.alignment") {
            None => Ok(DEFAULT_ALIGNMENT),
            Some((_, Value::U32(a))) if *a != 0 && a.is_power_of_two() => Ok(*a as u64),
            Some((_, v)) => Err(Error::InvalidArgument(format!(
                "general.alignment must be a non-zero power of two of type UINT32, got {} {v}",
                v.type_name()
            ))),
        }
    }

    /// Validates metadata and tensors and computes where everything goes.
    pub fn layout(&self) -> Result<Layout> {
        Ok(self.encode_header()?.1)
    }

    /// The header bytes (including the zero padding up to the data section) and the layout.
    pub fn encode_header(&self) -> Result<(Vec<u8>, Layout)> {
        let alignment = self.alignment()?;
        let mut buf = Vec::new();
        buf.extend_from_slice(b"GGUF");
        put_u32(&mut buf, VERSION);
        put_u64(&mut buf, self.tensors.len() as u64);
        put_u64(&mut buf, self.metadata.len() as u64);

        let mut keys = HashSet::with_capacity(self.metadata.len());
        for (key, value) in &self.metadata {
            if key.is_empty() {
                return Err(Error::InvalidArgument("empty metadata key".into()));
            }
            if !keys.insert(key.as_str()) {
                return Err(Error::InvalidArgument(format!(
                    "duplicate metadata key '{key}'"
                )));
            }
            put_str(&mut buf, key, key)?;
            put_u32(&mut buf, value.value_type().id());
            put_value(&mut buf, value, key)?;
        }

        let mut names = HashSet::with_capacity(self.tensors.len());
        let mut offsets = Vec::with_capacity(self.tensors.len());
        let mut sizes = Vec::with_capacity(self.tensors.len());
        let mut next = 0u64;
        for t in &self.tensors {
            let size = t.validate()?;
            if !names.insert(t.name.as_str()) {
                return Err(Error::InvalidArgument(format!(
                    "duplicate tensor name '{}'",
                    t.name
                )));
            }
            put_str(&mut buf, &t.name, &t.name)?;
            put_u32(&mut buf, t.ne.len() as u32);
            for &d in &t.ne {
                put_u64(&mut buf, d);
            }
            put_u32(&mut buf, t.ty.id());
            put_u64(&mut buf, next);
            offsets.push(next);
            sizes.push(size);
            next = pad_to(size, alignment)
                .and_then(|p| next.checked_add(p))
                .ok_or_else(|| {
                    Error::InvalidArgument(format!("tensor '{}': data offsets overflow", t.name))
                })?;
        }

        // `alignment` is a u32 power of two, so it fits usize; a real buffer cannot overflow.
        let data_offset = buf.len().next_multiple_of(alignment as usize);
        buf.resize(data_offset, 0);
        let data_offset = data_offset as u64;
        let file_size = data_offset
            .checked_add(next)
            .ok_or_else(|| Error::InvalidArgument("file size overflows u64".into()))?;
        let layout = Layout {
            alignment,
            data_offset,
            offsets,
            sizes,
            file_size,
        };
        Ok((buf, layout))
    }

    /// Writes the file atomically. `write_data(i, out)` must write exactly the bytes of tensor `i`
    /// (padding is added by the writer); it is called once per tensor, in order.
    pub fn write(
        &self,
        path: &Path,
        write_data: &mut dyn FnMut(usize, &mut dyn Write) -> Result<()>,
    ) -> Result<()> {
        let (head, layout) = self.encode_header().map_err(|e| e.in_file(path))?;
        let io_err = |e: io::Error| Error::io("writing", e);
        write_atomic(path, |w| {
            w.write_all(&head).map_err(io_err)?;
            for (i, (t, &size)) in self.tensors.iter().zip(&layout.sizes).enumerate() {
                let mut counter = CountingWriter {
                    inner: &mut *w,
                    count: 0,
                };
                write_data(i, &mut counter)?;
                let written = counter.count;
                if written != size {
                    return Err(Error::InvalidArgument(format!(
                        "tensor '{}': the data callback wrote {written} bytes, expected {size} \
                         ({} {:?})",
                        t.name, t.ty, t.ne
                    )));
                }
                let padding = pad_to(size, layout.alignment).unwrap_or(size) - size;
                write_zeros(w, padding).map_err(io_err)?;
            }
            Ok(())
        })
        .map_err(|e| e.in_file(path))
    }

    /// Writes the file with tensor `i`'s bytes taken from `data[i]`.
    pub fn write_with_data(&self, path: &Path, data: &[&[u8]]) -> Result<()> {
        if data.len() != self.tensors.len() {
            return Err(Error::InvalidArgument(format!(
                "{} data buffers for {} tensors",
                data.len(),
                self.tensors.len()
            ))
            .in_file(path));
        }
        self.write(path, &mut |i, out| {
            out.write_all(data[i])
                .map_err(|e| Error::io(format!("writing tensor #{i}"), e))
        })
    }
}

/// Counts what the data callback writes, so a wrong length is caught before the file is renamed.
struct CountingWriter<'a> {
    inner: &'a mut dyn Write,
    count: u64,
}

impl Write for CountingWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

fn write_zeros(w: &mut dyn Write, mut n: u64) -> io::Result<()> {
    const ZEROS: [u8; 4096] = [0; 4096];
    while n > 0 {
        let k = n.min(ZEROS.len() as u64) as usize;
        w.write_all(&ZEROS[..k])?;
        n -= k as u64;
    }
    Ok(())
}

fn put_u32(buf: &mut Vec<u8>, v: u32) {
    buf.extend_from_slice(&v.to_le_bytes());
}

fn put_u64(buf: &mut Vec<u8>, v: u64) {
    buf.extend_from_slice(&v.to_le_bytes());
}

fn put_str(buf: &mut Vec<u8>, s: &str, key: &str) -> Result<()> {
    if s.len() as u64 > MAX_STRING_LEN {
        return Err(Error::InvalidArgument(format!(
            "'{key}': string of {} bytes is over ggml's limit of {MAX_STRING_LEN}",
            s.len()
        )));
    }
    put_u64(buf, s.len() as u64);
    buf.extend_from_slice(s.as_bytes());
    Ok(())
}

fn put_value(buf: &mut Vec<u8>, value: &Value, key: &str) -> Result<()> {
    match value {
        Value::U8(v) => buf.push(*v),
        Value::I8(v) => buf.extend_from_slice(&v.to_le_bytes()),
        Value::U16(v) => buf.extend_from_slice(&v.to_le_bytes()),
        Value::I16(v) => buf.extend_from_slice(&v.to_le_bytes()),
        Value::U32(v) => put_u32(buf, *v),
        Value::I32(v) => buf.extend_from_slice(&v.to_le_bytes()),
        Value::F32(v) => buf.extend_from_slice(&v.to_le_bytes()),
        Value::Bool(v) => buf.push(u8::from(*v)),
        Value::String(s) => put_str(buf, s, key)?,
        Value::Array(a) => put_array(buf, a, key)?,
        Value::U64(v) => put_u64(buf, *v),
        Value::I64(v) => buf.extend_from_slice(&v.to_le_bytes()),
        Value::F64(v) => buf.extend_from_slice(&v.to_le_bytes()),
    }
    Ok(())
}

fn put_array(buf: &mut Vec<u8>, a: &Array, key: &str) -> Result<()> {
    if a.len() as u64 > MAX_ARRAY_LEN {
        return Err(Error::InvalidArgument(format!(
            "'{key}': array of {} elements is over ggml's limit of {MAX_ARRAY_LEN}",
            a.len()
        )));
    }
    put_u32(buf, a.elem_type().id());
    put_u64(buf, a.len() as u64);
    macro_rules! le {
        ($v:expr) => {
            for x in $v {
                buf.extend_from_slice(&x.to_le_bytes());
            }
        };
    }
    match a {
        Array::U8(v) => buf.extend_from_slice(v),
        Array::I8(v) => le!(v),
        Array::U16(v) => le!(v),
        Array::I16(v) => le!(v),
        Array::U32(v) => le!(v),
        Array::I32(v) => le!(v),
        Array::F32(v) => le!(v),
        Array::Bool(v) => buf.extend(v.iter().map(|&b| u8::from(b))),
        Array::String(v) => {
            for s in v {
                put_str(buf, s, key)?;
            }
        }
        Array::U64(v) => le!(v),
        Array::I64(v) => le!(v),
        Array::F64(v) => le!(v),
    }
    Ok(())
}
