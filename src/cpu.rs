//! CPU feature detection, done once. SIMD kernels are chosen at run time from `SimdLevel`, never
//! from compile-time `target-cpu` flags, so one binary runs on every machine of its architecture.
//!
//! `EDGETUNE_SIMD=scalar|avx2|avx512|neon` caps the level (for tests and for bisecting a bad
//! kernel); it can lower the level, never raise it above what the CPU has. `EDGETUNE_BF16=off`
//! hides the bf16 dot-product instruction (`has_bf16_dot`).

use std::sync::OnceLock;

/// Instruction-set levels that kernels specialise for. On x86-64, `Avx2` means AVX2 + FMA + F16C,
/// `Avx512` means AVX-512 F/BW/VL on top of that.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SimdLevel {
    Scalar,
    Avx2,
    Avx512,
    Neon,
}

impl SimdLevel {
    pub fn name(self) -> &'static str {
        match self {
            SimdLevel::Scalar => "scalar",
            SimdLevel::Avx2 => "avx2",
            SimdLevel::Avx512 => "avx512",
            SimdLevel::Neon => "neon",
        }
    }

    fn from_name(s: &str) -> Option<SimdLevel> {
        [
            SimdLevel::Scalar,
            SimdLevel::Avx2,
            SimdLevel::Avx512,
            SimdLevel::Neon,
        ]
        .into_iter()
        .find(|l| l.name().eq_ignore_ascii_case(s.trim()))
    }
}

/// Every level this CPU can run, lowest first (always starts with `Scalar`). Tests run each kernel
/// at each of these.
pub fn available_levels() -> &'static [SimdLevel] {
    static LEVELS: OnceLock<Vec<SimdLevel>> = OnceLock::new();
    LEVELS.get_or_init(|| {
        #[allow(unused_mut)]
        let mut v = vec![SimdLevel::Scalar];
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx2")
                && std::arch::is_x86_feature_detected!("fma")
                && std::arch::is_x86_feature_detected!("f16c")
            {
                v.push(SimdLevel::Avx2);
                if std::arch::is_x86_feature_detected!("avx512f")
                    && std::arch::is_x86_feature_detected!("avx512bw")
                    && std::arch::is_x86_feature_detected!("avx512vl")
                {
                    v.push(SimdLevel::Avx512);
                }
            }
        }
        #[cfg(target_arch = "aarch64")]
        {
            if std::arch::is_aarch64_feature_detected!("neon") {
                v.push(SimdLevel::Neon);
            }
        }
        v
    })
}

/// The level kernels use: the best available one, capped by `EDGETUNE_SIMD` if set.
pub fn simd_level() -> SimdLevel {
    static LEVEL: OnceLock<SimdLevel> = OnceLock::new();
    *LEVEL.get_or_init(|| {
        let levels = available_levels();
        let best = *levels.last().unwrap_or(&SimdLevel::Scalar);
        match std::env::var("EDGETUNE_SIMD")
            .ok()
            .and_then(|s| SimdLevel::from_name(&s))
        {
            // The highest available level not above the cap (levels of the other architecture
            // never appear in `levels`).
            Some(cap) => levels
                .iter()
                .copied()
                .rfind(|l| *l <= cap)
                .unwrap_or(SimdLevel::Scalar),
            None => best,
        }
    })
}

/// Whether the CPU has a bf16 dot-product instruction the backend uses for `Compute::Bf16`
/// (x86-64: AVX-512 BF16, `vdpbf16ps`, next to AVX-512 F/BW/VL). A separate query, not a
/// `SimdLevel`: it only adds a GEMM kernel beside the AVX-512 level. `EDGETUNE_BF16=off` turns
/// it off (bf16 compute then rounds inputs and runs the f32 kernels), for tests and comparisons.
pub fn has_bf16_dot() -> bool {
    static HAS: OnceLock<bool> = OnceLock::new();
    *HAS.get_or_init(|| {
        let off =
            std::env::var("EDGETUNE_BF16").is_ok_and(|v| v.trim().eq_ignore_ascii_case("off"));
        #[cfg(target_arch = "x86_64")]
        {
            !off && available_levels().contains(&SimdLevel::Avx512)
                && std::arch::is_x86_feature_detected!("avx512bf16")
        }
        #[cfg(not(target_arch = "x86_64"))]
        {
            let _ = off;
            false
        }
    })
}

/// Defines `$name(level, args..)`, which runs `$body` compiled for the widest vectors of `level`
/// (plain loops the compiler vectorises: without this they get the baseline target's 128-bit
/// vectors). The body is the same code at every level, and Rust never contracts `a * b + c` into
/// a fused multiply-add on its own, so results do not depend on the level.
macro_rules! per_level {
    ($(#[$doc:meta])* fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$doc])*
        #[allow(clippy::too_many_arguments)]
        pub(crate) fn $name(level: $crate::cpu::SimdLevel, $($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx512f,avx512bw,avx512vl,avx2,fma")]
            fn avx512($($arg: $ty),*) $(-> $ret)? {
                body($($arg),*)
            }
            #[cfg(target_arch = "x86_64")]
            #[target_feature(enable = "avx2,fma")]
            fn avx2($($arg: $ty),*) $(-> $ret)? {
                body($($arg),*)
            }
            match level {
                // SAFETY: backends hold only levels from `available_levels()`: the CPU has these
                // features.
                #[cfg(target_arch = "x86_64")]
                $crate::cpu::SimdLevel::Avx512 => unsafe { avx512($($arg),*) },
                // SAFETY: as above.
                #[cfg(target_arch = "x86_64")]
                $crate::cpu::SimdLevel::Avx2 => unsafe { avx2($($arg),*) },
                _ => body($($arg),*),
            }
        }
    };
}
pub(crate) use per_level;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scalar_is_always_available_and_chosen_level_is_available() {
        assert_eq!(available_levels()[0], SimdLevel::Scalar);
        assert!(available_levels().contains(&simd_level()));
    }

    /// Every aarch64 CPU has NEON (Advanced SIMD is mandatory in ARMv8-A); the per-level kernel
    /// tests rely on it being listed, or they would compare scalar with scalar.
    #[cfg(target_arch = "aarch64")]
    #[test]
    fn neon_is_available_on_aarch64() {
        assert!(available_levels().contains(&SimdLevel::Neon));
    }
}
