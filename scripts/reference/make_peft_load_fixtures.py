#!/usr/bin/env python3
"""Does PEFT open the adapters `edgetune train` writes, and compute with them what we compute?

For each method (LoRA r=1 on q,k,v — K rows are permuted in GGUF, so this also checks the
un-permutation — IA3, prefix tuning and prompt tuning with 4 virtual tokens), this script
1. runs `edgetune train` on SmolLM2-135M-Instruct for 3 steps (lr 1e-2, so every weight moves away
   from its init) on tests/fixtures/train/sequences.jsonl, writing a PEFT directory;
2. loads it with `peft.PeftModel.from_pretrained` on transformers' model of the same GGUF (f32),
   checks that no key is missing or unexpected and that the state PEFT holds equals the file;
3. computes the summed cross-entropy of the first 4 sequences (cut to 64 tokens, labels as given,
   -100 ignored; with prompt tuning the last virtual token predicts the first label, as PEFT's
   loss does).

Then two stacks, each run by PEFT as several active adapters (`set_adapter([...])`): our LoRA with
the LoRA PEFT saved in tests/fixtures/train/lora_init (deltas add up), and our IA3 with
tests/fixtures/train/ia3_init (scalings multiply); same NLL check.

Writes tests/fixtures/peft_load/: METHOD/adapter_config.json + adapter_model.safetensors (our
files, as trained), eval.jsonl (the 4 sequences) and peft.json (per method: predicted tokens and
mean NLL; under "stacked", per stack its directories and mean NLL). tests/cli_infer.rs runs `edgetune perplexity --adapter` on the same
files and compares. Needs torch, transformers, peft (not part of CI).

Usage: .venv/bin/python scripts/reference/make_peft_load_fixtures.py [--edgetune target/release/edgetune]
       [--skip-train]   (reuse the adapters already in the fixture directory)
"""

import argparse
import json
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import torch
from peft import PeftModel
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
MAX_LEN = 64
N_EVAL = 4
METHODS = {
    "lora": ["--method", "lora", "--rank", "1", "--alpha", "2", "--targets", "q_proj,k_proj,v_proj"],
    "ia3": ["--method", "ia3"],
    "prefix": ["--method", "prefix", "--num-virtual-tokens", "4"],
    "prompt": ["--method", "prompt", "--num-virtual-tokens", "4"],
}


def train(edgetune, model, data, out, extra):
    cmd = [str(edgetune), "train", str(model), "--data", str(data), "-o", str(out), "--steps", "3",
           "--lr", "1e-2", "--seq-len", str(MAX_LEN), "--no-shuffle", "--threads", "2", *extra]
    subprocess.run(cmd, check=True)


def evaluate(pm, rows, n_virtual):
    total, tokens = 0.0, 0
    with torch.no_grad():
        for r in rows:
            ids = torch.tensor([r["input_ids"]])
            labels = torch.tensor(r["labels"])
            logits = pm(input_ids=ids).logits[0].double()
            t = ids.shape[1]
            if n_virtual:  # prompt tuning: logits for the virtual tokens come first
                pred, target = logits[n_virtual - 1:n_virtual + t - 1], labels
            else:
                pred, target = logits[:t - 1], labels[1:]
            keep = target != -100
            total += float(torch.nn.functional.cross_entropy(pred[keep], target[keep], reduction="sum"))
            tokens += int(keep.sum())
    return total / tokens, tokens


def main():
    root = Path(__file__).resolve().parents[2]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--edgetune", type=Path, default=root / "target/release/edgetune")
    ap.add_argument("--models", type=Path, default=root / "models")
    ap.add_argument("--out", type=Path, default=root / "tests/fixtures/peft_load")
    ap.add_argument("--skip-train", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(2)
    rows = []
    for line in (root / "tests/fixtures/train/sequences.jsonl").read_text().splitlines()[:N_EVAL]:
        r = json.loads(line)
        rows.append({k: r[k][:MAX_LEN] for k in ("input_ids", "labels")})
    a.out.mkdir(parents=True, exist_ok=True)
    (a.out / "eval.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    results = {}
    for method, extra in METHODS.items():
        dst = a.out / method
        if not a.skip_train:
            with tempfile.TemporaryDirectory() as tmp:
                run = Path(tmp) / method
                train(a.edgetune, a.models / GGUF, root / "tests/fixtures/train/sequences.jsonl", run, extra)
                dst.mkdir(exist_ok=True)
                for f in ("adapter_config.json", "adapter_model.safetensors"):
                    shutil.copy(run / f, dst / f)
        base = AutoModelForCausalLM.from_pretrained(str(a.models), gguf_file=GGUF, dtype=torch.float32)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            pm = PeftModel.from_pretrained(base, str(dst)).eval()
        bad = [str(w.message) for w in caught
               if "missing" in str(w.message).lower() or "unexpected" in str(w.message).lower()]
        if bad:
            raise SystemExit(f"{method}: PEFT load warnings: {bad}")
        state = get_peft_model_state_dict(pm)
        file = load_file(str(dst / "adapter_model.safetensors"))
        if set(state) != set(file):
            raise SystemExit(f"{method}: keys differ: {sorted(set(state) ^ set(file))[:4]}")
        worst = max(float((state[k].float() - file[k].float()).abs().max()) for k in file)
        if worst != 0.0:
            raise SystemExit(f"{method}: PEFT holds values {worst} away from the file")
        n_virtual = 4 if method == "prompt" else 0
        mean_nll, tokens = evaluate(pm, rows, n_virtual)
        results[method] = {"tokens": tokens, "mean_nll": mean_nll}
        print(method, tokens, mean_nll)
    stacked = {}
    for name, dirs in {"lora": ["peft_load/lora", "train/lora_init"],
                       "ia3": ["peft_load/ia3", "train/ia3_init"]}.items():
        base = AutoModelForCausalLM.from_pretrained(str(a.models), gguf_file=GGUF, dtype=torch.float32)
        paths = [root / "tests/fixtures" / d for d in dirs]
        pm = PeftModel.from_pretrained(base, str(paths[0]), adapter_name="a0")
        for i, p in enumerate(paths[1:], 1):
            pm.load_adapter(str(p), adapter_name=f"a{i}")
        pm.base_model.set_adapter([f"a{i}" for i in range(len(paths))])
        pm.eval()
        mean_nll, tokens = evaluate(pm, rows, 0)
        stacked[name] = {"dirs": dirs, "tokens": tokens, "mean_nll": mean_nll}
        print("stacked", name, tokens, mean_nll)
    meta = {"generated_by": "scripts/reference/make_peft_load_fixtures.py", "model": GGUF,
            "torch": torch.__version__, "peft": __import__("peft").__version__,
            "transformers": __import__("transformers").__version__}
    (a.out / "peft.json").write_text(json.dumps({"meta": meta, "methods": results, "stacked": stacked}, indent=1) + "\n")


if __name__ == "__main__":
    main()
