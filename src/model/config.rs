//! Hyper-parameters of a Llama-family decoder, read once from GGUF metadata (FORMATS.md §3.1) and
//! the tensor list. Every architectural quirk becomes a typed field here (rope layout, biases, tied
//! output), so the kernels never look at the architecture name.

use crate::error::{Error, Result};
use crate::gguf::{Array, Header, Value};

/// The architectures this model implements (`general.architecture`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Arch {
    /// Llama 1/2/3, SmolLM/SmolLM2, TinyLlama, and Mistral files converted as `llama`.
    Llama,
    /// Qwen2 / Qwen2.5: NEOX rope, QKV bias.
    Qwen2,
    /// Files tagged `mistral`: the Llama graph (NORM rope), as llama.cpp runs them.
    Mistral,
}

impl Arch {
    pub fn from_name(name: &str) -> Option<Arch> {
        match name {
            "llama" => Some(Arch::Llama),
            "qwen2" => Some(Arch::Qwen2),
            "mistral" => Some(Arch::Mistral),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Arch::Llama => "llama",
            Arch::Qwen2 => "qwen2",
            Arch::Mistral => "mistral",
        }
    }

    /// The rope pairing llama.cpp uses for this architecture (FORMATS.md §3.3).
    pub fn rope_layout(self) -> RopeLayout {
        match self {
            Arch::Llama | Arch::Mistral => RopeLayout::Norm,
            Arch::Qwen2 => RopeLayout::Neox,
        }
    }
}

/// Which channels RoPE rotates together.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RopeLayout {
    /// Adjacent pairs `(x[2i], x[2i+1])` (GGUF `llama`: Q/K rows were permuted by the converter).
    Norm,
    /// Half-split pairs `(x[i], x[i + n_rot/2])` (Hugging Face's `rotate_half`; GGUF `qwen2`).
    Neox,
}

/// Rotary position embedding settings.
#[derive(Clone, Debug, PartialEq)]
pub struct RopeConfig {
    pub layout: RopeLayout,
    /// Rotated channels per head (even, at most `head_dim`); the rest pass through.
    pub n_rot: usize,
    pub freq_base: f32,
    /// Linear scaling: positions are multiplied by this (`1 / rope.scaling.factor`), 1 without.
    pub freq_scale: f32,
    /// Whether the file has `rope_freqs.weight` (per-frequency divisors, Llama-3 scaling).
    pub has_freq_factors: bool,
}

/// The hyper-parameters of one model.
#[derive(Clone, Debug, PartialEq)]
pub struct Config {
    pub arch: Arch,
    pub n_vocab: usize,
    /// Context length the model was trained with (`{arch}.context_length`): the longest sequence.
    pub n_ctx_train: usize,
    pub n_embd: usize,
    pub n_layer: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    /// Channels per head, for Q, K and V (`attention.key_length`, default `n_embd / n_head`).
    pub head_dim: usize,
    pub rms_eps: f32,
    pub rope: RopeConfig,
    /// Q, K and V projections have biases (Qwen2 always; Llama optionally).
    pub qkv_bias: bool,
    /// The attention output projection has a bias (Llama with `attention_bias`).
    pub o_bias: bool,
    /// No `output.weight`: the output projection is `token_embd.weight`.
    pub tied_output: bool,
    pub bos_token: Option<u32>,
    pub eos_token: Option<u32>,
}

