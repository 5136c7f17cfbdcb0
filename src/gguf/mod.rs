//! GGUF files: a validating reader over a read-only memory map (tensor data are zero-copy views
//! into the map) and a writer that lays files out exactly as ggml does (FORMATS.md §1).
//!
//! API contract (other modules rely on it):
//! - `GgufFile::open(path)` maps the file read-only and validates every header field before use;
//!   `GgufFile::from_bytes(Vec<u8>)` does the same for a buffer it then owns, `from_static(&[u8])`
//!   for memory that outlives it (no copy).
//! - `file.header()` gives metadata (ordered, `Value`s) and tensor infos; `file.tensor_data(&info)`
//!   is the `&[u8]` of that tensor inside the map.
//! - `parse_header(&[u8])` is the pure parser (used by the fuzz test).
//! - `GgufWriter` collects metadata and tensor infos, then streams tensor data to a temp file that
//!   is renamed into place.

pub mod reader;
pub mod types;
pub mod value;
pub mod writer;

pub use reader::{parse_header, GgufFile, Header, TensorInfo, MAX_ARRAY_LEN, MAX_STRING_LEN};
pub use types::GgmlType;
pub use value::{Array, FromValue, Value, ValueType};
pub use writer::{GgufWriter, Layout, TensorSpec};

/// Default data alignment when `general.alignment` is absent.
pub const DEFAULT_ALIGNMENT: u64 = 32;
/// Longest tensor name ggml accepts (GGML_MAX_NAME - 1).
pub const MAX_NAME_LEN: usize = 63;
/// Most dimensions a tensor may have.
pub const MAX_DIMS: usize = 4;
