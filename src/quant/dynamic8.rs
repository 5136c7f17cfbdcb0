//! bitsandbytes' 8-bit dynamic maps and blockwise 8-bit quantization with them.
//!
//! Used by NF4 double quantization (the per-block absmax of NF4, centred on its mean, is stored as
//! u8 codes of the signed map in blocks of 256) and by the 8-bit optimizer states (Adam's first
//! moment uses the signed map, the second moment the unsigned one). FORMATS.md Part II §1.4, §2.2.
//!
//! The maps are stored as the f32 bit patterns bitsandbytes 0.50.2 produces
//! (`create_dynamic_map(signed=True/False)`); a test compares them with the library's output.
//!
//! Two rounding rules, each reproducing one bitsandbytes kernel bit for bit (both verified against
//! fixtures from the library, `tests/nf4_bitsandbytes.rs`):
//! - [`Rounding::Nearest`]: bitsandbytes' pure-PyTorch reference kernel
//!   (`backends/default/ops.py::quantize_blockwise`): the nearest map value, a value exactly on a
//!   midpoint `(map[i] + map[i+1]) / 2` (f32) goes to the lower index (`bucketize(right=False)`).
//!   Full blocks are scaled by `x * (1 / max(absmax, 1e-38))`; the last, partial block by
//!   `x / max(absmax, 1e-38)` and its stored absmax is that clamped value.
//! - [`Rounding::BnbCpuTable`]: the C++ kernel bitsandbytes 0.50.2 actually runs on CPU
//!   (`quantize_cpu`): `x * (1 / absmax)` is looked up in a 65 536-bin table over [-1, 1] built
//!   from the midpoints. Bins are 3.05e-5 wide, so near a midpoint, and near zero where map values
//!   are denser than the bins, it can pick a neighbour of the nearest value. An all-zero block
//!   gets absmax 0 and codes 0.
//!
//! Dequantization is the same for both: `map[code] * absmax[block]` in f32.

use crate::error::{Error, Result};
use std::sync::OnceLock;

/// Number of entries in a dynamic map.
pub const MAP_LEN: usize = 256;
/// Bins of the lookup table of [`Rounding::BnbCpuTable`] (bitsandbytes' `kLUTSize`).
pub const TABLE_BINS: usize = 65536;
/// The smallest divisor bitsandbytes' reference kernel uses (`absmax.clamp(min=1e-38)`), as f32.
pub const MIN_ABSMAX: f32 = 1e-38;

