//! Does sampling draw from the distribution Hugging Face's warpers define (temperature, then
//! top-k, then top-p), reproducibly for a seed, and does generation stop when asked?

mod model_support;

use edgetune::gguf::GgufFile;
use edgetune::model::generate::{argmax, sample};
use edgetune::model::{generate, GenerateParams, Llama, Rng};
use model_support::{fixture, NaiveBackend};
use std::sync::Arc;

/// Empirical frequencies of `n` draws.
fn frequencies(logits: &[f32], params: &GenerateParams, n: usize) -> Vec<f64> {
    let mut rng = Rng::new(params.seed);
    let mut counts = vec![0usize; logits.len()];
    for _ in 0..n {
        let mut l = logits.to_vec();
        counts[sample(&mut l, params, &mut rng).unwrap() as usize] += 1;
    }
    counts.iter().map(|&c| c as f64 / n as f64).collect()
}

fn softmax(logits: &[f32], t: f32) -> Vec<f64> {
    let m = logits.iter().cloned().fold(f32::NEG_INFINITY, f32::max);
    let e: Vec<f64> = logits
        .iter()
        .map(|&l| (((l - m) / t) as f64).exp())
        .collect();
    let s: f64 = e.iter().sum();
    e.iter().map(|v| v / s).collect()
}

fn assert_close(got: &[f64], want: &[f64], what: &str) {
    for (i, (g, w)) in got.iter().zip(want).enumerate() {
        assert!(
            (g - w).abs() < 0.015,
            "{what}: token {i}: frequency {g:.4}, expected {w:.4}"
        );
    }
}

#[test]
fn sampling_follows_temperature_top_k_and_top_p() {
    // Probabilities 0.5, 0.3, 0.15, 0.05 at temperature 1.
    let logits: Vec<f32> = [0.05f32, 0.5, 0.15, 0.3].iter().map(|p| p.ln()).collect();
    let n = 40_000;
    let base = GenerateParams {
        temperature: 1.0,
        seed: 3,
        ..GenerateParams::default()
    };
    assert_close(
        &frequencies(&logits, &base, n),
        &softmax(&logits, 1.0),
        "temperature 1",
    );
    let hot = GenerateParams {
        temperature: 2.5,
        ..base.clone()
    };
    assert_close(
        &frequencies(&logits, &hot, n),
        &softmax(&logits, 2.5),
        "temperature 2.5",
    );
    // top-k 2 keeps 0.5 and 0.3, renormalised.
    let k2 = GenerateParams {
        top_k: 2,
        ..base.clone()
    };
    assert_close(
        &frequencies(&logits, &k2, n),
        &[0.0, 0.625, 0.0, 0.375],
        "top-k 2",
    );
    // top-p 0.6 and 0.75 keep {0.5, 0.3} (HF removes the tail whose mass is <= 1 - top_p);
    // 0.9 keeps three.
    for p in [0.6f32, 0.75] {
        let tp = GenerateParams {
            top_p: p,
            ..base.clone()
        };
        assert_close(
            &frequencies(&logits, &tp, n),
            &[0.0, 0.625, 0.0, 0.375],
            "top-p",
        );
    }
    let tp = GenerateParams {
        top_p: 0.9,
        ..base.clone()
    };
    assert_close(
        &frequencies(&logits, &tp, n),
        &[0.0, 0.5 / 0.95, 0.15 / 0.95, 0.3 / 0.95],
        "top-p 0.9",
    );
    // top-k 1 is greedy whatever the temperature.
    let k1 = GenerateParams {
        top_k: 1,
        temperature: 5.0,
        ..base
    };
    assert_eq!(frequencies(&logits, &k1, 1000)[1], 1.0);
}

#[test]
fn greedy_takes_the_first_maximum_and_rng_is_reproducible() {
    assert_eq!(argmax(&[1.0, 3.0, -2.0, 3.0]), 1);
    let mut l = vec![0.0f32, 2.0, 2.0];
    assert_eq!(
        sample(&mut l, &GenerateParams::default(), &mut Rng::new(0)).unwrap(),
        1
    );
    let mut nan = vec![0.0f32, f32::NAN];
    assert!(sample(&mut nan, &GenerateParams::default(), &mut Rng::new(0)).is_err());
    let a: Vec<u64> = (0..5)
        .scan(Rng::new(42), |r, _| Some(r.next_u64()))
        .collect();
    let b: Vec<u64> = (0..5)
        .scan(Rng::new(42), |r, _| Some(r.next_u64()))
        .collect();
    let c: Vec<u64> = (0..5)
        .scan(Rng::new(43), |r, _| Some(r.next_u64()))
        .collect();
    assert_eq!(a, b);
    assert_ne!(a, c);
    let mut r = Rng::new(7);
    let mean = (0..10_000).map(|_| r.next_f64()).sum::<f64>() / 10_000.0;
    assert!((mean - 0.5).abs() < 0.01, "uniform mean {mean}");
}

#[test]
fn generation_is_seeded_and_stops_when_asked() {
    let file = GgufFile::open(fixture("tiny-llama/tiny-llama.gguf")).unwrap();
    let model = Llama::new(&file, Arc::new(NaiveBackend)).unwrap();
    let prompt = [10u32, 20, 30];
    let p = GenerateParams {
        max_tokens: 10,
        temperature: 1.0,
        top_k: 50,
        top_p: 0.95,
        seed: 9,
        ..Default::default()
    };
    let a = generate(&model, &prompt, &p, &mut |_| true).unwrap();
    let b = generate(&model, &prompt, &p, &mut |_| true).unwrap();
    assert_eq!(a, b, "same seed, same tokens");
    assert_eq!(a.len(), 10);
    let c = generate(
        &model,
        &prompt,
        &GenerateParams {
            seed: 10,
            ..p.clone()
        },
        &mut |_| true,
    )
    .unwrap();
    assert_ne!(a, c, "another seed should give another continuation");
    let mut seen = 0;
    let d = generate(&model, &prompt, &p, &mut |_| {
        seen += 1;
        seen < 3
    })
    .unwrap();
    assert_eq!(
        d,
        a[..3].to_vec(),
        "on_token returning false stops after that token"
    );
    let stop = a[4];
    let first = a.iter().position(|&t| t == stop).unwrap();
    let e = generate(
        &model,
        &prompt,
        &GenerateParams {
            stop_tokens: vec![stop],
            ..p
        },
        &mut |_| true,
    )
    .unwrap();
    assert_eq!(
        e,
        a[..first].to_vec(),
        "a stop token ends generation and is not returned"
    );
}
