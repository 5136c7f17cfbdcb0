//! Do the model's layers compute what they should, and do their backward functions give the
//! gradients of their forward functions? Each backward is checked against central finite
//! differences of its forward (loss = Σ r·out with a random `r`); forwards are checked against
//! plain f64 formulas (attention, RoPE in both layouts, cross-entropy).

mod model_support;

use edgetune::model::check::{finite_difference, Tolerance};
use edgetune::model::config::{RopeConfig, RopeLayout};
use edgetune::model::ops::attention::{
    attention_backward, attention_forward, AttnDims, AttnGrads, AttnInputs,
};
use edgetune::model::ops::cross_entropy::{
    cross_entropy_backward, cross_entropy_forward, cross_entropy_forward_backward, LmHead,
};
use edgetune::model::ops::embedding::{embedding_backward, embedding_forward, EmbeddingTable};
use edgetune::model::ops::residual::{residual_backward, residual_forward};
use edgetune::model::ops::rmsnorm::{rmsnorm_backward, rmsnorm_forward};
use edgetune::model::ops::rope::{rope_backward, rope_forward, RopeTable};
use edgetune::model::ops::swiglu::{swiglu_backward, swiglu_forward};
use edgetune::model::ops::IGNORE_INDEX;
use model_support::{f32_bytes, f32_weight, NaiveBackend, TestRng};

/// Gradients from f32 forwards by central differences: truncation and rounding both stay well
/// under these bounds for the step used (FD_EPS) on O(1) inputs.
const GRAD_TOL: Tolerance = Tolerance::new(5e-4, 2e-3);
const FD_EPS: f32 = 1e-2;

/// `Σ r·out` in f64.
fn weighted(out: &[f32], r: &[f32]) -> f64 {
    out.iter().zip(r).map(|(&o, &w)| o as f64 * w as f64).sum()
}

fn check_grad(what: &str, analytic: &[f32], numeric: &[f64]) {
    GRAD_TOL
        .check(what, numeric.iter().copied(), analytic.iter().copied())
        .unwrap_or_else(|e| panic!("{e}"));
}

#[test]
fn rmsnorm_backward_matches_finite_differences() {
    let (n, d, eps) = (3, 7, 1e-5);
    let mut rng = TestRng::new(1);
    let mut x = rng.vec(n * d, 1.0);
    let w = rng.vec(d, 1.5);
    let r = rng.vec(n * d, 1.0);
    let fwd = |x: &[f32]| {
        let (mut out, mut rstd) = (vec![0f32; n * d], vec![0f32; n]);
        rmsnorm_forward(&mut out, &mut rstd, x, &w, n, d, eps).unwrap();
        (out, rstd)
    };
    let (out, rstd) = fwd(&x);
    // Forward against the formula.
    for i in 0..n {
        let ms: f64 = x[i * d..(i + 1) * d]
            .iter()
            .map(|&v| (v as f64).powi(2))
            .sum::<f64>()
            / d as f64;
        let want: Vec<f64> = (0..d)
            .map(|j| x[i * d + j] as f64 / (ms + eps as f64).sqrt() * w[j] as f64)
            .collect();
        Tolerance::new(1e-6, 1e-5)
            .check(
                "rmsnorm forward",
                want,
                out[i * d..(i + 1) * d].iter().copied(),
            )
            .unwrap();
    }
    let mut dx = vec![0.5f32; n * d]; // backward adds: start from a known non-zero value
    rmsnorm_backward(&mut dx, &r, &x, &rstd, &w, n, d).unwrap();
    let dx: Vec<f32> = dx.iter().map(|v| v - 0.5).collect();
    let num = finite_difference(&mut x, FD_EPS, |x| weighted(&fwd(x).0, &r));
    check_grad("rmsnorm dx", &dx, &num);
}

