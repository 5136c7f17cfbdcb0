//! GGUF reader (FORMATS.md §1): parses and validates a whole header before anything uses it, then
//! hands out tensor data as zero-copy views into a read-only memory map.
//!
//! Every count and length is checked against the bytes that are left before anything is allocated
//! from it, so a hostile file can make us allocate at most a small multiple of its own size. The
//! checks mirror ggml's gguf.cpp (limits, alignment, tensor order) so that a file we accept is one
//! llama.cpp accepts too. Failures are `Error::Gguf` with the byte offset of the offending field.

use super::types::GgmlType;
use super::value::{Array, FromValue, Value, ValueType};
use super::{DEFAULT_ALIGNMENT, MAX_DIMS, MAX_NAME_LEN};
use crate::error::{Error, Result};
use memmap2::Mmap;
use std::collections::HashSet;
use std::fs::File;
use std::path::Path;

/// ggml's GGUF_MAX_STRING_LENGTH and GGUF_MAX_ARRAY_ELEMENTS.
pub const MAX_STRING_LEN: u64 = 1 << 30;
pub const MAX_ARRAY_LEN: u64 = 1 << 30;
/// The fewest bytes a metadata KV can take (key length + value type), used to bound the KV count.
const MIN_KV_BYTES: u64 = 8 + 4;
/// The fewest bytes a tensor info can take (name length, n_dims, one dim, type, offset).
const MIN_TENSOR_INFO_BYTES: u64 = 8 + 4 + 8 + 4 + 8;
const MAGIC: &[u8; 4] = b"GGUF";

/// One tensor info record.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions in GGUF order: `ne[0]` is the innermost (contiguous) one.
    pub ne: Vec<u64>,
    pub ty: GgmlType,
    /// Offset relative to the start of the data section.
    pub offset: u64,
    /// Size in bytes of the tensor data.
    pub bytes: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.ne.iter().product()
    }
}

/// The parsed, validated header of a GGUF file.
#[derive(Clone, Debug)]
pub struct Header {
    pub version: u32,
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Absolute file offset of the data section.
    pub data_offset: u64,
}

impl Header {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }

    /// Position of a tensor in file order.
    pub fn tensor_index(&self, name: &str) -> Option<usize> {
        self.tensors.iter().position(|t| t.name == name)
    }

    /// A required key converted to `T` (see `FromValue`): an error names the key when it is missing
    /// or holds a value that does not convert losslessly.
    pub fn get_as<'a, T: FromValue<'a>>(&'a self, key: &str) -> Result<T> {
        self.get_opt(key)?.ok_or_else(|| Error::Gguf {
            offset: 0,
            msg: format!("metadata key '{key}' is missing (expected {})", T::EXPECTED),
        })
    }

    /// An optional key converted to `T`: `Ok(None)` when absent, an error when present but of the
    /// wrong type.
    pub fn get_opt<'a, T: FromValue<'a>>(&'a self, key: &str) -> Result<Option<T>> {
        let Some(value) = self.get(key) else {
            return Ok(None);
        };
        T::from_value(value).map(Some).ok_or_else(|| Error::Gguf {
            offset: 0,
            msg: format!(
                "metadata key '{key}' is {} {value}, expected {}",
                value.type_name(),
                T::EXPECTED
            ),
        })
    }

    /// Any integer type whose value fits u32.
    pub fn get_u32(&self, key: &str) -> Result<u32> {
        self.get_as(key)
    }

    /// Any integer type whose value fits u64.
    pub fn get_u64(&self, key: &str) -> Result<u64> {
        self.get_as(key)
    }

    /// FLOAT32, or FLOAT64 narrowed.
    pub fn get_f32(&self, key: &str) -> Result<f32> {
        self.get_as(key)
    }

    pub fn get_str(&self, key: &str) -> Result<&str> {
        self.get_as(key)
    }

    pub fn get_bool(&self, key: &str) -> Result<bool> {
        self.get_as(key)
    }

    pub fn get_array(&self, key: &str) -> Result<&Array> {
        self.get_as(key)
    }
}

