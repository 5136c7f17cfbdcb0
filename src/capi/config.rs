//! The C structs of training (`EdgetuneTrainConfig`, `EdgetuneProgress`, `EdgetuneSessionInfo`),
//! their defaults, and the translation of a config into the library's `SessionConfig` — what
//! `edgetune train` does with its flags.

use super::{opt_c_str, CResult, CStruct, Failure};
use crate::adapters::{parse_targets, Method};
use crate::optim::{ScheduleKind, StateMode};
use crate::train::model::AdapterSpec;
use crate::train::plan::Checkpointing;
use crate::train::session::{AdapterInit, SessionConfig};
use crate::train::{StepMetrics, TrainOptions};
use std::ffi::{c_char, c_void};
use std::path::PathBuf;
use std::sync::atomic::AtomicBool;
use std::sync::Arc;

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

/// `EdgetuneTrainConfig.checkpointing`: recompute activations only when the memory budget needs it.
pub const EDGETUNE_CHECKPOINTING_AUTO: u32 = 0;
/// `EdgetuneTrainConfig.checkpointing`: always keep only each layer's input and recompute.
pub const EDGETUNE_CHECKPOINTING_ON: u32 = 1;
/// `EdgetuneTrainConfig.checkpointing`: never (fastest, most memory).
pub const EDGETUNE_CHECKPOINTING_OFF: u32 = 2;

/// `EdgetuneTrainConfig.lr_schedule`: linear decay to 0 after warmup (the default).
pub const EDGETUNE_SCHEDULE_LINEAR: u32 = 0;
/// `EdgetuneTrainConfig.lr_schedule`: constant after warmup.
pub const EDGETUNE_SCHEDULE_CONSTANT: u32 = 1;
/// `EdgetuneTrainConfig.lr_schedule`: cosine decay to 0 after warmup.
pub const EDGETUNE_SCHEDULE_COSINE: u32 = 2;

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
    /// Anonymous RAM budget of the run in bytes (the memory-mapped model is not counted); 0:
    /// none. The memory planner (docs/memory.md) chooses checkpointing, the logits chunk and the
    /// paged state's RAM share to fit it, or `edgetune_session_start` fails with a message naming
    /// the largest consumers and the smallest budget that would work.
    pub memory_budget_bytes: u64,
    /// `EDGETUNE_STATE_*` [RAM].
    pub optimizer_state: u32,
    /// Pack several short examples into each sequence [0].
    pub pack: u32,
    /// Seed of shuffling, the validation split, adapter init and dropout [42].
    pub seed: u64,
    /// `EDGETUNE_CHECKPOINTING_*` [AUTO].
    pub checkpointing: u32,
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
            checkpointing: EDGETUNE_CHECKPOINTING_AUTO,
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
    pub(crate) fn new(m: &StepMetrics, total_steps: u64) -> EdgetuneProgress {
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

/// The library settings of a C config (what `edgetune train` does with its flags).
pub(crate) fn session_config(
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
        checkpointing: match c.checkpointing {
            EDGETUNE_CHECKPOINTING_AUTO => Checkpointing::Auto,
            EDGETUNE_CHECKPOINTING_ON => Checkpointing::On,
            EDGETUNE_CHECKPOINTING_OFF => Checkpointing::Off,
            v => {
                return Err(Failure::invalid(format!(
                    "EdgetuneTrainConfig.checkpointing {v}: expected EDGETUNE_CHECKPOINTING_AUTO, _ON or _OFF"
                )))
            }
        },
        memory_budget: (c.memory_budget_bytes > 0).then_some(c.memory_budget_bytes),
        resume: None,
        train,
    };
    Ok((cfg, threads))
}
