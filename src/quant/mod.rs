//! Block formats: decode (dequantize to f32) and encode for the ggml types, one file per format,
//! plus NF4 with double quantization (bitsandbytes) and the 8-bit dynamic maps it uses.
//!
//! API contract (other modules rely on it):
//! - `dequantize(ty, src, dst)`: `src` holds whole blocks of `ty`, `dst.len()` = blocks × block
//!   size. Uses the best SIMD level (`crate::cpu::simd_level()`); `dequantize_at(level, ...)` picks
//!   one explicitly (tests compare every level to `SimdLevel::Scalar`, the specification).
//! - `quantize(ty, src, dst)`: the inverse for the encodable types; `dst.len()` = bytes of the
//!   blocks; `src.len()` a multiple of the block size.
//! - `can_dequantize(ty)`, `can_quantize(ty)`.
//!
//! Every format is one row of [`FORMATS`] (the traits table): its scalar decoder (the
//! specification, bit-identical to gguf-py's `gguf.quants.dequantize`), its encoder if it has one
//! (bit-identical to ggml's `quantize_row_*_ref`), and its SIMD decoders per level. SIMD decoders
//! compute exactly the same float operations in the same order as the scalar one, so every level
//! produces the same bits. Nothing here allocates: a row (whole blocks) decodes straight into the
//! caller's buffer.

#![deny(unsafe_op_in_unsafe_fn)]

pub mod dynamic8;
pub mod nf4;

pub mod bf16;
pub mod f16;
pub mod f32;
pub mod iq4_nl;
pub mod iq4_xs;
pub mod q2_k;
pub mod q3_k;
pub mod q4_0;
pub mod q4_1;
pub mod q4_k;
pub mod q5_0;
pub mod q5_1;
pub mod q5_k;
pub mod q6_k;
pub mod q8_0;
mod simd;

use crate::cpu::SimdLevel;
use crate::error::{Error, Result};
use crate::gguf::GgmlType;

/// Scalar decoder: `src` holds whole blocks, `dst` their elements. Decodes as many whole blocks as
/// both slices hold (the public entry points check the lengths first).
pub type DecodeFn = fn(src: &[u8], dst: &mut [f32]);
/// Encoder: `src` holds whole blocks of elements, `dst` their bytes; same length rule as decode.
pub type EncodeFn = fn(src: &[f32], dst: &mut [u8]);

/// A SIMD decoder and the instruction-set level it needs. The function itself stays private: it
/// may only run after `crate::cpu` has seen its level, which [`dequantize_at`] checks.
#[derive(Clone, Copy)]
pub struct SimdDecode {
    pub level: SimdLevel,
    kernel: unsafe fn(&[u8], &mut [f32]),
}

/// One row of the traits table.
pub struct Format {
    pub ty: GgmlType,
    /// Elements per block (equals `ty.block_size()`).
    pub block_elems: usize,
    /// Bytes per block (equals `ty.type_size()`).
    pub block_bytes: usize,
    /// The scalar decoder: the specification every SIMD decoder must match bit for bit.
    pub decode: DecodeFn,
    pub encode: Option<EncodeFn>,
    /// SIMD decoders, lowest level first (only those compiled for this architecture).
    pub simd_decode: &'static [SimdDecode],
}

macro_rules! format_row {
    ($ty:ident, $module:ident, encode: $encode:expr) => {
        Format {
            ty: GgmlType::$ty,
            block_elems: $module::BLOCK_ELEMS,
            block_bytes: $module::BLOCK_BYTES,
            decode: $module::decode,
            encode: $encode,
            simd_decode: simd::kernels(GgmlType::$ty),
        }
    };
}

