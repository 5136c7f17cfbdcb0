//! Inference contexts: the model on its own worker threads, with an optional adapter, generating
//! text streamed to a callback.

use super::handles::{self, Object};
use super::model::{EdgetuneModel, ModelObj};
use super::{
    c_path, c_str, entry, init_struct, put, read_struct, CResult, CStruct, EdgetuneStatus, Failure,
};
use crate::backend::cpu::CpuBackend;
use crate::infer::{self, InferenceAdapters, Utf8Stream};
use crate::model::generate::{generate_with, GenerateAdapters, GenerateParams};
use crate::model::Llama;
use std::ffi::{c_char, c_void};
use std::sync::{Arc, Mutex, TryLockError};

/// A model ready to generate, with its own threads and an optional adapter (opaque): create with
/// `edgetune_inference_new`, free with `edgetune_inference_free`.
pub struct EdgetuneInference(());

/// Sampling settings of `edgetune_generate`; fill with
/// `edgetune_generate_config_init(&cfg, sizeof cfg)`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EdgetuneGenerateConfig {
    /// `sizeof(EdgetuneGenerateConfig)`.
    pub struct_size: u32,
    /// Most tokens to generate [128].
    pub max_tokens: u32,
    /// Sampling temperature; 0 is greedy decoding [0].
    pub temperature: f32,
    /// Sample only from the K most likely tokens; 0: no limit [0].
    pub top_k: u32,
    /// Nucleus sampling threshold; 1: off [1].
    pub top_p: f32,
    /// 1: wrap the prompt as a user message in the model's chat template [0].
    pub chat: u32,
    /// Seed of the sampler [0].
    pub seed: u64,
}

// SAFETY: repr(C), starts with `struct_size: u32`, fields are numbers.
unsafe impl CStruct for EdgetuneGenerateConfig {
    const MIN_SIZE: usize = std::mem::size_of::<EdgetuneGenerateConfig>();
    const NAME: &'static str = "EdgetuneGenerateConfig";
}

impl Default for EdgetuneGenerateConfig {
    fn default() -> EdgetuneGenerateConfig {
        EdgetuneGenerateConfig {
            struct_size: std::mem::size_of::<EdgetuneGenerateConfig>() as u32,
            max_tokens: 128,
            temperature: 0.0,
            top_k: 0,
            top_p: 1.0,
            chat: 0,
            seed: 0,
        }
    }
}

/// Receives generated text as it comes: `len` bytes of UTF-8 at `text` (whole characters; also
/// NUL-terminated), valid during the call only. Return 0 to go on, nonzero to stop.
pub type EdgetuneTokenFn =
    Option<unsafe extern "C" fn(text: *const c_char, len: usize, user_data: *mut c_void) -> i32>;

struct Context {
    llama: Llama<'static>,
    /// No adapter, or the loaded one(s).
    adapters: InferenceAdapters,
}

pub(crate) struct InferenceObj {
    /// Borrows `model`'s file: declared before `model` so it drops first
    /// (see `ModelObj::file_static`).
    ctx: Mutex<Context>,
    model: Arc<ModelObj>,
}

impl InferenceObj {
    fn with<R>(&self, f: impl FnOnce(&mut Context, &ModelObj) -> CResult<R>) -> CResult<R> {
        let mut guard = match self.ctx.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => {
                return Err(Failure::new(
                    EdgetuneStatus::Busy,
                    "the inference context is in use by another call (one call at a time)",
                ))
            }
        };
        f(&mut guard, &self.model)
    }
}

/// Creates an inference context on `model` with `threads` worker threads (0: every core) and no
/// adapter. `*out` is a new handle, freed with `edgetune_inference_free`; it keeps the model
/// alive. Contexts are independent; one context is used by one thread at a time (`BUSY`
/// otherwise).
///
/// # Safety
/// `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn edgetune_inference_new(
    model: *const EdgetuneModel,
    threads: u32,
    out: *mut *mut EdgetuneInference,
) -> EdgetuneStatus {
    entry(|| {
        let model = handles::model(model)?;
        if out.is_null() {
            return Err(Failure::invalid("out (EdgetuneInference**) is NULL"));
        }
        let threads = match threads {
            0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
            t => t as usize,
        };
        // SAFETY: the `Llama` lives in `InferenceObj::ctx`, declared before
        // `InferenceObj::model` (a clone of this Arc), so it is dropped before the file.
        let file = unsafe { ModelObj::file_static(&model) };
        let llama = Llama::new(file, Arc::new(CpuBackend::new(threads)?))?;
        let adapters = InferenceAdapters::new(&llama, Vec::new())?;
        let obj = InferenceObj {
            ctx: Mutex::new(Context { llama, adapters }),
            model,
        };
        let h = handles::insert(Object::Inference(Arc::new(obj)))?;
        // SAFETY: checked non-null; writable by the caller's contract.
        unsafe { put(out, h, "out") }
    })
}

