//! Does our Llama equal transformers on the tiny random models (llama NORM rope with GQA and tied
//! output; qwen2 NEOX rope with QKV bias and linear rope scaling; llama with Llama-3 rope factors,
//! MQA, head_dim != n_embd/n_head and attention bias)? Logits, per-token NLL, the loss, the
//! gradient w.r.t. the input embeddings and greedy continuations are compared with the fixtures
//! `scripts/make_tiny_models.py` wrote from the HF models; the adapter seams (linear hooks,
//! prefix keys/values) are checked with finite differences of the whole model.

mod model_support;

use edgetune::backend::Backend;
use edgetune::gguf::GgufFile;
use edgetune::model::check::{finite_difference, Tolerance};
use edgetune::model::ops::IGNORE_INDEX;
use edgetune::model::{
    generate, generate_with, ActivationMode, Arch, BaseLinear, Batch, ForwardOptions,
    GenerateAdapters, GenerateParams, Input, KvCache, LinearHook, LinearKind, LinearSite, Llama,
    NoHook, PrefixKv, RopeLayout,
};
use model_support::{fixture, read_npy, NaiveBackend, TestRng};
use serde_json::Value;
use std::sync::Arc;

const MODELS: [&str; 3] = ["tiny-llama", "tiny-qwen2", "tiny-llama3"];

/// f32 model vs f32 transformers on the same weights: only summation order differs.
const LOGITS_TOL: Tolerance = Tolerance::new(2e-5, 0.0);
const NLL_TOL: Tolerance = Tolerance::new(1e-5, 1e-5);
const GRAD_TOL: Tolerance = Tolerance::new(1e-6, 1e-3);

struct Fixture {
    file: GgufFile,
    manifest: Value,
}

fn open(name: &str) -> Fixture {
    let file = GgufFile::open(fixture(&format!("{name}/{name}.gguf"))).unwrap();
    let text = std::fs::read_to_string(fixture(&format!("{name}/manifest.json"))).unwrap();
    Fixture {
        file,
        manifest: serde_json::from_str(&text).unwrap(),
    }
}

fn backend() -> Arc<dyn Backend> {
    Arc::new(NaiveBackend)
}

fn ids(v: &Value) -> Vec<u32> {
    v.as_array()
        .unwrap()
        .iter()
        .map(|x| x.as_u64().unwrap() as u32)
        .collect()
}

/// The fixture's sequences as one batch, and its labels.
fn batch_of(m: &Value) -> (Vec<u32>, Vec<i32>, usize, usize) {
    let seqs = m["sequences"].as_array().unwrap();
    let tokens: Vec<u32> = seqs.iter().flat_map(ids).collect();
    let labels: Vec<i32> = m["labels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|s| {
            s.as_array()
                .unwrap()
                .iter()
                .map(|x| x.as_i64().unwrap() as i32)
        })
        .collect();
    let n_seq = seqs.len();
    (tokens, labels, n_seq, seqs[0].as_array().unwrap().len())
}