#[test]
fn swiglu_and_residual_backward_match_finite_differences() {
    let n = 11;
    let mut rng = TestRng::new(2);
    let mut gate = rng.vec(n, 3.0);
    let mut up = rng.vec(n, 2.0);
    let r = rng.vec(n, 1.0);
    let fwd = |g: &[f32], u: &[f32]| {
        let mut out = vec![0f32; n];
        swiglu_forward(&mut out, g, u).unwrap();
        out
    };
    let (mut dg, mut du) = (vec![0f32; n], vec![0f32; n]);
    swiglu_backward(&mut dg, &mut du, &r, &gate, &up).unwrap();
    let up2 = up.clone();
    let num_g = finite_difference(&mut gate, FD_EPS, |g| weighted(&fwd(g, &up2), &r));
    let num_u = finite_difference(&mut up, FD_EPS, |u| weighted(&fwd(&gate, u), &r));
    check_grad("swiglu dgate", &dg, &num_g);
    check_grad("swiglu dup", &du, &num_u);

    let mut a = rng.vec(n, 1.0);
    let b = rng.vec(n, 1.0);
    let (mut da, mut db) = (vec![0f32; n], vec![0f32; n]);
    residual_backward(&mut da, &mut db, &r).unwrap();
    let num_a = finite_difference(&mut a, FD_EPS, |a| {
        let mut out = vec![0f32; n];
        residual_forward(&mut out, a, &b).unwrap();
        weighted(&out, &r)
    });
    check_grad("residual da", &da, &num_a);
    check_grad("residual db", &db, &num_a);
}

fn rope_cfg(layout: RopeLayout, n_rot: usize) -> RopeConfig {
    RopeConfig {
        layout,
        n_rot,
        freq_base: 10000.0,
        freq_scale: 0.5,
        has_freq_factors: true,
    }
}

/// Hugging Face's formula in f64: `x·cos + rotate_half(x)·sin` over the first `n_rot` channels,
/// `θ_i = pos · scale / (base^(2i/n_rot) · ff_i)`.
fn rope_reference_neox(x: &[f32], pos: usize, cfg: &RopeConfig, ff: &[f32]) -> Vec<f64> {
    let half = cfg.n_rot / 2;
    let mut out: Vec<f64> = x.iter().map(|&v| v as f64).collect();
    for i in 0..half {
        let inv = cfg.freq_scale as f64
            / ((cfg.freq_base as f64).powf(2.0 * i as f64 / cfg.n_rot as f64) * ff[i] as f64);
        let th = pos as f64 * inv;
        let (a, b) = (x[i] as f64, x[i + half] as f64);
        out[i] = a * th.cos() - b * th.sin();
        out[i + half] = b * th.cos() + a * th.sin();
    }
    out
}

#[test]
fn rope_matches_hf_formula_in_both_layouts_and_the_permutation_links_them() {
    let (n_heads, hd) = (3, 8);
    let mut rng = TestRng::new(3);
    let positions = [7usize, 0, 19, 12];
    let ff: Vec<f32> = (0..hd / 2).map(|i| 1.0 + i as f32 * 0.7).collect();
    let x = rng.vec(positions.len() * n_heads * hd, 1.0);
    // NEOX with partial rotation (n_rot 6 of 8) against the HF formula.
    let neox = rope_cfg(RopeLayout::Neox, 6);
    let table = RopeTable::new(&neox, Some(&ff[..3]), 0, 20).unwrap();
    let mut y = x.clone();
    rope_forward(&mut y, &positions, &table, n_heads, hd).unwrap();
    for (r, &p) in positions.iter().enumerate() {
        for h in 0..n_heads {
            let s = (r * n_heads + h) * hd;
            let mut head = x[s..s + hd].to_vec();
            let want = rope_reference_neox(&head[..hd], p, &neox, &ff);
            Tolerance::new(1e-5, 1e-5)
                .check("rope neox", want, y[s..s + hd].iter().copied())
                .unwrap();
            head.clear();
        }
    }
    // NORM over GGUF-permuted channels equals the permuted NEOX result (FORMATS.md §3.4:
    // GGUF channel 2i + j = HF channel j·hd/2 + i), full rotation.
    let neox_full = rope_cfg(RopeLayout::Neox, hd);
    let norm_full = rope_cfg(RopeLayout::Norm, hd);
    let t_neox = RopeTable::new(&neox_full, Some(&ff), 5, 15).unwrap();
    let t_norm = RopeTable::new(&norm_full, Some(&ff), 5, 15).unwrap();
    let perm = |v: &[f32]| -> Vec<f32> {
        let mut out = vec![0f32; v.len()];
        for (hs, os) in v.chunks_exact(hd).zip(out.chunks_exact_mut(hd)) {
            for i in 0..hd / 2 {
                for j in 0..2 {
                    os[2 * i + j] = hs[j * hd / 2 + i];
                }
            }
        }
        out
    };
    let positions = [5usize, 19, 11, 8];
    let mut a = x.clone();
    rope_forward(&mut a, &positions, &t_neox, n_heads, hd).unwrap();
    let mut b = perm(&x);
    rope_forward(&mut b, &positions, &t_norm, n_heads, hd).unwrap();
    Tolerance::new(0.0, 0.0)
        .check("norm(perm(x)) == perm(neox(x))", perm(&a), b)
        .unwrap();
    // Positions outside the table are an error, not a panic.
    let mut z = x.clone();
    assert!(rope_forward(&mut z, &[4, 5, 6, 7], &t_neox, n_heads, hd).is_err());
}