impl Config {
    /// Reads the configuration of a Llama-family file. Absent optional keys take llama.cpp's
    /// defaults; unknown architectures, unsupported rope scaling and impossible values are errors
    /// that name the key.
    pub fn from_header(h: &Header) -> Result<Config> {
        let arch_name = match h.get("general.architecture") {
            Some(Value::String(s)) => s.as_str(),
            Some(v) => return Err(bad_key("general.architecture", v, "a string")),
            None => return Err(cfg_err("metadata key 'general.architecture' is missing")),
        };
        let arch = Arch::from_name(arch_name).ok_or_else(|| {
            Error::Unsupported(format!(
                "model architecture '{arch_name}' (supported: llama, qwen2, mistral)"
            ))
        })?;
        let key = |k: &str| format!("{arch_name}.{k}");

        let n_embd = req_usize(h, &key("embedding_length"))?;
        let n_layer = req_usize(h, &key("block_count"))?;
        let n_ctx_train = req_usize(h, &key("context_length"))?;
        let n_ff = req_per_layer(h, &key("feed_forward_length"), n_layer)?;
        let n_head = req_per_layer(h, &key("attention.head_count"), n_layer)?;
        let n_head_kv = match h.get(&key("attention.head_count_kv")) {
            Some(_) => req_per_layer(h, &key("attention.head_count_kv"), n_layer)?,
            None => n_head,
        };
        for (k, v) in [
            ("embedding_length", n_embd),
            ("block_count", n_layer),
            ("context_length", n_ctx_train),
            ("feed_forward_length", n_ff),
            ("attention.head_count", n_head),
            ("attention.head_count_kv", n_head_kv),
        ] {
            if v == 0 {
                return Err(cfg_err(format!("metadata key '{}' is 0", key(k))));
            }
        }
        if n_head % n_head_kv != 0 {
            return Err(cfg_err(format!(
                "'{}' = {n_head} is not a multiple of '{}' = {n_head_kv}",
                key("attention.head_count"),
                key("attention.head_count_kv")
            )));
        }
        let head_dim = match opt_usize(h, &key("attention.key_length"))? {
            Some(d) => d,
            None if n_embd % n_head == 0 => n_embd / n_head,
            None => {
                return Err(cfg_err(format!(
                "no '{}' and embedding_length {n_embd} is not a multiple of head_count {n_head}",
                key("attention.key_length")
            )))
            }
        };
        if let Some(dv) = opt_usize(h, &key("attention.value_length"))? {
            if dv != head_dim {
                return Err(Error::Unsupported(format!(
                    "'{}' = {dv} differs from the key length {head_dim}",
                    key("attention.value_length")
                )));
            }
        }
        if head_dim == 0 {
            return Err(cfg_err(format!("'{}' is 0", key("attention.key_length"))));
        }
        let rms_eps = req_f32(h, &key("attention.layer_norm_rms_epsilon"))?;
        if !(rms_eps.is_finite() && rms_eps >= 0.0) {
            return Err(cfg_err(format!(
                "'{}' = {rms_eps} is not a finite non-negative number",
                key("attention.layer_norm_rms_epsilon")
            )));
        }

        let rope = rope_config(h, arch, arch_name, head_dim)?;
        let n_vocab = match opt_usize(h, &key("vocab_size"))? {
            Some(v) => v,
            None => match h.get("tokenizer.ggml.tokens") {
                Some(Value::Array(a)) => array_len(a),
                _ => match h.tensor("token_embd.weight") {
                    Some(t) if t.ne.len() == 2 => t.ne[1] as usize,
                    _ => return Err(missing_tensor("token_embd.weight")),
                },
            },
        };
        if n_vocab == 0 {
            return Err(cfg_err("the vocabulary is empty"));
        }

        let has = |name: &str| h.tensor(name).is_some();
        let qkv_bias = has("blk.0.attn_q.bias");
        let o_bias = has("blk.0.attn_output.bias");
        if arch == Arch::Qwen2 && !qkv_bias {
            return Err(missing_tensor("blk.0.attn_q.bias"));
        }
        Ok(Config {
            arch,
            n_vocab,
            n_ctx_train,
            n_embd,
            n_layer,
            n_ff,
            n_head,
            n_head_kv,
            head_dim,
            rms_eps,
            rope,
            qkv_bias,
            o_bias,
            tied_output: !has("output.weight"),
            bos_token: opt_u32(h, "tokenizer.ggml.bos_token_id")?,
            eos_token: opt_u32(h, "tokenizer.ggml.eos_token_id")?,
        })
    }

