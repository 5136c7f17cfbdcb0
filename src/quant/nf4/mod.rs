//! NF4 (bitsandbytes' 4-bit NormalFloat) with optional double quantization, reproducing
//! bitsandbytes 0.50.2 on CPU bit for bit (FORMATS.md Part II §1; docs/nf4-details.md).
//!
//! A tensor is flattened row-major and cut into blocks of `block_size` consecutive values (the
//! last may be partial). Each block stores its absmax; each value the index of the nearest NF4
//! level of `x / absmax`, two per byte, first element in the high nibble (odd tensors are padded
//! with the code of 0.0). Double quantization stores the absmax vector as u8 codes of the signed
//! 8-bit dynamic map: `absmax - offset` in blocks of 256 with one f32 absmax2 per block, and the
//! f32 `offset = mean(absmax)`.
//!
//! [`quantize`] makes an owned [`Nf4Tensor`]; [`Nf4View`] reads the same data from borrowed byte
//! slices (a memory map: f32 arrays may be unaligned there, so they are read little-endian) and
//! decodes all of it or any element range, with SIMD chosen at run time.

#![deny(unsafe_op_in_unsafe_fn)]

mod decode;
mod encode;
mod torch_sum;

pub use torch_sum::{torch_mean_f32, torch_sum_f32};

use super::dynamic8::{self, CodeMap, Rounding};
use crate::cpu::{available_levels, simd_level, SimdLevel};
use crate::error::{Error, Result};
use encode::Scaling;

/// The 16 NF4 levels as f32 bit patterns (`get_4bit_type("nf4")`), ascending: index order is
/// value order.
pub const NF4_BITS: [u32; 16] = [
    0xbf800000, 0xbf3239b1, 0xbf066b30, 0xbeca32a0, 0xbe91a24d, 0xbe3d353f, 0xbdba7871, 0x00000000,
    0x3da2faff, 0x3e24cae3, 0x3e7c04dd, 0x3ead033a, 0x3ee1a4b8, 0x3f1007ab, 0x3f3913b3, 0x3f800000,
];

/// bitsandbytes' default block size.
pub const DEFAULT_BLOCK_SIZE: usize = 64;
/// Block size of the double-quantized absmax (bitsandbytes' `nested_blocksize`).
pub const DQ_BLOCK_SIZE: usize = 256;

/// The NF4 levels as f32.
pub fn nf4_values() -> [f32; 16] {
    NF4_BITS.map(f32::from_bits)
}

/// The 15 decision thresholds `(v[i] + v[i+1]) / 2`, computed in f32 as bitsandbytes does.
pub fn nf4_midpoints() -> [f32; 15] {
    let v = nf4_values();
    std::array::from_fn(|i| (v[i] + v[i + 1]) / 2.0)
}