#[test]
fn rope_backward_matches_finite_differences_and_inverts_forward() {
    let (n_heads, hd) = (2, 6);
    let positions = [3usize, 9, 1];
    let mut rng = TestRng::new(4);
    for layout in [RopeLayout::Norm, RopeLayout::Neox] {
        let cfg = rope_cfg(layout, hd);
        let table = RopeTable::new(&cfg, None, 0, 10).unwrap();
        let mut x = rng.vec(positions.len() * n_heads * hd, 1.0);
        let r = rng.vec(x.len(), 1.0);
        let mut g = r.clone();
        rope_backward(&mut g, &positions, &table, n_heads, hd).unwrap();
        let num = finite_difference(&mut x, FD_EPS, |x| {
            let mut y = x.to_vec();
            rope_forward(&mut y, &positions, &table, n_heads, hd).unwrap();
            weighted(&y, &r)
        });
        check_grad(&format!("rope {layout:?} dx"), &g, &num);
        let mut y = x.clone();
        rope_forward(&mut y, &positions, &table, n_heads, hd).unwrap();
        rope_backward(&mut y, &positions, &table, n_heads, hd).unwrap();
        Tolerance::new(1e-6, 0.0)
            .check("rope inverse", x.iter().copied(), y)
            .unwrap();
    }
}

/// Plain attention in f64 with an explicit mask: keys = prefix rows then sequence rows; query `i`
/// sees prefix rows and sequence rows `<= n_kv - n_q + i`.
fn attention_reference(x: &AttnInputs, d: &AttnDims) -> Vec<f64> {
    let (qd, kvd, hd) = (d.n_head * d.head_dim, d.n_head_kv * d.head_dim, d.head_dim);
    let mut out = vec![0f64; d.n_q * qd];
    for h in 0..d.n_head {
        let g = h / (d.n_head / d.n_head_kv);
        for i in 0..d.n_q {
            let q = &x.q[i * qd + h * hd..][..hd];
            let rows: Vec<(&[f32], &[f32])> = (0..d.n_prefix)
                .map(|j| {
                    (
                        &x.prefix_k[j * kvd + g * hd..][..hd],
                        &x.prefix_v[j * kvd + g * hd..][..hd],
                    )
                })
                .chain((0..=d.n_kv - d.n_q + i).map(|j| {
                    (
                        &x.k[j * kvd + g * hd..][..hd],
                        &x.v[j * kvd + g * hd..][..hd],
                    )
                }))
                .collect();
            let s: Vec<f64> = rows
                .iter()
                .map(|(k, _)| {
                    q.iter()
                        .zip(*k)
                        .map(|(&a, &b)| a as f64 * b as f64)
                        .sum::<f64>()
                        / (hd as f64).sqrt()
                })
                .collect();
            let m = s.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
            let z: f64 = s.iter().map(|v| (v - m).exp()).sum();
            for (sj, (_, v)) in s.iter().zip(&rows) {
                let p = (sj - m).exp() / z;
                for c in 0..hd {
                    out[i * qd + h * hd + c] += p * v[c] as f64;
                }
            }
        }
    }
    out
}

