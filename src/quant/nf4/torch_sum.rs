//! The mean of an f32 slice summed in exactly the order torch's CPU `sum` uses, so the NF4
//! double-quantization offset (`absmax.mean()` in bitsandbytes) comes out bit-identical.
//!
//! torch (`aten/src/ATen/native/cpu/SumKernel.cpp`, `cascade_sum`) sums a contiguous f32 tensor
//! in 8-lane vectors (the sum kernel is not built for AVX-512, so 8 lanes on every x86 machine),
//! four vectors side by side, with a 4-level cascade of partial sums; the leftover scalars are
//! summed first, then the 8 lanes are added to them in order. `mean` is that sum divided by n in
//! f32. Tensors shorter than 8 use the same cascade on scalars.
//!
//! Verified bit-exact against torch 2.15 with one thread (tests/nf4_bitsandbytes.rs checks the
//! resulting offsets). With several threads torch splits tensors of more than 32 768 elements
//! into one chunk per thread and adds the chunk sums, so its result then depends on its thread
//! count (and differs from ours by an ulp or so); double-quant indices are unaffected except in
//! rare ties.

use std::ops::AddAssign;

const LANES: usize = 8;
const ILP: usize = 4;
const LEVELS: usize = 4;

/// `torch.tensor(x).mean()` (f32, one thread). NaN for an empty slice, as torch.
pub fn torch_mean_f32(x: &[f32]) -> f32 {
    torch_sum_f32(x) / x.len() as f32
}

/// `torch.tensor(x).sum()` (f32, one thread).
pub fn torch_sum_f32(x: &[f32]) -> f32 {
    if x.len() < LANES {
        return 0.0 + row_sum(x);
    }
    let vectors: Vec<Lanes> = x
        .chunks_exact(LANES)
        .map(|c| {
            let mut l = [0.0f32; LANES];
            l.copy_from_slice(c);
            Lanes(l)
        })
        .collect();
    let lanes = row_sum(&vectors);
    let mut total = 0.0f32;
    for &v in x.chunks_exact(LANES).remainder() {
        total += v;
    }
    for v in lanes.0 {
        total += v;
    }
    0.0 + total
}

#[derive(Clone, Copy, Default)]
struct Lanes([f32; LANES]);

impl AddAssign for Lanes {
    fn add_assign(&mut self, rhs: Lanes) {
        for (a, b) in self.0.iter_mut().zip(rhs.0) {
            *a += b;
        }
    }
}

/// torch's `row_sum`: the items viewed as rows of 4, summed column-wise by `multi_row_sum`,
/// the leftover items added to column 0, then columns 1..4 added to column 0.
fn row_sum<T: Copy + Default + AddAssign>(items: &[T]) -> T {
    let rows = items.len() / ILP;
    let mut partial = multi_row_sum(&items[..rows * ILP]);
    for &v in &items[rows * ILP..] {
        partial[0] += v;
    }
    let mut total = partial[0];
    for &p in &partial[1..] {
        total += p;
    }
    total
}

/// torch's `multi_row_sum` for 4 columns: rows are added into level 0; every `2^p` rows level j
/// is flushed into level j+1 (cascading while the row count is a multiple of the next level's
/// span); at the end all levels are added into level 0.
fn multi_row_sum<T: Copy + Default + AddAssign>(rows: &[T]) -> [T; ILP] {
    let size = rows.len() / ILP;
    let level_power = (ceil_log2(size) / LEVELS as u32).max(4);
    let level_step = 1usize << level_power;
    let level_mask = level_step - 1;
    let mut acc = [[T::default(); ILP]; LEVELS];
    let row = |i: usize| &rows[i * ILP..(i + 1) * ILP];

    let mut i = 0;
    while i + level_step <= size {
        for _ in 0..level_step {
            for (a, &v) in acc[0].iter_mut().zip(row(i)) {
                *a += v;
            }
            i += 1;
        }
        for j in 1..LEVELS {
            let (lower, upper) = acc.split_at_mut(j);
            for (hi, lo) in upper[0].iter_mut().zip(lower[j - 1].iter_mut()) {
                *hi += *lo;
                *lo = T::default();
            }
            if i & (level_mask << (j as u32 * level_power)) != 0 {
                break;
            }
        }
    }
    for i in i..size {
        for (a, &v) in acc[0].iter_mut().zip(row(i)) {
            *a += v;
        }
    }
    let (first, rest) = acc.split_at_mut(1);
    for level in rest.iter() {
        for (a, &v) in first[0].iter_mut().zip(level) {
            *a += v;
        }
    }
    acc[0]
}

/// torch's `utils::CeilLog2`: 1 for x <= 2, else the bit width of x - 1.
fn ceil_log2(x: usize) -> u32 {
    if x <= 2 {
        1
    } else {
        usize::BITS - (x - 1).leading_zeros()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_sums_are_exact_and_cascade_differs_from_naive_order() {
        assert_eq!(torch_sum_f32(&[]), 0.0);
        assert!(torch_mean_f32(&[]).is_nan());
        assert_eq!(torch_sum_f32(&[1.0, 2.0, 3.0]), 6.0);
        assert_eq!(torch_mean_f32(&[1.0; 1000]), 1.0);
        // 2^24 + 1 + 1 ... : a naive running sum loses every +1, the cascade keeps most of them.
        let mut x = vec![1.0f32; 4096];
        x[0] = 16_777_216.0;
        let naive = x.iter().fold(0.0f32, |a, &b| a + b);
        assert_eq!(naive, 16_777_216.0);
        assert!(torch_sum_f32(&x) > naive);
    }

    #[test]
    fn ceil_log2_matches_torch() {
        let expect = [
            (0, 1),
            (1, 1),
            (2, 1),
            (3, 2),
            (4, 2),
            (5, 3),
            (1024, 10),
            (1025, 11),
        ];
        for (x, l) in expect {
            assert_eq!(ceil_log2(x), l, "x={x}");
        }
    }
}