fn err(offset: usize, msg: impl Into<String>) -> Error {
    Error::Gguf {
        offset: offset as u64,
        msg: msg.into(),
    }
}

/// `x` rounded up to a multiple of `align` (a power of two), or `None` on overflow (GGML_PAD).
pub(crate) fn pad_to(x: u64, align: u64) -> Option<u64> {
    Some(x.checked_add(align - 1)? & !(align - 1))
}

/// A bounds-checked little-endian reader over the image. `what` closures name the field in
/// errors and only run when there is one.
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

impl<'a> Cursor<'a> {
    fn remaining(&self) -> usize {
        self.buf.len() - self.pos
    }

    fn take(&mut self, n: usize, what: impl FnOnce() -> String) -> Result<&'a [u8]> {
        match self.buf.get(self.pos..).and_then(|rest| rest.get(..n)) {
            Some(bytes) => {
                self.pos += n;
                Ok(bytes)
            }
            None => Err(err(
                self.pos,
                format!(
                    "truncated: {} needs {n} bytes but only {} are left",
                    what(),
                    self.remaining()
                ),
            )),
        }
    }

    fn array<const N: usize>(&mut self, what: impl FnOnce() -> String) -> Result<[u8; N]> {
        let bytes = self.take(N, what)?;
        let mut out = [0u8; N];
        out.copy_from_slice(bytes);
        Ok(out)
    }

    fn u32(&mut self, what: impl FnOnce() -> String) -> Result<u32> {
        self.array(what).map(u32::from_le_bytes)
    }

    fn u64(&mut self, what: impl FnOnce() -> String) -> Result<u64> {
        self.array(what).map(u64::from_le_bytes)
    }

    /// A GGUF string (u64 length + bytes), which must be valid UTF-8.
    fn str(&mut self, what: impl Fn() -> String) -> Result<&'a str> {
        let at = self.pos;
        let len = self.u64(|| format!("length of {}", what()))?;
        if len > MAX_STRING_LEN {
            return Err(err(
                at,
                format!(
                    "{} has length {len}, over ggml's limit of {MAX_STRING_LEN} bytes",
                    what()
                ),
            ));
        }
        if len > self.remaining() as u64 {
            return Err(err(
                at,
                format!(
                    "truncated: {} has length {len}, but only {} bytes are left in the file",
                    what(),
                    self.remaining()
                ),
            ));
        }
        let bytes = self.take(len as usize, &what)?;
        std::str::from_utf8(bytes).map_err(|e| {
            err(
                at + 8 + e.valid_up_to(),
                format!(
                    "{} is not valid UTF-8 (bad byte {} of {len})",
                    what(),
                    e.valid_up_to()
                ),
            )
        })
    }
}

/// Parses and validates a complete GGUF image (header and data bounds).
pub fn parse_header(bytes: &[u8]) -> Result<Header> {
    let mut cur = Cursor { buf: bytes, pos: 0 };
    let version = parse_preamble(&mut cur)?;

    let n_tensors = cur.u64(|| "tensor count".into())?;
    let n_kv = cur.u64(|| "metadata KV count".into())?;
    let left = cur.remaining() as u64;
    if n_kv > left / MIN_KV_BYTES {
        return Err(err(
            16,
            format!(
                "metadata KV count {n_kv} is impossible: each KV takes at least {MIN_KV_BYTES} \
                 bytes and only {left} bytes follow the header"
            ),
        ));
    }
    if n_tensors > left / MIN_TENSOR_INFO_BYTES {
        return Err(err(
            8,
            format!(
                "tensor count {n_tensors} is impossible: each tensor info takes at least \
                 {MIN_TENSOR_INFO_BYTES} bytes and only {left} bytes follow the header"
            ),
        ));
    }

    let (metadata, alignment) = parse_metadata(&mut cur, n_kv as usize)?;
    let (tensors, offset_fields) = parse_tensor_infos(&mut cur, n_tensors as usize)?;
    let end_of_infos = cur.pos as u64;
    let data_offset = pad_to(end_of_infos, alignment).ok_or_else(|| {
        err(
            cur.pos,
            format!("data section offset overflows (end of tensor infos {end_of_infos})"),
        )
    })?;
    check_tensor_layout(
        &tensors,
        &offset_fields,
        alignment,
        data_offset,
        bytes.len(),
    )?;
    Ok(Header {
        version,
        metadata,
        tensors,
        alignment,
        data_offset,
    })
}

