//! Do the SIMD decoders produce exactly the scalar decoder's bits, at every level this CPU has,
//! for any number of blocks and any alignment of source and destination?

mod quant_util;

use edgetune::cpu::{available_levels, SimdLevel};
use edgetune::gguf::GgmlType;
use edgetune::quant::{decode_level, dequantize_at, FORMATS};
use quant_util::{first_mismatch, random_blocks, Rng};

const BLOCK_COUNTS: &[usize] = &[1, 2, 3, 5, 17, 64];

/// Decodes `n` blocks at `level` from a source starting `src_off` bytes into its buffer into a
/// destination starting `dst_off` f32 into its buffer, and compares with the scalar decoder.
fn check(ty: GgmlType, level: SimdLevel, n: usize, sane: bool, seed: u64) {
    let mut rng = Rng(seed);
    let blocks = random_blocks(ty, n, &mut rng, sane);
    let elems = n * ty.block_size();
    let mut want = vec![0f32; elems];
    dequantize_at(SimdLevel::Scalar, ty, &blocks, &mut want).unwrap();
    for src_off in 0..4 {
        for dst_off in 0..3 {
            let mut src = vec![0u8; src_off + blocks.len()];
            src[src_off..].copy_from_slice(&blocks);
            // Guard values around the destination catch writes out of bounds.
            let mut dst = vec![-7.25f32; dst_off + elems + 16];
            dequantize_at(
                level,
                ty,
                &src[src_off..],
                &mut dst[dst_off..dst_off + elems],
            )
            .unwrap();
            if let Some(i) = first_mismatch(&dst[dst_off..dst_off + elems], &want) {
                panic!(
                    "{ty} at {}: {n} blocks (sane scales: {sane}), src offset {src_off}, dst \
                     offset {dst_off}: element {i} is {:?} ({:#010x}), scalar gives {:?} ({:#010x})",
                    level.name(),
                    dst[dst_off + i],
                    dst[dst_off + i].to_bits(),
                    want[i],
                    want[i].to_bits()
                );
            }
            let outside = dst[..dst_off].iter().chain(&dst[dst_off + elems..]);
            assert!(
                outside.into_iter().all(|&v| v == -7.25),
                "{ty} at {}: wrote outside the destination",
                level.name()
            );
        }
    }
}

#[test]
fn every_level_matches_scalar_bit_for_bit() {
    for f in &FORMATS {
        for &level in available_levels() {
            for (i, &n) in BLOCK_COUNTS.iter().enumerate() {
                let seed = u64::from(f.ty.id()) << 32 | (i as u64) << 8;
                check(f.ty, level, n, true, seed);
                check(f.ty, level, n, false, seed | 1);
            }
        }
    }
}

/// The formats the model code leans on have a kernel at each level the CPU offers, so the test
/// above is not comparing scalar with scalar.
#[test]
fn hot_formats_have_simd_kernels() {
    use GgmlType::*;
    let hot = [Q4_0, Q4_1, Q8_0, Q4_K, Q6_K, F16, BF16];
    for &level in available_levels() {
        for ty in hot {
            let used = decode_level(level, ty).unwrap();
            match level {
                SimdLevel::Scalar => assert_eq!(used, SimdLevel::Scalar),
                SimdLevel::Avx2 => assert_eq!(used, SimdLevel::Avx2, "{ty}"),
                // AVX-512 kernels exist only where they measured faster (not F16, BF16).
                SimdLevel::Avx512 if matches!(ty, F16 | BF16) => {
                    assert_eq!(used, SimdLevel::Avx2)
                }
                SimdLevel::Avx512 => assert_eq!(used, SimdLevel::Avx512, "{ty}"),
                SimdLevel::Neon => assert_eq!(used, SimdLevel::Neon, "{ty}"),
            }
        }
    }
}

#[test]
fn unavailable_level_is_an_error_not_a_crash() {
    #[cfg(target_arch = "x86_64")]
    let foreign = SimdLevel::Neon;
    #[cfg(not(target_arch = "x86_64"))]
    let foreign = SimdLevel::Avx2;
    let mut out = [0f32; 32];
    let err = dequantize_at(foreign, GgmlType::Q4_0, &[0u8; 18], &mut out).unwrap_err();
    assert!(err.to_string().contains(foreign.name()), "{err}");
}
