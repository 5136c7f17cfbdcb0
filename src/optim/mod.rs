//! The optimizer layer: update rules matching torch and bitsandbytes bit for bit, their state
//! behind a store trait (RAM, or pages under a RAM budget spilling to a file), learning-rate
//! schedules, gradient clipping and checkpoints of the state. Independent of the model: it sees
//! named flat f32 tensors and their gradients.
//!
//! - [`ParamSet`] registers parameters once; [`GradBuffers`] holds their gradients.
//! - [`Rule`]: [`AdamWConfig`] (`torch.optim.AdamW`), [`SgdConfig`] (`torch.optim.SGD`),
//!   [`AdamW8bitConfig`] (`bitsandbytes.optim.AdamW8bit`, CPU kernels).
//! - [`StateStore`]: [`RamStore`] or [`PagedStore`]; the rule never knows which (DESIGN.md
//!   decision 5). Paged and RAM runs give bit-identical parameters.
//! - [`Schedule`] (transformers' warmup schedules), [`clip::clip_grad_norm`].
//! - [`Optimizer::save_state`] / [`Optimizer::load_state`]: a safetensors file.
//!
//! A training step: gradients accumulate in [`GradBuffers`] (backward adds), then
//! `clip_grad_norm`, then `opt.step(params, grads, schedule.lr(opt.steps_done()))`, then
//! `grads.zero()`. docs/optim.md lists what is matched exactly and how it was measured.

pub mod checkpoint;
pub mod clip;
pub mod kernels;
pub mod paged;
pub mod params;
pub mod rules;
pub mod schedule;
pub mod store;

pub use clip::{clip_grad_norm, global_grad_norm};
pub use paged::{PagedConfig, PagedStore};
pub use params::{GradBuffers, ParamId, ParamSet, ParamSpec};
pub use rules::{AdamW8bitConfig, AdamWConfig, Rule, SgdConfig};
pub use schedule::{Schedule, ScheduleKind};
pub use store::{PagingStats, RamStore, Slot, SlotType, StateLayout, StateStore};

use crate::cpu::{simd_level, SimdLevel};
use crate::error::{Error, Result};
use rules::{Scratch, Step};
use std::path::Path;

/// Default target size of a state page (one chunk's record), in bytes.
pub const DEFAULT_PAGE_BYTES: usize = 64 * 1024;

/// Where an [`Optimizer`] keeps its state.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum StoreKind {
    Ram,
    Paged(PagedConfig),
}

/// `train --optimizer-state`: AdamW with RAM state, AdamW with paged state, or AdamW8bit with
/// paged state.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StateMode {
    Ram,
    Paged,
    Paged8bit,
}

impl std::str::FromStr for StateMode {
    type Err = Error;

    fn from_str(s: &str) -> Result<StateMode> {
        match s {
            "ram" => Ok(StateMode::Ram),
            "paged" => Ok(StateMode::Paged),
            "paged-8bit" => Ok(StateMode::Paged8bit),
            _ => Err(Error::InvalidArgument(format!(
                "optimizer state {s:?}: expected ram, paged or paged-8bit"
            ))),
        }
    }
}

impl StateMode {
    /// The AdamW rule of this mode (8-bit state for `paged-8bit`).
    pub fn rule(self, adam: AdamWConfig) -> Rule {
        match self {
            StateMode::Ram | StateMode::Paged => Rule::AdamW(adam),
            StateMode::Paged8bit => Rule::AdamW8bit(AdamW8bitConfig {
                adam,
                ..AdamW8bitConfig::default()
            }),
        }
    }

    /// The store of this mode; paged modes put their file at `state_file` and keep at most
    /// `budget_bytes` of pages in RAM.
    pub fn store(self, state_file: &Path, budget_bytes: usize) -> StoreKind {
        match self {
            StateMode::Ram => StoreKind::Ram,
            StateMode::Paged | StateMode::Paged8bit => {
                StoreKind::Paged(PagedConfig::new(state_file, budget_bytes))
            }
        }
    }
}

/// A rule, its parameters and its state.
pub struct Optimizer {
    rule: Rule,
    params: ParamSet,
    store: Box<dyn StateStore>,
    /// A copy of the store's layout (walked while the store is borrowed).
    layout: StateLayout,
    steps: u64,
    level: SimdLevel,
    scratch: Scratch,
}

impl Optimizer {
    /// An optimizer with state in `store`, pages of about [`DEFAULT_PAGE_BYTES`].
    pub fn new(rule: Rule, params: ParamSet, store: StoreKind) -> Result<Optimizer> {
        let layout = Optimizer::layout(&rule, &params, DEFAULT_PAGE_BYTES)?;
        let store: Box<dyn StateStore> = match store {
            StoreKind::Ram => Box::new(RamStore::new(layout)?),
            StoreKind::Paged(config) => Box::new(PagedStore::create(layout, config)?),
        };
        Optimizer::with_store(rule, params, store)
    }