/// Magic and version; says so when the file looks byte-swapped (big-endian).
fn parse_preamble(cur: &mut Cursor) -> Result<u32> {
    if cur.buf.len() < 4 {
        return Err(err(
            0,
            format!(
                "file is {} bytes, too short for the GGUF magic",
                cur.buf.len()
            ),
        ));
    }
    let magic = cur.take(4, || "magic".into())?;
    if magic != MAGIC {
        return Err(err(
            0,
            format!(
                "bad magic {magic:02x?} ({:?}), expected \"GGUF\"",
                String::from_utf8_lossy(magic)
            ),
        ));
    }
    let version = cur.u32(|| "version".into())?;
    if version != 0 && version & 0xFFFF == 0 {
        return Err(err(
            4,
            format!(
                "version field reads {version:#010x}: this looks like a big-endian GGUF file \
                 (version {} byte-swapped); only little-endian files are supported",
                version.swap_bytes()
            ),
        ));
    }
    match version {
        2 | 3 => Ok(version),
        1 => Err(err(
            4,
            "GGUF version 1 is no longer supported (need 2 or 3)",
        )),
        v => Err(err(
            4,
            format!("unsupported GGUF version {v} (this reader handles 2 and 3)"),
        )),
    }
}

/// All KVs in file order, plus the data alignment (`general.alignment`, else 32).
fn parse_metadata(cur: &mut Cursor, n_kv: usize) -> Result<(Vec<(String, Value)>, u64)> {
    let mut metadata = Vec::with_capacity(n_kv);
    let mut seen: HashSet<&str> = HashSet::with_capacity(n_kv);
    let mut alignment = DEFAULT_ALIGNMENT;
    for i in 0..n_kv {
        let key_at = cur.pos;
        let key = cur.str(|| format!("key of metadata KV #{i}"))?;
        if key.is_empty() {
            return Err(err(key_at, format!("metadata KV #{i} has an empty key")));
        }
        if !seen.insert(key) {
            return Err(err(key_at, format!("duplicate metadata key '{key}'")));
        }
        let type_at = cur.pos;
        let type_id = cur.u32(|| format!("value type of '{key}'"))?;
        let ty = ValueType::from_id(type_id).ok_or_else(|| {
            err(
                type_at,
                format!("metadata key '{key}' has unknown value type id {type_id}"),
            )
        })?;
        let value_at = cur.pos;
        let value = parse_value(cur, ty, key)?;
        if key == "general.alignment" {
            alignment = match value {
                Value::U32(a) if a != 0 && a.is_power_of_two() => a as u64,
                Value::U32(a) => {
                    return Err(err(
                        value_at,
                        format!("general.alignment = {a} is not a non-zero power of two"),
                    ))
                }
                ref v => {
                    return Err(err(
                        type_at,
                        format!("general.alignment must be UINT32, found {}", v.type_name()),
                    ))
                }
            };
        }
        metadata.push((key.to_owned(), value));
    }
    Ok((metadata, alignment))
}

