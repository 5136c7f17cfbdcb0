//! NEON decode kernels (aarch64), 4 f32 lanes, for the most used formats. Same arithmetic, in the
//! same order, as the scalar decoders. The per-level equality tests (tests/quant_simd.rs) run them
//! under qemu-aarch64 in CI (scripts/cross-test.sh).

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
const F16: &[SimdDecode] = &[kernel(f16)];
const Q4_K: &[SimdDecode] = &[kernel(q4_k)];
const Q6_K: &[SimdDecode] = &[kernel(q6_k)];

pub(super) const fn kernels(ty: GgmlType) -> &'static [SimdDecode] {
    match ty {
        GgmlType::Q4_0 => Q4_0,
        GgmlType::Q4_1 => Q4_1,
        GgmlType::Q8_0 => Q8_0,
        GgmlType::BF16 => BF16,
        GgmlType::F16 => F16,
        GgmlType::Q4_K => Q4_K,
        GgmlType::Q6_K => Q6_K,
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

/// F16: exact widening with integer ops and one exact multiply, 8 at a time (no FP16
/// extension needed): `(h & 0x7fff) << 13` read as f32 times 2^112 gives every zero, subnormal
/// and normal value exactly; exponent 31 (inf/NaN) takes the all-ones f32 exponent with the
/// payload kept, as the scalar decoder does; then the sign. The tail goes through the scalar
/// decoder.
///
/// # Safety
/// The CPU supports NEON.
#[target_feature(enable = "neon")]
pub(super) unsafe fn f16(src: &[u8], dst: &mut [f32]) {
    let mut src_chunks = src.chunks_exact(16);
    let mut dst_chunks = dst.chunks_exact_mut(8);
    let two_112 = vdupq_n_f32(f32::from_bits((127 + 112) << 23));
    for (b, y) in (&mut src_chunks).zip(&mut dst_chunks) {
        // SAFETY: b holds 16 bytes = 8 f16.
        let h = vreinterpretq_u16_u8(unsafe { load16(b, 0) });
        for (k, half) in [vget_low_u16(h), vget_high_u16(h)].into_iter().enumerate() {
            let w = vmovl_u16(half);
            let sign = vshlq_n_u32::<16>(vandq_u32(w, vdupq_n_u32(0x8000)));
            let body = vshlq_n_u32::<13>(vandq_u32(w, vdupq_n_u32(0x7fff)));
            let finite = vreinterpretq_u32_f32(vmulq_f32(vreinterpretq_f32_u32(body), two_112));
            let special = vorrq_u32(body, vdupq_n_u32(0x7f80_0000));
            let is_special = vcgeq_u32(body, vdupq_n_u32(0x0f80_0000));
            let bits = vorrq_u32(vbslq_u32(is_special, special, finite), sign);
            // SAFETY: y holds 8 f32; 4k + 4 <= 8.
            unsafe { store4(y, 4 * k, vreinterpretq_f32_u32(bits)) };
        }
    }
    crate::quant::f16::decode(src_chunks.remainder(), dst_chunks.into_remainder());
}

/// Q4_K: y = ds[j]·q − ms[j] per 32-element sub-block (multiply, then subtract).
///
/// # Safety
/// The CPU supports NEON.
#[target_feature(enable = "neon")]
pub(super) unsafe fn q4_k(src: &[u8], dst: &mut [f32]) {
    use crate::quant::q4_k::{sub_block_scales, BLOCK_BYTES, BLOCK_ELEMS, D, DMIN, QS, SCALES};
    for (b, y) in src
        .chunks_exact(BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(BLOCK_ELEMS))
    {
        let (ds, ms) = sub_block_scales(read_f16(b, D), read_f16(b, DMIN), &b[SCALES..QS]);
        for c in 0..4 {
            for half in 0..2 {
                // SAFETY: QS + 32c + 16half + 16 <= QS + 128 == BLOCK_BYTES == b.len().
                let nibbles = unsafe { nibbles16(b, QS + 32 * c + 16 * half) };
                // Low nibbles feed sub-block 2c (elements 64c..), high ones 2c + 1 (64c + 32..).
                for (j, n) in nibbles.into_iter().enumerate() {
                    let (d, m) = (vdupq_n_f32(ds[2 * c + j]), vdupq_n_f32(ms[2 * c + j]));
                    for (k, v) in u8x16_to_f32(n).into_iter().enumerate() {
                        let at = 64 * c + 32 * j + 16 * half + 4 * k;
                        // SAFETY: at + 4 <= 256 == y.len().
                        unsafe { store4(y, at, vsubq_f32(vmulq_f32(d, v), m)) };
                    }
                }
            }
        }
    }
}

/// Q6_K: y = ds[o / 16]·(q − 32), q = 4 low bits from `ql` and 2 high bits from `qh`.
///
/// # Safety
/// The CPU supports NEON.
#[target_feature(enable = "neon")]
pub(super) unsafe fn q6_k(src: &[u8], dst: &mut [f32]) {
    use crate::quant::q6_k::{scales, BLOCK_BYTES, BLOCK_ELEMS, QH, QL};
    for (b, y) in src
        .chunks_exact(BLOCK_BYTES)
        .zip(dst.chunks_exact_mut(BLOCK_ELEMS))
    {
        let Ok(block) = <&[u8; BLOCK_BYTES]>::try_from(b) else {
            continue; // unreachable: chunks_exact
        };
        let ds = scales(block);
        for h in 0..2 {
            for g in 0..4 {
                for l0 in [0, 16] {
                    // SAFETY: QL + 64h + 32(g % 2) + l0 + 16 <= QL + 128 <= QH, and
                    // QH + 32h + l0 + 16 <= QH + 64 <= b.len().
                    let (ql, qh) = unsafe {
                        (
                            load16(b, QL + 64 * h + 32 * (g % 2) + l0),
                            load16(b, QH + 32 * h + l0),
                        )
                    };
                    let low = if g < 2 {
                        vandq_u8(ql, vdupq_n_u8(0x0f))
                    } else {
                        vshrq_n_u8::<4>(ql)
                    };
                    let high = vandq_u8(vshlq_u8(qh, vdupq_n_s8(-2 * g as i8)), vdupq_n_u8(3));
                    let q = vorrq_u8(low, vshlq_n_u8::<4>(high));
                    let q = vsubq_s8(vreinterpretq_s8_u8(q), vdupq_n_s8(32));
                    let o = 128 * h + 32 * g + l0;
                    let d = vdupq_n_f32(ds[o / 16]);
                    for (k, v) in i8x16_to_f32(q).into_iter().enumerate() {
                        // SAFETY: o + 4k + 4 <= 256 == y.len().
                        unsafe { store4(y, o + 4 * k, vmulq_f32(d, v)) };
                    }
                }
            }
        }
    }
}