#[test]
fn config_reads_the_quirks_of_each_tiny_model() {
    // (name, arch, rope layout, tied output, qkv bias, o bias, rope factors, freq_scale, head_dim)
    let want = [
        (
            "tiny-llama",
            Arch::Llama,
            RopeLayout::Norm,
            true,
            false,
            false,
            false,
            1.0,
            16,
        ),
        (
            "tiny-qwen2",
            Arch::Qwen2,
            RopeLayout::Neox,
            false,
            true,
            false,
            false,
            0.5,
            16,
        ),
        (
            "tiny-llama3",
            Arch::Llama,
            RopeLayout::Norm,
            false,
            true,
            true,
            true,
            1.0,
            24,
        ),
    ];
    for (name, arch, layout, tied, qkv, o, ff, scale, hd) in want {
        let f = open(name);
        let model = Llama::new(&f.file, backend()).unwrap();
        let c = &model.config;
        let hf = &f.manifest["hf_config"];
        assert_eq!(
            (c.arch, c.rope.layout, c.tied_output, c.qkv_bias, c.o_bias),
            (arch, layout, tied, qkv, o),
            "{name}"
        );
        assert_eq!(
            (c.rope.has_freq_factors, c.rope.freq_scale, c.head_dim),
            (ff, scale, hd),
            "{name}"
        );
        assert_eq!(
            c.n_embd as u64,
            hf["hidden_size"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            c.n_ff as u64,
            hf["intermediate_size"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            c.n_head_kv as u64,
            hf["num_key_value_heads"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            c.n_vocab as u64,
            hf["vocab_size"].as_u64().unwrap(),
            "{name}"
        );
        assert_eq!(
            c.rms_eps,
            hf["rms_norm_eps"].as_f64().unwrap() as f32,
            "{name}"
        );
    }
}

#[test]
fn logits_nll_and_loss_match_transformers() {
    for name in MODELS {
        let f = open(name);
        let model = Llama::new(&f.file, backend()).unwrap();
        let (tokens, labels, n_seq, seq_len) = batch_of(&f.manifest);
        let batch = Batch {
            tokens: &tokens,
            n_seq,
            seq_len,
            docs: None,
        };
        let opts = ForwardOptions {
            mode: ActivationMode::Inference,
            prefix: None,
            ..Default::default()
        };
        let fwd = model.forward(&batch, &opts, &mut NoHook).unwrap();
        let rows: Vec<usize> = (0..tokens.len()).collect();
        let logits = fwd.logits(&rows).unwrap();
        let want = read_npy(&fixture(&format!("{name}/logits.npy")));
        assert_eq!(want.shape, vec![n_seq, seq_len, model.config.n_vocab]);
        let c = LOGITS_TOL
            .check(&format!("{name} logits"), want.f32.iter().copied(), logits)
            .unwrap();
        eprintln!("{name}: logits max abs diff {:.2e}", c.max_abs_diff);

        // Per-position NLL of the next token (all positions predicted: labels = tokens).
        let all: Vec<i32> = tokens.iter().map(|&t| t as i32).collect();
        let nll = fwd.token_nll(&all).unwrap();
        let want = read_npy(&fixture(&format!("{name}/nll.npy")));
        let ours: Vec<f32> = (0..n_seq)
            .flat_map(|b| nll[b * seq_len..(b + 1) * seq_len - 1].to_vec())
            .collect();
        NLL_TOL
            .check(&format!("{name} nll"), want.f32.iter().copied(), ours)
            .unwrap();

        // The HF loss over labels with ignored positions.
        let loss = fwd.loss(&labels).unwrap();
        let want = f.manifest["loss"].as_f64().unwrap();
        Tolerance::new(0.0, 1e-5)
            .check(&format!("{name} loss"), [want], [loss.mean()])
            .unwrap();
        let n_valid = (0..n_seq)
            .flat_map(|b| labels[b * seq_len + 1..(b + 1) * seq_len].to_vec())
            .filter(|&l| l != IGNORE_INDEX)
            .count();
        assert_eq!(loss.n_tokens, n_valid);
    }
}

#[test]
fn input_gradient_matches_transformers_in_full_and_checkpoint_modes() {
    for name in MODELS {
        let f = open(name);
        let model = Llama::new(&f.file, backend()).unwrap();
        let (tokens, labels, n_seq, seq_len) = batch_of(&f.manifest);
        let batch = Batch {
            tokens: &tokens,
            n_seq,
            seq_len,
            docs: None,
        };
        let full = ForwardOptions {
            mode: ActivationMode::Full,
            prefix: None,
            ..Default::default()
        };
        let out = model
            .forward_backward(&batch, &labels, &full, None, &mut NoHook, None)
            .unwrap();
        let want = read_npy(&fixture(&format!("{name}/grad_embeds.npy")));
        let c = GRAD_TOL
            .check(
                &format!("{name} d_embeds"),
                want.f32.iter().copied(),
                out.d_embeds.iter().copied(),
            )
            .unwrap();
        eprintln!("{name}: d_embeds max abs diff {:.2e}", c.max_abs_diff);
        Tolerance::new(0.0, 1e-5)
            .check(
                &format!("{name} loss"),
                [f.manifest["loss"].as_f64().unwrap()],
                [out.loss.mean()],
            )
            .unwrap();
        let ckpt = ForwardOptions {
            mode: ActivationMode::Checkpoint,
            prefix: None,
            ..Default::default()
        };
        let out2 = model
            .forward_backward(&batch, &labels, &ckpt, None, &mut NoHook, None)
            .unwrap();
        assert_eq!(
            out2.d_embeds, out.d_embeds,
            "{name}: checkpointing changed the gradient"
        );
        assert_eq!(out2.loss, out.loss);
    }
}

#[test]
fn greedy_generation_and_kv_cache_match_transformers() {
    for name in MODELS {
        let f = open(name);
        let model = Llama::new(&f.file, backend()).unwrap();
        for g in f.manifest["greedy"].as_array().unwrap() {
            let prompt = ids(&g["prompt"]);
            let want = ids(&g["continuation"]);
            let params = GenerateParams {
                max_tokens: want.len(),
                ..GenerateParams::default()
            };
            let mut streamed = Vec::new();
            let got = generate(&model, &prompt, &params, &mut |t| {
                streamed.push(t);
                true
            })
            .unwrap();
            assert_eq!(got, want, "{name}: greedy continuation of {prompt:?}");
            assert_eq!(streamed, got);
        }
        // Feeding a sequence through the cache in pieces gives the batch forward's logits.
        let (tokens, _, _, seq_len) = batch_of(&f.manifest);
        let seq = &tokens[..seq_len];
        let fwd = model
            .forward(
                &Batch::single(seq),
                &ForwardOptions {
                    mode: ActivationMode::Inference,
                    prefix: None,
                    ..Default::default()
                },
                &mut NoHook,
            )
            .unwrap();
        let mut cache = KvCache::new(&model.config, seq_len).unwrap();
        let mut start = 0;
        for piece in [5, 1, 1, 9, seq_len - 16] {
            let logits = model
                .forward_cached(
                    &mut cache,
                    Input::Tokens(&seq[start..start + piece]),
                    &mut NoHook,
                )
                .unwrap();
            start += piece;
            let want = fwd.logits(&[start - 1]).unwrap();
            Tolerance::new(1e-5, 1e-5)
                .check(&format!("{name} cached logits at {start}"), want, logits)
                .unwrap();
        }
        assert_eq!(cache.len(), seq_len);
        let err = model
            .forward_cached(&mut cache, Input::Tokens(&[1]), &mut NoHook)
            .unwrap_err()
            .to_string();
        assert!(err.contains("exceed"), "{err}");
    }
}

/// Scales each linear output by `1 + alpha[site]`: every site's forward and backward run through
/// the hook, so a wrong `x` or `dy` at any site shows in `dalpha`.
struct ScaleHook {
    n_layer: usize,
    alpha: Vec<f32>,
    dalpha: Vec<f64>,
}

impl ScaleHook {
    fn index(&self, s: LinearSite) -> usize {
        s.layer * LinearKind::ALL.len() + LinearKind::ALL.iter().position(|&k| k == s.kind).unwrap()
    }
}

impl LinearHook for ScaleHook {
    fn forward(
        &mut self,
        site: LinearSite,
        base: &BaseLinear,
        x: &[f32],
        m: usize,
        y: &mut [f32],
    ) -> edgetune::Result<()> {
        assert!(site.layer < self.n_layer);
        base.forward(x, m, y)?;
        let a = 1.0 + self.alpha[self.index(site)];
        y.iter_mut().for_each(|v| *v *= a);
        Ok(())
    }

    fn backward(
        &mut self,
        site: LinearSite,
        base: &BaseLinear,
        x: &[f32],
        dy: &[f32],
        m: usize,
        dx: &mut [f32],
    ) -> edgetune::Result<()> {
        let i = self.index(site);
        let mut y = vec![0f32; dy.len()];
        base.forward(x, m, &mut y)?;
        self.dalpha[i] += y
            .iter()
            .zip(dy)
            .map(|(&a, &b)| a as f64 * b as f64)
            .sum::<f64>();
        let scaled: Vec<f32> = dy.iter().map(|v| v * (1.0 + self.alpha[i])).collect();
        base.backward_input(&scaled, m, dx)
    }
}

#[test]
fn hook_and_prefix_gradients_match_finite_differences() {
    for name in ["tiny-llama", "tiny-qwen2"] {
        let f = open(name);
        let model = Llama::new(&f.file, backend()).unwrap();
        let cfg = model.config.clone();
        let (tokens, labels, _, seq_len) = batch_of(&f.manifest);
        // Two sequences of 10 tokens keep the finite differences quick.
        let (n_seq, t) = (2, 10);
        let tokens: Vec<u32> = (0..n_seq)
            .flat_map(|b| tokens[b * seq_len..b * seq_len + t].to_vec())
            .collect();
        let labels: Vec<i32> = (0..n_seq)
            .flat_map(|b| labels[b * seq_len..b * seq_len + t].to_vec())
            .collect();
        let batch = Batch {
            tokens: &tokens,
            n_seq,
            seq_len: t,
            docs: None,
        };
        let n_sites = cfg.n_layer * LinearKind::ALL.len();
        let mut rng = TestRng::new(11);
        let mut prefix =
            PrefixKv::from_vec(&cfg, 3, rng.vec(cfg.n_layer * 2 * 3 * cfg.kv_dim(), 1.0)).unwrap();
        let mut hook = ScaleHook {
            n_layer: cfg.n_layer,
            alpha: rng.vec(n_sites, 0.1),
            dalpha: vec![0.0; n_sites],
        };
        let mut dprefix = PrefixKv::zeros(&cfg, 3);
        let opts = ForwardOptions {
            mode: ActivationMode::Full,
            prefix: Some(&prefix),
            ..Default::default()
        };
        // Gradient of the summed NLL (denominator 1) for well-scaled differences.
        let out = model
            .forward_backward(
                &batch,
                &labels,
                &opts,
                Some(1),
                &mut hook,
                Some(&mut dprefix),
            )
            .unwrap();
        // Checkpointing re-runs each block's forward through the hook before its backward: the
        // same gradients come out.
        let mut hook2 = ScaleHook {
            n_layer: cfg.n_layer,
            alpha: hook.alpha.clone(),
            dalpha: vec![0.0; n_sites],
        };
        let mut dprefix2 = PrefixKv::zeros(&cfg, 3);
        let ckpt = ForwardOptions {
            mode: ActivationMode::Checkpoint,
            ..opts
        };
        let out2 = model
            .forward_backward(
                &batch,
                &labels,
                &ckpt,
                Some(1),
                &mut hook2,
                Some(&mut dprefix2),
            )
            .unwrap();
        assert_eq!(out2.d_embeds, out.d_embeds, "{name}: checkpointed d_embeds");
        assert_eq!(
            hook2.dalpha, hook.dalpha,
            "{name}: checkpointed hook gradient"
        );
        assert_eq!(dprefix2, dprefix, "{name}: checkpointed prefix gradient");
        let sum_loss = |hook: &mut ScaleHook, prefix: &PrefixKv| {
            let o = ForwardOptions {
                mode: ActivationMode::Inference,
                prefix: Some(prefix),
                ..Default::default()
            };
            model
                .forward(&batch, &o, hook)
                .unwrap()
                .loss(&labels)
                .unwrap()
                .sum_nll
        };
        Tolerance::new(0.0, 1e-6)
            .check(
                "sum loss",
                [sum_loss(&mut hook, &prefix)],
                [out.loss.sum_nll],
            )
            .unwrap();

        let mut alpha = hook.alpha.clone();
        let num = finite_difference(&mut alpha, 1e-2, |a| {
            let mut h = ScaleHook {
                n_layer: cfg.n_layer,
                alpha: a.to_vec(),
                dalpha: vec![0.0; n_sites],
            };
            sum_loss(&mut h, &prefix)
        });
        let tol = Tolerance::new(2e-3, 2e-3);
        tol.check(
            &format!("{name} hook dalpha"),
            num,
            hook.dalpha.iter().copied(),
        )
        .unwrap();

        // A sample of prefix entries: first and last block, keys and values.
        let per = 3 * cfg.kv_dim();
        let picks: Vec<usize> = [
            0,
            1,
            per + 2,
            per + 7,
            (2 * cfg.n_layer - 1) * per + 5,
            2 * cfg.n_layer * per - 1,
        ]
        .to_vec();
        let mut sample: Vec<f32> = picks.iter().map(|&i| prefix.data()[i]).collect();
        let num = finite_difference(&mut sample, 1e-2, |s| {
            let mut p = prefix.clone();
            for (&i, &v) in picks.iter().zip(s) {
                p.data_mut()[i] = v;
            }
            sum_loss(&mut hook, &p)
        });
        let analytic: Vec<f32> = picks.iter().map(|&i| dprefix.data()[i]).collect();
        tol.check(&format!("{name} dprefix"), num, analytic)
            .unwrap();
        prefix.data_mut()[0] += 0.0;
    }
}

#[test]
fn virtual_tokens_act_like_the_tokens_whose_embeddings_they_are() {
    for name in ["tiny-llama", "tiny-qwen2"] {
        let f = open(name);
        let model = Llama::new(&f.file, backend()).unwrap();
        let d = model.config.n_embd;
        let (tokens, _, _, seq_len) = batch_of(&f.manifest);
        let (u, w) = tokens[..seq_len].split_at(4);
        let mut virt = vec![0f32; u.len() * d];
        for (row, &t) in virt.chunks_exact_mut(d).zip(u) {
            model.weights.token_embd.row(t, row).unwrap();
        }
        // Labels on the tokens of w; the full sequence ignores u.
        let labels_w: Vec<i32> = w.iter().map(|&t| t as i32).collect();
        let labels_full: Vec<i32> = [vec![-100; u.len()], labels_w.clone()].concat();
        let opts = ForwardOptions {
            virtual_tokens: Some(&virt),
            ..Default::default()
        };
        let a = model
            .forward_backward(&Batch::single(w), &labels_w, &opts, None, &mut NoHook, None)
            .unwrap();
        let b = model
            .forward_backward(
                &Batch::single(&tokens[..seq_len]),
                &labels_full,
                &ForwardOptions::default(),
                None,
                &mut NoHook,
                None,
            )
            .unwrap();
        assert_eq!(
            a.loss.n_tokens,
            w.len(),
            "{name}: the last virtual token predicts w[0]"
        );
        assert_eq!(a.loss, b.loss, "{name}: loss");
        assert_eq!(a.d_embeds, b.d_embeds, "{name}: d_embeds");
        let fa = model
            .forward(
                &Batch::single(w),
                &ForwardOptions {
                    virtual_tokens: Some(&virt),
                    ..ForwardOptions::inference()
                },
                &mut NoHook,
            )
            .unwrap();
        assert_eq!((fa.seq_len, fa.n_virtual), (seq_len, u.len()));
        // Generation: virtual tokens then the prompt == the prompt after u.
        let params = GenerateParams {
            max_tokens: 6,
            ..GenerateParams::default()
        };
        let want = generate(&model, &tokens[..7], &params, &mut |_| true).unwrap();
        let adapters = GenerateAdapters {
            virtual_tokens: Some(&virt),
            ..Default::default()
        };
        let got = generate_with(&model, &tokens[4..7], &params, adapters, &mut |_| true).unwrap();
        assert_eq!(got, want, "{name}: generation with virtual tokens");
        let mut cache = KvCache::new(&model.config, 8).unwrap();
        let l1 = model
            .forward_cached(&mut cache, Input::Embeddings(&virt), &mut NoHook)
            .unwrap();
        let mut cache2 = KvCache::new(&model.config, 8).unwrap();
        let l2 = model
            .forward_cached(&mut cache2, Input::Tokens(u), &mut NoHook)
            .unwrap();
        assert_eq!(l1, l2, "{name}: cached embeddings input");
    }
}

/// The tiny model re-encoded (Q8_0, or NF4 with double quantization and NF4 embeddings) must run
/// exactly as an F32 model holding its decoded weights: the forward reads every storage through
/// its zero-copy view (embedding rows decoded one at a time).
#[test]
fn quantized_models_run_as_their_decoded_weights() {
    use edgetune::gguf::{GgmlType, GgufWriter, TensorSpec};
    use edgetune::quantize::{quantize_file, EmbeddingPolicy, QuantizeParams, Target};
    use edgetune::weights::Weights;
    let src = open("tiny-llama");
    let dir = tempfile::tempdir().unwrap();
    let targets = [
        (Target::Ggml(GgmlType::Q8_0), EmbeddingPolicy::Keep),
        (Target::Nf4, EmbeddingPolicy::Target),
    ];
    let (tokens, labels, n_seq, seq_len) = batch_of(&src.manifest);
    let batch = Batch {
        tokens: &tokens,
        n_seq,
        seq_len,
        docs: None,
    };
    for (i, (target, embeddings)) in targets.into_iter().enumerate() {
        let q_path = dir.path().join(format!("q{i}.gguf"));
        let params = QuantizeParams {
            target,
            embeddings,
            ..QuantizeParams::default()
        };
        quantize_file(&src.file, &q_path, &params, &mut |_| {}).unwrap();
        let q = GgufFile::open(&q_path).unwrap();
        // The same model with every logical weight decoded to F32.
        let weights = Weights::new(&q).unwrap();
        let mut w = GgufWriter::new();
        w.metadata = src.file.header().metadata.clone();
        let decoded: Vec<Vec<f32>> = weights
            .list()
            .iter()
            .map(|wi| weights.dequantize(wi).unwrap())
            .collect();
        for wi in weights.list() {
            w.add_tensor(TensorSpec::new(wi.name.clone(), GgmlType::F32, &wi.ne))
                .unwrap();
        }
        let f_path = dir.path().join(format!("f{i}.gguf"));
        w.write(&f_path, &mut |j, out| {
            let bytes: Vec<u8> = decoded[j].iter().flat_map(|v| v.to_le_bytes()).collect();
            out.write_all(&bytes)
                .map_err(|e| edgetune::Error::io("writing", e))
        })
        .unwrap();
        let f = GgufFile::open(&f_path).unwrap();
        let (mq, mf) = (
            Llama::new(&q, backend()).unwrap(),
            Llama::new(&f, backend()).unwrap(),
        );
        let lq = mq
            .forward_backward(
                &batch,
                &labels,
                &ForwardOptions::default(),
                None,
                &mut NoHook,
                None,
            )
            .unwrap();
        let lf = mf
            .forward_backward(
                &batch,
                &labels,
                &ForwardOptions::default(),
                None,
                &mut NoHook,
                None,
            )
            .unwrap();
        assert_eq!(lq.loss, lf.loss, "{target:?}: loss");
        assert_eq!(lq.d_embeds, lf.d_embeds, "{target:?}: d_embeds");
        // And it is still the model: the loss moves by a quantization-sized amount only.
        let want = src.manifest["loss"].as_f64().unwrap();
        assert!(
            (lq.loss.mean() - want).abs() < 0.1,
            "{target:?}: loss {} vs f32 {want}",
            lq.loss.mean()
        );
        eprintln!(
            "tiny-llama {target:?}: loss {:.5} (f32 {want:.5})",
            lq.loss.mean()
        );
    }
}

#[test]
fn perplexity_averages_over_predicted_tokens_of_each_sequence() {
    let f = open("tiny-qwen2");
    let model = Llama::new(&f.file, backend()).unwrap();
    let (tokens, _, n_seq, seq_len) = batch_of(&f.manifest);
    let want = read_npy(&fixture("tiny-qwen2/nll.npy"));
    // Whole sequences, one cut short, one of a single token (nothing to predict).
    let mut seqs: Vec<Vec<u32>> = (0..n_seq)
        .map(|b| tokens[b * seq_len..(b + 1) * seq_len].to_vec())
        .collect();
    seqs.push(tokens[..9].to_vec());
    seqs.push(vec![5]);
    let p = edgetune::model::perplexity(&model, &seqs).unwrap();
    let mut sum: f64 = want.f32.iter().map(|&v| v as f64).sum();
    sum += want.f32[..8].iter().map(|&v| v as f64).sum::<f64>();
    let n = n_seq * (seq_len - 1) + 8;
    assert_eq!(p.tokens, n);
    Tolerance::new(0.0, 1e-5)
        .check("perplexity mean nll", [sum / n as f64], [p.mean_nll])
        .unwrap();
    assert!((p.ppl - p.mean_nll.exp()).abs() < 1e-12);
    let long = vec![vec![1u32; model.config.n_ctx_train + 1]];
    let e = edgetune::model::perplexity(&model, &long)
        .unwrap_err()
        .to_string();
    assert!(e.contains("sequence 0 has 129 tokens"), "{e}");
    assert!(edgetune::model::perplexity(&model, &[vec![3]]).is_err());
}
