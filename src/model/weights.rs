//! The model's weights: zero-copy views of every matrix (from `crate::weights::Weights`) and the
//! small 1-D vectors (norm weights, biases, rope factors) decoded to f32 once at load, which costs
//! a few hundred KB. Every tensor's shape is checked against the config here, so the forward pass
//! can trust them; any tensor the model would not use is an error rather than silently ignored.

use super::config::Config;
use super::ops::embedding::EmbeddingTable;
use crate::backend::LinearWeight;
use crate::error::{Error, Result};
use crate::gguf::GgmlType;
use crate::weights::{Storage, WeightData, WeightInfo, Weights};
use std::collections::HashSet;

/// The weights of one block.
pub struct LayerWeights<'w> {
    pub attn_norm: Vec<f32>,      // [d]
    pub q: LinearWeight<'w>,      // [q_dim, d]
    pub k: LinearWeight<'w>,      // [kv_dim, d]
    pub v: LinearWeight<'w>,      // [kv_dim, d]
    pub o: LinearWeight<'w>,      // [d, q_dim]
    pub q_bias: Option<Vec<f32>>, // [q_dim]
    pub k_bias: Option<Vec<f32>>, // [kv_dim]
    pub v_bias: Option<Vec<f32>>, // [kv_dim]
    pub o_bias: Option<Vec<f32>>, // [d]
    pub ffn_norm: Vec<f32>,       // [d]
    pub gate: LinearWeight<'w>,   // [n_ff, d]
    pub up: LinearWeight<'w>,     // [n_ff, d]
    pub down: LinearWeight<'w>,   // [d, n_ff]
}

/// All weights of a model.
pub struct ModelWeights<'w> {
    pub token_embd: EmbeddingTable<'w>, // [n_vocab, d]
    /// `output.weight`, or `token_embd.weight` again when the output is tied.
    pub output: LinearWeight<'w>, // [n_vocab, d]
    pub output_norm: Vec<f32>,          // [d]
    pub rope_freqs: Option<Vec<f32>>,   // [n_rot/2]
    pub layers: Vec<LayerWeights<'w>>,
}

struct Loader<'a, 'w> {
    weights: &'a Weights<'w>,
    used: HashSet<String>,
}

/// `ne` without trailing 1s (a 1-D vector may be stored as `[n, 1]`).
fn trimmed(ne: &[u64]) -> &[u64] {
    let mut n = ne.len();
    while n > 1 && ne[n - 1] == 1 {
        n -= 1;
    }
    &ne[..n]
}

impl<'w> Loader<'_, 'w> {
    fn info(&mut self, name: &str, ne: &[usize]) -> Result<&WeightInfo> {
        let w = self
            .weights
            .get(name)
            .ok_or_else(|| Error::InvalidArgument(format!("model: tensor '{name}' is missing")))?;
        let want: Vec<u64> = ne.iter().map(|&d| d as u64).collect();
        if trimmed(&w.ne) != trimmed(&want) {
            return Err(Error::InvalidArgument(format!(
                "model: tensor '{name}' has shape {:?} (GGUF order), the config needs {want:?}",
                w.ne
            )));
        }
        self.used.insert(name.to_string());
        Ok(w)
    }

    /// A matrix `[n_out, n_in]` (GGUF `ne = [n_in, n_out]`) as a zero-copy view.
    fn matrix(&mut self, name: &str, n_in: usize, n_out: usize) -> Result<LinearWeight<'w>> {
        let weights = self.weights;
        let info = self.info(name, &[n_in, n_out])?;
        Ok(LinearWeight {
            data: weights.data(info)?,
            n_in,
            n_out,
        })
    }

    /// A vector `[n]` decoded to f32.
    fn vector(&mut self, name: &str, n: usize) -> Result<Vec<f32>> {
        let weights = self.weights;
        let info = self.info(name, &[n])?.clone();
        match (info.storage, weights.data(&info)?) {
            (Storage::Ggml(GgmlType::F32), WeightData::Ggml { bytes, .. }) => {
                if bytes.len() != 4 * n {
                    return Err(Error::InvalidArgument(format!(
                        "model: tensor '{name}' has {} bytes, [{n}] F32 needs {}",
                        bytes.len(),
                        4 * n
                    )));
                }
                Ok(bytes
                    .chunks_exact(4)
                    .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
                    .collect())
            }
            _ => weights.dequantize(&info),
        }
    }

    fn opt_vector(&mut self, name: &str, n: usize, present: bool) -> Result<Option<Vec<f32>>> {
        if present {
            self.vector(name, n).map(Some)
        } else {
            Ok(None)
        }
    }
}

impl<'w> ModelWeights<'w> {
    /// Looks up and checks every tensor the config needs.
    pub fn load(cfg: &Config, weights: &Weights<'w>) -> Result<ModelWeights<'w>> {
        let mut ld = Loader {
            weights,
            used: HashSet::new(),
        };
        let (d, qd, kvd, ff, nv) = (cfg.n_embd, cfg.q_dim(), cfg.kv_dim(), cfg.n_ff, cfg.n_vocab);
        let embd_info = ld.info("token_embd.weight", &[d, nv])?.clone();
        let token_embd = EmbeddingTable {
            data: weights.data(&embd_info)?,
            n_vocab: nv,
            n_embd: d,
        };
        let output = if cfg.tied_output {
            LinearWeight {
                data: weights.data(&embd_info)?,
                n_in: d,
                n_out: nv,
            }
        } else {
            ld.matrix("output.weight", d, nv)?
        };
        let output_norm = ld.vector("output_norm.weight", d)?;
        let rope_freqs = ld.opt_vector(
            "rope_freqs.weight",
            cfg.rope.n_rot / 2,
            cfg.rope.has_freq_factors,
        )?;
        let mut layers = Vec::with_capacity(cfg.n_layer);
        for l in 0..cfg.n_layer {
            let n = |s: &str| format!("blk.{l}.{s}");
            layers.push(LayerWeights {
                attn_norm: ld.vector(&n("attn_norm.weight"), d)?,
                q: ld.matrix(&n("attn_q.weight"), d, qd)?,
                k: ld.matrix(&n("attn_k.weight"), d, kvd)?,
                v: ld.matrix(&n("attn_v.weight"), d, kvd)?,
                o: ld.matrix(&n("attn_output.weight"), qd, d)?,
                q_bias: ld.opt_vector(&n("attn_q.bias"), qd, cfg.qkv_bias)?,
                k_bias: ld.opt_vector(&n("attn_k.bias"), kvd, cfg.qkv_bias)?,
                v_bias: ld.opt_vector(&n("attn_v.bias"), kvd, cfg.qkv_bias)?,
                o_bias: ld.opt_vector(&n("attn_output.bias"), d, cfg.o_bias)?,
                ffn_norm: ld.vector(&n("ffn_norm.weight"), d)?,
                gate: ld.matrix(&n("ffn_gate.weight"), d, ff)?,
                up: ld.matrix(&n("ffn_up.weight"), d, ff)?,
                down: ld.matrix(&n("ffn_down.weight"), ff, d)?,
            });
        }
        let unused: Vec<&str> = weights
            .list()
            .iter()
            .map(|w| w.name.as_str())
            .filter(|n| !ld.used.contains(*n))
            .collect();
        if !unused.is_empty() {
            return Err(Error::Unsupported(format!(
                "model ({}): tensors this implementation does not use: {}",
                cfg.arch.name(),
                unused.join(", ")
            )));
        }
        Ok(ModelWeights {
            token_embd,
            output,
            output_norm,
            rope_freqs,
            layers,
        })
    }
}
