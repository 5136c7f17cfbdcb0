//! Does bf16 compute (`Compute::Bf16`) multiply bf16-rounded inputs with f32 accumulation, at every
//! SIMD level, thread count and weight storage? The reference rounds the inputs with the `half`
//! crate (round-to-nearest-even, as PyTorch) and multiplies in f64, so the only allowed difference
//! is the f32 accumulation order. On levels without a bf16 dot-product kernel the result must equal
//! the f32 path on pre-rounded inputs bit for bit. On real-looking data, bf16 must differ from f32
//! by the size of bf16 rounding error: not less (nothing rounded), not more.

mod backend_support;

use backend_support::weights::{Kind, TestWeight};
use backend_support::{naive_gemm, Rng, Tolerance};
use edgetune::backend::cpu::{round_bf16, CpuBackend, GemmOp};
use edgetune::backend::{Backend, Compute};
use edgetune::cpu::{available_levels, SimdLevel};
use edgetune::gguf::GgmlType;

const OPS: [GemmOp; 3] = [GemmOp::Nt, GemmOp::Nn, GemmOp::Tn];
const BETAS: [f32; 3] = [0.0, 1.0, -0.5];

fn rounded(x: f32) -> f32 {
    half::bf16::from_f32(x).to_f32()
}

fn backend(level: SimdLevel, threads: usize, compute: Compute) -> CpuBackend {
    CpuBackend::with_level(threads, level)
        .expect("level from available_levels")
        .with_compute(compute)
}

/// `(m, n, k)`: single elements, odd and prime sizes around the tiles (14x32, 4x8, 6x16), odd `k`
/// (a half pair at the end), and sizes that cross the 256-deep / 256-wide packing blocks.
fn gemm_shapes() -> Vec<(usize, usize, usize)> {
    let mut v = vec![
        (1, 1, 1),
        (1, 1, 2),
        (2, 3, 3),
        (1, 69, 67),
        (69, 1, 70),
        (70, 70, 1),
        (14, 32, 64),
        (13, 31, 63),
        (15, 33, 65),
        (28, 64, 2),
        (29, 300, 37),
        (17, 40, 300),
        (31, 270, 513),
        (5, 257, 257),
    ];
    let picks = [2, 3, 5, 7, 11, 16, 17, 29, 37, 43, 53, 67];
    let mut rng = Rng::new(11);
    for _ in 0..20 {
        v.push((
            picks[rng.below(picks.len())],
            picks[rng.below(picks.len())],
            picks[rng.below(picks.len())],
        ));
    }
    v
}

/// One GEMM case, operands in the layouts `op` expects.
struct GemmCase {
    op: GemmOp,
    mnk: [usize; 3],
    a: Vec<f32>,
    b: Vec<f32>,
    c: Vec<f32>,
}

impl GemmCase {
    fn new(op: GemmOp, (m, n, k): (usize, usize, usize), seed: u64) -> GemmCase {
        let mut rng = Rng::new(seed);
        GemmCase {
            op,
            mnk: [m, n, k],
            a: rng.vec(m * k),
            b: rng.vec(n * k),
            c: rng.vec(m * n),
        }
    }

    /// `beta·C + op(round(A))·op(round(B))` in f64 (C itself is not a product input).
    fn reference(&self, beta: f32) -> Vec<f64> {
        let [m, n, k] = self.mnk;
        let (a, b) = (&self.a, &self.b);
        let a_at = |i: usize, p: usize| match self.op {
            GemmOp::Nt | GemmOp::Nn => rounded(a[i * k + p]),
            GemmOp::Tn => rounded(a[p * m + i]),
        };
        let b_at = |p: usize, j: usize| match self.op {
            GemmOp::Nt => rounded(b[j * k + p]),
            GemmOp::Nn | GemmOp::Tn => rounded(b[p * n + j]),
        };
        naive_gemm(m, n, k, a_at, b_at, &self.c, beta)
    }

    fn run_with(&self, be: &CpuBackend, a: &[f32], b: &[f32], beta: f32) -> Vec<f32> {
        let mut c = self.c.clone();
        be.gemm(self.op, a, b, &mut c, self.mnk, beta)
            .expect("sizes match");
        c
    }

    fn run(&self, be: &CpuBackend, beta: f32) -> Vec<f32> {
        self.run_with(be, &self.a, &self.b, beta)
    }

    fn name(&self, be: &CpuBackend, beta: f32) -> String {
        let [m, n, k] = self.mnk;
        format!(
            "{:?} m={m} n={n} k={k} beta={beta} level={} bf16_kernel={} threads={}",
            self.op,
            be.level().name(),
            be.bf16_kernel(),
            be.threads()
        )
    }
}

