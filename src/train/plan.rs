//! The memory planner (DESIGN.md decision 4, docs/memory.md): before step 0 it sums what a
//! training step keeps in anonymous memory, consumer by consumer, and chooses activation
//! checkpointing, the logits chunk and the optimizer state's RAM share so the sum fits a budget,
//! or refuses with the largest consumers and the smallest budget that would work.
//!
//! The budget bounds anonymous memory (`RssAnon`): the heap, thread stacks, buffers. The model's
//! weights are a read-only file mapping (`RssFile`): the kernel may drop and re-read those pages,
//! so they are reported beside the plan, not in it.
//!
//! The runtime's own baseline (allocator, threads, the GGUF header and metadata, the model's norm
//! vectors, the tokenizer) is measured in the process itself (`RssAnon` once the model and the
//! tokenizer are open), not estimated; every other consumer is computed from the shapes the code
//! allocates, with the same sizes tables (`Activations::bytes_for`, the optimizer's
//! `StateLayout`, the CPU backend's `scratch_bytes`). The sum is an upper bound of the peak: it
//! adds buffers of the forward, the loss and the backward that are not all live at once.

use crate::adapters::{Adapter, AnyAdapter};
use crate::backend::cpu::CpuBackend;
use crate::error::{Error, Result};
use crate::model::acts::LayerLayout;
use crate::model::llama::DEFAULT_LM_CHUNK_ROWS;
use crate::model::ops::cross_entropy::VOCAB_TILE;
use crate::model::{ActivationMode, Config};
use crate::optim::{AdamWConfig, Optimizer, ParamSet, StateMode, DEFAULT_PAGE_BYTES};
use std::fmt;

/// `--checkpointing`: recompute each block in backward (`On`), keep everything (`Off`), or let
/// the planner choose (`Auto`: off when it fits the budget).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Checkpointing {
    #[default]
    Auto,
    On,
    Off,
}

impl std::str::FromStr for Checkpointing {
    type Err = Error;

    fn from_str(s: &str) -> Result<Checkpointing> {
        match s {
            "auto" => Ok(Checkpointing::Auto),
            "on" => Ok(Checkpointing::On),
            "off" => Ok(Checkpointing::Off),
            _ => Err(Error::InvalidArgument(format!(
                "--checkpointing {s:?}: expected auto, on or off"
            ))),
        }
    }
}

/// Smallest logits chunk the planner chooses: each chunk decodes the output weight once, and
/// below about half a GEMM tile the products fall back to matrix-vector work.
pub const MIN_LM_CHUNK_ROWS: usize = 8;

/// What the allocator keeps resident of freed temporaries (see `plan`; measured): 6 MiB.
pub const ALLOCATOR_SLACK: u64 = 6 << 20;

/// Pages the paged optimizer state keeps at least (its read-ahead).
const MIN_STATE_PAGES: usize = 4;

/// Query rows per attention task (`model::ops::attention_gemm`).
const ATTN_QB: usize = 64;

/// Parses a size: `512M`, `1.5G`, `768MiB`, `64k`, `1000000` (bytes). `K`, `M`, `G`, `T` and
/// their `iB` forms are powers of 1024 (a budget is RAM, as `free -m` counts it).
pub fn parse_size(s: &str) -> Result<u64> {
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let shift = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        _ => u32::MAX,
    };
    let value: Option<f64> = num.parse().ok();
    match value {
        Some(v) if shift != u32::MAX && v.is_finite() && v >= 0.0 => {
            Ok((v * (1u64 << shift) as f64).round() as u64)
        }
        _ => Err(Error::InvalidArgument(format!(
            "size {s:?}: expected a number with an optional unit, e.g. 512M, 1.5G, 768MiB"
        ))),
    }
}

/// Bytes as `12.3 MiB`.
pub fn human(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["B", "KiB", "MiB", "GiB", "TiB"];
    let mut v = bytes as f64;
    let mut u = 0;
    while v >= 1024.0 && u + 1 < UNITS.len() {
        v /= 1024.0;
        u += 1;
    }
    if u == 0 {
        format!("{bytes} B")
    } else {
        format!("{v:.1} {}", UNITS[u])
    }
}

/// The runtime's own memory before training allocates anything.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Baseline {
    pub bytes: u64,
    /// `RssAnon` read from the process (else an estimate, where /proc is missing).
    pub measured: bool,
}

