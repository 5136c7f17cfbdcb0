//! Training sessions: a config (`EdgetuneTrainConfig`), data added from files or memory, then
//! steps. The library's `train::session::Session` is built at the first step (or
//! `edgetune_session_start`), once all data are in; until then the session is in setup.

use super::config::{
    session_config, EdgetuneProgress, EdgetuneProgressFn, EdgetuneSessionInfo, EdgetuneTrainConfig,
};
use super::handles::{self, Object};
use super::model::{EdgetuneModel, ModelObj};
use super::{
    c_path, check_out, entry, init_struct, put, read_struct, write_struct, CResult, EdgetuneStatus,
    Failure,
};
use crate::backend::cpu::CpuBackend;
use crate::data::{self, Example};
use crate::model::Llama;
use crate::train::session::{Session, SessionConfig};
use std::ffi::{c_char, c_void, CString};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, TryLockError};

/// A training session (opaque): create with `edgetune_session_new`, free with
/// `edgetune_session_free`.
pub struct EdgetuneSession(());

struct Setup {
    cfg: SessionConfig,
    threads: usize,
    memory_budget: u64,
    examples: Vec<Example>,
    /// Names of the data added (paths, `<memory #N>`), for errors.
    sources: Vec<String>,
}

struct Running {
    session: Session<'static>,
    memory_budget: u64,
    examples: u64,
    last_checkpoint: Option<CString>,
}

enum State {
    Setup(Box<Setup>),
    Running(Box<Running>),
    /// Setup consumed by a start that failed; the message says why.
    Failed(String),
}

pub(crate) struct SessionObj {
    stop: Arc<AtomicBool>,
    /// Holds `Session<'static>` borrowing `model`'s file: declared before `model` so it drops
    /// first (see `ModelObj::file_static`).
    state: Mutex<State>,
    model: Arc<ModelObj>,
}

impl SessionObj {
    /// Exclusive use of the session's state for one call; `BUSY` when another thread has it.
    fn with<R>(&self, f: impl FnOnce(&mut State, &Arc<ModelObj>) -> CResult<R>) -> CResult<R> {
        let mut guard = match self.state.try_lock() {
            Ok(g) => g,
            Err(TryLockError::Poisoned(p)) => p.into_inner(),
            Err(TryLockError::WouldBlock) => {
                return Err(Failure::new(
                    EdgetuneStatus::Busy,
                    "the session is in use by another call (one call at a time per session; \
                     only edgetune_session_request_stop may run concurrently)",
                ))
            }
        };
        f(&mut guard, &self.model)
    }

    /// The running session, starting it first if it is still in setup.
    fn running<R>(&self, f: impl FnOnce(&mut Running) -> CResult<R>) -> CResult<R> {
        self.with(|state, model| {
            if let State::Setup(setup) = state {
                if setup.examples.is_empty() {
                    return Err(Failure::state(
                        "no training data: add some with edgetune_session_add_data_file or \
                         edgetune_session_add_data_jsonl first",
                    ));
                }
                let placeholder = State::Failed("training setup did not complete".into());
                let State::Setup(setup) = std::mem::replace(state, placeholder) else {
                    return Err(Failure::state("the session left setup concurrently"));
                };
                *state = match start(model, *setup) {
                    Ok(r) => State::Running(Box::new(r)),
                    Err(f) => {
                        let msg = f.msg.clone();
                        *state = State::Failed(msg);
                        return Err(f);
                    }
                };
            }
            match state {
                State::Running(r) => f(r),
                State::Failed(msg) => Err(Failure::state(format!(
                    "the session could not start and cannot be used: {msg}"
                ))),
                State::Setup(_) => Err(Failure::state("the session has not started")),
            }
        })
    }

    fn setup<R>(&self, f: impl FnOnce(&mut Setup, &ModelObj) -> CResult<R>) -> CResult<R> {
        self.with(|state, model| match state {
            State::Setup(s) => f(s, model),
            _ => Err(Failure::state(
                "training has started: data and checkpoints to resume from must be given \
                 before the first step",
            )),
        })
    }
}

