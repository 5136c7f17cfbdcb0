//! Randomness the adapters own: a seeded generator for initialisation (xoshiro256** seeded through
//! SplitMix64) and a counter-based dropout mask. The mask of an element is a pure function of
//! (seed, step, site, element index), so a forward pass recomputed under activation checkpointing
//! draws the same mask, and backward regenerates it instead of storing it.

pub use crate::rng::{mix64, Rng};

/// Inverted dropout (nn.Dropout semantics): each element is kept with probability `1 - p` and
/// scaled by `1 / (1 - p)`, or zeroed. `key` identifies the (seed, step, site) stream.
#[derive(Clone, Copy, Debug)]
pub struct DropoutMask {
    key: u64,
    /// Elements whose 24-bit draw is below this are dropped.
    threshold: u32,
    scale: f32,
}

impl DropoutMask {
    /// `p` must be in [0, 1).
    pub fn new(seed: u64, step: u64, site_id: u64, p: f32) -> DropoutMask {
        let key = mix64(mix64(seed ^ mix64(step)) ^ site_id.wrapping_mul(0xD6E8_FEB8_6659_FD93));
        DropoutMask {
            key,
            threshold: (p as f64 * (1u64 << 24) as f64).round() as u32,
            scale: 1.0 / (1.0 - p),
        }
    }

    /// The multiplier of element `i`: 0 or `1/(1-p)`.
    #[inline]
    pub fn factor(&self, i: usize) -> f32 {
        let draw = (mix64(self.key ^ (i as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15)) >> 40) as u32;
        if draw < self.threshold {
            0.0
        } else {
            self.scale
        }
    }

    /// `out[i] = x[i] · factor(i)`.
    pub fn apply(&self, x: &[f32], out: &mut [f32]) {
        for (i, (o, &v)) in out.iter_mut().zip(x).enumerate() {
            *o = v * self.factor(i);
        }
    }

    /// `x[i] *= factor(i)`.
    pub fn apply_in_place(&self, x: &mut [f32]) {
        for (i, v) in x.iter_mut().enumerate() {
            *v *= self.factor(i);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn distributions_have_the_right_moments() {
        let mut r = Rng::new(7);
        let n = 200_000;
        let (mut s, mut s2) = (0.0f64, 0.0f64);
        for _ in 0..n {
            let v = r.normal() as f64;
            s += v;
            s2 += v * v;
        }
        let mean = s / n as f64;
        let var = s2 / n as f64 - mean * mean;
        assert!(
            mean.abs() < 0.01 && (var - 1.0).abs() < 0.02,
            "{mean} {var}"
        );
        let u: Vec<f32> = (0..n).map(|_| r.uniform(-0.5, 0.5)).collect();
        assert!(u.iter().all(|v| (-0.5..0.5).contains(v)));
        let m = u.iter().map(|&v| v as f64).sum::<f64>() / n as f64;
        assert!(m.abs() < 0.005, "{m}");
    }

    #[test]
    fn dropout_rate_and_scale() {
        let d = DropoutMask::new(1, 2, 3, 0.25);
        let n = 100_000;
        let kept: Vec<f32> = (0..n).map(|i| d.factor(i)).collect();
        let frac_dropped = kept.iter().filter(|&&f| f == 0.0).count() as f64 / n as f64;
        assert!((frac_dropped - 0.25).abs() < 0.01, "{frac_dropped}");
        assert!(kept.iter().all(|&f| f == 0.0 || f == 1.0 / 0.75));
        // Same key, same mask; another step, another mask.
        let again = DropoutMask::new(1, 2, 3, 0.25);
        assert!((0..1000).all(|i| d.factor(i) == again.factor(i)));
        let other = DropoutMask::new(1, 3, 3, 0.25);
        assert!((0..1000).any(|i| d.factor(i) != other.factor(i)));
    }
}