impl Baseline {
    /// `RssAnon` of this process now: call it once the model and the tokenizer are open.
    pub fn measure() -> Option<Baseline> {
        super::rss_anon_bytes().map(|bytes| Baseline {
            bytes,
            measured: true,
        })
    }
}

/// What the planner needs to know about a run.
pub struct PlanInput<'a> {
    pub config: &'a Config,
    /// Bytes of the memory-mapped model file (file-backed, outside the budget).
    pub mapped_bytes: u64,
    /// The adapter to train (its parameters, what it saves per token).
    pub adapter: &'a AnyAdapter,
    /// Tokens per sequence (`--seq-len`) and sequences per micro-batch.
    pub seq_len: usize,
    pub batch_size: usize,
    pub threads: usize,
    pub state_mode: StateMode,
    pub checkpointing: Checkpointing,
    /// Anonymous bytes the run may use; `None` plans without a limit.
    pub budget: Option<u64>,
    pub baseline: Baseline,
    /// The prepared training and validation sequences (ids, labels, batches).
    pub data_bytes: u64,
}

/// When a consumer holds its memory. Buffers of different phases of a step are never live at
/// once, so the plan's total is `Always + max(Step + max(Loss, Backward), Save)`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Phase {
    /// From before step 0 to the end (kept buffers included).
    Always,
    /// Through a micro-batch's forward and backward (activations).
    Step,
    /// While the loss and its gradient are computed, a logits chunk at a time.
    Loss,
    /// While backward runs through the blocks.
    Backward,
    /// While a checkpoint or the adapter is written (no activations then).
    Save,
}

impl Phase {
    pub fn name(self) -> &'static str {
        match self {
            Phase::Always => "always",
            Phase::Step => "step",
            Phase::Loss => "loss",
            Phase::Backward => "backward",
            Phase::Save => "save",
        }
    }
}

/// One line of the plan.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Consumer {
    pub name: &'static str,
    pub bytes: u64,
    pub phase: Phase,
    /// How the figure was obtained (shapes, measured).
    pub detail: String,
}

/// `Always + max(Step + max(Loss, Backward), Save)`: the most that is live at once.
pub fn peak_of(consumers: &[Consumer]) -> u64 {
    let sum = |ph: Phase| -> u64 {
        consumers
            .iter()
            .filter(|c| c.phase == ph)
            .map(|c| c.bytes)
            .sum()
    };
    sum(Phase::Always)
        + (sum(Phase::Step) + sum(Phase::Loss).max(sum(Phase::Backward))).max(sum(Phase::Save))
}

/// The plan: consumers, their sum and the decisions that make it fit.
#[derive(Clone, Debug, PartialEq)]
pub struct Plan {
    pub consumers: Vec<Consumer>,
    pub total: u64,
    pub budget: Option<u64>,
    pub activations: ActivationMode,
    pub lm_chunk_rows: usize,
    pub state_mode: StateMode,
    /// Optimizer state size, and how much of it stays in RAM (all of it for `StateMode::Ram`).
    pub state_bytes: u64,
    pub state_ram_bytes: u64,
    pub mapped_bytes: u64,
}

/// The choices a plan is evaluated at.
#[derive(Clone, Copy, Debug)]
struct Choice {
    mode: ActivationMode,
    chunk: usize,
    /// RAM share of paged state (ignored for RAM state).
    state_ram: u64,
}

/// Fixed facts of a run, computed once.
struct Facts {
    n: usize,
    t: usize,
    n_prefix: usize,
    n_values: u64,
    saved_floats_per_row: usize,
    dropout: bool,
    state_bytes: u64,
    page_bytes: u64,
    /// RAM paged state needs to keep every page resident: `PagedStore` frames are all the size
    /// of the largest record, one record each.
    paged_all: u64,
    /// Backend scratch: bytes of one thread's buffers, and the packed-A bytes for `m x k`.
    one_thread: CpuBackend,
}