/// `create_dynamic_map(signed=True)` (the "dynamic" map): 127 negative values from -0.99296874,
/// zero at index 127, 128 positive values up to 1.0.
#[rustfmt::skip]
pub const SIGNED_BITS: [u32; 256] = [
    0xbf7e3333, 0xbf7a999a, 0xbf770000, 0xbf736666, 0xbf6fcccd, 0xbf6c3333, 0xbf68999a, 0xbf650000, // 0
    0xbf616666, 0xbf5dcccd, 0xbf5a3333, 0xbf56999a, 0xbf530000, 0xbf4f6666, 0xbf4bcccd, 0xbf483333, // 8
    0xbf44999a, 0xbf410000, 0xbf3d6666, 0xbf39cccd, 0xbf363334, 0xbf32999a, 0xbf2f0000, 0xbf2b6666, // 16
    0xbf27cccd, 0xbf243334, 0xbf20999a, 0xbf1d0000, 0xbf196666, 0xbf15cccd, 0xbf123334, 0xbf0e999a, // 24
    0xbf0b0000, 0xbf076666, 0xbf03cccc, 0xbf003333, 0xbef93332, 0xbef20000, 0xbeeacccc, 0xbee3999a, // 32
    0xbedc6666, 0xbed53333, 0xbece0000, 0xbec6cccc, 0xbebf999a, 0xbeb86666, 0xbeb13333, 0xbeaa0000, // 40
    0xbea2cccc, 0xbe9b999a, 0xbe946666, 0xbe8d3334, 0xbe860000, 0xbe7d9999, 0xbe6f3333, 0xbe60cccd, // 48
    0xbe526666, 0xbe440000, 0xbe35999a, 0xbe273333, 0xbe18cccd, 0xbe0a6666, 0xbdf80000, 0xbddb3334, // 56
    0xbdc9eb85, 0xbdc428f7, 0xbdbe6667, 0xbdb8a3d7, 0xbdb2e148, 0xbdad1eb8, 0xbda75c2a, 0xbda1999a, // 64
    0xbd9bd70a, 0xbd96147b, 0xbd9051eb, 0xbd8a8f5d, 0xbd84cccd, 0xbd7e147b, 0xbd728f5d, 0xbd670a3d, // 72
    0xbd5b851f, 0xbd500000, 0xbd447ae1, 0xbd38f5c3, 0xbd2d70a3, 0xbd21eb85, 0xbd166667, 0xbd0ae148, // 80
    0xbcfeb852, 0xbce7ae15, 0xbcd0a3d7, 0xbcb9999a, 0xbca28f5d, 0xbc8b851f, 0xbc68f5c3, 0xbc3ae148, // 88
    0xbc1f3b64, 0xbc160418, 0xbc0ccccd, 0xbc039581, 0xbbf4bc6a, 0xbbe24dd3, 0xbbcfdf3b, 0xbbbd70a4, // 96
    0xbbab020d, 0xbb989374, 0xbb8624dd, 0xbb676c8a, 0xbb428f5c, 0xbb1db22d, 0xbaf1a9fc, 0xbaa7ef9d, // 104
    0xba7765ff, 0xba59e83e, 0xba3c6a80, 0xba1eecc1, 0xba016f01, 0xb9c7e283, 0xb98ce705, 0xb923d70b, // 112
    0xb8ba1f4b, 0xb88aefb3, 0xb8378034, 0xb7b24206, 0xb70205ff, 0xb65a1a94, 0xb513a3b7, 0x00000000, // 120
    0x3513a3b7, 0x365a1a94, 0x370205ff, 0x37b24206, 0x38378034, 0x388aefb3, 0x38ba1f4b, 0x3923d70b, // 128
    0x398ce705, 0x39c7e283, 0x3a016f01, 0x3a1eecc1, 0x3a3c6a80, 0x3a59e83e, 0x3a7765ff, 0x3aa7ef9d, // 136
    0x3af1a9fc, 0x3b1db22d, 0x3b428f5c, 0x3b676c8a, 0x3b8624dd, 0x3b989374, 0x3bab020d, 0x3bbd70a4, // 144
    0x3bcfdf3b, 0x3be24dd3, 0x3bf4bc6a, 0x3c039581, 0x3c0ccccd, 0x3c160418, 0x3c1f3b64, 0x3c3ae148, // 152
    0x3c68f5c3, 0x3c8b851f, 0x3ca28f5d, 0x3cb9999a, 0x3cd0a3d7, 0x3ce7ae15, 0x3cfeb852, 0x3d0ae148, // 160
    0x3d166667, 0x3d21eb85, 0x3d2d70a3, 0x3d38f5c3, 0x3d447ae1, 0x3d500000, 0x3d5b851f, 0x3d670a3d, // 168
    0x3d728f5d, 0x3d7e147b, 0x3d84cccd, 0x3d8a8f5d, 0x3d9051eb, 0x3d96147b, 0x3d9bd70a, 0x3da1999a, // 176
    0x3da75c2a, 0x3dad1eb8, 0x3db2e148, 0x3db8a3d7, 0x3dbe6667, 0x3dc428f7, 0x3dc9eb85, 0x3ddb3334, // 184
    0x3df80000, 0x3e0a6666, 0x3e18cccd, 0x3e273333, 0x3e35999a, 0x3e440000, 0x3e526666, 0x3e60cccd, // 192
    0x3e6f3333, 0x3e7d9999, 0x3e860000, 0x3e8d3334, 0x3e946666, 0x3e9b999a, 0x3ea2cccc, 0x3eaa0000, // 200
    0x3eb13333, 0x3eb86666, 0x3ebf999a, 0x3ec6cccc, 0x3ece0000, 0x3ed53333, 0x3edc6666, 0x3ee3999a, // 208
    0x3eeacccc, 0x3ef20000, 0x3ef93332, 0x3f003333, 0x3f03cccc, 0x3f076666, 0x3f0b0000, 0x3f0e999a, // 216
    0x3f123334, 0x3f15cccd, 0x3f196666, 0x3f1d0000, 0x3f20999a, 0x3f243334, 0x3f27cccd, 0x3f2b6666, // 224
    0x3f2f0000, 0x3f32999a, 0x3f363334, 0x3f39cccd, 0x3f3d6666, 0x3f410000, 0x3f44999a, 0x3f483333, // 232
    0x3f4bcccd, 0x3f4f6666, 0x3f530000, 0x3f56999a, 0x3f5a3333, 0x3f5dcccd, 0x3f616666, 0x3f650000, // 240
    0x3f68999a, 0x3f6c3333, 0x3f6fcccd, 0x3f736666, 0x3f770000, 0x3f7a999a, 0x3f7e3333, 0x3f800000, // 248
];