#[test]
fn attention_forward_matches_reference_and_backward_matches_finite_differences() {
    // (n_q, n_kv, n_prefix, n_head, n_head_kv, head_dim): training shape, GQA, MQA, a KV-cache
    // step (n_q < n_kv), and a prefix.
    let cases = [
        (5, 5, 0, 4, 2, 6),
        (4, 4, 0, 3, 1, 5),
        (2, 6, 0, 2, 2, 4),
        (4, 4, 3, 4, 2, 6),
        (3, 5, 2, 2, 1, 4),
    ];
    let mut rng = TestRng::new(5);
    for (ci, &(n_q, n_kv, n_prefix, n_head, n_head_kv, head_dim)) in cases.iter().enumerate() {
        let d = AttnDims {
            n_q,
            n_kv,
            n_prefix,
            n_head,
            n_head_kv,
            head_dim,
        };
        let (qd, kvd) = (n_head * head_dim, n_head_kv * head_dim);
        let mut bufs = [
            rng.vec(n_q * qd, 1.5),
            rng.vec(n_kv * kvd, 1.5),
            rng.vec(n_kv * kvd, 1.0),
            rng.vec(n_prefix * kvd, 1.5),
            rng.vec(n_prefix * kvd, 1.0),
        ];
        let r = rng.vec(n_q * qd, 1.0);
        let run = |b: &[Vec<f32>; 5]| {
            let x = AttnInputs {
                q: &b[0],
                k: &b[1],
                v: &b[2],
                prefix_k: &b[3],
                prefix_v: &b[4],
            };
            let (mut out, mut lse) = (vec![0f32; n_q * qd], vec![0f32; n_head * n_q]);
            attention_forward(&mut out, &mut lse, &x, &d, 1).unwrap();
            (out, lse)
        };
        let (out, lse) = run(&bufs);
        {
            let x = AttnInputs {
                q: &bufs[0],
                k: &bufs[1],
                v: &bufs[2],
                prefix_k: &bufs[3],
                prefix_v: &bufs[4],
            };
            Tolerance::new(1e-5, 1e-5)
                .check(
                    &format!("attention case {ci} forward"),
                    attention_reference(&x, &d),
                    out.iter().copied(),
                )
                .unwrap();
        }
        let mut grads: Vec<Vec<f32>> = bufs.iter().map(|b| vec![0.25f32; b.len()]).collect();
        {
            let x = AttnInputs {
                q: &bufs[0],
                k: &bufs[1],
                v: &bufs[2],
                prefix_k: &bufs[3],
                prefix_v: &bufs[4],
            };
            let [gq, gk, gv, gpk, gpv] = &mut grads[..] else {
                unreachable!()
            };
            let g = AttnGrads {
                dq: gq,
                dk: gk,
                dv: gv,
                dprefix_k: gpk,
                dprefix_v: gpv,
            };
            attention_backward(g, &r, &out, &lse, &x, &d, 1).unwrap();
        }
        let names = ["dq", "dk", "dv", "dprefix_k", "dprefix_v"];
        for i in 0..5 {
            let analytic: Vec<f32> = grads[i].iter().map(|v| v - 0.25).collect();
            let mut probe = bufs.clone();
            let num = finite_difference(&mut probe[i], FD_EPS, |v| {
                let mut b = bufs.clone();
                b[i] = v.to_vec();
                weighted(&run(&b).0, &r)
            });
            check_grad(
                &format!("attention case {ci} {}", names[i]),
                &analytic,
                &num,
            );
        }
        bufs[0][0] += 0.0; // keep `bufs` mutable for clarity of the probe above
    }
}

