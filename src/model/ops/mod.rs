//! The model's layers as forward/backward pairs, in the style of llm.c.
//!
//! One argument order everywhere: outputs, saved activations, inputs, weights, sizes. Every buffer
//! carries its shape in a comment (`[n, d]` = `n` rows of `d` contiguous f32). Backward functions
//! ADD into their gradient buffers, so the caller zeroes gradients in one place. Base weights are
//! frozen: no op produces weight gradients, only gradients of its inputs. The exception to
//! "outputs first, separate from inputs" is RoPE, a rotation applied in place (forward and
//! backward), which needs no saved activation.
//!
//! Matrix products go through `crate::backend::Backend`; these files hold the element-wise and
//! attention arithmetic.

pub mod attention;
pub mod attention_gemm;
pub mod cross_entropy;
pub mod embedding;
pub mod residual;
pub mod rmsnorm;
pub mod rope;
pub mod swiglu;
mod vexp;

/// Label value that marks a position without a target (Hugging Face's `ignore_index`).
pub const IGNORE_INDEX: i32 = -100;

use crate::error::{Error, Result};

/// Checks that a buffer has exactly the length its shape needs.
pub(crate) fn check_len(what: &str, buf_len: usize, shape: &[usize]) -> Result<()> {
    let need = shape.iter().try_fold(1usize, |a, &b| a.checked_mul(b));
    if need != Some(buf_len) {
        return Err(Error::InvalidArgument(format!(
            "{what}: buffer holds {buf_len} values, shape {shape:?} needs {}",
            need.map_or("more than usize".to_string(), |n| n.to_string())
        )));
    }
    Ok(())
}