/// Builds the library session from the setup: the model over the shared file, the session's own
/// thread pool, the data prepared from the examples added.
fn start(model: &Arc<ModelObj>, setup: Setup) -> CResult<Running> {
    let Setup {
        cfg,
        threads,
        memory_budget,
        examples,
        sources,
    } = setup;
    // `Session::with_data` plans memory before anything else (cfg.memory_budget, as `train
    // --memory-budget`): a budget the run cannot fit is refused here with the planner's message.
    let n_examples = examples.len() as u64;
    // SAFETY: `file` and the `Session` built on it live in `SessionObj::state`, which is declared
    // before `SessionObj::model` (a clone of this Arc), so they are dropped before the file.
    let file = unsafe { ModelObj::file_static(model) };
    let backend = Arc::new(CpuBackend::new(threads)?);
    let llama = Llama::new(file, backend)?;
    let name = PathBuf::from(sources.join(", "));
    let mut examples = Some(examples);
    let session = Session::with_data(file, llama, cfg, &mut |_tok, _chat, opts| {
        data::prepare_from(&name, examples.take().unwrap_or_default(), opts)
    })?;
    Ok(Running {
        session,
        memory_budget,
        examples: n_examples,
        last_checkpoint: None,
    })
}

/// Fills `*config` (of `size` bytes: pass `sizeof *config`) with the defaults of `edgetune
/// train` and sets its `struct_size`. Thread-safe.
///
/// # Safety
/// `config` is NULL or points to `size` writable bytes.
#[no_mangle]
pub unsafe extern "C" fn edgetune_train_config_init(
    config: *mut EdgetuneTrainConfig,
    size: usize,
) -> EdgetuneStatus {
    // SAFETY: the caller's contract.
    entry(|| unsafe { init_struct(config, size, EdgetuneTrainConfig::default()) })
}

/// Creates a training session on `model` with `config` (copied; its strings are read now). The
/// config is checked here (struct size, enums, flags, targets); the data, adapter and optimizer
/// are set up at the first step or `edgetune_session_start`, after data have been added.
///
/// On success `*out` is a new session the caller frees with `edgetune_session_free`. The session
/// keeps the model alive. Sessions are independent: several may run at once on different
/// threads (each has its own worker threads, `config->threads`). One session is used by one
/// thread at a time: a call while another is in progress returns `BUSY`, except
/// `edgetune_session_request_stop`.
///
/// # Safety
/// `config` is NULL or a readable struct whose `struct_size` is set and whose string fields are
/// NULL or NUL-terminated; `out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn edgetune_session_new(
    model: *const EdgetuneModel,
    config: *const EdgetuneTrainConfig,
    out: *mut *mut EdgetuneSession,
) -> EdgetuneStatus {
    entry(|| {
        let model = handles::model(model)?;
        // SAFETY: the caller's contract.
        let c = unsafe { read_struct(config, EdgetuneTrainConfig::default()) }?;
        if out.is_null() {
            return Err(Failure::invalid("out (EdgetuneSession**) is NULL"));
        }
        let stop = Arc::new(AtomicBool::new(false));
        let (cfg, threads) = session_config(&c, stop.clone())?;
        let setup = Setup {
            cfg,
            threads,
            memory_budget: c.memory_budget_bytes,
            examples: Vec::new(),
            sources: Vec::new(),
        };
        let obj = SessionObj {
            stop,
            state: Mutex::new(State::Setup(Box::new(setup))),
            model,
        };
        let h = handles::insert(Object::Session(Arc::new(obj)))?;
        // SAFETY: checked non-null; writable by the caller's contract.
        unsafe { put(out, h, "out") }
    })
}

fn add_examples(
    session: *const EdgetuneSession,
    name: Option<String>,
    read: impl FnOnce(&str, &ModelObj, &SessionConfig) -> crate::Result<Vec<Example>>,
) -> CResult {
    let s = handles::session(session)?;
    s.setup(|setup, model| {
        let name = name.unwrap_or_else(|| format!("<memory #{}>", setup.sources.len() + 1));
        let examples = read(&name, model, &setup.cfg)?;
        setup.examples.extend(examples);
        setup.sources.push(name);
        Ok(())
    })
}

/// Adds a training data file: JSONL (`{"text"}`, `{"prompt","completion"}`, `{"messages"}`,
/// `{"input_ids","labels"}` lines; docs/data.md) or a `.txt` document. It is read and tokenized
/// now, so errors name the bad line here. Only before training starts (`STATE` after).
///
/// # Safety
/// `path` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn edgetune_session_add_data_file(
    session: *mut EdgetuneSession,
    path: *const c_char,
) -> EdgetuneStatus {
    entry(|| {
        // SAFETY: the caller's contract.
        let path = unsafe { c_path(path, "path") }?;
        let name = path.display().to_string();
        add_examples(session, Some(name), |_, m, cfg| {
            data::read_examples(&path, &m.tok, m.chat.as_ref(), &cfg.data_options())
        })
    })
}

