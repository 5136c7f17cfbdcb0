//! NF4 encode kernels: scale one block and pick the nearest NF4 code of every value, packing two
//! codes per byte (first element in the high nibble). The scalar kernel is the specification.
//!
//! The code of a scaled value `s` is the number of NF4 midpoints strictly below `s`, which is
//! `torch.bucketize(s, midpoints, right=False)` as bitsandbytes' CPU path computes it: a value
//! exactly on a midpoint goes to the lower index.

#![deny(unsafe_op_in_unsafe_fn)]

use crate::cpu::SimdLevel;

/// How a block's values are brought to [-1, 1] before rounding. bitsandbytes multiplies full
/// blocks by the reciprocal of their absmax but divides the last, partial block by it; the two
/// round differently in the last ulp, which decides ties.
#[derive(Clone, Copy, Debug)]
pub(super) enum Scaling {
    MulBy(f32),
    DivBy(f32),
}

impl Scaling {
    #[inline]
    fn apply(self, x: f32) -> f32 {
        match self {
            Scaling::MulBy(r) => x * r,
            Scaling::DivBy(d) => x / d,
        }
        .clamp(-1.0, 1.0)
    }
}

/// The NF4 code of a scaled value in [-1, 1].
#[inline]
pub(super) fn code_of(mids: &[f32; 15], s: f32) -> u8 {
    mids.iter().map(|&m| (m < s) as u8).sum()
}