fn facts(inp: &PlanInput) -> Result<Facts> {
    let adapter = inp.adapter.as_adapter();
    let (n_virtual, n_prefix) = match inp.adapter {
        AnyAdapter::Prefix(p) => (0, p.num_virtual_tokens()),
        AnyAdapter::Prompt(p) => (p.num_virtual_tokens(), 0),
        _ => (0, 0),
    };
    let t = inp.seq_len + n_virtual;
    let n = inp.batch_size * t;
    if n == 0 {
        return Err(Error::InvalidArgument(
            "memory plan: batch size and sequence length must be at least 1".into(),
        ));
    }
    let (saved_floats_per_row, dropout) = match inp.adapter {
        AnyAdapter::Lora(l) => (l.saved_bytes_per_row() / 4, l.config().dropout > 0.0),
        // IA3 keeps the base output of every output-scaling site ([n_out, 1] vectors).
        AnyAdapter::Ia3(a) => (
            a.params()
                .iter()
                .filter(|p| p.shape().len() == 2 && p.shape()[1] == 1)
                .map(|p| p.len())
                .sum(),
            false,
        ),
        _ => (0, false),
    };
    let specs = ParamSet::from_specs(adapter.params().specs())?;
    let rule = inp.state_mode.rule(AdamWConfig::default());
    let layout = Optimizer::layout(&rule, &specs, DEFAULT_PAGE_BYTES)?;
    Ok(Facts {
        n,
        t,
        n_prefix,
        n_values: adapter.params().n_values() as u64,
        saved_floats_per_row,
        dropout,
        state_bytes: layout.total_bytes(),
        page_bytes: layout.max_record_bytes().max(8) as u64,
        paged_all: layout.chunk_count() as u64 * layout.max_record_bytes().max(8) as u64,
        one_thread: CpuBackend::new(1)?,
    })
}

