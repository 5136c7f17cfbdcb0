//! Training sessions: a config (`EdgetuneTrainConfig`), data added from files or memory, then
//! steps. The library's `train::session::Session` is built at the first step (or
//! `edgetune_session_start`), once all data are in; until then the session is in setup.

use super::handles::{self, Object};
use super::model::{EdgetuneModel, ModelObj};
use super::{
    c_path, check_out, entry, init_struct, opt_c_str, put, read_struct, write_struct, CResult,
    CStruct, EdgetuneStatus, Failure,
};
use crate::adapters::{parse_targets, Method};
use crate::backend::cpu::CpuBackend;
use crate::data::{self, Example};
use crate::model::{ActivationMode, Llama};
use crate::optim::{ScheduleKind, StateMode};
use crate::train::model::AdapterSpec;
use crate::train::session::{AdapterInit, Session, SessionConfig};
use crate::train::{StepMetrics, TrainOptions};
use std::ffi::{c_char, c_void, CString};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, TryLockError};

/// `EdgetuneTrainConfig.method`: LoRA.
pub const EDGETUNE_METHOD_LORA: u32 = 0;
/// `EdgetuneTrainConfig.method`: IA3.
pub const EDGETUNE_METHOD_IA3: u32 = 1;
/// `EdgetuneTrainConfig.method`: prefix tuning.
pub const EDGETUNE_METHOD_PREFIX: u32 = 2;
/// `EdgetuneTrainConfig.method`: prompt tuning.
pub const EDGETUNE_METHOD_PROMPT: u32 = 3;

/// `EdgetuneTrainConfig.optimizer_state`: AdamW state in RAM.
pub const EDGETUNE_STATE_RAM: u32 = 0;
/// `EdgetuneTrainConfig.optimizer_state`: AdamW state in pages spilled to `state_file`.
pub const EDGETUNE_STATE_PAGED: u32 = 1;
/// `EdgetuneTrainConfig.optimizer_state`: 8-bit AdamW state, paged.
pub const EDGETUNE_STATE_PAGED_8BIT: u32 = 2;

/// `EdgetuneTrainConfig.lr_schedule`: linear decay to 0 after warmup (the default).
pub const EDGETUNE_SCHEDULE_LINEAR: u32 = 0;
/// `EdgetuneTrainConfig.lr_schedule`: constant after warmup.
pub const EDGETUNE_SCHEDULE_CONSTANT: u32 = 1;
/// `EdgetuneTrainConfig.lr_schedule`: cosine decay to 0 after warmup.
pub const EDGETUNE_SCHEDULE_COSINE: u32 = 2;

/// A training session (opaque): create with `edgetune_session_new`, free with
/// `edgetune_session_free`.
pub struct EdgetuneSession(());