#[test]
fn attention_on_several_threads_equals_one_thread() {
    // Large enough that the rows are split over up to 4 threads; a prefix with gradients.
    let d = AttnDims {
        n_q: 96,
        n_kv: 100,
        n_prefix: 5,
        n_head: 4,
        n_head_kv: 2,
        head_dim: 16,
    };
    let (qd, kvd) = (64, 32);
    let mut rng = TestRng::new(8);
    let b = [
        rng.vec(d.n_q * qd, 1.0),
        rng.vec(d.n_kv * kvd, 1.0),
        rng.vec(d.n_kv * kvd, 1.0),
        rng.vec(d.n_prefix * kvd, 1.0),
        rng.vec(d.n_prefix * kvd, 1.0),
    ];
    let dout = rng.vec(d.n_q * qd, 1.0);
    let x = AttnInputs {
        q: &b[0],
        k: &b[1],
        v: &b[2],
        prefix_k: &b[3],
        prefix_v: &b[4],
    };
    let run = |threads| {
        let (mut out, mut lse) = (vec![0f32; d.n_q * qd], vec![0f32; d.n_q * d.n_head]);
        attention_forward(&mut out, &mut lse, &x, &d, threads).unwrap();
        let mut g: Vec<Vec<f32>> = b.iter().map(|v| vec![0f32; v.len()]).collect();
        let [gq, gk, gv, gpk, gpv] = &mut g[..] else {
            unreachable!()
        };
        let grads = AttnGrads {
            dq: gq,
            dk: gk,
            dv: gv,
            dprefix_k: gpk,
            dprefix_v: gpv,
        };
        attention_backward(grads, &dout, &out, &lse, &x, &d, threads).unwrap();
        (out, lse, g)
    };
    let (out1, lse1, g1) = run(1);
    for threads in [2, 3, 4, 16] {
        let (out, lse, g) = run(threads);
        assert_eq!(out, out1, "{threads} threads: forward differs");
        assert_eq!(lse, lse1, "{threads} threads: lse differs");
        for (i, (a, b)) in g.iter().zip(&g1).enumerate() {
            Tolerance::new(1e-6, 1e-5)
                .check(
                    &format!("{threads} threads: gradient {i}"),
                    b.iter().copied(),
                    a.iter().copied(),
                )
                .unwrap();
        }
    }
}

#[test]
fn attention_rejects_inconsistent_sizes() {
    let d = AttnDims {
        n_q: 3,
        n_kv: 2,
        n_prefix: 0,
        n_head: 2,
        n_head_kv: 1,
        head_dim: 4,
    };
    let q = vec![0f32; 3 * 8];
    let kv = vec![0f32; 2 * 4];
    let x = AttnInputs {
        q: &q,
        k: &kv,
        v: &kv,
        prefix_k: &[],
        prefix_v: &[],
    };
    let (mut out, mut lse) = (vec![0f32; 24], vec![0f32; 6]);
    assert!(
        attention_forward(&mut out, &mut lse, &x, &d, 1).is_err(),
        "n_q > n_kv must be refused"
    );
    let d = AttnDims {
        n_q: 2,
        n_kv: 2,
        n_prefix: 0,
        n_head: 3,
        n_head_kv: 2,
        head_dim: 4,
    };
    let (q, kv) = (vec![0f32; 24], vec![0f32; 16]);
    let x = AttnInputs {
        q: &q,
        k: &kv,
        v: &kv,
        prefix_k: &[],
        prefix_v: &[],
    };
    assert!(
        attention_forward(&mut out, &mut lse, &x, &d, 1).is_err(),
        "3 heads over 2 kv heads must be refused"
    );
}

/// A vocabulary of 13 (one tile) and one of 2·VOCAB_TILE + 37 (two full tiles and a partial one,
/// targets in each, so the running log-sum-exp rescales across tiles).
#[test]
fn cross_entropy_matches_reference_and_backward_matches_finite_differences() {
    use edgetune::model::ops::cross_entropy::VOCAB_TILE;
    cross_entropy_case(13, [3, IGNORE_INDEX, 0, 12, 5, IGNORE_INDEX, 7]);
    let v = 2 * VOCAB_TILE as i32 + 37;
    cross_entropy_case(
        v as usize,
        [
            v - 1,
            IGNORE_INDEX,
            0,
            VOCAB_TILE as i32,
            5,
            IGNORE_INDEX,
            v - 40,
        ],
    );
}

