//! `edgetune quantize`: re-encodes a GGUF model's tensors to NF4, Q8_0, F16 or F32. STUB.
