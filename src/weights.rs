//! Logical weights of a GGUF model. Most tensors are one GGUF tensor of a ggml type; an NF4 weight is
//! a group of standard GGUF tensors (packed codes, absmax, nested absmax, offset) that together
//! describe one logical tensor (docs/nf4-gguf.md). This module hides that difference: callers ask
//! for a weight by its logical name and get its logical shape and a zero-copy view.

use crate::error::{Error, Result};
use crate::gguf::{Array, GgmlType, GgufFile, Header, TensorInfo, Value};
use crate::quant::nf4::{F32Slice, Nf4ScalesView, Nf4View};

/// Metadata keys and tensor suffixes of the NF4-in-GGUF encoding (docs/nf4-gguf.md).
pub mod nf4_keys {
    pub const VERSION: &str = "edgetune.nf4.version";
    pub const BLOCK_SIZE: &str = "edgetune.nf4.block_size";
    pub const DOUBLE_QUANT: &str = "edgetune.nf4.double_quant";
    pub const NESTED_BLOCK_SIZE: &str = "edgetune.nf4.nested_block_size";
    pub const TENSORS: &str = "edgetune.nf4.tensors";
    pub const CODE: &str = "edgetune.nf4.code";
    pub const NESTED_CODE: &str = "edgetune.nf4.nested_code";
    pub const SUFFIX_ABSMAX: &str = ".nf4_absmax";
    pub const SUFFIX_ABSMAX2: &str = ".nf4_absmax2";
    pub const SUFFIX_OFFSET: &str = ".nf4_offset";
    /// The version of the encoding this build writes and reads.
    pub const CURRENT_VERSION: u32 = 1;
    /// Longest logical name that still leaves room for the longest suffix within ggml's 63 bytes.
    pub const MAX_BASE_NAME_LEN: usize = crate::gguf::MAX_NAME_LEN - SUFFIX_ABSMAX2.len();
}

/// How a logical weight is stored.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Storage {
    Ggml(GgmlType),
    Nf4 {
        block_size: usize,
        double_quant: bool,
    },
}

impl Storage {
    pub fn name(&self) -> String {
        match self {
            Storage::Ggml(t) => t.name().to_string(),
            Storage::Nf4 {
                double_quant: true, ..
            } => "NF4+DQ".to_string(),
            Storage::Nf4 {
                double_quant: false,
                ..
            } => "NF4".to_string(),
        }
    }
}

/// One logical weight.
#[derive(Clone, Debug)]
pub struct WeightInfo {
    pub name: String,
    /// Logical dims in GGUF order (`ne[0]` innermost).
    pub ne: Vec<u64>,
    pub storage: Storage,
    /// Bytes on disk, summed over the GGUF tensors that make up this weight.
    pub bytes: u64,
    /// Indices into `header.tensors` of the parts (the main tensor first).
    pub parts: Vec<usize>,
}

impl WeightInfo {
    pub fn n_elements(&self) -> u64 {
        self.ne.iter().product()
    }

    /// Row-major shape (numpy order: the reverse of `ne`).
    pub fn shape_row_major(&self) -> Vec<usize> {
        self.ne.iter().rev().map(|&d| d as usize).collect()
    }
}

/// A zero-copy view of one weight's data.
pub enum WeightData<'a> {
    Ggml { ty: GgmlType, bytes: &'a [u8] },
    Nf4(Nf4View<'a>),
}

/// NF4 settings of a file (from its `edgetune.nf4.*` metadata).
#[derive(Clone, Debug, PartialEq)]
pub struct Nf4FileInfo {
    pub block_size: usize,
    pub double_quant: bool,
}

/// The logical weights of an open GGUF file.
pub struct Weights<'f> {
    file: &'f GgufFile,
    list: Vec<WeightInfo>,
}

