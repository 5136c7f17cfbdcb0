//! F32: plain little-endian IEEE binary32, one element per 4-byte "block". Decoding copies the bits
//! (NaN payloads included), as gguf-py's `view(np.float32)` does.

pub const BLOCK_ELEMS: usize = 1;
pub const BLOCK_BYTES: usize = 4;
const _: () = assert!(BLOCK_BYTES == std::mem::size_of::<f32>());

pub fn decode(src: &[u8], dst: &mut [f32]) {
    super::for_each_block(src, dst, |b: &[u8; 4], y: &mut [f32; 1]| {
        y[0] = f32::from_le_bytes(*b);
    });
}

pub fn encode(src: &[f32], dst: &mut [u8]) {
    super::for_each_block_encode(src, dst, |x: &[f32; 1], b: &mut [u8; 4]| {
        *b = x[0].to_le_bytes();
    });
}

#[cfg(test)]
mod tests {
    #[test]
    fn round_trip_is_exact_including_nan_payloads() {
        let xs = [
            0.0f32,
            -0.0,
            1.5,
            f32::INFINITY,
            f32::from_bits(0x7f80_0001),
            f32::MIN_POSITIVE / 3.0,
        ];
        let mut bytes = [0u8; 24];
        super::encode(&xs, &mut bytes);
        let mut back = [0f32; 6];
        super::decode(&bytes, &mut back);
        for (a, b) in xs.iter().zip(&back) {
            assert_eq!(a.to_bits(), b.to_bits());
        }
    }
}
