//! LoRA (FORMATS.md Part II §4.1): per adapted layer `A [r, n_in]`, `B [n_out, r]` and
//! `y = x·Wᵀ + s · (drop(x)·Aᵀ)·Bᵀ` with `s = alpha/r` (or `alpha/√r`, rsLoRA). Dropout acts on the
//! LoRA branch's input only, during training. Init as PEFT: `A ~ U(−1/√n_in, 1/√n_in)` (kaiming
//! uniform, a = √5), `B = 0`, so an untrained adapter is an exact no-op.
//!
//! Saved for backward per site (training only): `hs = s·(drop(x)·Aᵀ)` `[m, r]`. The dropout mask is
//! regenerated from its counter-based key instead of being stored.

use super::config::PeftMeta;
use super::params::ParamSet;
use super::rng::{DropoutMask, Rng};
use super::target::{ModelDims, Site, Target};
use super::{check_base, check_len, Adapter, FrozenLinear, Method, MethodConfig, PeftConfig};
use crate::backend::Backend;
use crate::error::{Error, Result};
use std::borrow::Cow;

/// LoRA hyper-parameters and the layers it adapts.
#[derive(Clone, Debug, PartialEq)]
pub struct LoraConfig {
    pub rank: usize,
    pub alpha: f32,
    /// Scale by `alpha/√r` instead of `alpha/r`.
    pub rslora: bool,
    /// Dropout probability on the LoRA input during training, in [0, 1).
    pub dropout: f32,
    /// Adapted layers, in `(layer, Target::ALL)` order without duplicates.
    pub sites: Vec<Site>,
}

impl LoraConfig {
    /// `targets` on every layer (or on `layers` only).
    pub fn new(
        rank: usize,
        alpha: f32,
        targets: &[Target],
        layers: Option<&[usize]>,
        dims: &ModelDims,
    ) -> LoraConfig {
        LoraConfig {
            rank,
            alpha,
            rslora: false,
            dropout: 0.0,
            sites: sites_of(targets, layers, dims.n_layer),
        }
    }

    /// The factor `s` applied to `B·A`.
    pub fn scale(&self) -> f32 {
        if self.rslora {
            self.alpha / (self.rank as f32).sqrt()
        } else {
            self.alpha / self.rank as f32
        }
    }

    fn validate(&self, dims: &ModelDims) -> Result<()> {
        let bad = |m: String| Err(Error::InvalidArgument(format!("LoRA: {m}")));
        if self.rank == 0 {
            return bad("rank is 0".into());
        }
        if !self.alpha.is_finite() {
            return bad(format!("alpha {} is not finite", self.alpha));
        }
        if !(0.0..1.0).contains(&self.dropout) {
            return bad(format!("dropout {} is outside [0, 1)", self.dropout));
        }
        if self.sites.is_empty() {
            return bad("no layer to adapt".into());
        }
        check_sites(&self.sites, dims)
    }
}

/// Every (layer, target) pair, layers ascending, targets in `Target::ALL` order.
pub fn sites_of(targets: &[Target], layers: Option<&[usize]>, n_layer: usize) -> Vec<Site> {
    let all: Vec<usize> = (0..n_layer).collect();
    let layers = layers.unwrap_or(&all);
    let mut sites: Vec<Site> = layers
        .iter()
        .flat_map(|&l| targets.iter().map(move |&t| Site::new(l, t)))
        .collect();
    sites.sort();
    sites.dedup();
    sites
}

pub(crate) fn check_sites(sites: &[Site], dims: &ModelDims) -> Result<()> {
    if let Some(s) = sites.iter().find(|s| s.layer >= dims.n_layer) {
        return Err(Error::InvalidArgument(format!(
            "{s}: layer {} is beyond the model's {} layers",
            s.layer, dims.n_layer
        )));
    }
    if sites.windows(2).any(|w| w[0] >= w[1]) {
        return Err(Error::InvalidArgument(
            "adapter sites must be sorted and unique".into(),
        ));
    }
    Ok(())
}

