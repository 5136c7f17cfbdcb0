//! Learning-rate schedules as transformers defines them (`get_constant_schedule_with_warmup`,
//! `get_linear_schedule_with_warmup`, `get_cosine_schedule_with_warmup`), in f64 like Python.
//!
//! transformers wraps each in `LambdaLR`: the learning rate of optimizer step `t` (0-based, the
//! number of steps already taken) is `base_lr * factor(t)`. So the first step runs at
//! `factor(0)`, which is 0 with warmup.

use crate::error::{Error, Result};
use std::str::FromStr;

/// Which schedule (`--lr-schedule`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ScheduleKind {
    Constant,
    Linear,
    Cosine,
}

impl FromStr for ScheduleKind {
    type Err = Error;

    fn from_str(s: &str) -> Result<ScheduleKind> {
        match s {
            "constant" => Ok(ScheduleKind::Constant),
            "linear" => Ok(ScheduleKind::Linear),
            "cosine" => Ok(ScheduleKind::Cosine),
            _ => Err(Error::InvalidArgument(format!(
                "learning-rate schedule {s:?}: expected constant, linear or cosine"
            ))),
        }
    }
}

/// A schedule: kind, warmup steps, total training steps (ignored by `Constant`) and, for
/// cosine, the number of cycles (transformers' default 0.5: one half-cosine down to 0).
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct Schedule {
    pub kind: ScheduleKind,
    pub base_lr: f64,
    pub warmup_steps: u64,
    pub total_steps: u64,
    pub num_cycles: f64,
}

impl Schedule {
    pub fn new(kind: ScheduleKind, base_lr: f64, warmup_steps: u64, total_steps: u64) -> Schedule {
        Schedule {
            kind,
            base_lr,
            warmup_steps,
            total_steps,
            num_cycles: 0.5,
        }
    }

    /// The multiplier of `base_lr` after `step` optimizer steps (transformers' `lr_lambda`).
    pub fn factor(&self, step: u64) -> f64 {
        let (step, warmup, total) = (
            step as i64,
            self.warmup_steps as i64,
            self.total_steps as i64,
        );
        if step < warmup {
            // float(step) / float(max(1, warmup)) (max(1.0, warmup) for constant: same value)
            return step as f64 / warmup.max(1) as f64;
        }
        match self.kind {
            ScheduleKind::Constant => 1.0,
            ScheduleKind::Linear => {
                // max(0.0, float(total - step) / float(max(1, total - warmup)))
                let f = (total - step) as f64 / (total - warmup).max(1) as f64;
                if f > 0.0 {
                    f
                } else {
                    0.0
                }
            }
            ScheduleKind::Cosine => {
                let progress = (step - warmup) as f64 / (total - warmup).max(1) as f64;
                let f =
                    0.5 * (1.0 + (std::f64::consts::PI * self.num_cycles * 2.0 * progress).cos());
                // transformers then applies `f * (1 - min_lr_rate) + min_lr_rate` with rate 0
                // (identity but for -0.0) and max(0, f).
                if f > 0.0 {
                    f
                } else {
                    0.0
                }
            }
        }
    }

    /// The learning rate of the optimizer step taken after `step` steps.
    pub fn lr(&self, step: u64) -> f64 {
        self.base_lr * self.factor(step)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn warmup_then_shape() {
        let lin = Schedule::new(ScheduleKind::Linear, 1.0, 4, 8);
        let got: Vec<f64> = (0..10).map(|t| lin.lr(t)).collect();
        assert_eq!(got, [0.0, 0.25, 0.5, 0.75, 1.0, 0.75, 0.5, 0.25, 0.0, 0.0]);
        let cos = Schedule::new(ScheduleKind::Cosine, 2.0, 0, 4);
        assert_eq!(cos.lr(0), 2.0);
        assert!((cos.lr(2) - 1.0).abs() < 1e-15);
        assert_eq!(cos.lr(4), 0.0);
        let c = Schedule::new(ScheduleKind::Constant, 3.0, 0, 0);
        assert_eq!(c.lr(0), 3.0);
        assert!("cosine".parse::<ScheduleKind>().is_ok());
        assert!("step".parse::<ScheduleKind>().is_err());
    }
}