/// The traits table: every format this module decodes.
pub static FORMATS: [Format; 15] = [
    format_row!(F32, f32, encode: Some(f32::encode)),
    format_row!(F16, f16, encode: Some(f16::encode)),
    format_row!(BF16, bf16, encode: Some(bf16::encode)),
    format_row!(Q4_0, q4_0, encode: Some(q4_0::encode)),
    format_row!(Q4_1, q4_1, encode: None),
    format_row!(Q5_0, q5_0, encode: None),
    format_row!(Q5_1, q5_1, encode: None),
    format_row!(Q8_0, q8_0, encode: Some(q8_0::encode)),
    format_row!(Q2_K, q2_k, encode: None),
    format_row!(Q3_K, q3_k, encode: None),
    format_row!(Q4_K, q4_k, encode: None),
    format_row!(Q5_K, q5_k, encode: None),
    format_row!(Q6_K, q6_k, encode: None),
    format_row!(IQ4_NL, iq4_nl, encode: None),
    format_row!(IQ4_XS, iq4_xs, encode: None),
];

/// The table row of `ty`, or `None` if this module cannot decode it.
pub fn format(ty: GgmlType) -> Option<&'static Format> {
    FORMATS.iter().find(|f| f.ty == ty)
}

pub fn can_dequantize(ty: GgmlType) -> bool {
    format(ty).is_some()
}

pub fn can_quantize(ty: GgmlType) -> bool {
    format(ty).is_some_and(|f| f.encode.is_some())
}

pub fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<()> {
    dequantize_at(crate::cpu::simd_level(), ty, src, dst)
}

/// The level of the decoder [`dequantize_at`]`(level, ty, ..)` runs: the best kernel of `ty` at or
/// below `level` that this CPU can run, else `Scalar`. `None` if `ty` is not decodable.
pub fn decode_level(level: SimdLevel, ty: GgmlType) -> Option<SimdLevel> {
    let f = format(ty)?;
    Some(best_kernel(f, level).map_or(SimdLevel::Scalar, |k| k.level))
}

fn best_kernel(f: &Format, level: SimdLevel) -> Option<&SimdDecode> {
    let available = crate::cpu::available_levels();
    f.simd_decode
        .iter()
        .rev()
        .find(|k| k.level <= level && available.contains(&k.level))
}

