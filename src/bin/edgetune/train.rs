//! `edgetune train`: fine-tune an adapter on a JSONL or .txt file (DESIGN.md, "Command line").

use edgetune::adapters::{parse_targets, Method};
use edgetune::backend::cpu::CpuBackend;
use edgetune::gguf::GgufFile;
use edgetune::model::Llama;
use edgetune::optim::{ScheduleKind, StateMode};
use edgetune::train::model::AdapterSpec;
use edgetune::train::plan::{parse_size, Checkpointing};
use edgetune::train::session::{AdapterInit, Session, SessionConfig};
use edgetune::train::{StepMetrics, TrainOptions};
use edgetune::{Error, Result};
use indicatif::{ProgressBar, ProgressStyle};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

#[derive(clap::Args)]
#[command(
    after_help = "Data: JSONL lines {\"text\"}, {\"prompt\",\"completion\"}, {\"messages\":[...]} \
(the model's chat template; loss on assistant turns) or {\"input_ids\",\"labels\"?}; a .txt file is cut \
into --seq-len windows.\nWrites OUT/adapter_config.json + adapter_model.safetensors (a PEFT adapter), \
OUT/metrics.jsonl (one line per step) and OUT/checkpoints/step-N/. Ctrl-C stops after the current step \
with a checkpoint; --resume OUT/checkpoints/step-N continues exactly."
)]
pub struct Args {
    /// Base model (GGUF); it is memory-mapped and never modified.
    model: PathBuf,
    /// Training data (.jsonl or .txt).
    #[arg(long)]
    data: PathBuf,
    /// Output directory.
    #[arg(short = 'o', long = "out")]
    out: PathBuf,
    /// Adapter method: lora, ia3, prefix or prompt [default: lora].
    #[arg(long)]
    method: Option<String>,
    /// LoRA rank [default: 8].
    #[arg(long)]
    rank: Option<usize>,
    /// LoRA alpha (scale alpha/rank) [default: 16].
    #[arg(long)]
    alpha: Option<f32>,
    /// Layers to adapt: all-linear or a list of GGUF (attn_q,...,ffn_down) or HF (q_proj,...) names
    /// [default: LoRA q_proj,v_proj; IA3 k_proj,v_proj,down_proj, as PEFT for Llama].
    #[arg(long)]
    targets: Option<String>,
    /// LoRA dropout on the adapter input, training only [default: 0].
    #[arg(long)]
    dropout: Option<f32>,
    /// rsLoRA scaling alpha/sqrt(rank).
    #[arg(long)]
    rslora: bool,
    /// Virtual tokens of prefix / prompt tuning [default: 20].
    #[arg(long)]
    num_virtual_tokens: Option<usize>,
    /// Start from this PEFT adapter directory (method, rank, alpha and targets come from it).
    #[arg(long)]
    init_adapter: Option<PathBuf>,
    /// Optimizer steps (passes over the data as often as needed).
    #[arg(long, conflicts_with = "epochs")]
    steps: Option<u64>,
    /// Passes over the data [default: 1].
    #[arg(long)]
    epochs: Option<u64>,
    /// Sequences per micro-batch.
    #[arg(long, default_value_t = 1)]
    batch_size: usize,
    /// Micro-batches per optimizer step.
    #[arg(long, default_value_t = 1)]
    grad_accum: usize,
    /// Longest sequence in tokens (longer records are cut).
    #[arg(long, default_value_t = 512)]
    seq_len: usize,
    /// Peak learning rate.
    #[arg(long, default_value_t = 2e-4)]
    lr: f64,
    /// AdamW decoupled weight decay.
    #[arg(long, default_value_t = 0.0)]
    weight_decay: f64,
    /// constant, linear or cosine (after warmup).
    #[arg(long, default_value = "linear")]
    lr_schedule: String,
    /// Steps of linear warmup from 0.
    #[arg(long, default_value_t = 0)]
    warmup_steps: u64,
    /// Clip gradients to this global norm (0 disables).
    #[arg(long, default_value_t = 1.0)]
    max_grad_norm: f64,
    /// Keep file order (no shuffling).
    #[arg(long)]
    no_shuffle: bool,
    /// Seed of shuffling, the validation split, adapter init and dropout.
    #[arg(long, default_value_t = 42)]
    seed: u64,
    /// Fraction of examples held out for evaluation.
    #[arg(long, default_value_t = 0.0)]
    val_split: f64,
    /// Evaluate every N steps (0: after the last step only).
    #[arg(long, default_value_t = 0)]
    eval_every: u64,
    /// Write a checkpoint every N steps (0: only on Ctrl-C).
    #[arg(long, default_value_t = 0)]
    checkpoint_every: u64,
    /// Continue from a checkpoint directory (OUT/checkpoints/step-N) with the same settings.
    #[arg(long)]
    resume: Option<PathBuf>,
    /// Worker threads [default: all cores].
    #[arg(long)]
    threads: Option<usize>,
    /// Precision of the matrix-product inputs: f32, or bf16 (f32 accumulation).
    #[arg(long, default_value = "f32", value_name = "f32|bf16")]
    compute: edgetune::backend::Compute,
    /// Also train on prompt / non-assistant tokens.
    #[arg(long)]
    train_on_prompt: bool,
    /// Pack several records into each --seq-len row (best-fit decreasing, as TRL); documents keep
    /// their own positions and never attend to each other, so fewer padding tokens are computed.
    #[arg(long)]
    pack: bool,
    /// Anonymous RAM the run may use (512M, 1.5G, 768MiB); the plan must fit or training is
    /// refused before step 0. The memory-mapped model is not counted (docs/memory.md).
    #[arg(long, value_name = "SIZE")]
    memory_budget: Option<String>,
    /// Activation checkpointing: auto (on only if the budget needs it), on or off.
    #[arg(long, default_value = "auto")]
    checkpointing: String,
    /// Optimizer state: ram, paged (spills to --state-file beyond its RAM share) or paged-8bit.
    #[arg(long, default_value = "ram")]
    optimizer_state: String,
    /// File for paged optimizer state, preallocated [default: OUT/optimizer.state].
    #[arg(long, value_name = "PATH")]
    state_file: Option<PathBuf>,
    /// Print the memory plan and exit without training or writing anything.
    #[arg(long)]
    dry_run: bool,
}