    /// Query width `n_head · head_dim`.
    pub fn q_dim(&self) -> usize {
        self.n_head * self.head_dim
    }

    /// Key/value width `n_head_kv · head_dim`.
    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }

    /// Parameters of the base model (all weights, output counted once when tied).
    pub fn n_params(&self) -> usize {
        let (d, q, kv, f) = (self.n_embd, self.q_dim(), self.kv_dim(), self.n_ff);
        let per_layer = 2 * d
            + d * q
            + 2 * d * kv
            + q * d
            + 3 * d * f
            + if self.qkv_bias { q + 2 * kv } else { 0 }
            + if self.o_bias { d } else { 0 };
        let out = if self.tied_output {
            0
        } else {
            self.n_vocab * d
        };
        self.n_vocab * d + self.n_layer * per_layer + d + out
    }
}

fn rope_config(h: &Header, arch: Arch, arch_name: &str, head_dim: usize) -> Result<RopeConfig> {
    let key = |k: &str| format!("{arch_name}.{k}");
    let n_rot = opt_usize(h, &key("rope.dimension_count"))?.unwrap_or(head_dim);
    if n_rot % 2 != 0 || n_rot > head_dim || n_rot == 0 {
        return Err(cfg_err(format!(
            "'{}' = {n_rot} must be even, non-zero and at most the head size {head_dim}",
            key("rope.dimension_count")
        )));
    }
    if arch != Arch::Qwen2 && n_rot != head_dim {
        // llama.cpp refuses this for llama too.
        return Err(Error::Unsupported(format!(
            "'{}' = {n_rot} differs from the head size {head_dim} (partial rope) for arch {arch_name}",
            key("rope.dimension_count")
        )));
    }
    let freq_base = opt_f32(h, &key("rope.freq_base"))?.unwrap_or(10000.0);
    if !(freq_base.is_finite() && freq_base > 0.0) {
        return Err(cfg_err(format!(
            "'{}' = {freq_base} must be positive",
            key("rope.freq_base")
        )));
    }
    let scaling_type = match h.get(&key("rope.scaling.type")) {
        None => None,
        Some(Value::String(s)) => Some(s.as_str()),
        Some(v) => return Err(bad_key(&key("rope.scaling.type"), v, "a string")),
    };
    let factor = match opt_f32(h, &key("rope.scaling.factor"))? {
        Some(f) => Some(f),
        None => opt_f32(h, &key("rope.scale_linear"))?,
    };
    let freq_scale = match (scaling_type, factor) {
        (Some("none"), _) | (None, None) => 1.0,
        (Some("linear") | None, Some(f)) if f == 0.0 || f == 1.0 => 1.0,
        (Some("linear") | None, Some(f)) if f.is_finite() && f > 0.0 => 1.0 / f,
        (Some("linear") | None, f) => {
            return Err(cfg_err(format!(
                "'{}' = {f:?} is not a positive factor",
                key("rope.scaling.factor")
            )))
        }
        (Some(other), _) => {
            return Err(Error::Unsupported(format!(
                "rope scaling type '{other}' ('{}'); supported: none, linear",
                key("rope.scaling.type")
            )))
        }
    };
    Ok(RopeConfig {
        layout: arch.rope_layout(),
        n_rot,
        freq_base,
        freq_scale,
        has_freq_factors: h.tensor("rope_freqs.weight").is_some(),
    })
}

fn cfg_err(msg: impl Into<String>) -> Error {
    Error::InvalidArgument(format!("model config: {}", msg.into()))
}

fn missing_tensor(name: &str) -> Error {
    Error::InvalidArgument(format!("model: tensor '{name}' is missing"))
}

fn bad_key(key: &str, v: &Value, expected: &str) -> Error {
    cfg_err(format!(
        "metadata key '{key}' is {v:?}, expected {expected}"
    ))
}

