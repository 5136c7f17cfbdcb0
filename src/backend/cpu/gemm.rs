//! The blocked GEMM driver: `C[m, n] = beta·C + A[m, k] · B[k, n]`, C row-major with `ldc = n`.
//!
//! A is packed once, whole, into `MR`-row panels per `KC`-deep slice (it is the activation side,
//! small next to the weights). The columns of C are split among threads (rows too when C is
//! narrow); each task walks its columns in `NC`-wide chunks and, per `KC` slice, packs that
//! `KC x NC` block of B into a per-thread buffer sized for L2 (this is where a quantized weight is
//! dequantized, see `PackB`), then sweeps every `MR`-row panel of A against it: the A panel stays
//! in L1 while the B block streams from L2.
//!
//! Determinism: the tile grid is fixed by `MR`/`NR` from the matrix origin, task boundaries fall
//! on tile boundaries and each element's sum runs over `k` in a fixed order (one `KC` slice after
//! another, in order). So results depend on the SIMD level only, not on the thread count.
//!
//! bf16 compute (`Path`, `bf16.rs`) changes only what the panels hold and which microkernel
//! reads them; blocking, threading and determinism are the same.

use super::bf16;
use super::kernels::{merge, Bf16Kernel, Kernels, MAX_TILE};
use super::pack::{pack_a, AlignedBuf, Dense};
use super::Pool;
use crate::error::Result;
use std::cell::Cell;
use std::thread::LocalKey;

/// Depth of a packed slice (a multiple of every ggml block size, so quantized rows split into
/// slices on block boundaries).
pub(crate) const KC: usize = 256;
/// Width of a packed B block (a multiple of every kernel's `NR` and of 256).
pub(crate) const NC: usize = 256;

/// Scratch a task thread keeps between calls: the packed B block and decode buffers.
#[derive(Default)]
pub(crate) struct Scratch {
    pub bpack: AlignedBuf,
    pub dec: DecodeBufs,
}

/// Buffers a `PackB` may use to decode weight rows.
#[derive(Default)]
pub(crate) struct DecodeBufs {
    /// Decoded rows before they are packed.
    pub rows: Vec<f32>,
    /// Whole blocks covering a range that does not start or end on a block boundary.
    pub blocks: Vec<f32>,
    /// bf16 pairs before they are transposed or scattered into panels.
    pub pairs: Vec<u32>,
}

/// How a GEMM computes its products (from the backend's `Compute`).
#[derive(Clone, Copy)]
pub(crate) enum Path {
    /// f32 inputs, f32 panels and kernels.
    F32,
    /// bf16 inputs in f32 panels (rounded after packing), the f32 kernels.
    Rounded,
    /// bf16 pair panels and the bf16 dot-product kernel.
    Pairs(&'static Bf16Kernel),
}

impl Path {
    /// Packed steps of a `kc`-deep slice: one per element, or one per pair.
    pub fn depth(self, kc: usize) -> usize {
        match self {
            Path::Pairs(_) => kc.div_ceil(2),
            Path::F32 | Path::Rounded => kc,
        }
    }

    /// Whether inputs are rounded to bf16.
    pub fn is_bf16(self) -> bool {
        !matches!(self, Path::F32)
    }
}

/// The block of B one pack call covers: rows `p0..p0+kc`, columns `j0..j0+nc`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Block {
    pub p0: usize,
    pub kc: usize,
    pub j0: usize,
    pub nc: usize,
}

thread_local! {
    static SCRATCH: Cell<Option<Box<Scratch>>> = const { Cell::new(None) };
    static A_PACK: Cell<Option<Box<AlignedBuf>>> = const { Cell::new(None) };
}

/// Runs `f` with this thread's buffer in `slot` (taken out of the thread-local and put back, so a
/// re-entrant call just gets a fresh one).
fn with_local<T: Default, R>(
    slot: &'static LocalKey<Cell<Option<Box<T>>>>,
    f: impl FnOnce(&mut T) -> R,
) -> R {
    let mut s = slot.with(|c| c.take()).unwrap_or_default();
    let r = f(&mut s);
    slot.with(|c| c.set(Some(s)));
    r
}

