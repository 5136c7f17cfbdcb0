//! A training session: a model, an adapter, prepared data and a `Trainer`, set up from plain
//! settings (`SessionConfig`). The CLI's `train` and the C ABI both drive one: step by step
//! (`step`), or to the end (`run`), with checkpoints and the final adapter written as PEFT files.
//!
//! Before the trainer exists the session plans memory (`plan::plan`, docs/memory.md) and applies
//! the plan's decisions: activation checkpointing, the logits chunk and the paged optimizer
//! state's RAM share. A budget that cannot hold the run is refused here, before step 0 and before
//! any file is written. `Session::dry_run` stops after the plan.

use super::data::{micro_batch, BatcherSource};
use super::model::{model_dims, new_adapter, AdapterSpec, LlamaObjective};
use super::plan::{plan, Baseline, Checkpointing, Plan, PlanInput};
use super::{MicroBatch, Outcome, StepMetrics, TrainOptions, Trainer};
use crate::adapters::{load_peft_dir, save_peft_dir, AnyAdapter};
use crate::data::{
    self, BatchOptions, Batcher, ChatFormat, DataOptions, DataStats, Prepared, Sequence,
};
use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::model::{ActivationMode, Llama};
use crate::optim::StateMode;
use crate::tokenizer::Tokenizer;
use std::path::{Path, PathBuf};

/// Prepares a session's data, given the model's tokenizer, chat format and the data options.
pub type PrepareData<'a> =
    dyn FnMut(&Tokenizer, Option<&ChatFormat>, &DataOptions) -> Result<Prepared> + 'a;

/// Where the adapter of a session comes from.
#[derive(Clone, Debug, PartialEq)]
pub enum AdapterInit {
    /// A fresh adapter with PEFT's init.
    New(AdapterSpec),
    /// A PEFT adapter directory (`--init-adapter`); its config fixes method, rank and targets.
    Dir(PathBuf),
}

/// Everything a session needs besides the model and the data file (the `train` flags).
#[derive(Clone, Debug)]
pub struct SessionConfig {
    pub adapter: AdapterInit,
    /// LoRA dropout overriding the adapter's (`--dropout`); an error for other methods.
    pub dropout: Option<f32>,
    /// Optimizer steps (`--steps`); `None` runs `epochs` passes.
    pub steps: Option<u64>,
    /// Passes over the data when `steps` is `None` [1].
    pub epochs: u64,
    pub batch_size: usize,
    pub seq_len: usize,
    pub pack: bool,
    pub train_on_prompt: bool,
    pub shuffle: bool,
    pub val_split: f64,
    /// `--checkpointing`: recompute blocks in backward (`On`), keep all activations (`Off`), or
    /// let the memory planner decide (`Auto`: off unless the budget needs it).
    pub checkpointing: Checkpointing,
    /// `--memory-budget` in bytes of anonymous memory; `None` plans without a limit.
    pub memory_budget: Option<u64>,
    /// Continue from this checkpoint directory (its adapter replaces `adapter`).
    pub resume: Option<PathBuf>,
    /// Optimizer, schedule, checkpoints, output directory, seed; `total_steps` is computed from
    /// `steps`/`epochs` by the session.
    pub train: TrainOptions,
}

impl SessionConfig {
    /// Defaults of the CLI (LoRA r8 on q,v, one epoch, batch 1, 512 tokens, shuffled).
    pub fn new(out_dir: impl Into<PathBuf>) -> SessionConfig {
        SessionConfig {
            adapter: AdapterInit::New(AdapterSpec::default()),
            dropout: None,
            steps: None,
            epochs: 1,
            batch_size: 1,
            seq_len: 512,
            pack: false,
            train_on_prompt: false,
            shuffle: true,
            val_split: 0.0,
            checkpointing: Checkpointing::Auto,
            memory_budget: None,
            resume: None,
            train: TrainOptions::new(1, out_dir),
        }
    }
}

impl SessionConfig {
    /// How the session's data become sequences.
    pub fn data_options(&self) -> DataOptions {
        DataOptions {
            seq_len: self.seq_len,
            pack: self.pack,
            train_on_prompt: self.train_on_prompt,
            shuffle: self.shuffle,
            seed: self.train.seed,
            val_split: self.val_split,
        }
    }
}

/// What a session prepared, for the log.
#[derive(Clone, Debug, PartialEq)]
pub struct SessionSummary {
    pub method: &'static str,
    pub n_params: usize,
    pub total_steps: u64,
    pub data: DataStats,
}

/// A model, its adapter, the data and the trainer of one run.
pub struct Session<'w> {
    model: Llama<'w>,
    adapter: AnyAdapter,
    data: BatcherSource,
    val: Vec<MicroBatch>,
    trainer: Trainer,
    activations: ActivationMode,
    plan: Plan,
    summary: SessionSummary,
}

