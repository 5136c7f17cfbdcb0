//! NF4 decode kernels: packed codes (two per byte, first element in the high nibble) times one
//! block scale. The scalar kernel is the specification; the AVX2, AVX-512 and NEON kernels compute
//! the same f32 products (`table[code] * scale`, one IEEE multiply each), so they are
//! bit-identical.

#![deny(unsafe_op_in_unsafe_fn)]

use crate::cpu::SimdLevel;

/// Decodes whole blocks: `bytes` holds `scales.len()` blocks of `block_bytes` bytes (a multiple
/// of 16), block `i` scaled by `scales[i]`; `out.len() == 2 * bytes.len()`. The caller has
/// checked that `level` is available on this CPU.
pub(super) fn decode_blocks(
    level: SimdLevel,
    table: &[f32; 16],
    bytes: &[u8],
    scales: &[f32],
    block_bytes: usize,
    out: &mut [f32],
) {
    debug_assert_eq!(bytes.len(), scales.len() * block_bytes);
    debug_assert_eq!(out.len(), 2 * bytes.len());
    debug_assert_eq!(block_bytes % 16, 0);
    match level {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: the caller checked that `level` is in `available_levels()`, i.e. the CPU has
        // AVX-512 F/BW/VL (and AVX2).
        SimdLevel::Avx512 => unsafe { x86::decode_avx512(table, bytes, scales, block_bytes, out) },
        #[cfg(target_arch = "x86_64")]
        // SAFETY: as above, the CPU has AVX2.
        SimdLevel::Avx2 => unsafe { x86::decode_avx2(table, bytes, scales, block_bytes, out) },
        #[cfg(target_arch = "aarch64")]
        // SAFETY: the caller checked that `level` is in `available_levels()`: the CPU has NEON.
        SimdLevel::Neon => unsafe { neon::decode_neon(table, bytes, scales, block_bytes, out) },
        _ => {
            let blocks = bytes
                .chunks(block_bytes)
                .zip(out.chunks_mut(2 * block_bytes));
            for ((b, o), &scale) in blocks.zip(scales) {
                decode_scalar(table, b, scale, o);
            }
        }
    }
}