/// Decodes with the kernels of `level` (or the best lower level the format has). `level` must be
/// one of `crate::cpu::available_levels()`.
pub fn dequantize_at(level: SimdLevel, ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<()> {
    BlockDecoder::new(level, ty)?.decode(src, dst)
}

/// The decoder of one type at one SIMD level, looked up once: callers that decode a weight a few
/// blocks at a time (the GEMM's packing) pay the table lookups and checks of `dequantize_at`
/// once per weight instead of once per call.
#[derive(Clone, Copy)]
pub struct BlockDecoder {
    f: &'static Format,
    kernel: Option<&'static SimdDecode>,
}

impl BlockDecoder {
    /// `ty`'s best decoder at or below `level` (which must be one of
    /// `crate::cpu::available_levels()`).
    pub fn new(level: SimdLevel, ty: GgmlType) -> Result<BlockDecoder> {
        let f = format(ty).ok_or_else(|| {
            Error::Unsupported(format!(
                "dequantizing {ty} (type id {}): no decoder for this type",
                ty.id()
            ))
        })?;
        if !crate::cpu::available_levels().contains(&level) {
            return Err(Error::InvalidArgument(format!(
                "dequantizing {ty}: SIMD level {} is not available on this CPU (available: {:?})",
                level.name(),
                crate::cpu::available_levels()
            )));
        }
        Ok(BlockDecoder {
            f,
            kernel: best_kernel(f, level),
        })
    }

    /// Decodes whole blocks: `src` must be whole blocks and `dst` exactly their elements.
    #[inline]
    pub fn decode(&self, src: &[u8], dst: &mut [f32]) -> Result<()> {
        let f = self.f;
        if !src.len().is_multiple_of(f.block_bytes)
            || src.len() / f.block_bytes * f.block_elems != dst.len()
        {
            check_lengths(f, false, src.len(), dst.len())?;
        }
        match self.kernel {
            // SAFETY: `best_kernel` only returns kernels whose level is in
            // `crate::cpu::available_levels()`, i.e. the CPU has every feature the kernel enables.
            // Kernels read and write only inside the slices they are given.
            Some(k) => unsafe { (k.kernel)(src, dst) },
            None => (f.decode)(src, dst),
        }
        Ok(())
    }
}

pub fn quantize(ty: GgmlType, src: &[f32], dst: &mut [u8]) -> Result<()> {
    let (f, encode) = format(ty)
        .and_then(|f| f.encode.map(|e| (f, e)))
        .ok_or_else(|| {
            Error::Unsupported(format!(
                "quantizing to {ty} (type id {}): no encoder for this type",
                ty.id()
            ))
        })?;
    check_lengths(f, true, dst.len(), src.len())?;
    encode(src, dst);
    Ok(())
}

/// Checks that `bytes` is whole blocks of `f` and `elems` their element count. `encoding` says
/// which side is the caller's source (for the message).
fn check_lengths(f: &Format, encoding: bool, bytes: usize, elems: usize) -> Result<()> {
    let ty = f.ty;
    let (op, bytes_side, elems_side) = match encoding {
        true => ("quantize", "destination", "source"),
        false => ("dequantize", "source", "destination"),
    };
    if encoding && !elems.is_multiple_of(f.block_elems) {
        return Err(Error::Quant(format!(
            "{op} {ty}: {elems_side} holds {elems} f32, not a multiple of the block size {} \
             elements",
            f.block_elems
        )));
    }
    if !bytes.is_multiple_of(f.block_bytes) {
        return Err(Error::Quant(format!(
            "{op} {ty}: {bytes_side} holds {bytes} bytes, not a multiple of the block size {} bytes",
            f.block_bytes
        )));
    }
    let blocks = bytes / f.block_bytes;
    if blocks.checked_mul(f.block_elems) != Some(elems) {
        return Err(Error::Quant(format!(
            "{op} {ty}: {bytes_side} holds {blocks} blocks ({bytes} bytes) = {} elements, but \
             {elems_side} holds {elems} f32",
            blocks.saturating_mul(f.block_elems)
        )));
    }
    Ok(())
}

/// Calls `f` on each (block bytes, block elements) pair, as many as both slices hold. The
/// fixed-size views let decoders index without bounds checks or panics.
#[inline(always)]
pub(crate) fn for_each_block<const B: usize, const E: usize>(
    mut src: &[u8],
    mut dst: &mut [f32],
    mut f: impl FnMut(&[u8; B], &mut [f32; E]),
) {
    while let Some((block, src_rest)) = src.split_first_chunk::<B>() {
        let Some((out, dst_rest)) = std::mem::take(&mut dst).split_first_chunk_mut::<E>() else {
            return;
        };
        f(block, out);
        src = src_rest;
        dst = dst_rest;
    }
}

/// Encoder counterpart of [`for_each_block`]: (block elements, block bytes) pairs.
#[inline(always)]
pub(crate) fn for_each_block_encode<const E: usize, const B: usize>(
    mut src: &[f32],
    mut dst: &mut [u8],
    mut f: impl FnMut(&[f32; E], &mut [u8; B]),
) {
    while let Some((x, src_rest)) = src.split_first_chunk::<E>() {
        let Some((block, dst_rest)) = std::mem::take(&mut dst).split_first_chunk_mut::<B>() else {
            return;
        };
        f(x, block);
        src = src_rest;
        dst = dst_rest;
    }
}

/// Reads the little-endian f16 at `at` of a block and widens it exactly.
#[inline(always)]
pub(crate) fn read_f16<const B: usize>(block: &[u8; B], at: usize) -> f32 {
    f16::f16_to_f32(u16::from_le_bytes([block[at], block[at + 1]]))
}

#[cfg(test)]
pub(crate) mod testing {
    /// Box–Muller normal sample from a SplitMix64 stream.
    pub(crate) fn normal(state: &mut u64) -> f32 {
        let mut next = || {
            *state = state.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = *state;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
        };
        let (u1, u2) = (next().max(1e-300), next());
        ((-2.0 * u1.ln()).sqrt() * (2.0 * std::f64::consts::PI * u2).cos()) as f32
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_sizes_match_the_type_table() {
        for f in &FORMATS {
            assert_eq!(f.block_elems, f.ty.block_size(), "{}", f.ty);
            assert_eq!(f.block_bytes, f.ty.type_size(), "{}", f.ty);
            assert!(
                f.simd_decode.windows(2).all(|w| w[0].level < w[1].level),
                "{}: kernels not sorted by level",
                f.ty
            );
        }
    }

    #[test]
    fn errors_name_type_and_lengths() {
        let mut out = [0f32; 64];
        let e = dequantize(GgmlType::Q4_0, &[0u8; 37], &mut out).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("Q4_0") && msg.contains("37") && msg.contains("18"),
            "{msg}"
        );
        let e = dequantize(GgmlType::Q4_0, &[0u8; 36], &mut out[..30]).unwrap_err();
        let msg = e.to_string();
        assert!(
            msg.contains("Q4_0") && msg.contains("30") && msg.contains("64"),
            "{msg}"
        );
        let e = dequantize(GgmlType::IQ2_XXS, &[0u8; 66], &mut out[..0]).unwrap_err();
        assert!(matches!(e, Error::Unsupported(_)), "{e}");
        assert!(e.to_string().contains("IQ2_XXS"), "{e}");
        let e = quantize(GgmlType::Q4_K, &[0.0; 256], &mut [0u8; 144]).unwrap_err();
        assert!(matches!(e, Error::Unsupported(_)) && e.to_string().contains("Q4_K"));
        let e = quantize(GgmlType::Q8_0, &[0.0; 33], &mut [0u8; 34]).unwrap_err();
        assert!(
            e.to_string().contains("33") && e.to_string().contains("Q8_0"),
            "{e}"
        );
        let e = quantize(GgmlType::Q8_0, &[0.0; 64], &mut [0u8; 34]).unwrap_err();
        assert!(
            e.to_string().contains("64") && e.to_string().contains("34"),
            "{e}"
        );
    }

    /// Any pair of lengths gives Ok (exactly when they describe whole blocks) or an error, at
    /// every level; never a panic.
    #[test]
    fn arbitrary_lengths_never_panic() {
        let src = vec![0x5au8; 3 * 256];
        let mut dst = vec![0f32; 4 * 256];
        for f in &FORMATS {
            for &level in crate::cpu::available_levels() {
                for bytes in (0..=2 * f.block_bytes + 1).chain([3 * f.block_bytes]) {
                    for elems in [0, 1, f.block_elems, bytes / f.block_bytes * f.block_elems] {
                        let ok = bytes % f.block_bytes == 0
                            && bytes / f.block_bytes * f.block_elems == elems;
                        let r = dequantize_at(level, f.ty, &src[..bytes], &mut dst[..elems]);
                        assert_eq!(r.is_ok(), ok, "{} {bytes} bytes {elems} elems", f.ty);
                    }
                }
            }
            if f.encode.is_some() {
                let x = vec![0.5f32; 2 * f.block_elems + 1];
                let mut out = vec![0u8; 2 * f.block_bytes + 1];
                assert!(quantize(f.ty, &x[..f.block_elems], &mut out[..f.block_bytes]).is_ok());
                assert!(quantize(f.ty, &x, &mut out[..2 * f.block_bytes]).is_err());
                assert!(quantize(f.ty, &x[..2 * f.block_elems], &mut out).is_err());
            }
        }
    }

    #[test]
    fn empty_input_is_fine() {
        for f in &FORMATS {
            dequantize(f.ty, &[], &mut []).unwrap();
        }
    }
}
