//! SIMD decode kernels, chosen at run time (see `crate::cpu`). Each kernel performs the same f32
//! operations, in the same order, as its format's scalar decoder, so results are bit-identical at
//! every level (except NaN payloads of F16 elements: F16C quiets signalling NaNs). Kernels are `unsafe fn`s with `#[target_feature]`; they are reachable only through
//! the traits table (`super::FORMATS`), whose dispatcher checks the CPU first.
//!
//! Kernel contract: `kernel(src, dst)` decodes min(src.len() / block bytes, dst.len() / block
//! elements) whole blocks and touches nothing outside the two slices.

#![deny(unsafe_op_in_unsafe_fn)]

use super::SimdDecode;
#[allow(unused_imports)]
use crate::cpu::SimdLevel;
use crate::gguf::GgmlType;

#[cfg(target_arch = "x86_64")]
mod avx2;
#[cfg(target_arch = "x86_64")]
mod avx512;
#[cfg(target_arch = "aarch64")]
mod neon;

/// The SIMD decoders of `ty` compiled for this architecture, lowest level first.
pub(super) const fn kernels(ty: GgmlType) -> &'static [SimdDecode] {
    #[cfg(target_arch = "x86_64")]
    {
        x86::kernels(ty)
    }
    #[cfg(target_arch = "aarch64")]
    {
        neon::kernels(ty)
    }
    #[cfg(not(any(target_arch = "x86_64", target_arch = "aarch64")))]
    {
        let _ = ty;
        &[]
    }
}

#[cfg(target_arch = "x86_64")]
mod x86 {
    use super::{avx2, avx512, GgmlType, SimdDecode, SimdLevel};

    macro_rules! table {
        ($($name:ident => [$($level:ident: $kernel:path),*];)*) => {
            $(const $name: &[SimdDecode] = &[
                $(SimdDecode { level: SimdLevel::$level, kernel: $kernel }),*
            ];)*
            pub(super) const fn kernels(ty: GgmlType) -> &'static [SimdDecode] {
                match ty {
                    $(GgmlType::$name => $name,)*
                    _ => &[],
                }
            }
        };
    }

    // AVX-512 kernels only where they measured faster than AVX2 (benches/decode.rs); F16 and BF16
    // are store-bound and gained nothing from 512-bit registers.
    table! {
        F16 => [Avx2: avx2::f16];
        BF16 => [Avx2: avx2::bf16];
        Q4_0 => [Avx2: avx2::q4_0, Avx512: avx512::q4_0];
        Q4_1 => [Avx2: avx2::q4_1, Avx512: avx512::q4_1];
        Q5_0 => [Avx2: avx2::q5_0];
        Q5_1 => [Avx2: avx2::q5_1];
        Q8_0 => [Avx2: avx2::q8_0, Avx512: avx512::q8_0];
        Q4_K => [Avx2: avx2::q4_k, Avx512: avx512::q4_k];
        Q5_K => [Avx2: avx2::q5_k];
        Q6_K => [Avx2: avx2::q6_k, Avx512: avx512::q6_k];
        IQ4_NL => [Avx2: avx2::iq4_nl];
        IQ4_XS => [Avx2: avx2::iq4_xs];
    }
}