fn bits_equal(a: &[f32], b: &[f32]) -> bool {
    a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits())
}

#[test]
fn compute_parses_names_and_backends_report_it() {
    assert_eq!("bf16".parse::<Compute>().unwrap(), Compute::Bf16);
    assert_eq!(" F32 ".parse::<Compute>().unwrap(), Compute::F32);
    let err = "fp16".parse::<Compute>().unwrap_err().to_string();
    assert!(
        err.contains("'fp16'") && err.contains("f32 or bf16"),
        "{err}"
    );
    assert_eq!(Compute::Bf16.to_string(), "bf16");
    let be = CpuBackend::new(1).unwrap();
    assert_eq!(be.compute(), Compute::F32);
    assert!(!be.bf16_kernel());
    let be = be.with_compute(Compute::Bf16);
    assert_eq!(be.compute(), Compute::Bf16);
    // The bf16 kernel runs exactly where the CPU has one, at the AVX-512 level.
    assert_eq!(
        be.bf16_kernel(),
        edgetune::cpu::has_bf16_dot() && be.level() == SimdLevel::Avx512
    );
    assert_eq!(round_bf16(1.0 + 1.0 / 256.0), 1.0, "ties go to even");
    assert_eq!(round_bf16(1.0 + 3.0 / 256.0), 1.0 + 4.0 / 256.0);
}

#[test]
fn bf16_gemm_matches_rounded_f64_reference_at_every_level_and_thread_count() {
    let shapes = gemm_shapes();
    for &level in available_levels() {
        for threads in [1, 2] {
            let be = backend(level, threads, Compute::Bf16);
            for (s, &shape) in shapes.iter().enumerate() {
                for op in OPS {
                    let case = GemmCase::new(op, shape, s as u64);
                    for beta in BETAS {
                        Tolerance::for_sum(case.mnk[2]).assert_close(
                            &case.name(&be, beta),
                            &case.run(&be, beta),
                            &case.reference(beta),
                        );
                    }
                }
            }
        }
    }
}

#[test]
fn bf16_by_rounding_equals_f32_gemm_on_rounded_inputs_bit_for_bit() {
    let mut checked = 0;
    for &level in available_levels() {
        let bf = backend(level, 2, Compute::Bf16);
        if bf.bf16_kernel() {
            continue; // a different kernel: covered by the reference test
        }
        let f32_be = backend(level, 2, Compute::F32);
        for (s, &shape) in gemm_shapes().iter().enumerate() {
            for op in OPS {
                let case = GemmCase::new(op, shape, 500 + s as u64);
                let (ar, br): (Vec<f32>, Vec<f32>) = (
                    case.a.iter().map(|&x| rounded(x)).collect(),
                    case.b.iter().map(|&x| rounded(x)).collect(),
                );
                for beta in BETAS {
                    let want = case.run_with(&f32_be, &ar, &br, beta);
                    assert!(
                        bits_equal(&case.run(&bf, beta), &want),
                        "{}",
                        case.name(&bf, beta)
                    );
                }
                checked += 1;
            }
        }
    }
    assert!(checked > 0, "the scalar level always rounds");
}

