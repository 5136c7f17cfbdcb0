//! Several adapters on one linear layer, as PEFT runs several active adapters: each adapter wraps
//! the layer the previous ones built, so LoRA deltas add up (`y = W·x + Σᵢ sᵢ·Bᵢ·Aᵢ·x`) and IA3
//! scalings multiply (`y = (Πᵢ lᵢ) ⊙ W·x`, or `W·((Πᵢ lᵢ) ⊙ x)` on a feed-forward input).

use super::{Adapter, FrozenLinear, Site};
use crate::backend::Backend;
use crate::error::Result;
use std::cell::RefCell;

/// `adapters` (first innermost) around `base`, itself a frozen layer for the next adapter.
pub struct Stacked<'a, 'b> {
    adapters: RefCell<&'a mut [&'b mut dyn Adapter]>,
    site: Site,
    base: &'a dyn FrozenLinear,
}

impl<'a, 'b> Stacked<'a, 'b> {
    pub fn new(
        adapters: &'a mut [&'b mut dyn Adapter],
        site: Site,
        base: &'a dyn FrozenLinear,
    ) -> Stacked<'a, 'b> {
        Stacked {
            adapters: RefCell::new(adapters),
            site,
            base,
        }
    }
}

impl FrozenLinear for Stacked<'_, '_> {
    fn n_in(&self) -> usize {
        self.base.n_in()
    }

    fn n_out(&self) -> usize {
        self.base.n_out()
    }

    fn backend(&self) -> &dyn Backend {
        self.base.backend()
    }

    fn forward(&self, x: &[f32], m: usize, y: &mut [f32]) -> Result<()> {
        let mut adapters = self.adapters.borrow_mut();
        match adapters.split_last_mut() {
            None => self.base.forward(x, m, y),
            Some((last, inner)) => {
                let below = Stacked::new(inner, self.site, self.base);
                last.linear_forward(self.site, &below, x, m, y)
            }
        }
    }

    fn backward_input(&self, dy: &[f32], m: usize, dx: &mut [f32]) -> Result<()> {
        // Inference only: the input gradient through a stack is not needed by anything (training
        // trains one adapter), and each adapter's backward wants its own saved input.
        let _ = (dy, m, dx);
        Err(crate::Error::Unsupported(
            "backward through several stacked adapters".into(),
        ))
    }
}