/// Adds training records from memory: `len` bytes of JSONL (one record per line, as in a data
/// file), tokenized during the call; the caller keeps ownership of `data`. Errors name the data
/// `<memory #N>` (N counts the data added to this session) and the line. Only before training
/// starts.
///
/// # Safety
/// `data` is NULL or points to `len` readable bytes.
#[no_mangle]
pub unsafe extern "C" fn edgetune_session_add_data_jsonl(
    session: *mut EdgetuneSession,
    data: *const c_char,
    len: usize,
) -> EdgetuneStatus {
    entry(|| {
        if data.is_null() {
            return Err(Failure::invalid("data is NULL"));
        }
        // SAFETY: `len` readable bytes by the caller's contract, only read during this call.
        let bytes = unsafe { std::slice::from_raw_parts(data.cast::<u8>(), len) };
        add_examples(session, None, |name, m, cfg| {
            let opts = cfg.data_options();
            data::examples_from_bytes(
                Path::new(name),
                bytes,
                false,
                &m.tok,
                m.chat.as_ref(),
                &opts,
            )
        })
    })
}

/// Resumes from a checkpoint directory (`OUTPUT_DIR/checkpoints/step-N`, written by a session
/// with the same config and data): the adapter, optimizer state, step and data position come
/// from it when training starts. Only before training starts; the directory is checked now.
///
/// # Safety
/// `dir` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn edgetune_session_load_checkpoint(
    session: *mut EdgetuneSession,
    dir: *const c_char,
) -> EdgetuneStatus {
    entry(|| {
        // SAFETY: the caller's contract.
        let dir = unsafe { c_path(dir, "dir") }?;
        handles::session(session)?.setup(|setup, _| {
            crate::train::load_state(&dir)?;
            setup.cfg.resume = Some(dir);
            Ok(())
        })
    })
}

/// Starts training without taking a step: prepares the data added, builds the adapter and the
/// optimizer (or loads them from the checkpoint). Optional — the first step does it — but lets an
/// app show `edgetune_session_info` (total steps, data sizes) first. A failure here leaves the
/// session unusable (`STATE` afterwards); free it and create a new one.
#[no_mangle]
pub extern "C" fn edgetune_session_start(session: *mut EdgetuneSession) -> EdgetuneStatus {
    entry(|| handles::session(session)?.running(|_| Ok(())))
}

/// Runs one optimizer step (starting training first if needed). `progress` (NULL, or a struct
/// with `struct_size` set) receives its metrics. `STATE` once all steps are done.
///
/// # Safety
/// `progress` is NULL or a writable struct whose `struct_size` is set.
#[no_mangle]
pub unsafe extern "C" fn edgetune_session_step(
    session: *mut EdgetuneSession,
    progress: *mut EdgetuneProgress,
) -> EdgetuneStatus {
    entry(|| {
        // SAFETY: the caller's contract.
        unsafe { check_out(progress) }?;
        handles::session(session)?.running(|r| {
            if r.session.is_done() {
                return Err(Failure::state(format!(
                    "training is finished: all {} steps are done",
                    r.session.trainer().options().total_steps
                )));
            }
            let m = r.session.step()?;
            if progress.is_null() {
                return Ok(());
            }
            let p = EdgetuneProgress::new(&m, r.session.trainer().options().total_steps);
            // SAFETY: non-null; the caller's contract.
            unsafe { write_struct(progress, &p) }
        })
    })
}

/// Runs the remaining steps, calling `on_step` (may be NULL) after each on this thread, then
/// writes the adapter to `output_dir`. Stops early (after the step in progress, with a checkpoint
/// in `output_dir/checkpoints/`, adapter not written) when `on_step` returns nonzero or
/// `edgetune_session_request_stop` is called; `*stopped` (may be NULL) tells which happened
/// (1 stopped early, 0 finished). A later `edgetune_session_run`/`_step` continues.
///
/// # Safety
/// `stopped` is NULL or writable; `on_step` is NULL or a function of that signature.
#[no_mangle]
pub unsafe extern "C" fn edgetune_session_run(
    session: *mut EdgetuneSession,
    on_step: EdgetuneProgressFn,
    user_data: *mut c_void,
    stopped: *mut i32,
) -> EdgetuneStatus {
    entry(|| {
        let s = handles::session(session)?;
        let stop = s.stop.clone();
        let outcome = s.running(|r| {
            let total = r.session.trainer().options().total_steps;
            let outcome = r.session.run(&mut |m| {
                if let Some(f) = on_step {
                    let p = EdgetuneProgress::new(m, total);
                    // SAFETY: a C function of this signature (caller's contract); `p` outlives the
                    // call.
                    if unsafe { f(&p, user_data) } != 0 {
                        stop.store(true, Ordering::SeqCst);
                    }
                }
            });
            // A stop request is used up by the run it stopped (or that finished).
            stop.store(false, Ordering::SeqCst);
            if let Some(dir) = outcome
                .as_ref()
                .ok()
                .and_then(|o| o.last_checkpoint.as_ref())
            {
                r.last_checkpoint = CString::new(dir.display().to_string()).ok();
            }
            Ok(outcome?)
        })?;
        if !stopped.is_null() {
            // SAFETY: non-null; the caller's contract.
            unsafe { put(stopped, outcome.interrupted as i32, "stopped") }?;
        }
        Ok(())
    })
}

