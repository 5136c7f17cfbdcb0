//! The data pipeline's own random numbers: PCG32 (O'Neill's PCG-XSH-RR 64/32, as in the
//! reference `pcg_basic.c`), so shuffles are the same on every platform and every version of
//! the crate, and a run can be resumed from `(seed, epoch, index)` alone.
//!
//! Streams: `Pcg32::new(seed, stream)` seeds like `pcg32_srandom_r(seed, stream)`. Epoch `e`'s
//! order uses stream `e`; the validation split and the shuffle before packing use the fixed
//! streams below, so none of them depends on another.

use crate::error::{Error, Result};

/// Stream of the validation split (far above any epoch number).
pub const VAL_SPLIT_STREAM: u64 = 1 << 62;
/// Stream of the shuffle that precedes packing.
pub const PACK_STREAM: u64 = (1 << 62) + 1;

const MULTIPLIER: u64 = 6_364_136_223_846_793_005;

/// PCG-XSH-RR with 64-bit state and 32-bit output.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pcg32 {
    state: u64,
    inc: u64,
}

impl Pcg32 {
    /// `pcg32_srandom_r(initstate = seed, initseq = stream)`.
    pub fn new(seed: u64, stream: u64) -> Pcg32 {
        let mut rng = Pcg32 {
            state: 0,
            inc: (stream << 1) | 1,
        };
        rng.next_u32();
        rng.state = rng.state.wrapping_add(seed);
        rng.next_u32();
        rng
    }

    /// `pcg32_random_r`.
    pub fn next_u32(&mut self) -> u32 {
        let old = self.state;
        self.state = old.wrapping_mul(MULTIPLIER).wrapping_add(self.inc);
        let xorshifted = (((old >> 18) ^ old) >> 27) as u32;
        let rot = (old >> 59) as u32;
        xorshifted.rotate_right(rot)
    }

    /// `pcg32_boundedrand_r`: uniform in `0..bound` without modulo bias (rejection below
    /// `2^32 mod bound`). `bound` must be at least 1.
    pub fn below(&mut self, bound: u32) -> u32 {
        debug_assert!(bound > 0);
        let threshold = bound.wrapping_neg() % bound;
        loop {
            let r = self.next_u32();
            if r >= threshold {
                return r % bound;
            }
        }
    }

    /// Fisher–Yates from the back: for `i` from `n-1` down to 1, swap `i` with `below(i+1)`.
    pub fn shuffle<T>(&mut self, items: &mut [T]) {
        for i in (1..items.len()).rev() {
            // `permutation` checks lengths fit in u32; slices this large cannot reach here
            // through the pipeline.
            let j = self.below((i + 1) as u32) as usize;
            items.swap(i, j);
        }
    }
}

/// The order `0..n` shuffled with `Pcg32::new(seed, stream)`.
pub fn permutation(n: usize, seed: u64, stream: u64) -> Result<Vec<u32>> {
    let n32 = u32::try_from(n).map_err(|_| {
        Error::InvalidArgument(format!(
            "{n} sequences is more than the shuffle supports (2^32 - 1)"
        ))
    })?;
    let mut order: Vec<u32> = (0..n32).collect();
    Pcg32::new(seed, stream).shuffle(&mut order);
    Ok(order)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The first outputs of `pcg32-demo` from the PCG reference (`pcg32_srandom_r(&rng, 42u, 54u)`),
    /// as printed on pcg-random.org and in pcg-c-basic's expected output.
    #[test]
    fn matches_the_reference_demo() {
        let mut rng = Pcg32::new(42, 54);
        let got: Vec<u32> = (0..6).map(|_| rng.next_u32()).collect();
        assert_eq!(
            got,
            [0xa15c02b7, 0x7b47f409, 0xba1d3330, 0x83d2f293, 0xbfa4784b, 0xcbed606e]
        );
    }

    #[test]
    fn bounded_values_stay_in_range_and_cover_it() {
        let mut rng = Pcg32::new(7, 3);
        for bound in [1u32, 2, 3, 7, 1000, u32::MAX] {
            let mut seen_max = 0;
            for _ in 0..2000 {
                let v = rng.below(bound);
                assert!(v < bound);
                seen_max = seen_max.max(v);
            }
            if bound <= 1000 {
                assert_eq!(seen_max, bound - 1, "bound {bound}");
            }
        }
    }

    #[test]
    fn permutations_are_permutations_and_depend_on_seed_and_stream() {
        let a = permutation(100, 1, 0).unwrap();
        let mut sorted = a.clone();
        sorted.sort_unstable();
        assert_eq!(sorted, (0..100).collect::<Vec<u32>>());
        assert_eq!(a, permutation(100, 1, 0).unwrap());
        assert_ne!(a, permutation(100, 2, 0).unwrap());
        assert_ne!(a, permutation(100, 1, 1).unwrap());
        assert!(permutation(0, 1, 0).unwrap().is_empty());
        assert_eq!(permutation(1, 1, 0).unwrap(), [0]);
    }
}
