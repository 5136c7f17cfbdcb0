//! Are the adapters' forward/backward pairs right? Finite-difference checks of every gradient
//! (LoRA dA, dB, dx with and without dropout and rsLoRA; IA3 dl, dx for output and input scaling),
//! the adjoint relation of the prefix gather/scatter, init semantics (an untrained adapter is a
//! no-op) and the training-mode contract.
//!
//! The loss is `L = Σ y ⊙ g` for a fixed random `g`. L is linear in every single parameter or input
//! element (the mask is fixed by the step id), so a central difference with a large step is exact up
//! to rounding.

mod adapters_support;

use adapters_support::*;
use edgetune::adapters::{
    Adapter, DenseLinear, Ia3, Ia3Config, Lora, LoraConfig, ModelDims, PrefixConfig, PrefixInit,
    PrefixTuning, PromptConfig, PromptTuning, Site, Target,
};

/// A small GQA model with odd sizes.
fn dims() -> ModelDims {
    ModelDims {
        n_layer: 2,
        n_embd: 12,
        n_ff: 22,
        n_head: 3,
        n_head_kv: 1,
        head_dim: 4,
        qk_permuted: true,
    }
}

const ROWS: usize = 5;
const STEP: u64 = 7;
const FD_TOL: Tolerance = Tolerance::new(1e-4, 1e-4);

/// Base weight, input and upstream gradient for one site.
struct Case {
    w: Vec<u8>,
    x: Vec<f32>,
    g: Vec<f32>,
    n_in: usize,
    n_out: usize,
}

impl Case {
    fn new(site: Site, seed: u64) -> Case {
        let (n_in, n_out) = site.target.shape(&dims());
        let mut rng = Rng::new(seed);
        Case {
            w: f32_bytes(&rng.vec(n_in * n_out)),
            x: rng.vec(ROWS * n_in),
            g: rng.vec(ROWS * n_out),
            n_in,
            n_out,
        }
    }

    fn loss(&self, a: &mut dyn Adapter, site: Site, x: &[f32]) -> f64 {
        let weight = f32_weight(&self.w, self.n_in, self.n_out);
        let base = DenseLinear {
            weight: &weight,
            bias: None,
            backend: &RefBackend,
        };
        let mut y = vec![0.0; ROWS * self.n_out];
        a.linear_forward(site, &base, x, ROWS, &mut y).unwrap();
        y.iter()
            .zip(&self.g)
            .map(|(&y, &g)| y as f64 * g as f64)
            .sum()
    }

    /// Analytic gradients: (dx, per-parameter grads).
    fn analytic(&self, a: &mut dyn Adapter, site: Site) -> (Vec<f32>, Vec<Vec<f32>>) {
        let weight = f32_weight(&self.w, self.n_in, self.n_out);
        let base = DenseLinear {
            weight: &weight,
            bias: None,
            backend: &RefBackend,
        };
        a.zero_grad();
        let mut y = vec![0.0; ROWS * self.n_out];
        a.linear_forward(site, &base, &self.x, ROWS, &mut y)
            .unwrap();
        let mut dx = vec![0.0; ROWS * self.n_in];
        a.linear_backward(site, &base, &self.x, &self.g, ROWS, &mut dx)
            .unwrap();
        let grads = a.params().iter().map(|p| p.grad().to_vec()).collect();
        (dx, grads)
    }

    /// Central differences of L over `x` and over every element of `params` (by index).
    fn check(&self, a: &mut dyn Adapter, site: Site, params: &[usize], what: &str) {
        a.set_training(Some(STEP));
        let (dx, grads) = self.analytic(a, site);
        let eps = 0.5f32;
        let mut num_dx = vec![0.0; dx.len()];
        for i in 0..self.x.len() {
            let mut xp = self.x.clone();
            xp[i] += eps;
            let lp = self.loss(a, site, &xp);
            xp[i] -= 2.0 * eps;
            let lm = self.loss(a, site, &xp);
            num_dx[i] = ((lp - lm) / (2.0 * eps as f64)) as f32;
        }
        FD_TOL.assert_close(&format!("{what} dx"), &dx, &num_dx);
        for &pi in params {
            let n = a.params().get(pi).len();
            let name = a.params().get(pi).name().to_string();
            let mut central = |j: usize| {
                let orig = a.params().get(pi).data()[j];
                a.params_mut().get_mut(pi).data_mut()[j] = orig + eps;
                let lp = self.loss(a, site, &self.x);
                a.params_mut().get_mut(pi).data_mut()[j] = orig - eps;
                let lm = self.loss(a, site, &self.x);
                a.params_mut().get_mut(pi).data_mut()[j] = orig;
                ((lp - lm) / (2.0 * eps as f64)) as f32
            };
            let num: Vec<f32> = (0..n).map(&mut central).collect();
            FD_TOL.assert_close(&format!("{what} {name}"), &grads[pi], &num);
            assert!(
                grads[pi].iter().any(|&v| v != 0.0),
                "{what} {name}: zero gradient"
            );
        }
    }
}

