//! Does the state store change anything? Paged state under a budget far below the state size
//! must give the same bits as RAM state, and a run saved and resumed from a state checkpoint
//! must continue exactly as the uninterrupted run (both also equal to the torch /
//! bitsandbytes fixtures of tests/optim_reference.rs).

mod optim_util;

use edgetune::optim::{
    AdamW8bitConfig, AdamWConfig, Optimizer, PagedConfig, PagedStore, Rule, SgdConfig, StoreKind,
};
use optim_util::*;

/// Every rule of the fixtures with its base lr, steps and fixture run.
fn cases() -> Vec<(Rule, f64, usize, &'static str)> {
    let adam = AdamWConfig {
        weight_decay: 0.01,
        ..AdamWConfig::default()
    };
    vec![
        (Rule::AdamW(adam), 1e-3, 20, "adamw_wd0.01"),
        (
            Rule::Sgd(SgdConfig {
                momentum: 0.9,
                weight_decay: 0.01,
            }),
            1e-2,
            20,
            "sgd_momentum",
        ),
        (
            Rule::AdamW8bit(AdamW8bitConfig {
                adam,
                min_8bit_size: 4096,
            }),
            1e-3,
            10,
            "adamw8bit",
        ),
    ]
}

/// An optimizer paging 4 KiB pages under a 2-page budget (the state is 28 to 113 KB).
fn paged(rule: Rule, path: &std::path::Path) -> (Optimizer, usize) {
    let layout = Optimizer::layout(&rule, &param_set(), 4096).unwrap();
    let state_bytes = layout.total_bytes() as usize;
    let budget = 2 * layout.max_record_bytes();
    let mut config = PagedConfig::new(path, budget);
    config.readahead_pages = 2;
    let store = PagedStore::create(layout, config).unwrap();
    assert!(
        budget * 3 < state_bytes,
        "budget {budget} vs state {state_bytes}"
    );
    let opt = Optimizer::with_store(rule, param_set(), Box::new(store)).unwrap();
    (opt, budget)
}

#[test]
fn paged_state_under_a_small_budget_gives_bit_identical_params_and_checkpoints() {
    let fx = Fixtures::load();
    let dir = tempfile::tempdir().unwrap();
    for (rule, lr, steps, run) in cases() {
        let mut ram = Optimizer::new(rule, param_set(), StoreKind::Ram).unwrap();
        let mut ram_params = init_params();
        train(&mut ram, &mut ram_params, steps, None, lr, None);

        let (mut opt, budget) = paged(rule, &dir.path().join("state"));
        let mut params = init_params();
        train(&mut opt, &mut params, steps, None, lr, None);
        assert!(opt.store().resident_bytes() <= budget);
        assert_eq!(params, ram_params, "{run}: paged and RAM parameters differ");
        let diff = compare(&params, &fx.f32s(&format!("{run}_params")));
        assert_eq!(diff.differ, 0, "{run}: paged run vs reference: {diff:?}");

        // The checkpoint does not depend on the store or the page size.
        let (a, b) = (dir.path().join("ram.st"), dir.path().join("paged.st"));
        ram.save_state(&a).unwrap();
        opt.save_state(&b).unwrap();
        assert!(
            std::fs::read(&a).unwrap() == std::fs::read(&b).unwrap(),
            "{run}"
        );
    }
}

#[test]
fn paged_store_really_pages() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state");
    let rule = Rule::AdamW(AdamWConfig::default());
    let layout = Optimizer::layout(&rule, &param_set(), 4096).unwrap();
    let pages = layout.chunk_count() as u64;
    let store = PagedStore::create(layout.clone(), PagedConfig::new(&path, 4 * 4096)).unwrap();
    assert_eq!(
        std::fs::metadata(&path).unwrap().len(),
        layout.total_bytes(),
        "preallocated"
    );
    let mut opt = Optimizer::with_store(rule, param_set(), Box::new(store)).unwrap();
    let mut params = init_params();
    train(&mut opt, &mut params, 3, None, 1e-3, None);
    // A cyclic walk over more pages than the budget holds: every access misses; with
    // read-ahead of 4 pages one miss in four reads, and every page is read and written back
    // each step (the last 4 pages of the last step are still in RAM, not written).
    let stats = opt.store().paging_stats().unwrap();
    assert!(pages > 4);
    assert_eq!(stats.pages_read, 3 * pages);
    assert_eq!(stats.pages_written, 3 * pages - 4);
    assert_eq!(stats.hits + stats.misses, 3 * pages);
    assert!(opt.store().resident_bytes() <= 4 * 4096);
    drop(opt);
    assert!(!path.exists(), "state file removed on drop");
}

#[test]
fn resuming_from_a_state_checkpoint_continues_bit_identically() {
    let fx = Fixtures::load();
    let dir = tempfile::tempdir().unwrap();
    for (rule, lr, steps, run) in cases() {
        let half = steps / 2;
        let mut first = Optimizer::new(rule, param_set(), StoreKind::Ram).unwrap();
        let mut params = init_params();
        train(&mut first, &mut params, half, None, lr, None);
        let ckpt = dir.path().join(format!("{run}.safetensors"));
        first.save_state(&ckpt).unwrap();
        drop(first);

        // Resume into a paged store, to cross the two as well.
        let (mut resumed, _) = paged(rule, &dir.path().join("state"));
        resumed.load_state(&ckpt).unwrap();
        assert_eq!(resumed.steps_done(), half as u64);
        train(&mut resumed, &mut params, steps, None, lr, None);
        let diff = compare(&params, &fx.f32s(&format!("{run}_params")));
        assert_eq!(diff.differ, 0, "{run}: resumed run vs reference: {diff:?}");
    }
}

