//! IA3 (FORMATS.md Part II §4.2): learned vectors that rescale a linear layer's output
//! (`y = base(x) ⊙ l`, l of length n_out, stored `[n_out, 1]`; Llama default: k_proj, v_proj) or,
//! for "feedforward" layers, its input (`y = base(x ⊙ l)`, l of length n_in, stored `[1, n_in]`;
//! Llama default: down_proj). Init: ones, an exact no-op.
//!
//! Saved for backward (training, output scaling only): the base output `[m, n_out]`, since
//! `dl = Σ_m dy ⊙ base(x)`. Input scaling needs only `x`, which the model passes to backward.

use super::config::PeftMeta;
use super::lora::{check_sites, sites_of};
use super::params::ParamSet;
use super::target::{ModelDims, Site, Target};
use super::{check_base, check_len, Adapter, FrozenLinear, Method, MethodConfig, PeftConfig};
use crate::error::{Error, Result};

/// The layers IA3 adapts and which of them scale their input.
#[derive(Clone, Debug, PartialEq)]
pub struct Ia3Config {
    /// Adapted layers, sorted, unique.
    pub sites: Vec<Site>,
    /// Targets whose input (not output) is scaled (PEFT `feedforward_modules`).
    pub feedforward: Vec<Target>,
}

impl Ia3Config {
    /// `targets` on every layer (or `layers`); `ffn_down`, if targeted, scales its input (PEFT's
    /// Llama default), every other target its output.
    pub fn new(targets: &[Target], layers: Option<&[usize]>, dims: &ModelDims) -> Ia3Config {
        Ia3Config {
            sites: sites_of(targets, layers, dims.n_layer),
            feedforward: targets
                .iter()
                .copied()
                .filter(|&t| t == Target::FfnDown)
                .collect(),
        }
    }

    /// PEFT's defaults for Llama: k_proj, v_proj (output) and down_proj (input) on every layer.
    pub fn llama_default(dims: &ModelDims) -> Ia3Config {
        Ia3Config::new(&[Target::AttnK, Target::AttnV, Target::FfnDown], None, dims)
    }
}

#[derive(Clone, Debug)]
struct Slot {
    site: Site,
    param: usize,
    scales_input: bool,
    /// Base output `[saved_rows, n_out]` of the last training forward (output scaling).
    saved: Vec<f32>,
    saved_rows: Option<usize>,
}

/// An IA3 adapter over a whole model.
#[derive(Clone, Debug)]
pub struct Ia3 {
    dims: ModelDims,
    cfg: Ia3Config,
    params: ParamSet,
    slots: Vec<Slot>,
    slot_of: Vec<Option<usize>>,
    training: bool,
    /// Config keys carried from a loaded adapter_config.json.
    pub meta: PeftMeta,
}

impl Ia3 {
    /// A fresh adapter: every vector is ones.
    pub fn new(dims: &ModelDims, cfg: Ia3Config) -> Result<Ia3> {
        dims.validate()?;
        if cfg.sites.is_empty() {
            return Err(Error::InvalidArgument("IA3: no layer to adapt".into()));
        }
        check_sites(&cfg.sites, dims)?;
        let mut params = ParamSet::new();
        let mut slots = Vec::new();
        let mut slot_of = vec![None; dims.n_layer * Target::ALL.len()];
        for &site in &cfg.sites {
            let (n_in, n_out) = site.target.shape(dims);
            let scales_input = cfg.feedforward.contains(&site.target);
            let shape = if scales_input {
                vec![1, n_in]
            } else {
                vec![n_out, 1]
            };
            let len = shape.iter().product();
            let param = params.push(
                format!(
                    "base_model.model.{}.ia3_l",
                    site.target.hf_module_path(site.layer)
                ),
                shape,
                vec![1.0; len],
            );
            slot_of[site.layer * Target::ALL.len() + site.target.index()] = Some(slots.len());
            slots.push(Slot {
                site,
                param,
                scales_input,
                saved: Vec::new(),
                saved_rows: None,
            });
        }
        Ok(Ia3 {
            dims: dims.clone(),
            cfg,
            params,
            slots,
            slot_of,
            training: false,
            meta: PeftMeta::default(),
        })
    }

    pub fn config(&self) -> &Ia3Config {
        &self.cfg
    }

    fn slot(&self, site: Site) -> Option<usize> {
        if site.layer >= self.dims.n_layer {
            return None;
        }
        self.slot_of[site.layer * Target::ALL.len() + site.target.index()]
    }

