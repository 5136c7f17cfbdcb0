//! Helpers shared by the model tests: a naive f64 reference backend, a seeded generator, f32
//! weights as zero-copy-style views, `.npy` fixture reading and fixture paths.
#![allow(dead_code)]

use edgetune::backend::{Backend, LinearWeight};
use edgetune::gguf::GgmlType;
use edgetune::weights::WeightData;
use edgetune::Result;
use std::path::PathBuf;

/// Row `o` of a weight as f32 (F32 read directly, other ggml types through `quant`).
fn weight_rows(w: &LinearWeight) -> Result<Vec<f32>> {
    match &w.data {
        WeightData::Ggml {
            ty: GgmlType::F32,
            bytes,
        } => Ok(bytes
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect()),
        WeightData::Ggml { ty, bytes } => {
            let mut out = vec![0f32; w.n_in * w.n_out];
            edgetune::quant::dequantize(*ty, bytes, &mut out)?;
            Ok(out)
        }
        WeightData::Nf4(v) => {
            let mut out = vec![0f32; w.n_in * w.n_out];
            v.dequantize(&mut out)?;
            Ok(out)
        }
    }
}

/// Matrix products as plain loops accumulated in f64: the reference every result is held to.
pub struct NaiveBackend;

impl Backend for NaiveBackend {
    fn linear_forward(&self, x: &[f32], m: usize, w: &LinearWeight, y: &mut [f32]) -> Result<()> {
        let wr = weight_rows(w)?;
        assert_eq!(x.len(), m * w.n_in);
        assert_eq!(y.len(), m * w.n_out);
        for i in 0..m {
            let xi = &x[i * w.n_in..(i + 1) * w.n_in];
            for o in 0..w.n_out {
                let row = &wr[o * w.n_in..(o + 1) * w.n_in];
                y[i * w.n_out + o] = xi
                    .iter()
                    .zip(row)
                    .map(|(&a, &b)| a as f64 * b as f64)
                    .sum::<f64>() as f32;
            }
        }
        Ok(())
    }

    fn linear_backward_input(
        &self,
        dy: &[f32],
        m: usize,
        w: &LinearWeight,
        dx: &mut [f32],
    ) -> Result<()> {
        let wr = weight_rows(w)?;
        assert_eq!(dy.len(), m * w.n_out);
        assert_eq!(dx.len(), m * w.n_in);
        for i in 0..m {
            for k in 0..w.n_in {
                let s: f64 = (0..w.n_out)
                    .map(|o| dy[i * w.n_out + o] as f64 * wr[o * w.n_in + k] as f64)
                    .sum();
                dx[i * w.n_in + k] += s as f32;
            }
        }
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
        for i in 0..m {
            for j in 0..n {
                let s: f64 = (0..k)
                    .map(|p| a[i * k + p] as f64 * b[j * k + p] as f64)
                    .sum();
                // BLAS convention: beta = 0 does not read c (it may hold anything).
                let prev = if beta == 0.0 {
                    0.0
                } else {
                    beta * c[i * n + j]
                };
                c[i * n + j] = prev + s as f32;
            }
        }
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
        for i in 0..m {
            for j in 0..n {
                let s: f64 = (0..k)
                    .map(|p| a[i * k + p] as f64 * b[p * n + j] as f64)
                    .sum();
                // BLAS convention: beta = 0 does not read c (it may hold anything).
                let prev = if beta == 0.0 {
                    0.0
                } else {
                    beta * c[i * n + j]
                };
                c[i * n + j] = prev + s as f32;
            }
        }
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
        for i in 0..m {
            for j in 0..n {
                let s: f64 = (0..k)
                    .map(|p| a[p * m + i] as f64 * b[p * n + j] as f64)
                    .sum();
                // BLAS convention: beta = 0 does not read c (it may hold anything).
                let prev = if beta == 0.0 {
                    0.0
                } else {
                    beta * c[i * n + j]
                };
                c[i * n + j] = prev + s as f32;
            }
        }
    }

