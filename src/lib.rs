//! edgetune: an embedded, on-device fine-tuning runtime for LLMs.
//!
//! Modules in pipeline order (see DESIGN.md): `gguf` maps and validates model files and writes new
//! ones; `quant` decodes and encodes ggml block formats and NF4; later stages (tokenizer, model,
//! data, adapters, optim, train) build on these. The CLI in `src/bin/edgetune` is a thin shell over
//! the library.

pub mod adapters;
pub mod backend;
pub mod capi;
pub mod chat;
pub mod cpu;
pub mod data;
pub mod error;
pub mod gguf;
pub mod infer;
pub mod model;
pub mod npy;
pub mod optim;
pub mod quant;
pub mod quantize;
pub mod rng;
pub mod tokenizer;
pub mod train;
pub mod util;
pub mod weights;

pub use error::{Error, Result};
