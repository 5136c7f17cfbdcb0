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

pub use checkpoint::{checkpoint_dir, load_state, save_checkpoint, TrainerState};
pub use metrics::{read_metrics, rss_anon_bytes, MetricsLog, StepMetrics, METRICS_FILE};

use crate::adapters::{save_peft_dir, AnyAdapter};
use crate::error::{Error, Result};
use crate::optim::{
    clip_grad_norm, AdamWConfig, Optimizer, ParamSet, Rule, Schedule, ScheduleKind, StoreKind,
};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

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
        }
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

/// Runs training. `resume`: a checkpoint directory whose adapter the caller has already loaded
/// into `adapter`. `on_step` sees each step's metrics (progress display).
pub fn train(
    objective: &mut dyn Objective,
    data: &mut dyn DataSource,
    adapter: &mut AnyAdapter,
    val: &[MicroBatch],
    opts: &TrainOptions,
    resume: Option<&Path>,
    on_step: &mut dyn FnMut(&StepMetrics),
) -> Result<Outcome> {
    opts.validate()?;
    std::fs::create_dir_all(&opts.out_dir)
        .map_err(|e| Error::io(format!("creating {}", opts.out_dir.display()), e))?;
    let specs = ParamSet::from_specs(adapter.as_adapter().params().specs())?;
    let rule = Rule::AdamW(AdamWConfig {
        weight_decay: opts.weight_decay,
        ..AdamWConfig::default()
    });
    let mut optimizer = Optimizer::new(rule, specs, StoreKind::Ram)?;
    let schedule = opts.schedule();
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
    let mut log = match resume {
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

    let started = Instant::now();
    let elapsed_before = state.elapsed_s;
    let eval_every = if opts.eval_every == 0 {
        opts.total_steps
    } else {
        opts.eval_every
    };
    let mut last = None;
    let mut interrupted = false;
    while state.step < opts.total_steps {
        let step_start = Instant::now();
        let step = state.step + 1;
        let batches = data.next_step(opts.grad_accum)?;
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
            let pass = state.micro_batches;
            state.micro_batches += 1;
            loss.add(objective.forward_backward(adapter, b, denominator, pass)?);
            tokens += b.tokens as u64;
        }
        adapter.as_adapter_mut().set_training(None);
        let mean = loss.sum_nll / denominator as f64;
        let grad_norm = clip_grad_norm(
            &mut adapter.as_adapter_mut().params_mut().grads_mut(),
            opts.max_grad_norm,
        );
        if !mean.is_finite() || !grad_norm.is_finite() {
            let what = if mean.is_finite() {
                format!("gradient norm is {grad_norm}")
            } else {
                format!("loss is {mean}")
            };
            let keep = match &last_checkpoint {
                Some(d) => format!("the last good checkpoint is {}", d.display()),
                None => "no checkpoint was written before it".into(),
            };
            return Err(Error::InvalidArgument(format!(
                "step {step}: {what}; training stopped before updating the adapter ({keep}). \
                 Try a lower --lr or --max-grad-norm"
            )));
        }
        let lr = schedule.lr(optimizer.steps_done());
        {
            let (mut values, grads) = adapter.as_adapter_mut().params_mut().values_and_grads();
            optimizer.step(&mut values, &grads, lr)?;
        }
        state.step = step;
        let step_s = step_start.elapsed().as_secs_f64();
        let eval_loss =
            if !val.is_empty() && (step.is_multiple_of(eval_every) || step == opts.total_steps) {
                Some(evaluate(objective, adapter, val)?)
            } else {
                None
            };
        state.elapsed_s = elapsed_before + started.elapsed().as_secs_f64();
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
            elapsed_s: state.elapsed_s,
            rss_anon_bytes: rss_anon_bytes().unwrap_or(0),
            eval_loss,
        };
        log.append(&m)?;
        on_step(&m);
        last = Some(m);
        let stop = opts.stop.as_ref().is_some_and(|s| s.load(Ordering::SeqCst));
        let due = opts.checkpoint_every > 0 && step.is_multiple_of(opts.checkpoint_every);
        if due || (stop && step < opts.total_steps) {
            state.data = data.state();
            last_checkpoint = Some(save_checkpoint(
                &opts.out_dir,
                adapter.as_adapter(),
                &mut optimizer,
                &state,
            )?);
        }
        if stop && step < opts.total_steps {
            interrupted = true;
            break;
        }
    }
    if !interrupted {
        save_peft_dir(adapter.as_adapter(), &opts.out_dir)?;
    }
    Ok(Outcome {
        steps: state.step,
        interrupted,
        last_checkpoint,
        last,
    })
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
