//! The trainer (DESIGN.md "Data flow", last stage): optimizer steps over micro-batches with
//! gradient accumulation, AdamW through `optim`, a warmup schedule, clipping by global norm,
//! evaluation on a validation split, `metrics.jsonl`, checkpoints (every N steps and on a stop
//! request such as Ctrl-C) and exact resume.
//!
//! The loop is written against two small seams so it can be tested without a real model:
//! `Objective` (forward + backward of one micro-batch, adding the adapter's gradients) and
//! `DataSource` (the micro-batches of each step, with a position a checkpoint can store).
//!
//! Loss of a step (FORMATS.md Part II §5): Σ over its micro-batches of Σ CE over predicted tokens,
//! divided by the predicted tokens of all its micro-batches. Each micro-batch's backward is told
//! that common denominator, so the accumulated gradient is the gradient of the step's loss.

pub mod checkpoint;
pub mod data;
pub mod metrics;
pub mod model;
pub mod plan;
pub mod session;

pub use checkpoint::{checkpoint_dir, load_state, save_checkpoint, TrainerState};
pub use metrics::{read_metrics, rss_anon_bytes, MetricsLog, StepMetrics, METRICS_FILE};

use crate::adapters::{save_peft_dir, AnyAdapter};
use crate::error::{Error, Result};
use crate::optim::{
    clip_grad_norm, AdamWConfig, Optimizer, ParamSet, Schedule, ScheduleKind, StateMode,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

/// The paged optimizer state's scratch file in the output directory (not a checkpoint).
pub const STATE_SCRATCH_FILE: &str = "optimizer.state";

/// RAM for paged optimizer state unless the memory planner says otherwise.
pub const DEFAULT_STATE_RAM_BYTES: usize = 16 << 20;

/// One micro-batch: `rows` sequences right-padded to `width` (`[rows, width]` row-major), labels
/// −100 where nothing is predicted (padding, prompt tokens).
#[derive(Clone, Debug, PartialEq)]
pub struct MicroBatch {
    pub rows: usize,
    pub width: usize,
    pub input_ids: Vec<u32>,
    pub labels: Vec<i32>,
    /// Real (unpadded) tokens, for throughput.
    pub tokens: usize,
    /// Lengths of the documents packed in each row (one entry per row; empty: one document a
    /// row). Tokens attend only within their document.
    pub doc_lengths: Vec<Vec<usize>>,
}

/// Summed NLL over predicted tokens and their count.
#[derive(Clone, Copy, Debug, Default, PartialEq)]
pub struct LossStats {
    pub sum_nll: f64,
    pub n_tokens: usize,
}

impl LossStats {
    pub fn add(&mut self, o: LossStats) {
        self.sum_nll += o.sum_nll;
        self.n_tokens += o.n_tokens;
    }

    /// Mean NLL; `None` when nothing was predicted.
    pub fn mean(&self) -> Option<f64> {
        (self.n_tokens > 0).then(|| self.sum_nll / self.n_tokens as f64)
    }
}

/// The model side of a training step.
pub trait Objective {
    /// Tokens of `batch` the loss predicts (its share of a step's denominator).
    fn count_targets(&self, adapter: &AnyAdapter, batch: &MicroBatch) -> usize;

    /// Training forward and backward of one micro-batch: adds d(Σ NLL / `denominator`)/dθ into the
    /// adapter's gradients and returns the summed NLL. `pass` identifies the forward pass
    /// (dropout masks derive from it).
    fn forward_backward(
        &mut self,
        adapter: &mut AnyAdapter,
        batch: &MicroBatch,
        denominator: usize,
        pass: u64,
    ) -> Result<LossStats>;

    /// Inference forward: the summed NLL, no gradients.
    fn evaluate(&mut self, adapter: &mut AnyAdapter, batch: &MicroBatch) -> Result<LossStats>;

    /// Frees memory kept from one step to the next (called before a file is written, so the
    /// plan's Save phase never coexists with a step's buffers). Default: nothing kept.
    fn release_buffers(&mut self) {}
}

/// The data side: the micro-batches of each optimizer step, resumable.
pub trait DataSource {
    /// Up to `grad_accum` micro-batches for the next optimizer step.
    fn next_step(&mut self, grad_accum: usize) -> Result<Vec<MicroBatch>>;
    /// The position a checkpoint stores.
    fn state(&self) -> serde_json::Value;
    /// Continues from a stored position.
    fn restore(&mut self, state: &serde_json::Value) -> Result<()>;
}

/// Settings of a run (the `train` flags).
#[derive(Clone, Debug)]
pub struct TrainOptions {
    /// Optimizer steps in the whole run.
    pub total_steps: u64,
    pub grad_accum: usize,
    pub lr: f64,
    pub weight_decay: f64,
    pub schedule: ScheduleKind,
    pub warmup_steps: u64,
    /// Clip gradients to this global 2-norm; 0 disables clipping.
    pub max_grad_norm: f64,
    /// Evaluate every N steps (0: only after the last step); ignored without validation data.
    pub eval_every: u64,
    /// Checkpoint every N steps (0: never, except on a stop request).
    pub checkpoint_every: u64,
    /// Recorded in checkpoints so a resumed run uses the same data order and dropout.
    pub seed: u64,
    /// Where the adapter, `metrics.jsonl` and `checkpoints/` go.
    pub out_dir: PathBuf,
    /// Set (e.g. by a Ctrl-C handler) to stop after the current step with a checkpoint.
    pub stop: Option<Arc<AtomicBool>>,
    /// `--optimizer-state`: AdamW state in RAM, paged to a file, or paged 8-bit (AdamW8bit).
    pub state_mode: StateMode,
    /// `--state-file`: the paged state's file [default: `out_dir/optimizer.state`].
    pub state_file: Option<PathBuf>,
    /// RAM the paged state may keep (ignored for `StateMode::Ram`).
    pub state_ram_bytes: usize,
}

impl TrainOptions {
    pub fn new(total_steps: u64, out_dir: impl Into<PathBuf>) -> TrainOptions {
        TrainOptions {
            total_steps,
            grad_accum: 1,
            lr: 2e-4,
            weight_decay: 0.0,
            schedule: ScheduleKind::Linear,
            warmup_steps: 0,
            max_grad_norm: 1.0,
            eval_every: 0,
            checkpoint_every: 0,
            seed: 42,
            out_dir: out_dir.into(),
            stop: None,
            state_mode: StateMode::Ram,
            state_file: None,
            state_ram_bytes: DEFAULT_STATE_RAM_BYTES,
        }
    }

    /// Where paged optimizer state lives.
    pub fn state_file(&self) -> PathBuf {
        self.state_file
            .clone()
            .unwrap_or_else(|| self.out_dir.join(STATE_SCRATCH_FILE))
    }

    fn validate(&self) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidArgument(m));
        if self.total_steps == 0 {
            return bad("training needs at least 1 step".into());
        }
        if self.grad_accum == 0 {
            return bad("--grad-accum 0: at least 1 micro-batch per step".into());
        }
        if !self.lr.is_finite() || self.lr < 0.0 {
            return bad(format!(
                "--lr {} is not a finite non-negative number",
                self.lr
            ));
        }
        if !self.weight_decay.is_finite() || self.weight_decay < 0.0 {
            return bad(format!(
                "--weight-decay {} is not a finite non-negative number",
                self.weight_decay
            ));
        }
        if !self.max_grad_norm.is_finite() || self.max_grad_norm < 0.0 {
            return bad(format!(
                "--max-grad-norm {} is not a finite non-negative number (0 disables clipping)",
                self.max_grad_norm
            ));
        }
        Ok(())
    }

    /// What must match between a checkpoint and the run resuming it.
    fn settings(&self) -> serde_json::Value {
        serde_json::json!({
            "total_steps": self.total_steps,
            "grad_accum": self.grad_accum,
            "lr": self.lr,
            "weight_decay": self.weight_decay,
            "schedule": format!("{:?}", self.schedule).to_lowercase(),
            "warmup_steps": self.warmup_steps,
            "max_grad_norm": self.max_grad_norm,
            "seed": self.seed,
        })
    }

    fn schedule(&self) -> Schedule {
        Schedule::new(self.schedule, self.lr, self.warmup_steps, self.total_steps)
    }
}

