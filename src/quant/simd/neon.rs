//! NEON decode kernels (aarch64), 4 f32 lanes, for the most used formats. Same arithmetic, in the
//! same order, as the scalar decoders. Compile-checked for aarch64; the per-level equality tests
//! (tests/quant_simd.rs) exercise them on an aarch64 machine.

#![deny(unsafe_op_in_unsafe_fn)]

use super::{GgmlType, SimdDecode, SimdLevel};
use crate::quant::bf16 as bf16_fmt;
use crate::quant::f16::f16_to_f32;
use std::arch::aarch64::*;

const fn kernel(k: unsafe fn(&[u8], &mut [f32])) -> SimdDecode {
    SimdDecode {
        level: SimdLevel::Neon,
        kernel: k,
    }
}

const Q4_0: &[SimdDecode] = &[kernel(q4_0)];
const Q4_1: &[SimdDecode] = &[kernel(q4_1)];
const Q8_0: &[SimdDecode] = &[kernel(q8_0)];
const BF16: &[SimdDecode] = &[kernel(bf16)];

pub(super) const fn kernels(ty: GgmlType) -> &'static [SimdDecode] {
    match ty {
        GgmlType::Q4_0 => Q4_0,
        GgmlType::Q4_1 => Q4_1,
        GgmlType::Q8_0 => Q8_0,
        GgmlType::BF16 => BF16,
        _ => &[],
    }
}

fn read_f16(b: &[u8], at: usize) -> f32 {
    match b.get(at..at + 2) {
        Some(&[lo, hi]) => f16_to_f32(u16::from_le_bytes([lo, hi])),
        _ => 0.0,
    }
}

/// # Safety
/// `at + 16 <= p.len()`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn load16(p: &[u8], at: usize) -> uint8x16_t {
    debug_assert!(at + 16 <= p.len());
    // SAFETY: the caller guarantees 16 readable bytes at `at`.
    unsafe { vld1q_u8(p.as_ptr().add(at)) }
}

/// # Safety
/// `at + 4 <= y.len()`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn store4(y: &mut [f32], at: usize, v: float32x4_t) {
    debug_assert!(at + 4 <= y.len());
    // SAFETY: the caller guarantees 4 writable f32 at `at`.
    unsafe { vst1q_f32(y.as_mut_ptr().add(at), v) }
}

/// 16 unsigned bytes → four f32x4 (in order).
#[inline]
#[target_feature(enable = "neon")]
fn u8x16_to_f32(v: uint8x16_t) -> [float32x4_t; 4] {
    let (lo, hi) = (vmovl_u8(vget_low_u8(v)), vmovl_u8(vget_high_u8(v)));
    [
        vcvtq_f32_u32(vmovl_u16(vget_low_u16(lo))),
        vcvtq_f32_u32(vmovl_u16(vget_high_u16(lo))),
        vcvtq_f32_u32(vmovl_u16(vget_low_u16(hi))),
        vcvtq_f32_u32(vmovl_u16(vget_high_u16(hi))),
    ]
}

/// 16 signed bytes → four f32x4 (in order).
#[inline]
#[target_feature(enable = "neon")]
fn i8x16_to_f32(v: int8x16_t) -> [float32x4_t; 4] {
    let (lo, hi) = (vmovl_s8(vget_low_s8(v)), vmovl_s8(vget_high_s8(v)));
    [
        vcvtq_f32_s32(vmovl_s16(vget_low_s16(lo))),
        vcvtq_f32_s32(vmovl_s16(vget_high_s16(lo))),
        vcvtq_f32_s32(vmovl_s16(vget_low_s16(hi))),
        vcvtq_f32_s32(vmovl_s16(vget_high_s16(hi))),
    ]
}

/// Low and high nibbles of the 16 bytes at `b[at..]`.
///
/// # Safety
/// `at + 16 <= b.len()`.
#[inline]
#[target_feature(enable = "neon")]
unsafe fn nibbles16(b: &[u8], at: usize) -> [uint8x16_t; 2] {
    // SAFETY: forwarded from the caller.
    let qs = unsafe { load16(b, at) };
    [vandq_u8(qs, vdupq_n_u8(0x0f)), vshrq_n_u8::<4>(qs)]
}