    /// Index into `params()` of the vector at `site` and whether it scales the input.
    pub fn param_index(&self, site: Site) -> Option<(usize, bool)> {
        self.slot(site)
            .map(|i| (self.slots[i].param, self.slots[i].scales_input))
    }

    /// The vector at `site` (output scaling: rows in the model's order).
    pub fn vector(&self, site: Site) -> Option<&[f32]> {
        self.param_index(site)
            .map(|(p, _)| self.params.get(p).data())
    }

    pub fn vector_mut(&mut self, site: Site) -> Option<&mut [f32]> {
        let (p, _) = self.param_index(site)?;
        Some(self.params.get_mut(p).data_mut())
    }
}

impl Adapter for Ia3 {
    fn method(&self) -> Method {
        Method::Ia3
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
        self.training = step.is_some();
    }

    fn linear_forward(
        &mut self,
        site: Site,
        base: &dyn FrozenLinear,
        x: &[f32],
        m: usize,
        y: &mut [f32],
    ) -> Result<()> {
        let Some(i) = self.slot(site) else {
            return base.forward(x, m, y);
        };
        check_base(site, base, &self.dims)?;
        let (n_in, n_out) = (base.n_in(), base.n_out());
        check_len("IA3 input", site, x.len(), m, n_in)?;
        check_len("IA3 output", site, y.len(), m, n_out)?;
        let slot = &mut self.slots[i];
        let l = self.params.get(slot.param).data();
        if slot.scales_input {
            let mut xs = x.to_vec();
            for row in xs.chunks_exact_mut(n_in) {
                row.iter_mut().zip(l).for_each(|(v, &s)| *v *= s);
            }
            base.forward(&xs, m, y)?;
            slot.saved_rows = self.training.then_some(m);
        } else {
            base.forward(x, m, y)?;
            if self.training {
                slot.saved.clear();
                slot.saved.extend_from_slice(y);
                slot.saved_rows = Some(m);
            } else {
                slot.saved_rows = None;
            }
            for row in y.chunks_exact_mut(n_out) {
                row.iter_mut().zip(l).for_each(|(v, &s)| *v *= s);
            }
        }
        Ok(())
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
        let Some(i) = self.slot(site) else {
            return base.backward_input(dy, m, dx);
        };
        check_base(site, base, &self.dims)?;
        let (n_in, n_out) = (base.n_in(), base.n_out());
        check_len("IA3 input", site, x.len(), m, n_in)?;
        check_len("IA3 output gradient", site, dy.len(), m, n_out)?;
        check_len("IA3 input gradient", site, dx.len(), m, n_in)?;
        let slot = &self.slots[i];
        if slot.saved_rows != Some(m) {
            return Err(Error::InvalidArgument(format!(
                "{site}: IA3 backward over {m} rows without a training forward of those rows \
                 (saved: {:?}; call set_training(Some(step)) before forward)",
                slot.saved_rows
            )));
        }
        let (l, dl) = self.params.get_mut(slot.param).data_and_grad_mut();
        if slot.scales_input {
            // y = base(x ⊙ l): dx' = dy·W, dl = Σ_m dx' ⊙ x, dx += dx' ⊙ l.
            let mut dxs = vec![0.0; m * n_in];
            base.backward_input(dy, m, &mut dxs)?;
            for ((g, xr), dxr) in dxs
                .chunks_exact(n_in)
                .zip(x.chunks_exact(n_in))
                .zip(dx.chunks_exact_mut(n_in))
            {
                for j in 0..n_in {
                    dl[j] += g[j] * xr[j];
                    dxr[j] += g[j] * l[j];
                }
            }
        } else {
            // y = base(x) ⊙ l: dl = Σ_m dy ⊙ base(x), d base = dy ⊙ l.
            let mut dys = dy.to_vec();
            for (dr, yb) in dys
                .chunks_exact_mut(n_out)
                .zip(slot.saved.chunks_exact(n_out))
            {
                for o in 0..n_out {
                    dl[o] += dr[o] * yb[o];
                    dr[o] *= l[o];
                }
            }
            base.backward_input(&dys, m, dx)?;
        }
        Ok(())
    }

    fn peft_config(&self) -> PeftConfig {
        PeftConfig {
            method: MethodConfig::Ia3(self.cfg.clone()),
            meta: self.meta.clone(),
        }
    }

    fn hf_row_permutation(&self, param: usize) -> Option<usize> {
        let slot = self.slots.iter().find(|s| s.param == param)?;
        if slot.scales_input {
            return None;
        }
        slot.site.target.permuted_heads(&self.dims)
    }
}