    fn threads(&self) -> usize {
        1
    }
}

/// SplitMix64 test data.
pub struct TestRng(u64);

impl TestRng {
    pub fn new(seed: u64) -> TestRng {
        TestRng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [lo, hi).
    pub fn uniform(&mut self, lo: f32, hi: f32) -> f32 {
        let u = (self.next_u64() >> 40) as f32 / (1u64 << 24) as f32;
        lo + (hi - lo) * u
    }

    pub fn vec(&mut self, n: usize, scale: f32) -> Vec<f32> {
        (0..n).map(|_| self.uniform(-scale, scale)).collect()
    }
}

/// Little-endian bytes of f32 values (the layout of an F32 GGUF tensor).
pub fn f32_bytes(v: &[f32]) -> Vec<u8> {
    v.iter().flat_map(|x| x.to_le_bytes()).collect()
}

/// An F32 weight `[n_out, n_in]` over `bytes`.
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

pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// A committed fixture; panics (fails the test) naming the script that makes it when missing.
pub fn fixture(rel: &str) -> PathBuf {
    let p = repo_root().join("tests/fixtures/model").join(rel);
    assert!(
        p.exists(),
        "missing fixture {} (tiny models: scripts/make_tiny_models.py; SmolLM2: scripts/reference/make_model_fixtures.py)",
        p.display()
    );
    p
}

/// A real model under models/; panics (fails the test) naming the fetch script when missing.
pub fn model_path(name: &str) -> PathBuf {
    let p = repo_root().join("models").join(name);
    assert!(
        p.exists(),
        "missing model {} (run: bash scripts/fetch-models.sh)",
        p.display()
    );
    p
}

/// A parsed `.npy` file: shape and values (f4, i4 or i8 little-endian, C order).
pub struct Npy {
    pub shape: Vec<usize>,
    pub f32: Vec<f32>,
    pub i64: Vec<i64>,
}

pub fn read_npy(path: &std::path::Path) -> Npy {
    let bytes = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(
        &bytes[..6],
        b"\x93NUMPY",
        "{}: not an npy file",
        path.display()
    );
    let (hlen, hstart) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        _ => (
            u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
            12,
        ),
    };
    let header = std::str::from_utf8(&bytes[hstart..hstart + hlen]).expect("npy header is ASCII");
    assert!(
        header.contains("'fortran_order': False"),
        "{}: Fortran order",
        path.display()
    );
    let descr = header
        .split("'descr': '")
        .nth(1)
        .and_then(|s| s.split('\'').next())
        .expect("npy descr");
    let shape_str = header
        .split("'shape': (")
        .nth(1)
        .and_then(|s| s.split(')').next())
        .expect("npy shape");
    let shape: Vec<usize> = shape_str
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse().expect("npy dim"))
        .collect();
    let data = &bytes[hstart + hlen..];
    let n: usize = shape.iter().product();
    let mut out = Npy {
        shape,
        f32: Vec::new(),
        i64: Vec::new(),
    };
    match descr {
        "<f4" => {
            out.f32 = data
                .chunks_exact(4)
                .take(n)
                .map(|b| f32::from_le_bytes(b.try_into().unwrap()))
                .collect()
        }
        "<i4" => {
            out.i64 = data
                .chunks_exact(4)
                .take(n)
                .map(|b| i32::from_le_bytes(b.try_into().unwrap()) as i64)
                .collect()
        }
        "<i8" => {
            out.i64 = data
                .chunks_exact(8)
                .take(n)
                .map(|b| i64::from_le_bytes(b.try_into().unwrap()))
                .collect()
        }
        d => panic!("{}: unsupported npy dtype {d}", path.display()),
    }
    assert_eq!(
        out.f32.len().max(out.i64.len()),
        n,
        "{}: truncated data",
        path.display()
    );
    out
}
