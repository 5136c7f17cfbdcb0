//! Are adapter files read and written robustly? Every mismatch reported at once, config variants
//! PEFT writes (target_modules list, "all-linear", regex; unknown keys), refusal of features we do
//! not implement, half-precision tensors, atomic writes, our own round trip, and the llama.cpp LoRA
//! GGUF export.

mod adapters_support;

use adapters_support::*;
use edgetune::adapters::peft::{hf_tensors, safetensors_bytes, NamedTensor};
use edgetune::adapters::{
    llama_cpp::export_lora_gguf, load_peft_dir, parse_targets, save_peft_dir, Adapter, AnyAdapter,
    Ia3, Ia3Config, Lora, LoraConfig, Method, PrefixConfig, PrefixInit, PrefixTuning, PromptConfig,
    PromptTuning, Site, Target,
};
use edgetune::gguf::{GgmlType, GgufFile, Value};
use serde_json::{json, Value as Json};
use std::path::{Path, PathBuf};

/// A copy of a fixture directory in a temp dir, with optional edits to config and tensors.
fn variant(
    tmp: &Path,
    name: &str,
    edit_config: impl FnOnce(&mut serde_json::Map<String, Json>),
    edit_tensors: impl FnOnce(&mut Vec<NamedTensor>),
) -> PathBuf {
    let dir = tmp.join(format!("{name}-{}", rand_suffix()));
    std::fs::create_dir_all(&dir).unwrap();
    let cfg_text = std::fs::read_to_string(fixture(name).join("adapter_config.json")).unwrap();
    let mut cfg: serde_json::Map<String, Json> = serde_json::from_str(&cfg_text).unwrap();
    edit_config(&mut cfg);
    std::fs::write(
        dir.join("adapter_config.json"),
        serde_json::to_string_pretty(&cfg).unwrap(),
    )
    .unwrap();
    let mut tensors: Vec<NamedTensor> =
        read_safetensors(&fixture(name).join("adapter_model.safetensors"))
            .into_iter()
            .map(|(k, t)| (k, t.shape, t.data))
            .collect();
    edit_tensors(&mut tensors);
    std::fs::write(
        dir.join("adapter_model.safetensors"),
        safetensors_bytes(&tensors).unwrap(),
    )
    .unwrap();
    dir
}

fn rand_suffix() -> u64 {
    use std::sync::atomic::{AtomicU64, Ordering};
    static N: AtomicU64 = AtomicU64::new(0);
    N.fetch_add(1, Ordering::Relaxed)
}

fn load_err(dir: &Path) -> String {
    match load_peft_dir(dir, &tiny_dims()) {
        Ok(_) => panic!("{} loaded", dir.display()),
        Err(e) => e.to_string(),
    }
}

#[test]
fn every_tensor_mismatch_is_reported_at_once() {
    let tmp = tempfile::tempdir().unwrap();
    let q_a = "base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight";
    let v_b = "base_model.model.model.layers.1.self_attn.v_proj.lora_B.weight";
    let dir = variant(
        tmp.path(),
        "lora",
        |_| {},
        |t| {
            t.retain(|(k, _, _)| k != q_a);
            let b = t.iter_mut().find(|(k, _, _)| k == v_b).unwrap();
            b.1 = vec![16, 16];
            t.push((
                "base_model.model.lm_head.weight".into(),
                vec![2],
                vec![0.0; 2],
            ));
        },
    );
    let e = load_err(&dir);
    assert!(e.contains("3 problems"), "{e}");
    assert!(e.contains(&format!("missing tensor {q_a} [8, 64]")), "{e}");
    assert!(
        e.contains(&format!("tensor {v_b}: shape [16, 16], expected [32, 8]")),
        "{e}"
    );
    assert!(
        e.contains("unexpected tensor base_model.model.lm_head.weight"),
        "{e}"
    );
    assert!(
        e.contains(&dir.display().to_string()),
        "error names the directory: {e}"
    );

    // Rank from the config that disagrees with the file: every tensor is reported.
    let dir = variant(
        tmp.path(),
        "lora",
        |c| {
            c.insert("r".into(), json!(4));
        },
        |_| {},
    );
    let e = load_err(&dir);
    assert!(e.contains("28 problems"), "{e}");
}

