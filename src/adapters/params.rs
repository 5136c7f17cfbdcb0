//! The parameter registry: every trainable tensor of an adapter as a named flat f32 buffer with a
//! gradient buffer of the same size, in a fixed order (the order they were registered), so the
//! optimizer can walk them without knowing the method. Backward passes add into the gradients;
//! `zero_grad` is the one place they are cleared.

/// One trainable tensor.
#[derive(Clone, Debug, PartialEq)]
pub struct Param {
    name: String,
    shape: Vec<usize>,
    data: Vec<f32>,
    grad: Vec<f32>,
}

impl Param {
    /// Identifies the tensor; for PEFT methods it is the key in `adapter_model.safetensors`. The
    /// data may be in the model's (GGUF) row order rather than the file's (see each method).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Row-major shape as the PEFT file stores it.
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn len(&self) -> usize {
        self.data.len()
    }

    pub fn is_empty(&self) -> bool {
        self.data.is_empty()
    }

    pub fn data(&self) -> &[f32] {
        &self.data
    }

    pub fn data_mut(&mut self) -> &mut [f32] {
        &mut self.data
    }

    pub fn grad(&self) -> &[f32] {
        &self.grad
    }

    pub fn grad_mut(&mut self) -> &mut [f32] {
        &mut self.grad
    }

    /// Both buffers at once (what an optimizer step needs).
    pub fn data_and_grad_mut(&mut self) -> (&mut [f32], &mut [f32]) {
        (&mut self.data, &mut self.grad)
    }
}

/// The ordered set of an adapter's parameters.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct ParamSet {
    params: Vec<Param>,
}

impl ParamSet {
    pub fn new() -> ParamSet {
        ParamSet::default()
    }

    /// Registers a tensor; returns its index. `data.len()` must equal the product of `shape`
    /// (callers build both from the same sizes).
    pub(crate) fn push(&mut self, name: String, shape: Vec<usize>, data: Vec<f32>) -> usize {
        debug_assert_eq!(shape.iter().product::<usize>(), data.len(), "{name}");
        let grad = vec![0.0; data.len()];
        self.params.push(Param {
            name,
            shape,
            data,
            grad,
        });
        self.params.len() - 1
    }

    pub fn len(&self) -> usize {
        self.params.len()
    }

    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    pub fn get(&self, i: usize) -> &Param {
        &self.params[i]
    }

    pub fn get_mut(&mut self, i: usize) -> &mut Param {
        &mut self.params[i]
    }

    pub fn iter(&self) -> std::slice::Iter<'_, Param> {
        self.params.iter()
    }

    pub fn iter_mut(&mut self) -> std::slice::IterMut<'_, Param> {
        self.params.iter_mut()
    }

    pub fn position(&self, name: &str) -> Option<usize> {
        self.params.iter().position(|p| p.name == name)
    }

    /// Total number of trainable values.
    pub fn n_values(&self) -> usize {
        self.params.iter().map(Param::len).sum()
    }

    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.grad.fill(0.0);
        }
    }

    /// `(name, length)` of every parameter in order (what `optim::ParamSet::from_specs` takes).
    pub fn specs(&self) -> impl Iterator<Item = (&str, usize)> + '_ {
        self.params.iter().map(|p| (p.name.as_str(), p.len()))
    }

    /// Every gradient, in order, mutable (gradient clipping, scaling).
    pub fn grads_mut(&mut self) -> Vec<&mut [f32]> {
        self.params.iter_mut().map(|p| &mut p.grad[..]).collect()
    }

    /// Every parameter mutable and every gradient readable, in order: the arguments of an
    /// optimizer step (`optim::Optimizer::step(&mut values, &grads, lr)`).
    pub fn values_and_grads(&mut self) -> (Vec<&mut [f32]>, Vec<&[f32]>) {
        self.params
            .iter_mut()
            .map(|p| (&mut p.data[..], &p.grad[..]))
            .unzip()
    }

    /// Two distinct parameters mutably at once (`i != j`).
    pub(crate) fn pair_mut(&mut self, i: usize, j: usize) -> (&mut Param, &mut Param) {
        assert_ne!(i, j, "pair_mut of one parameter");
        if i < j {
            let (lo, hi) = self.params.split_at_mut(j);
            (&mut lo[i], &mut hi[0])
        } else {
            let (lo, hi) = self.params.split_at_mut(i);
            (&mut hi[0], &mut lo[j])
        }
    }
}

impl<'a> IntoIterator for &'a ParamSet {
    type Item = &'a Param;
    type IntoIter = std::slice::Iter<'a, Param>;
    fn into_iter(self) -> Self::IntoIter {
        self.params.iter()
    }
}