fn consumers(inp: &PlanInput, f: &Facts, c: Choice) -> Vec<Consumer> {
    let cfg = inp.config;
    let (n, t, d, v) = (f.n, f.t, cfg.n_embd, cfg.n_vocab);
    let (q, kv, ff, l) = (cfg.q_dim(), cfg.kv_dim(), cfg.n_ff, cfg.n_layer);
    let fl = |floats: usize| 4 * floats as u64;
    let mut out = Vec::new();
    let mut add = |name, phase, bytes: u64, detail: String| {
        out.push(Consumer {
            name,
            bytes,
            phase,
            detail,
        })
    };
    use Phase::*;
    add(
        "runtime + model + tokenizer",
        Always,
        inp.baseline.bytes,
        if inp.baseline.measured {
            "measured: RssAnon after opening the model and the tokenizer".into()
        } else {
            "not measured (no /proc): not included".into()
        },
    );
    add(
        "training data",
        Always,
        inp.data_bytes,
        "token ids and labels of the prepared sequences".into(),
    );
    add(
        "adapter params + grads",
        Always,
        8 * f.n_values,
        format!("{} f32 values, each with a gradient", f.n_values),
    );
    // What the adapter keeps per token for its backward, plus dropout's masked input copies.
    let adapter_saved = fl(f.saved_floats_per_row * n)
        + if f.dropout { fl(2 * n * d.max(ff)) } else { 0 }
        + match inp.adapter {
            AnyAdapter::Prefix(_) => fl(2 * l * 2 * f.n_prefix * kv),
            AnyAdapter::Prompt(p) => fl(2 * p.num_virtual_tokens() * d),
            _ => 0,
        };
    add(
        "adapter saved activations",
        Step,
        adapter_saved,
        format!("{} f32 per token", f.saved_floats_per_row),
    );
    let acts = crate::model::acts::Activations::bytes_for(cfg, inp.batch_size, t, c.mode) as u64;
    match c.mode {
        ActivationMode::Checkpoint => {
            let slot = fl(LayerLayout::new(cfg, inp.batch_size, t).floats());
            add(
                "checkpointed layer inputs",
                Step,
                acts - slot,
                format!("{} block inputs [{n}, {d}] + final norm", l + 1),
            );
            add(
                "recompute slot",
                Step,
                slot,
                "one block's activations, recomputed in backward".into(),
            );
        }
        _ => add(
            "saved activations",
            Step,
            acts,
            format!("{l} blocks, everything backward needs"),
        ),
    }
    add(
        "residual gradient",
        Step,
        fl(n * d + 5 * n),
        format!("[{n}, {d}], targets and per-token losses"),
    );
    // The cross-entropy walks the vocabulary in tiles (model::ops::cross_entropy): per chunk of
    // rows a [rows, tile] logits tile, the [tile, d] decoded weight tile, the rows' inputs,
    // accumulated softmax·W and target weight rows, and a running log-sum-exp per row.
    let rows = c.chunk.min(n);
    let tile = VOCAB_TILE.min(v);
    add(
        "logits chunk",
        Loss,
        fl(rows * tile + tile * d + 3 * rows * d + n * d) + 32 * n as u64,
        format!("{rows} rows x {tile}-token vocabulary tiles of {v}, d(final norm)"),
    );
    add(
        "block gradients",
        Backward,
        fl(n * (d + 2 * q + 2 * kv + 3 * ff)),
        "one block's activation gradients".into(),
    );
    let nk = t + f.n_prefix;
    let attn = fl(2 * kv * nk + q * t + 2 * q * nk)
        + inp.threads as u64 * fl(2 * ATTN_QB * cfg.head_dim + 2 * ATTN_QB * nk);
    add(
        "attention scratch",
        Backward,
        attn,
        format!("one sequence's heads, {} threads' score tiles", inp.threads),
    );
    // The calling thread packs the A operand of every product; it keeps the largest.
    let widest = d.max(q).max(ff);
    let pack = |m: usize, k: usize| {
        f.one_thread.scratch_bytes(m, k) as u64 - f.one_thread.scratch_bytes(0, k) as u64
    };
    // The cross-entropy's products are [rows, d]·[tile, d]ᵀ and [rows, tile]·[tile, d].
    let a_pack = pack(n, widest)
        .max(pack(rows, tile.max(d)))
        .max(pack(widest, n));
    add(
        "GEMM packing (caller)",
        Always,
        a_pack,
        "the largest packed left operand (kept between calls)".into(),
    );
    let per_thread = f.one_thread.scratch_bytes(0, widest) as u64;
    // The backend's threads: the caller and `threads − 1` workers, each with its own tile.
    let workers = inp.threads.max(1);
    add(
        "dequant tiles (per thread)",
        Always,
        workers as u64 * per_thread,
        format!(
            "{workers} x {} (packed weight tile + decode rows)",
            human(per_thread)
        ),
    );
    let state_ram = match inp.state_mode {
        StateMode::Ram => f.state_bytes,
        _ => (c.state_ram.min(f.paged_all) / f.page_bytes).max(1) * f.page_bytes,
    };
    add(
        "optimizer state in RAM",
        Always,
        state_ram,
        match inp.state_mode {
            StateMode::Ram => "AdamW moments, all in RAM".into(),
            _ => format!(
                "{} pages of {} resident ({} of state; all resident: {})",
                state_ram / f.page_bytes,
                human(f.page_bytes),
                human(f.state_bytes),
                human(f.paged_all)
            ),
        },
    );
    // glibc raises its mmap threshold each time a large block is freed, so later temporaries of
    // that size come from the heap, whose freed pages stay resident: 0.8-5.3 MiB above the other
    // consumers over the plan_vs_rss.py shapes (SmolLM2, 1-2 threads, seq 128-512, batch 1-2).
    add(
        "allocator slack",
        Always,
        ALLOCATOR_SLACK,
        "freed temporaries the heap keeps resident (measured)".into(),
    );
    // `adapters::save_peft_dir` holds the tensors in HF layout, their bytes and the serialized
    // file at once: 12 bytes per value while a checkpoint or the adapter is written.
    add(
        "adapter file buffers",
        Save,
        12 * f.n_values,
        "HF-layout copy + bytes + serialized file, while an adapter is written".into(),
    );
    out
}

fn evaluate(inp: &PlanInput, f: &Facts, c: Choice) -> Plan {
    let consumers = consumers(inp, f, c);
    let total = peak_of(&consumers);
    let state_ram_bytes = consumers
        .iter()
        .find(|c| c.name == "optimizer state in RAM")
        .map_or(0, |c| c.bytes);
    Plan {
        consumers,
        total,
        budget: inp.budget,
        activations: c.mode,
        lm_chunk_rows: c.chunk,
        state_mode: inp.state_mode,
        state_bytes: f.state_bytes,
        state_ram_bytes,
        mapped_bytes: inp.mapped_bytes,
    }
}