/// Runs `f` with this thread's task scratch.
pub(crate) fn with_scratch<R>(f: impl FnOnce(&mut Scratch) -> R) -> R {
    with_local(&SCRATCH, f)
}

/// The B operand: anything that can pack a block of itself into `NR`-column panels.
pub(crate) trait PackB: Sync {
    /// Packs block `blk` of B into `dst` (length at least `ceil(nc/NR)·NR·kc`) as
    /// `pack::pack_b` does.
    fn pack(&self, kern: &Kernels, blk: Block, dst: &mut [f32], dec: &mut DecodeBufs)
        -> Result<()>;

    /// Packs block `blk` of B into bf16 pair panels (`dst.len()` at least
    /// `ceil(nc/NR)·NR·ceil(kc/2)`) as `bf16::pack_b` does.
    fn pack_pairs(
        &self,
        kern: &Kernels,
        blk: Block,
        dst: &mut [u32],
        dec: &mut DecodeBufs,
    ) -> Result<()>;

    /// Column boundaries on multiples of this pack without waste (a quantized weight's block
    /// size when columns run along its rows); tasks are cut on them.
    fn col_align(&self) -> usize {
        1
    }
}

impl PackB for Dense<'_> {
    fn pack(&self, kern: &Kernels, blk: Block, dst: &mut [f32], _: &mut DecodeBufs) -> Result<()> {
        super::pack::pack_b(kern, *self, blk, dst);
        Ok(())
    }

    fn pack_pairs(
        &self,
        kern: &Kernels,
        blk: Block,
        dst: &mut [u32],
        dec: &mut DecodeBufs,
    ) -> Result<()> {
        bf16::pack_b(kern, *self, blk, dst, &mut dec.pairs);
        Ok(())
    }
}

/// One GEMM call. Sizes are validated by the caller (`a` covers `m x k`, `c` holds `m·n`).
pub(crate) struct Gemm<'a> {
    pub m: usize,
    pub n: usize,
    pub k: usize,
    pub a: Dense<'a>,
    pub b: &'a dyn PackB,
    pub beta: f32,
    pub path: Path,
}

/// A raw pointer to an output shared by tasks that write disjoint parts of it.
#[derive(Clone, Copy)]
pub(crate) struct SharedC(*mut f32);

impl SharedC {
    pub fn new(out: &mut [f32]) -> SharedC {
        SharedC(out.as_mut_ptr())
    }

    /// The pointer (a method, so closures capture the whole `Sync` wrapper).
    pub fn ptr(self) -> *mut f32 {
        self.0
    }
}
// SAFETY: every user splits the output so tasks write disjoint elements (tiles of C from
// `split`, rows or column ranges in `linear.rs`), and the borrow of the output outlives every
// task (`Pool::run` returns only when all have finished).
unsafe impl Send for SharedC {}
// SAFETY: as above.
unsafe impl Sync for SharedC {}

/// A rectangle of C one task computes: rows `i0..i1`, columns `j0..j1`.
#[derive(Clone, Copy, Debug)]
struct Task {
    i0: usize,
    i1: usize,
    j0: usize,
    j1: usize,
}

/// `parts` contiguous ranges of `0..len`, cut on multiples of `unit`, sizes differing by at most
/// one unit.
pub(crate) fn ranges(
    len: usize,
    unit: usize,
    parts: usize,
) -> impl Iterator<Item = (usize, usize)> {
    let (units, parts) = (len.div_ceil(unit), parts.max(1));
    let (base, extra) = (units / parts, units % parts);
    (0..parts).map(move |t| {
        let u0 = t * base + t.min(extra);
        let u1 = u0 + base + usize::from(t < extra);
        ((u0 * unit).min(len), (u1 * unit).min(len))
    })
}

/// Column tasks per thread: more tasks than threads let the pool balance the load when a core is
/// slower or busy (big.LITTLE phones, shared machines); results do not depend on the split.
const TASKS_PER_THREAD: usize = 4;