/// Block sizes bitsandbytes accepts: powers of two from 32 to 4096.
pub fn check_block_size(block_size: usize) -> Result<()> {
    if block_size.is_power_of_two() && (32..=4096).contains(&block_size) {
        Ok(())
    } else {
        Err(Error::InvalidArgument(format!(
            "NF4 block size {block_size} is not a power of two in 32..=4096"
        )))
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Nf4Params {
    /// Values per absmax block: a power of two in 32..=4096.
    pub block_size: usize,
    /// Store the absmax vector as 8-bit codes (QLoRA's `bnb_4bit_use_double_quant`).
    pub double_quant: bool,
    /// How the double-quantized absmax is rounded: `Nearest` is bitsandbytes' reference rule,
    /// `BnbCpuTable` what bitsandbytes 0.50.2 computes on CPU (see [`dynamic8`]).
    pub absmax_rounding: Rounding,
}

impl Default for Nf4Params {
    /// Block 64 with double quantization (QLoRA's setting), nearest rounding.
    fn default() -> Self {
        Nf4Params {
            block_size: DEFAULT_BLOCK_SIZE,
            double_quant: true,
            absmax_rounding: Rounding::Nearest,
        }
    }
}

/// Per-block scales of an owned NF4 tensor.
#[derive(Clone, Debug, PartialEq)]
pub enum Nf4Scales {
    /// One f32 absmax per block.
    Absmax(Vec<f32>),
    /// Double quantization: block `i`'s absmax is
    /// `signed_map[q[i]] * absmax2[i / 256] + offset` (f32, in that order).
    DoubleQuant {
        q: Vec<u8>,
        absmax2: Vec<f32>,
        offset: f32,
    },
}

/// An NF4 tensor that owns its data.
#[derive(Clone, Debug, PartialEq)]
pub struct Nf4Tensor {
    /// `ceil(n / 2)` bytes, element 2k in the high nibble of byte k.
    pub codes: Vec<u8>,
    pub scales: Nf4Scales,
    pub block_size: usize,
    pub n_elements: usize,
}

impl Nf4Tensor {
    pub fn n_blocks(&self) -> usize {
        self.n_elements.div_ceil(self.block_size)
    }

    /// A borrowed view of this tensor (validated, so it can be decoded).
    pub fn view(&self) -> Result<Nf4View<'_>> {
        let scales = match &self.scales {
            Nf4Scales::Absmax(a) => Nf4ScalesView::Absmax(F32Slice::Native(a)),
            Nf4Scales::DoubleQuant { q, absmax2, offset } => Nf4ScalesView::DoubleQuant {
                q,
                absmax2: F32Slice::Native(absmax2),
                offset: *offset,
            },
        };
        Nf4View::new(&self.codes, scales, self.block_size, self.n_elements)
    }

    /// Decodes the whole tensor into `dst` (`dst.len() == n_elements`).
    pub fn dequantize(&self, dst: &mut [f32]) -> Result<()> {
        self.view()?.dequantize(dst)
    }
}

/// Quantizes `src` (a flattened row-major tensor) to NF4 exactly as bitsandbytes 0.50.2 does on
/// CPU (`quantize_4bit(quant_type="nf4")`, which runs its pure-PyTorch kernel there):
/// - absmax per block; full blocks are scaled by `x * (1 / max(absmax, 1e-38))`, the last,
///   partial block by `x / max(absmax, 1e-38)` and stores that clamped absmax;
/// - code = number of NF4 midpoints strictly below the clamped scaled value (ties -> lower);
/// - double quantization: `offset = torch_mean_f32(absmax)`, then
///   [`dynamic8::quantize_blockwise_with`] of `absmax - offset` with the signed map, blocks of 256.
///
/// Non-finite input is an error (bitsandbytes would put NaN into the block's absmax).
pub fn quantize(src: &[f32], params: Nf4Params) -> Result<Nf4Tensor> {
    quantize_at(simd_level(), src, params)
}

/// [`quantize`] with an explicit SIMD level (tests compare every level with `Scalar`).
pub fn quantize_at(level: SimdLevel, src: &[f32], params: Nf4Params) -> Result<Nf4Tensor> {
    check_level(level)?;
    check_block_size(params.block_size)?;
    let bs = params.block_size;
    let n = src.len();
    let mids = nf4_midpoints();
    let mut codes = vec![0u8; n.div_ceil(2)];
    let mut absmax = vec![0f32; n.div_ceil(bs)];
    // Blocks start at even elements (block sizes are even), so block b owns bytes b*bs/2...
    let blocks = src.chunks(bs).zip(codes.chunks_mut(bs / 2));
    for (b, ((x, out), a)) in blocks.zip(absmax.iter_mut()).enumerate() {
        let m = dynamic8::max_abs(x, b * bs, "NF4 quantization")?;
        let scaling = if x.len() == bs {
            *a = m;
            Scaling::MulBy(1.0 / m.max(dynamic8::MIN_ABSMAX))
        } else {
            *a = m.max(dynamic8::MIN_ABSMAX);
            Scaling::DivBy(*a)
        };
        encode::encode_block(level, &mids, x, scaling, out);
    }
    let scales = if params.double_quant {
        double_quantize(&absmax, params.absmax_rounding)?
    } else {
        Nf4Scales::Absmax(absmax)
    };
    Ok(Nf4Tensor {
        codes,
        scales,
        block_size: bs,
        n_elements: n,
    })
}

/// bitsandbytes' `compress_statistics=True` step. An empty tensor gets offset 0.
fn double_quantize(absmax: &[f32], rounding: Rounding) -> Result<Nf4Scales> {
    let offset = if absmax.is_empty() {
        0.0
    } else {
        torch_mean_f32(absmax)
    };
    let centred: Vec<f32> = absmax.iter().map(|&a| a - offset).collect();
    let mut q = vec![0u8; absmax.len()];
    let mut absmax2 = vec![0f32; absmax.len().div_ceil(DQ_BLOCK_SIZE)];
    let map = CodeMap::signed();
    dynamic8::quantize_blockwise_with(
        &centred,
        map,
        DQ_BLOCK_SIZE,
        rounding,
        &mut q,
        &mut absmax2,
    )?;
    Ok(Nf4Scales::DoubleQuant { q, absmax2, offset })
}

/// An f32 array borrowed either as f32 or as little-endian bytes (possibly unaligned, e.g. in a
/// memory-mapped file).
#[derive(Clone, Copy, Debug)]
pub enum F32Slice<'a> {
    Native(&'a [f32]),
    LeBytes(&'a [u8]),
}

impl F32Slice<'_> {
    /// Number of f32 values (a byte slice whose length is not a multiple of 4 is rejected by
    /// [`Nf4View::new`]).
    pub fn len(&self) -> usize {
        match self {
            F32Slice::Native(v) => v.len(),
            F32Slice::LeBytes(b) => b.len() / 4,
        }
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Value `i`; `i < len()`.
    #[inline]
    fn get(&self, i: usize) -> f32 {
        match self {
            F32Slice::Native(v) => v[i],
            F32Slice::LeBytes(b) => {
                let mut le = [0u8; 4];
                le.copy_from_slice(&b[4 * i..4 * i + 4]);
                f32::from_le_bytes(le)
            }
        }
    }
}

/// Borrowed scales; see [`Nf4Scales`].
#[derive(Clone, Copy, Debug)]
pub enum Nf4ScalesView<'a> {
    Absmax(F32Slice<'a>),
    DoubleQuant {
        q: &'a [u8],
        absmax2: F32Slice<'a>,
        offset: f32,
    },
}

/// A validated, borrowed NF4 tensor.
#[derive(Clone, Copy, Debug)]
pub struct Nf4View<'a> {
    codes: &'a [u8],
    scales: Nf4ScalesView<'a>,
    block_size: usize,
    n_elements: usize,
}

impl<'a> Nf4View<'a> {
    /// Checks every length against `n_elements` and `block_size`; errors name the field, the
    /// expected and the actual value.
    pub fn new(
        codes: &'a [u8],
        scales: Nf4ScalesView<'a>,
        block_size: usize,
        n_elements: usize,
    ) -> Result<Self> {
        check_block_size(block_size)?;
        let want = |field: &str, got: usize, expected: usize| {
            if got == expected {
                Ok(())
            } else {
                Err(Error::Quant(format!(
                    "NF4 tensor of {n_elements} elements in blocks of {block_size}: {field} has \
                     {got} entries, expected {expected}"
                )))
            }
        };
        let whole_f32s = |field: &str, s: &F32Slice| match s {
            F32Slice::LeBytes(b) if b.len() % 4 != 0 => Err(Error::Quant(format!(
                "NF4 {field}: {} bytes is not a whole number of f32",
                b.len()
            ))),
            _ => Ok(()),
        };
        let n_blocks = n_elements.div_ceil(block_size);
        want("codes (bytes)", codes.len(), n_elements.div_ceil(2))?;
        match &scales {
            Nf4ScalesView::Absmax(a) => {
                whole_f32s("absmax", a)?;
                want("absmax", a.len(), n_blocks)?;
            }
            Nf4ScalesView::DoubleQuant { q, absmax2, offset } => {
                whole_f32s("absmax2", absmax2)?;
                want("quantized absmax", q.len(), n_blocks)?;
                want("absmax2", absmax2.len(), n_blocks.div_ceil(DQ_BLOCK_SIZE))?;
                if !offset.is_finite() {
                    return Err(Error::Quant(format!("NF4 double-quant offset is {offset}")));
                }
            }
        }
        Ok(Nf4View {
            codes,
            scales,
            block_size,
            n_elements,
        })
    }

    pub fn n_elements(&self) -> usize {
        self.n_elements
    }

    pub fn block_size(&self) -> usize {
        self.block_size
    }

    pub fn n_blocks(&self) -> usize {
        self.n_elements.div_ceil(self.block_size)
    }

    pub fn codes(&self) -> &'a [u8] {
        self.codes
    }

    pub fn scales(&self) -> Nf4ScalesView<'a> {
        self.scales
    }

    /// The absmax of block `i` as decoding uses it (for double quantization
    /// `signed_map[q[i]] * absmax2[i / 256] + offset`, two f32 roundings, as bitsandbytes).
    pub fn block_absmax(&self, i: usize) -> Result<f32> {
        if i >= self.n_blocks() {
            return Err(Error::InvalidArgument(format!(
                "NF4 block {i} out of range: the tensor has {} blocks",
                self.n_blocks()
            )));
        }
        Ok(self.absmax_unchecked(i))
    }

    /// `i < n_blocks()`, guaranteed by the lengths checked in [`Nf4View::new`].
    #[inline]
    fn absmax_unchecked(&self, i: usize) -> f32 {
        match &self.scales {
            Nf4ScalesView::Absmax(a) => a.get(i),
            Nf4ScalesView::DoubleQuant { q, absmax2, offset } => {
                let scaled = CodeMap::signed().value(q[i]) * absmax2.get(i / DQ_BLOCK_SIZE);
                scaled + *offset
            }
        }
    }

    /// The absmax of blocks `first..first + out.len()` (in range, as for `absmax_unchecked`),
    /// with the variant matched once rather than per block.
    fn fill_absmax(&self, first: usize, out: &mut [f32]) {
        let range = first..first + out.len();
        match &self.scales {
            Nf4ScalesView::Absmax(F32Slice::Native(a)) => out.copy_from_slice(&a[range]),
            Nf4ScalesView::Absmax(a) => {
                for (o, i) in out.iter_mut().zip(range) {
                    *o = a.get(i);
                }
            }
            Nf4ScalesView::DoubleQuant { q, absmax2, offset } => {
                let map = CodeMap::signed().values();
                for (o, i) in out.iter_mut().zip(range) {
                    let scaled = map[q[i] as usize] * absmax2.get(i / DQ_BLOCK_SIZE);
                    *o = scaled + *offset;
                }
            }
        }
    }

    /// Every block's absmax (see [`Nf4View::block_absmax`]) into `dst` (`n_blocks()` values).
    pub fn block_absmaxes(&self, dst: &mut [f32]) -> Result<()> {
        if dst.len() != self.n_blocks() {
            return Err(Error::InvalidArgument(format!(
                "NF4 absmax output holds {} values, the tensor has {} blocks",
                dst.len(),
                self.n_blocks()
            )));
        }
        self.fill_absmax(0, dst);
        Ok(())
    }

    /// Decodes the whole tensor: `dst[i] = nf4[code_i] * absmax[i / block_size]` (f32).
    pub fn dequantize(&self, dst: &mut [f32]) -> Result<()> {
        if dst.len() != self.n_elements {
            return Err(Error::InvalidArgument(format!(
                "NF4 dequantize: output holds {} values, the tensor has {}",
                dst.len(),
                self.n_elements
            )));
        }
        self.dequantize_range(0, dst)
    }

    /// Decodes elements `start .. start + dst.len()` (any range: it need not align with blocks
    /// or bytes).
    pub fn dequantize_range(&self, start: usize, dst: &mut [f32]) -> Result<()> {
        self.dequantize_range_at(simd_level(), start, dst)
    }

    /// [`Nf4View::dequantize_range`] with an explicit SIMD level.
    pub fn dequantize_range_at(
        &self,
        level: SimdLevel,
        start: usize,
        dst: &mut [f32],
    ) -> Result<()> {
        check_level(level)?;
        let end = start
            .checked_add(dst.len())
            .filter(|&e| e <= self.n_elements)
            .ok_or_else(|| {
                Error::InvalidArgument(format!(
                    "NF4 range {start}..{start}+{} is outside the tensor's {} elements",
                    dst.len(),
                    self.n_elements
                ))
            })?;
        let table = nf4_values();
        let bs = self.block_size;
        let mut pos = start;
        // A head up to the first block boundary, whole blocks in batches (one kernel call per
        // batch, scales computed first), then a tail.
        if !pos.is_multiple_of(bs) && pos < end {
            let seg_end = end.min(pos.next_multiple_of(bs));
            let scale = self.absmax_unchecked(pos / bs);
            self.decode_segment(
                level,
                &table,
                pos,
                seg_end,
                scale,
                &mut dst[..seg_end - pos],
            );
            pos = seg_end;
        }
        const BATCH: usize = 64;
        let mut scales = [0f32; BATCH];
        while end - pos >= bs {
            let blocks = ((end - pos) / bs).min(BATCH);
            self.fill_absmax(pos / bs, &mut scales[..blocks]);
            let bytes = &self.codes[pos / 2..(pos + blocks * bs) / 2];
            let out = &mut dst[pos - start..pos - start + blocks * bs];
            decode::decode_blocks(level, &table, bytes, &scales[..blocks], bs / 2, out);
            pos += blocks * bs;
        }
        if pos < end {
            let scale = self.absmax_unchecked(pos / bs);
            self.decode_segment(level, &table, pos, end, scale, &mut dst[pos - start..]);
        }
        Ok(())
    }

    /// Elements `e0..e1` of one block: an odd first element is the low nibble of its byte, an
    /// odd last one the high nibble of its byte; whole bytes go to the SIMD kernel.
    fn decode_segment(
        &self,
        level: SimdLevel,
        table: &[f32; 16],
        e0: usize,
        e1: usize,
        scale: f32,
        out: &mut [f32],
    ) {
        let (mut e, mut o) = (e0, 0);
        if e % 2 == 1 {
            out[0] = table[(self.codes[e / 2] & 15) as usize] * scale;
            e += 1;
            o = 1;
        }
        let pairs = (e1.saturating_sub(e)) / 2;
        let bytes = &self.codes[e / 2..e / 2 + pairs];
        // A partial block: whole 16-byte groups through the kernel, the rest scalar.
        let simd_bytes = pairs & !15;
        let (head, rest) = bytes.split_at(simd_bytes);
        let (out_head, out_rest) = out[o..o + 2 * pairs].split_at_mut(2 * simd_bytes);
        if simd_bytes > 0 {
            decode::decode_blocks(level, table, head, &[scale], simd_bytes, out_head);
        }
        decode::decode_scalar(table, rest, scale, out_rest);
        e += 2 * pairs;
        o += 2 * pairs;
        if e < e1 {
            out[o] = table[(self.codes[e / 2] >> 4) as usize] * scale;
        }
    }
}