fn parse_value(cur: &mut Cursor, ty: ValueType, key: &str) -> Result<Value> {
    let what = || format!("value of '{key}'");
    Ok(match ty {
        ValueType::U8 => Value::U8(cur.array::<1>(what)?[0]),
        ValueType::I8 => Value::I8(i8::from_le_bytes(cur.array(what)?)),
        ValueType::U16 => Value::U16(u16::from_le_bytes(cur.array(what)?)),
        ValueType::I16 => Value::I16(i16::from_le_bytes(cur.array(what)?)),
        ValueType::U32 => Value::U32(u32::from_le_bytes(cur.array(what)?)),
        ValueType::I32 => Value::I32(i32::from_le_bytes(cur.array(what)?)),
        ValueType::F32 => Value::F32(f32::from_le_bytes(cur.array(what)?)),
        ValueType::U64 => Value::U64(u64::from_le_bytes(cur.array(what)?)),
        ValueType::I64 => Value::I64(i64::from_le_bytes(cur.array(what)?)),
        ValueType::F64 => Value::F64(f64::from_le_bytes(cur.array(what)?)),
        ValueType::Bool => {
            let at = cur.pos;
            Value::Bool(bool_byte(cur.array::<1>(what)?[0], at, key)?)
        }
        ValueType::String => Value::String(cur.str(what)?.to_owned()),
        ValueType::Array => Value::Array(parse_array(cur, key)?),
    })
}

fn bool_byte(b: u8, at: usize, key: &str) -> Result<bool> {
    match b {
        0 => Ok(false),
        1 => Ok(true),
        b => Err(err(
            at,
            format!("'{key}': BOOL byte {b} is neither 0 nor 1"),
        )),
    }
}

/// Decodes `n` fixed-size little-endian elements after checking they fit in what is left.
macro_rules! fixed_array {
    ($cur:expr, $n:expr, $t:ty, $key:expr) => {{
        const SIZE: usize = std::mem::size_of::<$t>();
        let bytes = $cur.take($n * SIZE, || format!("elements of array '{}'", $key))?;
        bytes
            .chunks_exact(SIZE)
            .map(|c| {
                let mut b = [0u8; SIZE];
                b.copy_from_slice(c);
                <$t>::from_le_bytes(b)
            })
            .collect::<Vec<$t>>()
    }};
}

fn parse_array(cur: &mut Cursor, key: &str) -> Result<Array> {
    let type_at = cur.pos;
    let elem_id = cur.u32(|| format!("element type of array '{key}'"))?;
    let elem = ValueType::from_id(elem_id).ok_or_else(|| {
        err(
            type_at,
            format!("array '{key}' has unknown element type id {elem_id}"),
        )
    })?;
    let nested = || {
        err(
            type_at,
            format!("array '{key}' is a nested array (element type ARRAY), which ggml rejects"),
        )
    };
    if elem == ValueType::Array {
        return Err(nested());
    }
    let n_at = cur.pos;
    let n = cur.u64(|| format!("length of array '{key}'"))?;
    if n > MAX_ARRAY_LEN {
        return Err(err(
            n_at,
            format!("array '{key}' has {n} elements, over ggml's limit of {MAX_ARRAY_LEN}"),
        ));
    }
    let min = elem.min_size() as u64;
    let left = cur.remaining() as u64;
    if n > left / min {
        return Err(err(
            n_at,
            format!(
                "array '{key}' has {n} {elem} elements, needing at least {} bytes, but only \
                 {left} bytes are left",
                n * min
            ),
        ));
    }
    // n <= left / min, so n fits usize and every allocation below is bounded by the file size.
    let n = n as usize;
    Ok(match elem {
        ValueType::U8 => Array::U8(fixed_array!(cur, n, u8, key)),
        ValueType::I8 => Array::I8(fixed_array!(cur, n, i8, key)),
        ValueType::U16 => Array::U16(fixed_array!(cur, n, u16, key)),
        ValueType::I16 => Array::I16(fixed_array!(cur, n, i16, key)),
        ValueType::U32 => Array::U32(fixed_array!(cur, n, u32, key)),
        ValueType::I32 => Array::I32(fixed_array!(cur, n, i32, key)),
        ValueType::F32 => Array::F32(fixed_array!(cur, n, f32, key)),
        ValueType::U64 => Array::U64(fixed_array!(cur, n, u64, key)),
        ValueType::I64 => Array::I64(fixed_array!(cur, n, i64, key)),
        ValueType::F64 => Array::F64(fixed_array!(cur, n, f64, key)),
        ValueType::Bool => {
            let at = cur.pos;
            let bytes = cur.take(n, || format!("elements of array '{key}'"))?;
            let mut out = Vec::with_capacity(n);
            for (i, &b) in bytes.iter().enumerate() {
                out.push(bool_byte(b, at + i, key)?);
            }
            Array::Bool(out)
        }
        ValueType::String => {
            let mut out = Vec::with_capacity(n);
            for i in 0..n {
                out.push(
                    cur.str(|| format!("element {i} of array '{key}'"))?
                        .to_owned(),
                );
            }
            Array::String(out)
        }
        ValueType::Array => return Err(nested()),
    })
}

