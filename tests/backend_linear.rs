//! Do the CPU backend's linear layers give `x·Wᵀ` and `dx + dy·W` for every weight storage, at
//! every SIMD level and thread count? The reference decodes the whole weight with the storage's
//! own decoder (the quant modules, tested against their reference libraries) and multiplies in
//! f64. Shapes cover the matrix-vector path (m <= 4), the packed GEMM, rows that do not align with
//! NF4 blocks, and sizes that cross the packing blocks (256).

mod backend_support;

use backend_support::weights::{Kind, TestWeight};
use backend_support::{naive_gemm, Rng, Tolerance};
use edgetune::backend::cpu::CpuBackend;
use edgetune::backend::{Backend, LinearWeight};
use edgetune::cpu::available_levels;
use edgetune::gguf::GgmlType;
use edgetune::weights::WeightData;

const KINDS: [Kind; 12] = [
    Kind::F32 { misalign: 0 },
    Kind::F32 { misalign: 1 },
    Kind::Nf4 {
        block: 64,
        double_quant: true,
    },
    Kind::Nf4 {
        block: 32,
        double_quant: false,
    },
    Kind::Ggml(GgmlType::F16),
    Kind::Ggml(GgmlType::BF16),
    Kind::Ggml(GgmlType::Q4_0),
    Kind::Ggml(GgmlType::Q4_1),
    Kind::Ggml(GgmlType::Q5_1),
    Kind::Ggml(GgmlType::Q8_0),
    Kind::Ggml(GgmlType::Q4_K),
    Kind::Ggml(GgmlType::Q6_K),
];

/// `(m, n_in, n_out)` for weights of any row length.
const SHAPES: [(usize, usize, usize); 9] = [
    (1, 67, 13),
    (2, 300, 70),
    (4, 37, 300),
    (5, 67, 70),
    (17, 300, 13),
    (33, 7, 300),
    (29, 576, 192),
    (3, 1, 1),
    (20, 1, 9),
];

/// Shapes for 32-element blocks.
const SHAPES_32: [(usize, usize, usize); 7] = [
    (1, 96, 13),
    (2, 288, 70),
    (4, 32, 300),
    (5, 64, 70),
    (17, 288, 13),
    (33, 32, 300),
    (29, 576, 192),
];
/// Shapes for 256-element super-blocks.
const SHAPES_256: [(usize, usize, usize); 5] = [
    (1, 256, 13),
    (3, 512, 70),
    (5, 256, 300),
    (17, 512, 13),
    (29, 768, 40),
];

fn shapes(kind: Kind) -> &'static [(usize, usize, usize)] {
    match kind {
        Kind::Ggml(ty) if ty.block_size() == 256 => &SHAPES_256,
        Kind::Ggml(ty) if ty.block_size() == 32 => &SHAPES_32,
        _ => &SHAPES,
    }
}

/// One layer's inputs and f64 references for forward and backward.
struct Case {
    name: String,
    m: usize,
    w: TestWeight,
    x: Vec<f32>,
    dy: Vec<f32>,
    dx0: Vec<f32>,
    want_y: Vec<f64>,
    want_dx: Vec<f64>,
}

impl Case {
    fn new(kind: Kind, (m, n_in, n_out): (usize, usize, usize), seed: u64) -> Case {
        let w = TestWeight::new(kind, n_in, n_out, seed);
        let mut rng = Rng::new(seed + 1);
        let (x, dy, dx0) = (rng.vec(m * n_in), rng.vec(m * n_out), rng.vec(m * n_in));
        let wd = &w.decoded;
        let want_y = naive_gemm(
            m,
            n_out,
            n_in,
            |i, p| x[i * n_in + p],
            |p, j| wd[j * n_in + p],
            &[],
            0.0,
        );
        let want_dx = naive_gemm(
            m,
            n_in,
            n_out,
            |i, p| dy[i * n_out + p],
            |p, j| wd[p * n_in + j],
            &dx0,
            1.0,
        );
        let name = format!("{kind:?} m={m} n_in={n_in} n_out={n_out}");
        Case {
            name,
            m,
            w,
            x,
            dy,
            dx0,
            want_y,
            want_dx,
        }
    }

    fn forward(&self, be: &CpuBackend) -> Vec<f32> {
        let mut y = vec![f32::NAN; self.m * self.w.n_out];
        be.linear_forward(&self.x, self.m, &self.w.linear(), &mut y)
            .expect("forward");
        y
    }

