//! `edgetune quantize`: re-encodes a GGUF model's weights to NF4 (bitsandbytes-exact, optionally
//! double-quantized), Q8_0, Q4_0, F16, BF16 or F32. One weight is decoded and encoded at a time, and
//! the output is streamed to a temp file renamed into place, so memory stays near the size of the
//! largest weight.
//!
//! Rules: 1-D tensors (norms, biases) become F32; `token_embd.weight` and `output.weight` follow
//! `EmbeddingPolicy` (default: copied unchanged); every other tensor with two or more dims gets the
//! target type. A tensor whose row length the target cannot hold (Q8_0 needs multiples of 32, NF4 an
//! even count) falls back to F16 and the summary says so.

use crate::error::{Error, Result};
use crate::gguf::{Array, GgmlType, GgufFile, GgufWriter, TensorSpec, Value};
use crate::quant::dynamic8::{CodeMap, Rounding};
use crate::quant::nf4::{self, Nf4Params};
use crate::weights::{nf4_keys, Storage, WeightInfo, Weights};
use std::io::Write;
use std::path::Path;

/// What the weights become.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Target {
    Nf4,
    Ggml(GgmlType),
}

impl Target {
    /// Parses a `--type` value: `nf4`, `q8_0`, `q4_0`, `f16`, `bf16`, `f32`.
    pub fn parse(s: &str) -> Result<Target> {
        if s.eq_ignore_ascii_case("nf4") {
            return Ok(Target::Nf4);
        }
        match GgmlType::from_name(s) {
            Some(t) if ENCODABLE.contains(&t) => Ok(Target::Ggml(t)),
            _ => Err(Error::InvalidArgument(format!(
                "unknown target type '{s}' (expected one of nf4, q8_0, q4_0, f16, bf16, f32)"
            ))),
        }
    }

    pub fn name(&self) -> String {
        match self {
            Target::Nf4 => "NF4".into(),
            Target::Ggml(t) => t.name().into(),
        }
    }
}

const ENCODABLE: [GgmlType; 5] = [
    GgmlType::Q8_0,
    GgmlType::Q4_0,
    GgmlType::F16,
    GgmlType::BF16,
    GgmlType::F32,
];

/// What happens to `token_embd.weight` and `output.weight`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum EmbeddingPolicy {
    /// Copy the stored bytes unchanged (the default).
    Keep,
    /// Treat them like every other matrix.
    Target,
    /// Re-encode to this type.
    Type(Target),
}

impl EmbeddingPolicy {
    /// Parses `keep`, `same` (= the target type) or a type name.
    pub fn parse(s: &str) -> Result<EmbeddingPolicy> {
        match s.to_ascii_lowercase().as_str() {
            "keep" => Ok(EmbeddingPolicy::Keep),
            "same" | "target" => Ok(EmbeddingPolicy::Target),
            other => Target::parse(other).map(EmbeddingPolicy::Type).map_err(|_| {
                Error::InvalidArgument(format!(
                    "unknown embeddings policy '{s}' (expected keep, same, or a type: nf4, q8_0, q4_0, f16, bf16, f32)"
                ))
            }),
        }
    }
}

#[derive(Clone, Debug)]
pub struct QuantizeParams {
    pub target: Target,
    /// NF4 block size (power of two, 32..=4096).
    pub block_size: usize,
    /// NF4 double quantization of the absmax values.
    pub double_quant: bool,
    pub embeddings: EmbeddingPolicy,
}

impl QuantizeParams {
    /// The NF4 encoder settings. The double-quantized absmax codes are rounded exactly as
    /// bitsandbytes computes them on CPU (its 8-bit lookup-table kernel), so an NF4 file written
    /// here decodes to the same weights as a bitsandbytes QLoRA model (docs/nf4-details.md).
    pub fn nf4_params(&self) -> Nf4Params {
        Nf4Params {
            block_size: self.block_size,
            double_quant: self.double_quant,
            absmax_rounding: Rounding::BnbCpuTable,
        }
    }
}

impl Default for QuantizeParams {
    fn default() -> Self {
        QuantizeParams {
            target: Target::Nf4,
            block_size: 64,
            double_quant: true,
            embeddings: EmbeddingPolicy::Keep,
        }
    }
}

/// What happens to one input weight.
#[derive(Clone, Debug, PartialEq)]
pub enum Action {
    /// Stored bytes copied unchanged.
    Copy,
    /// Decoded and re-encoded to a ggml type.
    Encode(GgmlType),
    /// Decoded and encoded to NF4.
    Nf4,
}

