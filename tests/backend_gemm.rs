//! Do the CPU backend's dense GEMMs compute the right product, at every SIMD level and thread
//! count? The scalar level is checked against a naive f64 triple loop; every other level against
//! the scalar one. Odd and prime sizes (1..70), sizes that cross the packing blocks, beta 0/1/other,
//! unaligned slices, and bit-identical results across thread counts.

mod backend_support;

use backend_support::{naive_gemm, Rng, Tolerance};
use edgetune::backend::cpu::{CpuBackend, GemmOp};
use edgetune::backend::Backend;
use edgetune::cpu::{available_levels, SimdLevel};

const OPS: [GemmOp; 3] = [GemmOp::Nt, GemmOp::Nn, GemmOp::Tn];
const BETAS: [f32; 3] = [0.0, 1.0, -0.5];

/// Sizes for `(m, n, k)`: edges, primes, tile multiples +-1, and a few that cross KC/NC (256).
fn shapes() -> Vec<(usize, usize, usize)> {
    let mut v = vec![
        (1, 1, 1),
        (1, 69, 67),
        (69, 1, 70),
        (70, 70, 1),
        (14, 32, 64),
        (13, 31, 63),
        (15, 33, 65),
    ];
    let picks = [
        2, 3, 5, 6, 7, 11, 12, 16, 17, 29, 37, 43, 53, 59, 61, 67, 68, 69,
    ];
    let mut rng = Rng::new(7);
    for _ in 0..40 {
        v.push((
            picks[rng.below(picks.len())],
            picks[rng.below(picks.len())],
            picks[rng.below(picks.len())],
        ));
    }
    v.extend([(29, 300, 37), (17, 40, 300), (31, 270, 513)]);
    v
}

/// Operands for one case, stored with the layouts `op` expects.
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
    fn new(op: GemmOp, m: usize, n: usize, k: usize, seed: u64) -> Case {
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

    fn a_at(&self, i: usize, p: usize) -> f32 {
        match self.op {
            GemmOp::Nt | GemmOp::Nn => self.a[i * self.k + p],
            GemmOp::Tn => self.a[p * self.m + i],
        }
    }

    fn b_at(&self, p: usize, j: usize) -> f32 {
        match self.op {
            GemmOp::Nt => self.b[j * self.k + p],
            GemmOp::Nn | GemmOp::Tn => self.b[p * self.n + j],
        }
    }

    fn naive(&self, beta: f32) -> Vec<f64> {
        naive_gemm(
            self.m,
            self.n,
            self.k,
            |i, p| self.a_at(i, p),
            |p, j| self.b_at(p, j),
            &self.c,
            beta,
        )
    }

    /// Runs through the `Backend` trait method of `op`.
    fn run(&self, be: &CpuBackend, beta: f32) -> Vec<f32> {
        let mut c = self.c.clone();
        let (m, n, k) = (self.m, self.n, self.k);
        match self.op {
            GemmOp::Nt => be.gemm_nt(&self.a, &self.b, &mut c, m, n, k, beta),
            GemmOp::Nn => be.gemm_nn(&self.a, &self.b, &mut c, m, n, k, beta),
            GemmOp::Tn => be.gemm_tn(&self.a, &self.b, &mut c, m, n, k, beta),
        }
        c
    }

    fn name(&self, level: SimdLevel, threads: usize, beta: f32) -> String {
        format!(
            "{:?} m={} n={} k={} beta={beta} level={} threads={threads}",
            self.op,
            self.m,
            self.n,
            self.k,
            level.name()
        )
    }
}

fn backend(level: SimdLevel, threads: usize) -> CpuBackend {
    CpuBackend::with_level(threads, level).expect("level from available_levels")
}

#[test]
fn scalar_gemm_matches_naive_f64() {
    let be = backend(SimdLevel::Scalar, 1);
    for (s, &(m, n, k)) in shapes().iter().enumerate() {
        for op in OPS {
            let case = Case::new(op, m, n, k, s as u64);
            for beta in BETAS {
                let got = case.run(&be, beta);
                Tolerance::for_sum(k).assert_close(
                    &case.name(SimdLevel::Scalar, 1, beta),
                    &got,
                    &case.naive(beta),
                );
            }
        }
    }
}

