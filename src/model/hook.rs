//! The seam where adapters attach: every linear layer of a block (q, k, v, o, gate, up, down)
//! runs through a `LinearHook`. The default methods run the frozen base layer (matrix product plus
//! bias) and nothing else; an adapter overrides them to add its own path (LoRA: `+ s·B·A·x`), to
//! rescale the input or output (IA3), and to accumulate its parameter gradients in backward.

use crate::backend::{Backend, LinearWeight};
use crate::error::Result;

/// Which linear layer of a block.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum LinearKind {
    Q,
    K,
    V,
    O,
    Gate,
    Up,
    Down,
}

impl LinearKind {
    pub const ALL: [LinearKind; 7] = [
        LinearKind::Q,
        LinearKind::K,
        LinearKind::V,
        LinearKind::O,
        LinearKind::Gate,
        LinearKind::Up,
        LinearKind::Down,
    ];

    /// GGUF tensor base name (`attn_q`, ..., `ffn_down`).
    pub fn gguf_name(self) -> &'static str {
        match self {
            LinearKind::Q => "attn_q",
            LinearKind::K => "attn_k",
            LinearKind::V => "attn_v",
            LinearKind::O => "attn_output",
            LinearKind::Gate => "ffn_gate",
            LinearKind::Up => "ffn_up",
            LinearKind::Down => "ffn_down",
        }
    }

    /// Hugging Face module name (`q_proj`, ..., `down_proj`).
    pub fn hf_name(self) -> &'static str {
        match self {
            LinearKind::Q => "q_proj",
            LinearKind::K => "k_proj",
            LinearKind::V => "v_proj",
            LinearKind::O => "o_proj",
            LinearKind::Gate => "gate_proj",
            LinearKind::Up => "up_proj",
            LinearKind::Down => "down_proj",
        }
    }
}

/// One linear layer of the model: block index and kind.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct LinearSite {
    pub layer: usize,
    pub kind: LinearKind,
}

/// A frozen base linear layer `y = x·Wᵀ + b`.
pub struct BaseLinear<'a, 'w> {
    pub weight: &'a LinearWeight<'w>, // [n_out, n_in]
    pub bias: Option<&'a [f32]>,      // [n_out]
    pub backend: &'a dyn Backend,
}

impl BaseLinear<'_, '_> {
    /// `y[m, n_out] = x[m, n_in]·Wᵀ (+ b)`, overwriting `y`.
    pub fn forward(&self, x: &[f32], m: usize, y: &mut [f32]) -> Result<()> {
        self.backend.linear_forward(x, m, self.weight, y)?;
        if let Some(b) = self.bias {
            for row in y.chunks_exact_mut(self.weight.n_out) {
                for (v, &bi) in row.iter_mut().zip(b) {
                    *v += bi;
                }
            }
        }
        Ok(())
    }

    /// `dx[m, n_in] += dy[m, n_out]·W` (the bias and W are frozen).
    pub fn backward_input(&self, dy: &[f32], m: usize, dx: &mut [f32]) -> Result<()> {
        self.backend.linear_backward_input(dy, m, self.weight, dx)
    }
}

/// Wraps every linear layer of the blocks. `x` is the layer input `[m, n_in]` (the model keeps it
/// for backward); `y` the output `[m, n_out]`.
pub trait LinearHook {
    /// Computes `y` (overwriting it). Default: the base layer.
    fn forward(
        &mut self,
        site: LinearSite,
        base: &BaseLinear,
        x: &[f32],
        m: usize,
        y: &mut [f32],
    ) -> Result<()> {
        let _ = site;
        base.forward(x, m, y)
    }

    /// Adds the gradient w.r.t. `x` into `dx`, given `dy`, and accumulates the hook's own
    /// parameter gradients. Default: the base layer's input gradient.
    fn backward(
        &mut self,
        site: LinearSite,
        base: &BaseLinear,
        x: &[f32],
        dy: &[f32],
        m: usize,
        dx: &mut [f32],
    ) -> Result<()> {
        let _ = (site, x);
        base.backward_input(dy, m, dx)
    }
}

/// The base model alone.
#[derive(Clone, Copy, Debug, Default)]
pub struct NoHook;

impl LinearHook for NoHook {}