/// `create_dynamic_map(signed=False)` (the "udynamic" map): 0.0 at index 0 up to 1.0.
#[rustfmt::skip]
pub const UNSIGNED_BITS: [u32; 256] = [
    0x00000000, 0x34ae7baa, 0x35500998, 0x360e9b38, 0x3692ccf6, 0x36de4c51, 0x3714e5d5, 0x3783126e, // 0
    0x37e171a0, 0x381fe868, 0x384f1800, 0x387e479a, 0x3896bb99, 0x38ae5364, 0x38c5eb31, 0x3906594b, // 8
    0x394154ca, 0x397c5049, 0x399ba5e4, 0x39b923a2, 0x39d6a163, 0x39f41f22, 0x3a08ce71, 0x3a178d50, // 16
    0x3a264c30, 0x3a350b10, 0x3a43c9ef, 0x3a5288d0, 0x3a6147af, 0x3a70068e, 0x3a7ec56e, 0x3a958106, // 24
    0x3aba5e35, 0x3adf3b64, 0x3b020c4a, 0x3b147ae1, 0x3b26e978, 0x3b395810, 0x3b4bc6a7, 0x3b5e3540, // 32
    0x3b70a3d7, 0x3b818937, 0x3b8ac082, 0x3b93f7cf, 0x3b9d2f1a, 0x3ba66666, 0x3baf9db2, 0x3bb8d4fd, // 40
    0x3bc20c4a, 0x3bcb4395, 0x3bd47ae1, 0x3bddb22e, 0x3be6e978, 0x3bf020c5, 0x3bf9580f, 0x3c0147ae, // 48
    0x3c05e354, 0x3c0a7ef9, 0x3c0f1aa0, 0x3c13b645, 0x3c1851eb, 0x3c1ced92, 0x3c218937, 0x3c2f5c2a, // 56
    0x3c466667, 0x3c5d70a3, 0x3c747ae2, 0x3c85c28f, 0x3c9147af, 0x3c9ccccd, 0x3ca851eb, 0x3cb3d70b, // 64
    0x3cbf5c29, 0x3ccae147, 0x3cd66667, 0x3ce1eb87, 0x3ced70a3, 0x3cf8f5c3, 0x3d023d70, 0x3d080000, // 72
    0x3d0dc28f, 0x3d13851f, 0x3d1947af, 0x3d1f0a3d, 0x3d24cccd, 0x3d2a8f5c, 0x3d3051eb, 0x3d36147b, // 80
    0x3d3bd70a, 0x3d41999a, 0x3d475c28, 0x3d4d1eb8, 0x3d52e147, 0x3d58a3d7, 0x3d5e6667, 0x3d6428f7, // 88
    0x3d69eb87, 0x3d6fae15, 0x3d7570a3, 0x3d7b3333, 0x3d807ae2, 0x3d835c2a, 0x3d863d71, 0x3d891eb8, // 96
    0x3d8c0000, 0x3d8ee148, 0x3d91c290, 0x3d94a3d7, 0x3d97851f, 0x3d9a6667, 0x3d9d47af, 0x3da028f6, // 104
    0x3da30a3e, 0x3da5eb85, 0x3da8cccd, 0x3dabae15, 0x3dae8f5c, 0x3db170a4, 0x3db451eb, 0x3db73333, // 112
    0x3dba147b, 0x3dbcf5c3, 0x3dbfd70b, 0x3dc2b852, 0x3dc5999a, 0x3dc87ae2, 0x3dcb5c29, 0x3dd40000, // 120
    0x3de26666, 0x3df0cccd, 0x3dff3333, 0x3e06cccc, 0x3e0e0000, 0x3e153334, 0x3e1c6666, 0x3e23999a, // 128
    0x3e2acccc, 0x3e320000, 0x3e393334, 0x3e406666, 0x3e47999a, 0x3e4ecccc, 0x3e560000, 0x3e5d3334, // 136
    0x3e646666, 0x3e6b999a, 0x3e72cccc, 0x3e7a0000, 0x3e809999, 0x3e843333, 0x3e87cccd, 0x3e8b6666, // 144
    0x3e8f0000, 0x3e92999a, 0x3e963333, 0x3e99cccc, 0x3e9d6666, 0x3ea10000, 0x3ea4999a, 0x3ea83333, // 152
    0x3eabcccc, 0x3eaf6666, 0x3eb30000, 0x3eb6999a, 0x3eba3333, 0x3ebdcccc, 0x3ec16666, 0x3ec50000, // 160
    0x3ec8999a, 0x3ecc3333, 0x3ecfcccc, 0x3ed36666, 0x3ed70000, 0x3eda999a, 0x3ede3333, 0x3ee1cccc, // 168
    0x3ee56666, 0x3ee90000, 0x3eec999a, 0x3ef03333, 0x3ef3cccc, 0x3ef76666, 0x3efb0000, 0x3efe9999, // 176
    0x3f01199a, 0x3f02e666, 0x3f04b333, 0x3f068000, 0x3f084ccc, 0x3f0a199a, 0x3f0be666, 0x3f0db334, // 184
    0x3f0f8000, 0x3f114ccd, 0x3f13199a, 0x3f14e666, 0x3f16b334, 0x3f188000, 0x3f1a4ccd, 0x3f1c199a, // 192
    0x3f1de666, 0x3f1fb334, 0x3f218000, 0x3f234ccd, 0x3f25199a, 0x3f26e666, 0x3f28b334, 0x3f2a8000, // 200
    0x3f2c4ccd, 0x3f2e199a, 0x3f2fe666, 0x3f31b334, 0x3f338000, 0x3f354ccd, 0x3f37199a, 0x3f38e666, // 208
    0x3f3ab334, 0x3f3c8000, 0x3f3e4ccd, 0x3f40199a, 0x3f41e666, 0x3f43b334, 0x3f458000, 0x3f474ccc, // 216
    0x3f49199a, 0x3f4ae666, 0x3f4cb334, 0x3f4e8000, 0x3f504ccc, 0x3f52199a, 0x3f53e666, 0x3f55b334, // 224
    0x3f578000, 0x3f594ccc, 0x3f5b199a, 0x3f5ce666, 0x3f5eb334, 0x3f608000, 0x3f624ccc, 0x3f64199a, // 232
    0x3f65e666, 0x3f67b334, 0x3f698000, 0x3f6b4ccc, 0x3f6d199a, 0x3f6ee666, 0x3f70b334, 0x3f728000, // 240
    0x3f744ccc, 0x3f76199a, 0x3f77e666, 0x3f79b334, 0x3f7b8000, 0x3f7d4ccc, 0x3f7f199a, 0x3f800000, // 248
];