/// Settings of a training run: the `edgetune train` flags. Fill with
/// `edgetune_train_config_init(&cfg, sizeof cfg)`, then change what you need. String fields are
/// NUL-terminated UTF-8, read during `edgetune_session_new` only (the caller keeps ownership).
/// Boolean fields are 0 or 1.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EdgetuneTrainConfig {
    /// `sizeof(EdgetuneTrainConfig)`; set by `edgetune_train_config_init`.
    pub struct_size: u32,
    /// `EDGETUNE_METHOD_*` [LORA].
    pub method: u32,
    /// Required: where the adapter, `metrics.jsonl` and `checkpoints/step-N/` go.
    pub output_dir: *const c_char,
    /// Layers to adapt: "all-linear" or a comma list of GGUF (attn_q,...,ffn_down) or HF
    /// (q_proj,...) names; NULL: PEFT's default for the method.
    pub targets: *const c_char,
    /// Start from this PEFT adapter directory (its config fixes method, rank, alpha, targets);
    /// NULL: a fresh adapter.
    pub init_adapter_dir: *const c_char,
    /// The paged optimizer state's file; NULL: `output_dir/optimizer.state`.
    pub state_file: *const c_char,
    /// LoRA rank [8] (ignored by other methods).
    pub rank: u32,
    /// LoRA alpha (scale alpha/rank) [16].
    pub alpha: f32,
    /// LoRA dropout on the adapter input, training only [0].
    pub dropout: f32,
    /// Virtual tokens of prefix / prompt tuning [20].
    pub num_virtual_tokens: u32,
    /// rsLoRA scaling alpha/sqrt(rank) [0].
    pub rslora: u32,
    /// Longest sequence in tokens; longer records are cut [512].
    pub seq_len: u32,
    /// Sequences per micro-batch [1].
    pub batch_size: u32,
    /// Micro-batches per optimizer step [1].
    pub grad_accum: u32,
    /// Optimizer steps (passes over the data as often as needed); 0: `epochs` passes [0].
    pub steps: u64,
    /// Passes over the data when `steps` is 0 [1].
    pub epochs: u64,
    /// Peak learning rate [2e-4].
    pub lr: f64,
    /// AdamW decoupled weight decay [0].
    pub weight_decay: f64,
    /// Clip gradients to this global norm; 0 disables [1].
    pub max_grad_norm: f64,
    /// Fraction of examples held out for evaluation, in [0, 1) [0].
    pub val_split: f64,
    /// Steps of linear warmup from 0 [0].
    pub warmup_steps: u64,
    /// `EDGETUNE_SCHEDULE_*` [LINEAR].
    pub lr_schedule: u32,
    /// Shuffle the data each pass [1].
    pub shuffle: u32,
    /// Also train on prompt / non-assistant tokens [0].
    pub train_on_prompt: u32,
    /// Worker threads of this session; 0: every core [0].
    pub threads: u32,
    /// Write a checkpoint every N steps; 0: only on a stop request during `edgetune_session_run`.
    pub checkpoint_every: u64,
    /// Evaluate on the validation split every N steps; 0: after the last step only.
    pub eval_every: u64,
    /// RAM budget of the run in bytes; 0: none. Recorded (see `EdgetuneSessionInfo`); enforced
    /// once the memory planner lands — until then choose `optimizer_state` yourself.
    pub memory_budget_bytes: u64,
    /// `EDGETUNE_STATE_*` [RAM].
    pub optimizer_state: u32,
    /// Pack several short examples into each sequence [0].
    pub pack: u32,
    /// Seed of shuffling, the validation split, adapter init and dropout [42].
    pub seed: u64,
}

// SAFETY: repr(C), starts with `struct_size: u32`, fields are numbers and raw pointers.
unsafe impl CStruct for EdgetuneTrainConfig {
    const MIN_SIZE: usize = std::mem::size_of::<EdgetuneTrainConfig>();
    const NAME: &'static str = "EdgetuneTrainConfig";
}

impl Default for EdgetuneTrainConfig {
    fn default() -> EdgetuneTrainConfig {
        let spec = AdapterSpec::default();
        let train = TrainOptions::new(1, "");
        let session = SessionConfig::new("");
        EdgetuneTrainConfig {
            struct_size: std::mem::size_of::<EdgetuneTrainConfig>() as u32,
            method: EDGETUNE_METHOD_LORA,
            output_dir: std::ptr::null(),
            targets: std::ptr::null(),
            init_adapter_dir: std::ptr::null(),
            state_file: std::ptr::null(),
            rank: spec.rank as u32,
            alpha: spec.alpha,
            dropout: spec.dropout,
            num_virtual_tokens: spec.num_virtual_tokens as u32,
            rslora: spec.rslora as u32,
            seq_len: session.seq_len as u32,
            batch_size: session.batch_size as u32,
            grad_accum: train.grad_accum as u32,
            steps: 0,
            epochs: session.epochs,
            lr: train.lr,
            weight_decay: train.weight_decay,
            max_grad_norm: train.max_grad_norm,
            val_split: session.val_split,
            warmup_steps: train.warmup_steps,
            lr_schedule: EDGETUNE_SCHEDULE_LINEAR,
            shuffle: session.shuffle as u32,
            train_on_prompt: session.train_on_prompt as u32,
            threads: 0,
            checkpoint_every: train.checkpoint_every,
            eval_every: train.eval_every,
            memory_budget_bytes: 0,
            optimizer_state: EDGETUNE_STATE_RAM,
            pack: session.pack as u32,
            seed: train.seed,
        }
    }
}

