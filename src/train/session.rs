//! A training session: a model, an adapter, prepared data and a `Trainer`, set up from plain
//! settings (`SessionConfig`). The CLI's `train` and the C ABI both drive one: step by step
//! (`step`), or to the end (`run`), with checkpoints and the final adapter written as PEFT files.

use super::data::{micro_batch, BatcherSource};
use super::model::{model_dims, new_adapter, AdapterSpec, LlamaObjective};
use super::{Outcome, StepMetrics, TrainOptions, Trainer};
use crate::adapters::{load_peft_dir, save_peft_dir, AnyAdapter};
use crate::data::{self, BatchOptions, Batcher, ChatFormat, DataOptions, DataStats, Prepared};
use crate::error::{Error, Result};
use crate::gguf::GgufFile;
use crate::model::{ActivationMode, Llama};
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
    /// What the forward pass keeps for backward (`--checkpointing`).
    pub activations: ActivationMode,
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
            activations: ActivationMode::Full,
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
    val: Vec<super::MicroBatch>,
    trainer: Trainer,
    activations: ActivationMode,
    summary: SessionSummary,
}

impl<'w> Session<'w> {
    /// Reads the tokenizer and chat template from `file`, builds or loads the adapter, prepares
    /// `data_path` (JSONL or .txt) and sets up the trainer (resuming when `cfg.resume` is set).
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
        let dims = model_dims(&model.config);
        let tok = Tokenizer::from_gguf(file.header())?;
        let chat = ChatFormat::from_gguf(file.header())?;
        let from_dir = match (&cfg.resume, &cfg.adapter) {
            (Some(dir), _) | (None, AdapterInit::Dir(dir)) => Some(dir),
            _ => None,
        };
        let mut adapter = match (from_dir, &cfg.adapter) {
            (Some(dir), _) => load_peft_dir(dir, &dims)?,
            (None, AdapterInit::New(spec)) => new_adapter(&dims, spec, cfg.train.seed)?,
            (None, AdapterInit::Dir(_)) => unreachable!("handled by from_dir"),
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
        if cfg.activations == ActivationMode::Inference {
            return Err(Error::InvalidArgument(
                "training needs activations for backward (Full or Checkpoint), not Inference"
                    .into(),
            ));
        }

        let prepared = prepare(&tok, chat.as_ref(), &cfg.data_options())?;
        let pad = data::pad_id(&tok);
        let val = data::eval_batches(&prepared.val, cfg.batch_size, pad)
            .map(|b| micro_batch(&b))
            .collect::<Result<_>>()?;
        let batcher = Batcher::new(
            prepared.train,
            BatchOptions {
                batch_size: cfg.batch_size,
                shuffle: cfg.shuffle,
                seed: cfg.train.seed,
                pad_id: pad,
            },
        )?;
        let mut train = cfg.train;
        train.total_steps = match cfg.steps {
            Some(s) => s,
            None => cfg.epochs * batcher.steps_per_epoch(train.grad_accum) as u64,
        };
        let mut data = BatcherSource(batcher);
        let trainer = Trainer::new(&adapter, &mut data, train, cfg.resume.as_deref())?;
        let summary = SessionSummary {
            method: adapter.as_adapter().method().cli_name(),
            n_params: adapter.as_adapter().params().n_values(),
            total_steps: trainer.options().total_steps,
            data: prepared.stats,
        };
        Ok(Session {
            model,
            adapter,
            data,
            val,
            trainer,
            activations: cfg.activations,
            summary,
        })
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
        self.trainer.checkpoint(&self.data, &self.adapter)
    }

    /// Writes the adapter as a PEFT directory.
    pub fn save_adapter(&self, dir: &Path) -> Result<()> {
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
