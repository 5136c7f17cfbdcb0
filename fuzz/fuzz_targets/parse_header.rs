//! libFuzzer target: `parse_header` must return `Ok` or `Err` for any input, never panic, and an
//! accepted header must describe only bytes that exist. The deterministic counterpart that runs in
//! CI is tests/gguf_fuzz.rs.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(h) = edgetune::gguf::parse_header(data) {
        for t in &h.tensors {
            assert!(h.data_offset + t.offset + t.bytes <= data.len() as u64);
        }
    }
});
