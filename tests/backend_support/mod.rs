//! Helpers shared by the backend tests: the one tolerance type, a seeded generator, and the
//! naive f64 matrix product every kernel is measured against.
#![allow(dead_code)]

pub mod weights;

/// Allowed difference between a result and its reference: `|got - want| <= abs + rel·|want|`.
#[derive(Clone, Copy, Debug)]
pub struct Tolerance {
    pub rel: f64,
    pub abs: f64,
}

impl Tolerance {
    /// For sums of `k` products of values in [-1, 1] computed in f32: the absolute part grows with
    /// the length of the sum.
    pub fn for_sum(k: usize) -> Tolerance {
        Tolerance {
            rel: 1e-5,
            abs: 2e-6 * (k.max(1) as f64),
        }
    }

    /// Panics naming the first element (and the case) that is out of tolerance.
    pub fn assert_close(&self, case: &str, got: &[f32], want: &[f64]) {
        assert_eq!(got.len(), want.len(), "{case}: lengths differ");
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            let bound = self.abs + self.rel * w.abs();
            let diff = (g as f64 - w).abs();
            assert!(
                diff <= bound,
                "{case}: element {i}: got {g}, want {w} (diff {diff:e} > {bound:e})"
            );
        }
    }

    pub fn assert_close_f32(&self, case: &str, got: &[f32], want: &[f32]) {
        let want: Vec<f64> = want.iter().map(|&x| x as f64).collect();
        self.assert_close(case, got, &want)
    }
}

/// SplitMix64: deterministic test data without a dependency.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [-1, 1).
    pub fn f32(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 23) as f32 - 1.0
    }

    pub fn vec(&mut self, n: usize) -> Vec<f32> {
        (0..n).map(|_| self.f32()).collect()
    }

    /// Standard normal (Box-Muller).
    pub fn normal(&mut self) -> f32 {
        let u1 = ((self.next_u64() >> 11) as f64 + 1.0) / (1u64 << 53) as f64;
        let u2 = (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64;
        ((-2.0 * u1.ln()).sqrt() * (std::f64::consts::TAU * u2).cos()) as f32
    }

    pub fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// `C = beta·C + A·B` in f64, with A and B given by element accessors.
pub fn naive_gemm(
    m: usize,
    n: usize,
    k: usize,
    a: impl Fn(usize, usize) -> f32,
    b: impl Fn(usize, usize) -> f32,
    c: &[f32],
    beta: f32,
) -> Vec<f64> {
    let mut out = vec![0f64; m * n];
    for i in 0..m {
        for j in 0..n {
            let mut s = 0f64;
            for p in 0..k {
                s += a(i, p) as f64 * b(p, j) as f64;
            }
            let prev = if beta == 0.0 {
                0.0
            } else {
                beta as f64 * c[i * n + j] as f64
            };
            out[i * n + j] = prev + s;
        }
    }
    out
}

/// `len` bytes whose start has the given alignment offset from a 4-byte boundary (0 = aligned).
pub fn bytes_at_offset(src: &[u8], misalign: usize) -> (Vec<u8>, usize) {
    let mut buf = vec![0u8; src.len() + 8];
    let start = buf.as_ptr().align_offset(4) + misalign;
    buf[start..start + src.len()].copy_from_slice(src);
    (buf, start)
}
