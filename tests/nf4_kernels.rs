//! Do the NF4 SIMD kernels equal the scalar reference at every level, for any range, odd
//! lengths and unaligned buffers? And does a round trip stay within the NF4 error bound?

use edgetune::cpu::{available_levels, SimdLevel};
use edgetune::quant::dynamic8::Rounding;
use edgetune::quant::nf4::{
    self, nf4_midpoints, nf4_values, F32Slice, Nf4Params, Nf4Scales, Nf4ScalesView, Nf4Tensor,
    Nf4View,
};

/// Deterministic test data (xorshift64*), normal via Box-Muller.
struct Rng(u64);

impl Rng {
    fn next_u64(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }

    fn uniform(&mut self) -> f32 {
        (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32
    }

    fn normal(&mut self) -> f32 {
        let (u, v) = (self.uniform().max(1e-7), self.uniform());
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next_u64() % n as u64) as usize
    }
}

/// Normal data with some exact ties (a block's absmax is 1.0 and values sit on midpoints) and an
/// all-zero block.
fn test_data(n: usize, seed: u64) -> Vec<f32> {
    let mut rng = Rng(seed);
    let mut x: Vec<f32> = (0..n).map(|_| rng.normal()).collect();
    if n >= 128 {
        x[0] = 1.0;
        for (i, m) in nf4_midpoints().into_iter().enumerate() {
            x[1 + i] = m;
            x[16 + i] = -m;
        }
        x[64..128].fill(0.0);
    }
    x
}

fn params(block_size: usize, double_quant: bool) -> Nf4Params {
    Nf4Params {
        block_size,
        double_quant,
        absmax_rounding: Rounding::Nearest,
    }
}

fn simd_levels() -> impl Iterator<Item = SimdLevel> {
    available_levels()
        .iter()
        .copied()
        .filter(|&l| l != SimdLevel::Scalar)
}

#[test]
fn encode_matches_scalar_at_every_level() {
    let sizes = [0, 1, 2, 31, 33, 64, 65, 127, 1000, 4097, 20_001];
    for (k, &n) in sizes.iter().enumerate() {
        // One leading element shifts the input off any vector alignment.
        let mut data = vec![0.0];
        data.extend(test_data(n, 7 + k as u64));
        let x = &data[1..];
        for bs in [32, 64, 128, 4096] {
            for dq in [false, true] {
                let want = nf4::quantize_at(SimdLevel::Scalar, x, params(bs, dq)).unwrap();
                for level in simd_levels() {
                    let got = nf4::quantize_at(level, x, params(bs, dq)).unwrap();
                    assert_eq!(got, want, "n={n} bs={bs} dq={dq} at {level:?}");
                }
            }
        }
    }
}

/// Scalar decode of one element straight from the format definition.
fn reference_element(t: &Nf4Tensor, i: usize) -> f32 {
    let byte = t.codes[i / 2];
    let code = if i.is_multiple_of(2) {
        byte >> 4
    } else {
        byte & 15
    };
    let absmax = t.view().unwrap().block_absmax(i / t.block_size).unwrap();
    nf4_values()[code as usize] * absmax
}

#[test]
fn decode_ranges_match_scalar_at_every_level() {
    let mut rng = Rng(99);
    for (n, bs, dq) in [
        (1, 64, false),
        (777, 32, true),
        (5000, 64, true),
        (9001, 128, false),
    ] {
        let t = nf4::quantize(&test_data(n, n as u64), params(bs, dq)).unwrap();
        let view = t.view().unwrap();
        let full: Vec<f32> = (0..n).map(|i| reference_element(&t, i)).collect();
        // Every alignment of start and length near the ends, plus random ranges.
        let mut ranges: Vec<(usize, usize)> = Vec::new();
        for start in 0..n.min(5) {
            for len in 0..(n - start).min(40) {
                ranges.push((start, len));
                ranges.push((n - start - len, len));
            }
        }
        for _ in 0..200 {
            let start = rng.below(n);
            ranges.push((start, rng.below(n - start + 1)));
        }
        ranges.push((0, n));
        for level in available_levels().iter().copied() {
            for &(start, len) in &ranges {
                // Decode into a buffer offset by one element (unaligned for the vector stores).
                let mut buf = vec![f32::NAN; len + 2];
                view.dequantize_range_at(level, start, &mut buf[1..=len])
                    .unwrap();
                let got: Vec<u32> = buf[1..=len].iter().map(|v| v.to_bits()).collect();
                let want: Vec<u32> = full[start..start + len]
                    .iter()
                    .map(|v| v.to_bits())
                    .collect();
                assert_eq!(got, want, "n={n} range {start}+{len} at {level:?}");
                assert!(
                    buf[0].is_nan() && buf[len + 1].is_nan(),
                    "wrote outside the range"
                );
            }
        }
    }
}

#[test]
fn little_endian_views_decode_like_owned_tensors() {
    let t = nf4::quantize(&test_data(3000, 3), params(64, true)).unwrap();
    let Nf4Scales::DoubleQuant { q, absmax2, offset } = &t.scales else {
        unreachable!()
    };
    let mut bytes = vec![0u8; 3];
    bytes.extend(absmax2.iter().flat_map(|v| v.to_le_bytes()));
    let scales = Nf4ScalesView::DoubleQuant {
        q,
        absmax2: F32Slice::LeBytes(&bytes[3..]),
        offset: *offset,
    };
    let view = Nf4View::new(&t.codes, scales, 64, 3000).unwrap();
    let (mut a, mut b) = (vec![0.0; 3000], vec![0.0; 3000]);
    view.dequantize(&mut a).unwrap();
    t.dequantize(&mut b).unwrap();
    assert_eq!(a, b);
    let mut absmaxes = vec![0.0; view.n_blocks()];
    view.block_absmaxes(&mut absmaxes).unwrap();
    for (i, a) in absmaxes.iter().enumerate() {
        assert_eq!(*a, t.view().unwrap().block_absmax(i).unwrap());
    }
}

/// Round-trip error bound: half the widest gap between NF4 levels (between -1 and -0.696) times
/// the block absmax; with double quantization plus the absmax's own 8-bit error, at most half
/// the widest dynamic-map gap (0.0070) times absmax2.
#[test]
fn round_trip_error_is_within_the_nf4_bound() {
    let v = nf4_values();
    let half_gap = v.windows(2).map(|w| w[1] - w[0]).fold(0.0f32, f32::max) / 2.0;
    assert!((half_gap - 0.152).abs() < 1e-3);
    let x = test_data(20_000, 11);
    for dq in [false, true] {
        let t = nf4::quantize(&x, params(64, dq)).unwrap();
        let mut y = vec![0.0; x.len()];
        t.dequantize(&mut y).unwrap();
        let view = t.view().unwrap();
        for (block, (xs, ys)) in x.chunks(64).zip(y.chunks(64)).enumerate() {
            let true_absmax = xs.iter().fold(0.0f32, |m, v| m.max(v.abs()));
            let absmax = view.block_absmax(block).unwrap();
            let absmax_err = (absmax - true_absmax).abs();
            if dq {
                let Nf4Scales::DoubleQuant { absmax2, .. } = &t.scales else {
                    unreachable!()
                };
                assert!(
                    absmax_err <= 0.0071 * absmax2[block / 256] + 1e-6,
                    "block {block}"
                );
            } else {
                assert_eq!(absmax_err, 0.0);
            }
            for (a, b) in xs.iter().zip(ys) {
                let bound = half_gap * true_absmax + absmax_err + 1e-6;
                assert!((a - b).abs() <= bound, "block {block}: {a} -> {b}");
            }
        }
    }
}
