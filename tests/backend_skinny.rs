//! Do skinny products (one of m, n, k at most 16: LoRA's rank) compute the right result at every
//! SIMD level? `CpuBackend::gemm` routes those with a small m or n to `backend/cpu/skinny.rs` (a
//! small k alone goes to the blocked GEMM, checked here too); each level is checked
//! against a naive f64 product for r = 1..16 in each position, every layout, beta 0/1/other, odd
//! long sizes (vector tails), unaligned slices, and bit-identical results across thread counts,
//! in f32 and bf16 compute.

mod backend_support;

use backend_support::{naive_gemm, Rng, Tolerance};
use edgetune::backend::cpu::{round_bf16, CpuBackend, GemmOp};
use edgetune::backend::{Backend, Compute};
use edgetune::cpu::{available_levels, SimdLevel};

const OPS: [GemmOp; 3] = [GemmOp::Nt, GemmOp::Nn, GemmOp::Tn];
const BETAS: [f32; 3] = [0.0, 1.0, -0.5];

/// `(m, n, k)` with the small size `r` in position `pos` and odd long sizes elsewhere.
fn shape(r: usize, pos: usize, long: (usize, usize)) -> (usize, usize, usize) {
    match pos {
        0 => (r, long.0, long.1),
        1 => (long.0, r, long.1),
        _ => (long.0, long.1, r),
    }
}

/// Operands for one case in the layouts `op` expects.
struct Case {
    op: GemmOp,
    m: usize,
    n: usize,
    k: usize,
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
}

impl Case {
    fn new(op: GemmOp, (m, n, k): (usize, usize, usize), seed: u64) -> Case {
        let mut rng = Rng::new(seed);
        Case {
            op,
            m,
            n,
            k,
            a: rng.vec(m * k),
            b: rng.vec(n * k),
            c: rng.vec(m * n),
        }
    }

    fn naive(&self, beta: f32, f: impl Fn(f32) -> f32) -> Vec<f64> {
        let (m, n, k) = (self.m, self.n, self.k);
        let a = |i: usize, p: usize| match self.op {
            GemmOp::Nt | GemmOp::Nn => f(self.a[i * k + p]),
            GemmOp::Tn => f(self.a[p * m + i]),
        };
        let b = |p: usize, j: usize| match self.op {
            GemmOp::Nt => f(self.b[j * k + p]),
            GemmOp::Nn | GemmOp::Tn => f(self.b[p * n + j]),
        };
        naive_gemm(m, n, k, a, b, &self.c, beta)
    }

    fn run_on(&self, be: &CpuBackend, a: &[f32], b: &[f32], c: &mut [f32], beta: f32) {
        be.gemm(self.op, a, b, c, [self.m, self.n, self.k], beta)
            .expect("sizes match");
    }

    fn run(&self, be: &CpuBackend, beta: f32) -> Vec<f32> {
        let mut c = self.c.clone();
        self.run_on(be, &self.a, &self.b, &mut c, beta);
        c
    }

    fn name(&self, be: &CpuBackend, beta: f32) -> String {
        format!(
            "{:?} m={} n={} k={} beta={beta} level={} threads={} compute={}",
            self.op,
            self.m,
            self.n,
            self.k,
            be.level().name(),
            be.threads(),
            be.compute()
        )
    }
}

fn backend(level: SimdLevel, threads: usize, compute: Compute) -> CpuBackend {
    CpuBackend::with_level(threads, level)
        .expect("level from available_levels")
        .with_compute(compute)
}

