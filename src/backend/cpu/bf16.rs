//! bf16 compute (`Compute::Bf16`): GEMM inputs rounded to bf16 while they are packed, products
//! accumulated in f32. Two ways to run it:
//! - **pairs**, where the CPU has a bf16 dot-product kernel (`Bf16Kernel`): panels hold `u32`
//!   pairs of bf16 values of consecutive `k` (the even one in the low half), half the bytes of f32
//!   panels. A panel of A is `dst[q·ceil(kc/2)·MR + p2·MR + i]`, of B `dst[q·ceil(kc/2)·NR +
//!   p2·NR + j]` (as in `pack.rs`, one step per pair); an odd `kc` pads the last pair with zero.
//! - **rounded** elsewhere: f32 panels whose values are rounded to bf16 after packing, and the f32
//!   kernels (the same inputs, so the same products; no speed-up).
//!
//! Rounding is round-to-nearest-even from f32, NaN to the canonical quiet NaN, as PyTorch's
//! `tensor.to(torch.bfloat16)`.

use super::gemm::Block;
use super::kernels::Kernels;
use super::pack::Dense;
use crate::cpu::SimdLevel;

/// The bf16 bits (in the low 16 bits) nearest to `x`, ties to even. Branch-free, so loops over
/// it vectorise.
#[inline(always)]
pub(crate) fn bf16_bits(x: f32) -> u32 {
    let b = x.to_bits();
    // Finite values round up to infinity correctly; only NaN patterns can wrap, and they are
    // replaced.
    let r = b.wrapping_add(0x7fff + ((b >> 16) & 1)) >> 16;
    if b & 0x7fff_ffff > 0x7f80_0000 {
        0x7fc0
    } else {
        r
    }
}

use crate::cpu::per_level;

/// `x` rounded to the nearest bf16, as an f32.
#[inline(always)]
pub fn round_bf16(x: f32) -> f32 {
    f32::from_bits(bf16_bits(x) << 16)
}

per_level! {
    /// Rounds every value of `v` to bf16 in place.
    fn round_in_place(v: &mut [f32]) {
        for x in v {
            *x = round_bf16(*x);
        }
    }
}

per_level! {
    /// `dst[i] = pair(src[2i], src[2i+1])` (a missing odd element is zero); `dst.len()` must be
    /// `ceil(src.len()/2)`.
    fn pairs_along(src: &[f32], dst: &mut [u32]) {
        debug_assert_eq!(dst.len(), src.len().div_ceil(2));
        let mut it = src.chunks_exact(2);
        for (d, s) in dst.iter_mut().zip(it.by_ref()) {
            *d = bf16_bits(s[0]) | (bf16_bits(s[1]) << 16);
        }
        if let [last] = it.remainder() {
            dst[src.len() / 2] = bf16_bits(*last);
        }
    }
}

per_level! {
    /// `dst[j] = pair(lo[j], hi[j])` (`hi` missing: zeros); `dst.len() == lo.len()`.
    fn pairs_across(lo: &[f32], hi: Option<&[f32]>, dst: &mut [u32]) {
        match hi {
            Some(hi) => {
                for ((d, &l), &h) in dst.iter_mut().zip(lo).zip(hi) {
                    *d = bf16_bits(l) | (bf16_bits(h) << 16);
                }
            }
            None => {
                for (d, &l) in dst.iter_mut().zip(lo) {
                    *d = bf16_bits(l);
                }
            }
        }
    }
}

/// Views `u32` bit patterns as `f32` (for the transposes, which only move values).
pub(crate) fn as_f32(v: &[u32]) -> &[f32] {
    // SAFETY: f32 and u32 have the same size and alignment, and every bit pattern is valid for
    // both; the new slice borrows `v`.
    unsafe { std::slice::from_raw_parts(v.as_ptr().cast(), v.len()) }
}

/// Mutable `as_f32`.
pub(crate) fn as_f32_mut(v: &mut [u32]) -> &mut [f32] {
    // SAFETY: as `as_f32`; the new slice takes over the unique borrow of `v`.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast(), v.len()) }
}

/// Views an f32 buffer as `u32` storage for pairs.
pub(crate) fn as_bits_mut(v: &mut [f32]) -> &mut [u32] {
    // SAFETY: as `as_f32`.
    unsafe { std::slice::from_raw_parts_mut(v.as_mut_ptr().cast(), v.len()) }
}