/// Per adapted layer: where its tensors are and what forward saved.
#[derive(Clone, Debug)]
struct Slot {
    site: Site,
    a: usize,
    b: usize,
    n_in: usize,
    n_out: usize,
    /// `s·(drop(x)·Aᵀ)` `[saved_rows, r]` from the last training forward.
    saved: Vec<f32>,
    saved_rows: Option<usize>,
}

/// A LoRA adapter over a whole model.
#[derive(Clone, Debug)]
pub struct Lora {
    dims: ModelDims,
    cfg: LoraConfig,
    params: ParamSet,
    slots: Vec<Slot>,
    /// `slot_of[layer * 7 + target]`.
    slot_of: Vec<Option<usize>>,
    training: Option<u64>,
    dropout_seed: u64,
    /// Config keys carried from a loaded adapter_config.json (base model name, unknown keys).
    pub meta: PeftMeta,
}

impl Lora {
    /// A fresh adapter with PEFT's init; `seed` drives the init of A and the dropout masks.
    pub fn new(dims: &ModelDims, cfg: LoraConfig, seed: u64) -> Result<Lora> {
        let mut lora = Lora::zeros(dims, cfg)?;
        let mut rng = Rng::new(seed);
        for slot in &lora.slots {
            let bound = 1.0 / (slot.n_in as f64).sqrt();
            for v in lora.params.get_mut(slot.a).data_mut() {
                *v = rng.uniform(-bound, bound);
            }
        }
        lora.dropout_seed = seed;
        Ok(lora)
    }

    /// An adapter with every tensor zero (loaders fill it).
    pub fn zeros(dims: &ModelDims, cfg: LoraConfig) -> Result<Lora> {
        dims.validate()?;
        cfg.validate(dims)?;
        let r = cfg.rank;
        let mut params = ParamSet::new();
        let mut slots = Vec::with_capacity(cfg.sites.len());
        let mut slot_of = vec![None; dims.n_layer * Target::ALL.len()];
        for &site in &cfg.sites {
            let (n_in, n_out) = site.target.shape(dims);
            let path = site.target.hf_module_path(site.layer);
            let a = params.push(
                format!("base_model.model.{path}.lora_A.weight"),
                vec![r, n_in],
                vec![0.0; r * n_in],
            );
            let b = params.push(
                format!("base_model.model.{path}.lora_B.weight"),
                vec![n_out, r],
                vec![0.0; n_out * r],
            );
            slot_of[site.layer * Target::ALL.len() + site.target.index()] = Some(slots.len());
            slots.push(Slot {
                site,
                a,
                b,
                n_in,
                n_out,
                saved: Vec::new(),
                saved_rows: None,
            });
        }
        Ok(Lora {
            dims: dims.clone(),
            meta: PeftMeta::default(),
            cfg,
            params,
            slots,
            slot_of,
            training: None,
            dropout_seed: 0,
        })
    }

    pub fn config(&self) -> &LoraConfig {
        &self.cfg
    }

    pub fn scale(&self) -> f32 {
        self.cfg.scale()
    }