fn bits_equal(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

#[test]
fn every_level_matches_naive_f64_for_every_rank_position_and_layout() {
    for &level in available_levels() {
        let be = backend(level, 1, Compute::F32);
        for r in 1..=16 {
            for pos in 0..3 {
                for (o, op) in OPS.into_iter().enumerate() {
                    let long = [(37, 70), (129, 23), (33, 65)][(r + o) % 3];
                    let case = Case::new(op, shape(r, pos, long), (r * 10 + pos) as u64);
                    for beta in BETAS {
                        Tolerance::for_sum(case.k).assert_close(
                            &case.name(&be, beta),
                            &case.run(&be, beta),
                            &case.naive(beta, |x| x),
                        );
                    }
                }
            }
        }
    }
}

/// LoRA's shapes at SmolLM2-135M (m = 256 tokens, r = 8, n_in = 576, n_out = 192) and odd ones,
/// big enough to be split among threads.
const THREADED: [(usize, usize, usize); 8] = [
    (256, 8, 576),
    (256, 192, 8),
    (192, 8, 256),
    (8, 576, 256),
    (256, 576, 8),
    (301, 5, 67),
    (7, 333, 101),
    (299, 77, 13),
];

#[test]
fn results_are_bit_identical_across_thread_counts_in_f32_and_bf16() {
    for &level in available_levels() {
        for compute in [Compute::F32, Compute::Bf16] {
            let backends: Vec<_> = [1, 2, 3]
                .into_iter()
                .map(|t| backend(level, t, compute))
                .collect();
            for (s, &shape) in THREADED.iter().enumerate() {
                for op in OPS {
                    let case = Case::new(op, shape, 50 + s as u64);
                    let first = case.run(&backends[0], 1.0);
                    Tolerance::for_sum(case.k).assert_close(
                        &case.name(&backends[0], 1.0),
                        &first,
                        &case.naive(1.0, |x| {
                            if compute == Compute::Bf16 {
                                round_bf16(x)
                            } else {
                                x
                            }
                        }),
                    );
                    for be in &backends[1..] {
                        assert!(
                            bits_equal(&case.run(be, 1.0), &first),
                            "{} differs from 1 thread",
                            case.name(be, 1.0)
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn bf16_equals_f32_on_rounded_inputs_bit_for_bit() {
    for &level in available_levels() {
        let (f32_be, bf16_be) = (
            backend(level, 2, Compute::F32),
            backend(level, 2, Compute::Bf16),
        );
        // Only the skinny route: a small k alone goes to the blocked GEMM, whose bf16 kernel
        // (vdpbf16ps) sums in pairs (tests/backend_bf16.rs covers it).
        for (s, &shape) in THREADED
            .iter()
            .enumerate()
            .filter(|(_, s)| s.0.min(s.1) <= 16)
        {
            for op in OPS {
                let case = Case::new(op, shape, 70 + s as u64);
                let rounded = |v: &[f32]| v.iter().map(|&x| round_bf16(x)).collect::<Vec<_>>();
                for beta in BETAS {
                    let mut want = case.c.clone();
                    case.run_on(
                        &f32_be,
                        &rounded(&case.a),
                        &rounded(&case.b),
                        &mut want,
                        beta,
                    );
                    assert!(
                        bits_equal(&case.run(&bf16_be, beta), &want),
                        "{}",
                        case.name(&bf16_be, beta)
                    );
                }
            }
        }
    }
}

#[test]
fn unaligned_slices_give_the_same_result_and_beta_zero_ignores_c() {
    for &level in available_levels() {
        let be = backend(level, 2, Compute::F32);
        for &shape in &[(45, 9, 33), (19, 45, 3), (5, 61, 40)] {
            for op in OPS {
                let mut case = Case::new(op, shape, 5);
                let want = case.run(&be, 1.0);
                // The same data, one float past an aligned start.
                let shift = |v: &[f32]| [&[0.0], v].concat();
                let (a, b, mut c) = (shift(&case.a), shift(&case.b), shift(&case.c));
                case.run_on(&be, &a[1..], &b[1..], &mut c[1..], 1.0);
                assert_eq!(&c[1..], &want[..], "{}", case.name(&be, 1.0));
                case.c.fill(f32::NAN);
                assert!(
                    case.run(&be, 0.0).iter().all(|x| x.is_finite()),
                    "{}",
                    case.name(&be, 0.0)
                );
            }
        }
    }
}
