//! Does the training loop do what DESIGN.md promises, independent of the model? Accumulation
//! normalises by the step's tokens, a resumed run equals an uninterrupted one, a stop request
//! checkpoints, NaN stops with the last good checkpoint kept, bad settings are refused.
//!
//! The objective here is a toy with an exact gradient: every predicted token `(x, y)` costs
//! `softplus(θ·f(x, y))` with fixed pseudo-random features `f`, over all adapter parameters.

use edgetune::adapters::{load_peft_dir, Adapter, AnyAdapter, Lora, LoraConfig, ModelDims, Target};
use edgetune::train::{
    checkpoint_dir, read_metrics, train, DataSource, LossStats, MicroBatch, Objective, StepMetrics,
    TrainOptions,
};
use edgetune::Result;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

fn dims() -> ModelDims {
    ModelDims {
        n_layer: 2,
        n_embd: 8,
        n_ff: 16,
        n_head: 2,
        n_head_kv: 1,
        head_dim: 4,
        qk_permuted: true,
    }
}

fn lora() -> AnyAdapter {
    let d = dims();
    let cfg = LoraConfig::new(2, 4.0, &[Target::AttnQ, Target::AttnV], None, &d);
    let mut l = Lora::new(&d, cfg, 7).unwrap();
    // Non-zero B so every parameter matters from the start.
    for p in l.params_mut().iter_mut() {
        for (i, v) in p.data_mut().iter_mut().enumerate() {
            if *v == 0.0 {
                *v = 0.01 * ((i % 7) as f32 - 3.0);
            }
        }
    }
    AnyAdapter::Lora(l)
}

fn feature(x: u32, y: i32, i: usize) -> f64 {
    let mut h = (x as u64) << 32 ^ (y as u64) ^ ((i as u64).wrapping_mul(0x9e37_79b9_7f4a_7c15));
    h ^= h >> 31;
    h = h.wrapping_mul(0xbf58_476d_1ce4_e5b9);
    h ^= h >> 29;
    ((h >> 11) as f64 / (1u64 << 53) as f64 - 0.5) * 0.2
}

#[derive(Default)]
struct Toy {
    /// Return NaN on this pass.
    nan_at_pass: Option<u64>,
}

impl Toy {
    fn run(&self, any: &mut AnyAdapter, b: &MicroBatch, denom: Option<usize>) -> LossStats {
        let adapter = any.as_adapter_mut();
        let mut s = LossStats::default();
        for r in 0..b.rows {
            let row = r * b.width;
            for t in 0..b.width - 1 {
                let y = b.labels[row + t + 1];
                if y == -100 {
                    continue;
                }
                let x = b.input_ids[row + t];
                let mut z = 0.0;
                let mut k = 0;
                for p in adapter.params().iter() {
                    for &v in p.data() {
                        z += v as f64 * feature(x, y, k);
                        k += 1;
                    }
                }
                s.sum_nll += (1.0 + z.exp()).ln();
                s.n_tokens += 1;
                if let Some(d) = denom {
                    let g = 1.0 / (1.0 + (-z).exp()) / d as f64;
                    let mut k = 0;
                    for p in adapter.params_mut().iter_mut() {
                        for gv in p.grad_mut() {
                            *gv += (g * feature(x, y, k)) as f32;
                            k += 1;
                        }
                    }
                }
            }
        }
        s
    }
}

impl Objective for Toy {
    fn count_targets(&self, _: &AnyAdapter, b: &MicroBatch) -> usize {
        (0..b.rows)
            .map(|r| {
                b.labels[r * b.width + 1..(r + 1) * b.width]
                    .iter()
                    .filter(|&&l| l != -100)
                    .count()
            })
            .sum()
    }

    fn forward_backward(
        &mut self,
        adapter: &mut AnyAdapter,
        b: &MicroBatch,
        denominator: usize,
        pass: u64,
    ) -> Result<LossStats> {
        let mut s = self.run(adapter, b, Some(denominator));
        if self.nan_at_pass == Some(pass) {
            s.sum_nll = f64::NAN;
        }
        Ok(s)
    }

    fn evaluate(&mut self, adapter: &mut AnyAdapter, b: &MicroBatch) -> Result<LossStats> {
        Ok(self.run(adapter, b, None))
    }
}

/// Sequences of different lengths, cycled in order, `batch` rows a micro-batch.
struct Seqs {
    seqs: Vec<(Vec<u32>, Vec<i32>)>,
    batch: usize,
    next: usize,
}

fn seqs(batch: usize) -> Seqs {
    let seqs = (0..6u32)
        .map(|s| {
            let n = 4 + (s as usize * 3) % 7;
            let ids: Vec<u32> = (0..n as u32).map(|t| (s * 13 + t * 5) % 50).collect();
            let mut labels: Vec<i32> = ids.iter().map(|&i| i as i32).collect();
            labels[1] = -100; // a prompt token
            (ids, labels)
        })
        .collect();
    Seqs {
        seqs,
        batch,
        next: 0,
    }
}

