//! Model handles: a validated GGUF file (mapped from a path, or a caller-owned buffer used in
//! place), its config, tokenizer and chat format. Sessions and inference contexts keep the model
//! alive; freeing the handle only drops the caller's reference.

use super::handles::{self, Object};
use super::{c_path, entry, put, write_struct, CResult, CStruct, EdgetuneStatus, Failure};
use crate::data::ChatFormat;
use crate::gguf::GgufFile;
use crate::model::weights::ModelWeights;
use crate::model::Config;
use crate::tokenizer::Tokenizer;
use crate::weights::Weights;
use std::ffi::{c_char, c_void, CString};
use std::ptr;
use std::sync::Arc;

/// An open model (opaque). Create with `edgetune_model_open` or `edgetune_model_open_memory`,
/// free with `edgetune_model_free`.
pub struct EdgetuneModel(());

/// What a model is, filled by `edgetune_model_info`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EdgetuneModelInfo {
    /// Set to `sizeof(EdgetuneModelInfo)` before the call.
    pub struct_size: u32,
    /// Transformer blocks.
    pub n_layer: u32,
    /// Architecture name from the GGUF metadata (e.g. "llama"); owned by the model, valid at least
    /// until `edgetune_model_free`.
    pub arch: *const c_char,
    /// Parameters of the base model (tied output counted once).
    pub n_params: u64,
    /// Embedding (hidden) size.
    pub n_embd: u32,
    /// Vocabulary size.
    pub n_vocab: u32,
    /// Context length the model was trained with (the longest sequence it takes).
    pub n_ctx_train: u32,
    /// Attention heads, key/value heads and feed-forward width.
    pub n_head: u32,
    pub n_head_kv: u32,
    pub n_ff: u32,
}

// SAFETY: repr(C), starts with `struct_size: u32`, fields are integers and a raw pointer.
unsafe impl CStruct for EdgetuneModelInfo {
    const MIN_SIZE: usize = std::mem::size_of::<EdgetuneModelInfo>();
    const NAME: &'static str = "EdgetuneModelInfo";
}

pub(crate) struct ModelObj {
    pub(crate) config: Config,
    pub(crate) tok: Tokenizer,
    pub(crate) chat: Option<ChatFormat>,
    arch: CString,
    file: GgufFile,
}

impl ModelObj {
    fn new(file: GgufFile) -> CResult<ModelObj> {
        let config = Config::from_header(file.header())?;
        // Check every tensor against the config now, so a corrupt model fails here.
        ModelWeights::load(&config, &Weights::new(&file)?)?;
        let tok = Tokenizer::from_gguf(file.header())?;
        let chat = ChatFormat::from_gguf(file.header())?;
        let arch = file
            .header()
            .get_str("general.architecture")
            .unwrap_or(config.arch.name());
        let arch = CString::new(arch).unwrap_or_default();
        Ok(ModelObj {
            config,
            tok,
            chat,
            arch,
            file,
        })
    }

    pub(crate) fn file(&self) -> &GgufFile {
        &self.file
    }

    /// The file with its lifetime extended to `'static`, for a `Llama` or `Session` stored next to
    /// the `Arc` that keeps it alive.
    ///
    /// # Safety
    /// The returned reference (and everything borrowed from it) must not outlive `model`: store
    /// it only in a struct that also holds a clone of `model` in a field declared *after* the
    /// borrowing field (fields drop in declaration order), and never hand it out beyond that
    /// struct. The file itself never moves: it lives inside the `Arc`'s allocation.
    pub(crate) unsafe fn file_static(model: &Arc<ModelObj>) -> &'static GgufFile {
        // SAFETY: the pointer is valid while any clone of `model` lives; the caller keeps one
        // alive for as long as the reference is used (see above).
        unsafe { &*ptr::addr_of!((*Arc::as_ptr(model)).file) }
    }
}

fn check_out(out: *mut *mut EdgetuneModel) -> CResult {
    if out.is_null() {
        return Err(Failure::invalid("out (EdgetuneModel**) is NULL"));
    }
    Ok(())
}