/// One optimizer step's metrics (the fields of a `metrics.jsonl` line).
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EdgetuneProgress {
    /// `sizeof(EdgetuneProgress)` of the caller (`edgetune_session_step`) or of the library
    /// (progress callback).
    pub struct_size: u32,
    /// 1 when `eval_loss` holds a validation loss.
    pub has_eval_loss: u32,
    /// 1-based step just done.
    pub step: u64,
    /// Steps of the whole run.
    pub total_steps: u64,
    /// Mean cross-entropy of the step's batch, before the update.
    pub loss: f64,
    /// Validation loss after this step (NaN when `has_eval_loss` is 0).
    pub eval_loss: f64,
    pub lr: f64,
    /// Global gradient norm before clipping.
    pub grad_norm: f64,
    /// Real (unpadded) tokens of the step, and their rate.
    pub tokens: u64,
    pub tokens_per_sec: f64,
    /// Seconds since training started (continues across a resume).
    pub elapsed_s: f64,
    /// Resident anonymous memory of the process (RSS minus file pages), bytes; 0 if unknown.
    pub rss_bytes: u64,
}

// SAFETY: repr(C), starts with `struct_size: u32`, fields are numbers.
unsafe impl CStruct for EdgetuneProgress {
    const MIN_SIZE: usize = std::mem::size_of::<EdgetuneProgress>();
    const NAME: &'static str = "EdgetuneProgress";
}

impl EdgetuneProgress {
    fn new(m: &StepMetrics, total_steps: u64) -> EdgetuneProgress {
        EdgetuneProgress {
            struct_size: std::mem::size_of::<EdgetuneProgress>() as u32,
            has_eval_loss: m.eval_loss.is_some() as u32,
            step: m.step,
            total_steps,
            loss: m.loss,
            eval_loss: m.eval_loss.unwrap_or(f64::NAN),
            lr: m.lr,
            grad_norm: m.grad_norm,
            tokens: m.tokens,
            tokens_per_sec: m.tokens_per_sec,
            elapsed_s: m.elapsed_s,
            rss_bytes: m.rss_anon_bytes,
        }
    }
}

/// Where a session stands, filled by `edgetune_session_info`.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct EdgetuneSessionInfo {
    /// Set to `sizeof(EdgetuneSessionInfo)` before the call.
    pub struct_size: u32,
    /// 1 once training has started (data prepared, adapter built); the fields below marked
    /// "started" are 0 before.
    pub started: u32,
    /// Examples added so far (records, or windows of a text file).
    pub examples: u64,
    /// Started: steps of the whole run, and steps done (counting those before a resume).
    pub total_steps: u64,
    pub steps_done: u64,
    /// Started: trainable adapter parameters.
    pub n_params: u64,
    /// Started: training sequences and their tokens (one pass), validation sequences.
    pub train_sequences: u64,
    pub train_tokens: u64,
    pub val_sequences: u64,
    /// `memory_budget_bytes` of the config.
    pub memory_budget_bytes: u64,
}

// SAFETY: repr(C), starts with `struct_size: u32`, fields are numbers.
unsafe impl CStruct for EdgetuneSessionInfo {
    const MIN_SIZE: usize = std::mem::size_of::<EdgetuneSessionInfo>();
    const NAME: &'static str = "EdgetuneSessionInfo";
}

