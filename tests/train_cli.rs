//! Does `edgetune train` keep its command-line contract (DESIGN.md)? metrics.jsonl fields, a PEFT
//! directory as output, checkpoints that resume exactly (with dropout, shuffling, accumulation
//! and evaluation on), and clear errors for bad input. Runs on SmolLM2-135M with short sequences.

use std::path::{Path, PathBuf};
use std::process::Command;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn tiny_model() -> PathBuf {
    root().join("models/SmolLM2-135M-Instruct.Q4_1.gguf")
}

/// Short pre-tokenized sequences, some with a masked prompt.
fn write_data(dir: &Path) -> PathBuf {
    let path = dir.join("data.jsonl");
    let mut text = String::new();
    for s in 0..12u32 {
        let n = 6 + (s as usize * 7) % 20;
        let ids: Vec<u32> = (0..n as u32).map(|t| (s * 37 + t * 11) % 256).collect();
        let labels: Vec<i64> = ids
            .iter()
            .enumerate()
            .map(|(i, &v)| if i < (s as usize % 4) { -100 } else { v as i64 })
            .collect();
        text += &serde_json::json!({ "input_ids": ids, "labels": labels }).to_string();
        text.push('\n');
    }
    std::fs::write(&path, text).unwrap();
    path
}

fn edgetune(args: &[&str]) -> (bool, String) {
    let out = Command::new(env!("CARGO_BIN_EXE_edgetune"))
        .args(args)
        .output()
        .unwrap();
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn metrics(dir: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(dir.join("metrics.jsonl"))
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn untimed(mut m: serde_json::Value) -> serde_json::Value {
    for k in ["tokens_per_sec", "elapsed_s", "rss_anon_bytes"] {
        m.as_object_mut().unwrap().remove(k);
    }
    m
}

#[test]
fn train_writes_metrics_and_resumes_exactly() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_data(tmp.path());
    let (a, b) = (tmp.path().join("a"), tmp.path().join("b"));
    let common = [
        "--data",
        s(&data),
        "--dropout",
        "0.1",
        "--steps",
        "4",
        "--batch-size",
        "2",
        "--grad-accum",
        "2",
        "--seq-len",
        "24",
        "--lr",
        "1e-2",
        "--lr-schedule",
        "cosine",
        "--warmup-steps",
        "2",
        "--val-split",
        "0.2",
        "--eval-every",
        "2",
        "--checkpoint-every",
        "2",
        "--threads",
        "2",
    ];
    let model = tiny_model();
    let mut args = vec![
        "train",
        s(&model),
        "-o",
        s(&a),
        "--targets",
        "all-linear",
        "--rank",
        "4",
    ];
    args.extend(common);
    let (ok, err) = edgetune(&args);
    assert!(ok, "{err}");
    let straight = metrics(&a);
    assert_eq!(straight.len(), 4);
    let keys: Vec<&str> = straight[1]
        .as_object()
        .unwrap()
        .keys()
        .map(|k| k.as_str())
        .collect();
    let mut want = vec![
        "step",
        "loss",
        "lr",
        "grad_norm",
        "tokens",
        "tokens_per_sec",
        "elapsed_s",
        "rss_anon_bytes",
        "eval_loss",
    ];
    want.sort();
    let mut got = keys.clone();
    got.sort();
    assert_eq!(got, want, "step 2 is evaluated");
    assert!(straight[0].get("eval_loss").is_none());
    assert!(straight[0]["rss_anon_bytes"].as_u64().unwrap() > 0);
    assert!(a.join("adapter_config.json").exists());
    let ckpt = a.join("checkpoints/step-2");
    for f in [
        "adapter_config.json",
        "adapter_model.safetensors",
        "optimizer.safetensors",
        "trainer_state.json",
    ] {
        assert!(ckpt.join(f).exists(), "{f}");
    }

    // The adapter's shape comes from the checkpoint; the other settings are repeated.
    let mut args = vec!["train", s(&model), "-o", s(&b), "--resume", s(&ckpt)];
    args.extend(common);
    let (ok, err) = edgetune(&args);
    assert!(ok, "{err}");
    let resumed = metrics(&b);
    assert_eq!(resumed.len(), 2);
    for (r, s) in resumed.into_iter().zip(&straight[2..]) {
        assert_eq!(untimed(r), untimed(s.clone()));
    }
    let file = |d: &Path| std::fs::read(d.join("adapter_model.safetensors")).unwrap();
    assert_eq!(file(&a), file(&b));
}

#[test]
fn bad_input_is_refused_with_a_clear_message() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_data(tmp.path());
    let masked = tmp.path().join("masked.jsonl");
    std::fs::write(
        &masked,
        "{\"input_ids\": [1, 2, 3], \"labels\": [-100, -100, -100]}\n",
    )
    .unwrap();
    let other_model = root().join("tests/fixtures/adapters/lora");
    let out = tmp.path().join("out");
    let model = tiny_model();
    let cases: &[(&[&str], &str)] = &[
        (&["--targets", "q_proj,qproj"], "qproj"),
        (&["--rank", "0"], "rank is 0"),
        (&["--seq-len", "100000"], "context of 8192"),
        (&["--steps", "0"], "at least 1 step"),
        (&["--method", "ia3", "--rank", "4"], "apply to LoRA"),
        (&["--method", "dora"], "dora"),
        (&["--lr-schedule", "step"], "step"),
        (&["--init-adapter", s(&other_model)], "shape"),
        (
            &["--init-adapter", s(&other_model), "--rank", "4"],
            "cannot be combined",
        ),
    ];
    for (extra, want) in cases {
        let mut args = vec![
            "train",
            s(&model),
            "--data",
            s(&data),
            "-o",
            s(&out),
            "--steps",
            "1",
        ];
        if extra.contains(&"--steps") {
            args.truncate(args.len() - 2);
        }
        args.extend(*extra);
        let (ok, err) = edgetune(&args);
        assert!(!ok && err.contains(want), "{extra:?}: {err}");
    }
    let (ok, err) = edgetune(&["train", s(&model), "--data", s(&masked), "-o", s(&out)]);
    assert!(!ok && err.contains("no usable example"), "{err}");
}