/// Q4_0: y = d·(q − 8).
///
/// # Safety
/// The CPU supports NEON.
#[target_feature(enable = "neon")]
pub(super) unsafe fn q4_0(src: &[u8], dst: &mut [f32]) {
    use crate::quant::q4_0::{BLOCK_BYTES, BLOCK_ELEMS, D, QS};
    for (b, y) in src
        .chunks_exact(BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(BLOCK_ELEMS))
    {
        let d = vdupq_n_f32(read_f16(b, D));
        // SAFETY: QS + 16 == BLOCK_BYTES == b.len().
        let nibbles = unsafe { nibbles16(b, QS) };
        for (h, n) in nibbles.into_iter().enumerate() {
            let q = vsubq_s8(vreinterpretq_s8_u8(n), vdupq_n_s8(8));
            for (k, v) in i8x16_to_f32(q).into_iter().enumerate() {
                // SAFETY: 16h + 4k + 4 <= 32 == y.len().
                unsafe { store4(y, 16 * h + 4 * k, vmulq_f32(d, v)) };
            }
        }
    }
}

/// Q4_1: y = d·q + m (multiply, then add; no fused multiply-add).
///
/// # Safety
/// The CPU supports NEON.
#[target_feature(enable = "neon")]
pub(super) unsafe fn q4_1(src: &[u8], dst: &mut [f32]) {
    use crate::quant::q4_1::{BLOCK_BYTES, BLOCK_ELEMS, D, M, QS};
    for (b, y) in src
        .chunks_exact(BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(BLOCK_ELEMS))
    {
        let (d, m) = (vdupq_n_f32(read_f16(b, D)), vdupq_n_f32(read_f16(b, M)));
        // SAFETY: QS + 16 == BLOCK_BYTES == b.len().
        let nibbles = unsafe { nibbles16(b, QS) };
        for (h, n) in nibbles.into_iter().enumerate() {
            for (k, v) in u8x16_to_f32(n).into_iter().enumerate() {
                // SAFETY: 16h + 4k + 4 <= 32 == y.len().
                unsafe { store4(y, 16 * h + 4 * k, vaddq_f32(vmulq_f32(d, v), m)) };
            }
        }
    }
}

/// Q8_0: y = q·d.
///
/// # Safety
/// The CPU supports NEON.
#[target_feature(enable = "neon")]
pub(super) unsafe fn q8_0(src: &[u8], dst: &mut [f32]) {
    use crate::quant::q8_0::{BLOCK_BYTES, BLOCK_ELEMS, D, QS};
    for (b, y) in src
        .chunks_exact(BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(BLOCK_ELEMS))
    {
        let d = vdupq_n_f32(read_f16(b, D));
        for h in 0..2 {
            // SAFETY: QS + 16h + 16 <= BLOCK_BYTES == b.len().
            let q = vreinterpretq_s8_u8(unsafe { load16(b, QS + 16 * h) });
            for (k, v) in i8x16_to_f32(q).into_iter().enumerate() {
                // SAFETY: 16h + 4k + 4 <= 32 == y.len().
                unsafe { store4(y, 16 * h + 4 * k, vmulq_f32(v, d)) };
            }
        }
    }
}

/// BF16: f32 bits = bf16 << 16, 8 at a time; the tail goes through the scalar decoder.
///
/// # Safety
/// The CPU supports NEON.
#[target_feature(enable = "neon")]
pub(super) unsafe fn bf16(src: &[u8], dst: &mut [f32]) {
    let mut src_chunks = src.chunks_exact(16);
    let mut dst_chunks = dst.chunks_exact_mut(8);
    for (b, y) in (&mut src_chunks).zip(&mut dst_chunks) {
        // SAFETY: b holds 16 bytes = 8 bf16.
        let h = vreinterpretq_u16_u8(unsafe { load16(b, 0) });
        let lo = vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_low_u16(h)));
        let hi = vreinterpretq_f32_u32(vshll_n_u16::<16>(vget_high_u16(h)));
        // SAFETY: y holds 8 f32.
        unsafe {
            store4(y, 0, lo);
            store4(y, 4, hi);
        }
    }
    bf16_fmt::decode(src_chunks.remainder(), dst_chunks.into_remainder());
}