    fn backward(&self, be: &CpuBackend) -> Vec<f32> {
        let mut dx = self.dx0.clone();
        be.linear_backward_input(&self.dy, self.m, &self.w.linear(), &mut dx)
            .expect("backward");
        dx
    }
}

fn cases() -> Vec<Case> {
    let mut v = Vec::new();
    for (k, &kind) in KINDS.iter().enumerate() {
        for (s, &shape) in shapes(kind).iter().enumerate() {
            v.push(Case::new(kind, shape, (k * 100 + s) as u64));
        }
    }
    v
}

#[test]
fn linear_matches_decoded_weight_matmul_at_every_level_and_thread_count() {
    let cases = cases();
    for &level in available_levels() {
        for threads in [1, 2] {
            let be = CpuBackend::with_level(threads, level).expect("backend");
            for c in &cases {
                let at = format!("{} level={} threads={threads}", c.name, level.name());
                Tolerance::for_sum(c.w.n_in).assert_close(
                    &format!("forward {at}"),
                    &c.forward(&be),
                    &c.want_y,
                );
                Tolerance::for_sum(c.w.n_out).assert_close(
                    &format!("backward {at}"),
                    &c.backward(&be),
                    &c.want_dx,
                );
            }
        }
    }
}

#[test]
fn linear_is_bit_identical_across_thread_counts() {
    let cases = cases();
    for &level in available_levels() {
        let backends: Vec<_> = [1, 2, 3]
            .into_iter()
            .map(|t| CpuBackend::with_level(t, level).unwrap())
            .collect();
        for c in &cases {
            let (y1, dx1) = (c.forward(&backends[0]), c.backward(&backends[0]));
            for be in &backends[1..] {
                let same =
                    |a: &[f32], b: &[f32]| a.iter().zip(b).all(|(x, y)| x.to_bits() == y.to_bits());
                let at = format!("{} level={} threads={}", c.name, level.name(), be.threads());
                assert!(
                    same(&c.forward(be), &y1),
                    "forward {at} differs from 1 thread"
                );
                assert!(
                    same(&c.backward(be), &dx1),
                    "backward {at} differs from 1 thread"
                );
            }
        }
    }
}

#[test]
fn linear_rejects_inconsistent_shapes_with_the_values_in_the_message() {
    let be = CpuBackend::new(2).unwrap();
    let w = TestWeight::new(Kind::F32 { misalign: 0 }, 8, 3, 1);
    let lw = w.linear();
    let mut y = vec![0.0; 6];
    let err = be
        .linear_forward(&[0.0; 15], 2, &lw, &mut y)
        .unwrap_err()
        .to_string();
    assert!(err.contains("x has 15 elements, expected 2x8"), "{err}");
    let err = be
        .linear_forward(&[0.0; 16], 2, &lw, &mut y[..5])
        .unwrap_err()
        .to_string();
    assert!(err.contains("y has 5 elements, expected 2x3"), "{err}");
    let err = be
        .linear_backward_input(&[0.0; 6], 2, &lw, &mut [0.0; 15])
        .unwrap_err()
        .to_string();
    assert!(err.contains("dx has 15 elements, expected 2x8"), "{err}");

    // The byte view must match the shape exactly, and the row length the block size.
    let bytes = vec![0u8; 4 * 8 * 3];
    let short = LinearWeight {
        data: WeightData::Ggml {
            ty: GgmlType::F32,
            bytes: &bytes[..95],
        },
        n_in: 8,
        n_out: 3,
    };
    let err = be
        .linear_forward(&[0.0; 16], 2, &short, &mut y)
        .unwrap_err()
        .to_string();
    assert!(err.contains("needs 32x3 bytes, the view has 95"), "{err}");
    let q8 = LinearWeight {
        data: WeightData::Ggml {
            ty: GgmlType::Q8_0,
            bytes: &bytes,
        },
        n_in: 33,
        n_out: 1,
    };
    let err = be
        .linear_forward(&[0.0; 66], 2, &q8, &mut y[..2])
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("n_in 33 is not a multiple of the Q8_0 block size 32"),
        "{err}"
    );

    // Empty products: y = 0, dx unchanged.
    let none = LinearWeight {
        data: WeightData::Ggml {
            ty: GgmlType::F32,
            bytes: &[],
        },
        n_in: 0,
        n_out: 3,
    };
    for m in [1, 20] {
        let mut y = vec![f32::NAN; m * 3];
        be.linear_forward(&[], m, &none, &mut y).unwrap();
        assert_eq!(y, vec![0.0; m * 3]);
        let none_out = LinearWeight {
            data: WeightData::Ggml {
                ty: GgmlType::F32,
                bytes: &[],
            },
            n_in: 3,
            n_out: 0,
        };
        let mut dx = vec![1.5; m * 3];
        be.linear_backward_input(&[], m, &none_out, &mut dx)
            .unwrap();
        assert_eq!(dx, vec![1.5; m * 3]);
        be.linear_forward(&vec![0.0; m * 3], m, &none_out, &mut [])
            .unwrap();
    }

    // An NF4 view of a different element count.
    let w = TestWeight::new(
        Kind::Nf4 {
            block: 64,
            double_quant: true,
        },
        8,
        3,
        1,
    );
    let wrong = LinearWeight {
        n_in: 4,
        ..w.linear()
    };
    let err = be
        .linear_forward(&[0.0; 8], 2, &wrong, &mut y)
        .unwrap_err()
        .to_string();
    assert!(err.contains("needs 3x4 elements, the view has 24"), "{err}");
}

