//! `e^x` in f32 without a library call or a branch, so loops over slices that use it
//! auto-vectorize (the libm `expf`/`exp` calls were the largest element-wise cost of the
//! softmaxes, the cross-entropy and SwiGLU). Relative error below 3e-7 (about 2 ulp) where the
//! result is a normal f32; inputs are clamped to `[-87, 88]`, so the result never overflows and
//! bottoms out at about `1.6e-38` instead of reaching 0. NaN stays NaN.

use crate::cpu::per_level;

const LOG2E: f32 = std::f32::consts::LOG2_E;
/// ln 2 split so that `n·LN2_HI` is exact for `|n| < 2^12` (Cody–Waite reduction).
const LN2_HI: f32 = 0.693_359_4;
const LN2_LO: f32 = -2.121_944_4e-4;
/// 1.5·2^23: adding it rounds to an integer held in the low mantissa bits.
const ROUND: f32 = 12_582_912.0;

/// `e^x`: `x = n·ln2 + r` with `|r| <= ln2/2`, `e^r` by its degree-7 Taylor polynomial, times `2^n`
/// built from the exponent bits.
#[inline(always)]
pub(crate) fn exp(x: f32) -> f32 {
    let x = x.clamp(-87.0, 88.0);
    let t = x * LOG2E + ROUND;
    let n = t - ROUND;
    let r = (x - n * LN2_HI) - n * LN2_LO;
    let p = 1.0 / 5040.0;
    let p = p * r + 1.0 / 720.0;
    let p = p * r + 1.0 / 120.0;
    let p = p * r + 1.0 / 24.0;
    let p = p * r + 1.0 / 6.0;
    let p = p * r + 0.5;
    let p = p * r + 1.0;
    let p = p * r + 1.0;
    // t's bits are those of ROUND plus n (two's complement), so 2^n's exponent field is n + 127.
    let two_n = f32::from_bits(
        t.to_bits()
            .wrapping_sub(ROUND.to_bits())
            .wrapping_add(127)
            .wrapping_shl(23),
    );
    p * two_n
}

per_level! {
    /// `x[i] = e^(x[i]·scale − shift)`.
    fn exp_affine(x: &mut [f32], scale: f32, shift: f32) {
        for v in x {
            *v = exp(*v * scale - shift);
        }
    }
}

per_level! {
    /// `x[i] = e^(x[i] − shift)`, and their sum in f64 (eight interleaved lanes, as `sum_f64`).
    fn exp_sub_sum_f64(x: &mut [f32], shift: f32) -> f64 {
        for v in x.iter_mut() {
            *v = exp(*v - shift);
        }
        sum_f64(x)
    }
}

/// Sum in eight interleaved lanes (vectorizes; the order is fixed by the length alone).
pub(crate) fn sum(x: &[f32]) -> f32 {
    let mut acc = [0f32; 8];
    let c = x.chunks_exact(8);
    let rest = c.remainder();
    for v in c {
        for l in 0..8 {
            acc[l] += v[l];
        }
    }
    let mut s = (acc[0] + acc[4]) + (acc[1] + acc[5]) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for &v in rest {
        s += v;
    }
    s
}

/// Sum in f64, eight interleaved lanes.
#[inline(always)]
pub(crate) fn sum_f64(x: &[f32]) -> f64 {
    let mut acc = [0f64; 8];
    let c = x.chunks_exact(8);
    let rest = c.remainder();
    for v in c {
        for l in 0..8 {
            acc[l] += v[l] as f64;
        }
    }
    let mut s = (acc[0] + acc[4]) + (acc[1] + acc[5]) + ((acc[2] + acc[6]) + (acc[3] + acc[7]));
    for &v in rest {
        s += v as f64;
    }
    s
}

/// Largest value (`-inf` for an empty slice), in eight lanes.
pub(crate) fn max(x: &[f32]) -> f32 {
    let mut acc = [f32::NEG_INFINITY; 8];
    let c = x.chunks_exact(8);
    let rest = c.remainder();
    for v in c {
        for l in 0..8 {
            acc[l] = acc[l].max(v[l]);
        }
    }
    acc.iter()
        .chain(rest)
        .fold(f32::NEG_INFINITY, |m, &v| m.max(v))
}

#[cfg(test)]
mod tests {
    use super::{exp, max, sum, sum_f64};

    #[test]
    fn reductions_match_plain_loops() {
        for n in [0usize, 1, 7, 8, 9, 31, 100] {
            let x: Vec<f32> = (0..n)
                .map(|i| ((i * 37 % 11) as f32 - 5.0) * 0.25)
                .collect();
            let plain: f64 = x.iter().map(|&v| v as f64).sum();
            assert!((sum(&x) as f64 - plain).abs() < 1e-5, "sum of {n}");
            assert!((sum_f64(&x) - plain).abs() < 1e-12, "sum_f64 of {n}");
            let m = x.iter().fold(f32::NEG_INFINITY, |a, &b| a.max(b));
            assert_eq!(max(&x), m, "max of {n}");
        }
    }

    #[test]
    fn matches_f64_exp_to_a_few_ulp() {
        let mut worst = 0f64;
        let mut x = -87.0f32;
        while x <= 88.0 {
            let want = (x as f64).exp();
            let got = exp(x) as f64;
            worst = worst.max(((got - want) / want).abs());
            x += 0.001_37;
        }
        assert!(worst < 3e-7, "worst relative error {worst:e}");
        assert_eq!(exp(0.0), 1.0);
        assert!(exp(f32::NAN).is_nan());
        assert!(exp(-1e4) < 2e-38 && exp(-1e4) >= 0.0);
        assert!(exp(f32::NEG_INFINITY) < 2e-38);
        assert!(exp(1e4).is_finite());
    }
}