/// Splits C into tasks for `threads`: columns first (B is the weight side: splitting rows would
/// pack, or dequantize, the same B block twice), rows only when there are fewer column panels
/// than threads. Every boundary falls on the `MR x NR` tile grid.
/// Column boundaries fall on multiples of `col_unit` (a multiple of `NR`).
fn split(m: usize, n: usize, mr: usize, col_unit: usize, threads: usize) -> Vec<Task> {
    let per_thread = if threads > 1 { TASKS_PER_THREAD } else { 1 };
    let tn = (threads * per_thread).min(n.div_ceil(col_unit)).max(1);
    let tm = (threads / tn).min(m.div_ceil(mr)).max(1);
    let mut tasks = Vec::with_capacity(tm * tn);
    for (i0, i1) in ranges(m, mr, tm) {
        for (j0, j1) in ranges(n, col_unit, tn) {
            if i0 < i1 && j0 < j1 {
                tasks.push(Task { i0, i1, j0, j1 });
            }
        }
    }
    tasks
}

fn lcm(a: usize, b: usize) -> usize {
    let (mut x, mut y) = (a, b);
    while y != 0 {
        (x, y) = (y, x % y);
    }
    a / x * b
}

/// Runs the GEMM on `pool` with `kern`.
pub(crate) fn gemm(pool: &Pool, kern: &Kernels, g: &Gemm, c: &mut [f32]) -> Result<()> {
    let (m, n, k) = (g.m, g.n, g.k);
    if m == 0 || n == 0 {
        return Ok(());
    }
    let c = &mut c[..m * n];
    if k == 0 {
        c.iter_mut().for_each(|x| merge(x, 0.0, g.beta));
        return Ok(());
    }
    let m_pad = m.div_ceil(kern.mr) * kern.mr;
    let path = g.path;
    with_local(&A_PACK, |apack| {
        let ap = apack.get(m_pad * path.depth(k));
        pack_a_all(pool, kern, g, m_pad, ap)?;
        let ap: &[f32] = ap;
        let col_unit = lcm(kern.nr, g.b.col_align().max(1));
        let tasks = split(m, n, kern.mr, col_unit, pool.threads());
        let cp = SharedC::new(c);
        pool.run(tasks.len(), |t| {
            with_scratch(|s| run_task(kern, g, ap, m_pad, cp, tasks[t], s))
        })
    })
}

/// Below this many elements of A, packing it on the pool costs more than it saves.
const PARALLEL_PACK_A: usize = 1 << 15;

/// Packs all of A into `ap` (`KC` slices one after another, each `m_pad` rows of panels). Large
/// operands are packed on the pool: each task takes a range of panels of one slice, so tasks
/// write disjoint parts of `ap` (the layout, and so the result, does not depend on the split).
fn pack_a_all(pool: &Pool, kern: &Kernels, g: &Gemm, m_pad: usize, ap: &mut [f32]) -> Result<()> {
    let (m, k, path, mr) = (g.m, g.k, g.path, kern.mr);
    let n_panels = m_pad / mr;
    let groups = if pool.threads() > 1 && m * k >= PARALLEL_PACK_A {
        (2 * pool.threads())
            .div_ceil(k.div_ceil(KC))
            .clamp(1, n_panels)
    } else {
        1
    };
    let per = n_panels.div_ceil(groups);
    // (p0, kc, first row, panels' part of `ap`) for every slice and group of panels.
    let mut jobs = Vec::new();
    let mut rest = ap;
    for p0 in (0..k).step_by(KC) {
        let kc = KC.min(k - p0);
        let (slice, tail) = rest.split_at_mut(m_pad * path.depth(kc));
        rest = tail;
        for (q, part) in slice.chunks_mut(per * mr * path.depth(kc)).enumerate() {
            jobs.push(std::sync::Mutex::new((p0, kc, q * per * mr, part)));
        }
    }
    let job = |t: usize| -> Result<()> {
        let mut guard = jobs[t].lock().map_err(|_| {
            crate::error::Error::InvalidArgument("GEMM: a packing task panicked".into())
        })?;
        let (p0, kc, i0, ref mut dst) = *guard;
        // Rows i0.. of A: element (r, c) of the view is A(i0 + r, c).
        let a = Dense {
            data: &g.a.data[i0 * g.a.rs..],
            ..g.a
        };
        let rows = m - i0;
        match path {
            Path::F32 => pack_a(kern, a, rows, p0, kc, dst),
            Path::Rounded => {
                pack_a(kern, a, rows, p0, kc, dst);
                bf16::round_in_place(kern.level(), dst);
            }
            Path::Pairs(_) => with_scratch(|s| {
                bf16::pack_a(
                    kern,
                    a,
                    rows,
                    p0,
                    kc,
                    bf16::as_bits_mut(dst),
                    &mut s.dec.pairs,
                )
            }),
        }
        Ok(())
    };
    pool.run(jobs.len(), job)
}

