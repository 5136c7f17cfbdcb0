//! bitsandbytes' 8-bit dynamic maps. STUB (interface only).
pub fn signed_map() -> &'static [f32; 256] { unimplemented!() }
