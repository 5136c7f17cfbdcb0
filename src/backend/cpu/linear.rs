//! Linear layers through a frozen weight of any storage: forward `y = x·Wᵀ` and backward-input
//! `dx += dy·W`. Both run the blocked GEMM with the weight as its B operand: `PackB` decodes the
//! `KC x NC` block of W the next sweep needs straight into packed panels (per-thread scratch, one
//! L2-sized tile), so W is decoded once per call (blocks that straddle two tasks' columns twice)
//! and never copied whole.
//!
//! Few rows (`m <= gemv_max_m`, generation is `m = 1`) take a matrix-vector path instead: each
//! row of W is decoded once and meets every input row with a dot product (forward) or an axpy
//! (backward), without packing.
//!
//! bf16 compute: the GEMM packs W's decoded tile straight into bf16 pair panels (or rounds the
//! f32 panels, see `bf16.rs`); the matrix-vector path rounds the input rows and each decoded
//! batch of W, then runs the f32 dot products.

use super::bf16;
use super::gemm::{
    self, ranges, with_scratch, Block, DecodeBufs, Gemm, PackB, Path, SharedC, KC, NC,
};
use super::kernels::Kernels;
use super::pack::{pack_b, Dense};
use super::weight::WeightRows;
use super::Pool;
use crate::backend::LinearWeight;
use crate::error::{Error, Result};

/// Up to this many rows, linear layers use the matrix-vector path: the GEMM pads `m` to the
/// kernel's `MR` rows, so below about half a tile the per-row dot products cost less (measured
/// with Q4_1 576x1536 weights: AVX-512 `MR = 14` breaks even near m = 9, AVX2 `MR = 6` near 5).
fn gemv_max_m(kern: &Kernels) -> usize {
    kern.mr / 2 + 1
}

/// Floats of W the matrix-vector path decodes per call.
const GEMV_BATCH: usize = 4096;

/// Most floats the decode buffers of one thread hold (rows before packing, or a GEMV batch,
/// plus the covering blocks of an unaligned range: at most two extra 256-element blocks).
pub(crate) fn decode_floats(nr: usize) -> usize {
    (nr * KC).max(NC).max(GEMV_BATCH) + NC + 2 * 256 + (nr * KC / 2).max(NC)
}

fn check_len(what: &str, len: usize, rows: usize, cols: usize) -> Result<()> {
    if rows.checked_mul(cols) == Some(len) {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "{what} has {len} elements, expected {rows}x{cols}"
        )))
    }
}

/// `y[m, n_out] = x[m, n_in] · Wᵀ`.
pub(crate) fn forward(
    pool: &Pool,
    kern: &Kernels,
    path: Path,
    x: &[f32],
    m: usize,
    w: &LinearWeight,
    y: &mut [f32],
) -> Result<()> {
    let rows = WeightRows::new(w, kern.level(), "linear_forward")?;
    check_len("linear_forward: x", x.len(), m, w.n_in)?;
    check_len("linear_forward: y", y.len(), m, w.n_out)?;
    if m <= gemv_max_m(kern) {
        return forward_gemv(pool, kern, path.is_bf16(), x, m, &rows, y);
    }
    let b = ForwardB(&rows);
    let g = Gemm {
        m,
        n: w.n_out,
        k: w.n_in,
        a: Dense::row_major(x, w.n_in),
        b: &b,
        beta: 0.0,
        path,
    };
    gemm::gemm(pool, kern, &g, y)
}

