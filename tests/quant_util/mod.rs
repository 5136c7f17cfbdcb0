//! Shared helpers for the quant tests: a seeded PRNG and random blocks whose f16 scale fields are
//! finite (random codes and 6-bit scales otherwise). Kept dependency-free on purpose.
#![allow(dead_code)]

use edgetune::gguf::GgmlType;

/// SplitMix64: small, seeded, good enough for test data.
pub struct Rng(pub u64);

impl Rng {
    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    pub fn uniform(&mut self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }

    pub fn normal(&mut self) -> f32 {
        let (u1, u2) = (self.uniform().max(1e-300), self.uniform());
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }

    pub fn fill(&mut self, buf: &mut [u8]) {
        for b in buf {
            *b = self.next_u64() as u8;
        }
    }
}

/// Byte offsets of the f16 scale fields of one block (every element for F16).
pub fn f16_fields(ty: GgmlType) -> &'static [usize] {
    use GgmlType::*;
    match ty {
        F16 | Q4_0 | Q5_0 | Q8_0 | IQ4_NL | IQ4_XS => &[0],
        Q3_K => &[108],
        Q4_1 | Q5_1 | Q4_K | Q5_K => &[0, 2],
        Q2_K => &[80, 82],
        Q6_K => &[208],
        _ => &[],
    }
}

/// A finite f16 with a random sign and magnitude in about [2^-14, 4] (normal numbers only, so the
/// products stay far from overflow and underflow).
pub fn sane_f16(rng: &mut Rng) -> u16 {
    let exp = 1 + (rng.next_u64() % 16) as u16; // biased exponent 1..=16
    let man = (rng.next_u64() & 0x3ff) as u16;
    let sign = ((rng.next_u64() & 1) as u16) << 15;
    sign | (exp << 10) | man
}

/// `n` random blocks of `ty`. With `sane`, f16 scale fields are finite (`sane_f16`) and F32/BF16
/// elements are finite; without it, all bytes are random (NaN, inf and subnormal scales included).
pub fn random_blocks(ty: GgmlType, n: usize, rng: &mut Rng, sane: bool) -> Vec<u8> {
    let size = ty.type_size();
    let mut out = vec![0u8; n * size];
    rng.fill(&mut out);
    if !sane {
        return out;
    }
    for block in out.chunks_exact_mut(size) {
        for &at in f16_fields(ty) {
            block[at..at + 2].copy_from_slice(&sane_f16(rng).to_le_bytes());
        }
        match ty {
            GgmlType::F32 => block.copy_from_slice(&(rng.normal() * 10.0).to_le_bytes()),
            GgmlType::BF16 => {
                let bits = (rng.normal() * 10.0).to_bits();
                block.copy_from_slice(&((bits >> 16) as u16).to_le_bytes());
            }
            _ => {}
        }
    }
    out
}

/// Same bits, or both NaN.
pub fn same_f32(a: f32, b: f32) -> bool {
    a.to_bits() == b.to_bits() || (a.is_nan() && b.is_nan())
}

/// Index of the first element where `got` and `want` differ (bitwise, NaN == NaN), if any.
pub fn first_mismatch(got: &[f32], want: &[f32]) -> Option<usize> {
    if got.len() != want.len() {
        return Some(got.len().min(want.len()));
    }
    got.iter().zip(want).position(|(a, b)| !same_f32(*a, *b))
}