/// How a scaled value in [-1, 1] becomes a code; see the module docs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Rounding {
    /// Nearest value, ties to the lower index (bitsandbytes' pure-PyTorch reference kernel).
    #[default]
    Nearest,
    /// bitsandbytes 0.50.2's CPU C++ kernel (65 536-bin lookup table).
    BnbCpuTable,
}

/// A sorted 256-value code map with what quantization needs precomputed.
pub struct CodeMap {
    values: [f32; MAP_LEN],
    /// `(values[i] + values[i+1]) / 2` in f32, as both bitsandbytes kernels compute it.
    midpoints: [f32; MAP_LEN - 1],
    /// The table of [`Rounding::BnbCpuTable`], built on first use (64 KiB).
    table: OnceLock<Box<[u8]>>,
}

impl std::fmt::Debug for CodeMap {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CodeMap")
            .field("first", &self.values[0])
            .field("last", &self.values[MAP_LEN - 1])
            .finish()
    }
}

impl CodeMap {
    /// A map from 256 finite values in [-1, 1], sorted ascending (both kernels assume it).
    pub fn new(values: [f32; MAP_LEN]) -> Result<CodeMap> {
        for (i, v) in values.iter().enumerate() {
            if !v.is_finite() || v.abs() > 1.0 {
                return Err(Error::InvalidArgument(format!(
                    "code map value {i} is {v}, expected a finite value in [-1, 1]"
                )));
            }
        }
        if let Some(i) = (1..MAP_LEN).find(|&i| values[i] < values[i - 1]) {
            return Err(Error::InvalidArgument(format!(
                "code map is not sorted: value {i} ({}) < value {} ({})",
                values[i],
                i - 1,
                values[i - 1]
            )));
        }
        let mut midpoints = [0.0f32; MAP_LEN - 1];
        for (i, m) in midpoints.iter_mut().enumerate() {
            *m = (values[i] + values[i + 1]) * 0.5;
        }
        Ok(CodeMap {
            values,
            midpoints,
            table: OnceLock::new(),
        })
    }