/// `dx[m, n_in] += dy[m, n_out] · W`.
pub(crate) fn backward_input(
    pool: &Pool,
    kern: &Kernels,
    path: Path,
    dy: &[f32],
    m: usize,
    w: &LinearWeight,
    dx: &mut [f32],
) -> Result<()> {
    let rows = WeightRows::new(w, kern.level(), "linear_backward_input")?;
    check_len("linear_backward_input: dy", dy.len(), m, w.n_out)?;
    check_len("linear_backward_input: dx", dx.len(), m, w.n_in)?;
    if m <= gemv_max_m(kern) {
        return backward_gemv(pool, kern, path.is_bf16(), dy, m, &rows, dx);
    }
    let b = BackwardB(&rows);
    let g = Gemm {
        m,
        n: w.n_in,
        k: w.n_out,
        a: Dense::row_major(dy, w.n_out),
        b: &b,
        beta: 1.0,
        path,
    };
    gemm::gemm(pool, kern, &g, dx)
}

/// B = Wᵀ (`B[p, j] = W[j, p]`, `k = n_in`, `n = n_out`): a panel column is a slice of a W row.
struct ForwardB<'a>(&'a WeightRows<'a>);

impl ForwardB<'_> {
    /// For each `NR`-column panel `q` of block `blk` of a decoded (not dense) W: decodes the
    /// panel's `cols` rows of W into `dec.rows` (`kc` apart) and calls
    /// `put(q, cols, rows, pair_scratch)`. `p0` is a multiple of KC and `p0 + kc` is KC-aligned or
    /// `n_in`: whole blocks.
    fn decode_panels(
        &self,
        nr: usize,
        blk: Block,
        dec: &mut DecodeBufs,
        mut put: impl FnMut(usize, usize, &[f32], &mut Vec<u32>),
    ) -> Result<()> {
        let (w, Block { p0, kc, j0, nc }) = (self.0, blk);
        dec.rows.resize(nr * kc, 0.0);
        for q in 0..nc.div_ceil(nr) {
            let cols = nr.min(nc - q * nr);
            for (jj, row) in dec.rows.chunks_exact_mut(kc).take(cols).enumerate() {
                w.decode(j0 + q * nr + jj, p0, row, &mut dec.blocks)?;
            }
            put(q, cols, &dec.rows, &mut dec.pairs);
        }
        Ok(())
    }
}

impl PackB for ForwardB<'_> {
    fn pack(
        &self,
        kern: &Kernels,
        blk: Block,
        dst: &mut [f32],
        dec: &mut DecodeBufs,
    ) -> Result<()> {
        let (w, nr, kc) = (self.0, kern.nr, blk.kc);
        if let Some(d) = w.dense() {
            pack_b(kern, Dense::transposed(d.data, w.n_in), blk, dst);
            return Ok(());
        }
        self.decode_panels(nr, blk, dec, |q, cols, rows, _| {
            let panel = &mut dst[q * kc * nr..(q + 1) * kc * nr];
            if cols < nr {
                panel.fill(0.0);
            }
            kern.transpose(rows, kc, cols, kc, panel, nr);
        })
    }

    fn pack_pairs(
        &self,
        kern: &Kernels,
        blk: Block,
        dst: &mut [u32],
        dec: &mut DecodeBufs,
    ) -> Result<()> {
        let (w, nr, kc) = (self.0, kern.nr, blk.kc);
        if let Some(d) = w.dense() {
            let b = Dense::transposed(d.data, w.n_in);
            bf16::pack_b(kern, b, blk, dst, &mut dec.pairs);
            return Ok(());
        }
        let kc2 = kc.div_ceil(2);
        self.decode_panels(nr, blk, dec, |q, cols, rows, pairs| {
            let panel = &mut dst[q * kc2 * nr..(q + 1) * kc2 * nr];
            bf16::pack_runs_along_k(kern, rows, kc, cols, kc, panel, nr, pairs);
        })
    }
}

/// B = W (`B[p, j] = W[p, j]`, `k = n_out`, `n = n_in`): a panel row is a slice of a W row.
struct BackwardB<'a>(&'a WeightRows<'a>);