pub fn run(args: Args) -> Result<()> {
    let shape_flags = [
        ("--method", args.method.is_some()),
        ("--rank", args.rank.is_some()),
        ("--alpha", args.alpha.is_some()),
        ("--targets", args.targets.is_some()),
        ("--rslora", args.rslora),
        ("--num-virtual-tokens", args.num_virtual_tokens.is_some()),
    ];
    let from_dir = args.resume.as_ref().or(args.init_adapter.as_ref());
    if let Some(dir) = from_dir {
        let given: Vec<&str> = shape_flags.iter().filter(|f| f.1).map(|f| f.0).collect();
        if !given.is_empty() {
            return Err(Error::InvalidArgument(format!(
                "{} cannot be combined with --init-adapter/--resume: the adapter's shape comes from {}",
                given.join(", "),
                dir.join("adapter_config.json").display()
            )));
        }
    }
    let threads = match args.threads {
        Some(0) => return Err(Error::InvalidArgument("--threads 0".into())),
        Some(t) => t,
        None => std::thread::available_parallelism().map_or(1, |n| n.get()),
    };
    let schedule: ScheduleKind = args.lr_schedule.parse()?;
    let adapter = match &args.init_adapter {
        Some(dir) => AdapterInit::Dir(dir.clone()),
        None => {
            let method = Method::from_cli_name(args.method.as_deref().unwrap_or("lora"))?;
            if method != Method::Lora
                && (args.rank.is_some() || args.alpha.is_some() || args.rslora)
            {
                return Err(Error::InvalidArgument(format!(
                    "--rank/--alpha/--rslora apply to LoRA, not --method {}",
                    method.cli_name()
                )));
            }
            let d = AdapterSpec::default();
            AdapterInit::New(AdapterSpec {
                method,
                targets: args.targets.as_deref().map(parse_targets).transpose()?,
                rank: args.rank.unwrap_or(d.rank),
                alpha: args.alpha.unwrap_or(d.alpha),
                dropout: args.dropout.unwrap_or(d.dropout),
                rslora: args.rslora,
                num_virtual_tokens: args.num_virtual_tokens.unwrap_or(d.num_virtual_tokens),
            })
        }
    };

    let stop = Arc::new(AtomicBool::new(false));
    let mut train_opts = TrainOptions::new(1, args.out.clone());
    train_opts.grad_accum = args.grad_accum;
    train_opts.lr = args.lr;
    train_opts.weight_decay = args.weight_decay;
    train_opts.schedule = schedule;
    train_opts.warmup_steps = args.warmup_steps;
    train_opts.max_grad_norm = args.max_grad_norm;
    train_opts.eval_every = args.eval_every;
    train_opts.checkpoint_every = args.checkpoint_every;
    train_opts.seed = args.seed;
    train_opts.stop = Some(stop.clone());
    train_opts.state_mode = args.optimizer_state.parse::<StateMode>()?;
    train_opts.state_file = args.state_file.clone();
    let memory_budget = args.memory_budget.as_deref().map(parse_size).transpose()?;
    let cfg = SessionConfig {
        adapter,
        dropout: args.dropout,
        steps: args.steps,
        epochs: args.epochs.unwrap_or(1),
        batch_size: args.batch_size,
        seq_len: args.seq_len,
        pack: args.pack,
        train_on_prompt: args.train_on_prompt,
        shuffle: !args.no_shuffle,
        val_split: args.val_split,
        checkpointing: args.checkpointing.parse::<Checkpointing>()?,
        memory_budget,
        resume: args.resume.clone(),
        train: train_opts,
    };

    let file = GgufFile::open(&args.model)?;
    let backend = Arc::new(CpuBackend::new(threads)?.with_compute(args.compute));
    let model = Llama::new(&file, backend).map_err(|e| e.in_file(&args.model))?;
    if args.dry_run {
        println!("{}", Session::dry_run(&file, model, &args.data, cfg)?);
        return Ok(());
    }
    let mut session = Session::new(&file, model, &args.data, cfg)?;
    eprintln!("{}", session.plan());
    let summary = session.summary().clone();
    for w in summary.data.warnings(args.seq_len) {
        eprintln!("warning: {w}");
    }
    let total_steps = summary.total_steps;
    eprintln!(
        "training {} adapter ({} parameters) on {} sequences ({} tokens, {} validation): {total_steps} steps, {threads} threads",
        summary.method,
        summary.n_params,
        summary.data.train_sequences,
        summary.data.train_tokens,
        summary.data.val_sequences,
    );
    {
        let stop = stop.clone();
        ctrlc::set_handler(move || {
            if stop.swap(true, Ordering::SeqCst) {
                std::process::exit(130);
            }
            eprintln!("\nstopping after this step (Ctrl-C again to quit at once)");
        })
        .map_err(|e| Error::InvalidArgument(format!("installing the Ctrl-C handler: {e}")))?;
    }
    let mut progress = StepProgress::new(total_steps);
    let plan = session.plan().clone();
    let outcome = session.run(&mut |m| {
        progress.step(m);
        if let Some(w) = plan.over_budget(m.step, m.rss_anon_bytes) {
            progress.println(&w);
        }
    });
    progress.finish();
    let outcome = outcome?;
    if outcome.interrupted {
        let ckpt = outcome.last_checkpoint.unwrap_or_default();
        eprintln!(
            "stopped at step {}; resume with --resume {}",
            outcome.steps,
            ckpt.display()
        );
    } else {
        let last = outcome.last.map_or(String::new(), |m| {
            format!(", last loss {:.4}", m.eval_loss.unwrap_or(m.loss))
        });
        eprintln!(
            "done: {} steps{last}; adapter written to {}",
            outcome.steps,
            args.out.display()
        );
    }
    Ok(())
}

