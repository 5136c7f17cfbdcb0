//! bitsandbytes' 8-bit dynamic maps and blockwise 8-bit quantization. STUB.
