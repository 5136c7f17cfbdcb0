//! AVX-512 pair-panel packing of runs along `k`: rounding to bf16, pairing and transposing in
//! registers, one pass (the portable path in `bf16.rs` makes three: pairs per run, then a
//! transpose). 16 runs at a time: each run's 32 values become one vector of 16 pairs, and a 16x16
//! transpose of 32-bit lanes turns the 16 vectors into 16 panel steps.
//!
//! Rounding is `bf16::bf16_bits` (ties to even, NaN to 0x7fc0) lane by lane, so the panels are
//! bit-identical to the portable path's.

#![deny(unsafe_op_in_unsafe_fn)]

use super::kernels::transpose16;
use std::arch::x86_64::*;

/// `bf16_bits` of each lane (result in the low 16 bits).
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
fn round(x: __m512) -> __m512i {
    let b = _mm512_castps_si512(x);
    let lsb = _mm512_and_si512(_mm512_srli_epi32::<16>(b), _mm512_set1_epi32(1));
    let r = _mm512_srli_epi32::<16>(_mm512_add_epi32(
        b,
        _mm512_add_epi32(_mm512_set1_epi32(0x7fff), lsb),
    ));
    let abs = _mm512_and_si512(b, _mm512_set1_epi32(0x7fff_ffff));
    let nan = _mm512_cmpgt_epu32_mask(abs, _mm512_set1_epi32(0x7f80_0000));
    _mm512_mask_mov_epi32(r, nan, _mm512_set1_epi32(0x7fc0))
}

/// 16 pairs of 32 consecutive values: lane `i` = `bf16(v[2i]) | bf16(v[2i+1]) << 16`.
///
/// # Safety
/// `p` must be valid for 32 reads; the CPU must have AVX-512F/BW.
#[inline]
#[target_feature(enable = "avx512f,avx512bw")]
unsafe fn pairs32(p: *const f32) -> __m512i {
    // SAFETY: the caller vouches for 32 floats at `p`.
    let (lo, hi) = unsafe { (_mm512_loadu_ps(p), _mm512_loadu_ps(p.add(16))) };
    // Word 2k of lane data is the low half of lane k: take those of `lo` then of `hi`.
    let idx = _mm512_set_epi16(
        62, 60, 58, 56, 54, 52, 50, 48, 46, 44, 42, 40, 38, 36, 34, 32, 30, 28, 26, 24, 22, 20, 18,
        16, 14, 12, 10, 8, 6, 4, 2, 0,
    );
    _mm512_permutex2var_epi16(round(lo), idx, round(hi))
}

/// `dst[p2·width + r] = pair(src[r·ld + 2·p2], src[r·ld + 2·p2 + 1])` for `r < rows`,
/// `p2 < kc/2`, when `kc % 32 == 0` (returns false, doing nothing, otherwise). Lanes
/// `rows..width` are not written.
///
/// # Safety
/// `src.len() >= (rows−1)·ld + kc`, `dst.len() >= (kc/2)·width`, `rows <= width`; the CPU must
/// have AVX-512F/BW.
#[target_feature(enable = "avx512f,avx512bw")]
pub unsafe fn pack_runs(
    src: &[f32],
    ld: usize,
    rows: usize,
    kc: usize,
    dst: &mut [u32],
    width: usize,
) -> bool {
    if !kc.is_multiple_of(32) || rows > width || rows == 0 {
        return false;
    }
    let (s, d) = (src.as_ptr(), dst.as_mut_ptr());
    for g in (0..rows).step_by(16) {
        let n = 16.min(rows - g);
        let mask: __mmask16 = if n == 16 { !0 } else { (1 << n) - 1 };
        for c in (0..kc).step_by(32) {
            // SAFETY: runs `g..g+n` exist and `c + 32 <= kc`, so each load reads
            // `src[(g+r)·ld + c..+32]`, inside `src`; the masked stores write
            // `dst[(c/2 + i)·width + g..+n]` with `c/2 + i < kc/2` and `g + n <= rows <= width`.
            unsafe {
                let mut v: [__m512i; 16] = std::array::from_fn(|r| {
                    if r < n {
                        pairs32(s.add((g + r) * ld + c))
                    } else {
                        _mm512_setzero_si512()
                    }
                });
                transpose16(&mut v);
                for (i, x) in v.iter().enumerate() {
                    _mm512_mask_storeu_epi32(d.add((c / 2 + i) * width + g).cast(), mask, *x);
                }
            }
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::super::bf16::bf16_bits;
    use crate::cpu::{available_levels, SimdLevel};

    #[test]
    fn fused_pair_panels_equal_the_definition_bit_for_bit() {
        if !available_levels().contains(&SimdLevel::Avx512) {
            eprintln!("no AVX-512 on this CPU: nothing to test");
            return;
        }
        // NaN, infinities, ties and denormals mixed into pseudo-random bit patterns.
        let mut v: Vec<f32> = (0..40_000u32)
            .map(|i| f32::from_bits(i.wrapping_mul(2654435761) ^ (i << 13)))
            .collect();
        for (i, x) in [
            f32::NAN,
            f32::INFINITY,
            -0.0,
            f32::from_bits(0x3f80_8000),
            1e-40,
        ]
        .into_iter()
        .enumerate()
        {
            v[7 * i + 3] = x;
        }
        for (rows, kc, ld, width) in [
            (16, 32, 33, 16),
            (32, 256, 259, 32),
            (16, 64, 64, 32),
            (14, 64, 70, 14),
            (5, 32, 40, 14),
            (21, 96, 96, 32),
        ] {
            let src = &v[1..];
            let mut got = vec![7u32; kc / 2 * width];
            // SAFETY: `src` holds `(rows-1)·ld + kc` values, `got` `(kc/2)·width`; AVX-512 checked.
            assert!(unsafe { super::pack_runs(src, ld, rows, kc, &mut got, width) });
            for p2 in 0..kc / 2 {
                for r in 0..width {
                    let want = if r < rows {
                        let at = r * ld + 2 * p2;
                        bf16_bits(src[at]) | bf16_bits(src[at + 1]) << 16
                    } else {
                        7
                    };
                    assert_eq!(
                        got[p2 * width + r],
                        want,
                        "rows {rows} kc {kc} step {p2} lane {r}"
                    );
                }
            }
        }
        let mut dst = vec![0u32; 64];
        // SAFETY: as above (refused shapes touch nothing).
        assert!(!unsafe { super::pack_runs(&v, 64, 16, 30, &mut dst, 16) });
    }
}
