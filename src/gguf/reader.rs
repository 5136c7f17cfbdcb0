//! GGUF reader. STUB: the signatures are the contract; bodies come with the reader work.

use super::types::GgmlType;
use super::value::Value;
use crate::error::Result;
use std::path::Path;

/// One tensor info record.
#[derive(Clone, Debug, PartialEq)]
pub struct TensorInfo {
    pub name: String,
    /// Dimensions in GGUF order: `ne[0]` is the innermost (contiguous) one.
    pub ne: Vec<u64>,
    pub ty: GgmlType,
    /// Offset relative to the start of the data section.
    pub offset: u64,
    /// Size in bytes of the tensor data.
    pub bytes: u64,
}

impl TensorInfo {
    pub fn n_elements(&self) -> u64 {
        self.ne.iter().product()
    }
}

/// The parsed, validated header of a GGUF file.
#[derive(Clone, Debug)]
pub struct Header {
    pub version: u32,
    pub metadata: Vec<(String, Value)>,
    pub tensors: Vec<TensorInfo>,
    pub alignment: u64,
    /// Absolute file offset of the data section.
    pub data_offset: u64,
}

impl Header {
    pub fn get(&self, key: &str) -> Option<&Value> {
        self.metadata.iter().find(|(k, _)| k == key).map(|(_, v)| v)
    }

    pub fn tensor(&self, name: &str) -> Option<&TensorInfo> {
        self.tensors.iter().find(|t| t.name == name)
    }
}

/// Parses and validates a complete GGUF image (header and data bounds).
pub fn parse_header(_bytes: &[u8]) -> Result<Header> {
    unimplemented!("GGUF reader")
}

/// An open GGUF file: the validated header plus the read-only map it points into.
pub struct GgufFile {
    header: Header,
}

impl GgufFile {
    pub fn open(_path: impl AsRef<Path>) -> Result<GgufFile> {
        unimplemented!("GGUF reader")
    }

    pub fn from_bytes(_bytes: Vec<u8>) -> Result<GgufFile> {
        unimplemented!("GGUF reader")
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The bytes of one tensor, a view into the map.
    pub fn tensor_data(&self, _info: &TensorInfo) -> &[u8] {
        unimplemented!("GGUF reader")
    }
}