/// Tensor infos in file order, plus the file offset of each info's `offset` field (for errors).
fn parse_tensor_infos(cur: &mut Cursor, n: usize) -> Result<(Vec<TensorInfo>, Vec<usize>)> {
    let left = cur.remaining() as u64;
    if n as u64 > left / MIN_TENSOR_INFO_BYTES {
        return Err(err(
            cur.pos,
            format!(
                "tensor count {n} is impossible: each tensor info takes at least \
                 {MIN_TENSOR_INFO_BYTES} bytes and only {left} bytes follow the metadata"
            ),
        ));
    }
    let mut tensors = Vec::with_capacity(n);
    let mut offset_fields = Vec::with_capacity(n);
    let mut seen: HashSet<&str> = HashSet::with_capacity(n);
    for i in 0..n {
        let name_at = cur.pos;
        let name = cur.str(|| format!("name of tensor #{i}"))?;
        if name.len() > MAX_NAME_LEN {
            return Err(err(
                name_at,
                format!(
                    "tensor #{i} name is {} bytes, over ggml's limit of {MAX_NAME_LEN}: '{name}'",
                    name.len()
                ),
            ));
        }
        if !seen.insert(name) {
            return Err(err(name_at, format!("duplicate tensor name '{name}'")));
        }
        let dims_at = cur.pos;
        let n_dims = cur.u32(|| format!("n_dims of tensor '{name}'"))?;
        if n_dims == 0 || n_dims as usize > MAX_DIMS {
            return Err(err(
                dims_at,
                format!("tensor '{name}': n_dims={n_dims} is outside 1..={MAX_DIMS}"),
            ));
        }
        let mut ne = Vec::with_capacity(n_dims as usize);
        for d in 0..n_dims as usize {
            let at = cur.pos;
            let v = cur.u64(|| format!("ne[{d}] of tensor '{name}'"))?;
            if v > i64::MAX as u64 {
                return Err(err(
                    at,
                    format!("tensor '{name}': ne[{d}]={v} is negative as ggml's int64"),
                ));
            }
            ne.push(v);
        }
        let elements = ne.iter().try_fold(1u64, |acc, &d| acc.checked_mul(d));
        if elements.is_none_or(|e| e > i64::MAX as u64) {
            return Err(err(
                dims_at,
                format!("tensor '{name}': element count of ne={ne:?} overflows int64"),
            ));
        }
        let type_at = cur.pos;
        let type_id = cur.u32(|| format!("type of tensor '{name}'"))?;
        let ty = GgmlType::from_id(type_id).ok_or_else(|| {
            err(
                type_at,
                format!("tensor '{name}': unknown or removed ggml type id {type_id}"),
            )
        })?;
        if ty.row_bytes(ne[0]).is_none() {
            return Err(err(
                dims_at + 4,
                format!(
                    "tensor '{name}': ne[0]={} is not a multiple of {ty}'s block size {}",
                    ne[0],
                    ty.block_size()
                ),
            ));
        }
        let bytes = ty.tensor_bytes(&ne).ok_or_else(|| {
            err(
                dims_at,
                format!("tensor '{name}': byte size of {ty} ne={ne:?} overflows"),
            )
        })?;
        offset_fields.push(cur.pos);
        let offset = cur.u64(|| format!("offset of tensor '{name}'"))?;
        tensors.push(TensorInfo {
            name: name.to_owned(),
            ne,
            ty,
            offset,
            bytes,
        });
    }
    Ok((tensors, offset_fields))
}