/// Everything before the trainer: adapter, data, validation batches and the memory plan.
struct Setup<'w> {
    model: Llama<'w>,
    adapter: AnyAdapter,
    batcher: Batcher,
    val: Vec<MicroBatch>,
    stats: DataStats,
    plan: Plan,
    train: TrainOptions,
    cfg: SessionConfig,
}

/// Bytes the prepared sequences hold (ids, labels, document lengths, vector headers).
fn sequence_bytes(seqs: &[Sequence]) -> u64 {
    seqs.iter()
        .map(|s| {
            4 * (s.input_ids.capacity() + s.labels.capacity()) as u64
                + 8 * s.doc_lengths.capacity() as u64
                + 3 * 24
        })
        .sum()
}

fn setup<'w>(
    file: &'w GgufFile,
    mut model: Llama<'w>,
    cfg: SessionConfig,
    prepare: &mut PrepareData,
) -> Result<Setup<'w>> {
    let dims = model_dims(&model.config);
    let tok = Tokenizer::from_gguf(file.header())?;
    let chat = ChatFormat::from_gguf(file.header())?;
    // The runtime's own memory: the model and the tokenizer are open, nothing of the run yet.
    let baseline = Baseline::measure().unwrap_or(Baseline {
        bytes: 0,
        measured: false,
    });
    // A checkpoint's adapter (resume) wins over the configured one.
    let mut adapter = match (&cfg.resume, &cfg.adapter) {
        (Some(dir), _) | (None, AdapterInit::Dir(dir)) => load_peft_dir(dir, &dims)?,
        (None, AdapterInit::New(spec)) => new_adapter(&dims, spec, cfg.train.seed)?,
    };
    match &mut adapter {
        AnyAdapter::Lora(l) => {
            if let Some(p) = cfg.dropout {
                l.set_dropout(p)?;
            }
            l.set_dropout_seed(cfg.train.seed);
        }
        a if cfg.dropout.is_some() => {
            return Err(Error::InvalidArgument(format!(
                "--dropout applies to LoRA, not {}",
                a.as_adapter().method().cli_name()
            )))
        }
        _ => {}
    }
    let n_virtual = match &adapter {
        AnyAdapter::Prefix(p) => p.num_virtual_tokens(),
        AnyAdapter::Prompt(p) => p.num_virtual_tokens(),
        _ => 0,
    };
    if cfg.seq_len + n_virtual > model.config.n_ctx_train {
        return Err(Error::InvalidArgument(format!(
            "--seq-len {} (+{n_virtual} virtual tokens) exceeds the model's context of {} tokens",
            cfg.seq_len, model.config.n_ctx_train
        )));
    }

    let prepared = prepare(&tok, chat.as_ref(), &cfg.data_options())?;
    let pad = data::pad_id(&tok);
    drop(tok);
    let val: Vec<MicroBatch> = data::eval_batches(&prepared.val, cfg.batch_size, pad)
        .map(|b| micro_batch(&b))
        .collect::<Result<_>>()?;
    let data_bytes = sequence_bytes(&prepared.train)
        + sequence_bytes(&prepared.val)
        + val
            .iter()
            .map(|b| 8 * b.input_ids.capacity() as u64)
            .sum::<u64>()
        + 8 * prepared.train.len() as u64;
    // The longest sequence the data holds bounds the activations (batches are padded to their
    // longest row, never beyond --seq-len).
    let seq_len = prepared
        .train
        .iter()
        .chain(&prepared.val)
        .map(|s| s.input_ids.len())
        .max()
        .unwrap_or(cfg.seq_len)
        .min(cfg.seq_len);
    let mapped_bytes = file.header().tensors.iter().map(|t| t.bytes).sum();
    let plan = plan(
        &PlanInput {
            config: &model.config,
            mapped_bytes,
            adapter: &adapter,
            seq_len: seq_len.max(1),
            batch_size: cfg.batch_size.max(1),
            threads: model.backend().threads(),
            state_mode: cfg.train.state_mode,
            checkpointing: cfg.checkpointing,
            budget: cfg.memory_budget,
            baseline,
            data_bytes,
        },
        cfg.train.state_ram_bytes as u64,
    )?;
    model.set_lm_chunk_rows(plan.lm_chunk_rows)?;
    let mut train = cfg.train.clone();
    if train.state_mode != StateMode::Ram {
        train.state_ram_bytes = plan.state_ram_bytes as usize;
    }
    let batcher = Batcher::new(
        prepared.train,
        BatchOptions {
            batch_size: cfg.batch_size,
            shuffle: cfg.shuffle,
            seed: cfg.train.seed,
            pad_id: pad,
        },
    )?;
    train.total_steps = match cfg.steps {
        Some(s) => s,
        None => cfg.epochs * batcher.steps_per_epoch(train.grad_accum) as u64,
    };
    Ok(Setup {
        model,
        adapter,
        batcher,
        val,
        stats: prepared.stats,
        plan,
        train,
        cfg,
    })
}