/// Plans a run: the consumers at the chosen settings. With a budget it picks, in this order, no
/// checkpointing with `DEFAULT_LM_CHUNK_ROWS` logits rows, fewer logits rows (down to 8),
/// checkpointing (as `--checkpointing` allows), and gives paged optimizer state whatever is left
/// (all of it if it fits). Without a budget: no checkpointing unless `On`, the default rows, paged
/// state `default_state_ram` bytes. Errors when nothing fits, naming the largest consumers and the
/// smallest budget that would work.
pub fn plan(inp: &PlanInput, default_state_ram: u64) -> Result<Plan> {
    let f = facts(inp)?;
    let modes: &[ActivationMode] = match inp.checkpointing {
        Checkpointing::Off => &[ActivationMode::Full],
        Checkpointing::On => &[ActivationMode::Checkpoint],
        Checkpointing::Auto => &[ActivationMode::Full, ActivationMode::Checkpoint],
    };
    let mut chunks = vec![DEFAULT_LM_CHUNK_ROWS];
    while *chunks.last().unwrap_or(&0) / 2 >= MIN_LM_CHUNK_ROWS {
        chunks.push(chunks[chunks.len() - 1] / 2);
    }
    let min_state = (MIN_STATE_PAGES as u64 * f.page_bytes).min(f.paged_all);
    let Some(budget) = inp.budget else {
        let c = Choice {
            mode: modes[0],
            chunk: DEFAULT_LM_CHUNK_ROWS,
            state_ram: default_state_ram.max(f.page_bytes),
        };
        return Ok(evaluate(inp, &f, c));
    };
    for &mode in modes {
        for &chunk in &chunks {
            // Paged state first gets its minimum; whatever the budget leaves goes to it after.
            let c = Choice {
                mode,
                chunk,
                state_ram: min_state,
            };
            let p = evaluate(inp, &f, c);
            if p.total <= budget {
                let room = budget - p.total;
                let c = Choice {
                    state_ram: (min_state + room) / f.page_bytes * f.page_bytes,
                    ..c
                };
                return Ok(evaluate(inp, &f, c));
            }
        }
    }
    // Nothing fits: report the smallest configuration these flags allow.
    let smallest = evaluate(
        inp,
        &f,
        Choice {
            mode: *modes.last().unwrap_or(&ActivationMode::Checkpoint),
            chunk: *chunks.last().unwrap_or(&MIN_LM_CHUNK_ROWS),
            state_ram: min_state,
        },
    );
    Err(Error::InvalidArgument(refusal(inp, &f, budget, &smallest)))
}

fn refusal(inp: &PlanInput, f: &Facts, budget: u64, smallest: &Plan) -> String {
    let largest: Vec<String> = smallest
        .largest()
        .iter()
        .take(4)
        .map(|c| format!("{} {}", c.name, human(c.bytes)))
        .collect();
    let how = format!(
        "checkpointing {}, {} logits rows{}",
        if smallest.activations == ActivationMode::Checkpoint {
            "on"
        } else {
            "off"
        },
        smallest.lm_chunk_rows,
        match inp.state_mode {
            StateMode::Ram => String::new(),
            _ => format!(
                ", {} of paged optimizer state",
                human(smallest.state_ram_bytes)
            ),
        }
    );
    let mut msg = format!(
        "--memory-budget {} ({budget} bytes) is too small for this run: it needs at least {} \
         ({how}; --memory-budget {}M would work). Largest consumers: {}",
        human(budget),
        human(smallest.total),
        smallest.total.div_ceil(1 << 20),
        largest.join(", ")
    );
    if inp.state_mode == StateMode::Ram && f.state_bytes > f.page_bytes * MIN_STATE_PAGES as u64 {
        let paged = smallest.total - f.state_bytes + f.page_bytes * MIN_STATE_PAGES as u64;
        msg += &format!(
            ". With --optimizer-state paged it would need {}",
            human(paged)
        );
    }
    msg + ". Shorter --seq-len or a smaller --batch-size also reduce it."
}

impl Plan {
    /// The consumers that make up the peak (those of the phases `total` adds), largest first.
    pub fn largest(&self) -> Vec<&Consumer> {
        let sum = |ph: Phase| -> u64 {
            self.consumers
                .iter()
                .filter(|c| c.phase == ph)
                .map(|c| c.bytes)
                .sum()
        };
        let inner = if sum(Phase::Loss) >= sum(Phase::Backward) {
            Phase::Loss
        } else {
            Phase::Backward
        };
        let step = sum(Phase::Step) + sum(inner) >= sum(Phase::Save);
        let counted = |ph: Phase| match ph {
            Phase::Always => true,
            Phase::Step => step,
            Phase::Loss | Phase::Backward => step && ph == inner,
            Phase::Save => !step,
        };
        let mut v: Vec<&Consumer> = self.consumers.iter().filter(|c| counted(c.phase)).collect();
        v.sort_by_key(|c| std::cmp::Reverse(c.bytes));
        v
    }