/// Runs the microkernel of `path` on one tile of `d` packed steps (pair panels are the same
/// buffers read as `u32`).
///
/// # Safety
/// As `Kernels::micro` (f32 paths) or `Bf16Kernel::micro` (pairs) with `d` steps.
#[allow(clippy::too_many_arguments)] // the microkernel's arguments plus which one to run
#[inline]
unsafe fn micro(
    path: Path,
    kern: &Kernels,
    d: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    beta: f32,
) {
    // SAFETY: forwarded from the caller.
    unsafe {
        match path {
            Path::Pairs(bk) => bk.micro(d, a.cast(), b.cast(), c, ldc, beta),
            Path::F32 | Path::Rounded => kern.micro(d, a, b, c, ldc, beta),
        }
    }
}

/// Runs `path`'s kernel for rows `0..rows` of a tile straight into C when the level has one
/// (returns false otherwise).
///
/// # Safety
/// As `micro`, with `c` valid for rows `0..rows`.
#[allow(clippy::too_many_arguments)] // the microkernel's arguments plus the row count
#[inline]
unsafe fn micro_rows(
    path: Path,
    kern: &Kernels,
    rows: usize,
    d: usize,
    a: *const f32,
    b: *const f32,
    c: *mut f32,
    ldc: usize,
    beta: f32,
) -> bool {
    // SAFETY: forwarded from the caller.
    unsafe {
        match path {
            Path::Pairs(bk) => {
                bk.micro_rows(rows, d, a.cast(), b.cast(), c, ldc, beta);
                true
            }
            Path::F32 | Path::Rounded => kern.micro_rows(rows, d, a, b, c, ldc, beta),
        }
    }
}