impl<'w> Session<'w> {
    /// Reads the tokenizer and chat template from `file`, builds or loads the adapter, prepares
    /// `data_path` (JSONL or .txt), plans memory (refusing a budget the run cannot fit) and sets
    /// up the trainer (resuming when `cfg.resume` is set).
    pub fn new(
        file: &'w GgufFile,
        model: Llama<'w>,
        data_path: &Path,
        cfg: SessionConfig,
    ) -> Result<Session<'w>> {
        Self::with_data(file, model, cfg, &mut |tok, chat, opts| {
            data::load(data_path, tok, chat, opts)
        })
    }

    /// `new` with the data prepared by `prepare` (given the model's tokenizer, chat format and
    /// `cfg.data_options()`), e.g. from records tokenized earlier (the C ABI).
    pub fn with_data(
        file: &'w GgufFile,
        model: Llama<'w>,
        cfg: SessionConfig,
        prepare: &mut PrepareData,
    ) -> Result<Session<'w>> {
        let s = setup(file, model, cfg, prepare)?;
        let mut data = BatcherSource(s.batcher);
        let trainer = Trainer::new(&s.adapter, &mut data, s.train, s.cfg.resume.as_deref())?;
        let summary = SessionSummary {
            method: s.adapter.as_adapter().method().cli_name(),
            n_params: s.adapter.as_adapter().params().n_values(),
            total_steps: trainer.options().total_steps,
            data: s.stats,
        };
        Ok(Session {
            model: s.model,
            adapter: s.adapter,
            data,
            val: s.val,
            trainer,
            activations: s.plan.activations,
            plan: s.plan,
            summary,
        })
    }

    /// Everything `new` does up to the memory plan, which it returns (or the refusal); writes
    /// nothing (`train --dry-run`).
    pub fn dry_run(
        file: &'w GgufFile,
        model: Llama<'w>,
        data_path: &Path,
        cfg: SessionConfig,
    ) -> Result<Plan> {
        let mut prepare = |tok: &Tokenizer, chat: Option<&ChatFormat>, opts: &DataOptions| {
            data::load(data_path, tok, chat, opts)
        };
        Ok(setup(file, model, cfg, &mut prepare)?.plan)
    }

    /// The memory plan the session follows.
    pub fn plan(&self) -> &Plan {
        &self.plan
    }

    /// A warning line when a step's measured anonymous memory exceeded the budget.
    pub fn memory_warning(&self, m: &StepMetrics) -> Option<String> {
        self.plan.over_budget(m.step, m.rss_anon_bytes)
    }

    pub fn summary(&self) -> &SessionSummary {
        &self.summary
    }

    pub fn model(&self) -> &Llama<'w> {
        &self.model
    }

    pub fn adapter(&self) -> &AnyAdapter {
        &self.adapter
    }

    pub fn trainer(&self) -> &Trainer {
        &self.trainer
    }

    pub fn is_done(&self) -> bool {
        self.trainer.is_done()
    }

    /// One optimizer step (see `Trainer::step`).
    pub fn step(&mut self) -> Result<StepMetrics> {
        let mut objective = LlamaObjective {
            model: &self.model,
            mode: self.activations,
        };
        self.trainer
            .step(&mut objective, &mut self.data, &mut self.adapter, &self.val)
    }

    /// Writes a checkpoint of the current step and returns its directory.
    pub fn checkpoint(&mut self) -> Result<PathBuf> {
        self.model.release_buffers();
        self.trainer.checkpoint(&self.data, &self.adapter)
    }

    /// Writes the adapter as a PEFT directory.
    pub fn save_adapter(&self, dir: &Path) -> Result<()> {
        self.model.release_buffers();
        save_peft_dir(self.adapter.as_adapter(), dir)
    }

    /// Steps to the end, or until the options' stop flag is set (see `Trainer::run`).
    pub fn run(&mut self, on_step: &mut dyn FnMut(&StepMetrics)) -> Result<Outcome> {
        let mut objective = LlamaObjective {
            model: &self.model,
            mode: self.activations,
        };
        self.trainer.run(
            &mut objective,
            &mut self.data,
            &mut self.adapter,
            &self.val,
            on_step,
        )
    }
}