fn micro_batch(rows: &[&(Vec<u32>, Vec<i32>)]) -> MicroBatch {
    let width = rows.iter().map(|r| r.0.len()).max().unwrap();
    let mut b = MicroBatch {
        rows: rows.len(),
        width,
        input_ids: Vec::new(),
        labels: Vec::new(),
        tokens: 0,
        doc_lengths: Vec::new(),
    };
    for (ids, labels) in rows {
        b.input_ids.extend(ids);
        b.input_ids.resize(b.input_ids.len() + width - ids.len(), 0);
        b.labels.extend(labels);
        b.labels.resize(b.labels.len() + width - labels.len(), -100);
        b.tokens += ids.len();
    }
    b
}

impl DataSource for Seqs {
    fn next_step(&mut self, grad_accum: usize) -> Result<Vec<MicroBatch>> {
        let mut out = Vec::new();
        for _ in 0..grad_accum {
            let rows: Vec<_> = (0..self.batch)
                .map(|k| &self.seqs[(self.next + k) % self.seqs.len()])
                .collect();
            out.push(micro_batch(&rows));
            self.next += self.batch;
        }
        Ok(out)
    }

    fn state(&self) -> serde_json::Value {
        serde_json::json!({ "next": self.next })
    }

    fn restore(&mut self, state: &serde_json::Value) -> Result<()> {
        self.next = state["next"].as_u64().unwrap() as usize;
        Ok(())
    }
}

fn opts(dir: &Path, steps: u64) -> TrainOptions {
    let mut o = TrainOptions::new(steps, dir);
    o.lr = 1e-2;
    o.warmup_steps = 2;
    o.schedule = edgetune::optim::ScheduleKind::Cosine;
    o.max_grad_norm = 0.05;
    o
}

fn val() -> Vec<MicroBatch> {
    let s = seqs(1);
    vec![micro_batch(&[&s.seqs[1], &s.seqs[4]])]
}

/// Everything but the timing fields.
fn untimed(m: &[StepMetrics]) -> Vec<StepMetrics> {
    m.iter()
        .map(|m| StepMetrics {
            tokens_per_sec: 0.0,
            elapsed_s: 0.0,
            rss_anon_bytes: 0,
            ..m.clone()
        })
        .collect()
}

fn params_of(a: &AnyAdapter) -> Vec<Vec<f32>> {
    a.as_adapter()
        .params()
        .iter()
        .map(|p| p.data().to_vec())
        .collect()
}

