//! Helpers shared by the adapter tests: a plain reference backend (f64 accumulation, f32 weights
//! only), the tiny model's geometry, the PEFT fixtures, one tolerance type, and a seeded generator.
#![allow(dead_code)]

use edgetune::adapters::{ModelDims, Site, Target};
use edgetune::backend::{Backend, LinearWeight};
use edgetune::gguf::GgmlType;
use edgetune::weights::WeightData;
use edgetune::Result;
use std::collections::HashMap;
use std::path::{Path, PathBuf};

/// Dense products by definition: the specification the fast backend is measured against.
pub struct RefBackend;

fn weight_f32(w: &LinearWeight) -> Vec<f32> {
    match &w.data {
        WeightData::Ggml {
            ty: GgmlType::F32,
            bytes,
        } => bytes
            .chunks_exact(4)
            .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect(),
        _ => panic!("RefBackend handles F32 weights only"),
    }
}

/// `c[m, n] = beta·c + Σ_p a(i, p)·b(p, j)`, accumulated in f64.
fn gemm(
    m: usize,
    n: usize,
    k: usize,
    a: impl Fn(usize, usize) -> f32,
    b: impl Fn(usize, usize) -> f32,
    c: &mut [f32],
    beta: f32,
) {
    assert_eq!(c.len(), m * n, "gemm output length");
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
            c[i * n + j] = (prev + s) as f32;
        }
    }
}

impl Backend for RefBackend {
    fn linear_forward(&self, x: &[f32], m: usize, w: &LinearWeight, y: &mut [f32]) -> Result<()> {
        let wd = weight_f32(w);
        let k = w.n_in;
        gemm(
            m,
            w.n_out,
            k,
            |i, p| x[i * k + p],
            |p, j| wd[j * k + p],
            y,
            0.0,
        );
        Ok(())
    }

    fn linear_backward_input(
        &self,
        dy: &[f32],
        m: usize,
        w: &LinearWeight,
        dx: &mut [f32],
    ) -> Result<()> {
        let wd = weight_f32(w);
        let (n_in, n_out) = (w.n_in, w.n_out);
        gemm(
            m,
            n_in,
            n_out,
            |i, p| dy[i * n_out + p],
            |p, j| wd[p * n_in + j],
            dx,
            1.0,
        );
        Ok(())
    }

    fn gemm_nt(
        &self,
        a: &[f32],
        b: &[f32],
        c: &mut [f32],
        m: usize,
        n: usize,
        k: usize,
        beta: f32,
    ) {
        gemm(m, n, k, |i, p| a[i * k + p], |p, j| b[j * k + p], c, beta);
    }

    fn gemm_nn(
        &self,
        a: &[f32],
        b: &[f32],
        c: &mut [f32],
        m: usize,
        n: usize,
        k: usize,
        beta: f32,
    ) {
        gemm(m, n, k, |i, p| a[i * k + p], |p, j| b[p * n + j], c, beta);
    }

    fn gemm_tn(
        &self,
        a: &[f32],
        b: &[f32],
        c: &mut [f32],
        m: usize,
        n: usize,
        k: usize,
        beta: f32,
    ) {
        gemm(m, n, k, |i, p| a[p * m + i], |p, j| b[p * n + j], c, beta);
    }

    fn threads(&self) -> usize {
        1
    }
}

/// Little-endian bytes of f32 values (a weight as a GGUF F32 tensor holds them).
pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// A `LinearWeight` over F32 bytes `[n_out, n_in]`.
pub fn f32_weight(bytes: &[u8], n_in: usize, n_out: usize) -> LinearWeight<'_> {
    LinearWeight {
        data: WeightData::Ggml {
            ty: GgmlType::F32,
            bytes,
        },
        n_in,
        n_out,
    }
}

/// The fixtures' tiny Llama: hidden 64, ff 160, 2 layers, 4 heads, 2 KV heads, head_dim 16, stored
/// as a GGUF `llama` file would be (Q/K rows permuted).
pub fn tiny_dims() -> ModelDims {
    ModelDims {
        n_layer: 2,
        n_embd: 64,
        n_ff: 160,
        n_head: 4,
        n_head_kv: 2,
        head_dim: 16,
        qk_permuted: true,
    }
}

pub fn crate_root() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