/// A bar on a terminal (loss, tokens/s, ETA, memory), one plain line per step otherwise.
struct StepProgress {
    bar: Option<ProgressBar>,
    total: u64,
    started: Instant,
    first_step: Option<u64>,
}

impl StepProgress {
    fn new(total: u64) -> StepProgress {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(total);
            if let Ok(style) =
                ProgressStyle::with_template("{prefix} [{bar:30}] {pos}/{len} ETA {eta} {msg}")
            {
                bar.set_style(style.progress_chars("=> "));
            }
            bar.set_prefix("train");
            bar
        });
        StepProgress {
            bar,
            total,
            started: Instant::now(),
            first_step: None,
        }
    }

    fn step(&mut self, m: &StepMetrics) {
        let first = *self.first_step.get_or_insert(m.step - 1);
        let done = m.step - first;
        let eta = self.started.elapsed().as_secs_f64() / done as f64 * (self.total - m.step) as f64;
        let eval = m
            .eval_loss
            .map_or(String::new(), |e| format!(" eval {e:.4}"));
        let msg = format!(
            "loss {:.4}{eval} | {:.0} tok/s | {} MiB",
            m.loss,
            m.tokens_per_sec,
            m.rss_anon_bytes >> 20
        );
        match &self.bar {
            Some(bar) => {
                bar.set_position(m.step);
                bar.set_message(msg);
            }
            None => eprintln!(
                "step {}/{} {msg} | lr {:.3e} | grad norm {:.3} | ETA {:.0}s",
                m.step, self.total, m.lr, m.grad_norm, eta
            ),
        }
    }

    /// A line above the bar (or on its own without one).
    fn println(&self, line: &str) {
        match &self.bar {
            Some(bar) => bar.println(line),
            None => eprintln!("{line}"),
        }
    }

    fn finish(self) {
        if let Some(bar) = self.bar {
            bar.finish_and_clear();
        }
    }
}