#[derive(Clone, Debug)]
pub struct PlannedWeight {
    pub weight: WeightInfo,
    pub action: Action,
    /// Why the target type was not used, if it was not.
    pub note: Option<String>,
}

/// Per-step progress, for a progress bar.
#[derive(Clone, Debug)]
pub struct Progress<'a> {
    pub index: usize,
    pub count: usize,
    pub name: &'a str,
    pub elements_done: u64,
    pub elements_total: u64,
}

/// Sizes before and after, for the summary line.
#[derive(Clone, Debug, Default)]
pub struct Summary {
    pub weights: usize,
    pub elements: u64,
    pub input_tensor_bytes: u64,
    pub output_tensor_bytes: u64,
    pub input_file_bytes: u64,
    pub output_file_bytes: u64,
    /// (storage name, weights, elements, bytes) of the output, by storage type.
    pub by_type: Vec<(String, usize, u64, u64)>,
    pub fallbacks: Vec<String>,
}

impl Summary {
    pub fn bits_per_weight_in(&self) -> f64 {
        self.input_tensor_bytes as f64 * 8.0 / self.elements.max(1) as f64
    }
    pub fn bits_per_weight_out(&self) -> f64 {
        self.output_tensor_bytes as f64 * 8.0 / self.elements.max(1) as f64
    }
}

fn is_embedding(name: &str) -> bool {
    name == "token_embd.weight" || name == "output.weight"
}

/// Decides what happens to every weight, without touching tensor data.
pub fn plan(weights: &Weights, params: &QuantizeParams) -> Result<Vec<PlannedWeight>> {
    if params.target == Target::Nf4 || params.embeddings == EmbeddingPolicy::Type(Target::Nf4) {
        nf4::check_block_size(params.block_size)?;
    }
    let mut out = Vec::new();
    for w in weights.list() {
        let n_dims = w.ne.iter().rposition(|&d| d != 1).map_or(1, |p| p + 1);
        let target = if is_embedding(&w.name) {
            match params.embeddings {
                EmbeddingPolicy::Keep => None,
                EmbeddingPolicy::Target => Some(params.target),
                EmbeddingPolicy::Type(t) => Some(t),
            }
        } else if n_dims < 2 {
            Some(Target::Ggml(GgmlType::F32))
        } else {
            Some(params.target)
        };
        let (action, note) = match target {
            None => (Action::Copy, None),
            Some(t) => choose_action(w, t)?,
        };
        // Copy a tensor that already has the requested storage instead of re-encoding it.
        let action = match (&action, w.storage) {
            (Action::Encode(t), Storage::Ggml(s)) if *t == s => Action::Copy,
            // An NF4 group is re-encoded with this run's NF4 settings rather than copied, so the
            // output's NF4 metadata describes every NF4 weight in it.
            (Action::Copy, Storage::Nf4 { .. }) => Action::Nf4,
            _ => action,
        };
        out.push(PlannedWeight {
            weight: w.clone(),
            action,
            note,
        });
    }
    Ok(out)
}

fn choose_action(w: &WeightInfo, target: Target) -> Result<(Action, Option<String>)> {
    let ne0 = w.ne[0];
    let decodable = match w.storage {
        Storage::Ggml(t) => crate::quant::can_dequantize(t),
        Storage::Nf4 { .. } => true,
    };
    if !decodable {
        return Err(Error::Unsupported(format!(
            "tensor '{}' is stored as {}, which edgetune cannot decode, so it cannot be re-encoded",
            w.name,
            w.storage.name()
        )));
    }
    match target {
        Target::Nf4 => {
            if w.name.len() > nf4_keys::MAX_BASE_NAME_LEN {
                return Err(Error::InvalidArgument(format!(
                    "tensor name '{}' is {} bytes; NF4 needs names of at most {} bytes to add its part suffixes",
                    w.name,
                    w.name.len(),
                    nf4_keys::MAX_BASE_NAME_LEN
                )));
            }
            if ne0.is_multiple_of(2) {
                Ok((Action::Nf4, None))
            } else {
                Ok((
                    Action::Encode(GgmlType::F16),
                    Some(format!("{}: ne[0]={ne0} is odd, kept as F16", w.name)),
                ))
            }
        }
        Target::Ggml(t) => {
            if ne0.is_multiple_of(t.block_size() as u64) {
                Ok((Action::Encode(t), None))
            } else {
                Ok((
                    Action::Encode(GgmlType::F16),
                    Some(format!(
                        "{}: ne[0]={ne0} is not a multiple of {}'s block size {}, kept as F16",
                        w.name,
                        t,
                        t.block_size()
                    )),
                ))
            }
        }
    }
}