impl PackB for BackwardB<'_> {
    fn col_align(&self) -> usize {
        self.0.block()
    }

    fn pack(
        &self,
        kern: &Kernels,
        blk: Block,
        dst: &mut [f32],
        dec: &mut DecodeBufs,
    ) -> Result<()> {
        let (w, nr, Block { p0, kc, j0, nc }) = (self.0, kern.nr, blk);
        if let Some(d) = w.dense() {
            pack_b(kern, d, blk, dst);
            return Ok(());
        }
        let panels = nc.div_ceil(nr);
        if !nc.is_multiple_of(nr) {
            dst[(panels - 1) * kc * nr..panels * kc * nr].fill(0.0);
        }
        dec.rows.resize(nc, 0.0);
        for p in 0..kc {
            w.decode(p0 + p, j0, &mut dec.rows, &mut dec.blocks)?;
            for (q, src) in dec.rows.chunks(nr).enumerate() {
                let at = q * kc * nr + p * nr;
                dst[at..at + src.len()].copy_from_slice(src);
            }
        }
        Ok(())
    }

    fn pack_pairs(
        &self,
        kern: &Kernels,
        blk: Block,
        dst: &mut [u32],
        dec: &mut DecodeBufs,
    ) -> Result<()> {
        let (w, nr, Block { p0, kc, j0, nc }) = (self.0, kern.nr, blk);
        if let Some(d) = w.dense() {
            bf16::pack_b(kern, d, blk, dst, &mut dec.pairs);
            return Ok(());
        }
        let (panels, kc2) = (nc.div_ceil(nr), kc.div_ceil(2));
        if !nc.is_multiple_of(nr) {
            dst[(panels - 1) * kc2 * nr..panels * kc2 * nr].fill(0);
        }
        // Two rows of W (consecutive k) per step: decoded, paired, scattered into the panels.
        dec.rows.resize(2 * nc, 0.0);
        dec.pairs.resize(nc, 0);
        for p2 in 0..kc2 {
            let (lo, hi) = dec.rows.split_at_mut(nc);
            let p = p0 + 2 * p2;
            w.decode(p, j0, lo, &mut dec.blocks)?;
            let has_hi = 2 * p2 + 1 < kc;
            if has_hi {
                w.decode(p + 1, j0, hi, &mut dec.blocks)?;
            }
            bf16::pairs_into_step(kern.level(), lo, has_hi.then_some(&*hi), p2, kc2, nr, dst);
        }
        Ok(())
    }
}

/// The input rows, rounded to bf16 when `round` (a copy: few rows).
fn rounded_input<'x>(kern: &Kernels, x: &'x [f32], round: bool) -> std::borrow::Cow<'x, [f32]> {
    if round {
        let mut v = x.to_vec();
        bf16::round_in_place(kern.level(), &mut v);
        v.into()
    } else {
        x.into()
    }
}

/// `n` floats of W's rows from `row0` (decoded into `buf`, or in place for dense F32), rounded
/// to bf16 when `round`.
fn weight_rows<'b>(
    kern: &Kernels,
    w: &'b WeightRows,
    row0: usize,
    n: usize,
    round: bool,
    buf: &'b mut [f32],
) -> Result<&'b [f32]> {
    let n_in = w.n_in;
    let buf = &mut buf[..n];
    match w.dense() {
        Some(d) if !round => return Ok(&d.data[row0 * n_in..row0 * n_in + n]),
        Some(d) => buf.copy_from_slice(&d.data[row0 * n_in..row0 * n_in + n]),
        None => w.decode_rows(row0, buf)?,
    }
    if round {
        bf16::round_in_place(kern.level(), buf);
    }
    Ok(buf)
}