    /// An optimizer over a store built by the caller from [`Optimizer::layout`].
    pub fn with_store(
        rule: Rule,
        params: ParamSet,
        store: Box<dyn StateStore>,
    ) -> Result<Optimizer> {
        rule.validate()?;
        let chunk = store.layout().chunk_elems();
        if *store.layout() != Optimizer::layout_with_chunk(&rule, &params, chunk)? {
            return Err(Error::InvalidArgument(format!(
                "the state store's layout does not fit rule {} over these {} parameters",
                rule.name(),
                params.len()
            )));
        }
        Ok(Optimizer {
            rule,
            params,
            layout: store.layout().clone(),
            store,
            steps: 0,
            level: simd_level(),
            scratch: Scratch::default(),
        })
    }

    /// The state layout of `rule` over `params` with pages of about `page_bytes` (chunks are a
    /// multiple of 256 elements). Its `total_bytes()` is the state size, for memory planning.
    pub fn layout(rule: &Rule, params: &ParamSet, page_bytes: usize) -> Result<StateLayout> {
        let per_elem = rule.bytes_per_element();
        let chunk = (page_bytes / per_elem / 256).max(1) * 256;
        Optimizer::layout_with_chunk(rule, params, chunk)
    }

    fn layout_with_chunk(rule: &Rule, params: &ParamSet, chunk: usize) -> Result<StateLayout> {
        StateLayout::new(params.iter().map(|(_, s)| s.len), chunk, |len, n| {
            store::record_bytes(&rule.slots(len, n))
        })
    }

    pub fn rule(&self) -> &Rule {
        &self.rule
    }

    pub fn params(&self) -> &ParamSet {
        &self.params
    }

    /// Optimizer steps taken (the schedule's step index for the next one).
    pub fn steps_done(&self) -> u64 {
        self.steps
    }

    pub fn store(&self) -> &dyn StateStore {
        &*self.store
    }

    /// The store itself, e.g. to read state records (`record`) or page statistics.
    pub fn store_mut(&mut self) -> &mut dyn StateStore {
        &mut *self.store
    }

    /// Runs kernels at `level` (tests; capped to what the CPU has) instead of the detected one.
    pub fn set_simd_level(&mut self, level: SimdLevel) {
        self.level = level;
    }

    /// One update of every parameter at learning rate `lr`. `params` and `grads` are in
    /// registration order with the registered lengths. Gradients are read, not modified.
    pub fn step(&mut self, params: &mut [&mut [f32]], grads: &[&[f32]], lr: f64) -> Result<()> {
        self.params
            .check_lens("parameters", params.iter().map(|p| p.len()))?;
        self.params
            .check_lens("gradients", grads.iter().map(|g| g.len()))?;
        if !lr.is_finite() || lr < 0.0 {
            return Err(Error::InvalidArgument(format!(
                "learning rate {lr} is not a finite non-negative number"
            )));
        }
        if let Rule::AdamW8bit(c) = &self.rule {
            // 8-bit state cannot hold NaN or infinity: refuse before touching anything.
            for ((_, spec), g) in self.params.iter().zip(grads) {
                if spec.len >= c.min_8bit_size {
                    let what = format!("gradient of {}", spec.name);
                    crate::quant::dynamic8::max_abs(g, 0, &what)?;
                }
            }
        }
        let step = Step {
            rule: &self.rule,
            scalars: self.rule.scalars(self.steps + 1, lr),
            level: self.level,
        };
        let layout = &self.layout;
        for (((id, spec), p), g) in self.params.iter().zip(params.iter_mut()).zip(grads) {
            for (k, chunk) in layout.chunks_of(id.0).enumerate() {
                let range = layout.chunk_range(id.0, k);
                let record = self.store.record_mut(chunk)?;
                step.update_chunk(
                    spec.len,
                    record,
                    &mut p[range.clone()],
                    &g[range],
                    &mut self.scratch,
                )
                .map_err(|e| match e {
                    e @ Error::Io { .. } => e,
                    e => Error::InvalidArgument(format!("updating parameter {}: {e}", spec.name)),
                })?;
            }
        }
        self.steps += 1;
        Ok(())
    }

    /// Writes the state (and step count) to `path` atomically; see [`checkpoint`].
    pub fn save_state(&mut self, path: &Path) -> Result<()> {
        checkpoint::save(path, &self.rule, &self.params, &mut *self.store, self.steps)
    }

    /// Replaces the state (and step count) with one saved by [`Optimizer::save_state`] for the
    /// same rule, hyper-parameters and parameters.
    pub fn load_state(&mut self, path: &Path) -> Result<()> {
        self.steps = checkpoint::load(path, &self.rule, &self.params, &mut *self.store)?;
        Ok(())
    }
}
