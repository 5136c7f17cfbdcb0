//! GGUF writer. STUB: the signatures are the contract; bodies come with the writer work.

use super::types::GgmlType;
use super::value::Value;
use crate::error::Result;
use std::io::Write;
use std::path::Path;

/// A tensor to be written: name, type and dims (GGUF order). Its data come later, streamed.
#[derive(Clone, Debug)]
pub struct TensorSpec {
    pub name: String,
    pub ty: GgmlType,
    pub ne: Vec<u64>,
}

#[derive(Default)]
pub struct GgufWriter {
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorSpec>,
}

impl GgufWriter {
    pub fn new() -> Self {
        Self::default()
    }

    /// Sets a metadata key (replacing an earlier value of the same key, keeping its position).
    pub fn set(&mut self, _key: &str, _value: Value) {
        unimplemented!("GGUF writer")
    }

    pub fn add_tensor(&mut self, _spec: TensorSpec) -> Result<()> {
        unimplemented!("GGUF writer")
    }

    /// Writes the file atomically. `write_data(i, out)` must write exactly the bytes of tensor `i`
    /// (padding is added by the writer); it is called once per tensor, in order.
    pub fn write(
        &self,
        _path: &Path,
        _write_data: &mut dyn FnMut(usize, &mut dyn Write) -> Result<()>,
    ) -> Result<()> {
        unimplemented!("GGUF writer")
    }
}