/// Random non-zero values for every parameter (B starts at zero otherwise).
fn randomize(a: &mut dyn Adapter, seed: u64, around: f32) {
    let mut rng = Rng::new(seed);
    for p in a.params_mut().iter_mut() {
        for v in p.data_mut() {
            *v = around + 0.5 * rng.f32();
        }
    }
}

#[test]
fn lora_gradients_match_finite_differences() {
    let d = dims();
    // (target, rank, rslora, dropout)
    let cases = [
        (Target::AttnQ, 3, false, 0.0),
        (Target::AttnK, 2, false, 0.5),
        (Target::AttnOutput, 1, true, 0.0),
        (Target::FfnDown, 4, true, 0.3),
        (Target::FfnUp, 2, false, 0.2),
    ];
    for (i, &(target, rank, rslora, dropout)) in cases.iter().enumerate() {
        let site = Site::new(1, target);
        let mut cfg = LoraConfig::new(rank, 3.0, &[target], None, &d);
        cfg.rslora = rslora;
        cfg.dropout = dropout;
        let mut lora = Lora::new(&d, cfg, i as u64).unwrap();
        randomize(&mut lora, 100 + i as u64, 0.0);
        let case = Case::new(site, 200 + i as u64);
        if dropout > 0.0 {
            // The mask must really drop something, and differ from inference.
            lora.set_training(Some(STEP));
            let train = case.loss(&mut lora, site, &case.x);
            lora.set_training(None);
            let eval = case.loss(&mut lora, site, &case.x);
            assert_ne!(train, eval, "{target}: dropout had no effect");
        }
        let (a, b) = lora.param_indices(site).unwrap();
        case.check(
            &mut lora,
            site,
            &[a, b],
            &format!("LoRA {target} r={rank} rs={rslora} p={dropout}"),
        );
    }
}

#[test]
fn ia3_gradients_match_finite_differences() {
    let d = dims();
    let cfg = Ia3Config {
        sites: edgetune::adapters::lora::sites_of(&Target::ALL, Some(&[0]), d.n_layer),
        // down_proj as PEFT's Llama default, and o_proj to test input scaling on another shape.
        feedforward: vec![Target::AttnOutput, Target::FfnDown],
    };
    for (i, target) in Target::ALL.into_iter().enumerate() {
        let site = Site::new(0, target);
        let mut ia3 = Ia3::new(&d, cfg.clone()).unwrap();
        randomize(&mut ia3, 300 + i as u64, 1.0);
        let (p, scales_input) = ia3.param_index(site).unwrap();
        assert_eq!(
            scales_input,
            matches!(target, Target::AttnOutput | Target::FfnDown)
        );
        let case = Case::new(site, 400 + i as u64);
        case.check(&mut ia3, site, &[p], &format!("IA3 {target}"));
    }
}

