//! The update rules: torch's AdamW and SGD, and bitsandbytes' AdamW8bit. A rule says what state
//! a chunk of a parameter needs (its [`Slot`]s), turns `(step, lr)` into the f32 scalars of that
//! step exactly as its reference computes them (in f64, like Python, then rounded), and updates
//! one chunk given its state record. It never knows where the record lives.

use super::kernels::{self, BnbAdam, TorchAdamW, TorchSgd};
use super::store::{bytes_as_f32_mut, f32_pair_mut, record_too_small, Slot, SlotType};
use crate::cpu::SimdLevel;
use crate::error::{Error, Result};
use crate::quant::dynamic8::{self, CodeMap, Rounding};
use serde::{Deserialize, Serialize};

/// Elements per 8-bit block (bitsandbytes' blockwise optimizers).
pub const BLOCK_8BIT: usize = 256;

/// `torch.optim.AdamW` hyper-parameters other than the learning rate (given per step).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamWConfig {
    pub beta1: f64,
    pub beta2: f64,
    pub eps: f64,
    /// Decoupled: `p *= 1 - lr * weight_decay` before the Adam step.
    pub weight_decay: f64,
}

impl Default for AdamWConfig {
    /// edgetune's defaults (DESIGN.md): betas 0.9/0.999, eps 1e-8, weight decay 0.
    fn default() -> AdamWConfig {
        AdamWConfig {
            beta1: 0.9,
            beta2: 0.999,
            eps: 1e-8,
            weight_decay: 0.0,
        }
    }
}

/// `torch.optim.SGD` hyper-parameters (dampening 0, no Nesterov); weight decay is coupled (added
/// to the gradient).
#[derive(Clone, Copy, Debug, Default, PartialEq, Serialize, Deserialize)]
pub struct SgdConfig {
    pub momentum: f64,
    pub weight_decay: f64,
}

/// `bitsandbytes.optim.AdamW8bit`: AdamW with blockwise 8-bit m and v for parameters of at least
/// `min_8bit_size` elements (f32 state below), updated as bitsandbytes' CPU kernels do.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
pub struct AdamW8bitConfig {
    pub adam: AdamWConfig,
    pub min_8bit_size: usize,
}

impl Default for AdamW8bitConfig {
    fn default() -> AdamW8bitConfig {
        AdamW8bitConfig {
            adam: AdamWConfig::default(),
            min_8bit_size: 4096,
        }
    }
}

/// An update rule and its hyper-parameters.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "rule", rename_all = "lowercase")]
pub enum Rule {
    AdamW(AdamWConfig),
    Sgd(SgdConfig),
    AdamW8bit(AdamW8bitConfig),
}

/// The f32 scalars of one step.
#[derive(Clone, Copy, Debug)]
pub(crate) enum StepScalars {
    AdamW(TorchAdamW),
    Sgd(TorchSgd),
    AdamW8bit { q8: BnbAdam, f32: BnbAdam },
}