fn int_of(v: &Value) -> Option<i128> {
    Some(match *v {
        Value::U8(x) => x as i128,
        Value::I8(x) => x as i128,
        Value::U16(x) => x as i128,
        Value::I16(x) => x as i128,
        Value::U32(x) => x as i128,
        Value::I32(x) => x as i128,
        Value::U64(x) => x as i128,
        Value::I64(x) => x as i128,
        _ => return None,
    })
}

fn opt_usize(h: &Header, key: &str) -> Result<Option<usize>> {
    match h.get(key) {
        None => Ok(None),
        Some(v) => match int_of(v).and_then(|x| usize::try_from(x).ok()) {
            Some(x) => Ok(Some(x)),
            None => Err(bad_key(key, v, "a non-negative integer")),
        },
    }
}

fn req_usize(h: &Header, key: &str) -> Result<usize> {
    opt_usize(h, key)?.ok_or_else(|| cfg_err(format!("metadata key '{key}' is missing")))
}

fn opt_u32(h: &Header, key: &str) -> Result<Option<u32>> {
    match h.get(key) {
        None => Ok(None),
        Some(v) => match int_of(v).and_then(|x| u32::try_from(x).ok()) {
            Some(x) => Ok(Some(x)),
            None => Err(bad_key(key, v, "a u32")),
        },
    }
}

/// A count that may be given per layer (an array); per-layer values must all be equal here.
fn req_per_layer(h: &Header, key: &str, n_layer: usize) -> Result<usize> {
    match h.get(key) {
        Some(Value::Array(a)) => {
            let vals: Vec<Option<usize>> = (0..array_len(a))
                .map(|i| array_int(a, i).and_then(|x| usize::try_from(x).ok()))
                .collect();
            if vals.len() != n_layer || vals.iter().any(|v| v.is_none()) {
                return Err(cfg_err(format!(
                    "metadata key '{key}' must hold {n_layer} non-negative integers (one per layer)"
                )));
            }
            let first = vals[0].unwrap_or(0);
            if vals.iter().any(|v| *v != Some(first)) {
                return Err(Error::Unsupported(format!(
                    "metadata key '{key}' varies between layers ({:?})",
                    vals.iter().map(|v| v.unwrap_or(0)).collect::<Vec<_>>()
                )));
            }
            Ok(first)
        }
        _ => req_usize(h, key),
    }
}

fn array_len(a: &Array) -> usize {
    match a {
        Array::U8(v) => v.len(),
        Array::I8(v) => v.len(),
        Array::U16(v) => v.len(),
        Array::I16(v) => v.len(),
        Array::U32(v) => v.len(),
        Array::I32(v) => v.len(),
        Array::F32(v) => v.len(),
        Array::Bool(v) => v.len(),
        Array::String(v) => v.len(),
        Array::U64(v) => v.len(),
        Array::I64(v) => v.len(),
        Array::F64(v) => v.len(),
    }
}

fn array_int(a: &Array, i: usize) -> Option<i128> {
    Some(match a {
        Array::U8(v) => *v.get(i)? as i128,
        Array::I8(v) => *v.get(i)? as i128,
        Array::U16(v) => *v.get(i)? as i128,
        Array::I16(v) => *v.get(i)? as i128,
        Array::U32(v) => *v.get(i)? as i128,
        Array::I32(v) => *v.get(i)? as i128,
        Array::U64(v) => *v.get(i)? as i128,
        Array::I64(v) => *v.get(i)? as i128,
        _ => return None,
    })
}

fn opt_f32(h: &Header, key: &str) -> Result<Option<f32>> {
    match h.get(key) {
        None => Ok(None),
        Some(Value::F32(x)) => Ok(Some(*x)),
        Some(Value::F64(x)) => Ok(Some(*x as f32)),
        Some(v) => Err(bad_key(key, v, "a float")),
    }
}

fn req_f32(h: &Header, key: &str) -> Result<f32> {
    opt_f32(h, key)?.ok_or_else(|| cfg_err(format!("metadata key '{key}' is missing")))
}