#[test]
fn target_module_forms_resolve_like_peft() {
    let tmp = tempfile::tempdir().unwrap();
    let sites = |dir: &Path| -> Vec<Site> {
        match load_peft_dir(dir, &tiny_dims()).unwrap() {
            AnyAdapter::Lora(l) => l.sites().collect(),
            _ => unreachable!(),
        }
    };
    let all: Vec<Site> = (0..2)
        .flat_map(|l| Target::ALL.map(|t| Site::new(l, t)))
        .collect();
    // PEFT's own expansion of "all-linear" (14 module paths) and the string itself.
    assert_eq!(sites(&fixture("lora")), all);
    let dir = variant(
        tmp.path(),
        "lora",
        |c| {
            c.insert("target_modules".into(), json!("all-linear"));
        },
        |_| {},
    );
    assert_eq!(sites(&dir), all);
    // A regular expression: we take the adapted layers from the file.
    let dir = variant(
        tmp.path(),
        "lora_rslora",
        |c| {
            c.insert("target_modules".into(), json!(r".*\.(q_proj|k_proj)"));
            c.remove("layers_to_transform");
        },
        |_| {},
    );
    assert_eq!(
        sites(&dir),
        vec![Site::new(1, Target::AttnQ), Site::new(1, Target::AttnK)]
    );
    // layers_to_transform as a bare integer, and exclude_modules.
    let dir = variant(
        tmp.path(),
        "lora_rslora",
        |c| {
            c.insert("layers_to_transform".into(), json!(1));
            c.insert(
                "target_modules".into(),
                json!(["q_proj", "k_proj", "v_proj"]),
            );
            c.insert("exclude_modules".into(), json!(["v_proj"]));
        },
        |_| {},
    );
    assert_eq!(
        sites(&dir),
        vec![Site::new(1, Target::AttnQ), Site::new(1, Target::AttnK)]
    );
}

#[test]
fn unknown_keys_are_ignored_and_kept() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = variant(
        tmp.path(),
        "ia3",
        |c| {
            c.insert("some_future_key".into(), json!({"x": [1, 2]}));
            c.insert(
                "base_model_name_or_path".into(),
                json!("HuggingFaceTB/SmolLM2-135M"),
            );
        },
        |_| {},
    );
    let a = load_peft_dir(&dir, &tiny_dims()).unwrap();
    let out = tmp.path().join("ia3-out");
    save_peft_dir(a.as_adapter(), &out).unwrap();
    let cfg: Json =
        serde_json::from_str(&std::fs::read_to_string(out.join("adapter_config.json")).unwrap())
            .unwrap();
    assert_eq!(cfg["some_future_key"], json!({"x": [1, 2]}));
    assert_eq!(
        cfg["base_model_name_or_path"],
        json!("HuggingFaceTB/SmolLM2-135M")
    );
}

#[test]
fn unsupported_features_are_refused_together() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = variant(
        tmp.path(),
        "lora",
        |c| {
            c.insert("use_dora".into(), json!(true));
            c.insert("bias".into(), json!("all"));
            c.insert("rank_pattern".into(), json!({"q_proj": 4}));
            c.insert("init_lora_weights".into(), json!("pissa"));
        },
        |_| {},
    );
    let e = load_err(&dir);
    for k in ["use_dora", "bias", "rank_pattern", "pissa"] {
        assert!(e.contains(k), "{k} not named: {e}");
    }
    let dir = variant(
        tmp.path(),
        "prefix",
        |c| {
            c.insert("token_dim".into(), json!(64));
            c.insert("task_type".into(), json!("SEQ_CLS"));
        },
        |_| {},
    );
    let e = load_err(&dir);
    assert!(e.contains("token_dim = 64") && e.contains("SEQ_CLS"), "{e}");
    let dir = variant(
        tmp.path(),
        "prompt",
        |c| {
            c.insert("peft_type".into(), json!("LOHA"));
        },
        |_| {},
    );
    assert!(load_err(&dir).contains("LOHA"));
    let missing = tmp.path().join("nothing-here");
    assert!(load_err(&missing).contains("adapter_config.json"));
}

