//! Which linear layers an adapter attaches to, under both namings users meet: GGUF tensor names
//! (`attn_q`, ..., `ffn_down`) and Hugging Face module names (`q_proj`, ..., `down_proj`), plus
//! the shapes those layers have in a given model.

use crate::error::{Error, Result};

/// A linear layer of a Llama-family block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Target {
    AttnQ,
    AttnK,
    AttnV,
    AttnOutput,
    FfnGate,
    FfnUp,
    FfnDown,
}

impl Target {
    /// Every target, in the fixed order adapters lay out their parameters.
    pub const ALL: [Target; 7] = [
        Target::AttnQ,
        Target::AttnK,
        Target::AttnV,
        Target::AttnOutput,
        Target::FfnGate,
        Target::FfnUp,
        Target::FfnDown,
    ];

    /// GGUF tensor base name (`blk.N.<name>.weight`).
    pub fn gguf_name(self) -> &'static str {
        match self {
            Target::AttnQ => "attn_q",
            Target::AttnK => "attn_k",
            Target::AttnV => "attn_v",
            Target::AttnOutput => "attn_output",
            Target::FfnGate => "ffn_gate",
            Target::FfnUp => "ffn_up",
            Target::FfnDown => "ffn_down",
        }
    }

    /// Hugging Face module name.
    pub fn hf_name(self) -> &'static str {
        match self {
            Target::AttnQ => "q_proj",
            Target::AttnK => "k_proj",
            Target::AttnV => "v_proj",
            Target::AttnOutput => "o_proj",
            Target::FfnGate => "gate_proj",
            Target::FfnUp => "up_proj",
            Target::FfnDown => "down_proj",
        }
    }

    /// Position in `ALL`.
    pub fn index(self) -> usize {
        self as usize
    }

    /// Parses one name in either naming (case-sensitive, as both ecosystems spell them).
    pub fn from_name(name: &str) -> Option<Target> {
        Target::ALL
            .into_iter()
            .find(|t| t.gguf_name() == name || t.hf_name() == name)
    }

    /// The module path inside a Hugging Face Llama model, e.g. `model.layers.3.self_attn.q_proj`.
    pub fn hf_module_path(self, layer: usize) -> String {
        let group = match self {
            Target::AttnQ | Target::AttnK | Target::AttnV | Target::AttnOutput => "self_attn",
            Target::FfnGate | Target::FfnUp | Target::FfnDown => "mlp",
        };
        format!("model.layers.{layer}.{group}.{}", self.hf_name())
    }

    /// `(n_in, n_out)` of this layer in a model.
    pub fn shape(self, dims: &ModelDims) -> (usize, usize) {
        let q = dims.n_head * dims.head_dim;
        let kv = dims.kv_dim();
        match self {
            Target::AttnQ => (dims.n_embd, q),
            Target::AttnK | Target::AttnV => (dims.n_embd, kv),
            Target::AttnOutput => (q, dims.n_embd),
            Target::FfnGate | Target::FfnUp => (dims.n_embd, dims.n_ff),
            Target::FfnDown => (dims.n_ff, dims.n_embd),
        }
    }

    /// The number of heads whose rows the GGUF converter permuted in this layer's weight (Q: `n_head`,
    /// K: `n_head_kv`), or `None` when the rows are in Hugging Face order.
    pub fn permuted_heads(self, dims: &ModelDims) -> Option<usize> {
        match self {
            _ if !dims.qk_permuted => None,
            Target::AttnQ => Some(dims.n_head),
            Target::AttnK => Some(dims.n_head_kv),
            _ => None,
        }
    }
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.gguf_name())
    }
}

/// One linear layer of the model: block index and target.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Site {
    pub layer: usize,
    pub target: Target,
}

impl Site {
    pub fn new(layer: usize, target: Target) -> Site {
        Site { layer, target }
    }
}

impl std::fmt::Display for Site {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "blk.{}.{}", self.layer, self.target.gguf_name())
    }
}

/// The geometry of the model an adapter belongs to (what the adapter needs, nothing more).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelDims {
    pub n_layer: usize,
    pub n_embd: usize,
    pub n_ff: usize,
    pub n_head: usize,
    pub n_head_kv: usize,
    pub head_dim: usize,
    /// The GGUF file stores Q and K rows permuted relative to Hugging Face (arch `llama`, NORM rope;
    /// FORMATS.md §3.4). Adapters keep their tensors in the model's (GGUF) order in memory and undo
    /// the permutation when writing PEFT files.
    pub qk_permuted: bool,
}

impl ModelDims {
    /// Width of the K and V projections (`n_head_kv · head_dim`).
    pub fn kv_dim(&self) -> usize {
        self.n_head_kv * self.head_dim
    }

    /// Checks that the geometry is usable (non-zero sizes, whole GQA groups, even head dim when
    /// permuted).
    pub fn validate(&self) -> Result<()> {
        let fields = [
            ("n_layer", self.n_layer),
            ("n_embd", self.n_embd),
            ("n_ff", self.n_ff),
            ("n_head", self.n_head),
            ("n_head_kv", self.n_head_kv),
            ("head_dim", self.head_dim),
        ];
        if let Some((name, _)) = fields.iter().find(|(_, v)| *v == 0) {
            return Err(Error::InvalidArgument(format!(
                "model dims: {name} is 0 ({self:?})"
            )));
        }
        if self.qk_permuted && !self.head_dim.is_multiple_of(2) {
            return Err(Error::InvalidArgument(format!(
                "model dims: head_dim {} is odd, so Q/K rows cannot be pair-permuted",
                self.head_dim
            )));
        }
        Ok(())
    }
}

/// Parses a `--targets` value: `all-linear` (any case) or a comma-separated list of GGUF or Hugging
/// Face names (may be mixed; duplicates are merged). Returns targets in `Target::ALL` order.
pub fn parse_targets(spec: &str) -> Result<Vec<Target>> {
    if spec.trim().eq_ignore_ascii_case("all-linear") {
        return Ok(Target::ALL.to_vec());
    }
    let mut out = Vec::new();
    let mut unknown = Vec::new();
    for item in spec.split(',').map(str::trim) {
        if item.is_empty() {
            continue;
        }
        match Target::from_name(item) {
            Some(t) if !out.contains(&t) => out.push(t),
            Some(_) => {}
            None => unknown.push(item.to_string()),
        }
    }
    if !unknown.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "--targets: unknown layer name(s) {unknown:?}; expected 'all-linear' or a list of {} \
             (or the Hugging Face names {})",
            names(Target::gguf_name),
            names(Target::hf_name)
        )));
    }
    if out.is_empty() {
        return Err(Error::InvalidArgument(format!(
            "--targets '{spec}' names no layer; expected 'all-linear' or a list of {}",
            names(Target::gguf_name)
        )));
    }
    out.sort();
    Ok(out)
}

fn names(f: fn(Target) -> &'static str) -> String {
    Target::ALL.map(f).join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_both_namings() {
        assert_eq!(
            parse_targets("q_proj, attn_v,q_proj").unwrap(),
            vec![Target::AttnQ, Target::AttnV]
        );
        assert_eq!(parse_targets("ALL-LINEAR").unwrap(), Target::ALL.to_vec());
        let e = parse_targets("q_proj,qproj,lm_head")
            .unwrap_err()
            .to_string();
        assert!(e.contains("qproj") && e.contains("lm_head"), "{e}");
        assert!(parse_targets(" , ").is_err());
    }
}