/// Encodes one block `x` into `out` (`out.len() == x.len().div_ceil(2)`); an odd trailing value
/// is paired with the code of 0.0, as bitsandbytes pads odd tensors. The caller has checked that
/// `level` is available on this CPU.
pub(super) fn encode_block(
    level: SimdLevel,
    mids: &[f32; 15],
    x: &[f32],
    scaling: Scaling,
    out: &mut [u8],
) {
    debug_assert_eq!(out.len(), x.len().div_ceil(2));
    let even = x.len() & !1;
    let (x_even, out_even) = (&x[..even], &mut out[..even / 2]);
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller checked that `level` is in `available_levels()`: the CPU has
        // AVX-512 F/BW/VL and AVX2.
        SimdLevel::Avx512 => unsafe { x86::encode_avx512(mids, x_even, scaling, out_even) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, the CPU has AVX2.
        SimdLevel::Avx2 => unsafe { x86::encode_avx2(mids, x_even, scaling, out_even) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: the caller checked that `level` is in `available_levels()`: the CPU has NEON.
        SimdLevel::Neon => unsafe { neon::encode_neon(mids, x_even, scaling, out_even) },
        _ => encode_scalar(mids, x_even, scaling, out_even),
    }
    if even < x.len() {
        let hi = code_of(mids, scaling.apply(x[even]));
        out[even / 2] = (hi << 4) | code_of(mids, 0.0);
    }
}

/// The reference kernel for an even number of values.
pub(super) fn encode_scalar(mids: &[f32; 15], x: &[f32], scaling: Scaling, out: &mut [u8]) {
    for (byte, pair) in out.iter_mut().zip(x.chunks_exact(2)) {
        let hi = code_of(mids, scaling.apply(pair[0]));
        let lo = code_of(mids, scaling.apply(pair[1]));
        *byte = (hi << 4) | lo;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::Scaling;
    use std::arch::x86_64::*;

    /// Counts, per lane, the midpoints strictly below `s` (compare masks are -1, so subtract).
    #[inline]
    #[target_feature(enable = "avx2")]
    fn codes8(mids: &[__m256; 15], s: __m256) -> __m256i {
        let mut count = _mm256_setzero_si256();
        for &m in mids {
            let below = _mm256_castps_si256(_mm256_cmp_ps::<_CMP_LT_OQ>(m, s));
            count = _mm256_sub_epi32(count, below);
        }
        count
    }

    #[inline]
    #[target_feature(enable = "avx2")]
    fn scale8(v: __m256, scaling: Scaling) -> __m256 {
        let s = match scaling {
            Scaling::MulBy(r) => _mm256_mul_ps(v, _mm256_set1_ps(r)),
            Scaling::DivBy(d) => _mm256_div_ps(v, _mm256_set1_ps(d)),
        };
        // clamp(s, -1, 1); s is finite, so min/max operand order does not matter.
        _mm256_min_ps(_mm256_max_ps(s, _mm256_set1_ps(-1.0)), _mm256_set1_ps(1.0))
    }

    /// 16 codes (two vectors of 8 i32 in 0..16, element order) -> 8 packed bytes.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn pack16(c0: __m256i, c1: __m256i) -> __m128i {
        // i32 -> i16 (packs works per 128-bit lane, so fix the order with a permute), then
        // pairs (hi, lo) -> hi * 16 + lo with maddubs, then i16 -> u8.
        let w = _mm256_permute4x64_epi64::<0b11_01_10_00>(_mm256_packs_epi32(c0, c1));
        let b = _mm_packus_epi16(_mm256_castsi256_si128(w), _mm256_extracti128_si256::<1>(w));
        let pairs = _mm_maddubs_epi16(b, _mm_set1_epi16(0x0110));
        _mm_packus_epi16(pairs, pairs)
    }

    /// # Safety
    /// The CPU must support AVX2; `x.len()` even and `out.len() == x.len() / 2`.
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn encode_avx2(
        mids: &[f32; 15],
        x: &[f32],
        scaling: Scaling,
        out: &mut [u8],
    ) {
        let vm: [__m256; 15] = std::array::from_fn(|i| _mm256_set1_ps(mids[i]));
        let mut chunks = x.chunks_exact(16);
        let mut outs = out.chunks_exact_mut(8);
        for (src, dst) in (&mut chunks).zip(&mut outs) {
            // SAFETY: `src` is 16 f32 and `dst` 8 bytes (chunks_exact): two 8-lane loads at
            // offsets 0 and 8 and one 8-byte store, all unaligned ops, in bounds.
            unsafe {
                let c0 = codes8(&vm, scale8(_mm256_loadu_ps(src.as_ptr()), scaling));
                let c1 = codes8(&vm, scale8(_mm256_loadu_ps(src.as_ptr().add(8)), scaling));
                _mm_storel_epi64(dst.as_mut_ptr().cast(), pack16(c0, c1));
            }
        }
        super::encode_scalar(mids, chunks.remainder(), scaling, outs.into_remainder());
    }

    /// # Safety
    /// The CPU must support AVX-512 F/BW/VL and AVX2; `x.len()` even and
    /// `out.len() == x.len() / 2`.
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
    pub(super) unsafe fn encode_avx512(
        mids: &[f32; 15],
        x: &[f32],
        scaling: Scaling,
        out: &mut [u8],
    ) {
        let vm: [__m512; 15] = std::array::from_fn(|i| _mm512_set1_ps(mids[i]));
        let (lo, hi) = (_mm512_set1_ps(-1.0), _mm512_set1_ps(1.0));
        let mut chunks = x.chunks_exact(32);
        let mut outs = out.chunks_exact_mut(16);
        for (src, dst) in (&mut chunks).zip(&mut outs) {
            let mut codes = [_mm512_setzero_si512(); 2];
            for (half, c) in codes.iter_mut().enumerate() {
                // SAFETY: `src` is 32 f32 (chunks_exact); the 16-lane load at 16 * half is in
                // bounds and unaligned.
                let v = unsafe { _mm512_loadu_ps(src.as_ptr().add(16 * half)) };
                let s = match scaling {
                    Scaling::MulBy(r) => _mm512_mul_ps(v, _mm512_set1_ps(r)),
                    Scaling::DivBy(d) => _mm512_div_ps(v, _mm512_set1_ps(d)),
                };
                let s = _mm512_min_ps(_mm512_max_ps(s, lo), hi);
                for &m in &vm {
                    let below = _mm512_cmp_ps_mask::<_CMP_LT_OQ>(m, s);
                    *c = _mm512_mask_add_epi32(*c, below, *c, _mm512_set1_epi32(1));
                }
            }
            // 32 codes as bytes in element order, then pairs (hi, lo) -> hi * 16 + lo.
            let b0 = _mm512_cvtepi32_epi8(codes[0]);
            let b1 = _mm512_cvtepi32_epi8(codes[1]);
            let pairs0 = _mm_maddubs_epi16(b0, _mm_set1_epi16(0x0110));
            let pairs1 = _mm_maddubs_epi16(b1, _mm_set1_epi16(0x0110));
            // SAFETY: `dst` is 16 bytes (chunks_exact): one unaligned 16-byte store.
            unsafe { _mm_storeu_si128(dst.as_mut_ptr().cast(), _mm_packus_epi16(pairs0, pairs1)) };
        }
        super::encode_scalar(mids, chunks.remainder(), scaling, outs.into_remainder());
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use super::Scaling;
    use std::arch::aarch64::*;

    /// Per lane: the midpoints strictly below the scaled, clamped value (masks are all ones, so
    /// subtract). NaN compares false everywhere and gets code 0, as in the scalar kernel.
    #[inline]
    #[target_feature(enable = "neon")]
    fn codes4(mids: &[float32x4_t; 15], v: float32x4_t, scaling: Scaling) -> uint32x4_t {
        let s = match scaling {
            Scaling::MulBy(r) => vmulq_f32(v, vdupq_n_f32(r)),
            Scaling::DivBy(d) => vdivq_f32(v, vdupq_n_f32(d)),
        };
        let s = vminq_f32(vmaxq_f32(s, vdupq_n_f32(-1.0)), vdupq_n_f32(1.0));
        let mut count = vdupq_n_u32(0);
        for &m in mids {
            count = vsubq_u32(count, vcltq_f32(m, s));
        }
        count
    }

    /// # Safety
    /// The CPU must support NEON; `x.len()` even and `out.len() == x.len() / 2`.
    #[target_feature(enable = "neon")]
    pub(super) unsafe fn encode_neon(
        mids: &[f32; 15],
        x: &[f32],
        scaling: Scaling,
        out: &mut [u8],
    ) {
        let vm: [float32x4_t; 15] = std::array::from_fn(|i| vdupq_n_f32(mids[i]));
        let mut chunks = x.chunks_exact(16);
        let mut outs = out.chunks_exact_mut(8);
        for (src, dst) in (&mut chunks).zip(&mut outs) {
            // SAFETY: `src` is 16 f32 and `dst` 8 bytes (chunks_exact): two de-interleaving
            // loads of 8 f32 at 0 and 8 and one 8-byte store, in bounds.
            unsafe {
                let bytes: [uint16x4_t; 2] = std::array::from_fn(|h| {
                    // .0 holds the even elements (high nibbles), .1 the odd ones.
                    let pairs = vld2q_f32(src.as_ptr().add(8 * h));
                    let hi = codes4(&vm, pairs.0, scaling);
                    let lo = codes4(&vm, pairs.1, scaling);
                    vmovn_u32(vorrq_u32(vshlq_n_u32::<4>(hi), lo))
                });
                vst1_u8(
                    dst.as_mut_ptr(),
                    vmovn_u16(vcombine_u16(bytes[0], bytes[1])),
                );
            }
        }
        super::encode_scalar(mids, chunks.remainder(), scaling, outs.into_remainder());
    }
}