#[test]
fn half_precision_tensors_load() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("f16");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(
        fixture("prompt/adapter_config.json"),
        dir.join("adapter_config.json"),
    )
    .unwrap();
    let t = &read_safetensors(&fixture("prompt/adapter_model.safetensors"))["prompt_embeddings"];
    let bytes: Vec<u8> = t
        .data
        .iter()
        .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
        .collect();
    let view =
        safetensors::tensor::TensorView::new(safetensors::Dtype::BF16, t.shape.clone(), &bytes)
            .unwrap();
    safetensors::serialize_to_file(
        [("prompt_embeddings", view)],
        None,
        &dir.join("adapter_model.safetensors"),
    )
    .unwrap();
    let a = load_peft_dir(&dir, &tiny_dims()).unwrap();
    let got = a.as_prompt().unwrap().embeddings();
    let want: Vec<f32> = t
        .data
        .iter()
        .map(|&v| half::bf16::from_f32(v).to_f32())
        .collect();
    assert_eq!(got, &want[..]);
}

/// Fresh adapters with random values survive save + load unchanged (including the Q/K permutation).
#[test]
fn our_adapters_round_trip() {
    let d = tiny_dims();
    let mut lcfg = LoraConfig::new(
        3,
        5.0,
        &parse_targets("q_proj,attn_k,ffn_down").unwrap(),
        Some(&[1]),
        &d,
    );
    lcfg.dropout = 0.1;
    lcfg.rslora = true;
    let mut adapters: Vec<Box<dyn Adapter>> = vec![
        Box::new(Lora::new(&d, lcfg, 1).unwrap()),
        Box::new(
            Ia3::new(
                &d,
                Ia3Config::new(
                    &[Target::AttnQ, Target::AttnK, Target::FfnDown],
                    Some(&[1]),
                    &d,
                ),
            )
            .unwrap(),
        ),
        Box::new(
            PrefixTuning::new(
                &d,
                PrefixConfig {
                    num_virtual_tokens: 3,
                    init: PrefixInit::Zero,
                },
                1,
            )
            .unwrap(),
        ),
        Box::new(
            PromptTuning::new(
                &d,
                PromptConfig {
                    num_virtual_tokens: 2,
                },
                1,
            )
            .unwrap(),
        ),
    ];
    let tmp = tempfile::tempdir().unwrap();
    for (i, a) in adapters.iter_mut().enumerate() {
        let mut rng = Rng::new(i as u64);
        for p in a.params_mut().iter_mut() {
            p.data_mut().iter_mut().for_each(|v| *v = rng.f32());
        }
        let dir = tmp.path().join(format!("a{i}"));
        save_peft_dir(a.as_ref(), &dir).unwrap();
        let back = load_peft_dir(&dir, &d).unwrap();
        let back = back.as_adapter();
        assert_eq!(back.method(), a.method());
        assert_eq!(back.params(), a.params(), "{:?}", a.method());
        assert_eq!(
            back.peft_config().method,
            a.peft_config().method,
            "{:?}",
            a.method()
        );
        // Saving the loaded adapter gives the same bytes.
        let again = tmp.path().join(format!("b{i}"));
        save_peft_dir(back, &again).unwrap();
        for f in ["adapter_config.json", "adapter_model.safetensors"] {
            assert_eq!(
                std::fs::read(dir.join(f)).unwrap(),
                std::fs::read(again.join(f)).unwrap(),
                "{f}"
            );
        }
    }
}

#[test]
fn saving_is_atomic_and_keeps_other_files() {
    let tmp = tempfile::tempdir().unwrap();
    let a = load_peft_dir(&fixture("ia3"), &tiny_dims()).unwrap();
    // New directory (parents created): built aside, renamed into place, nothing left behind.
    let dir = tmp.path().join("runs/out");
    save_peft_dir(a.as_adapter(), &dir).unwrap();
    let names = |d: &Path| {
        let mut v: Vec<String> = std::fs::read_dir(d)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    };
    assert_eq!(
        names(&dir),
        ["adapter_config.json", "adapter_model.safetensors"]
    );
    assert_eq!(names(&tmp.path().join("runs")), ["out"]);
    // Existing directory (a training run's output): files replaced, the rest kept.
    std::fs::write(dir.join("metrics.jsonl"), "{}\n").unwrap();
    std::fs::write(dir.join("adapter_model.safetensors"), "stale").unwrap();
    save_peft_dir(a.as_adapter(), &dir).unwrap();
    assert_eq!(
        names(&dir),
        [
            "adapter_config.json",
            "adapter_model.safetensors",
            "metrics.jsonl"
        ]
    );
    assert_eq!(
        std::fs::read(dir.join("adapter_model.safetensors")).unwrap(),
        std::fs::read(fixture("ia3/adapter_model.safetensors")).unwrap()
    );
}