/// Packs `rows` runs of `kc` values (run `r` at `src[r·ld..]`, contiguous along `k`) into one pair
/// panel of width `width` (`dst[p2·width + r]`, `dst.len() >= ceil(kc/2)·width`); lanes
/// `rows..width` are zero. `tmp` is scratch.
#[allow(clippy::too_many_arguments)] // the transpose's own arguments plus scratch
pub(crate) fn pack_runs_along_k(
    kern: &Kernels,
    src: &[f32],
    ld: usize,
    rows: usize,
    kc: usize,
    dst: &mut [u32],
    width: usize,
    tmp: &mut Vec<u32>,
) {
    let kc2 = kc.div_ceil(2);
    let dst = &mut dst[..kc2 * width];
    if rows < width {
        dst.fill(0);
    }
    #[cfg(target_arch = "x86_64")]
    if kern.level() == SimdLevel::Avx512
        // SAFETY: the AVX-512 level implies AVX-512F/BW (`crate::cpu`); the slices are as long
        // as this function's contract says, which is `pack_runs`'s.
        && unsafe { super::bf16_x86::pack_runs(src, ld, rows, kc, dst, width) }
    {
        return;
    }
    tmp.resize(rows * kc2, 0);
    for (r, out) in tmp.chunks_exact_mut(kc2).enumerate() {
        pairs_along(kern.level(), &src[r * ld..r * ld + kc], out);
    }
    kern.transpose_bits(tmp, kc2, rows, kc2, dst, width);
}

per_level! {
    /// One step of pairs straight into consecutive panels: `pair(lo[j], hi[j])` (`hi` missing:
    /// zeros) goes to step `p2` of panel `j / width`, lane `j % width` (panels of `width` lanes
    /// and `kc2` steps, `lo.len() <= panels·width`).
    fn pairs_into_step(
        lo: &[f32],
        hi: Option<&[f32]>,
        p2: usize,
        kc2: usize,
        width: usize,
        dst: &mut [u32]
    ) {
        for (q, l) in lo.chunks(width).enumerate() {
            let at = q * kc2 * width + p2 * width;
            let d = &mut dst[at..at + l.len()];
            match hi {
                Some(hi) => {
                    let h = &hi[q * width..q * width + l.len()];
                    for ((d, &l), &h) in d.iter_mut().zip(l).zip(h) {
                        *d = bf16_bits(l) | (bf16_bits(h) << 16);
                    }
                }
                None => {
                    for (d, &l) in d.iter_mut().zip(l) {
                        *d = bf16_bits(l);
                    }
                }
            }
        }
    }
}

/// `pack::pack_a` into pair panels: rows `0..m`, columns `p0..p0+kc` of `a`;
/// `dst.len() == ceil(m/MR)·MR·ceil(kc/2)`.
pub(crate) fn pack_a(
    kern: &Kernels,
    a: Dense,
    m: usize,
    p0: usize,
    kc: usize,
    dst: &mut [u32],
    tmp: &mut Vec<u32>,
) {
    let (mr, kc2) = (kern.mr, kc.div_ceil(2));
    for (q, panel) in dst.chunks_exact_mut(kc2 * mr).enumerate() {
        let i0 = q * mr;
        let rows = mr.min(m - i0);
        if a.cs == 1 {
            pack_runs_along_k(
                kern,
                &a.data[i0 * a.rs + p0..],
                a.rs,
                rows,
                kc,
                panel,
                mr,
                tmp,
            );
            continue;
        }
        if rows < mr {
            panel.fill(0);
        }
        for (p2, out) in panel.chunks_exact_mut(mr).enumerate() {
            let p = p0 + 2 * p2;
            let at = |p: usize, i: usize| a.data[(i0 + i) * a.rs + p * a.cs];
            if a.rs == 1 {
                // A stored transposed: each step reads `rows` neighbours of two source rows.
                let lo = &a.data[p * a.cs + i0..p * a.cs + i0 + rows];
                let hi = (2 * p2 + 1 < kc).then(|| &a.data[(p + 1) * a.cs + i0..][..rows]);
                pairs_across(kern.level(), lo, hi, &mut out[..rows]);
            } else {
                for (i, o) in out[..rows].iter_mut().enumerate() {
                    let hi = if 2 * p2 + 1 < kc { at(p + 1, i) } else { 0.0 };
                    *o = bf16_bits(at(p, i)) | (bf16_bits(hi) << 16);
                }
            }
        }
    }
}