#[test]
fn every_level_matches_scalar_with_one_and_two_threads() {
    let reference = backend(SimdLevel::Scalar, 1);
    for &level in available_levels() {
        for threads in [1, 2] {
            let be = backend(level, threads);
            assert_eq!(be.level(), level);
            for (s, &(m, n, k)) in shapes().iter().enumerate() {
                for op in OPS {
                    let case = Case::new(op, m, n, k, 1000 + s as u64);
                    for beta in BETAS {
                        let want = case.run(&reference, beta);
                        let got = case.run(&be, beta);
                        Tolerance::for_sum(k).assert_close_f32(
                            &case.name(level, threads, beta),
                            &got,
                            &want,
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn results_are_bit_identical_across_thread_counts() {
    for &level in available_levels() {
        let backends: Vec<_> = [1, 2, 3, 5]
            .into_iter()
            .map(|t| backend(level, t))
            .collect();
        for &(m, n, k) in &[(70, 69, 67), (29, 300, 37), (3, 61, 290), (100, 8, 40)] {
            for op in OPS {
                let case = Case::new(op, m, n, k, 99);
                let first = case.run(&backends[0], 1.0);
                for be in &backends[1..] {
                    let got = case.run(be, 1.0);
                    let same = got
                        .iter()
                        .zip(&first)
                        .all(|(x, y)| x.to_bits() == y.to_bits());
                    assert!(
                        same,
                        "{} differs from 1 thread",
                        case.name(level, be.threads(), 1.0)
                    );
                }
            }
        }
    }
}

#[test]
fn unaligned_slices_give_the_same_result() {
    for &level in available_levels() {
        let be = backend(level, 2);
        for op in OPS {
            let (m, n, k) = (19, 45, 33);
            let case = Case::new(op, m, n, k, 5);
            let want = case.run(&be, 1.0);
            // The same data, one float past an aligned start.
            let shift = |v: &[f32]| [&[0.0], v].concat();
            let (a, b) = (shift(&case.a), shift(&case.b));
            let mut c = shift(&case.c);
            be.gemm(op, &a[1..], &b[1..], &mut c[1..], [m, n, k], 1.0)
                .unwrap();
            assert_eq!(&c[1..], &want[..], "{}", case.name(level, 2, 1.0));
        }
    }
}

#[test]
fn beta_zero_ignores_nan_in_c_and_k_zero_scales_c() {
    for &level in available_levels() {
        let be = backend(level, 2);
        for op in OPS {
            let mut case = Case::new(op, 20, 37, 9, 3);
            case.c.fill(f32::NAN);
            assert!(
                case.run(&be, 0.0).iter().all(|x| x.is_finite()),
                "{op:?} {}",
                level.name()
            );
            let empty = Case {
                op,
                m: 4,
                n: 5,
                k: 0,
                a: vec![],
                b: vec![],
                c: vec![2.0; 20],
            };
            assert_eq!(empty.run(&be, 0.5), vec![1.0; 20]);
            assert_eq!(empty.run(&be, 0.0), vec![0.0; 20]);
        }
    }
}

#[test]
fn checked_gemm_rejects_bad_lengths_and_new_rejects_zero_threads() {
    let be = backend(SimdLevel::Scalar, 1);
    let mut c = vec![0.0; 6];
    let err = be
        .gemm(GemmOp::Nn, &[0.0; 5], &[0.0; 12], &mut c, [2, 3, 4], 0.0)
        .unwrap_err();
    assert!(
        err.to_string().contains("a has 5 elements, expected 2x4"),
        "{err}"
    );
    assert!(be
        .gemm(GemmOp::Nt, &[0.0; 8], &[0.0; 11], &mut c, [2, 3, 4], 0.0)
        .is_err());
    assert!(be
        .gemm(
            GemmOp::Tn,
            &[0.0; 8],
            &[0.0; 12],
            &mut c[..5],
            [2, 3, 4],
            0.0
        )
        .is_err());
    assert!(CpuBackend::new(0).is_err());
}

#[test]
fn every_available_level_has_kernels_and_aarch64_always_has_neon() {
    for &level in available_levels() {
        let be = backend(level, 1);
        let (mr, nr) = be.tile();
        assert!(mr >= 1 && nr >= 1, "{level:?}");
    }
    if cfg!(target_arch = "aarch64") {
        assert!(available_levels().contains(&SimdLevel::Neon));
    }
}

#[test]
fn scratch_estimate_covers_the_packed_a_copy_and_stays_small_per_thread() {
    for &level in available_levels() {
        for threads in [1, 2] {
            let be = backend(level, threads);
            let (mr, _) = be.tile();
            let (m, k): (usize, usize) = (256, 1536);
            let a_pack = m.div_ceil(mr) * mr * k * 4;
            let bytes = be.scratch_bytes(m, k);
            assert!(bytes > a_pack, "{level:?}: {bytes} <= {a_pack}");
            // One 256x256 packed block plus decode buffers per thread: well under 1 MiB each.
            assert!(
                bytes < a_pack + threads * (1 << 20),
                "{level:?} threads {threads}: {bytes}"
            );
            assert!(be.scratch_bytes(2 * m, k) > bytes);
        }
    }
}