fn check_level(level: SimdLevel) -> Result<()> {
    if available_levels().contains(&level) {
        Ok(())
    } else {
        Err(Error::Unsupported(format!(
            "SIMD level {} on this CPU (available: {:?})",
            level.name(),
            available_levels()
        )))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_sorted_and_symmetric_at_the_ends() {
        let v = nf4_values();
        assert!(v.windows(2).all(|w| w[0] < w[1]));
        assert_eq!((v[0], v[7], v[15]), (-1.0, 0.0, 1.0));
        // FORMATS.md §1.2: the CUDA kernel's thresholds are these midpoints.
        let m = nf4_midpoints();
        assert_eq!(m[7], 0.039_790_15);
        assert_eq!(m[0], -0.848_096_4);
    }

    #[test]
    fn documented_packing_examples() {
        // FORMATS.md §1.2.5: 2 * code[0..16] (absmax 2) gives bytes 01 23 .. ef; 15 ones -> f7.
        let src: Vec<f32> = nf4_values().iter().map(|v| 2.0 * v).collect();
        let params = Nf4Params {
            double_quant: false,
            ..Nf4Params::default()
        };
        let t = quantize(&src, params).unwrap();
        assert_eq!(t.codes, [0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef]);
        let t = quantize(&[1.0; 15], params).unwrap();
        assert_eq!(t.codes[7], 0xf7);
    }

    #[test]
    fn invalid_inputs_are_errors_naming_values() {
        for bs in [0, 16, 48, 8192] {
            let p = Nf4Params {
                block_size: bs,
                ..Nf4Params::default()
            };
            let e = quantize(&[1.0; 64], p).unwrap_err().to_string();
            assert!(e.contains(&bs.to_string()), "{e}");
        }
        let e = quantize(&[1.0, f32::INFINITY], Nf4Params::default()).unwrap_err();
        assert!(e.to_string().contains("element 1"), "{e}");

        let codes = [0u8; 32];
        let absmax = [1.0f32; 1];
        let ok = Nf4ScalesView::Absmax(F32Slice::Native(&absmax));
        assert!(Nf4View::new(&codes, ok, 64, 64).is_ok());
        let e = Nf4View::new(&codes, ok, 64, 66).unwrap_err().to_string();
        assert!(e.contains("codes") && e.contains("33"), "{e}");
        let e = Nf4View::new(&codes, ok, 32, 64).unwrap_err().to_string();
        assert!(e.contains("absmax has 1 entries, expected 2"), "{e}");
        let bad = Nf4ScalesView::Absmax(F32Slice::LeBytes(&[0u8; 5]));
        assert!(Nf4View::new(&codes, bad, 64, 64).is_err());
        let dq = Nf4ScalesView::DoubleQuant {
            q: &[0u8; 1],
            absmax2: F32Slice::Native(&[]),
            offset: 0.0,
        };
        let e = Nf4View::new(&codes, dq, 64, 64).unwrap_err().to_string();
        assert!(e.contains("absmax2 has 0 entries, expected 1"), "{e}");

        let view = Nf4View::new(&codes, ok, 64, 64).unwrap();
        assert!(view.block_absmax(1).is_err());
        assert!(view.dequantize_range(60, &mut [0.0; 5]).is_err());
        assert!(view.dequantize_range(usize::MAX, &mut [0.0; 2]).is_err());
        assert!(view.dequantize(&mut [0.0; 63]).is_err());
    }

    #[test]
    fn empty_tensor_round_trips() {
        let t = quantize(&[], Nf4Params::default()).unwrap();
        assert_eq!(t.n_blocks(), 0);
        t.dequantize(&mut []).unwrap();
    }
}
