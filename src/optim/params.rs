//! The trainable parameters an optimizer updates: named flat f32 tensors, registered once, and
//! gradient buffers of the same sizes.
//!
//! Adapters register their tensors (`blk.0.attn_q.lora_a`, ...) in a [`ParamSet`]; the optimizer
//! walks them in registration order. The optimizer never owns parameter or gradient storage: it
//! receives slices at each step, in registration order, and checks their lengths.

use crate::error::{Error, Result};
use std::collections::HashMap;

/// Index of a parameter in its [`ParamSet`] (registration order).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ParamId(pub usize);

/// One registered parameter: a name and a number of f32 elements.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ParamSpec {
    pub name: String,
    pub len: usize,
}

/// The registered parameters, in registration order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ParamSet {
    specs: Vec<ParamSpec>,
    by_name: HashMap<String, ParamId>,
}

impl ParamSet {
    pub fn new() -> ParamSet {
        ParamSet::default()
    }

    /// Registers a parameter of `len` f32 elements. Names are unique and non-empty.
    pub fn register(&mut self, name: &str, len: usize) -> Result<ParamId> {
        if name.is_empty() {
            return Err(Error::InvalidArgument(
                "parameter name is empty".to_string(),
            ));
        }
        if self.by_name.contains_key(name) {
            return Err(Error::InvalidArgument(format!(
                "parameter {name:?} is registered twice"
            )));
        }
        let id = ParamId(self.specs.len());
        self.specs.push(ParamSpec {
            name: name.to_string(),
            len,
        });
        self.by_name.insert(name.to_string(), id);
        Ok(id)
    }

    /// A set from `(name, len)` pairs, in order.
    pub fn from_specs<'a>(specs: impl IntoIterator<Item = (&'a str, usize)>) -> Result<ParamSet> {
        let mut set = ParamSet::new();
        for (name, len) in specs {
            set.register(name, len)?;
        }
        Ok(set)
    }

    pub fn len(&self) -> usize {
        self.specs.len()
    }

    pub fn is_empty(&self) -> bool {
        self.specs.is_empty()
    }

    pub fn get(&self, id: ParamId) -> Option<&ParamSpec> {
        self.specs.get(id.0)
    }

    pub fn id(&self, name: &str) -> Option<ParamId> {
        self.by_name.get(name).copied()
    }

    pub fn iter(&self) -> impl Iterator<Item = (ParamId, &ParamSpec)> {
        self.specs.iter().enumerate().map(|(i, s)| (ParamId(i), s))
    }

    /// Total number of f32 elements over all parameters.
    pub fn total_elements(&self) -> usize {
        self.specs.iter().map(|s| s.len).sum()
    }

    /// Checks that `lens` are exactly the registered sizes, in order; `what` names the buffers
    /// ("parameters", "gradients") in the error, which lists every mismatch.
    pub fn check_lens(&self, what: &str, lens: impl ExactSizeIterator<Item = usize>) -> Result<()> {
        if lens.len() != self.specs.len() {
            return Err(Error::InvalidArgument(format!(
                "{} {what} given for {} registered parameters",
                lens.len(),
                self.specs.len()
            )));
        }
        let bad: Vec<String> = self
            .specs
            .iter()
            .zip(lens)
            .filter(|(s, n)| s.len != *n)
            .map(|(s, n)| format!("{} has {n} elements, registered with {}", s.name, s.len))
            .collect();
        if bad.is_empty() {
            Ok(())
        } else {
            Err(Error::InvalidArgument(format!(
                "{what} do not match the registered parameters: {}",
                bad.join("; ")
            )))
        }
    }
}

/// Gradient buffers for a [`ParamSet`]: one zero-initialised f32 buffer per parameter.
///
/// Backward passes *add* into these buffers (several micro-batches accumulate); [`zero`] is the
/// one place they are cleared, after each optimizer step.
///
/// [`zero`]: GradBuffers::zero
#[derive(Clone, Debug, PartialEq)]
pub struct GradBuffers {
    bufs: Vec<Vec<f32>>,
}

impl GradBuffers {
    pub fn new(params: &ParamSet) -> GradBuffers {
        GradBuffers {
            bufs: params.specs.iter().map(|s| vec![0.0; s.len]).collect(),
        }
    }

    /// Clears every buffer to +0.0.
    pub fn zero(&mut self) {
        for b in &mut self.bufs {
            b.fill(0.0);
        }
    }

    /// Multiplies every gradient by `factor` in f32 (`g.mul_(factor)` in torch), e.g. to turn
    /// a sum over micro-batches into a mean.
    pub fn scale(&mut self, factor: f32) {
        for b in &mut self.bufs {
            for g in b.iter_mut() {
                *g *= factor;
            }
        }
    }

    pub fn get(&self, id: ParamId) -> Option<&[f32]> {
        self.bufs.get(id.0).map(|b| b.as_slice())
    }

    pub fn get_mut(&mut self, id: ParamId) -> Option<&mut [f32]> {
        self.bufs.get_mut(id.0).map(|b| b.as_mut_slice())
    }

    /// The buffers in registration order, as the optimizer takes them.
    pub fn as_slices(&self) -> Vec<&[f32]> {
        self.bufs.iter().map(|b| b.as_slice()).collect()
    }

    pub fn as_mut_slices(&mut self) -> Vec<&mut [f32]> {
        self.bufs.iter_mut().map(|b| b.as_mut_slice()).collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn registration_rejects_duplicates_and_checks_lengths() {
        let mut set = ParamSet::new();
        assert_eq!(set.register("a", 3).unwrap(), ParamId(0));
        assert_eq!(set.register("b", 0).unwrap(), ParamId(1));
        assert!(set.register("a", 5).is_err());
        assert!(set.register("", 5).is_err());
        assert_eq!(set.id("b"), Some(ParamId(1)));
        assert_eq!(set.total_elements(), 3);
        assert!(set.check_lens("grads", [3, 0].into_iter()).is_ok());
        let err = set.check_lens("grads", [3, 2].into_iter()).unwrap_err();
        assert!(err.to_string().contains("b has 2 elements"), "{err}");
        assert!(set.check_lens("grads", [3].into_iter()).is_err());
    }

    #[test]
    fn grad_buffers_zero_and_scale() {
        let set = ParamSet::from_specs([("a", 2), ("b", 1)]).unwrap();
        let mut g = GradBuffers::new(&set);
        g.get_mut(ParamId(0)).unwrap().copy_from_slice(&[1.0, -3.0]);
        g.scale(0.5);
        assert_eq!(g.get(ParamId(0)).unwrap(), &[0.5, -1.5]);
        g.zero();
        assert_eq!(g.as_slices(), vec![&[0.0f32, 0.0][..], &[0.0][..]]);
    }
}