    /// A map from f32 bit patterns.
    pub fn from_bits(bits: &[u32; MAP_LEN]) -> Result<CodeMap> {
        CodeMap::new(bits.map(f32::from_bits))
    }

    /// The signed dynamic map ([`SIGNED_BITS`]).
    pub fn signed() -> &'static CodeMap {
        static MAP: OnceLock<CodeMap> = OnceLock::new();
        MAP.get_or_init(|| CodeMap::from_bits(&SIGNED_BITS).expect("SIGNED_BITS is a valid map"))
    }

    /// The unsigned dynamic map ([`UNSIGNED_BITS`]).
    pub fn unsigned() -> &'static CodeMap {
        static MAP: OnceLock<CodeMap> = OnceLock::new();
        MAP.get_or_init(|| {
            CodeMap::from_bits(&UNSIGNED_BITS).expect("UNSIGNED_BITS is a valid map")
        })
    }

    pub fn values(&self) -> &[f32; MAP_LEN] {
        &self.values
    }

    #[inline]
    pub fn value(&self, code: u8) -> f32 {
        self.values[code as usize]
    }

    /// The code of `s` under [`Rounding::Nearest`]: the number of midpoints strictly below `s`
    /// (a value on a midpoint goes to the lower index). `s` should be in [-1, 1].
    #[inline]
    pub fn nearest(&self, s: f32) -> u8 {
        // At most 255 midpoints lie below `s`, so the count fits a u8.
        self.midpoints.partition_point(|&m| m < s) as u8
    }

    /// The code of `s` under [`Rounding::BnbCpuTable`]. `s` should be in [-1, 1].
    #[inline]
    pub fn table_code(&self, s: f32) -> u8 {
        self.table()[table_bin(s)]
    }

    fn table(&self) -> &[u8] {
        self.table.get_or_init(|| {
            // Bin i stands for the value -1 + 2i/65535 (f32 arithmetic, as bitsandbytes builds
            // it) and holds the number of midpoints strictly below that value.
            let mut table = vec![0u8; TABLE_BINS].into_boxed_slice();
            let mut code = 0usize;
            for (i, slot) in table.iter_mut().enumerate() {
                let v = (2.0 * i as f32) / (TABLE_BINS - 1) as f32 - 1.0;
                while code < MAP_LEN - 1 && v > self.midpoints[code] {
                    code += 1;
                }
                *slot = code as u8;
            }
            table
        })
    }

    #[inline]
    fn code(&self, rounding: Rounding, s: f32) -> u8 {
        match rounding {
            Rounding::Nearest => self.nearest(s),
            Rounding::BnbCpuTable => self.table_code(s),
        }
    }
}