/// How a run ended.
#[derive(Clone, Debug, PartialEq)]
pub struct Outcome {
    /// Optimizer steps done in all (counting those before a resume).
    pub steps: u64,
    /// Stopped early by the stop flag (a checkpoint was written).
    pub interrupted: bool,
    pub last_checkpoint: Option<PathBuf>,
    /// Metrics of the last step run.
    pub last: Option<StepMetrics>,
}

/// The optimizer, schedule, counters, metrics log and checkpoints of one run, advanced one
/// optimizer step at a time (`train` loops over it; the C ABI steps it from the caller).
pub struct Trainer {
    opts: TrainOptions,
    optimizer: Optimizer,
    schedule: Schedule,
    state: TrainerState,
    log: MetricsLog,
    last_checkpoint: Option<PathBuf>,
    last: Option<StepMetrics>,
    started: Instant,
    elapsed_before: f64,
}

impl Trainer {
    /// Sets up a run for `adapter`. `resume`: a checkpoint directory whose adapter the caller has
    /// already loaded into `adapter`; the optimizer state, counters and data position (restored
    /// into `data`) come from it, and `metrics.jsonl` is cut back to its step.
    pub fn new(
        adapter: &AnyAdapter,
        data: &mut dyn DataSource,
        opts: TrainOptions,
        resume: Option<&Path>,
    ) -> Result<Trainer> {
        opts.validate()?;
        std::fs::create_dir_all(&opts.out_dir)
            .map_err(|e| Error::io(format!("creating {}", opts.out_dir.display()), e))?;
        let specs = ParamSet::from_specs(adapter.as_adapter().params().specs())?;
        let rule = opts.state_mode.rule(AdamWConfig {
            weight_decay: opts.weight_decay,
            ..AdamWConfig::default()
        });
        let store = opts
            .state_mode
            .store(&opts.state_file(), opts.state_ram_bytes);
        let mut optimizer = Optimizer::new(rule, specs, store)?;
        let settings = opts.settings();
        let metrics_path = opts.out_dir.join(METRICS_FILE);
        let mut state = TrainerState {
            format: checkpoint::FORMAT.into(),
            version: checkpoint::VERSION,
            step: 0,
            micro_batches: 0,
            elapsed_s: 0.0,
            data: serde_json::Value::Null,
            settings: settings.clone(),
        };
        let mut last_checkpoint = None;
        let log = match resume {
            None => MetricsLog::create(&metrics_path)?,
            Some(dir) => {
                let saved = load_state(dir)?;
                let diff = checkpoint::settings_mismatch(&saved.settings, &settings);
                if !diff.is_empty() {
                    return Err(Error::InvalidArgument(format!(
                        "cannot resume from {}: settings differ: {}",
                        dir.display(),
                        diff.join(", ")
                    )));
                }
                optimizer.load_state(&dir.join(checkpoint::OPTIMIZER_FILE))?;
                if optimizer.steps_done() != saved.step {
                    return Err(Error::InvalidArgument(format!(
                        "{}: optimizer state is at step {}, the trainer state at step {}",
                        dir.display(),
                        optimizer.steps_done(),
                        saved.step
                    )));
                }
                if saved.step > opts.total_steps {
                    return Err(Error::InvalidArgument(format!(
                        "{}: checkpoint is at step {}, past the run's {} steps",
                        dir.display(),
                        saved.step,
                        opts.total_steps
                    )));
                }
                data.restore(&saved.data)?;
                state = saved;
                last_checkpoint = Some(dir.to_owned());
                MetricsLog::resume(&metrics_path, state.step)?
            }
        };
        Ok(Trainer {
            schedule: opts.schedule(),
            elapsed_before: state.elapsed_s,
            opts,
            optimizer,
            state,
            log,
            last_checkpoint,
            last: None,
            started: Instant::now(),
        })
    }