fn run_task(
    kern: &Kernels,
    g: &Gemm,
    ap: &[f32],
    m_pad: usize,
    c: SharedC,
    t: Task,
    s: &mut Scratch,
) -> Result<()> {
    let (mr, nr, ldc, path) = (kern.mr, kern.nr, g.n, g.path);
    let bp = s.bpack.get(KC * NC);
    let mut tile = [0f32; MAX_TILE];
    let mut jc = t.j0;
    while jc < t.j1 {
        // Chunks end on multiples of NC so quantized rows decode on block boundaries.
        let nc = ((jc / NC + 1) * NC).min(t.j1) - jc;
        for p0 in (0..g.k).step_by(KC) {
            let kc = KC.min(g.k - p0);
            let blk = Block { p0, kc, j0: jc, nc };
            let d = path.depth(kc);
            match path {
                Path::F32 => g.b.pack(kern, blk, bp, &mut s.dec)?,
                Path::Rounded => {
                    g.b.pack(kern, blk, bp, &mut s.dec)?;
                    bf16::round_in_place(kern.level(), &mut bp[..nc.div_ceil(nr) * nr * kc]);
                }
                Path::Pairs(_) => {
                    g.b.pack_pairs(kern, blk, bf16::as_bits_mut(bp), &mut s.dec)?
                }
            }
            let beta = if p0 == 0 { g.beta } else { 1.0 };
            let a_slice = &ap[path.depth(p0) * m_pad..];
            for ir in (t.i0..t.i1).step_by(mr) {
                let a_panel = a_slice[ir * d..].as_ptr();
                let rows = mr.min(t.i1 - ir);
                for jr in (0..nc).step_by(nr) {
                    let b_panel = bp[jr * d..].as_ptr();
                    let cols = nr.min(nc - jr);
                    let off = ir * ldc + jc + jr;
                    if rows == mr && cols == nr {
                        // SAFETY: the A panel holds `d·mr` packed values (`ir` is a multiple of
                        // `mr` below `m_pad`), the B panel `d·nr` (`jr/nr < ceil(nc/nr)`), and
                        // the full tile at `off` lies inside C (`ir + mr <= m`,
                        // `jc + jr + nr <= n`) in this task's rectangle, written by no other task.
                        unsafe {
                            micro(path, kern, d, a_panel, b_panel, c.ptr().add(off), ldc, beta)
                        };
                    } else {
                        // A full-width partial row panel goes straight into C where the level
                        // has a row kernel.
                        // SAFETY: panels as above; rows `ir..ir + rows` of the full-width tile at
                        // `off` lie inside C and this task's rectangle.
                        let direct = cols == nr
                            && unsafe {
                                micro_rows(
                                    path,
                                    kern,
                                    rows,
                                    d,
                                    a_panel,
                                    b_panel,
                                    c.ptr().add(off),
                                    ldc,
                                    beta,
                                )
                            };
                        if direct {
                            continue;
                        }
                        // SAFETY: panels as above; `tile` holds `mr·nr <= MAX_TILE` floats.
                        unsafe {
                            micro(path, kern, d, a_panel, b_panel, tile.as_mut_ptr(), nr, 0.0)
                        };
                        for i in 0..rows {
                            for j in 0..cols {
                                // SAFETY: `(ir + i, jc + jr + j)` is inside C and this task's
                                // rectangle (`i < rows`, `j < cols` clip to the edges).
                                let cij = unsafe { &mut *c.ptr().add(off + i * ldc + j) };
                                merge(cij, tile[i * nr + j], beta);
                            }
                        }
                    }
                }
            }
        }
        jc += nc;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lcm_of_tile_and_block() {
        assert_eq!(lcm(32, 256), 256);
        assert_eq!(lcm(16, 1), 16);
        assert_eq!(lcm(12, 32), 96);
    }

    #[test]
    fn ranges_cover_evenly_on_unit_boundaries() {
        let r: Vec<_> = ranges(576, 32, 2).collect();
        assert_eq!(r, vec![(0, 288), (288, 576)]);
        let r: Vec<_> = ranges(70, 16, 3).collect();
        assert_eq!(r, vec![(0, 32), (32, 64), (64, 70)]);
        let r: Vec<_> = ranges(5, 16, 3).collect();
        assert_eq!(r, vec![(0, 5), (5, 5), (5, 5)]);
    }

    #[test]
    fn split_prefers_columns_and_covers_c() {
        for &(m, n, mr, nr, th) in &[
            (256, 576, 14, 32, 2),
            (256, 8, 6, 16, 4),
            (1, 1, 4, 8, 3),
            (70, 69, 14, 32, 8),
            (256, 576, 14, 256, 2),
            (30, 1000, 6, 48, 3),
        ] {
            let tasks = split(m, n, mr, nr, th);
            assert!(tasks.len() <= th * TASKS_PER_THREAD);
            let mut seen = vec![0u8; m * n];
            for t in &tasks {
                assert_eq!(t.i0 % mr, 0);
                assert_eq!(t.j0 % nr, 0);
                for i in t.i0..t.i1 {
                    for j in t.j0..t.j1 {
                        seen[i * n + j] += 1;
                    }
                }
            }
            assert!(
                seen.iter().all(|&s| s == 1),
                "{m}x{n} threads {th}: {tasks:?}"
            );
        }
    }
}
