//! The `*_on` element-wise ops (run over row ranges on the backend's threads) equal their serial
//! versions bit for bit, at 1, 2 and 3 threads, for row counts below the threshold and odd ones
//! above it (uneven ranges).

use super::residual::{residual_forward, residual_forward_on};
use super::rmsnorm::{rmsnorm_backward, rmsnorm_backward_on, rmsnorm_forward, rmsnorm_forward_on};
use super::rope::{rope_backward, rope_backward_on, rope_forward, rope_forward_on, RopeTable};
use super::{zero_on, PARALLEL_MIN};
use crate::backend::cpu::CpuBackend;
use crate::model::config::{RopeConfig, RopeLayout};

const D: usize = 96; // row width: 3 heads of 32

/// Deterministic values in [-2, 2) that differ per `seed`.
fn values(n: usize, seed: usize) -> Vec<f32> {
    (0..n)
        .map(|i| ((i * 7919 + seed * 104_729) % 1000) as f32 / 250.0 - 2.0)
        .collect()
}

/// Row counts: below the threshold, and odd ones above it.
fn row_counts() -> [usize; 4] {
    let above = PARALLEL_MIN / D + 1;
    [1, 7, above | 1, 3 * above + 2]
}

fn backends() -> Vec<CpuBackend> {
    [1, 2, 3].map(|t| CpuBackend::new(t).unwrap()).into()
}

#[test]
fn rmsnorm_threaded_equals_serial() {
    for be in backends() {
        for n in row_counts() {
            let (x, w, dout) = (values(n * D, 1), values(D, 2), values(n * D, 3));
            let (mut o1, mut r1) = (vec![0f32; n * D], vec![0f32; n]);
            let (mut o2, mut r2) = (vec![9f32; n * D], vec![9f32; n]);
            rmsnorm_forward(&mut o1, &mut r1, &x, &w, n, D, 1e-5).unwrap();
            rmsnorm_forward_on(&be, &mut o2, &mut r2, &x, &w, n, D, 1e-5).unwrap();
            assert_eq!((&o1, &r1), (&o2, &r2), "forward, n = {n}");
            let mut dx1 = values(n * D, 4);
            let mut dx2 = dx1.clone();
            rmsnorm_backward(&mut dx1, &dout, &x, &r1, &w, n, D).unwrap();
            rmsnorm_backward_on(&be, &mut dx2, &dout, &x, &r1, &w, n, D).unwrap();
            assert_eq!(dx1, dx2, "backward, n = {n}");
        }
    }
}

#[test]
fn rope_threaded_equals_serial() {
    for layout in [RopeLayout::Norm, RopeLayout::Neox] {
        let cfg = RopeConfig {
            layout,
            n_rot: 24,
            freq_base: 10000.0,
            freq_scale: 1.0,
            has_freq_factors: false,
        };
        for be in backends() {
            for n in row_counts() {
                let table = RopeTable::new(&cfg, None, 3, n + 5).unwrap();
                let positions: Vec<usize> = (0..n).map(|i| 3 + (i * 13) % (n + 5)).collect();
                let x = values(n * D, 5);
                let (mut a, mut b) = (x.clone(), x.clone());
                rope_forward(&mut a, &positions, &table, 3, 32).unwrap();
                rope_forward_on(&be, &mut b, &positions, &table, 3, 32).unwrap();
                assert_eq!(a, b, "forward {layout:?}, n = {n}");
                rope_backward(&mut a, &positions, &table, 3, 32).unwrap();
                rope_backward_on(&be, &mut b, &positions, &table, 3, 32).unwrap();
                assert_eq!(a, b, "backward {layout:?}, n = {n}");
            }
        }
    }
}

#[test]
fn residual_and_zero_threaded_equal_serial() {
    for be in backends() {
        for n in row_counts().map(|r| r * D + 1) {
            let (a, b) = (values(n, 6), values(n, 7));
            let (mut o1, mut o2) = (vec![0f32; n], vec![9f32; n]);
            residual_forward(&mut o1, &a, &b).unwrap();
            residual_forward_on(&be, &mut o2, &a, &b).unwrap();
            assert_eq!(o1, o2, "residual, n = {n}");
            zero_on(&be, &mut o2).unwrap();
            assert!(o2.iter().all(|&v| v.to_bits() == 0), "zero, n = {n}");
        }
    }
}

#[test]
fn threaded_ops_reject_wrong_lengths() {
    let be = CpuBackend::new(2).unwrap();
    let n = 3 * PARALLEL_MIN / D;
    let x = values(n * D, 1);
    let mut out = vec![0f32; n * D];
    let mut rstd = vec![0f32; n - 1];
    let w = values(D, 2);
    assert!(rmsnorm_forward_on(&be, &mut out, &mut rstd, &x, &w, n, D, 1e-5).is_err());
    assert!(residual_forward_on(&be, &mut out, &x[1..], &x).is_err());
    let cfg = RopeConfig {
        layout: RopeLayout::Neox,
        n_rot: 32,
        freq_base: 10000.0,
        freq_scale: 1.0,
        has_freq_factors: false,
    };
    let table = RopeTable::new(&cfg, None, 0, n).unwrap();
    let mut positions: Vec<usize> = (0..n).collect();
    positions[n - 1] = n; // outside the table
    assert!(rope_forward_on(&be, &mut out, &positions, &table, 3, 32).is_err());
}