/// `pack::pack_b` into pair panels: block `blk` of `b`; `dst.len() >= ceil(nc/NR)·NR·ceil(kc/2)`.
pub(crate) fn pack_b(kern: &Kernels, b: Dense, blk: Block, dst: &mut [u32], tmp: &mut Vec<u32>) {
    let (nr, Block { p0, kc, j0, nc }) = (kern.nr, blk);
    let kc2 = kc.div_ceil(2);
    let panels = nc.div_ceil(nr);
    if b.rs == 1 {
        // B stored transposed (a weight's rows): each column is a run along k.
        for (q, panel) in dst.chunks_exact_mut(kc2 * nr).take(panels).enumerate() {
            let jq = j0 + q * nr;
            let cols = nr.min(nc - q * nr);
            pack_runs_along_k(
                kern,
                &b.data[jq * b.cs + p0..],
                b.cs,
                cols,
                kc,
                panel,
                nr,
                tmp,
            );
        }
        return;
    }
    if !nc.is_multiple_of(nr) {
        dst[(panels - 1) * kc2 * nr..panels * kc2 * nr].fill(0);
    }
    tmp.resize(nc, 0);
    for p2 in 0..kc2 {
        let p = p0 + 2 * p2;
        if b.cs == 1 {
            let lo = &b.data[p * b.rs + j0..p * b.rs + j0 + nc];
            let hi = (2 * p2 + 1 < kc).then(|| &b.data[(p + 1) * b.rs + j0..][..nc]);
            pairs_into_step(kern.level(), lo, hi, p2, kc2, nr, dst);
            continue;
        }
        for (j, t) in tmp.iter_mut().enumerate() {
            let at = |p: usize| b.data[(j0 + j) * b.cs + p * b.rs];
            let hi = if 2 * p2 + 1 < kc { at(p + 1) } else { 0.0 };
            *t = bf16_bits(at(p)) | (bf16_bits(hi) << 16);
        }
        for (q, t) in tmp.chunks(nr).enumerate() {
            let at = q * kc2 * nr + p2 * nr;
            dst[at..at + t.len()].copy_from_slice(t);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rounding_matches_half_round_to_nearest_even() {
        // Every 16th bit pattern covers every bf16 value and the bits that decide rounding.
        for b in (0..=u32::MAX).step_by(4093) {
            let x = f32::from_bits(b);
            let want = half::bf16::from_f32(x);
            let got = bf16_bits(x) as u16;
            if x.is_nan() {
                assert_eq!(got, 0x7fc0, "{b:#x}");
            } else {
                assert_eq!(got, want.to_bits(), "{b:#x} ({x:e})");
            }
        }
        // Ties: halfway between two bf16 values goes to the even one.
        assert_eq!(bf16_bits(f32::from_bits(0x3f80_8000)), 0x3f80);
        assert_eq!(bf16_bits(f32::from_bits(0x3f81_8000)), 0x3f82);
        assert_eq!(bf16_bits(f32::MAX), 0x7f80);
        assert_eq!(bf16_bits(f32::MIN), 0xff80);
    }

    #[test]
    fn vectorised_conversions_match_the_scalar_one_at_every_level() {
        // Odd lengths, NaN/inf/ties/denormals mixed in, one element in (unaligned).
        let mut v: Vec<f32> = (0..1000u32)
            .map(|i| f32::from_bits(i.wrapping_mul(2654435761) ^ (i << 15)))
            .collect();
        v.extend([
            f32::NAN,
            f32::INFINITY,
            -0.0,
            f32::from_bits(0x3f80_8000),
            1e-40,
        ]);
        for &level in crate::cpu::available_levels() {
            for n in [0, 1, 2, 15, 16, 17, 63, 1004] {
                let src = &v[1..1 + n];
                let mut got = src.to_vec();
                round_in_place(level, &mut got);
                let want: Vec<u32> = src.iter().map(|&x| bf16_bits(x) << 16).collect();
                let got: Vec<u32> = got.iter().map(|x| x.to_bits()).collect();
                assert_eq!(got, want, "round {level:?} n {n}");
                let mut pairs = vec![0u32; n.div_ceil(2)];
                pairs_along(level, src, &mut pairs);
                for (i, &p) in pairs.iter().enumerate() {
                    assert_eq!(
                        p & 0xffff,
                        bf16_bits(src[2 * i]),
                        "{level:?} n {n} pair {i}"
                    );
                    let hi = src.get(2 * i + 1).map_or(0, |&x| bf16_bits(x));
                    assert_eq!(p >> 16, hi, "{level:?} n {n} pair {i}");
                }
            }
        }
    }

    #[test]
    fn pairs_put_the_even_element_low_and_pad_odd_lengths() {
        for &level in crate::cpu::available_levels() {
            let src = [1.0f32, 2.0, 3.0];
            let mut dst = [0u32; 2];
            pairs_along(level, &src, &mut dst);
            assert_eq!(dst, [0x3f80 | 0x4000 << 16, 0x4040]);
            let mut dst = [0u32; 3];
            pairs_across(level, &src, Some(&[-1.0, 0.5, 0.0]), &mut dst);
            assert_eq!(dst[0], 0x3f80 | 0xbf80 << 16);
            pairs_across(level, &src, None, &mut dst);
            assert_eq!(dst[2], 0x4040);
        }
    }
}