    pub fn options(&self) -> &TrainOptions {
        &self.opts
    }

    /// Optimizer steps done (counting those before a resume).
    pub fn steps_done(&self) -> u64 {
        self.state.step
    }

    /// All `total_steps` are done.
    pub fn is_done(&self) -> bool {
        self.state.step >= self.opts.total_steps
    }

    /// The newest checkpoint written (or resumed from).
    pub fn last_checkpoint(&self) -> Option<&Path> {
        self.last_checkpoint.as_deref()
    }

    /// Metrics of the last step run.
    pub fn last_metrics(&self) -> Option<&StepMetrics> {
        self.last.as_ref()
    }

    /// The optimizer (its store's paging statistics, state size).
    pub fn optimizer(&self) -> &Optimizer {
        &self.optimizer
    }

    /// Runs one optimizer step: forward and backward of its micro-batches, clipping, the update,
    /// evaluation when due, a metrics line, and a checkpoint when one is due. A non-finite loss
    /// or gradient stops before the update with an error naming the last good checkpoint.
    pub fn step(
        &mut self,
        objective: &mut dyn Objective,
        data: &mut dyn DataSource,
        adapter: &mut AnyAdapter,
        val: &[MicroBatch],
    ) -> Result<StepMetrics> {
        if self.is_done() {
            return Err(Error::InvalidArgument(format!(
                "training is finished: all {} steps are done",
                self.opts.total_steps
            )));
        }
        let step_start = Instant::now();
        let step = self.state.step + 1;
        let batches = data.next_step(self.opts.grad_accum)?;
        let denominator: usize = batches
            .iter()
            .map(|b| objective.count_targets(adapter, b))
            .sum();
        if denominator == 0 {
            return Err(Error::InvalidArgument(format!(
                "step {step}: no token to predict in its {} micro-batch(es) (every label is -100)",
                batches.len()
            )));
        }
        adapter.as_adapter_mut().zero_grad();
        let mut loss = LossStats::default();
        let mut tokens = 0u64;
        for b in &batches {
            let pass = self.state.micro_batches;
            self.state.micro_batches += 1;
            loss.add(objective.forward_backward(adapter, b, denominator, pass)?);
            tokens += b.tokens as u64;
        }
        adapter.as_adapter_mut().set_training(None);
        let mean = loss.sum_nll / denominator as f64;
        let grad_norm = clip_grad_norm(
            &mut adapter.as_adapter_mut().params_mut().grads_mut(),
            self.opts.max_grad_norm,
        );
        if !mean.is_finite() || !grad_norm.is_finite() {
            let what = if mean.is_finite() {
                format!("gradient norm is {grad_norm}")
            } else {
                format!("loss is {mean}")
            };
            let keep = match &self.last_checkpoint {
                Some(d) => format!("the last good checkpoint is {}", d.display()),
                None => "no checkpoint was written before it".into(),
            };
            return Err(Error::InvalidArgument(format!(
                "step {step}: {what}; training stopped before updating the adapter ({keep}). \
                 Try a lower --lr or --max-grad-norm"
            )));
        }
        let lr = self.schedule.lr(self.optimizer.steps_done());
        {
            let (mut values, grads) = adapter.as_adapter_mut().params_mut().values_and_grads();
            self.optimizer.step(&mut values, &grads, lr)?;
        }
        self.state.step = step;
        let step_s = step_start.elapsed().as_secs_f64();
        let total = self.opts.total_steps;
        let eval_every = if self.opts.eval_every == 0 {
            total
        } else {
            self.opts.eval_every
        };
        let eval_loss = if !val.is_empty() && (step.is_multiple_of(eval_every) || step == total) {
            Some(evaluate(objective, adapter, val)?)
        } else {
            None
        };
        self.state.elapsed_s = self.elapsed_before + self.started.elapsed().as_secs_f64();
        let m = StepMetrics {
            step,
            loss: mean,
            lr,
            grad_norm: grad_norm as f64,
            tokens,
            tokens_per_sec: if step_s > 0.0 {
                tokens as f64 / step_s
            } else {
                0.0
            },
            elapsed_s: self.state.elapsed_s,
            rss_anon_bytes: rss_anon_bytes().unwrap_or(0),
            eval_loss,
        };
        self.log.append(&m)?;
        self.last = Some(m.clone());
        let every = self.opts.checkpoint_every;
        if every > 0 && step.is_multiple_of(every) {
            objective.release_buffers();
            self.checkpoint(data, adapter)?;
        }
        Ok(m)
    }