impl Rule {
    pub fn name(&self) -> &'static str {
        match self {
            Rule::AdamW(_) => "adamw",
            Rule::Sgd(_) => "sgd",
            Rule::AdamW8bit(_) => "adamw8bit",
        }
    }

    /// Rejects hyper-parameters torch / bitsandbytes would reject (or that make no sense).
    pub fn validate(&self) -> Result<()> {
        let check = |name: &str, v: f64, ok: bool| {
            if v.is_finite() && ok {
                Ok(())
            } else {
                Err(Error::InvalidArgument(format!(
                    "{} {name} = {v} is out of range",
                    self.name()
                )))
            }
        };
        let adam = |c: &AdamWConfig| -> Result<()> {
            check("beta1", c.beta1, (0.0..1.0).contains(&c.beta1))?;
            check("beta2", c.beta2, (0.0..1.0).contains(&c.beta2))?;
            check("eps", c.eps, c.eps >= 0.0)?;
            check("weight_decay", c.weight_decay, c.weight_decay >= 0.0)
        };
        match self {
            Rule::AdamW(c) => adam(c),
            Rule::AdamW8bit(c) => adam(&c.adam),
            Rule::Sgd(c) => {
                check("momentum", c.momentum, c.momentum >= 0.0)?;
                check("weight_decay", c.weight_decay, c.weight_decay >= 0.0)
            }
        }
    }

    /// State bytes per element, to size chunks (pages) near a byte target.
    pub(crate) fn bytes_per_element(&self) -> usize {
        match self {
            Rule::AdamW(_) => 8,
            Rule::Sgd(_) => 4,
            Rule::AdamW8bit(_) => 2,
        }
    }

    /// The slots of a chunk of `chunk_len` elements of a parameter of `param_len` elements,
    /// named as torch / bitsandbytes name the state (f32 slots first).
    pub fn slots(&self, param_len: usize, chunk_len: usize) -> Vec<Slot> {
        let f32_slot = |name, len| Slot {
            name,
            ty: SlotType::F32,
            len,
        };
        match self {
            Rule::AdamW(_) => vec![
                f32_slot("exp_avg", chunk_len),
                f32_slot("exp_avg_sq", chunk_len),
            ],
            Rule::Sgd(c) if c.momentum != 0.0 => vec![f32_slot("momentum_buffer", chunk_len)],
            Rule::Sgd(_) => vec![],
            Rule::AdamW8bit(c) if param_len < c.min_8bit_size => {
                vec![f32_slot("state1", chunk_len), f32_slot("state2", chunk_len)]
            }
            Rule::AdamW8bit(_) => {
                let blocks = chunk_len.div_ceil(BLOCK_8BIT);
                let u8_slot = |name| Slot {
                    name,
                    ty: SlotType::U8,
                    len: chunk_len,
                };
                vec![
                    f32_slot("absmax1", blocks),
                    f32_slot("absmax2", blocks),
                    u8_slot("state1"),
                    u8_slot("state2"),
                ]
            }
        }
    }

    /// The scalars of step `step` (1-based: the step being taken) at learning rate `lr`.
    pub(crate) fn scalars(&self, step: u64, lr: f64) -> StepScalars {
        let t = step as f64;
        match *self {
            Rule::AdamW(c) => {
                // torch: bias corrections from Python floats, `** 0.5`, scalars rounded to f32.
                let bc1 = 1.0 - c.beta1.powf(t);
                let bc2 = 1.0 - c.beta2.powf(t);
                let step_size = lr / bc1;
                StepScalars::AdamW(TorchAdamW {
                    decay: decay(lr, c.weight_decay),
                    lerp_weight: (1.0 - c.beta1) as f32,
                    beta2: c.beta2 as f32,
                    one_minus_beta2: (1.0 - c.beta2) as f32,
                    bc2_sqrt: bc2.powf(0.5) as f32,
                    eps: c.eps as f32,
                    neg_step: (-step_size) as f32,
                })
            }
            Rule::Sgd(c) => StepScalars::Sgd(TorchSgd {
                weight_decay: c.weight_decay as f32,
                momentum: c.momentum as f32,
                neg_lr: (-lr) as f32,
                first: step == 1,
            }),
            Rule::AdamW8bit(c) => {
                let a = c.adam;
                // bitsandbytes: correction1 = 1 - beta1**step, correction2 = math.sqrt(...).
                let c1 = 1.0 - a.beta1.powf(t);
                let c2 = (1.0 - a.beta2.powf(t)).sqrt();
                let common = BnbAdam {
                    beta1: a.beta1 as f32,
                    one_minus_beta1: (1.0 - a.beta1) as f32,
                    beta2: a.beta2 as f32,
                    one_minus_beta2: (1.0 - a.beta2) as f32,
                    decay: if a.weight_decay > 0.0 {
                        (1.0 - lr * a.weight_decay) as f32
                    } else {
                        1.0
                    },
                    c2: c2 as f32,
                    eps: a.eps as f32,
                    step: (-lr / c1) as f32,
                };
                StepScalars::AdamW8bit {
                    q8: common,
                    f32: BnbAdam {
                        eps: (a.eps * c2) as f32,
                        step: (-lr * c2 / c1) as f32,
                        ..common
                    },
                }
            }
        }
    }
}