#[test]
fn state_checkpoint_rejects_other_rules_and_parameters() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.safetensors");
    let rule = Rule::AdamW(AdamWConfig::default());
    let mut opt = Optimizer::new(rule, param_set(), StoreKind::Ram).unwrap();
    let mut params = init_params();
    train(&mut opt, &mut params, 2, None, 1e-3, None);
    opt.save_state(&path).unwrap();

    let other_rule = Rule::AdamW(AdamWConfig {
        weight_decay: 0.1,
        ..AdamWConfig::default()
    });
    let mut o = Optimizer::new(other_rule, param_set(), StoreKind::Ram).unwrap();
    let err = o.load_state(&path).unwrap_err().to_string();
    assert!(err.contains("\"weight_decay\":0.1"), "{err}");

    let mut names = NAMES;
    names[1] = "renamed";
    let set = edgetune::optim::ParamSet::from_specs(names.iter().copied().zip(SIZES)).unwrap();
    let mut o = Optimizer::new(rule, set, StoreKind::Ram).unwrap();
    let err = o.load_state(&path).unwrap_err().to_string();
    assert!(
        err.contains("renamed.exp_avg is missing")
            && err.contains("blk.0.attn_q.lora_b.exp_avg_sq is not a state tensor"),
        "{err}"
    );

    let mut bytes = std::fs::read(&path).unwrap();
    bytes.truncate(bytes.len() - 4);
    std::fs::write(&path, &bytes).unwrap();
    let mut o = Optimizer::new(rule, param_set(), StoreKind::Ram).unwrap();
    assert!(o.load_state(&path).is_err());
}

#[test]
fn state_checkpoint_is_plain_safetensors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("state.safetensors");
    let rule = Rule::AdamW8bit(AdamW8bitConfig::default());
    let mut opt = Optimizer::new(rule, param_set(), StoreKind::Ram).unwrap();
    let mut params = init_params();
    train(&mut opt, &mut params, 1, None, 1e-3, None);
    opt.save_state(&path).unwrap();
    let bytes = std::fs::read(&path).unwrap();
    let n = u64::from_le_bytes(bytes[..8].try_into().unwrap()) as usize;
    assert_eq!(n % 8, 0);
    let header: serde_json::Value = serde_json::from_slice(&bytes[8..8 + n]).unwrap();
    assert_eq!(header["__metadata__"]["format"], "edgetune-optimizer");
    assert_eq!(header["__metadata__"]["step"], "1");
    let t = &header["blk.1.ffn_up.lora_b.state1"];
    assert_eq!(t["dtype"], "U8");
    assert_eq!(t["shape"], serde_json::json!([10000]));
    assert_eq!(
        header["blk.1.ffn_up.lora_b.absmax1"]["shape"],
        serde_json::json!([40])
    );
    assert_eq!(header["blk.0.attn_q.lora_b.state2"]["dtype"], "F32");
    // Offsets tile the data buffer with no gap, F32 tensors first.
    let mut spans: Vec<(u64, u64, String)> = header
        .as_object()
        .unwrap()
        .iter()
        .filter(|(k, _)| *k != "__metadata__")
        .map(|(_, v)| {
            let o = v["data_offsets"].as_array().unwrap();
            (
                o[0].as_u64().unwrap(),
                o[1].as_u64().unwrap(),
                v["dtype"].to_string(),
            )
        })
        .collect();
    spans.sort();
    let mut end = 0;
    for (b, e, _) in &spans {
        assert_eq!(*b, end);
        end = *e;
    }
    assert_eq!(8 + n as u64 + end, bytes.len() as u64);
    let first_u8 = spans.iter().position(|s| s.2 == "\"U8\"").unwrap();
    assert!(spans[first_u8..].iter().all(|s| s.2 == "\"U8\""));
}

#[test]
fn bad_steps_are_errors_that_change_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let rule = Rule::AdamW8bit(AdamW8bitConfig::default());
    let mut opt = Optimizer::new(rule, param_set(), StoreKind::Ram).unwrap();
    let mut params = init_params();
    train(&mut opt, &mut params, 2, None, 1e-3, None);
    let before = dir.path().join("before");
    opt.save_state(&before).unwrap();
    let snapshot = params.clone();

    let mut g = grads(2);
    g[3][9999] = f32::NAN;
    let mut pv: Vec<&mut [f32]> = params.iter_mut().map(|p| p.as_mut_slice()).collect();
    let gv: Vec<&[f32]> = g.iter().map(|g| g.as_slice()).collect();
    let err = opt.step(&mut pv, &gv, 1e-3).unwrap_err().to_string();
    assert!(
        err.contains("blk.1.ffn_up.lora_b") && err.contains("9999"),
        "{err}"
    );
    assert!(opt.step(&mut pv, &gv[..3], 1e-3).is_err());
    assert!(opt.step(&mut pv, &gv, -1.0).is_err());
    let err = opt
        .step(&mut pv[..3], &gv[..3], 1e-3)
        .unwrap_err()
        .to_string();
    assert!(err.contains("3 parameters given for 4"), "{err}");

    assert_eq!(opt.steps_done(), 2);
    assert_eq!(params, snapshot);
    let after = dir.path().join("after");
    opt.save_state(&after).unwrap();
    assert!(std::fs::read(&before).unwrap() == std::fs::read(&after).unwrap());

    let bad = Rule::AdamW(AdamWConfig {
        beta2: 1.0,
        ..AdamWConfig::default()
    });
    assert!(Optimizer::new(bad, param_set(), StoreKind::Ram).is_err());
}
