//! Rotary position embeddings in both channel pairings (FORMATS.md §3.3), applied in place.
//!
//! Angles follow Hugging Face's f32 arithmetic: `inv_freq[i] = 1 / base^(2i/n_rot)` (f32), divided
//! by the linear scaling factor and by `rope_freqs[i]` when present (Llama-3 scaling, which the
//! converter stores as per-frequency divisors), and `θ = pos · inv_freq[i]` as an f32 product.

use super::{check_len, for_each_part, rows_per_task};
use crate::backend::Backend;
use crate::error::{Error, Result};
use crate::model::config::{RopeConfig, RopeLayout};

/// cos/sin of every rotated pair at positions `first_pos..first_pos + n_pos`.
#[derive(Clone, Debug)]
pub struct RopeTable {
    pub layout: RopeLayout,
    pub n_rot: usize,
    first_pos: usize,
    n_pos: usize,
    cos: Vec<f32>, // [n_pos, n_rot/2]
    sin: Vec<f32>, // [n_pos, n_rot/2]
}

impl RopeTable {
    /// `freq_factors[n_rot/2]`: the `rope_freqs.weight` divisors, if the model has them.
    pub fn new(
        cfg: &RopeConfig,
        freq_factors: Option<&[f32]>,
        first_pos: usize,
        n_pos: usize,
    ) -> Result<RopeTable> {
        let half = cfg.n_rot / 2;
        if let Some(ff) = freq_factors {
            if ff.len() != half {
                return Err(Error::InvalidArgument(format!(
                    "tensor 'rope_freqs.weight' has {} values, rope needs n_rot/2 = {half}",
                    ff.len()
                )));
            }
            if let Some(bad) = ff.iter().find(|f| !(f.is_finite() && **f > 0.0)) {
                return Err(Error::InvalidArgument(format!(
                    "tensor 'rope_freqs.weight' holds {bad}, factors must be positive"
                )));
            }
        }
        let inv_freq: Vec<f32> = (0..half)
            .map(|i| {
                let exponent = (2 * i) as f32 / cfg.n_rot as f32;
                let pow = (cfg.freq_base as f64).powf(exponent as f64) as f32;
                let mut f = 1.0f32 / pow;
                f *= cfg.freq_scale;
                if let Some(ff) = freq_factors {
                    f /= ff[i];
                }
                f
            })
            .collect();
        let mut cos = Vec::with_capacity(n_pos * half);
        let mut sin = Vec::with_capacity(n_pos * half);
        for p in first_pos..first_pos + n_pos {
            for &f in &inv_freq {
                let theta = (p as f32 * f) as f64;
                cos.push(theta.cos() as f32);
                sin.push(theta.sin() as f32);
            }
        }
        Ok(RopeTable {
            layout: cfg.layout,
            n_rot: cfg.n_rot,
            first_pos,
            n_pos,
            cos,
            sin,
        })
    }

    /// Positions this table covers.
    pub fn positions(&self) -> std::ops::Range<usize> {
        self.first_pos..self.first_pos + self.n_pos
    }

    fn check(
        &self,
        x_len: usize,
        positions: &[usize],
        n_heads: usize,
        head_dim: usize,
    ) -> Result<()> {
        check_len("rope x", x_len, &[positions.len(), n_heads, head_dim])?;
        if self.n_rot > head_dim {
            return Err(Error::InvalidArgument(format!(
                "rope: n_rot {} exceeds the head size {head_dim}",
                self.n_rot
            )));
        }
        if let Some(&p) = positions.iter().find(|&&p| !self.positions().contains(&p)) {
            return Err(Error::InvalidArgument(format!(
                "rope: position {p} is outside the table's positions {:?}",
                self.positions()
            )));
        }
        Ok(())
    }

