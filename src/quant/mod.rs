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
//! STUB: bodies come with the block-format work.

pub mod dynamic8;
pub mod nf4;

use crate::cpu::SimdLevel;
use crate::error::Result;
use crate::gguf::GgmlType;

pub fn can_dequantize(_ty: GgmlType) -> bool {
    unimplemented!("block formats")
}

pub fn can_quantize(_ty: GgmlType) -> bool {
    unimplemented!("block formats")
}

pub fn dequantize(ty: GgmlType, src: &[u8], dst: &mut [f32]) -> Result<()> {
    dequantize_at(crate::cpu::simd_level(), ty, src, dst)
}

pub fn dequantize_at(
    _level: SimdLevel,
    _ty: GgmlType,
    _src: &[u8],
    _dst: &mut [f32],
) -> Result<()> {
    unimplemented!("block formats")
}

pub fn quantize(_ty: GgmlType, _src: &[f32], _dst: &mut [u8]) -> Result<()> {
    unimplemented!("block formats")
}
