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

#[cfg(test)]
mod threaded_tests;

/// Label value that marks a position without a target (Hugging Face's `ignore_index`).
pub const IGNORE_INDEX: i32 = -100;

use crate::backend::Backend;
use crate::error::{Error, Result};
use std::sync::Mutex;

/// Elements below which the threaded element-wise ops run on the caller (the split would cost
/// more than it saves).
pub(crate) const PARALLEL_MIN: usize = 1 << 14;

/// Rows per task when `rows` rows of `row_len` values are split over the backend's threads: all
/// of them below `PARALLEL_MIN` values, else an even split.
pub(crate) fn rows_per_task(backend: &dyn Backend, rows: usize, row_len: usize) -> usize {
    if rows.saturating_mul(row_len) < PARALLEL_MIN {
        rows.max(1)
    } else {
        rows.div_ceil(backend.threads().max(1)).max(1)
    }
}

/// Runs `f(i, part)` for every part on the backend's threads (each part is a tuple of disjoint
/// mutable slices; one part runs on the caller). `what` names the op in the error a panicked
/// worker leaves.
pub(crate) fn for_each_part<T: Send>(
    backend: &dyn Backend,
    what: &str,
    parts: Vec<T>,
    f: &(dyn Fn(usize, &mut T) -> Result<()> + Sync),
) -> Result<()> {
    if parts.len() <= 1 {
        return parts.into_iter().try_for_each(|mut p| f(0, &mut p));
    }
    let cells: Vec<Mutex<T>> = parts.into_iter().map(Mutex::new).collect();
    backend.parallel_for(cells.len(), &|i| {
        let mut p = cells[i]
            .lock()
            .map_err(|_| Error::InvalidArgument(format!("{what}: a worker panicked")))?;
        f(i, &mut p)
    })
}

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

/// `buf[..] = 0` on the backend's threads (gradient buffers before backward adds into them).
pub fn zero_on(backend: &dyn Backend, buf: &mut [f32]) -> Result<()> {
    let per = rows_per_task(backend, buf.len(), 1);
    let parts: Vec<&mut [f32]> = buf.chunks_mut(per).collect();
    for_each_part(backend, "zero", parts, &|_, b| {
        b.fill(0.0);
        Ok(())
    })
}