    /// Applies `f(x0, x1, cos, sin) -> (y0, y1)` to every rotated pair.
    fn apply(
        &self,
        x: &mut [f32],
        positions: &[usize],
        n_heads: usize,
        head_dim: usize,
        f: impl Fn(f32, f32, f32, f32) -> (f32, f32),
    ) -> Result<()> {
        self.check(x.len(), positions, n_heads, head_dim)?;
        let half = self.n_rot / 2;
        for (row, &p) in x.chunks_exact_mut(n_heads * head_dim).zip(positions) {
            let i = p - self.first_pos;
            let cos = &self.cos[i * half..(i + 1) * half];
            let sin = &self.sin[i * half..(i + 1) * half];
            for head in row.chunks_exact_mut(head_dim) {
                for i in 0..half {
                    let (a, b) = match self.layout {
                        RopeLayout::Norm => (2 * i, 2 * i + 1),
                        RopeLayout::Neox => (i, i + half),
                    };
                    let (y0, y1) = f(head[a], head[b], cos[i], sin[i]);
                    head[a] = y0;
                    head[b] = y1;
                }
            }
        }
        Ok(())
    }
}

/// Rotates `x[n, n_heads·head_dim]` in place; row `r` is at position `positions[r]`.
pub fn rope_forward(
    x: &mut [f32],       // [n, n_heads, head_dim]
    positions: &[usize], // [n]
    table: &RopeTable,
    n_heads: usize,
    head_dim: usize,
) -> Result<()> {
    table.apply(x, positions, n_heads, head_dim, |x0, x1, c, s| {
        (x0 * c - x1 * s, x0 * s + x1 * c)
    })
}

/// Turns the gradient w.r.t. rotated values into the gradient w.r.t. the inputs, in place (the
/// transposed rotation).
pub fn rope_backward(
    dx: &mut [f32],      // [n, n_heads, head_dim]
    positions: &[usize], // [n]
    table: &RopeTable,
    n_heads: usize,
    head_dim: usize,
) -> Result<()> {
    table.apply(dx, positions, n_heads, head_dim, |g0, g1, c, s| {
        (g0 * c + g1 * s, -g0 * s + g1 * c)
    })
}

/// `rope_forward` on the backend's threads, over ranges of rows (same result).
pub fn rope_forward_on(
    backend: &dyn Backend,
    x: &mut [f32],       // [n, n_heads, head_dim]
    positions: &[usize], // [n]
    table: &RopeTable,
    n_heads: usize,
    head_dim: usize,
) -> Result<()> {
    rows_on(
        backend,
        rope_forward,
        x,
        positions,
        table,
        n_heads,
        head_dim,
    )
}

/// `rope_backward` on the backend's threads, over ranges of rows (same result).
pub fn rope_backward_on(
    backend: &dyn Backend,
    dx: &mut [f32],      // [n, n_heads, head_dim]
    positions: &[usize], // [n]
    table: &RopeTable,
    n_heads: usize,
    head_dim: usize,
) -> Result<()> {
    rows_on(
        backend,
        rope_backward,
        dx,
        positions,
        table,
        n_heads,
        head_dim,
    )
}

type RopeFn = fn(&mut [f32], &[usize], &RopeTable, usize, usize) -> Result<()>;

fn rows_on(
    backend: &dyn Backend,
    f: RopeFn,
    x: &mut [f32],
    positions: &[usize],
    table: &RopeTable,
    n_heads: usize,
    head_dim: usize,
) -> Result<()> {
    let (n, row) = (positions.len(), n_heads * head_dim);
    let per = rows_per_task(backend, n, row);
    if per >= n || row == 0 {
        return f(x, positions, table, n_heads, head_dim);
    }
    table.check(x.len(), positions, n_heads, head_dim)?;
    let parts: Vec<&mut [f32]> = x.chunks_mut(per * row).collect();
    for_each_part(backend, "rope", parts, &|i, xs| {
        let r0 = i * per;
        f(
            xs,
            &positions[r0..r0 + xs.len() / row],
            table,
            n_heads,
            head_dim,
        )
    })
}