/// Offsets must be aligned, in info order and contiguous (each tensor padded to the alignment),
/// as gguf.cpp requires; every tensor's bytes must lie inside the image.
fn check_tensor_layout(
    tensors: &[TensorInfo],
    offset_fields: &[usize],
    alignment: u64,
    data_offset: u64,
    file_len: usize,
) -> Result<()> {
    let mut expected = 0u64;
    for (t, &at) in tensors.iter().zip(offset_fields) {
        let name = &t.name;
        if t.offset % alignment != 0 {
            return Err(err(
                at,
                format!(
                    "tensor '{name}': offset {} is not a multiple of the alignment {alignment}",
                    t.offset
                ),
            ));
        }
        if t.offset != expected {
            return Err(err(
                at,
                format!(
                    "tensor '{name}': offset {} but expected {expected} (tensors must be stored \
                     in order, each padded to {alignment} bytes)",
                    t.offset
                ),
            ));
        }
        let range = data_offset
            .checked_add(t.offset)
            .and_then(|start| Some((start, start.checked_add(t.bytes)?)));
        match range {
            Some((_, end)) if end <= file_len as u64 => {}
            _ => {
                return Err(err(
                    at,
                    format!(
                        "tensor '{name}': data at {data_offset}+{} ({} bytes) extends past the \
                         end of the file ({file_len} bytes)",
                        t.offset, t.bytes
                    ),
                ))
            }
        }
        expected = pad_to(t.bytes, alignment)
            .and_then(|p| expected.checked_add(p))
            .ok_or_else(|| err(at, format!("tensor '{name}': data offsets overflow")))?;
    }
    Ok(())
}

/// The bytes behind a `GgufFile`: a read-only map of the file, a buffer it owns, or memory that
/// outlives it (`from_static`, the C ABI's caller-owned buffer).
enum Storage {
    Map(Mmap),
    Owned(Vec<u8>),
    Borrowed(&'static [u8]),
}

impl Storage {
    fn bytes(&self) -> &[u8] {
        match self {
            Storage::Map(m) => m,
            Storage::Owned(v) => v,
            Storage::Borrowed(b) => b,
        }
    }
}

/// An open GGUF file: the validated header plus the read-only map it points into.
pub struct GgufFile {
    header: Header,
    storage: Storage,
}

impl std::fmt::Debug for GgufFile {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self.storage {
            Storage::Map(_) => "mmap",
            Storage::Owned(_) => "owned",
            Storage::Borrowed(_) => "borrowed",
        };
        f.debug_struct("GgufFile")
            .field("storage", &kind)
            .field("len", &self.bytes().len())
            .field("version", &self.header.version)
            .field("metadata", &self.header.metadata.len())
            .field("tensors", &self.header.tensors.len())
            .field("data_offset", &self.header.data_offset)
            .finish()
    }
}

impl GgufFile {
    /// Maps `path` read-only and validates its header. Reads no tensor data.
    pub fn open(path: impl AsRef<Path>) -> Result<GgufFile> {
        let path = path.as_ref();
        Self::open_inner(path).map_err(|e| e.in_file(path))
    }