    pub fn sites(&self) -> impl Iterator<Item = Site> + '_ {
        self.slots.iter().map(|s| s.site)
    }

    /// Changes the dropout probability (in [0, 1)).
    pub fn set_dropout(&mut self, p: f32) -> Result<()> {
        if !(0.0..1.0).contains(&p) {
            return Err(Error::InvalidArgument(format!(
                "LoRA: dropout {p} is outside [0, 1)"
            )));
        }
        self.cfg.dropout = p;
        Ok(())
    }

    /// Seed of the dropout masks (set by `new`; a trainer resuming a run sets it again).
    pub fn set_dropout_seed(&mut self, seed: u64) {
        self.dropout_seed = seed;
    }

    fn slot(&self, site: Site) -> Option<usize> {
        if site.layer >= self.dims.n_layer {
            return None;
        }
        self.slot_of[site.layer * Target::ALL.len() + site.target.index()]
    }

    /// Indices into `params()` of `(A, B)` at `site`, if adapted.
    pub fn param_indices(&self, site: Site) -> Option<(usize, usize)> {
        self.slot(site).map(|i| (self.slots[i].a, self.slots[i].b))
    }

    /// `A [r, n_in]` and `B [n_out, r]` (B rows in the model's order) at `site`.
    pub fn weights(&self, site: Site) -> Option<(&[f32], &[f32])> {
        self.param_indices(site)
            .map(|(a, b)| (self.params.get(a).data(), self.params.get(b).data()))
    }

    /// `A` and `B` at `site`, mutable.
    pub fn weights_mut(&mut self, site: Site) -> Option<(&mut [f32], &mut [f32])> {
        let (a, b) = self.param_indices(site)?;
        let (pa, pb) = self.params.pair_mut(a, b);
        Some((pa.data_mut(), pb.data_mut()))
    }

    /// `s·B·A` `[n_out, n_in]` at `site` (rows in the model's order), for merging into the base.
    pub fn delta_weight(&self, site: Site, backend: &dyn Backend) -> Option<Vec<f32>> {
        let i = self.slot(site)?;
        let slot = &self.slots[i];
        let (a, b) = (
            self.params.get(slot.a).data(),
            self.params.get(slot.b).data(),
        );
        let mut d = vec![0.0; slot.n_out * slot.n_in];
        backend.gemm_nn(b, a, &mut d, slot.n_out, slot.n_in, self.cfg.rank, 0.0);
        let s = self.scale();
        d.iter_mut().for_each(|v| *v *= s);
        Some(d)
    }

    fn mask(&self, site: Site) -> Option<DropoutMask> {
        match self.training {
            Some(step) if self.cfg.dropout > 0.0 => Some(DropoutMask::new(
                self.dropout_seed,
                step,
                (site.layer * Target::ALL.len() + site.target.index()) as u64,
                self.cfg.dropout,
            )),
            _ => None,
        }
    }

    /// Adds the LoRA term `s·(drop(x)·Aᵀ)·Bᵀ` into `y[m, n_out]` (nothing when `site` is not
    /// adapted). In training mode, keeps what backward needs.
    pub fn forward_delta(
        &mut self,
        site: Site,
        backend: &dyn Backend,
        x: &[f32],
        m: usize,
        y: &mut [f32],
    ) -> Result<()> {
        let Some(i) = self.slot(site) else {
            return Ok(());
        };
        let (n_in, n_out, r) = (self.slots[i].n_in, self.slots[i].n_out, self.cfg.rank);
        check_len("LoRA input", site, x.len(), m, n_in)?;
        check_len("LoRA output", site, y.len(), m, n_out)?;
        let xd: Cow<[f32]> = match self.mask(site) {
            Some(mask) => {
                let mut v = vec![0.0; x.len()];
                mask.apply(x, &mut v);
                Cow::Owned(v)
            }
            None => Cow::Borrowed(x),
        };
        let slot = &self.slots[i];
        let mut hs = vec![0.0; m * r];
        backend.gemm_nt(
            &xd,
            self.params.get(slot.a).data(),
            &mut hs,
            m,
            r,
            n_in,
            0.0,
        );
        let s = self.scale();
        hs.iter_mut().for_each(|v| *v *= s);
        backend.gemm_nt(&hs, self.params.get(slot.b).data(), y, m, n_out, r, 1.0);
        let slot = &mut self.slots[i];
        if self.training.is_some() {
            slot.saved = hs;
            slot.saved_rows = Some(m);
        } else {
            slot.saved_rows = None;
        }
        Ok(())
    }

    /// Backward of `forward_delta`: `dB += dyᵀ·hs`, `dA += (s·dy·B)ᵀ·drop(x)`,
    /// `dx += drop'((s·dy·B)·A)`. Needs the training forward of the same site and rows.
    pub fn backward_delta(
        &mut self,
        site: Site,
        backend: &dyn Backend,
        x: &[f32],
        dy: &[f32],
        m: usize,
        dx: &mut [f32],
    ) -> Result<()> {
        let Some(i) = self.slot(site) else {
            return Ok(());
        };
        let (n_in, n_out, r) = (self.slots[i].n_in, self.slots[i].n_out, self.cfg.rank);
        check_len("LoRA input", site, x.len(), m, n_in)?;
        check_len("LoRA output gradient", site, dy.len(), m, n_out)?;
        check_len("LoRA input gradient", site, dx.len(), m, n_in)?;
        if self.slots[i].saved_rows != Some(m) {
            return Err(Error::InvalidArgument(format!(
                "{site}: LoRA backward over {m} rows without a training forward of those rows \
                 (saved: {:?}; call set_training(Some(step)) before forward)",
                self.slots[i].saved_rows
            )));
        }
        let mask = self.mask(site);
        let s = self.scale();
        let (ia, ib) = (self.slots[i].a, self.slots[i].b);
        let hs = &self.slots[i].saved;
        backend.gemm_tn(dy, hs, self.params.get_mut(ib).grad_mut(), n_out, r, m, 1.0);
        let mut g = vec![0.0; m * r];
        backend.gemm_nn(dy, self.params.get(ib).data(), &mut g, m, r, n_out, 0.0);
        g.iter_mut().for_each(|v| *v *= s);
        let xd: Cow<[f32]> = match &mask {
            Some(mask) => {
                let mut v = vec![0.0; x.len()];
                mask.apply(x, &mut v);
                Cow::Owned(v)
            }
            None => Cow::Borrowed(x),
        };
        backend.gemm_tn(&g, &xd, self.params.get_mut(ia).grad_mut(), r, n_in, m, 1.0);
        let a = self.params.get(ia).data();
        match mask {
            Some(mask) => {
                let mut t = vec![0.0; m * n_in];
                backend.gemm_nn(&g, a, &mut t, m, n_in, r, 0.0);
                mask.apply_in_place(&mut t);
                dx.iter_mut().zip(&t).for_each(|(d, v)| *d += v);
            }
            None => backend.gemm_nn(&g, a, dx, m, n_in, r, 1.0),
        }
        Ok(())
    }

    /// Bytes saved for backward per row (token) of a training forward, over all adapted layers.
    pub fn saved_bytes_per_row(&self) -> usize {
        self.slots.len() * self.cfg.rank * std::mem::size_of::<f32>()
    }
}

