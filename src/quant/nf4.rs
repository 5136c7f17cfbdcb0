//! NF4 (bitsandbytes 4-bit NormalFloat) with optional double quantization. STUB (interface only).
use crate::error::Result;
pub const CODE: [f32; 16] = [0.0; 16];
#[derive(Clone, Copy, Debug)]
pub struct Nf4Params { pub block_size: usize, pub double_quant: bool }
impl Nf4Params { pub fn new(block_size: usize, double_quant: bool) -> Result<Self> { Ok(Nf4Params { block_size, double_quant }) } }
pub enum Nf4OwnedScales { Plain(Vec<f32>), Double { q: Vec<u8>, absmax2: Vec<f32>, offset: f32 } }
pub struct Nf4Tensor { pub codes: Vec<u8>, pub scales: Nf4OwnedScales }
pub enum Nf4Scales<'a> { Plain(&'a [u8]), Double { q: &'a [u8], absmax2: &'a [u8], offset: f32 } }
pub struct Nf4View<'a> { _codes: &'a [u8] }
impl<'a> Nf4View<'a> {
    pub fn new(codes: &'a [u8], _s: Nf4Scales<'a>, _n: usize, _b: usize) -> Result<Self> { Ok(Nf4View { _codes: codes }) }
    pub fn dequantize(&self, _dst: &mut [f32]) -> Result<()> { unimplemented!() }
}
pub fn quantize(_src: &[f32], _p: Nf4Params) -> Result<Nf4Tensor> { unimplemented!() }