fn cross_entropy_case(vocab: usize, targets: [i32; 7]) {
    let (n, d) = (7, 8);
    let mut rng = TestRng::new(6);
    let mut hidden = rng.vec(n * d, 1.0);
    let wv = rng.vec(vocab * d, 1.0);
    let wb = f32_bytes(&wv);
    let w = f32_weight(&wb, d, vocab);
    let dl: Vec<f32> = targets
        .iter()
        .map(|&t| {
            if t == IGNORE_INDEX {
                0.0
            } else {
                0.2 + 0.1 * (t % 13) as f32
            }
        })
        .collect();
    for chunk_rows in [1, 2, 64] {
        let head = LmHead {
            weight: &w,
            backend: &NaiveBackend,
            chunk_rows,
        };
        let loss_of = |h: &[f32]| {
            let mut l = vec![0f32; n];
            cross_entropy_forward(&mut l, h, &targets, &head).unwrap();
            l
        };
        let losses = loss_of(&hidden);
        // Reference: log-sum-exp minus target logit, in f64.
        let want: Vec<f64> = (0..n)
            .map(|i| {
                if targets[i] == IGNORE_INDEX {
                    return 0.0;
                }
                let z: Vec<f64> = (0..vocab)
                    .map(|v| {
                        (0..d)
                            .map(|k| hidden[i * d + k] as f64 * wv[v * d + k] as f64)
                            .sum()
                    })
                    .collect();
                let m = z.iter().cloned().fold(f64::NEG_INFINITY, f64::max);
                m + z.iter().map(|x| (x - m).exp()).sum::<f64>().ln() - z[targets[i] as usize]
            })
            .collect();
        Tolerance::new(1e-5, 1e-5)
            .check("cross-entropy forward", want, losses.iter().copied())
            .unwrap();

        let mut dh = vec![0f32; n * d];
        cross_entropy_backward(&mut dh, &dl, &hidden, &targets, &head).unwrap();
        let num = finite_difference(&mut hidden, FD_EPS, |h| weighted(&loss_of(h), &dl));
        check_grad(
            &format!("cross-entropy dhidden (chunk {chunk_rows})"),
            &dh,
            &num,
        );

        let (mut l2, mut dh2) = (vec![0f32; n], vec![0f32; n * d]);
        cross_entropy_forward_backward(&mut l2, &mut dh2, &dl, &hidden, &targets, &head).unwrap();
        assert_eq!(l2, losses, "fused forward differs");
        assert_eq!(dh2, dh, "fused backward differs");
    }
    let head = LmHead {
        weight: &w,
        backend: &NaiveBackend,
        chunk_rows: 4,
    };
    let mut l = vec![0f32; n];
    let bad = [3, vocab as i32, 0, 0, 0, 0, 0];
    let err = cross_entropy_forward(&mut l, &hidden, &bad, &head)
        .unwrap_err()
        .to_string();
    assert!(err.contains(&format!("target {vocab}")), "{err}");
}

#[test]
fn embedding_forward_reads_rows_and_backward_scatters() {
    let (vocab, d) = (6, 5);
    let mut rng = TestRng::new(7);
    let mut table = rng.vec(vocab * d, 1.0);
    let tokens = [4u32, 0, 4, 2];
    let r = rng.vec(tokens.len() * d, 1.0);
    let fwd = |t: &[f32]| {
        let bytes = f32_bytes(t);
        let et = EmbeddingTable {
            data: edgetune::weights::WeightData::Ggml {
                ty: edgetune::gguf::GgmlType::F32,
                bytes: &bytes,
            },
            n_vocab: vocab,
            n_embd: d,
        };
        let mut out = vec![0f32; tokens.len() * d];
        embedding_forward(&mut out, &tokens, &et).unwrap();
        out
    };
    let out = fwd(&table);
    assert_eq!(&out[..d], &table[4 * d..5 * d]);
    let mut dt = vec![0f32; vocab * d];
    embedding_backward(&mut dt, &r, &tokens, d).unwrap();
    let num = finite_difference(&mut table, FD_EPS, |t| weighted(&fwd(t), &r));
    check_grad("embedding dtable", &dt, &num);
    let bytes = f32_bytes(&table);
    let et = EmbeddingTable {
        data: edgetune::weights::WeightData::Ggml {
            ty: edgetune::gguf::GgmlType::F32,
            bytes: &bytes,
        },
        n_vocab: vocab,
        n_embd: d,
    };
    let mut out = vec![0f32; d];
    let err = embedding_forward(&mut out, &[6], &et)
        .unwrap_err()
        .to_string();
    assert!(err.contains("token id 6"), "{err}");
}

#[test]
fn tolerance_reports_the_worst_element() {
    let t = Tolerance::new(1e-3, 0.0);
    assert!(t.check("ok", [1.0f32, 2.0], [1.0005f32, 2.0]).is_ok());
    let e = t
        .check("bad", [1.0f32, 2.0, 3.0], [1.0f32, 2.5, f32::NAN])
        .unwrap_err()
        .to_string();
    assert!(e.contains("2 of 3") && e.contains("worst at [2]"), "{e}");
}