impl Adapter for Lora {
    fn method(&self) -> Method {
        Method::Lora
    }

    fn dims(&self) -> &ModelDims {
        &self.dims
    }

    fn params(&self) -> &ParamSet {
        &self.params
    }

    fn params_mut(&mut self) -> &mut ParamSet {
        &mut self.params
    }

    fn set_training(&mut self, step: Option<u64>) {
        self.training = step;
    }

    fn linear_forward(
        &mut self,
        site: Site,
        base: &dyn FrozenLinear,
        x: &[f32],
        m: usize,
        y: &mut [f32],
    ) -> Result<()> {
        if self.slot(site).is_none() {
            return base.forward(x, m, y);
        }
        check_base(site, base, &self.dims)?;
        check_len("LoRA input", site, x.len(), m, base.n_in())?;
        check_len("LoRA output", site, y.len(), m, base.n_out())?;
        base.forward(x, m, y)?;
        self.forward_delta(site, base.backend(), x, m, y)
    }

    fn linear_backward(
        &mut self,
        site: Site,
        base: &dyn FrozenLinear,
        x: &[f32],
        dy: &[f32],
        m: usize,
        dx: &mut [f32],
    ) -> Result<()> {
        if self.slot(site).is_none() {
            return base.backward_input(dy, m, dx);
        }
        check_base(site, base, &self.dims)?;
        check_len("LoRA output gradient", site, dy.len(), m, base.n_out())?;
        check_len("LoRA input gradient", site, dx.len(), m, base.n_in())?;
        // The LoRA part first: it checks that a training forward saved these rows.
        self.backward_delta(site, base.backend(), x, dy, m, dx)?;
        base.backward_input(dy, m, dx)
    }

    fn peft_config(&self) -> PeftConfig {
        PeftConfig {
            method: MethodConfig::Lora(self.cfg.clone()),
            meta: self.meta.clone(),
        }
    }

    fn hf_row_permutation(&self, param: usize) -> Option<usize> {
        let slot = self.slots.iter().find(|s| s.b == param)?;
        slot.site.target.permuted_heads(&self.dims)
    }
}
