//! Do the optimizer kernels give the same bits at every SIMD level as at the scalar one, for odd
//! lengths and unaligned starts? (The scalar level itself is checked against torch and
//! bitsandbytes in tests/optim_reference.rs.)

use edgetune::cpu::{available_levels, SimdLevel};
use edgetune::optim::kernels::{self, BnbAdam, TorchAdamW, TorchSgd};

/// SplitMix64 values in roughly [-1, 1), with some exact zeros.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> f32 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^= z >> 31;
        if z.is_multiple_of(11) {
            0.0
        } else {
            (z >> 40) as f32 / (1u64 << 23) as f32 - 1.0
        }
    }

    fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.next() * scale).collect()
    }
}

/// Inputs of one kernel call: p, g, m (or momentum), v (non-negative).
#[derive(Clone, PartialEq, Debug)]
struct Buffers {
    p: Vec<f32>,
    g: Vec<f32>,
    m: Vec<f32>,
    v: Vec<f32>,
}

fn bits(b: &Buffers) -> Vec<u32> {
    [&b.p, &b.g, &b.m, &b.v]
        .iter()
        .flat_map(|v| v.iter().map(|x| x.to_bits()))
        .collect()
}

/// Runs `kernel` at every level on slices starting `offset` elements into their buffers, for
/// lengths 0..70, and compares with the scalar level bit for bit.
fn check_levels(
    name: &str,
    kernel: impl Fn(SimdLevel, &mut [f32], &[f32], &mut [f32], &mut [f32]),
) {
    let mut rng = Rng(name.len() as u64);
    for n in 0..70 {
        for offset in 0..3 {
            let total = n + offset;
            let input = Buffers {
                p: rng.vec(total, 0.5),
                g: rng.vec(total, 0.01),
                m: rng.vec(total, 0.005),
                v: rng.vec(total, 1e-4).iter().map(|x| x.abs()).collect(),
            };
            let run = |level| {
                let mut b = input.clone();
                let r = offset..total;
                kernel(
                    level,
                    &mut b.p[r.clone()],
                    &b.g[r.clone()],
                    &mut b.m[r.clone()],
                    &mut b.v[r],
                );
                b
            };
            let expected = run(SimdLevel::Scalar);
            if n > 0 {
                assert_ne!(expected, input, "{name}: kernel changed nothing");
            }
            for &level in available_levels() {
                assert_eq!(
                    bits(&run(level)),
                    bits(&expected),
                    "{name} at {level:?}, length {n}, offset {offset}"
                );
            }
        }
    }
}

fn torch_adamw(lerp_weight: f32, decay: f32) -> TorchAdamW {
    TorchAdamW {
        decay,
        lerp_weight,
        beta2: 0.999,
        one_minus_beta2: 1e-3,
        bc2_sqrt: 0.0447,
        eps: 1e-8,
        neg_step: -1e-3 / 0.19,
    }
}

fn bnb(c2: f32, eps: f32, step: f32) -> BnbAdam {
    BnbAdam {
        beta1: 0.9,
        one_minus_beta1: 0.1,
        beta2: 0.999,
        one_minus_beta2: 1e-3,
        decay: 0.99999,
        c2,
        eps,
        step,
    }
}

#[test]
fn torch_adamw_is_identical_at_every_level() {
    for (w, decay) in [(0.1, 0.99999), (0.1, 1.0), (0.7, 0.9999)] {
        let s = torch_adamw(w, decay);
        check_levels(
            &format!("torch_adamw w={w} decay={decay}"),
            |l, p, g, m, v| kernels::torch_adamw(l, &s, p, g, m, v),
        );
    }
}

#[test]
fn torch_sgd_is_identical_at_every_level() {
    for (first, wd) in [(true, 0.01), (false, 0.01), (false, 0.0)] {
        let s = TorchSgd {
            weight_decay: wd,
            momentum: 0.9,
            neg_lr: -0.01,
            first,
        };
        check_levels(
            &format!("torch_sgd first={first} wd={wd}"),
            |l, p, g, m, _| kernels::torch_sgd(l, &s, p, g, Some(m)),
        );
        check_levels(&format!("torch_sgd plain wd={wd}"), |l, p, g, _, _| {
            kernels::torch_sgd(l, &s, p, g, None)
        });
    }
}

#[test]
fn bnb_adam_is_identical_at_every_level() {
    let s8 = bnb(0.0447, 1e-8, -1e-3 / 0.19);
    check_levels("bnb_adam8", |l, p, g, m, v| {
        kernels::bnb_adam8(l, &s8, p, g, m, v)
    });
    let s32 = bnb(0.0447, 1e-8 * 0.0447, -1e-3 * 0.0447 / 0.19);
    check_levels("bnb_adam32", |l, p, g, m, v| {
        kernels::bnb_adam32(l, &s32, p, g, m, v)
    });
}
