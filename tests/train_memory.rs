//! Does training keep the memory plan's promise? The planner's decisions and its refusal (with a
//! smallest budget that really works), `train --dry-run` and `--memory-budget` on the command
//! line, a real run on SmolLM2-135M in NF4 whose anonymous RSS, sampled from outside every 20 ms,
//! stays within the budget and the plan, and paged optimizer state giving the same adapter as
//! RAM state, bit for bit.

use edgetune::adapters::parse_targets;
use edgetune::backend::cpu::CpuBackend;
use edgetune::gguf::GgufFile;
use edgetune::model::{ActivationMode, Llama};
use edgetune::optim::StateMode;
use edgetune::train::model::{model_dims, new_adapter, AdapterSpec};
use edgetune::train::plan::{plan, Baseline, Checkpointing, PlanInput};
use edgetune::train::session::{AdapterInit, Session, SessionConfig};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn q4_model() -> PathBuf {
    root().join("models/SmolLM2-135M-Instruct.Q4_1.gguf")
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

/// SmolLM2 quantized to NF4 by `edgetune quantize` (as a user would).
fn nf4_model(dir: &Path) -> PathBuf {
    let out = dir.join("smollm2-nf4.gguf");
    let st = Command::new(env!("CARGO_BIN_EXE_edgetune"))
        .args(["quantize", s(&q4_model()), "-o", s(&out), "--type", "nf4"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .unwrap();
    assert!(st.success());
    out
}

/// `n` pre-tokenized sequences of `len` tokens each.
fn write_data(dir: &Path, n: u32, len: u32) -> PathBuf {
    let path = dir.join("data.jsonl");
    let mut text = String::new();
    for s in 0..n {
        let ids: Vec<u32> = (0..len).map(|t| (s * 131 + t * 17) % 4000 + 30).collect();
        text += &serde_json::json!({ "input_ids": ids }).to_string();
        text.push('\n');
    }
    std::fs::write(&path, text).unwrap();
    path
}

fn lora_all_linear(rank: usize) -> AdapterSpec {
    AdapterSpec {
        targets: Some(parse_targets("all-linear").unwrap()),
        rank,
        alpha: 2.0 * rank as f32,
        ..AdapterSpec::default()
    }
}

/// RssAnon of a process in bytes, `None` once it is gone.
fn rss_anon(pid: u32) -> Option<u64> {
    let st = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = st.lines().find(|l| l.starts_with("RssAnon:"))?;
    let kb: u64 = line[8..]
        .trim()
        .trim_end_matches("kB")
        .trim()
        .parse()
        .ok()?;
    Some(kb * 1024)
}

#[test]
fn the_planner_checkpoints_only_when_needed_and_its_smallest_budget_works() {
    let file = GgufFile::open(q4_model()).unwrap();
    let model = Llama::new(&file, Arc::new(CpuBackend::new(2).unwrap())).unwrap();
    let adapter = new_adapter(&model_dims(&model.config), &lora_all_linear(8), 1).unwrap();
    let input = |budget: Option<u64>, ck: Checkpointing, mode: StateMode| PlanInput {
        config: &model.config,
        mapped_bytes: 0,
        adapter: &adapter,
        seq_len: 256,
        batch_size: 1,
        threads: 2,
        state_mode: mode,
        checkpointing: ck,
        budget,
        baseline: Baseline {
            bytes: 20 << 20,
            measured: true,
        },
        data_bytes: 1 << 20,
    };
    let free = plan(&input(None, Checkpointing::Auto, StateMode::Ram), 16 << 20).unwrap();
    assert_eq!(free.activations, ActivationMode::Full);
    assert_eq!(
        free.lm_chunk_rows,
        edgetune::model::llama::DEFAULT_LM_CHUNK_ROWS
    );
    // A budget just above the no-checkpointing total keeps everything.
    let b = free.total + (1 << 20);
    let p = plan(&input(Some(b), Checkpointing::Auto, StateMode::Ram), 0).unwrap();
    assert_eq!(p.activations, ActivationMode::Full);
    assert!(p.total <= b);
    // 160 MiB cannot hold 30 blocks of saved activations at 256 tokens: checkpointing.
    let p = plan(
        &input(Some(160 << 20), Checkpointing::Auto, StateMode::Ram),
        0,
    )
    .unwrap();
    assert_eq!(p.activations, ActivationMode::Checkpoint);
    assert!(p.total <= 160 << 20);
    // ... unless checkpointing is off: refused.
    let err = plan(
        &input(Some(160 << 20), Checkpointing::Off, StateMode::Ram),
        0,
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("saved activations"), "{err}");
    // Paged state takes what the budget leaves, at least a few pages.
    let p = plan(
        &input(Some(90 << 20), Checkpointing::Auto, StateMode::Paged),
        0,
    )
    .unwrap();
    assert!(
        p.state_ram_bytes < p.state_bytes && p.state_ram_bytes > 0,
        "{p}"
    );
    assert!(p.total <= 90 << 20);
    // The refusal names the largest consumers and a budget that then works (and 1 MiB less
    // does not).
    for mode in [StateMode::Ram, StateMode::Paged8bit] {
        let err = plan(&input(Some(32 << 20), Checkpointing::Auto, mode), 0)
            .unwrap_err()
            .to_string();
        assert!(err.contains("Largest consumers: "), "{err}");
        let mib: u64 = err
            .split("--memory-budget ")
            .nth(2)
            .and_then(|t| t.split('M').next())
            .and_then(|t| t.parse().ok())
            .unwrap_or_else(|| panic!("no smallest budget in: {err}"));
        plan(&input(Some(mib << 20), Checkpointing::Auto, mode), 0).unwrap();
        assert!(plan(&input(Some((mib - 1) << 20), Checkpointing::Auto, mode), 0).is_err());
    }
}

#[test]
fn dry_run_prints_the_plan_and_a_small_budget_is_refused_before_step_0() {
    let tmp = tempfile::tempdir().unwrap();
    let model = nf4_model(tmp.path());
    let data = write_data(tmp.path(), 4, 256);
    let out = tmp.path().join("out");
    let run = |extra: &[&str]| {
        let mut args = vec![
            "train",
            s(&model),
            "--data",
            s(&data),
            "-o",
            s(&out),
            "--targets",
            "all-linear",
            "--seq-len",
            "256",
        ];
        args.extend_from_slice(extra);
        Command::new(env!("CARGO_BIN_EXE_edgetune"))
            .args(&args)
            .output()
            .unwrap()
    };
    let o = run(&["--memory-budget", "160M", "--dry-run"]);
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    for want in [
        "memory plan",
        "runtime + model + tokenizer",
        "measured",
        "checkpointed layer inputs",
        "recompute slot",
        "logits chunk",
        "optimizer state in RAM",
        "budget",
        "decisions: checkpointing on, logits chunk 512 rows, optimizer state in RAM",
        "memory-mapped read-only",
    ] {
        assert!(text.contains(want), "missing {want:?} in:\n{text}");
    }
    assert!(!out.exists(), "--dry-run wrote {}", out.display());

    let o = run(&["--memory-budget", "32M"]);
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(!o.status.success());
    for want in [
        "--memory-budget 32.0 MiB",
        "is too small for this run: it needs at least",
        "would work",
        "Largest consumers: ",
        "optimizer state in RAM",
    ] {
        assert!(err.contains(want), "missing {want:?} in: {err}");
    }
    assert!(!err.contains("step 1"), "{err}");
    assert!(!out.exists(), "a refused run wrote {}", out.display());

    // `inspect --plan`: the same planner without data.
    let o = Command::new(env!("CARGO_BIN_EXE_edgetune"))
        .args(["inspect", s(&model), "--plan", "--seq-len", "256"])
        .args(["--targets", "all-linear", "--memory-budget", "160M"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&o.stdout);
    assert!(o.status.success());
    assert!(text.contains("decisions: checkpointing on"), "{text}");

    let o = run(&["--memory-budget", "12X"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("size \"12X\""));
    let o = run(&["--checkpointing", "sometimes", "--dry-run"]);
    assert!(String::from_utf8_lossy(&o.stderr).contains("auto, on or off"));
}

/// The acceptance run, shortened to 2 steps: NF4 SmolLM2, LoRA r8 on every linear layer, 256
/// tokens, `--memory-budget 160M`; RssAnon sampled every 20 ms from outside.
#[test]
fn nf4_training_stays_within_a_160m_budget_and_the_plan() {
    let tmp = tempfile::tempdir().unwrap();
    let model = nf4_model(tmp.path());
    let data = write_data(tmp.path(), 4, 256);
    let out = tmp.path().join("out");
    let mut child = Command::new(env!("CARGO_BIN_EXE_edgetune"))
        .args([
            "train",
            s(&model),
            "--data",
            s(&data),
            "-o",
            s(&out),
            "--targets",
            "all-linear",
            "--rank",
            "8",
            "--seq-len",
            "256",
            "--steps",
            "2",
            "--memory-budget",
            "160M",
        ])
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let pid = child.id();
    let mut peak = 0;
    let mut samples = 0;
    while child.try_wait().unwrap().is_none() {
        if let Some(r) = rss_anon(pid) {
            peak = peak.max(r);
            samples += 1;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let o = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&o.stderr);
    assert!(o.status.success(), "{err}");
    assert!(samples > 10, "only {samples} samples");
    assert!(!err.contains("warning: step"), "{err}");
    let planned: u64 = err
        .lines()
        .find(|l| l.trim_start().starts_with("total "))
        .and_then(|l| l.split_whitespace().nth(3))
        .and_then(|t| t.parse().ok())
        .unwrap_or_else(|| panic!("no plan total in:\n{err}"));
    eprintln!("plan {planned} bytes, measured peak RssAnon {peak} bytes");
    assert!(peak <= 160 << 20, "peak {peak} > 160 MiB");
    assert!(peak <= planned, "peak {peak} > plan {planned}");
    // The plan is an upper bound, but a tight one.
    assert!(planned - peak < 24 << 20, "plan {planned} vs peak {peak}");
    assert!(out.join("adapter_model.safetensors").exists());
}

/// 20 steps with AdamW state in RAM and paged through 2 pages of RAM: the same adapter bytes; and
/// 8-bit AdamW (bitsandbytes' rule, tests/optim_reference.rs) paged through 2 pages or all in RAM.
#[test]
fn paged_state_gives_the_same_adapter_as_ram_state() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_data(tmp.path(), 6, 24);
    let file = GgufFile::open(q4_model()).unwrap();
    let run = |mode: StateMode, name: &str, ram: usize| -> (Vec<u8>, u64) {
        let model = Llama::new(&file, Arc::new(CpuBackend::new(2).unwrap())).unwrap();
        let mut cfg = SessionConfig::new(tmp.path().join(name));
        cfg.adapter = AdapterInit::New(lora_all_linear(2));
        cfg.steps = Some(20);
        cfg.seq_len = 24;
        cfg.train.lr = 1e-3;
        cfg.train.weight_decay = 0.01;
        cfg.train.state_mode = mode;
        cfg.train.state_ram_bytes = ram;
        let mut session = Session::new(&file, model, &data, cfg).unwrap();
        let written = match mode {
            StateMode::Ram => 0,
            _ => {
                let state = tmp.path().join(name).join("optimizer.state");
                let len = std::fs::metadata(&state).unwrap().len();
                assert_eq!(len, session.plan().state_bytes, "preallocated state file");
                assert!(session.plan().state_ram_bytes as usize <= ram);
                0
            }
        };
        session.run(&mut |_| {}).unwrap();
        let stats = session.trainer().optimizer().store().paging_stats();
        let bytes = std::fs::read(tmp.path().join(name).join("adapter_model.safetensors")).unwrap();
        (bytes, written + stats.map_or(0, |s| s.pages_written))
    };
    let two_pages = 2 * 64 * 1024;
    let (ram, _) = run(StateMode::Ram, "ram", 0);
    let (paged, written) = run(StateMode::Paged, "paged", two_pages);
    assert!(written > 0, "the paged run never spilled");
    assert!(ram == paged, "paged and RAM adapters differ");
    let (all_in_ram, written) = run(StateMode::Paged8bit, "8bit-ram", 64 << 20);
    assert_eq!(written, 0);
    let (spilled, written) = run(StateMode::Paged8bit, "8bit-paged", two_pages);
    assert!(written > 0, "the paged 8-bit run never spilled");
    assert!(all_in_ram == spilled, "paged 8-bit adapters differ");
    assert!(all_in_ram != ram, "8-bit state changed nothing");
}