/// The llama.cpp `general.file_type` for an output of this target, if there is one.
fn file_type(target: Target) -> Option<u32> {
    match target {
        Target::Ggml(GgmlType::F32) => Some(0),
        Target::Ggml(GgmlType::F16) => Some(1),
        Target::Ggml(GgmlType::Q4_0) => Some(2),
        Target::Ggml(GgmlType::Q8_0) => Some(7),
        Target::Ggml(GgmlType::BF16) => Some(32),
        _ => None,
    }
}

/// Quantizes `input` into `output` (written atomically).
pub fn quantize_file(
    input: &GgufFile,
    output: &Path,
    params: &QuantizeParams,
    progress: &mut dyn FnMut(Progress),
) -> Result<Summary> {
    let weights = Weights::new(input)?;
    let planned = plan(&weights, params)?;
    let header = input.header();

    let mut writer = GgufWriter::new();
    for (k, v) in &header.metadata {
        if k.starts_with("edgetune.nf4.") || k == "general.file_type" {
            continue;
        }
        writer.set(k, v.clone());
    }
    if let Some(ft) = file_type(params.target) {
        writer.set("general.file_type", Value::U32(ft));
    }
    let nf4_names: Vec<String> = planned
        .iter()
        .filter(|p| p.action == Action::Nf4)
        .map(|p| p.weight.name.clone())
        .collect();
    if !nf4_names.is_empty() {
        writer.set(nf4_keys::VERSION, Value::U32(nf4_keys::CURRENT_VERSION));
        writer.set(nf4_keys::BLOCK_SIZE, Value::U32(params.block_size as u32));
        writer.set(nf4_keys::DOUBLE_QUANT, Value::Bool(params.double_quant));
        if params.double_quant {
            writer.set(nf4_keys::NESTED_BLOCK_SIZE, Value::U32(256));
            writer.set(
                nf4_keys::NESTED_CODE,
                Value::Array(Array::F32(CodeMap::signed().values().to_vec())),
            );
        }
        writer.set(
            nf4_keys::CODE,
            Value::Array(Array::F32(nf4::nf4_values().to_vec())),
        );
        writer.set(nf4_keys::TENSORS, Value::Array(Array::String(nf4_names)));
    }

    // Output tensor specs; `owner[i]` is the planned weight that produces output tensor i.
    let mut owner = Vec::new();
    for (pi, p) in planned.iter().enumerate() {
        for spec in output_specs(p, params) {
            writer.add_tensor(spec)?;
            owner.push(pi);
        }
    }

    let total_elements: u64 = planned.iter().map(|p| p.weight.n_elements()).sum();
    let mut done_elements = 0u64;
    let mut pending: Vec<Vec<u8>> = Vec::new(); // extra NF4 parts, in output order
    let mut first_out_of = vec![usize::MAX; planned.len()];
    for (i, &pi) in owner.iter().enumerate() {
        first_out_of[pi] = first_out_of[pi].min(i);
    }
    let count = planned.len();
    writer.write(output, &mut |i, out: &mut dyn Write| {
        let pi = owner[i];
        let p = &planned[pi];
        let io = |e| Error::io(format!("writing {}", output.display()), e);
        if i != first_out_of[pi] {
            let bytes = pending.remove(0);
            return out.write_all(&bytes).map_err(io);
        }
        progress(Progress {
            index: pi,
            count,
            name: &p.weight.name,
            elements_done: done_elements,
            elements_total: total_elements,
        });
        match &p.action {
            Action::Copy => {
                for &part in &p.weight.parts {
                    let bytes = input.tensor_data(&header.tensors[part]);
                    if part == p.weight.parts[0] {
                        out.write_all(bytes).map_err(io)?;
                    } else {
                        pending.push(bytes.to_vec());
                    }
                }
            }
            Action::Encode(t) => {
                let values = weights.dequantize(&p.weight)?;
                let n_bytes = t.tensor_bytes(&p.weight.ne).ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "tensor '{}' cannot be stored as {t}",
                        p.weight.name
                    ))
                })?;
                let mut bytes = vec![0u8; n_bytes as usize];
                crate::quant::quantize(*t, &values, &mut bytes)
                    .map_err(|e| Error::Quant(format!("tensor '{}': {e}", p.weight.name)))?;
                out.write_all(&bytes).map_err(io)?;
            }
            Action::Nf4 => {
                let values = weights.dequantize(&p.weight)?;
                let q = nf4::quantize(&values, params.nf4_params())
                    .map_err(|e| Error::Quant(format!("tensor '{}': {e}", p.weight.name)))?;
                out.write_all(&q.codes).map_err(io)?;
                pending.extend(nf4_scale_parts(&q));
            }
        }
        done_elements += p.weight.n_elements();
        Ok(())
    })?;

    let out_file = GgufFile::open(output)?;
    let out_weights = Weights::new(&out_file)?;
    let mut summary = Summary {
        weights: planned.len(),
        elements: total_elements,
        input_tensor_bytes: planned.iter().map(|p| p.weight.bytes).sum(),
        output_tensor_bytes: out_weights.list().iter().map(|w| w.bytes).sum(),
        input_file_bytes: file_len(input),
        output_file_bytes: std::fs::metadata(output).map(|m| m.len()).unwrap_or(0),
        by_type: Vec::new(),
        fallbacks: planned.iter().filter_map(|p| p.note.clone()).collect(),
    };
    for w in out_weights.list() {
        let name = w.storage.name();
        match summary.by_type.iter_mut().find(|e| e.0 == name) {
            Some(e) => {
                e.1 += 1;
                e.2 += w.n_elements();
                e.3 += w.bytes;
            }
            None => summary.by_type.push((name, 1, w.n_elements(), w.bytes)),
        }
    }
    Ok(summary)
}