#[cfg(unix)]
#[test]
fn ctrl_c_stops_with_a_checkpoint_that_resumes() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_data(tmp.path());
    let out = tmp.path().join("out");
    let model = tiny_model();
    let run = |extra: &[&str]| {
        let mut args = vec![
            "train",
            s(&model),
            "--data",
            s(&data),
            "-o",
            s(&out),
            "--steps",
            "1000",
            "--seq-len",
            "16",
            "--threads",
            "1",
        ];
        args.extend(extra);
        Command::new(env!("CARGO_BIN_EXE_edgetune"))
            .args(&args)
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap()
    };
    let child = run(&[]);
    let metrics_file = out.join("metrics.jsonl");
    let logged = || std::fs::read_to_string(&metrics_file).map_or(0, |t| t.matches('\n').count());
    let started = std::time::Instant::now();
    while logged() < 2 {
        assert!(started.elapsed().as_secs() < 120, "no step logged");
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    let status = Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let result = child.wait_with_output().unwrap();
    let err = String::from_utf8_lossy(&result.stderr);
    assert!(result.status.success(), "{err}");
    assert!(err.contains("stopped at step"), "{err}");
    let steps = metrics(&out).len();
    assert!(steps < 1000);
    let ckpt = out.join(format!("checkpoints/step-{steps}"));
    let state: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(ckpt.join("trainer_state.json")).unwrap())
            .unwrap();
    assert_eq!(state["step"], steps as u64);
    assert!(!out.join("adapter_model.safetensors").exists());

    // Resuming continues from there (stopped again after one more step).
    let child = run(&["--resume", s(&ckpt)]);
    while logged() <= steps {
        assert!(
            started.elapsed().as_secs() < 240,
            "no step logged after resuming"
        );
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    Command::new("kill")
        .args(["-INT", &child.id().to_string()])
        .status()
        .unwrap();
    let result = child.wait_with_output().unwrap();
    assert!(result.status.success());
    let after = metrics(&out);
    let numbered: Vec<u64> = after.iter().map(|m| m["step"].as_u64().unwrap()).collect();
    assert_eq!(numbered, (1..=after.len() as u64).collect::<Vec<_>>());
}

#[test]
fn pack_fills_rows_and_covers_every_token_once_per_epoch() {
    let tmp = tempfile::tempdir().unwrap();
    let data = write_data(tmp.path());
    let total: u64 = (0..12u64).map(|s| 6 + (s * 7) % 20).sum();
    let run = |pack: bool| {
        let out = tmp.path().join(format!("out-pack-{pack}"));
        let model = tiny_model();
        let mut args = vec![
            "train",
            s(&model),
            "--data",
            s(&data),
            "-o",
            s(&out),
            "--epochs",
            "1",
            "--seq-len",
            "64",
            "--no-shuffle",
            "--rank",
            "2",
        ];
        if pack {
            args.push("--pack");
        }
        let (ok, err) = edgetune(&args);
        assert!(ok, "{err}");
        assert!(out.join("adapter_model.safetensors").exists());
        metrics(&out)
    };
    let packed = run(true);
    let plain = run(false);
    let tokens =
        |m: &[serde_json::Value]| -> u64 { m.iter().map(|l| l["tokens"].as_u64().unwrap()).sum() };
    assert_eq!(plain.len(), 12);
    assert_eq!(tokens(&plain), total);
    assert_eq!(tokens(&packed), total);
    // 174 tokens in rows of at most 64: best-fit decreasing needs 3 or 4 rows.
    assert!(packed.len() <= 4, "{} packed steps", packed.len());
    assert!(packed
        .iter()
        .all(|l| l["loss"].as_f64().unwrap().is_finite()));
}

