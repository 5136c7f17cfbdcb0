//! Activation memory: one sizes table per block, and one allocation for all blocks.
//!
//! What a block saves for backward (`LayerActs`) is laid out back to back in one `Vec<f32>`; the
//! residual stream (every block's input, plus the last block's output) is a second one. How many
//! block slots exist depends on the mode: all of them (`Full`), one reused slot recomputed from
//! the saved block inputs during backward (`Checkpoint`), or one slot and no history
//! (`Inference`). Training passes take these buffers from the model's `BufferPool` and give
//! them back when they end (`new_in`, `recycle_into`).

use super::bufs::BufferPool;
use super::config::Config;

/// What the forward pass keeps.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ActivationMode {
    /// Everything backward needs, for every block.
    Full,
    /// Only each block's input; backward recomputes one block at a time.
    Checkpoint,
    /// Nothing beyond the current block (no backward possible).
    Inference,
}

/// Sizes of one block's saved activations for `n_seq` sequences of `seq_len` tokens.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct LayerLayout {
    pub n_seq: usize,
    pub seq_len: usize,
    pub d: usize,
    pub q_dim: usize,
    pub kv_dim: usize,
    pub n_ff: usize,
    pub n_head: usize,
}

impl LayerLayout {
    pub fn new(cfg: &Config, n_seq: usize, seq_len: usize) -> LayerLayout {
        LayerLayout {
            n_seq,
            seq_len,
            d: cfg.n_embd,
            q_dim: cfg.q_dim(),
            kv_dim: cfg.kv_dim(),
            n_ff: cfg.n_ff,
            n_head: cfg.n_head,
        }
    }

    /// Tokens in the batch.
    pub fn n(&self) -> usize {
        self.n_seq * self.seq_len
    }

    /// The sizes table, in the order `LayerActs` fields are laid out.
    fn sizes(&self) -> [usize; 13] {
        let n = self.n();
        [
            n * self.d,      // ln1
            n,               // rstd1
            n * self.q_dim,  // q
            n * self.kv_dim, // k
            n * self.kv_dim, // v
            n * self.q_dim,  // att
            n * self.n_head, // lse
            n * self.d,      // x_mid
            n * self.d,      // ln2
            n,               // rstd2
            n * self.n_ff,   // gate
            n * self.n_ff,   // up
            n * self.n_ff,   // h
        ]
    }

    /// f32 values per block.
    pub fn floats(&self) -> usize {
        self.sizes().iter().sum()
    }
}

/// One block's saved activations (views into the arena).
pub struct LayerActs<'a> {
    pub ln1: &'a mut [f32],   // [n, d] attention norm output
    pub rstd1: &'a mut [f32], // [n]
    pub q: &'a mut [f32],     // [n, q_dim] after rope
    pub k: &'a mut [f32],     // [n, kv_dim] after rope
    pub v: &'a mut [f32],     // [n, kv_dim]
    pub att: &'a mut [f32],   // [n, q_dim] attention output (o_proj input)
    pub lse: &'a mut [f32],   // [n_seq, seq_len, n_head]
    pub x_mid: &'a mut [f32], // [n, d] residual after attention
    pub ln2: &'a mut [f32],   // [n, d] ffn norm output
    pub rstd2: &'a mut [f32], // [n]
    pub gate: &'a mut [f32],  // [n, n_ff]
    pub up: &'a mut [f32],    // [n, n_ff]
    pub h: &'a mut [f32],     // [n, n_ff] silu(gate)·up (down_proj input)
}

impl<'a> LayerActs<'a> {
    fn split(buf: &'a mut [f32], layout: &LayerLayout) -> LayerActs<'a> {
        let s = layout.sizes();
        let mut rest = buf;
        let mut take = |n: usize| {
            let (a, b) = std::mem::take(&mut rest).split_at_mut(n);
            rest = b;
            a
        };
        LayerActs {
            ln1: take(s[0]),
            rstd1: take(s[1]),
            q: take(s[2]),
            k: take(s[3]),
            v: take(s[4]),
            att: take(s[5]),
            lse: take(s[6]),
            x_mid: take(s[7]),
            ln2: take(s[8]),
            rstd2: take(s[9]),
            gate: take(s[10]),
            up: take(s[11]),
            h: take(s[12]),
        }
    }
}

/// Which of an `Activations`' buffers go back to the pool (in field order).
#[derive(Clone, Copy, Debug, Default)]
pub struct Recycle([bool; 5]);

/// All activations of one forward pass.
pub struct Activations {
    pub mode: ActivationMode,
    pub layout: LayerLayout,
    n_layer: usize,
    resid: Vec<f32>,       // [n_resid_slots, n, d]
    layers: Vec<f32>,      // [n_layer_slots, layout.floats()]
    pub lnf: Vec<f32>,     // [n, d] final norm output
    pub rstdf: Vec<f32>,   // [n]
    pub scratch: Vec<f32>, // [n, d] linear outputs before the residual add
}

impl Activations {
    /// Fresh (zeroed) buffers, freed when dropped.
    pub fn new(cfg: &Config, n_seq: usize, seq_len: usize, mode: ActivationMode) -> Activations {
        Self::with(cfg, n_seq, seq_len, mode, |len| vec![0.0; len])
    }