fn register(file: GgufFile, out: *mut *mut EdgetuneModel) -> CResult {
    check_out(out)?;
    let obj = ModelObj::new(file)?;
    let h = handles::insert(Object::Model(Arc::new(obj)))?;
    // SAFETY: checked non-null above; writable by the caller's contract.
    unsafe { put(out, h, "out") }
}

/// Opens a GGUF model file: maps it read-only (weights are never copied) and validates the
/// header, every tensor, the tokenizer and the chat template.
///
/// `path`: NUL-terminated UTF-8, read during the call only. On success `*out` is a new model
/// handle the caller frees with `edgetune_model_free`; on failure `*out` is left unchanged.
/// Errors: `IO` (missing/unreadable file), `FORMAT` (not GGUF, corrupt, unsupported model),
/// `INVALID_ARGUMENT` (NULL). Thread-safe.
///
/// # Safety
/// `path` is NULL or a NUL-terminated string; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn edgetune_model_open(
    path: *const c_char,
    out: *mut *mut EdgetuneModel,
) -> EdgetuneStatus {
    entry(|| {
        // SAFETY: the caller's contract.
        let path = unsafe { c_path(path, "path") }?;
        check_out(out)?;
        let file = GgufFile::open(&path)?;
        register(file, out)
    })
}

/// Opens a GGUF model held in memory by the caller, without copying it: weights are read in
/// place from `data`.
///
/// The caller keeps the `len` bytes at `data` alive and unmodified until the model handle *and*
/// every session and inference context created from it are freed. Alignment: any (8 or more is
/// faster for F32 weights). Errors and ownership as `edgetune_model_open`. Thread-safe.
///
/// # Safety
/// `data` is NULL or points to `len` readable bytes that stay valid and unchanged for the
/// lifetime described above; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn edgetune_model_open_memory(
    data: *const c_void,
    len: usize,
    out: *mut *mut EdgetuneModel,
) -> EdgetuneStatus {
    entry(|| {
        if data.is_null() {
            return Err(Failure::invalid("data is NULL"));
        }
        check_out(out)?;
        if len > isize::MAX as usize {
            return Err(Failure::invalid(format!("len {len} is too large")));
        }
        // SAFETY: `data` points to `len` readable bytes that the caller keeps alive and
        // unchanged until every object using this model is freed (the documented contract);
        // the model never outlives them, so treating them as 'static is sound under it.
        let bytes: &'static [u8] = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) };
        register(GgufFile::from_static(bytes)?, out)
    })
}

/// Fills `*info` (set `info->struct_size = sizeof(EdgetuneModelInfo)` first) with the model's
/// architecture, sizes and parameter count. Thread-safe.
///
/// # Safety
/// `info` is NULL or points to a writable struct whose `struct_size` is set.
#[no_mangle]
pub unsafe extern "C" fn edgetune_model_info(
    model: *const EdgetuneModel,
    info: *mut EdgetuneModelInfo,
) -> EdgetuneStatus {
    entry(|| {
        let m = handles::model(model)?;
        let c = &m.config;
        let u32_of = |v: usize| u32::try_from(v).unwrap_or(u32::MAX);
        let value = EdgetuneModelInfo {
            struct_size: 0,
            n_layer: u32_of(c.n_layer),
            arch: m.arch.as_ptr(),
            n_params: c.n_params() as u64,
            n_embd: u32_of(c.n_embd),
            n_vocab: u32_of(c.n_vocab),
            n_ctx_train: u32_of(c.n_ctx_train),
            n_head: u32_of(c.n_head),
            n_head_kv: u32_of(c.n_head_kv),
            n_ff: u32_of(c.n_ff),
        };
        // SAFETY: the caller's contract.
        unsafe { write_struct(info, &value) }
    })
}

/// Releases the caller's reference to a model. Sessions and inference contexts created from it
/// keep working (they hold their own reference); the weights are unmapped when the last one is
/// freed. NULL is accepted and ignored (returns OK); a freed or foreign handle returns
/// `INVALID_HANDLE`. Thread-safe.
#[no_mangle]
pub extern "C" fn edgetune_model_free(model: *mut EdgetuneModel) -> EdgetuneStatus {
    entry(|| {
        if model.is_null() {
            return Ok(());
        }
        drop(handles::remove(model, handles::MODEL)?);
        Ok(())
    })
}