#[test]
fn bf16_gemm_is_bit_identical_across_thread_counts() {
    for &level in available_levels() {
        let backends: Vec<_> = [1, 2, 3, 5]
            .into_iter()
            .map(|t| backend(level, t, Compute::Bf16))
            .collect();
        for &shape in &[(70, 69, 67), (29, 300, 37), (3, 61, 290), (100, 8, 41)] {
            for op in OPS {
                let case = GemmCase::new(op, shape, 99);
                let first = case.run(&backends[0], 1.0);
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

/// Weight storages of the bf16 linear tests: F32 in place and decoded, NF4 (double-quantized
/// block 64, plain block 32), Q4_1 (SmolLM2's), Q8_0 and Q4_K.
/// `(m, n_in, n_out)` of one linear case.
type Shape = (usize, usize, usize);

const KINDS: [(Kind, &[Shape]); 7] = [
    (Kind::F32 { misalign: 0 }, &SHAPES),
    (Kind::F32 { misalign: 1 }, &SHAPES),
    (
        Kind::Nf4 {
            block: 64,
            double_quant: true,
        },
        &SHAPES,
    ),
    (
        Kind::Nf4 {
            block: 32,
            double_quant: false,
        },
        &SHAPES,
    ),
    (Kind::Ggml(GgmlType::Q4_1), &SHAPES_32),
    (Kind::Ggml(GgmlType::Q8_0), &SHAPES_32),
    (Kind::Ggml(GgmlType::Q4_K), &SHAPES_256),
];

/// `(m, n_in, n_out)`: the matrix-vector path (m <= 8 at AVX-512), the GEMM, odd `n_in` and
/// `n_out` (half pairs in forward and backward), rows not aligned with NF4 blocks, 256-crossings.
const SHAPES: [Shape; 7] = [
    (1, 67, 13),
    (3, 301, 70),
    (9, 37, 300),
    (17, 301, 13),
    (33, 7, 301),
    (29, 576, 193),
    (20, 1, 9),
];
const SHAPES_32: [Shape; 5] = [
    (1, 96, 13),
    (2, 288, 71),
    (17, 288, 13),
    (33, 32, 301),
    (29, 576, 193),
];
const SHAPES_256: [Shape; 3] = [(1, 256, 13), (17, 512, 13), (29, 768, 41)];

/// A linear layer's inputs and its rounded f64 references.
struct LinearCase {
    name: String,
    m: usize,
    w: TestWeight,
    x: Vec<f32>,
    dy: Vec<f32>,
    dx0: Vec<f32>,
}

impl LinearCase {
    fn new(kind: Kind, (m, n_in, n_out): Shape, seed: u64) -> LinearCase {
        let mut rng = Rng::new(seed + 1);
        LinearCase {
            name: format!("{kind:?} m={m} n_in={n_in} n_out={n_out}"),
            m,
            w: TestWeight::new(kind, n_in, n_out, seed),
            x: rng.vec(m * n_in),
            dy: rng.vec(m * n_out),
            dx0: rng.vec(m * n_in),
        }
    }

    /// `round(x)·round(W)ᵀ` and `dx0 + round(dy)·round(W)` in f64, W as its decoder gives it.
    fn reference(&self) -> (Vec<f64>, Vec<f64>) {
        let (m, n_in, n_out) = (self.m, self.w.n_in, self.w.n_out);
        let w: Vec<f32> = self.w.decoded.iter().map(|&v| rounded(v)).collect();
        let (x, dy) = (&self.x, &self.dy);
        let y = naive_gemm(
            m,
            n_out,
            n_in,
            |i, p| rounded(x[i * n_in + p]),
            |p, j| w[j * n_in + p],
            &[],
            0.0,
        );
        let dx = naive_gemm(
            m,
            n_in,
            n_out,
            |i, p| rounded(dy[i * n_out + p]),
            |p, j| w[p * n_in + j],
            &self.dx0,
            1.0,
        );
        (y, dx)
    }

    fn run(&self, be: &CpuBackend) -> (Vec<f32>, Vec<f32>) {
        let lw = self.w.linear();
        let mut y = vec![f32::NAN; self.m * self.w.n_out];
        be.linear_forward(&self.x, self.m, &lw, &mut y)
            .expect("forward");
        let mut dx = self.dx0.clone();
        be.linear_backward_input(&self.dy, self.m, &lw, &mut dx)
            .expect("backward");
        (y, dx)
    }
}

fn linear_cases() -> Vec<LinearCase> {
    let mut v = Vec::new();
    for (k, &(kind, shapes)) in KINDS.iter().enumerate() {
        for (s, &shape) in shapes.iter().enumerate() {
            v.push(LinearCase::new(kind, shape, (k * 100 + s) as u64));
        }
    }
    v
}

#[test]
fn bf16_linear_matches_rounded_reference_for_every_storage_level_and_thread_count() {
    let cases = linear_cases();
    let refs: Vec<_> = cases.iter().map(LinearCase::reference).collect();
    for &level in available_levels() {
        for threads in [1, 2] {
            let be = backend(level, threads, Compute::Bf16);
            for (c, (want_y, want_dx)) in cases.iter().zip(&refs) {
                let at = format!(
                    "{} level={} bf16_kernel={} threads={threads}",
                    c.name,
                    level.name(),
                    be.bf16_kernel()
                );
                let (y, dx) = c.run(&be);
                Tolerance::for_sum(c.w.n_in).assert_close(&format!("forward {at}"), &y, want_y);
                Tolerance::for_sum(c.w.n_out).assert_close(&format!("backward {at}"), &dx, want_dx);
            }
        }
    }
}

#[test]
fn bf16_linear_is_bit_identical_across_thread_counts() {
    let cases = linear_cases();
    for &level in available_levels() {
        let one = backend(level, 1, Compute::Bf16);
        let three = backend(level, 3, Compute::Bf16);
        for c in &cases {
            let ((y1, dx1), (y3, dx3)) = (c.run(&one), c.run(&three));
            assert!(
                bits_equal(&y1, &y3) && bits_equal(&dx1, &dx3),
                "{} level={} differs between 1 and 3 threads",
                c.name,
                level.name()
            );
        }
    }
}

/// Activations as a transformer's: standard normal, with a few outlier channels 20x larger.
fn activations(rows: usize, cols: usize, rng: &mut Rng) -> Vec<f32> {
    let outlier: Vec<bool> = (0..cols).map(|_| rng.below(100) == 0).collect();
    (0..rows * cols)
        .map(|i| rng.normal() * if outlier[i % cols] { 20.0 } else { 1.0 })
        .collect()
}

/// RMS relative rounding error of `v`'s nonzero values.
fn rms_rel_rounding(v: &[f32]) -> f64 {
    let (mut s, mut n) = (0f64, 0usize);
    for &x in v.iter().filter(|x| **x != 0.0) {
        s += ((rounded(x) as f64 - x as f64) / x as f64).powi(2);
        n += 1;
    }
    (s / n.max(1) as f64).sqrt()
}

/// For each output, the f32 result, the bf16 result, `Σ|x·w|` and the predicted standard
/// deviation of the bf16 error (`sqrt(Σ(x·w)²·(σx² + σw²))`, rounding errors independent).
fn compare_precisions(
    x: &[f32],
    w: &TestWeight,
    m: usize,
    level: SimdLevel,
) -> (Vec<f32>, Vec<f32>, Vec<f64>, Vec<f64>) {
    let (n_in, n_out) = (w.n_in, w.n_out);
    let run = |compute| {
        let mut y = vec![0f32; m * n_out];
        backend(level, 2, compute)
            .linear_forward(x, m, &w.linear(), &mut y)
            .expect("forward");
        y
    };
    let var = rms_rel_rounding(x).powi(2) + rms_rel_rounding(&w.decoded).powi(2);
    let (mut abs_sum, mut sigma) = (vec![0f64; m * n_out], vec![0f64; m * n_out]);
    for i in 0..m {
        for j in 0..n_out {
            let (mut s1, mut s2) = (0f64, 0f64);
            for p in 0..n_in {
                let t = x[i * n_in + p] as f64 * w.decoded[j * n_in + p] as f64;
                s1 += t.abs();
                s2 += t * t;
            }
            abs_sum[i * n_out + j] = s1;
            sigma[i * n_out + j] = (s2 * var).sqrt();
        }
    }
    (run(Compute::F32), run(Compute::Bf16), abs_sum, sigma)
}

#[test]
fn bf16_differs_from_f32_by_the_bf16_rounding_error_on_real_looking_data() {
    // SmolLM2's gate projection shape, weights ~N(0, 0.02) (as initialised and trained models
    // have), stored F32 and NF4, 64 rows of transformer-like activations.
    let (m, n_in, n_out) = (64, 576, 384);
    let mut rng = Rng::new(2024);
    let x = activations(m, n_in, &mut rng);
    let wv: Vec<f32> = (0..n_in * n_out).map(|_| 0.02 * rng.normal()).collect();
    let nf4 = Kind::Nf4 {
        block: 64,
        double_quant: true,
    };
    for kind in [Kind::F32 { misalign: 0 }, nf4] {
        let w = TestWeight::from_values(kind, wv.clone(), n_in, n_out, 1);
        for &level in available_levels() {
            let (y32, y16, abs_sum, sigma) = compare_precisions(&x, &w, m, level);
            let at = format!("{kind:?} level={}", level.name());
            let (mut z2, mut differ) = (0f64, 0usize);
            for (e, (&a, &b)) in y32.iter().zip(&y16).enumerate() {
                let diff = (a as f64 - b as f64).abs();
                // Worst case: each product off by at most 2·2⁻⁹ relative (two roundings), plus
                // both f32 accumulations.
                let bound = (2.0f64.powi(-8) + 2e-6) * abs_sum[e];
                assert!(
                    diff <= bound,
                    "{at}: output {e}: |{a} - {b}| = {diff:e} > {bound:e}"
                );
                z2 += (diff / sigma[e]).powi(2);
                differ += usize::from(a != b);
            }
            // The typical error is the predicted size: the RMS of the normalised errors is
            // about 1 (0.5 to 2 allows for the independence assumption).
            let z = (z2 / y32.len() as f64).sqrt();
            assert!((0.5..2.0).contains(&z), "{at}: RMS normalised error {z}");
            assert!(
                differ * 10 >= y32.len() * 9,
                "{at}: only {differ} of {} outputs differ from f32",
                y32.len()
            );
        }
    }
}
