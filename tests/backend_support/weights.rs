//! Test weights in every storage the backend reads: F32 (aligned or not), NF4, and ggml block
//! types in their real layout, each with what its own decoder says it holds.

use super::{bytes_at_offset, Rng};
use edgetune::backend::LinearWeight;
use edgetune::cpu::SimdLevel;
use edgetune::gguf::GgmlType;
use edgetune::quant;
use edgetune::quant::nf4::{self, Nf4Params, Nf4Tensor};
use edgetune::weights::WeightData;

/// How a test weight is stored.
#[derive(Clone, Copy, Debug)]
pub enum Kind {
    /// F32 bytes at a 4-byte boundary (used in place) or one byte off (decoded).
    F32 {
        misalign: usize,
    },
    Nf4 {
        block: usize,
        double_quant: bool,
    },
    /// Random blocks of a ggml type in its real layout, scales chosen so values stay within
    /// about [-1, 1].
    Ggml(GgmlType),
}

/// `n_blocks` random blocks of `ty`: random bytes, with every f16 scale field set to a value
/// that keeps the decoded weights within about [-1, 1] (F16/BF16: random values in [-1, 1]).
pub fn random_blocks(ty: GgmlType, n_blocks: usize, rng: &mut Rng) -> Vec<u8> {
    let f16 = |v: f32| half::f16::from_f32(v).to_le_bytes();
    match ty {
        GgmlType::F16 => return (0..n_blocks).flat_map(|_| f16(rng.f32())).collect(),
        GgmlType::BF16 => {
            return (0..n_blocks)
                .flat_map(|_| half::bf16::from_f32(rng.f32()).to_le_bytes())
                .collect()
        }
        _ => {}
    }
    // (byte offset, scale) of each f16 field of the block.
    let scales: &[(usize, f32)] = match ty {
        GgmlType::Q4_0 => &[(0, 0.1)],
        GgmlType::Q4_1 | GgmlType::Q5_1 => &[(0, 0.03), (2, -0.4)],
        GgmlType::Q8_0 => &[(0, 1.0 / 127.0)],
        GgmlType::Q4_K => &[(0, 0.001), (2, 0.001)],
        GgmlType::Q6_K => &[(208, 0.0002)],
        _ => panic!("no test layout for {ty}"),
    };
    let ts = ty.type_size();
    let mut bytes: Vec<u8> = (0..n_blocks * ts).map(|_| rng.next_u64() as u8).collect();
    for block in bytes.chunks_exact_mut(ts) {
        for &(at, scale) in scales {
            // Vary the scale a little per block so blocks are not all alike.
            let v = scale * (0.5 + 0.5 * rng.f32().abs());
            block[at..at + 2].copy_from_slice(&f16(v));
        }
    }
    bytes
}

/// The stored bytes of a weight, and what its decoder says it holds.
pub enum Stored {
    Bytes {
        buf: Vec<u8>,
        start: usize,
        ty: GgmlType,
    },
    Nf4(Nf4Tensor),
}

pub struct TestWeight {
    pub stored: Stored,
    pub decoded: Vec<f32>,
    pub n_in: usize,
    pub n_out: usize,
}

impl TestWeight {
    /// Uniform random values in [-1, 1) (ggml types: random blocks).
    pub fn new(kind: Kind, n_in: usize, n_out: usize, seed: u64) -> TestWeight {
        TestWeight::from_values(kind, Rng::new(seed).vec(n_in * n_out), n_in, n_out, seed)
    }

    /// `w` (row-major `[n_out, n_in]`) stored as `kind`; ggml types ignore `w` and store random
    /// blocks from `seed`.
    pub fn from_values(
        kind: Kind,
        w: Vec<f32>,
        n_in: usize,
        n_out: usize,
        seed: u64,
    ) -> TestWeight {
        let (stored, decoded) = match kind {
            Kind::F32 { misalign } => {
                let bytes: Vec<u8> = w.iter().flat_map(|v| v.to_le_bytes()).collect();
                let (buf, start) = bytes_at_offset(&bytes, misalign);
                (
                    Stored::Bytes {
                        buf,
                        start,
                        ty: GgmlType::F32,
                    },
                    w,
                )
            }
            Kind::Ggml(ty) => {
                let n_blocks = n_in * n_out / ty.block_size();
                let bytes = random_blocks(ty, n_blocks, &mut Rng::new(seed));
                let mut decoded = vec![0f32; n_in * n_out];
                quant::dequantize_at(SimdLevel::Scalar, ty, &bytes, &mut decoded).expect("decode");
                (
                    Stored::Bytes {
                        buf: bytes,
                        start: 0,
                        ty,
                    },
                    decoded,
                )
            }
            Kind::Nf4 {
                block,
                double_quant,
            } => {
                let params = Nf4Params {
                    block_size: block,
                    double_quant,
                    ..Nf4Params::default()
                };
                let t = nf4::quantize(&w, params).expect("nf4 quantize");
                let mut decoded = vec![0f32; w.len()];
                t.dequantize(&mut decoded).expect("nf4 dequantize");
                (Stored::Nf4(t), decoded)
            }
        };
        TestWeight {
            stored,
            decoded,
            n_in,
            n_out,
        }
    }

    pub fn linear(&self) -> LinearWeight<'_> {
        let data = match &self.stored {
            Stored::Bytes { buf, start, ty } => {
                let len = ty.row_bytes(self.n_in as u64).expect("row bytes") as usize * self.n_out;
                WeightData::Ggml {
                    ty: *ty,
                    bytes: &buf[*start..*start + len],
                }
            }
            Stored::Nf4(t) => WeightData::Nf4(t.view().expect("nf4 view")),
        };
        LinearWeight {
            data,
            n_in: self.n_in,
            n_out: self.n_out,
        }
    }
}