#[test]
fn backward_adds_into_gradients() {
    let d = dims();
    let site = Site::new(0, Target::AttnV);
    let mut lora = Lora::new(&d, LoraConfig::new(2, 4.0, &[Target::AttnV], None, &d), 3).unwrap();
    randomize(&mut lora, 5, 0.0);
    let case = Case::new(site, 6);
    lora.set_training(Some(1));
    let (_, once) = case.analytic(&mut lora, site);
    // A second backward over the same forward without zeroing doubles every gradient.
    let weight = f32_weight(&case.w, case.n_in, case.n_out);
    let base = DenseLinear {
        weight: &weight,
        bias: None,
        backend: &RefBackend,
    };
    let mut dx = vec![1.0; ROWS * case.n_in];
    lora.linear_backward(site, &base, &case.x, &case.g, ROWS, &mut dx)
        .unwrap();
    for (p, g1) in lora.params().iter().zip(&once) {
        let doubled: Vec<f32> = g1.iter().map(|v| 2.0 * v).collect();
        Tolerance::new(1e-6, 0.0).assert_close(p.name(), p.grad(), &doubled);
    }
    // dx was accumulated onto its initial ones.
    let (dx0, _) = case.analytic(&mut lora, site);
    let want: Vec<f32> = dx0.iter().map(|v| v + 1.0).collect();
    Tolerance::new(1e-6, 1e-6).assert_close("dx accumulates", &dx, &want);
}

/// mlx-lm's check: an untrained LoRA (B = 0) or IA3 (ones) adapter leaves the layer bit-identical.
#[test]
fn untrained_adapters_are_exact_no_ops() {
    let d = dims();
    let all = Target::ALL;
    let mut adapters: Vec<(&str, Box<dyn Adapter>)> = vec![
        (
            "lora",
            Box::new(Lora::new(&d, LoraConfig::new(4, 8.0, &all, None, &d), 9).unwrap()),
        ),
        (
            "ia3",
            Box::new(
                Ia3::new(
                    &d,
                    Ia3Config::new(&[Target::AttnK, Target::AttnV, Target::FfnDown], None, &d),
                )
                .unwrap(),
            ),
        ),
    ];
    for (name, a) in &mut adapters {
        for (i, t) in all.into_iter().enumerate() {
            let site = Site::new(1, t);
            let case = Case::new(site, 500 + i as u64);
            let weight = f32_weight(&case.w, case.n_in, case.n_out);
            let base = DenseLinear {
                weight: &weight,
                bias: None,
                backend: &RefBackend,
            };
            let mut want = vec![0.0; ROWS * case.n_out];
            edgetune::adapters::FrozenLinear::forward(&base, &case.x, ROWS, &mut want).unwrap();
            for mode in [None, Some(3)] {
                a.set_training(mode);
                let mut got = vec![0.0; ROWS * case.n_out];
                a.linear_forward(site, &base, &case.x, ROWS, &mut got)
                    .unwrap();
                assert_eq!(got, want, "{name} {t} training={mode:?}");
            }
        }
    }
}

#[test]
fn lora_init_follows_peft() {
    let d = dims();
    let lora = Lora::new(&d, LoraConfig::new(8, 16.0, &Target::ALL, None, &d), 42).unwrap();
    for site in lora.sites() {
        let (a, b) = lora.weights(site).unwrap();
        let (n_in, _) = site.target.shape(&d);
        let bound = 1.0 / (n_in as f32).sqrt();
        assert!(
            a.iter().all(|v| v.abs() <= bound),
            "{site}: A beyond ±{bound}"
        );
        assert!(
            a.iter().any(|v| v.abs() > 0.8 * bound),
            "{site}: A not spread"
        );
        assert!(b.iter().all(|&v| v == 0.0), "{site}: B not zero");
    }
    // Same seed, same adapter; another seed, another one.
    let again = Lora::new(&d, LoraConfig::new(8, 16.0, &Target::ALL, None, &d), 42).unwrap();
    let other = Lora::new(&d, LoraConfig::new(8, 16.0, &Target::ALL, None, &d), 43).unwrap();
    assert_eq!(lora.params(), again.params());
    assert_ne!(lora.params(), other.params());
    assert_eq!(lora.scale(), 2.0);
    let mut rs = LoraConfig::new(4, 6.0, &[Target::AttnQ], None, &d);
    rs.rslora = true;
    assert_eq!(rs.scale(), 3.0);
}

