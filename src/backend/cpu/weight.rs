//! Reading a weight `W[n_out, n_in]` (any storage) as f32, a range of one row at a time, straight
//! from its zero-copy view. F32 weights that are 4-byte aligned are used in place; ggml block
//! formats are decoded whole blocks at a time with `crate::quant`, NF4 over any element range with
//! `Nf4View::dequantize_range`, into the caller's scratch.

use super::pack::Dense;
use crate::backend::LinearWeight;
use crate::cpu::SimdLevel;
use crate::error::{Error, Result};
use crate::gguf::GgmlType;
use crate::quant::nf4::Nf4View;
use crate::quant::BlockDecoder;
use crate::weights::WeightData;

enum Storage<'a> {
    /// F32 data, aligned: used in place.
    F32(&'a [f32]),
    /// Any ggml type (F32 data that is not 4-byte aligned included), `row_bytes` per row.
    Ggml {
        ty: GgmlType,
        bytes: &'a [u8],
        row_bytes: usize,
        dec: BlockDecoder,
    },
    /// NF4: rows need not align with NF4 blocks; any element range decodes.
    Nf4(Nf4View<'a>),
}

/// A validated weight whose row ranges can be decoded.
pub(crate) struct WeightRows<'a> {
    storage: Storage<'a>,
    /// The SIMD level decoders run at (the backend's).
    level: SimdLevel,
    pub n_in: usize,
    pub n_out: usize,
}

/// `bytes` as f32 values when they are aligned (little-endian targets only).
fn f32_view(bytes: &[u8]) -> Option<&[f32]> {
    if cfg!(target_endian = "big") {
        return None;
    }
    // SAFETY: every bit pattern is a valid f32, and `align_to` only puts correctly aligned,
    // whole elements in the middle slice.
    let (head, mid, tail) = unsafe { bytes.align_to::<f32>() };
    (head.is_empty() && tail.is_empty()).then_some(mid)
}

impl<'a> WeightRows<'a> {
    /// Checks that `w`'s data has exactly the bytes its shape needs and that its storage can be
    /// decoded here.
    pub fn new(
        w: &LinearWeight<'a>,
        level: SimdLevel,
        name_for_errors: &str,
    ) -> Result<WeightRows<'a>> {
        let (n_in, n_out) = (w.n_in, w.n_out);
        let storage = match &w.data {
            WeightData::Ggml { ty, bytes } => {
                let ty = *ty;
                let row_bytes = ty.row_bytes(n_in as u64).ok_or_else(|| {
                    Error::InvalidArgument(format!(
                        "{name_for_errors}: n_in {n_in} is not a multiple of the {ty} block size {}",
                        ty.block_size()
                    ))
                })? as usize;
                let expected = row_bytes.checked_mul(n_out);
                if expected != Some(bytes.len()) {
                    return Err(Error::InvalidArgument(format!(
                        "{name_for_errors}: {ty} weight [{n_out}, {n_in}] needs {row_bytes}x{n_out} bytes, the view has {}",
                        bytes.len()
                    )));
                }
                match (ty, f32_view(bytes)) {
                    (GgmlType::F32, Some(v)) => Storage::F32(v),
                    _ if crate::quant::can_dequantize(ty) => Storage::Ggml {
                        ty,
                        bytes,
                        row_bytes,
                        dec: BlockDecoder::new(level, ty)?,
                    },
                    _ => {
                        return Err(Error::Unsupported(format!(
                            "{name_for_errors}: weights of type {ty} (no decoder)"
                        )))
                    }
                }
            }
            WeightData::Nf4(view) => {
                if n_in.checked_mul(n_out) != Some(view.n_elements()) {
                    return Err(Error::InvalidArgument(format!(
                        "{name_for_errors}: NF4 weight [{n_out}, {n_in}] needs {n_out}x{n_in} elements, the view has {}",
                        view.n_elements()
                    )));
                }
                Storage::Nf4(*view)
            }
        };
        Ok(WeightRows {
            storage,
            level,
            n_in,
            n_out,
        })
    }

    /// The weight as a dense row-major view, when it is aligned F32 (no decoding needed).
    pub fn dense(&self) -> Option<Dense<'a>> {
        match self.storage {
            Storage::F32(v) => Some(Dense::row_major(v, self.n_in)),
            Storage::Ggml { .. } | Storage::Nf4(_) => None,
        }
    }

    /// Column ranges starting and ending on multiples of this decode without waste.
    pub fn block(&self) -> usize {
        match self.storage {
            Storage::F32(_) => 1,
            Storage::Ggml { ty, .. } => ty.block_size(),
            Storage::Nf4(view) => view.block_size(),
        }
    }

    /// Writes whole rows `row0..row0 + dst.len() / n_in` to `dst` (one decode call: consecutive
    /// rows are consecutive in every storage).
    pub fn decode_rows(&self, row0: usize, dst: &mut [f32]) -> Result<()> {
        let rows = dst.len() / self.n_in.max(1);
        debug_assert!(rows * self.n_in == dst.len() && row0 + rows <= self.n_out);
        match self.storage {
            Storage::F32(v) => {
                dst.copy_from_slice(&v[row0 * self.n_in..(row0 + rows) * self.n_in]);
                Ok(())
            }
            Storage::Ggml {
                bytes,
                row_bytes,
                dec,
                ..
            } => dec.decode(&bytes[row0 * row_bytes..(row0 + rows) * row_bytes], dst),
            Storage::Nf4(view) => view.dequantize_range_at(self.level, row0 * self.n_in, dst),
        }
    }

    /// Writes `W[row, c0..c0 + dst.len()]` to `dst`. Ranges that do not start and end on block
    /// boundaries decode the covering blocks into `tmp` first.
    pub fn decode(&self, row: usize, c0: usize, dst: &mut [f32], tmp: &mut Vec<f32>) -> Result<()> {
        let c1 = c0 + dst.len();
        debug_assert!(row < self.n_out && c1 <= self.n_in);
        match self.storage {
            Storage::F32(v) => {
                dst.copy_from_slice(&v[row * self.n_in + c0..row * self.n_in + c1]);
                Ok(())
            }
            Storage::Ggml {
                ty,
                bytes,
                row_bytes,
                dec,
            } => {
                let (bs, ts) = (ty.block_size(), ty.type_size());
                let (b0, b1) = (c0 / bs, c1.div_ceil(bs));
                let src = &bytes[row * row_bytes + b0 * ts..row * row_bytes + b1 * ts];
                if c0.is_multiple_of(bs) && c1.is_multiple_of(bs) {
                    dec.decode(src, dst)
                } else {
                    tmp.resize((b1 - b0) * bs, 0.0);
                    dec.decode(src, tmp)?;
                    let skip = c0 - b0 * bs;
                    dst.copy_from_slice(&tmp[skip..skip + dst.len()]);
                    Ok(())
                }
            }
            Storage::Nf4(view) => view.dequantize_range_at(self.level, row * self.n_in + c0, dst),
        }
    }
}
