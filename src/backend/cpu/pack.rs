//! Packing: copies blocks of the GEMM operands into the micro-panel layout the kernels stream.
//! A block of A (`m x kc`) becomes `ceil(m/MR)` panels, panel `q` holding rows `q·MR..` as
//! `dst[q·kc·MR + p·MR + i]`; a block of B (`kc x nc`) becomes `ceil(nc/NR)` panels,
//! `dst[q·kc·NR + p·NR + j]`. Rows/columns past the matrix edge are zero, so edge tiles compute
//! garbage-free values that the driver simply does not store.

use super::gemm::Block;
use super::kernels::Kernels;

/// A dense f32 matrix view: element `(r, c)` is `data[r·rs + c·cs]`.
#[derive(Clone, Copy)]
pub(crate) struct Dense<'a> {
    pub data: &'a [f32],
    pub rs: usize,
    pub cs: usize,
}

impl<'a> Dense<'a> {
    /// Row-major `[rows, cols]`.
    pub fn row_major(data: &'a [f32], cols: usize) -> Self {
        Dense {
            data,
            rs: cols,
            cs: 1,
        }
    }

    /// The transpose of a row-major `[rows, cols]` matrix (so `(r, c)` reads `data[c·cols + r]`).
    pub fn transposed(data: &'a [f32], cols: usize) -> Self {
        Dense {
            data,
            rs: 1,
            cs: cols,
        }
    }
}

/// A growable f32 buffer whose usable part starts on a 64-byte boundary (whole cache lines for
/// the kernels' vector loads).
#[derive(Default)]
pub(crate) struct AlignedBuf {
    raw: Vec<f32>,
}

pub(crate) const ALIGN_FLOATS: usize = 16;

impl AlignedBuf {
    /// `len` floats (contents unspecified).
    pub fn get(&mut self, len: usize) -> &mut [f32] {
        let need = len + ALIGN_FLOATS;
        if self.raw.len() < need {
            self.raw.resize(need, 0.0);
        }
        let off = self.raw.as_ptr().align_offset(64).min(ALIGN_FLOATS);
        &mut self.raw[off..off + len]
    }
}

/// Packs rows `0..m` and columns `p0..p0+kc` of `a` into `MR`-row panels; `dst.len()` must be
/// `ceil(m/MR)·MR·kc`.
pub(crate) fn pack_a(kern: &Kernels, a: Dense, m: usize, p0: usize, kc: usize, dst: &mut [f32]) {
    let mr = kern.mr;
    for (q, panel) in dst.chunks_exact_mut(kc * mr).enumerate() {
        let i0 = q * mr;
        let rows = mr.min(m - i0);
        if rows < mr {
            panel.fill(0.0);
        }
        if a.rs == 1 {
            // Column-contiguous (A stored transposed): each step copies `rows` neighbours.
            for (p, out) in panel.chunks_exact_mut(mr).enumerate() {
                let src = (p0 + p) * a.cs + i0;
                out[..rows].copy_from_slice(&a.data[src..src + rows]);
            }
        } else if a.cs == 1 {
            kern.transpose(&a.data[i0 * a.rs + p0..], a.rs, rows, kc, panel, mr);
        } else {
            for i in 0..rows {
                let row = (i0 + i) * a.rs + p0 * a.cs;
                for (p, out) in panel.chunks_exact_mut(mr).enumerate() {
                    out[i] = a.data[row + p * a.cs];
                }
            }
        }
    }
}

/// Packs block `blk` (rows `p0..p0+kc`, columns `j0..j0+nc`) of `b` into `NR`-column panels; `dst.len()`
/// must be at least `ceil(nc/NR)·NR·kc`.
pub(crate) fn pack_b(kern: &Kernels, b: Dense, blk: Block, dst: &mut [f32]) {
    let (nr, Block { p0, kc, j0, nc }) = (kern.nr, blk);
    for (q, panel) in dst
        .chunks_exact_mut(kc * nr)
        .take(nc.div_ceil(nr))
        .enumerate()
    {
        let jq = j0 + q * nr;
        let cols = nr.min(nc - q * nr);
        if cols < nr {
            panel.fill(0.0);
        }
        if b.cs == 1 {
            for (p, out) in panel.chunks_exact_mut(nr).enumerate() {
                let src = (p0 + p) * b.rs + jq;
                out[..cols].copy_from_slice(&b.data[src..src + cols]);
            }
        } else if b.rs == 1 {
            // B stored transposed (a weight's rows): each row of the source is a panel column.
            kern.transpose(&b.data[jq * b.cs + p0..], b.cs, cols, kc, panel, nr);
        } else {
            for j in 0..cols {
                let col = jq * b.cs + j * b.cs + p0 * b.rs;
                for (p, out) in panel[j..].iter_mut().step_by(nr).take(kc).enumerate() {
                    *out = b.data[col + p * b.rs];
                }
            }
        }
    }
}