#[test]
fn prompt_and_prefix_random_init_is_standard_normal() {
    let d = ModelDims {
        n_embd: 256,
        ..dims()
    };
    let prompt = PromptTuning::new(
        &d,
        PromptConfig {
            num_virtual_tokens: 20,
        },
        1,
    )
    .unwrap();
    let prefix = PrefixTuning::new(
        &d,
        PrefixConfig {
            num_virtual_tokens: 200,
            init: PrefixInit::Random,
        },
        2,
    )
    .unwrap();
    for (name, v) in [
        ("prompt", prompt.embeddings()),
        ("prefix", prefix.embedding()),
    ] {
        let n = v.len() as f64;
        let mean = v.iter().map(|&x| x as f64).sum::<f64>() / n;
        let var = v.iter().map(|&x| (x as f64 - mean).powi(2)).sum::<f64>() / n;
        assert!(
            mean.abs() < 0.1 && (var - 1.0).abs() < 0.1,
            "{name}: {mean} {var}"
        );
    }
    let zero = PrefixTuning::new(
        &d,
        PrefixConfig {
            num_virtual_tokens: 3,
            init: PrefixInit::Zero,
        },
        2,
    )
    .unwrap();
    assert!(zero.embedding().iter().all(|&v| v == 0.0));
}

/// `accumulate_grad` is the adjoint of `gather`: Σ gather(θ)·g = Σ θ·scatter(g), for both channel
/// orders; and it adds.
#[test]
fn prefix_gradient_scatter_is_the_adjoint_of_gather() {
    for permuted in [false, true] {
        let d = ModelDims {
            qk_permuted: permuted,
            ..dims()
        };
        let cfg = PrefixConfig {
            num_virtual_tokens: 3,
            init: PrefixInit::Random,
        };
        let mut p = PrefixTuning::new(&d, cfg, 4).unwrap();
        let len = p.embedding().len();
        let mut rng = Rng::new(11);
        let g = rng.vec(len);
        let mut kv = vec![0.0; len];
        p.gather(&mut kv).unwrap();
        let lhs: f64 = kv.iter().zip(&g).map(|(&a, &b)| a as f64 * b as f64).sum();
        p.zero_grad();
        p.accumulate_grad(&g).unwrap();
        let rhs: f64 = p
            .embedding()
            .iter()
            .zip(p.params().get(0).grad())
            .map(|(&a, &b)| a as f64 * b as f64)
            .sum();
        assert!(
            (lhs - rhs).abs() < 1e-9 * lhs.abs().max(1.0),
            "{lhs} vs {rhs}"
        );
        // The gather is a permutation of the parameters: same multiset of values.
        let mut a = kv.clone();
        let mut b = p.embedding().to_vec();
        a.sort_by(f32::total_cmp);
        b.sort_by(f32::total_cmp);
        assert_eq!(a, b);
        let first = p.params().get(0).grad().to_vec();
        p.accumulate_grad(&g).unwrap();
        let twice: Vec<f32> = first.iter().map(|v| 2.0 * v).collect();
        assert_eq!(p.params().get(0).grad(), &twice[..]);
        assert!(p.accumulate_grad(&g[1..]).is_err());
    }
}

#[test]
fn prompt_gradient_accumulates() {
    let d = dims();
    let mut p = PromptTuning::new(
        &d,
        PromptConfig {
            num_virtual_tokens: 2,
        },
        1,
    )
    .unwrap();
    let g = Rng::new(3).vec(2 * d.n_embd);
    p.accumulate_grad(&g).unwrap();
    p.accumulate_grad(&g).unwrap();
    let want: Vec<f32> = g.iter().map(|v| 2.0 * v).collect();
    assert_eq!(p.params().get(0).grad(), &want[..]);
    assert!(p.accumulate_grad(&g[..3]).is_err());
}