/// A write that fails in the middle of a checkpoint (the file-size limit `prlimit --fsize` makes
/// writes fail with EFBIG, as a full disk fails them with ENOSPC) stops training with a message
/// naming the last good checkpoint, which survives byte for byte; nothing half-written is left;
/// resuming from it without the limit ends exactly where an undisturbed run ends.
#[cfg(target_os = "linux")]
#[test]
fn a_failed_checkpoint_write_keeps_the_previous_checkpoint() {
    if Command::new("prlimit").arg("--version").output().is_err() {
        panic!("prlimit (util-linux) is needed for this test");
    }
    let tmp = tempfile::tempdir().unwrap();
    let data = write_data(tmp.path());
    let model = tiny_model();
    let args = |out: &Path| -> Vec<String> {
        [
            "train",
            s(&model),
            "--data",
            s(&data),
            "-o",
            s(out),
            "--steps",
            "4",
            "--checkpoint-every",
            "2",
            "--seq-len",
            "32",
            "--rank",
            "2",
        ]
        .iter()
        .map(|a| a.to_string())
        .collect()
    };
    // The undisturbed run.
    let full = tmp.path().join("full");
    let (ok, err) = edgetune(&args(&full).iter().map(|a| a.as_str()).collect::<Vec<_>>());
    assert!(ok, "{err}");
    let step2 = full.join("checkpoints/step-2");
    let adapter_bytes = std::fs::metadata(step2.join("adapter_model.safetensors"))
        .unwrap()
        .len();
    let optim_bytes = std::fs::metadata(step2.join("optimizer.safetensors"))
        .unwrap()
        .len();
    assert!(optim_bytes > adapter_bytes + 4096);

    // A second run resumes from step 2 with files capped between the adapter's size and the
    // optimizer state's, so writing step 4 fails half way.
    let out = tmp.path().join("capped");
    std::fs::create_dir_all(out.join("checkpoints")).unwrap();
    let kept = out.join("checkpoints/step-2");
    let copy = Command::new("cp")
        .args(["-r", s(&step2), s(&kept)])
        .status()
        .unwrap();
    assert!(copy.success());
    std::fs::copy(full.join("metrics.jsonl"), out.join("metrics.jsonl")).unwrap();
    let snapshot = |dir: &Path| -> Vec<(String, Vec<u8>)> {
        let mut v: Vec<_> = std::fs::read_dir(dir)
            .unwrap()
            .map(|e| {
                let e = e.unwrap();
                (
                    e.file_name().to_string_lossy().into_owned(),
                    std::fs::read(e.path()).unwrap(),
                )
            })
            .collect();
        v.sort();
        v
    };
    let before = snapshot(&kept);
    let mut resume = args(&out);
    resume.truncate(resume.len() - 2); // the shape comes from the checkpoint
    resume.extend(["--resume".to_string(), s(&kept).to_string()]);
    let cap = (adapter_bytes + optim_bytes) / 2;
    let script = format!("trap '' XFSZ; exec prlimit --fsize={cap} \"$0\" \"$@\"",);
    let res = Command::new("sh")
        .arg("-c")
        .arg(script)
        .arg(env!("CARGO_BIN_EXE_edgetune"))
        .args(&resume)
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&res.stderr);
    assert!(!res.status.success(), "{err}");
    assert!(
        err.contains("checkpoint of step 4 failed") && err.contains("step-2 is intact"),
        "{err}"
    );
    assert_eq!(snapshot(&kept), before, "the previous checkpoint changed");
    let left: Vec<String> = std::fs::read_dir(out.join("checkpoints"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(left, ["step-2"], "half-written checkpoint left behind");

    // Without the cap, resuming from the kept checkpoint finishes as the undisturbed run did.
    let (ok, err) = edgetune(&resume.iter().map(|a| a.as_str()).collect::<Vec<_>>());
    assert!(ok, "{err}");
    assert_eq!(
        std::fs::read(out.join("adapter_model.safetensors")).unwrap(),
        std::fs::read(full.join("adapter_model.safetensors")).unwrap()
    );
    let untimed_all = |d: &Path| metrics(d).into_iter().map(untimed).collect::<Vec<_>>();
    assert_eq!(untimed_all(&out), untimed_all(&full));
}