fn file_len(f: &GgufFile) -> u64 {
    let h = f.header();
    h.data_offset
        + h.tensors
            .iter()
            .map(|t| t.bytes.next_multiple_of(h.alignment))
            .sum::<u64>()
}

/// GGUF tensor specs for one planned weight (one, or four for double-quantized NF4).
fn output_specs(p: &PlannedWeight, params: &QuantizeParams) -> Vec<TensorSpec> {
    let w = &p.weight;
    match &p.action {
        Action::Copy => {
            // `plan` never copies NF4 groups, so a copied weight is one plain tensor.
            let ty = match w.storage {
                Storage::Ggml(ty) => ty,
                Storage::Nf4 { .. } => GgmlType::I8,
            };
            vec![TensorSpec {
                name: w.name.clone(),
                ty,
                ne: w.ne.clone(),
            }]
        }
        Action::Encode(t) => vec![TensorSpec {
            name: w.name.clone(),
            ty: *t,
            ne: w.ne.clone(),
        }],
        Action::Nf4 => {
            let mut ne = w.ne.clone();
            ne[0] /= 2;
            let n = w.n_elements();
            let n_blocks = n.div_ceil(params.block_size as u64);
            let mut specs = vec![TensorSpec {
                name: w.name.clone(),
                ty: GgmlType::I8,
                ne,
            }];
            let part = |suffix: &str, ty, len| TensorSpec {
                name: format!("{}{suffix}", w.name),
                ty,
                ne: vec![len],
            };
            if params.double_quant {
                specs.push(part(nf4_keys::SUFFIX_ABSMAX, GgmlType::I8, n_blocks));
                specs.push(part(
                    nf4_keys::SUFFIX_ABSMAX2,
                    GgmlType::F32,
                    n_blocks.div_ceil(256),
                ));
                specs.push(part(nf4_keys::SUFFIX_OFFSET, GgmlType::F32, 1));
            } else {
                specs.push(part(nf4_keys::SUFFIX_ABSMAX, GgmlType::F32, n_blocks));
            }
            specs
        }
    }
}

/// The bytes of the scale parts of an NF4 tensor, in the order of `output_specs`.
fn nf4_scale_parts(q: &nf4::Nf4Tensor) -> Vec<Vec<u8>> {
    let f32_bytes = |v: &[f32]| v.iter().flat_map(|x| x.to_le_bytes()).collect::<Vec<u8>>();
    match &q.scales {
        nf4::Nf4Scales::Absmax(absmax) => vec![f32_bytes(absmax)],
        nf4::Nf4Scales::DoubleQuant { q, absmax2, offset } => {
            vec![q.clone(), f32_bytes(absmax2), offset.to_le_bytes().to_vec()]
        }
    }
}
