//! NF4 (bitsandbytes 4-bit NormalFloat) with optional double quantization. STUB.