    /// Writes a checkpoint of the current step (adapter, optimizer state, counters, data
    /// position) and returns its directory.
    pub fn checkpoint(&mut self, data: &dyn DataSource, adapter: &AnyAdapter) -> Result<PathBuf> {
        self.state.data = data.state();
        let dir = save_checkpoint(
            &self.opts.out_dir,
            adapter.as_adapter(),
            &mut self.optimizer,
            &self.state,
        )
        .map_err(|e| {
            let keep = match &self.last_checkpoint {
                Some(d) => format!("the last good checkpoint {} is intact", d.display()),
                None => "no earlier checkpoint exists".into(),
            };
            let what = format!(
                "writing the checkpoint of step {} failed ({keep})",
                self.state.step
            );
            match e {
                Error::Io { context, source } => Error::io(format!("{what}: {context}"), source),
                e => Error::InvalidArgument(format!("{what}: {e}")),
            }
        })?;
        self.last_checkpoint = Some(dir.clone());
        Ok(dir)
    }

    /// Steps to the end, or until the options' stop flag is set (then a checkpoint is written
    /// so the run can be resumed); at the end the adapter goes to the output directory.
    pub fn run(
        &mut self,
        objective: &mut dyn Objective,
        data: &mut dyn DataSource,
        adapter: &mut AnyAdapter,
        val: &[MicroBatch],
        on_step: &mut dyn FnMut(&StepMetrics),
    ) -> Result<Outcome> {
        let stop = self.opts.stop.clone();
        let every = self.opts.checkpoint_every;
        let mut interrupted = false;
        while !self.is_done() {
            let m = self.step(objective, data, adapter, val)?;
            on_step(&m);
            if stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst)) && !self.is_done() {
                if every == 0 || !m.step.is_multiple_of(every) {
                    objective.release_buffers();
                    self.checkpoint(data, adapter)?;
                }
                interrupted = true;
                break;
            }
        }
        if !interrupted {
            objective.release_buffers();
            save_peft_dir(adapter.as_adapter(), &self.opts.out_dir)?;
        }
        Ok(Outcome {
            steps: self.steps_done(),
            interrupted,
            last_checkpoint: self.last_checkpoint.clone(),
            last: self.last.clone(),
        })
    }
}

/// Runs training to the end (or until the stop flag), then writes the adapter to `out_dir`.
/// `resume`: a checkpoint directory whose adapter the caller has already loaded into `adapter`.
/// `on_step` sees each step's metrics (progress display).
pub fn train(
    objective: &mut dyn Objective,
    data: &mut dyn DataSource,
    adapter: &mut AnyAdapter,
    val: &[MicroBatch],
    opts: &TrainOptions,
    resume: Option<&Path>,
    on_step: &mut dyn FnMut(&StepMetrics),
) -> Result<Outcome> {
    Trainer::new(adapter, data, opts.clone(), resume)?.run(objective, data, adapter, val, on_step)
}

/// Mean NLL over all predicted tokens of `val`.
pub fn evaluate(
    objective: &mut dyn Objective,
    adapter: &mut AnyAdapter,
    val: &[MicroBatch],
) -> Result<f64> {
    adapter.as_adapter_mut().set_training(None);
    let mut total = LossStats::default();
    for b in val {
        total.add(objective.evaluate(adapter, b)?);
    }
    total
        .mean()
        .ok_or_else(|| Error::InvalidArgument("validation data has no token to predict".into()))
}