/// Backward needs a training forward of the same rows; shapes are checked; inference saves nothing.
#[test]
fn training_contract_is_enforced() {
    let d = dims();
    let site = Site::new(0, Target::AttnQ);
    let case = Case::new(site, 1);
    let weight = f32_weight(&case.w, case.n_in, case.n_out);
    let base = DenseLinear {
        weight: &weight,
        bias: None,
        backend: &RefBackend,
    };
    let ia3_cfg = Ia3Config::new(&[Target::AttnQ], None, &d);
    let lora_cfg = LoraConfig::new(2, 2.0, &[Target::AttnQ], None, &d);
    let adapters: Vec<Box<dyn Adapter>> = vec![
        Box::new(Lora::new(&d, lora_cfg, 1).unwrap()),
        Box::new(Ia3::new(&d, ia3_cfg).unwrap()),
    ];
    for mut a in adapters {
        let m = a.method();
        let mut y = vec![0.0; ROWS * case.n_out];
        let mut dx = vec![0.0; ROWS * case.n_in];
        a.set_training(None);
        a.linear_forward(site, &base, &case.x, ROWS, &mut y)
            .unwrap();
        let e = a
            .linear_backward(site, &base, &case.x, &case.g, ROWS, &mut dx)
            .unwrap_err();
        assert!(e.to_string().contains("training forward"), "{m:?}: {e}");
        a.set_training(Some(0));
        a.linear_forward(site, &base, &case.x, ROWS, &mut y)
            .unwrap();
        let rows = ROWS - 1;
        let e = a
            .linear_backward(
                site,
                &base,
                &case.x[..rows * case.n_in],
                &case.g[..rows * case.n_out],
                rows,
                &mut dx[..rows * case.n_in],
            )
            .unwrap_err();
        assert!(e.to_string().contains("training forward"), "{m:?}: {e}");
        let e = a
            .linear_forward(site, &base, &case.x[1..], ROWS, &mut y)
            .unwrap_err();
        assert!(e.to_string().contains("blk.0.attn_q"), "{m:?}: {e}");
        // A base layer of the wrong shape is refused.
        let wrong = f32_weight(
            &case.w[..4 * case.n_in * (case.n_out - 1)],
            case.n_in,
            case.n_out - 1,
        );
        let wrong_base = DenseLinear {
            weight: &wrong,
            bias: None,
            backend: &RefBackend,
        };
        let mut y2 = vec![0.0; ROWS * (case.n_out - 1)];
        assert!(a
            .linear_forward(site, &wrong_base, &case.x, ROWS, &mut y2)
            .is_err());
        // Layers that are not adapted run the base alone.
        let other = Site::new(1, Target::AttnV);
        let c2 = Case::new(other, 2);
        let w2 = f32_weight(&c2.w, c2.n_in, c2.n_out);
        let b2 = DenseLinear {
            weight: &w2,
            bias: None,
            backend: &RefBackend,
        };
        let mut got = vec![0.0; ROWS * c2.n_out];
        let mut want = vec![0.0; ROWS * c2.n_out];
        a.linear_forward(other, &b2, &c2.x, ROWS, &mut got).unwrap();
        edgetune::adapters::FrozenLinear::forward(&b2, &c2.x, ROWS, &mut want).unwrap();
        assert_eq!(got, want);
    }
}

/// The registry plugs into the optimizer: specs, clipping and an AdamW step. At step 0 LoRA's A
/// gets no gradient (B = 0), B moves by about lr (Adam's first step is sign-like).
#[test]
fn registry_drives_the_optimizer() {
    use edgetune::optim::{clip_grad_norm, AdamWConfig, Optimizer, ParamSet, Rule, StoreKind};
    let d = dims();
    let site = Site::new(1, Target::FfnGate);
    let mut lora = Lora::new(&d, LoraConfig::new(2, 4.0, &[Target::FfnGate], None, &d), 8).unwrap();
    let case = Case::new(site, 12);
    lora.set_training(Some(0));
    case.analytic(&mut lora, site);
    let specs = ParamSet::from_specs(lora.params().specs()).unwrap();
    let lr = 1e-2;
    let mut opt =
        Optimizer::new(Rule::AdamW(AdamWConfig::default()), specs, StoreKind::Ram).unwrap();
    let before = lora.params().clone();
    let norm = clip_grad_norm(&mut lora.params_mut().grads_mut(), 1.0);
    assert!(norm > 0.0);
    let (mut values, grads) = lora.params_mut().values_and_grads();
    opt.step(&mut values, &grads, lr).unwrap();
    let (a, b) = lora.param_indices(site).unwrap();
    assert_eq!(lora.params().get(a).data(), before.get(a).data(), "A moved");
    for (new, (old, g)) in lora
        .params()
        .get(b)
        .data()
        .iter()
        .zip(before.get(b).data().iter().zip(lora.params().get(b).grad()))
    {
        if g.abs() > 1e-3 {
            assert!(
                ((old - new) - lr as f32 * g.signum()).abs() < 1e-4,
                "{old} -> {new}, g {g}"
            );
        }
    }
}