impl<'f> Weights<'f> {
    /// Groups the file's tensors into logical weights, validating any NF4 groups.
    pub fn new(file: &'f GgufFile) -> Result<Weights<'f>> {
        let list = logical_weights(file.header())?;
        Ok(Weights { file, list })
    }

    pub fn list(&self) -> &[WeightInfo] {
        &self.list
    }

    pub fn get(&self, name: &str) -> Option<&WeightInfo> {
        self.list.iter().find(|w| w.name == name)
    }

    /// The zero-copy data view of a weight.
    pub fn data(&self, w: &WeightInfo) -> Result<WeightData<'f>> {
        let h = self.file.header();
        let main = &h.tensors[w.parts[0]];
        match w.storage {
            Storage::Ggml(ty) => Ok(WeightData::Ggml {
                ty,
                bytes: self.file.tensor_data(main),
            }),
            Storage::Nf4 {
                block_size,
                double_quant,
            } => {
                let part = |i: usize| self.file.tensor_data(&h.tensors[w.parts[i]]);
                let scales = if double_quant {
                    let offset_bytes = part(3);
                    let offset =
                        f32::from_le_bytes(offset_bytes[..4].try_into().map_err(|_| {
                            Error::Quant(format!("NF4 weight '{}': offset tensor is empty", w.name))
                        })?);
                    Nf4ScalesView::DoubleQuant {
                        q: part(1),
                        absmax2: F32Slice::LeBytes(part(2)),
                        offset,
                    }
                } else {
                    Nf4ScalesView::Absmax(F32Slice::LeBytes(part(1)))
                };
                // Checked: on 32-bit targets a u64 element count can exceed usize.
                let n = usize::try_from(w.n_elements()).map_err(|_| {
                    Error::Quant(format!(
                        "NF4 weight '{}': {} elements do not fit this {}-bit build",
                        w.name,
                        w.n_elements(),
                        usize::BITS
                    ))
                })?;
                let view = Nf4View::new(part(0), scales, block_size, n)
                    .map_err(|e| Error::Quant(format!("NF4 weight '{}': {e}", w.name)))?;
                Ok(WeightData::Nf4(view))
            }
        }
    }

    /// Dequantizes a whole weight to f32 (row-major, `n_elements` values).
    pub fn dequantize(&self, w: &WeightInfo) -> Result<Vec<f32>> {
        let n = usize::try_from(w.n_elements())
            .map_err(|_| Error::InvalidArgument(format!("weight '{}' is too large", w.name)))?;
        let mut out = vec![0f32; n];
        match self.data(w)? {
            WeightData::Ggml { ty, bytes } => crate::quant::dequantize(ty, bytes, &mut out)
                .map_err(|e| Error::Quant(format!("tensor '{}': {e}", w.name)))?,
            WeightData::Nf4(view) => view.dequantize(&mut out)?,
        }
        Ok(out)
    }
}

/// NF4 settings declared in a header, or `None` if the file has no NF4 weights.
pub fn nf4_file_info(h: &Header) -> Result<Option<Nf4FileInfo>> {
    let Some(version) = h.get(nf4_keys::VERSION) else {
        return Ok(None);
    };
    let bad = |key: &str, what: String| Error::Quant(format!("metadata '{key}': {what}"));
    match version {
        Value::U32(v) if *v == nf4_keys::CURRENT_VERSION => {}
        v => {
            return Err(bad(
                nf4_keys::VERSION,
                format!("NF4 encoding version {v:?} is not supported (this build reads 1)"),
            ))
        }
    }
    let block_size = match h.get(nf4_keys::BLOCK_SIZE) {
        Some(Value::U32(b)) if b.is_power_of_two() && (32..=4096).contains(b) => *b as usize,
        v => {
            return Err(bad(
                nf4_keys::BLOCK_SIZE,
                format!("expected a power of two in 32..=4096, found {v:?}"),
            ))
        }
    };
    let double_quant = match h.get(nf4_keys::DOUBLE_QUANT) {
        Some(Value::Bool(b)) => *b,
        v => {
            return Err(bad(
                nf4_keys::DOUBLE_QUANT,
                format!("expected a bool, found {v:?}"),
            ))
        }
    };
    if double_quant {
        match h.get(nf4_keys::NESTED_BLOCK_SIZE) {
            Some(Value::U32(256)) => {}
            v => {
                return Err(bad(
                    nf4_keys::NESTED_BLOCK_SIZE,
                    format!("expected 256, found {v:?}"),
                ))
            }
        }
    }
    Ok(Some(Nf4FileInfo {
        block_size,
        double_quant,
    }))
}