/// The table bin bitsandbytes' CPU kernel reads for a scaled value: clamp to [-1, 1], then
/// `trunc(fma((s + 1) * 0.5, 65535, 0.5))`. The fused multiply-add is computed exactly in f64
/// (the product has at most 41 significant bits) and rounded once to f32, as the FMA does.
#[inline]
fn table_bin(s: f32) -> usize {
    let s = s.clamp(-1.0, 1.0);
    let t = (s + 1.0) * 0.5;
    let u = (t as f64 * (TABLE_BINS - 1) as f64 + 0.5) as f32;
    (u as u32 & 0xffff) as usize
}

/// Blockwise quantization with [`Rounding::Nearest`]; see [`quantize_blockwise_with`].
pub fn quantize_blockwise(
    src: &[f32],
    map: &CodeMap,
    block_size: usize,
    codes_out: &mut [u8],
    absmax_out: &mut [f32],
) -> Result<()> {
    quantize_blockwise_with(
        src,
        map,
        block_size,
        Rounding::Nearest,
        codes_out,
        absmax_out,
    )
}

/// Quantizes `src` (flattened) in blocks of `block_size` consecutive values (the last block may
/// be partial): per block `absmax = max |x|`, codes of `x / absmax` under `rounding`.
/// `codes_out.len()` must be `src.len()`, `absmax_out.len()` the number of blocks.
/// Non-finite input is rejected (bitsandbytes would propagate NaN into the block's absmax).
pub fn quantize_blockwise_with(
    src: &[f32],
    map: &CodeMap,
    block_size: usize,
    rounding: Rounding,
    codes_out: &mut [u8],
    absmax_out: &mut [f32],
) -> Result<()> {
    check_blockwise_lengths(src.len(), block_size, codes_out.len(), absmax_out.len())?;
    let blocks = src.chunks(block_size).zip(codes_out.chunks_mut(block_size));
    for (b, (x, codes)) in blocks.enumerate() {
        let absmax = max_abs(x, b * block_size, "blockwise 8-bit quantization")?;
        absmax_out[b] = match rounding {
            Rounding::Nearest if x.len() == block_size => {
                let r = 1.0 / absmax.max(MIN_ABSMAX);
                for (c, &v) in codes.iter_mut().zip(x) {
                    *c = map.nearest((v * r).clamp(-1.0, 1.0));
                }
                absmax
            }
            Rounding::Nearest => {
                let d = absmax.max(MIN_ABSMAX);
                for (c, &v) in codes.iter_mut().zip(x) {
                    *c = map.nearest((v / d).clamp(-1.0, 1.0));
                }
                d
            }
            Rounding::BnbCpuTable if absmax == 0.0 => {
                codes.fill(0);
                0.0
            }
            Rounding::BnbCpuTable => {
                let r = 1.0 / absmax;
                for (c, &v) in codes.iter_mut().zip(x) {
                    *c = map.code(rounding, v * r);
                }
                absmax
            }
        };
    }
    Ok(())
}