/// Asks a running `edgetune_session_run` to stop after the step in progress. Callable from any
/// thread at any time (it only sets a flag; it never blocks). If no run is in progress, the next
/// run stops after its first step.
#[no_mangle]
pub extern "C" fn edgetune_session_request_stop(session: *mut EdgetuneSession) -> EdgetuneStatus {
    entry(|| {
        handles::session(session)?
            .stop
            .store(true, Ordering::SeqCst);
        Ok(())
    })
}

/// Writes a checkpoint of the current step to `output_dir/checkpoints/step-N/` (adapter,
/// optimizer state, trainer state, data position; written atomically). `*dir_out` (may be NULL)
/// receives its path, owned by the session, valid until the next call on this session.
///
/// # Safety
/// `dir_out` is NULL or writable.
#[no_mangle]
pub unsafe extern "C" fn edgetune_session_save_checkpoint(
    session: *mut EdgetuneSession,
    dir_out: *mut *const c_char,
) -> EdgetuneStatus {
    entry(|| {
        handles::session(session)?.running(|r| {
            let dir = r.session.checkpoint()?;
            let dir = r
                .last_checkpoint
                .insert(CString::new(dir.display().to_string()).unwrap_or_default());
            if dir_out.is_null() {
                return Ok(());
            }
            // SAFETY: non-null; the caller's contract.
            unsafe { put(dir_out, dir.as_ptr(), "dir_out") }
        })
    })
}

/// Writes the current adapter as a PEFT directory (`adapter_config.json`,
/// `adapter_model.safetensors`) to `dir`, created if missing; files are written atomically.
///
/// # Safety
/// `dir` is NULL or NUL-terminated.
#[no_mangle]
pub unsafe extern "C" fn edgetune_session_save_adapter(
    session: *mut EdgetuneSession,
    dir: *const c_char,
) -> EdgetuneStatus {
    entry(|| {
        // SAFETY: the caller's contract.
        let dir = unsafe { c_path(dir, "dir") }?;
        handles::session(session)?.running(|r| Ok(r.session.save_adapter(&dir)?))
    })
}

/// Fills `*info` (`struct_size` set first) with where the session stands. Does not start it.
///
/// # Safety
/// `info` is NULL or a writable struct whose `struct_size` is set.
#[no_mangle]
pub unsafe extern "C" fn edgetune_session_info(
    session: *const EdgetuneSession,
    info: *mut EdgetuneSessionInfo,
) -> EdgetuneStatus {
    entry(|| {
        let value = handles::session(session)?.with(|state, _| {
            let mut v = EdgetuneSessionInfo {
                struct_size: 0,
                started: 0,
                examples: 0,
                total_steps: 0,
                steps_done: 0,
                n_params: 0,
                train_sequences: 0,
                train_tokens: 0,
                val_sequences: 0,
                memory_budget_bytes: 0,
            };
            match state {
                State::Setup(s) => {
                    v.examples = s.examples.len() as u64;
                    v.memory_budget_bytes = s.memory_budget;
                }
                State::Running(r) => {
                    let sum = r.session.summary();
                    v.started = 1;
                    v.examples = r.examples;
                    v.total_steps = sum.total_steps;
                    v.steps_done = r.session.trainer().steps_done();
                    v.n_params = sum.n_params as u64;
                    v.train_sequences = sum.data.train_sequences as u64;
                    v.train_tokens = sum.data.train_tokens as u64;
                    v.val_sequences = sum.data.val_sequences as u64;
                    v.memory_budget_bytes = r.memory_budget;
                }
                State::Failed(msg) => {
                    return Err(Failure::state(format!(
                        "the session could not start: {msg}"
                    )))
                }
            }
            Ok(v)
        })?;
        // SAFETY: the caller's contract.
        unsafe { write_struct(info, &value) }
    })
}

/// Frees a session (its adapter, optimizer state and threads; files written stay). NULL is
/// accepted (OK). If another thread is inside a call on it, the session is released when that
/// call returns. A freed or foreign handle returns `INVALID_HANDLE`.
#[no_mangle]
pub extern "C" fn edgetune_session_free(session: *mut EdgetuneSession) -> EdgetuneStatus {
    entry(|| {
        if session.is_null() {
            return Ok(());
        }
        drop(handles::remove(session, handles::SESSION)?);
        Ok(())
    })
}