#[test]
fn method_names_parse() {
    for m in [Method::Lora, Method::Ia3, Method::Prefix, Method::Prompt] {
        assert_eq!(Method::from_cli_name(m.cli_name()).unwrap(), m);
        assert_eq!(Method::from_peft_type(m.peft_type()), Some(m));
    }
    let e = Method::from_cli_name("loha").unwrap_err().to_string();
    assert!(e.contains("loha") && e.contains("lora, ia3"), "{e}");
}

/// The llama.cpp LoRA GGUF (FORMATS.md §5): metadata, names, ne, f32 data; lora_b rows in GGUF
/// order, i.e. PEFT's B permuted as convert_lora_to_gguf.py permutes it; alpha such that alpha/r is
/// the scale (rsLoRA folded in).
#[test]
fn llama_cpp_export_has_the_converter_layout() {
    let tmp = tempfile::tempdir().unwrap();
    for (name, scale) in [("lora", 2.0f32), ("lora_rslora", 6.5 / 2.0)] {
        let a = load_peft_dir(&fixture(name), &tiny_dims()).unwrap();
        let lora = a.as_lora().unwrap();
        let path = tmp.path().join(format!("{name}.gguf"));
        export_lora_gguf(lora, "llama", &path).unwrap();
        let f = GgufFile::open(&path).unwrap();
        let h = f.header();
        assert_eq!(h.get_str("general.type").unwrap(), "adapter");
        assert_eq!(h.get_str("general.architecture").unwrap(), "llama");
        assert_eq!(h.get_str("adapter.type").unwrap(), "lora");
        let r = lora.config().rank;
        assert!(matches!(h.get("adapter.lora.alpha"), Some(Value::F32(_))));
        let alpha = h.get_f32("adapter.lora.alpha").unwrap();
        assert!(
            (alpha / r as f32 - scale).abs() < 1e-6,
            "{name}: alpha {alpha}"
        );
        let file = read_safetensors(&fixture(name).join("adapter_model.safetensors"));
        assert_eq!(h.tensors.len(), file.len());
        for site in lora.sites() {
            let key = format!(
                "base_model.model.{}",
                site.target.hf_module_path(site.layer)
            );
            let base = format!("blk.{}.{}.weight", site.layer, site.target.gguf_name());
            let (n_in, n_out) = site.target.shape(&tiny_dims());
            for (suffix, ne, want) in [
                (
                    "lora_a",
                    [n_in, r],
                    file[&format!("{key}.lora_A.weight")].data.clone(),
                ),
                ("lora_b", [r, n_out], {
                    let b = &file[&format!("{key}.lora_B.weight")];
                    match permuted_heads(site.target) {
                        Some(h) => permute_reshape(&b.data, n_out, r, h),
                        None => b.data.clone(),
                    }
                }),
            ] {
                let (info, bytes) = f.tensor_by_name(&format!("{base}.{suffix}")).unwrap();
                assert_eq!(info.ty, GgmlType::F32);
                assert_eq!(info.ne, [ne[0] as u64, ne[1] as u64], "{base}.{suffix}");
                assert_eq!(bytes, &f32_bytes(&want)[..], "{base}.{suffix}");
            }
        }
    }
    // PEFT order of the file we export from is what hf_tensors gives back.
    let a = load_peft_dir(&fixture("lora"), &tiny_dims()).unwrap();
    let file = read_safetensors(&fixture("lora/adapter_model.safetensors"));
    for (k, shape, data) in hf_tensors(a.as_adapter()).unwrap() {
        assert_eq!(file[&k].shape, shape);
        assert_eq!(file[&k].data, data, "{k}");
    }
}