/// torch's decoupled decay factor: `1 - lr * wd`, skipped (1.0) when wd is 0.
fn decay(lr: f64, weight_decay: f64) -> f32 {
    if weight_decay != 0.0 {
        (1.0 - lr * weight_decay) as f32
    } else {
        1.0
    }
}

/// f32 scratch for dequantized 8-bit state, one chunk long.
#[derive(Default)]
pub(crate) struct Scratch {
    m: Vec<f32>,
    v: Vec<f32>,
}

/// One step of a rule: its scalars and the kernel level to run at.
pub(crate) struct Step<'a> {
    pub rule: &'a Rule,
    pub scalars: StepScalars,
    pub level: SimdLevel,
}

impl Step<'_> {
    /// Updates one chunk: `p` and `g` are the chunk's elements, `record` its state;
    /// `param_len` is the whole parameter's size (it decides 8-bit or f32 state).
    pub(crate) fn update_chunk(
        &self,
        param_len: usize,
        record: &mut [u8],
        p: &mut [f32],
        g: &[f32],
        scratch: &mut Scratch,
    ) -> Result<()> {
        let (n, level) = (p.len(), self.level);
        match (self.rule, &self.scalars) {
            (Rule::AdamW(_), StepScalars::AdamW(s)) => {
                let (m, v) = f32_pair_mut(record, n)?;
                kernels::torch_adamw(level, s, p, g, m, v);
            }
            (Rule::Sgd(c), StepScalars::Sgd(s)) => {
                let buf = if c.momentum != 0.0 {
                    if record.len() < 4 * n {
                        return Err(record_too_small(record.len(), 4 * n));
                    }
                    Some(bytes_as_f32_mut(&mut record[..4 * n])?)
                } else {
                    None
                };
                kernels::torch_sgd(level, s, p, g, buf);
            }
            (Rule::AdamW8bit(c), StepScalars::AdamW8bit { q8, f32 }) => {
                if param_len < c.min_8bit_size {
                    let (m, v) = f32_pair_mut(record, n)?;
                    kernels::bnb_adam32(level, f32, p, g, m, v);
                } else {
                    update_chunk_8bit(q8, level, record, p, g, scratch)?;
                }
            }
            _ => {
                return Err(Error::InvalidArgument(format!(
                    "optimizer step scalars do not belong to rule {}",
                    self.rule.name()
                )))
            }
        }
        Ok(())
    }
}

/// bitsandbytes' CPU blockwise step: dequantize m (signed map) and v (unsigned map), update in
/// f32, re-quantize with the CPU kernel's table rounding.
fn update_chunk_8bit(
    s: &BnbAdam,
    level: SimdLevel,
    record: &mut [u8],
    p: &mut [f32],
    g: &[f32],
    scratch: &mut Scratch,
) -> Result<()> {
    let n = p.len();
    let blocks = n.div_ceil(BLOCK_8BIT);
    let need = 8 * blocks + 2 * n;
    if record.len() < need {
        return Err(record_too_small(record.len(), need));
    }
    let (absmax, codes) = record.split_at_mut(8 * blocks);
    let (absmax1, absmax2) = bytes_as_f32_mut(absmax)?.split_at_mut(blocks);
    let (codes1, codes2) = codes[..2 * n].split_at_mut(n);
    scratch.m.resize(n, 0.0);
    scratch.v.resize(n, 0.0);
    let (m, v) = (&mut scratch.m[..n], &mut scratch.v[..n]);
    let (signed, unsigned) = (CodeMap::signed(), CodeMap::unsigned());
    dynamic8::dequantize_blockwise(codes1, absmax1, signed, BLOCK_8BIT, m)?;
    dynamic8::dequantize_blockwise(codes2, absmax2, unsigned, BLOCK_8BIT, v)?;
    kernels::bnb_adam8(level, s, p, g, m, v);
    let table = Rounding::BnbCpuTable;
    dynamic8::quantize_blockwise_with(m, signed, BLOCK_8BIT, table, codes1, absmax1)?;
    dynamic8::quantize_blockwise_with(v, unsigned, BLOCK_8BIT, table, codes2, absmax2)?;
    Ok(())
}