/// The reference kernel.
pub(super) fn decode_scalar(table: &[f32; 16], bytes: &[u8], scale: f32, out: &mut [f32]) {
    for (pair, &b) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = table[(b >> 4) as usize] * scale;
        pair[1] = table[(b & 15) as usize] * scale;
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use std::arch::x86_64::*;

    /// 16 bytes -> 32 nibble indices in element order: high nibble of byte k, then its low one.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn nibbles(b: __m128i) -> (__m128i, __m128i) {
        let mask = _mm_set1_epi8(0x0f);
        let hi = _mm_and_si128(_mm_srli_epi16::<4>(b), mask);
        let lo = _mm_and_si128(b, mask);
        (_mm_unpacklo_epi8(hi, lo), _mm_unpackhi_epi8(hi, lo))
    }

    /// 8 indices (the low 8 bytes of `idx`) -> 8 table values, via two 8-entry permutes and a
    /// blend on bit 3 of the index.
    #[inline]
    #[target_feature(enable = "avx2")]
    fn lookup8(lo_tab: __m256, hi_tab: __m256, idx: __m128i) -> __m256 {
        let i = _mm256_cvtepu8_epi32(idx);
        let from_lo = _mm256_permutevar8x32_ps(lo_tab, i);
        let from_hi = _mm256_permutevar8x32_ps(hi_tab, i);
        _mm256_blendv_ps(
            from_lo,
            from_hi,
            _mm256_castsi256_ps(_mm256_slli_epi32::<28>(i)),
        )
    }

    /// # Safety
    /// The CPU must support AVX2; lengths as for [`super::decode_blocks`].
    #[target_feature(enable = "avx2")]
    pub(super) unsafe fn decode_avx2(
        table: &[f32; 16],
        bytes: &[u8],
        scales: &[f32],
        block_bytes: usize,
        out: &mut [f32],
    ) {
        // SAFETY: `table` holds 16 f32, so both unaligned 8-lane loads are in bounds.
        let (lo_tab, hi_tab) = unsafe {
            (
                _mm256_loadu_ps(table.as_ptr()),
                _mm256_loadu_ps(table.as_ptr().add(8)),
            )
        };
        let blocks = bytes
            .chunks(block_bytes)
            .zip(out.chunks_mut(2 * block_bytes));
        for ((block, block_out), &scale) in blocks.zip(scales) {
            let vscale = _mm256_set1_ps(scale);
            let mut chunks = block.chunks_exact(16);
            let mut outs = block_out.chunks_exact_mut(32);
            for (src, dst) in (&mut chunks).zip(&mut outs) {
                // SAFETY: `src` is 16 bytes and `dst` 32 f32 (chunks_exact), so the 16-byte
                // load and the four 8-lane stores at 0, 8, 16, 24 are in bounds; all unaligned.
                unsafe {
                    let (first, second) = nibbles(_mm_loadu_si128(src.as_ptr().cast()));
                    let p = dst.as_mut_ptr();
                    let v0 = lookup8(lo_tab, hi_tab, first);
                    let v1 = lookup8(lo_tab, hi_tab, _mm_srli_si128::<8>(first));
                    let v2 = lookup8(lo_tab, hi_tab, second);
                    let v3 = lookup8(lo_tab, hi_tab, _mm_srli_si128::<8>(second));
                    _mm256_storeu_ps(p, _mm256_mul_ps(v0, vscale));
                    _mm256_storeu_ps(p.add(8), _mm256_mul_ps(v1, vscale));
                    _mm256_storeu_ps(p.add(16), _mm256_mul_ps(v2, vscale));
                    _mm256_storeu_ps(p.add(24), _mm256_mul_ps(v3, vscale));
                }
            }
            super::decode_scalar(table, chunks.remainder(), scale, outs.into_remainder());
        }
    }

    /// # Safety
    /// The CPU must support AVX-512 F/BW/VL and AVX2; lengths as for [`super::decode_blocks`].
    #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2")]
    pub(super) unsafe fn decode_avx512(
        table: &[f32; 16],
        bytes: &[u8],
        scales: &[f32],
        block_bytes: usize,
        out: &mut [f32],
    ) {
        // SAFETY: `table` holds exactly 16 f32 = one unaligned 512-bit load.
        let tab = unsafe { _mm512_loadu_ps(table.as_ptr()) };
        let blocks = bytes
            .chunks(block_bytes)
            .zip(out.chunks_mut(2 * block_bytes));
        for ((block, block_out), &scale) in blocks.zip(scales) {
            let vscale = _mm512_set1_ps(scale);
            let mut chunks = block.chunks_exact(16);
            let mut outs = block_out.chunks_exact_mut(32);
            for (src, dst) in (&mut chunks).zip(&mut outs) {
                // SAFETY: `src` is 16 bytes and `dst` 32 f32 (chunks_exact): one 16-byte load
                // and two 16-lane stores at 0 and 16, all unaligned, in bounds.
                unsafe {
                    let (first, second) = nibbles(_mm_loadu_si128(src.as_ptr().cast()));
                    let v0 = _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(first), tab);
                    let v1 = _mm512_permutexvar_ps(_mm512_cvtepu8_epi32(second), tab);
                    let p = dst.as_mut_ptr();
                    _mm512_storeu_ps(p, _mm512_mul_ps(v0, vscale));
                    _mm512_storeu_ps(p.add(16), _mm512_mul_ps(v1, vscale));
                }
            }
            super::decode_scalar(table, chunks.remainder(), scale, outs.into_remainder());
        }
    }
}

#[cfg(target_arch = "aarch64")]
mod neon {
    use std::arch::aarch64::*;