    fn open_inner(path: &Path) -> Result<GgufFile> {
        let file = File::open(path).map_err(|e| Error::io("opening", e))?;
        let len = file
            .metadata()
            .map_err(|e| Error::io("reading the file size", e))?
            .len();
        // A slice (and so a map) cannot exceed isize::MAX bytes: 2 GiB on 32-bit targets.
        if len > isize::MAX as u64 {
            return Err(Error::Unsupported(format!(
                "a {len}-byte file: this {}-bit build can map at most {} bytes (use a 64-bit \
                 build, e.g. aarch64 instead of armv7)",
                usize::BITS,
                isize::MAX
            )));
        }
        let storage = if len == 0 {
            // Some platforms refuse empty maps; an empty image fails validation either way.
            Storage::Owned(Vec::new())
        } else {
            // SAFETY: the map is read-only and we never hand out `&mut` into it. Model files are
            // treated as immutable while open (as every mmap-based loader does); another process
            // truncating or rewriting the file underneath us is outside what we can guard against.
            let map = unsafe { Mmap::map(&file) }.map_err(|e| Error::io("mapping", e))?;
            Storage::Map(map)
        };
        Self::from_storage(storage)
    }

    /// Validates a GGUF image held in memory.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<GgufFile> {
        Self::from_storage(Storage::Owned(bytes))
    }

    /// Validates a GGUF image that lives at least as long as the program needs it, without
    /// copying it: tensor data are views into `bytes`. The C ABI builds the `'static` slice
    /// from a caller-owned buffer that the caller keeps alive until the model is freed.
    pub fn from_static(bytes: &'static [u8]) -> Result<GgufFile> {
        Self::from_storage(Storage::Borrowed(bytes))
    }

    fn from_storage(storage: Storage) -> Result<GgufFile> {
        let header = parse_header(storage.bytes())?;
        Ok(GgufFile { header, storage })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The whole image (header and data).
    pub fn bytes(&self) -> &[u8] {
        self.storage.bytes()
    }

    /// The bytes of one tensor, a view into the map. `info` must come from this file's header
    /// (those ranges were validated); for a foreign info whose range does not fit, this returns an
    /// empty slice — use `try_tensor_data` to get an error instead.
    pub fn tensor_data(&self, info: &TensorInfo) -> &[u8] {
        self.try_tensor_data(info).unwrap_or(&[])
    }

    /// The bytes of one tensor, or an error naming it if its range is not inside this file.
    pub fn try_tensor_data(&self, info: &TensorInfo) -> Result<&[u8]> {
        let bytes = self.bytes();
        let range = self
            .header
            .data_offset
            .checked_add(info.offset)
            .and_then(|start| Some((start, start.checked_add(info.bytes)?)))
            .and_then(|(s, e)| Some(usize::try_from(s).ok()?..usize::try_from(e).ok()?));
        range.and_then(|r| bytes.get(r)).ok_or_else(|| {
            Error::InvalidArgument(format!(
                "tensor '{}' (offset {}, {} bytes) does not lie inside this GGUF image of {} \
                     bytes (data section at {})",
                info.name,
                info.offset,
                info.bytes,
                bytes.len(),
                self.header.data_offset
            ))
        })
    }

    /// The info and bytes of the tensor called `name`.
    pub fn tensor_by_name(&self, name: &str) -> Result<(&TensorInfo, &[u8])> {
        let info = self.header.tensor(name).ok_or_else(|| {
            Error::InvalidArgument(format!("no tensor named '{name}' in this GGUF file"))
        })?;
        Ok((info, self.try_tensor_data(info)?))
    }
}

#[cfg(all(test, target_pointer_width = "32"))]
mod tests_32bit {
    /// A file larger than a 32-bit address space can map is a clear error, not a crash.
    #[test]
    fn file_over_isize_max_is_refused_on_32_bit() {
        let f = tempfile::NamedTempFile::new().unwrap();
        // Sparse: no disk space is used.
        f.as_file().set_len(isize::MAX as u64 + 1).unwrap();
        let e = super::GgufFile::open(f.path()).unwrap_err().to_string();
        assert!(e.contains("32-bit build can map at most"), "{e}");
    }
}