#[test]
fn resumed_run_equals_uninterrupted_run() {
    let tmp = tempfile::tempdir().unwrap();
    let (a_dir, b_dir) = (tmp.path().join("a"), tmp.path().join("b"));
    let mut a = lora();
    let mut o = opts(&a_dir, 10);
    o.eval_every = 3;
    let out = train(
        &mut Toy::default(),
        &mut seqs(2),
        &mut a,
        &val(),
        &o,
        None,
        &mut |_| {},
    )
    .unwrap();
    assert_eq!((out.steps, out.interrupted), (10, false));
    let straight = read_metrics(&a_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(straight.len(), 10);
    let evals: Vec<u64> = straight
        .iter()
        .filter(|m| m.eval_loss.is_some())
        .map(|m| m.step)
        .collect();
    assert_eq!(evals, [3, 6, 9, 10]);
    assert!(
        straight[0].lr == 0.0 && straight[1].lr > 0.0,
        "warmup starts at lr 0"
    );
    assert!(
        straight.iter().any(|m| m.grad_norm > 0.05),
        "clipping is exercised"
    );

    // Run b: stopped (as by Ctrl-C) after step 5, then resumed from its checkpoint.
    let stop = Arc::new(AtomicBool::new(false));
    let mut b = lora();
    let mut o = opts(&b_dir, 10);
    o.eval_every = 3;
    o.stop = Some(stop.clone());
    let out = train(
        &mut Toy::default(),
        &mut seqs(2),
        &mut b,
        &val(),
        &o,
        None,
        &mut |m| {
            if m.step == 5 {
                stop.store(true, Ordering::SeqCst)
            }
        },
    )
    .unwrap();
    let ckpt = checkpoint_dir(&b_dir, 5);
    assert_eq!((out.steps, out.interrupted), (5, true));
    assert_eq!(out.last_checkpoint.as_deref(), Some(ckpt.as_path()));
    assert!(
        !b_dir.join("adapter_model.safetensors").exists(),
        "no final adapter when stopped"
    );

    let mut resumed = load_peft_dir(&ckpt, &dims()).unwrap();
    let o = TrainOptions { stop: None, ..o };
    let out = train(
        &mut Toy::default(),
        &mut seqs(2),
        &mut resumed,
        &val(),
        &o,
        Some(&ckpt),
        &mut |_| {},
    )
    .unwrap();
    assert_eq!((out.steps, out.interrupted), (10, false));
    let after = read_metrics(&b_dir.join("metrics.jsonl")).unwrap();
    assert_eq!(untimed(&after), untimed(&straight));
    assert_eq!(params_of(&resumed), params_of(&a));
    let file = |d: &Path| std::fs::read(d.join("adapter_model.safetensors")).unwrap();
    assert_eq!(file(&a_dir), file(&b_dir));
}

#[test]
fn accumulation_equals_one_big_batch() {
    // Sequences of different lengths: the step's loss is the token mean over both micro-batches,
    // not the mean of their means.
    let tmp = tempfile::tempdir().unwrap();
    let mut one = lora();
    let o = opts(&tmp.path().join("one"), 4);
    train(
        &mut Toy::default(),
        &mut seqs(2),
        &mut one,
        &[],
        &o,
        None,
        &mut |_| {},
    )
    .unwrap();
    let mut acc = lora();
    let mut o = opts(&tmp.path().join("acc"), 4);
    o.grad_accum = 2;
    train(
        &mut Toy::default(),
        &mut seqs(1),
        &mut acc,
        &[],
        &o,
        None,
        &mut |_| {},
    )
    .unwrap();
    let m1 = read_metrics(&tmp.path().join("one/metrics.jsonl")).unwrap();
    let m2 = read_metrics(&tmp.path().join("acc/metrics.jsonl")).unwrap();
    for (a, b) in m1.iter().zip(&m2) {
        assert!(
            (a.loss - b.loss).abs() <= 1e-12 * a.loss.abs(),
            "{a:?} vs {b:?}"
        );
        assert!(
            (a.grad_norm - b.grad_norm).abs() <= 1e-5 * a.grad_norm,
            "{a:?} vs {b:?}"
        );
        assert_eq!(a.tokens, b.tokens);
    }
    for (p, q) in params_of(&one).iter().zip(params_of(&acc)) {
        for (x, y) in p.iter().zip(q) {
            assert!((x - y).abs() <= 1e-6, "{x} vs {y}");
        }
    }
}

#[test]
fn nan_loss_stops_and_keeps_the_last_checkpoint() {
    let tmp = tempfile::tempdir().unwrap();
    let mut a = lora();
    let mut o = opts(tmp.path(), 6);
    o.checkpoint_every = 2;
    let mut toy = Toy {
        nan_at_pass: Some(3), // step 4 with one micro-batch a step
    };
    let e = train(&mut toy, &mut seqs(1), &mut a, &[], &o, None, &mut |_| {})
        .unwrap_err()
        .to_string();
    assert!(e.contains("step 4") && e.contains("loss is NaN"), "{e}");
    assert!(
        e.contains(&checkpoint_dir(tmp.path(), 2).display().to_string()),
        "{e}"
    );
    assert!(checkpoint_dir(tmp.path(), 2)
        .join("trainer_state.json")
        .exists());
    assert!(!tmp.path().join("adapter_model.safetensors").exists());
    assert_eq!(
        read_metrics(&tmp.path().join("metrics.jsonl"))
            .unwrap()
            .len(),
        3
    );
}

#[test]
fn bad_runs_are_refused() {
    let tmp = tempfile::tempdir().unwrap();
    // Every label ignored.
    let mut data = seqs(1);
    for s in &mut data.seqs {
        s.1.iter_mut().for_each(|l| *l = -100);
    }
    let e = train(
        &mut Toy::default(),
        &mut data,
        &mut lora(),
        &[],
        &opts(tmp.path(), 2),
        None,
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(e.contains("step 1") && e.contains("-100"), "{e}");

    // Resuming with other settings.
    let mut o = opts(tmp.path(), 4);
    o.checkpoint_every = 2;
    train(
        &mut Toy::default(),
        &mut seqs(1),
        &mut lora(),
        &[],
        &o,
        None,
        &mut |_| {},
    )
    .unwrap();
    let ckpt = checkpoint_dir(tmp.path(), 2);
    let mut adapter = load_peft_dir(&ckpt, &dims()).unwrap();
    o.lr = 5e-3;
    o.grad_accum = 2;
    let e = train(
        &mut Toy::default(),
        &mut seqs(1),
        &mut adapter,
        &[],
        &o,
        Some(&ckpt),
        &mut |_| {},
    )
    .unwrap_err()
    .to_string();
    assert!(
        e.contains("lr (0.01 in the checkpoint, 0.005 now)") && e.contains("grad_accum"),
        "{e}"
    );

    for (name, f) in [
        (
            "--grad-accum 0",
            (|o: &mut TrainOptions| o.grad_accum = 0) as fn(&mut TrainOptions),
        ),
        ("--lr", |o| o.lr = f64::NAN),
        ("--max-grad-norm", |o| o.max_grad_norm = -1.0),
    ] {
        let mut o = opts(tmp.path(), 2);
        f(&mut o);
        let e = train(
            &mut Toy::default(),
            &mut seqs(1),
            &mut lora(),
            &[],
            &o,
            None,
            &mut |_| {},
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains(name), "{e}");
    }
}