/// Real weights from the model files (mapped, never copied): SmolLM2's Q4_1 attention and MLP
/// projections, Gemma 3's Q4_K and Q6_K ones; forward and backward through the GEMM (m = 7) and
/// matrix-vector (m = 1) paths against the whole weight decoded by `quant::dequantize`.
#[test]
fn linear_through_real_model_weights_matches_decoded_matmul() {
    use edgetune::gguf::GgufFile;
    use edgetune::weights::Weights;
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR"));
    let cases = [
        ("SmolLM2-135M-Instruct.Q4_1.gguf", "blk.0.attn_q.weight"),
        ("SmolLM2-135M-Instruct.Q4_1.gguf", "blk.3.ffn_down.weight"),
        ("gemma-3-270m-q4_k_m.gguf", "blk.0.attn_output.weight"),
        ("gemma-3-270m-q4_k_m.gguf", "blk.0.ffn_down.weight"),
    ];
    let be = CpuBackend::new(2).unwrap();
    for (model, name) in cases {
        let path = root.join("models").join(model);
        assert!(
            path.exists(),
            "{} is missing: run scripts/fetch-models.sh",
            path.display()
        );
        let file = GgufFile::open(&path).unwrap();
        let weights = Weights::new(&file).unwrap();
        let info = weights
            .get(name)
            .unwrap_or_else(|| panic!("{model}: no tensor {name}"));
        let (n_in, n_out) = (info.ne[0] as usize, info.ne[1] as usize);
        let decoded = weights.dequantize(info).unwrap();
        let lw = LinearWeight {
            data: weights.data(info).unwrap(),
            n_in,
            n_out,
        };
        for m in [1, 7] {
            let mut rng = Rng::new(m as u64);
            let (x, dy) = (rng.vec(m * n_in), rng.vec(m * n_out));
            let at = format!("{model} {name} ({}) m={m}", info.storage.name());
            let mut y = vec![0f32; m * n_out];
            be.linear_forward(&x, m, &lw, &mut y).unwrap();
            let want = naive_gemm(
                m,
                n_out,
                n_in,
                |i, p| x[i * n_in + p],
                |p, j| decoded[j * n_in + p],
                &[],
                0.0,
            );
            // Real weights are not bounded by 1: scale the absolute tolerance by the largest one.
            let wmax = decoded.iter().fold(0f32, |a, &v| a.max(v.abs())) as f64;
            let tol = |k: usize| Tolerance {
                rel: 1e-5,
                abs: Tolerance::for_sum(k).abs * wmax.max(1.0),
            };
            tol(n_in).assert_close(&format!("forward {at}"), &y, &want);
            let mut dx = vec![0f32; m * n_in];
            be.linear_backward_input(&dy, m, &lw, &mut dx).unwrap();
            let want = naive_gemm(
                m,
                n_in,
                n_out,
                |i, p| dy[i * n_out + p],
                |p, j| decoded[p * n_in + j],
                &[],
                0.0,
            );
            tol(n_out).assert_close(&format!("backward {at}"), &dx, &want);
        }
    }
}