/// Called after each step of `edgetune_session_run` on the calling thread; return 0 to go on,
/// nonzero to stop after this step (a checkpoint is written so the run can resume). `progress`
/// is valid during the call only.
pub type EdgetuneProgressFn =
    Option<unsafe extern "C" fn(progress: *const EdgetuneProgress, user_data: *mut c_void) -> i32>;

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
                let setup = match std::mem::replace(state, placeholder) {
                    State::Setup(s) => s,
                    _ => unreachable!("matched above"),
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
                State::Setup(_) => unreachable!("started above"),
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
    // MEMORY PLANNER HOOK: when `train` gets its planner (`--memory-budget`), call it here with
    // `memory_budget` (and the model config, cfg) to choose checkpointing / paged state or refuse
    // with the planner's message (map that refusal to EDGETUNE_STATUS_INVALID_ARGUMENT). Until
    // then the budget is only recorded and `optimizer_state`/`state_file` are passed through.
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

/// The library settings of a C config (what `edgetune train` does with its flags).
fn session_config(
    c: &EdgetuneTrainConfig,
    stop: Arc<AtomicBool>,
) -> CResult<(SessionConfig, usize)> {
    // SAFETY: string fields are NULL or NUL-terminated (the caller's contract for the struct).
    let out = unsafe { opt_c_str(c.output_dir, "output_dir") }?
        .ok_or_else(|| Failure::invalid("EdgetuneTrainConfig.output_dir is NULL or empty"))?;
    // SAFETY: as above.
    let targets = unsafe { opt_c_str(c.targets, "targets") }?;
    // SAFETY: as above.
    let init_dir = unsafe { opt_c_str(c.init_adapter_dir, "init_adapter_dir") }?;
    // SAFETY: as above.
    let state_file = unsafe { opt_c_str(c.state_file, "state_file") }?;
    let flag = |v: u32, name: &str| match v {
        0 => Ok(false),
        1 => Ok(true),
        _ => Err(Failure::invalid(format!(
            "EdgetuneTrainConfig.{name} is {v}, not 0 or 1"
        ))),
    };
    let method = match c.method {
        EDGETUNE_METHOD_LORA => Method::Lora,
        EDGETUNE_METHOD_IA3 => Method::Ia3,
        EDGETUNE_METHOD_PREFIX => Method::Prefix,
        EDGETUNE_METHOD_PROMPT => Method::Prompt,
        m => {
            return Err(Failure::invalid(format!(
                "EdgetuneTrainConfig.method {m} is not an EDGETUNE_METHOD_*"
            )))
        }
    };
    let schedule = match c.lr_schedule {
        EDGETUNE_SCHEDULE_LINEAR => ScheduleKind::Linear,
        EDGETUNE_SCHEDULE_CONSTANT => ScheduleKind::Constant,
        EDGETUNE_SCHEDULE_COSINE => ScheduleKind::Cosine,
        s => {
            return Err(Failure::invalid(format!(
                "EdgetuneTrainConfig.lr_schedule {s} is not an EDGETUNE_SCHEDULE_*"
            )))
        }
    };
    let state_mode = match c.optimizer_state {
        EDGETUNE_STATE_RAM => StateMode::Ram,
        EDGETUNE_STATE_PAGED => StateMode::Paged,
        EDGETUNE_STATE_PAGED_8BIT => StateMode::Paged8bit,
        s => {
            return Err(Failure::invalid(format!(
                "EdgetuneTrainConfig.optimizer_state {s} is not an EDGETUNE_STATE_*"
            )))
        }
    };
    for (v, name) in [
        (c.seq_len, "seq_len"),
        (c.batch_size, "batch_size"),
        (c.grad_accum, "grad_accum"),
    ] {
        if v == 0 {
            return Err(Failure::invalid(format!("EdgetuneTrainConfig.{name} is 0")));
        }
    }
    if c.steps == 0 && c.epochs == 0 {
        return Err(Failure::invalid(
            "EdgetuneTrainConfig: steps and epochs are both 0",
        ));
    }
    let threads = match c.threads {
        0 => std::thread::available_parallelism().map_or(1, |n| n.get()),
        t => t as usize,
    };
    let adapter = match init_dir {
        Some(dir) => AdapterInit::Dir(PathBuf::from(dir)),
        None => AdapterInit::New(AdapterSpec {
            method,
            targets: targets.map(parse_targets).transpose()?,
            rank: c.rank as usize,
            alpha: c.alpha,
            dropout: c.dropout,
            rslora: flag(c.rslora, "rslora")?,
            num_virtual_tokens: c.num_virtual_tokens as usize,
        }),
    };
    let mut train = TrainOptions::new(1, out);
    train.grad_accum = c.grad_accum as usize;
    train.lr = c.lr;
    train.weight_decay = c.weight_decay;
    train.schedule = schedule;
    train.warmup_steps = c.warmup_steps;
    train.max_grad_norm = c.max_grad_norm;
    train.eval_every = c.eval_every;
    train.checkpoint_every = c.checkpoint_every;
    train.seed = c.seed;
    train.stop = Some(stop);
    train.state_mode = state_mode;
    train.state_file = state_file.map(PathBuf::from);
    let cfg = SessionConfig {
        adapter,
        dropout: None,
        steps: (c.steps > 0).then_some(c.steps),
        epochs: c.epochs,
        batch_size: c.batch_size as usize,
        seq_len: c.seq_len as usize,
        pack: flag(c.pack, "pack")?,
        train_on_prompt: flag(c.train_on_prompt, "train_on_prompt")?,
        shuffle: flag(c.shuffle, "shuffle")?,
        val_split: c.val_split,
        activations: ActivationMode::Full,
        resume: None,
        train,
    };
    Ok((cfg, threads))
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