pub fn fixture(rel: &str) -> PathBuf {
    let p = crate_root().join("tests/fixtures/adapters").join(rel);
    assert!(
        p.exists(),
        "{} is missing: run scripts/reference/make_adapter_fixtures.py",
        p.display()
    );
    p
}

/// A tensor of a fixture file: row-major shape and f32 values.
#[derive(Clone, Debug)]
pub struct Tensor {
    pub shape: Vec<usize>,
    pub data: Vec<f32>,
}

/// Every tensor of a safetensors file (F32 only, as the fixtures are).
pub fn read_safetensors(path: &Path) -> HashMap<String, Tensor> {
    let bytes = std::fs::read(path).unwrap();
    let st = safetensors::SafeTensors::deserialize(&bytes).unwrap();
    st.iter()
        .map(|(name, t)| {
            assert_eq!(t.dtype(), safetensors::Dtype::F32, "{name}");
            let data = t
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect();
            (
                name.to_string(),
                Tensor {
                    shape: t.shape().to_vec(),
                    data,
                },
            )
        })
        .collect()
}

/// The Q/K permutation written as FORMATS.md §3.4 states it, independently of the library:
/// `W.reshape(n_head, 2, hd/2, cols).swapaxes(1, 2).reshape(rows, cols)` (Hugging Face → GGUF).
pub fn permute_reshape(w: &[f32], rows: usize, cols: usize, n_head: usize) -> Vec<f32> {
    let half = rows / n_head / 2;
    let mut out = vec![0.0; w.len()];
    // out[h][i][j][c] = w[h][j][i][c] with out dims (n_head, half, 2, cols).
    for h in 0..n_head {
        for i in 0..half {
            for j in 0..2 {
                let dst = ((h * half + i) * 2 + j) * cols;
                let src = ((h * 2 + j) * half + i) * cols;
                out[dst..dst + cols].copy_from_slice(&w[src..src + cols]);
            }
        }
    }
    out
}

/// The inverse of `permute_reshape` (GGUF → Hugging Face), by searching the forward map.
pub fn unpermute_reshape(w: &[f32], rows: usize, cols: usize, n_head: usize) -> Vec<f32> {
    let idx: Vec<f32> = (0..rows).map(|r| r as f32).collect();
    let fwd = permute_reshape(&idx, rows, 1, n_head);
    let mut out = vec![0.0; w.len()];
    for (g, &h) in fwd.iter().enumerate() {
        let h = h as usize;
        out[h * cols..(h + 1) * cols].copy_from_slice(&w[g * cols..(g + 1) * cols]);
    }
    out
}

/// Heads whose rows GGUF permutes for this target in the tiny model, if any.
pub fn permuted_heads(t: Target) -> Option<usize> {
    match t {
        Target::AttnQ => Some(4),
        Target::AttnK => Some(2),
        _ => None,
    }
}

/// Site of a fixture case key like `lora.0.q_proj`.
pub fn site_of_case(case: &str) -> Site {
    let mut parts = case.split('.');
    let _method = parts.next();
    let layer = parts.next().unwrap().parse().unwrap();
    let target = Target::from_name(parts.next().unwrap()).unwrap();
    Site::new(layer, target)
}

/// Allowed difference between a result and its reference: `|got - want| <= abs + rel·|want|`.
#[derive(Clone, Copy, Debug)]
pub struct Tolerance {
    pub rel: f64,
    pub abs: f64,
}

impl Tolerance {
    pub const fn new(rel: f64, abs: f64) -> Tolerance {
        Tolerance { rel, abs }
    }

    /// Panics naming the first element out of tolerance; returns the largest absolute difference.
    pub fn assert_close(&self, case: &str, got: &[f32], want: &[f32]) -> f64 {
        assert_eq!(got.len(), want.len(), "{case}: lengths differ");
        let mut max = 0f64;
        for (i, (&g, &w)) in got.iter().zip(want).enumerate() {
            let (g, w) = (g as f64, w as f64);
            let diff = (g - w).abs();
            let bound = self.abs + self.rel * w.abs();
            assert!(
                diff <= bound,
                "{case}: element {i}: got {g}, want {w} (diff {diff:e} > {bound:e})"
            );
            max = max.max(diff);
        }
        max
    }
}

/// SplitMix64 test data.
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
}