fn logical_weights(h: &Header) -> Result<Vec<WeightInfo>> {
    let nf4 = nf4_file_info(h)?;
    let nf4_names: Vec<String> = match (&nf4, h.get(nf4_keys::TENSORS)) {
        (None, _) => Vec::new(),
        (Some(_), Some(Value::Array(Array::String(names)))) => names.clone(),
        (Some(_), v) => {
            return Err(Error::Quant(format!(
                "metadata '{}': expected an array of strings, found {v:?}",
                nf4_keys::TENSORS
            )))
        }
    };
    let mut consumed = vec![false; h.tensors.len()];
    let mut list = Vec::with_capacity(h.tensors.len());
    let find = |name: &str| h.tensors.iter().position(|t| t.name == name);
    for (i, t) in h.tensors.iter().enumerate() {
        if consumed[i] {
            continue;
        }
        if nf4_names.iter().any(|n| n == &t.name) {
            let info = nf4.as_ref().expect("nf4 names imply nf4 info");
            let w = nf4_group(h, i, t, info, &find)?;
            for &p in &w.parts {
                consumed[p] = true;
            }
            list.push(w);
        } else {
            list.push(WeightInfo {
                name: t.name.clone(),
                ne: t.ne.clone(),
                storage: Storage::Ggml(t.ty),
                bytes: t.bytes,
                parts: vec![i],
            });
        }
    }
    for n in &nf4_names {
        if find(n).is_none() {
            return Err(Error::Quant(format!(
                "metadata '{}' names tensor '{n}', which the file does not have",
                nf4_keys::TENSORS
            )));
        }
    }
    // Parts listed before their main tensor would have been emitted as plain weights; reject that.
    let parts: Vec<usize> = list
        .iter()
        .filter(|w| w.parts.len() > 1)
        .flat_map(|w| w.parts[1..].to_vec())
        .collect();
    list.retain(|w| w.parts.len() > 1 || !parts.contains(&w.parts[0]));
    Ok(list)
}

fn nf4_group(
    h: &Header,
    i: usize,
    t: &TensorInfo,
    info: &Nf4FileInfo,
    find: &dyn Fn(&str) -> Option<usize>,
) -> Result<WeightInfo> {
    let err = |msg: String| Error::Quant(format!("NF4 weight '{}': {msg}", t.name));
    if t.ty != GgmlType::I8 {
        return Err(err(format!(
            "packed codes must be an I8 tensor, found {}",
            t.ty
        )));
    }
    let mut ne = t.ne.clone();
    ne[0] = ne[0]
        .checked_mul(2)
        .ok_or_else(|| err("ne[0] overflows".into()))?;
    let n: u64 = ne.iter().product();
    let n_blocks = n.div_ceil(info.block_size as u64);
    let part = |suffix: &str, ty: GgmlType, len: u64| -> Result<usize> {
        let name = format!("{}{suffix}", t.name);
        let idx = find(&name).ok_or_else(|| err(format!("missing tensor '{name}'")))?;
        let p = &h.tensors[idx];
        if p.ty != ty || p.n_elements() != len {
            return Err(err(format!(
                "tensor '{name}' should be {ty} with {len} elements, found {} with {}",
                p.ty,
                p.n_elements()
            )));
        }
        Ok(idx)
    };
    let mut parts = vec![i];
    if info.double_quant {
        parts.push(part(nf4_keys::SUFFIX_ABSMAX, GgmlType::I8, n_blocks)?);
        parts.push(part(
            nf4_keys::SUFFIX_ABSMAX2,
            GgmlType::F32,
            n_blocks.div_ceil(256),
        )?);
        parts.push(part(nf4_keys::SUFFIX_OFFSET, GgmlType::F32, 1)?);
    } else {
        parts.push(part(nf4_keys::SUFFIX_ABSMAX, GgmlType::F32, n_blocks)?);
    }
    let bytes = parts.iter().map(|&p| h.tensors[p].bytes).sum();
    Ok(WeightInfo {
        name: t.name.clone(),
        ne,
        storage: Storage::Nf4 {
            block_size: info.block_size,
            double_quant: info.double_quant,
        },
        bytes,
        parts,
    })
}