/// `dst[i] = map[codes[i]] * absmax[i / block_size]` (f32), bitsandbytes' `dequantize_blockwise`.
pub fn dequantize_blockwise(
    codes: &[u8],
    absmax: &[f32],
    map: &CodeMap,
    block_size: usize,
    dst: &mut [f32],
) -> Result<()> {
    check_blockwise_lengths(codes.len(), block_size, codes.len(), absmax.len())?;
    if dst.len() != codes.len() {
        return Err(Error::InvalidArgument(format!(
            "blockwise 8-bit dequantization: {} codes but dst holds {} values",
            codes.len(),
            dst.len()
        )));
    }
    let blocks = codes.chunks(block_size).zip(dst.chunks_mut(block_size));
    for ((c, out), &scale) in blocks.zip(absmax) {
        for (o, &code) in out.iter_mut().zip(c) {
            *o = map.value(code) * scale;
        }
    }
    Ok(())
}

/// `max |x|`, or an error naming the first non-finite element (`first_index` is the index of
/// `x[0]` in the caller's tensor). An integer max over the sign-cleared bit patterns: for
/// non-negative floats bit order is value order, so it is exact, infinities and NaN have the
/// largest patterns, and unlike a float max it vectorizes.
pub(crate) fn max_abs(x: &[f32], first_index: usize, what: &str) -> Result<f32> {
    let bits = x.iter().fold(0u32, |m, v| m.max(v.to_bits() & 0x7fff_ffff));
    if bits >= 0x7f80_0000 {
        let i = x.iter().position(|v| !v.is_finite()).unwrap_or(0);
        return Err(Error::InvalidArgument(format!(
            "{what}: element {} is {}",
            first_index + i,
            x[i]
        )));
    }
    Ok(f32::from_bits(bits))
}

fn check_blockwise_lengths(n: usize, block_size: usize, codes: usize, absmax: usize) -> Result<()> {
    if block_size == 0 {
        return Err(Error::InvalidArgument(
            "blockwise 8-bit: block size is 0".to_string(),
        ));
    }
    let blocks = n.div_ceil(block_size);
    if codes != n || absmax != blocks {
        return Err(Error::InvalidArgument(format!(
            "blockwise 8-bit: {n} values in blocks of {block_size} need {n} codes and {blocks} \
             absmax values, got {codes} and {absmax}"
        )));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn maps_have_documented_landmarks() {
        let s = CodeMap::signed().values();
        assert_eq!(s[127], 0.0);
        assert_eq!(s[255], 1.0);
        assert_eq!(s[0].to_bits(), 0xbf7e3333); // -0.99296874, no -1.0
        let u = CodeMap::unsigned().values();
        assert_eq!(u[0], 0.0);
        assert_eq!(u[255], 1.0);
    }

    #[test]
    fn nearest_sends_midpoints_to_the_lower_index() {
        let map = CodeMap::signed();
        for i in 0..MAP_LEN - 1 {
            let m = (map.value(i as u8) + map.value(i as u8 + 1)) * 0.5;
            assert_eq!(map.nearest(m) as usize, i);
            assert_eq!(map.nearest(map.value(i as u8)) as usize, i);
        }
        assert_eq!(map.nearest(-1.0), 0);
        assert_eq!(map.nearest(1.0), 255);
    }

    #[test]
    fn table_bins_cover_the_range() {
        assert_eq!(table_bin(-1.0), 0);
        assert_eq!(table_bin(1.0), TABLE_BINS - 1);
        assert_eq!(table_bin(0.0), 32768);
        assert_eq!(table_bin(7.0), TABLE_BINS - 1);
    }

    #[test]
    fn bad_lengths_and_values_are_errors() {
        let map = CodeMap::signed();
        let mut codes = [0u8; 5];
        let mut absmax = [0f32; 1];
        assert!(quantize_blockwise(&[0.0; 5], map, 0, &mut codes, &mut absmax).is_err());
        assert!(quantize_blockwise(&[0.0; 5], map, 2, &mut codes, &mut absmax).is_err());
        let err = quantize_blockwise(
            &[0.0, f32::NAN, 0.0, 0.0, 0.0],
            map,
            8,
            &mut codes,
            &mut absmax,
        )
        .unwrap_err();
        assert!(err.to_string().contains("element 1"), "{err}");
        let mut unsorted = *map.values();
        unsorted.swap(3, 4);
        assert!(CodeMap::new(unsorted).is_err());
    }
}