    /// A warning when a measured `RssAnon` exceeds the budget (a planner bug worth reporting).
    pub fn over_budget(&self, step: u64, rss_anon: u64) -> Option<String> {
        let budget = self.budget?;
        (rss_anon > budget).then(|| {
            format!(
                "warning: step {step}: anonymous memory {} ({rss_anon} bytes) exceeds the \
                 --memory-budget {} ({budget} bytes); the plan estimated {} ({} bytes). This is \
                 a memory-planner bug: please report it with the plan (--dry-run)",
                human(rss_anon),
                human(budget),
                human(self.total),
                self.total
            )
        })
    }
}

impl fmt::Display for Plan {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        writeln!(f, "memory plan (anonymous memory; bytes):")?;
        let w = self
            .consumers
            .iter()
            .map(|c| c.name.len())
            .max()
            .unwrap_or(8);
        for c in &self.consumers {
            writeln!(
                f,
                "  {:<w$}  {:>10}  {:>12}  {:<8}  {}",
                c.name,
                human(c.bytes),
                c.bytes,
                c.phase.name(),
                c.detail
            )?;
        }
        writeln!(
            f,
            "  {:<w$}  {:>10}  {:>12}  peak = always + max(step + max(loss, backward), save)",
            "total",
            human(self.total),
            self.total
        )?;
        match self.budget {
            Some(b) => writeln!(
                f,
                "  {:<w$}  {:>10}  {:>12}  {} left",
                "budget",
                human(b),
                b,
                human(b.saturating_sub(self.total))
            )?,
            None => writeln!(f, "  budget: none (--memory-budget SIZE sets one)")?,
        }
        let state = match self.state_mode {
            StateMode::Ram => format!("in RAM ({})", human(self.state_bytes)),
            m => format!(
                "{} paged, {} of pages in RAM for {} of state",
                if m == StateMode::Paged8bit {
                    "8-bit"
                } else {
                    "32-bit"
                },
                human(self.state_ram_bytes),
                human(self.state_bytes)
            ),
        };
        writeln!(
            f,
            "decisions: checkpointing {}, logits chunk {} rows, optimizer state {state}",
            if self.activations == ActivationMode::Checkpoint {
                "on"
            } else {
                "off"
            },
            self.lm_chunk_rows
        )?;
        write!(
            f,
            "not counted: the model file ({}) is memory-mapped read-only; its pages are \
             file-backed (RssFile), which the kernel may drop and re-read",
            human(self.mapped_bytes)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn over_budget_names_plan_and_measurement() {
        let plan = Plan {
            consumers: Vec::new(),
            total: 100 << 20,
            budget: Some(160 << 20),
            activations: ActivationMode::Checkpoint,
            lm_chunk_rows: 64,
            state_mode: StateMode::Ram,
            state_bytes: 0,
            state_ram_bytes: 0,
            mapped_bytes: 0,
        };
        assert_eq!(plan.over_budget(3, 160 << 20), None);
        let w = plan.over_budget(3, (160 << 20) + 4096).unwrap();
        for want in [
            "step 3",
            "160.0 MiB",
            "plan estimated 100.0 MiB",
            "167776256 bytes",
        ] {
            assert!(w.contains(want), "{want}: {w}");
        }
        let none = Plan {
            budget: None,
            ..plan
        };
        assert_eq!(none.over_budget(3, u64::MAX), None);
    }

    #[test]
    fn sizes_parse() {
        assert_eq!(parse_size("512M").unwrap(), 512 << 20);
        assert_eq!(parse_size("1.5G").unwrap(), 3 << 29);
        assert_eq!(parse_size("768MiB").unwrap(), 768 << 20);
        assert_eq!(parse_size("64k").unwrap(), 64 << 10);
        assert_eq!(parse_size("1000").unwrap(), 1000);
        for bad in ["", "M", "12X", "-3M", "1.2.3G"] {
            assert!(parse_size(bad).is_err(), "{bad}");
        }
    }
}