/// Forward for few rows: W's rows are split among threads; each is decoded once.
fn forward_gemv(
    pool: &Pool,
    kern: &Kernels,
    round: bool,
    x: &[f32],
    m: usize,
    w: &WeightRows,
    y: &mut [f32],
) -> Result<()> {
    let (n_in, n_out) = (w.n_in, w.n_out);
    if n_in == 0 {
        y.fill(0.0);
        return Ok(());
    }
    if m == 0 || n_out == 0 {
        return Ok(());
    }
    let parts: Vec<_> = ranges(n_out, 1, pool.threads().min(n_out)).collect();
    let x = &*rounded_input(kern, x, round);
    let yp = SharedC::new(y);
    pool.run(parts.len(), |t| {
        with_scratch(|s| {
            let (j0, j1) = parts[t];
            // Rows decode a batch at a time (one decoder call), about 16 KiB of f32.
            let batch = (GEMV_BATCH / n_in.max(1)).max(1);
            let buf = s.bpack.get(batch * n_in);
            for jb in (j0..j1).step_by(batch) {
                let rows = batch.min(j1 - jb);
                let decoded = weight_rows(kern, w, jb, rows * n_in, round, buf)?;
                for (r, row) in decoded.chunks_exact(n_in.max(1)).enumerate() {
                    for i in 0..m {
                        let v = kern.dot(&x[i * n_in..(i + 1) * n_in], row);
                        // SAFETY: `i < m`, `jb + r < n_out`, so the element is inside `y`
                        // (length `m·n_out`, checked); column `jb + r` is this task's only.
                        unsafe { *yp.ptr().add(i * n_out + jb + r) = v };
                    }
                }
            }
            Ok(())
        })
    })
}

/// Backward-input for few rows: W's columns are split among threads (on block boundaries); each
/// task walks every row of W in order, so each `dx` element sums in the same order whatever the
/// thread count.
fn backward_gemv(
    pool: &Pool,
    kern: &Kernels,
    round: bool,
    dy: &[f32],
    m: usize,
    w: &WeightRows,
    dx: &mut [f32],
) -> Result<()> {
    let (n_in, n_out) = (w.n_in, w.n_out);
    if m == 0 || n_in == 0 {
        return Ok(());
    }
    let unit = w.block().max(16);
    let parts: Vec<_> = ranges(n_in, unit, pool.threads())
        .filter(|r| r.0 < r.1)
        .collect();
    let dy = &*rounded_input(kern, dy, round);
    let dxp = SharedC::new(dx);
    pool.run(parts.len(), |t| {
        let (c0, c1) = parts[t];
        let len = c1 - c0;
        with_scratch(|s| {
            // A task that owns whole rows decodes a batch of rows per call.
            let batch = if len == n_in {
                (GEMV_BATCH / n_in).max(1)
            } else {
                1
            };
            let buf = s.bpack.get(batch * len);
            for jb in (0..n_out).step_by(batch) {
                let rows = batch.min(n_out - jb);
                let decoded: &[f32] = match w.dense() {
                    _ if len == n_in => weight_rows(kern, w, jb, rows * n_in, round, buf)?,
                    Some(d) if !round => &d.data[jb * n_in + c0..jb * n_in + c1],
                    Some(d) => {
                        buf[..len].copy_from_slice(&d.data[jb * n_in + c0..jb * n_in + c1]);
                        bf16::round_in_place(kern.level(), &mut buf[..len]);
                        &buf[..len]
                    }
                    None => {
                        w.decode(jb, c0, &mut buf[..len], &mut s.dec.blocks)?;
                        if round {
                            bf16::round_in_place(kern.level(), &mut buf[..len]);
                        }
                        &buf[..len]
                    }
                };
                for (r, row) in decoded.chunks_exact(len).enumerate() {
                    for i in 0..m {
                        // SAFETY: `dx` has `m·n_in` elements (checked) and `c1 <= n_in`;
                        // columns `c0..c1` of every row belong to this task only.
                        let out = unsafe {
                            std::slice::from_raw_parts_mut(dxp.ptr().add(i * n_in + c0), len)
                        };
                        kern.axpy(dy[i * n_out + jb + r], row, out);
                    }
                }
            }
            Ok(())
        })
    })
}