    /// Buffers taken from `pool` (stale contents: the forward writes every value before it reads
    /// it; docs/model.md "Buffers kept between passes"). `Inference` passes reuse spares only and
    /// allocate the rest, so they never add to what the pool keeps; give the buffers back with
    /// `recycle_into`.
    pub fn new_in(
        pool: &BufferPool,
        cfg: &Config,
        n_seq: usize,
        seq_len: usize,
        mode: ActivationMode,
    ) -> (Activations, Recycle) {
        let mut from_pool = [false; 5];
        let mut i = 0;
        let acts = Self::with(cfg, n_seq, seq_len, mode, |len| {
            let buf = match mode {
                ActivationMode::Inference => pool.take_existing(len),
                _ => Some(pool.take(len)),
            };
            from_pool[i] = buf.is_some();
            i += 1;
            buf.unwrap_or_else(|| vec![0.0; len])
        });
        (acts, Recycle(from_pool))
    }

    fn with(
        cfg: &Config,
        n_seq: usize,
        seq_len: usize,
        mode: ActivationMode,
        mut alloc: impl FnMut(usize) -> Vec<f32>,
    ) -> Activations {
        let layout = LayerLayout::new(cfg, n_seq, seq_len);
        let (resid_slots, layer_slots) = Self::slots(mode, cfg.n_layer);
        let nd = layout.n() * layout.d;
        Activations {
            mode,
            layout,
            n_layer: cfg.n_layer,
            resid: alloc(resid_slots * nd),
            layers: alloc(layer_slots * layout.floats()),
            lnf: alloc(nd),
            rstdf: alloc(layout.n()),
            scratch: alloc(nd),
        }
    }

    /// Gives back to `pool` the buffers `recycle` marks (what `new_in` took from it).
    /// Leaves the activations empty.
    pub fn recycle_into(&mut self, pool: &BufferPool, recycle: Recycle) {
        let bufs = [
            &mut self.resid,
            &mut self.layers,
            &mut self.lnf,
            &mut self.rstdf,
            &mut self.scratch,
        ];
        for (b, keep) in bufs.into_iter().zip(recycle.0) {
            let b = std::mem::take(b);
            if keep {
                pool.give_back(b);
            }
        }
    }

    fn slots(mode: ActivationMode, n_layer: usize) -> (usize, usize) {
        match mode {
            ActivationMode::Full => (n_layer + 1, n_layer),
            ActivationMode::Checkpoint => (n_layer + 1, 1),
            ActivationMode::Inference => (2, 1),
        }
    }

    /// Bytes a forward pass of this shape allocates (for the memory planner).
    pub fn bytes_for(cfg: &Config, n_seq: usize, seq_len: usize, mode: ActivationMode) -> usize {
        let layout = LayerLayout::new(cfg, n_seq, seq_len);
        let (r, l) = Self::slots(mode, cfg.n_layer);
        let nd = layout.n() * layout.d;
        4 * (r * nd + l * layout.floats() + 2 * nd + layout.n())
    }

    pub fn bytes(&self) -> usize {
        4 * (self.resid.len()
            + self.layers.len()
            + self.lnf.len()
            + self.rstdf.len()
            + self.scratch.len())
    }

    fn resid_slot(&self, i: usize) -> usize {
        match self.mode {
            ActivationMode::Inference => i % 2,
            _ => i,
        }
    }

    fn layer_slot(&self, l: usize) -> usize {
        match self.mode {
            ActivationMode::Full => l,
            _ => 0,
        }
    }

    /// The residual stream entering block `i` (`i = n_layer`: the last block's output).
    pub fn resid(&self, i: usize) -> &[f32] {
        let nd = self.layout.n() * self.layout.d;
        let s = self.resid_slot(i);
        &self.resid[s * nd..(s + 1) * nd]
    }

    pub fn resid_mut(&mut self, i: usize) -> &mut [f32] {
        let nd = self.layout.n() * self.layout.d;
        let s = self.resid_slot(i);
        &mut self.resid[s * nd..(s + 1) * nd]
    }

    /// Block `l`'s saved activations, its input `resid(l)`, its output `resid(l + 1)` and the
    /// scratch buffer, borrowed together.
    pub fn block(&mut self, l: usize) -> BlockBuffers<'_> {
        let nd = self.layout.n() * self.layout.d;
        let lf = self.layout.floats();
        let ls = self.layer_slot(l);
        let (si, so) = (self.resid_slot(l), self.resid_slot(l + 1));
        let acts = LayerActs::split(&mut self.layers[ls * lf..(ls + 1) * lf], &self.layout);
        // Split the residual arena so the input slot is shared and the output slot is mutable.
        let (x_in, x_out): (&[f32], &mut [f32]) = if si < so {
            let (a, b) = self.resid.split_at_mut(so * nd);
            (&a[si * nd..(si + 1) * nd], &mut b[..nd])
        } else {
            let (a, b) = self.resid.split_at_mut(si * nd);
            (&b[..nd], &mut a[so * nd..(so + 1) * nd])
        };
        BlockBuffers {
            acts,
            x_in,
            x_out,
            scratch: &mut self.scratch,
        }
    }

    /// The last block's output and the final norm's buffers `(x, lnf, rstdf)`.
    pub fn final_norm(&mut self) -> (&[f32], &mut [f32], &mut [f32]) {
        let nd = self.layout.n() * self.layout.d;
        let s = self.resid_slot(self.n_layer);
        (
            &self.resid[s * nd..(s + 1) * nd],
            &mut self.lnf,
            &mut self.rstdf,
        )
    }

    /// Blocks whose activations are currently held (all in `Full` mode).
    pub fn n_layer(&self) -> usize {
        self.n_layer
    }
}

/// Everything one block's forward writes or reads.
pub struct BlockBuffers<'a> {
    pub acts: LayerActs<'a>,
    pub x_in: &'a [f32],        // [n, d]
    pub x_out: &'a mut [f32],   // [n, d]
    pub scratch: &'a mut [f32], // [n, d]
}
