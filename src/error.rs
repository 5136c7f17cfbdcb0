//! The one error type of the library. Every variant carries the values that explain the failure
//! (file, tensor, field, offset) so a user can act on the message without a debugger.

use std::path::PathBuf;

pub type Result<T, E = Error> = std::result::Result<T, E>;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// An I/O failure, with what we were doing (usually including a path).
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A GGUF file (or byte buffer) that is malformed. `offset` is the byte position of the field.
    #[error("invalid GGUF at byte {offset}: {msg}")]
    Gguf { offset: u64, msg: String },
    /// Data that does not fit a block format (length not a multiple of the block, bad block size...).
    #[error("{0}")]
    Quant(String),
    /// A valid request we do not support (yet), named precisely.
    #[error("unsupported: {0}")]
    Unsupported(String),
    /// A caller-supplied argument that is out of range or inconsistent.
    #[error("invalid argument: {0}")]
    InvalidArgument(String),
    /// A tokenizer that cannot be built from its metadata, or text it cannot encode.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// A chat template that is missing, does not compile, or fails while rendering.
    #[error("chat template: {0}")]
    ChatTemplate(String),
    /// Training data that cannot be used, as `FILE:LINE: what` (`LINE` is 1-based; absent when the
    /// problem is the file as a whole). `msg` may list further bad lines after the first.
    #[error("{}{}: {msg}", .path.display(), .line.map(|l| format!(":{l}")).unwrap_or_default())]
    Data {
        path: PathBuf,
        line: Option<usize>,
        msg: String,
    },
    /// Any error, tagged with the file it came from.
    #[error("{}: {source}", path.display())]
    InFile {
        path: PathBuf,
        #[source]
        source: Box<Error>,
    },
}

impl Error {
    pub fn io(context: impl Into<String>, source: std::io::Error) -> Self {
        Error::Io {
            context: context.into(),
            source,
        }
    }

    pub fn in_file(self, path: impl Into<PathBuf>) -> Self {
        match self {
            e @ Error::InFile { .. } => e,
            e => Error::InFile {
                path: path.into(),
                source: Box::new(e),
            },
        }
    }
}