/// Loads a PEFT adapter directory (LoRA, IA3, prefix or prompt tuning; e.g. a session's
/// `output_dir`) for generation, replacing any adapter loaded before; `dir` NULL unloads it (the
/// base model). On failure the previous adapter stays.
///
/// # Safety
/// `dir` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn edgetune_inference_load_adapter(
    ctx: *mut EdgetuneInference,
    dir: *const c_char,
) -> EdgetuneStatus {
    entry(|| {
        let dir = if dir.is_null() {
            None
        } else {
            // SAFETY: the caller's contract.
            Some(unsafe { c_path(dir, "dir") }?)
        };
        handles::inference(ctx)?.with(|c, _| {
            c.adapters = match dir {
                Some(d) => InferenceAdapters::load(&c.llama, &[d])?,
                None => InferenceAdapters::new(&c.llama, Vec::new())?,
            };
            Ok(())
        })
    })
}

/// Fills `*config` (of `size` bytes: pass `sizeof *config`) with the defaults and sets its
/// `struct_size`.
///
/// # Safety
/// `config` is NULL or points to `size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn edgetune_generate_config_init(
    config: *mut EdgetuneGenerateConfig,
    size: usize,
) -> EdgetuneStatus {
    // SAFETY: the caller's contract.
    entry(|| unsafe { init_struct(config, size, EdgetuneGenerateConfig::default()) })
}

/// Generates text after `prompt` (NUL-terminated UTF-8) with the context's adapter, calling
/// `on_text` (may be NULL) with each new piece of text on this thread. Stops at `max_tokens`,
/// the model's end-of-generation token, the end of the context, or when `on_text` returns
/// nonzero. `config` NULL takes the defaults. `*n_tokens` (may be NULL) receives the number of
/// tokens generated.
///
/// # Safety
/// `prompt` is NULL or NUL-terminated; `config` is NULL or a readable struct with `struct_size`
/// set; `n_tokens` is NULL or writable; `on_text` is NULL or a function of that signature.
#[no_mangle]
pub unsafe extern "C" fn edgetune_generate(
    ctx: *mut EdgetuneInference,
    prompt: *const c_char,
    config: *const EdgetuneGenerateConfig,
    on_text: EdgetuneTokenFn,
    user_data: *mut c_void,
    n_tokens: *mut u32,
) -> EdgetuneStatus {
    entry(|| {
        let obj = handles::inference(ctx)?;
        // SAFETY: the caller's contract.
        let prompt = unsafe { c_str(prompt, "prompt") }?;
        let g = if config.is_null() {
            EdgetuneGenerateConfig::default()
        } else {
            // SAFETY: the caller's contract.
            unsafe { read_struct(config, EdgetuneGenerateConfig::default()) }?
        };
        let chat = match g.chat {
            0 => false,
            1 => true,
            v => {
                return Err(Failure::invalid(format!(
                    "EdgetuneGenerateConfig.chat is {v}, not 0 or 1"
                )))
            }
        };
        let generated = obj.with(|c, m| {
            let ids = infer::prompt_ids(m.file().header(), &m.tok, prompt, chat)?;
            let params = GenerateParams {
                max_tokens: g.max_tokens as usize,
                temperature: g.temperature,
                top_k: g.top_k as usize,
                top_p: g.top_p,
                seed: g.seed,
                stop_tokens: infer::stop_tokens(&m.tok),
            };
            let (prefix, virtual_tokens, mut hook) = c.adapters.parts();
            let adapters = GenerateAdapters {
                hook: Some(&mut hook),
                prefix: prefix.cloned(),
                virtual_tokens,
            };
            let mut stream = Utf8Stream::default();
            let mut failed = None;
            let mut buf = Vec::new();
            let mut send = |bytes: &[u8]| -> bool {
                let Some(f) = on_text else { return true };
                if bytes.is_empty() {
                    return true;
                }
                buf.clear();
                buf.extend_from_slice(bytes);
                buf.push(0);
                // SAFETY: a C function of this signature (caller's contract); `buf` outlives it.
                unsafe { f(buf.as_ptr().cast(), bytes.len(), user_data) == 0 }
            };
            let out = generate_with(&c.llama, &ids, &params, adapters, &mut |id| match m
                .tok
                .token_to_piece(id)
            {
                Ok(piece) => stream.push(&piece, &mut send),
                Err(e) => {
                    failed = Some(e);
                    false
                }
            })?;
            if let Some(e) = failed {
                return Err(e.into());
            }
            send(&stream.finish());
            Ok(out.len())
        })?;
        if !n_tokens.is_null() {
            // SAFETY: non-null; the caller's contract.
            unsafe { put(n_tokens, generated as u32, "n_tokens") }?;
        }
        Ok(())
    })
}

/// Frees an inference context. NULL is accepted (OK); a freed or foreign handle returns
/// `INVALID_HANDLE`.
#[no_mangle]
pub extern "C" fn edgetune_inference_free(ctx: *mut EdgetuneInference) -> EdgetuneStatus {
    entry(|| {
        if ctx.is_null() {
            return Ok(());
        }
        drop(handles::remove(ctx, handles::INFERENCE)?);
        Ok(())
    })
}
