//! Pieces several commands share: the thread count, the compute precision and opening a model for
//! inference.

use edgetune::backend::cpu::CpuBackend;
use edgetune::backend::{Backend, Compute};
use edgetune::gguf::GgufFile;
use edgetune::model::llama::Llama;
use edgetune::tokenizer::Tokenizer;
use edgetune::Result;
use std::path::Path;
use std::sync::Arc;

/// Threads to use: the flag, else every core.
pub fn threads(flag: Option<usize>) -> usize {
    flag.unwrap_or_else(|| std::thread::available_parallelism().map_or(1, |n| n.get()))
}

/// The CPU backend with `threads` threads computing products in `compute` (bf16 runs on every CPU:
/// with the bf16 dot-product kernel where there is one, else by rounding into the f32 kernels).
pub fn backend(threads: usize, compute: Compute) -> Result<Arc<dyn Backend>> {
    Ok(Arc::new(CpuBackend::new(threads)?.with_compute(compute)))
}

/// Tokenizer of a model file, with the path in any error.
pub fn tokenizer(path: &Path, file: &GgufFile) -> Result<Tokenizer> {
    Tokenizer::from_gguf(file.header()).map_err(|e| e.in_file(path))
}

/// The model of an open file, with the path in any error.
pub fn model<'f>(path: &Path, file: &'f GgufFile, backend: Arc<dyn Backend>) -> Result<Llama<'f>> {
    Llama::new(file, backend).map_err(|e| e.in_file(path))
}
