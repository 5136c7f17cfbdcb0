//! Spare f32 buffers kept between passes, so a training step reuses the pages of the last one
//! instead of faulting in (and zeroing) a fresh ~quarter gigabyte of activations every step.
//!
//! A pass takes its large buffers with `take` and gives them back when it ends. Taken memory is
//! stale: whoever takes a buffer either overwrites every element before reading it or zeroes it.
//! Debug builds fill reused buffers with NaN, so a read before a write shows in tests
//! (`tests/model_buffers.rs`). Misses allocate (zeroed) and drop the largest spare too small for the request, so a run whose
//! shapes vary keeps at most one step's buffers, grown to the largest shape seen. `release`
//! frees everything (before the trainer writes a file, so the memory planner's Save phase never
//! coexists with retained activations).

use std::sync::{Mutex, MutexGuard};

/// A set of spare buffers (see the module doc).
#[derive(Debug, Default)]
pub struct BufferPool {
    spare: Mutex<Vec<Vec<f32>>>,
}

impl BufferPool {
    pub fn new() -> BufferPool {
        BufferPool::default()
    }

    fn spare(&self) -> MutexGuard<'_, Vec<Vec<f32>>> {
        // A panic while the lock was held cannot leave the list inconsistent (push/remove only).
        self.spare.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The spare with the smallest capacity of at least `len`, if any.
    fn take_fit(spare: &mut Vec<Vec<f32>>, len: usize) -> Option<Vec<f32>> {
        let best = spare
            .iter()
            .enumerate()
            .filter(|(_, v)| v.capacity() >= len)
            .min_by_key(|(_, v)| v.capacity())
            .map(|(i, _)| i)?;
        let mut v = spare.swap_remove(best);
        // Within the capacity: the tail's pages were touched before, no allocation happens.
        v.resize(len, 0.0);
        if cfg!(debug_assertions) {
            // Tests run with debug assertions: a read before a write then shows as NaN.
            v.fill(f32::NAN);
        }
        Some(v)
    }

    /// A buffer of `len` values, reused if a spare fits (contents stale) or newly allocated
    /// (zeroed).
    pub fn take(&self, len: usize) -> Vec<f32> {
        let mut spare = self.spare();
        if let Some(v) = Self::take_fit(&mut spare, len) {
            return v;
        }
        // A miss: the largest smaller spare most likely served this request in a smaller pass.
        if let Some(i) = spare
            .iter()
            .enumerate()
            .max_by_key(|(_, v)| v.capacity())
            .map(|(i, _)| i)
        {
            spare.swap_remove(i);
        }
        drop(spare);
        vec![0.0; len]
    }

    /// A spare of `len` values (contents stale) if one fits; never allocates.
    pub fn take_existing(&self, len: usize) -> Option<Vec<f32>> {
        Self::take_fit(&mut self.spare(), len)
    }

    /// Keeps `buf` for a later `take` (empty buffers are dropped).
    pub fn give_back(&self, buf: Vec<f32>) {
        if buf.capacity() > 0 {
            self.spare().push(buf);
        }
    }

    /// Frees every spare buffer.
    pub fn release(&self) {
        let freed = std::mem::take(&mut *self.spare());
        drop(freed);
    }

    /// Bytes the spare buffers hold.
    pub fn bytes(&self) -> usize {
        self.spare().iter().map(|v| 4 * v.capacity()).sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reuses_the_best_fit_and_bounds_what_it_keeps() {
        let pool = BufferPool::new();
        let a = pool.take(100);
        assert!(a.iter().all(|&v| v == 0.0));
        let pa = a.as_ptr();
        pool.give_back(a);
        pool.give_back(vec![1.0; 1000]);
        // 90 fits both; the 100-capacity one is the best fit, reused in place.
        let b = pool.take(90);
        assert_eq!((b.len(), b.as_ptr()), (90, pa));
        pool.give_back(b);
        assert_eq!(pool.take_existing(5000), None);
        // A miss drops the largest spare smaller than the request.
        let c = pool.take(5000);
        assert_eq!(pool.bytes(), 400);
        pool.give_back(c);
        pool.release();
        assert_eq!(pool.bytes(), 0);
    }
}