    /// The table split into byte planes: `planes[k][i]` is byte `k` (little-endian) of the bits
    /// of `table[i]`, so one 16-entry byte lookup (`tbl`) per plane fetches a quarter of 16
    /// values' bits.
    fn planes(table: &[f32; 16]) -> [[u8; 16]; 4] {
        let mut planes = [[0u8; 16]; 4];
        for (i, v) in table.iter().enumerate() {
            for (k, b) in v.to_bits().to_le_bytes().into_iter().enumerate() {
                planes[k][i] = b;
            }
        }
        planes
    }

    /// 16 indices (each < 16) -> the 16 table values, in index order, as four f32x4.
    #[inline]
    #[target_feature(enable = "neon")]
    fn lookup16(planes: &[uint8x16_t; 4], idx: uint8x16_t) -> [float32x4_t; 4] {
        let b: [uint8x16_t; 4] = std::array::from_fn(|k| vqtbl1q_u8(planes[k], idx));
        // Interleave bytes 0|1 and 2|3 into u16 halves, then the halves into u32 lanes:
        // lane bits = b0 | b1 << 8 | b2 << 16 | b3 << 24.
        let w01 = [
            vreinterpretq_u16_u8(vzip1q_u8(b[0], b[1])),
            vreinterpretq_u16_u8(vzip2q_u8(b[0], b[1])),
        ];
        let w23 = [
            vreinterpretq_u16_u8(vzip1q_u8(b[2], b[3])),
            vreinterpretq_u16_u8(vzip2q_u8(b[2], b[3])),
        ];
        [
            vreinterpretq_f32_u16(vzip1q_u16(w01[0], w23[0])),
            vreinterpretq_f32_u16(vzip2q_u16(w01[0], w23[0])),
            vreinterpretq_f32_u16(vzip1q_u16(w01[1], w23[1])),
            vreinterpretq_f32_u16(vzip2q_u16(w01[1], w23[1])),
        ]
    }

    /// # Safety
    /// The CPU must support NEON; lengths as for [`super::decode_blocks`].
    #[target_feature(enable = "neon")]
    pub(super) unsafe fn decode_neon(
        table: &[f32; 16],
        bytes: &[u8],
        scales: &[f32],
        block_bytes: usize,
        out: &mut [f32],
    ) {
        let raw = planes(table);
        // SAFETY: each plane is 16 bytes, one 16-byte load.
        let planes: [uint8x16_t; 4] = std::array::from_fn(|k| unsafe { vld1q_u8(raw[k].as_ptr()) });
        let blocks = bytes
            .chunks(block_bytes)
            .zip(out.chunks_mut(2 * block_bytes));
        for ((block, block_out), &scale) in blocks.zip(scales) {
            let vscale = vdupq_n_f32(scale);
            let mut chunks = block.chunks_exact(16);
            let mut outs = block_out.chunks_exact_mut(32);
            for (src, dst) in (&mut chunks).zip(&mut outs) {
                // SAFETY: `src` is 16 bytes and `dst` 32 f32 (chunks_exact): one 16-byte load
                // and four interleaving stores of 8 f32 at 0, 8, 16, 24, all in bounds (NEON
                // loads and stores need no alignment beyond the element's).
                unsafe {
                    let b = vld1q_u8(src.as_ptr());
                    // Element 2k is byte k's high nibble, element 2k + 1 its low one.
                    let hi = lookup16(&planes, vshrq_n_u8::<4>(b));
                    let lo = lookup16(&planes, vandq_u8(b, vdupq_n_u8(0x0f)));
                    let p = dst.as_mut_ptr();
                    for j in 0..4 {
                        let pair =
                            float32x4x2_t(vmulq_f32(hi[j], vscale), vmulq_f32(lo[j], vscale));
                        vst2q_f32(p.add(8 * j), pair);
                    }
                }
            }
            super::decode_scalar(table, chunks.remainder(), scale, outs.into_remainder());
        }
    }
}
