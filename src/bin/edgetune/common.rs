//! Pieces several commands share: the thread count and opening a model for inference.

use edgetune::backend::cpu::CpuBackend;
use edgetune::backend::Backend;
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

pub fn backend(threads: usize) -> Result<Arc<dyn Backend>> {
    Ok(Arc::new(CpuBackend::new(threads)?))
}

/// Tokenizer of a model file, with the path in any error.
pub fn tokenizer(path: &Path, file: &GgufFile) -> Result<Tokenizer> {
    Tokenizer::from_gguf(file.header()).map_err(|e| e.in_file(path))
}

/// The model of an open file, with the path in any error.
pub fn model<'f>(path: &Path, file: &'f GgufFile, backend: Arc<dyn Backend>) -> Result<Llama<'f>> {
    Llama::new(file, backend).map_err(|e| e.in_file(path))
}
