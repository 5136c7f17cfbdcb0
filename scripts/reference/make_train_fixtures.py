#!/usr/bin/env python3
"""Reference training runs with transformers + PEFT on SmolLM2-135M-Instruct, for tests/train_peft.rs.

transformers reads the same Q4_1 GGUF file edgetune trains on (dequantized to float32, Q/K rows
un-permuted), PEFT wraps it, and a plain training loop does what edgetune's trainer promises
(DESIGN.md, FORMATS.md Part II §5):

  loss of a step = Σ_{micro-batches} Σ CE over predicted tokens / Σ predicted tokens of the step
  clip_grad_norm_(max_norm), torch.optim.AdamW, transformers' cosine schedule with warmup.

This is exactly what transformers' Trainer computes with `num_items_in_batch` (the token-weighted
accumulation); the loop is written out so nothing else (shuffling, dropout, mixed precision) can
differ. Dropout is 0: our masks are not torch's.

Writes tests/fixtures/train/:
  sequences.jsonl       {"input_ids": [...], "labels": [...]} one sequence a line, in training order
  lora_init/            PEFT LoRA adapter (r=2, alpha=4, all 7 linear targets on layers 0, 1, 15, 29;
                        A from PEFT's init, B random: non-zero everywhere), weights stored in F16
                        (values are f16-representable, so both sides start from the same numbers)
  lora_final/           the adapter PEFT's run ends with (F32)
  lora_run.json         settings and per-step loss / pre-clip grad norm / lr
  ia3_*, prefix_*, prompt_*   the same for IA3 (k, v, down; vectors 1 + N(0, 0.1)), prefix tuning
                        (N(0, 0.1²)) and prompt tuning (N(0, 0.05²)), 4 virtual tokens, one sequence
                        a step, lr 1e-2

Usage: PYTHONHASHSEED=0 /work/main/.venv/bin/python scripts/reference/make_train_fixtures.py [--models models] [--out tests/fixtures/train]
(PYTHONHASHSEED=0 fixes the order of PEFT's set-valued target_modules; reruns are byte-identical.)
"""

import argparse
import json
import os
import shutil
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from transformers import AutoModelForCausalLM, AutoTokenizer, get_cosine_schedule_with_warmup
from peft import IA3Config, LoraConfig, PrefixTuningConfig, PromptTuningConfig, get_peft_model

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
TARGETS = ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
LAYERS = [0, 1, 15, 29]
LORA_RUN = {
    "rank": 2,
    "alpha": 4.0,
    "steps": 6,
    "batch_size": 2,
    "grad_accum": 2,
    "lr": 1e-3,
    "weight_decay": 0.01,
    "lr_schedule": "cosine",
    "warmup_steps": 2,
    "max_grad_norm": 0.3,
}
MAX_LEN = 64
# IA3, prefix and prompt: the first 6 sequences, one a step (LoRA covers batching and accumulation).
SMALL_RUN = dict(LORA_RUN, batch_size=1, grad_accum=1, lr=1e-2)
del SMALL_RUN["rank"], SMALL_RUN["alpha"]
N_VIRTUAL = 4
PROMPT_SCALE = {}

TEXT = """\
The lighthouse keeper kept a notebook in which he wrote down, every evening, the colour of the sea.
Most days the entries were short: grey, north-west, two fishing boats and a ferry.
On the night of the great storm he filled eleven pages about waves higher than the gallery rail.
Photosynthesis turns light into chemical energy in the chloroplasts of a leaf.
Chlorophyll absorbs mostly red and blue light and reflects green, which is why leaves look green.
The absorbed energy splits water molecules, releasing oxygen as a by-product.
In the Calvin cycle the plant fixes carbon dioxide from the air into sugars.
To bake a simple loaf of bread you need flour, water, salt and yeast.
Knead the dough on a floured table for ten minutes, until it is smooth and springs back when pressed.
Leave it in a covered bowl in a warm place for an hour, or until it has doubled in size.
Bake it at two hundred and twenty degrees for thirty minutes, and let it cool before slicing.
The harbour master said there had been no sailing boat, and that the keeper had been alone too long.
"""


def sequences(tok, n, rng):
    """`n` sequences of 12..MAX_LEN tokens cut from the text; the first few labels are -100."""
    ids = tok(TEXT, add_special_tokens=False)["input_ids"]
    out = []
    for _ in range(n):
        length = int(rng.integers(12, MAX_LEN + 1))
        start = int(rng.integers(0, len(ids) - length))
        seq = ids[start:start + length]
        labels = list(seq)
        for t in range(int(rng.integers(0, 6))):
            labels[t] = -100
        out.append({"input_ids": seq, "labels": labels})
    return out


def batch(rows, pad_id):
    width = max(len(r["input_ids"]) for r in rows)
    ids = torch.full((len(rows), width), pad_id, dtype=torch.long)
    labels = torch.full((len(rows), width), -100, dtype=torch.long)
    mask = torch.zeros((len(rows), width), dtype=torch.long)
    for i, r in enumerate(rows):
        n = len(r["input_ids"])
        ids[i, :n] = torch.tensor(r["input_ids"])
        labels[i, :n] = torch.tensor(r["labels"])
        mask[i, :n] = 1
    return ids, labels, mask


def main():
    root = Path(__file__).resolve().parents[2]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=Path, default=root / "models")
    ap.add_argument("--out", type=Path, default=root / "tests/fixtures/train")
    a = ap.parse_args()
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    torch.manual_seed(0)
    rng = np.random.default_rng(20261129)

    tok = AutoTokenizer.from_pretrained(str(a.models), gguf_file=GGUF)
    base = AutoModelForCausalLM.from_pretrained(str(a.models), gguf_file=GGUF, dtype=torch.float32)
    pad_id = tok.pad_token_id if tok.pad_token_id is not None else tok.eos_token_id

    n_seq = LORA_RUN["steps"] * LORA_RUN["batch_size"] * LORA_RUN["grad_accum"]
    seqs = sequences(tok, n_seq, rng)

    train_run("lora", LORA_RUN, get_peft_model(base, lora_config()), seqs, pad_id, a.out)
    base = AutoModelForCausalLM.from_pretrained(str(a.models), gguf_file=GGUF, dtype=torch.float32)
    train_run("ia3", SMALL_RUN, get_peft_model(base, IA3Config(
        target_modules=["k_proj", "v_proj", "down_proj"], feedforward_modules=["down_proj"],
        task_type="CAUSAL_LM")), seqs, pad_id, a.out)
    base = AutoModelForCausalLM.from_pretrained(str(a.models), gguf_file=GGUF, dtype=torch.float32)
    train_run("prefix", SMALL_RUN, get_peft_model(base, PrefixTuningConfig(
        num_virtual_tokens=N_VIRTUAL, task_type="CAUSAL_LM")), seqs, pad_id, a.out)
    base = AutoModelForCausalLM.from_pretrained(str(a.models), gguf_file=GGUF, dtype=torch.float32)
    train_run("prompt", SMALL_RUN, get_peft_model(base, PromptTuningConfig(
        num_virtual_tokens=N_VIRTUAL, task_type="CAUSAL_LM")), seqs, pad_id, a.out)
    with open(a.out / "sequences.jsonl", "w") as f:
        for s in seqs:
            f.write(json.dumps(s) + "\n")


def lora_config():
    return LoraConfig(r=LORA_RUN["rank"], lora_alpha=LORA_RUN["alpha"], lora_dropout=0.0,
                      target_modules=TARGETS, layers_to_transform=LAYERS, task_type="CAUSAL_LM")


def randomize_(name, p, gen):
    """Non-trivial starting values (f16-representable so the F16 file both sides load is exact)."""
    with torch.no_grad():
        if "lora_B" in name:
            p.normal_(0.0, 0.02, generator=gen)
        elif "ia3_l" in name:
            p.copy_(1.0 + 0.1 * torch.randn(p.shape, generator=gen))
        elif "prompt_encoder" in name and PROMPT_SCALE.get("scale"):
            p.copy_(PROMPT_SCALE["scale"] * torch.randn(p.shape, generator=gen))
        p.copy_(p.half().float())


def save_adapter(model, path):
    """PEFT's save, without the model card and with the base model named by its file (not a local path)."""
    shutil.rmtree(path, ignore_errors=True)
    model.save_pretrained(path)
    (path / "README.md").unlink(missing_ok=True)
    cfg_path = path / "adapter_config.json"
    cfg = json.loads(cfg_path.read_text())
    cfg["base_model_name_or_path"] = GGUF
    cfg_path.write_text(json.dumps(cfg, indent=2, sort_keys=True))


def train_run(name, run, model, seqs, pad_id, out):
    gen = torch.Generator().manual_seed(1234)
    is_prompt = name == "prompt"
    # Prompt embeddings at the scale of token embeddings; prefix keys/values at 0.1 (PEFT's N(0, 1)
    # keys saturate attention to the prefix, where the loss is so ill-conditioned that f32 rounding
    # differences between two correct implementations grow to percent-level gradient differences
    # within a few steps).
    PROMPT_SCALE["scale"] = {"prompt": 0.05, "prefix": 0.1}.get(name)
    for pname, p in model.named_parameters():
        if p.requires_grad:
            randomize_(pname, p, gen)
    init_dir = out / f"{name}_init"
    save_adapter(model, init_dir)
    st = init_dir / "adapter_model.safetensors"
    save_file({k: v.half() for k, v in load_file(st).items()}, st, metadata={"format": "pt"})

    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=run["lr"], betas=(0.9, 0.999), eps=1e-8, weight_decay=run["weight_decay"])
    sched = get_cosine_schedule_with_warmup(opt, run["warmup_steps"], run["steps"])
    model.train()
    steps = []
    per_step = run["batch_size"] * run["grad_accum"]
    for s in range(run["steps"]):
        rows = seqs[s * per_step:(s + 1) * per_step]
        micro = [batch(rows[k:k + run["batch_size"]], pad_id) for k in range(0, per_step, run["batch_size"])]
        # Prompt tuning: the last virtual token predicts label 0, so it counts too (FORMATS.md II §4.4).
        first = 0 if is_prompt else 1
        n_items = sum(int((lab[:, first:] != -100).sum()) for _, lab, _ in micro)
        total = 0.0
        for ids, lab, mask in micro:
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
            if is_prompt:
                lab = torch.cat([torch.full((lab.shape[0], N_VIRTUAL), -100), lab], dim=1)
            shift = torch.nn.functional.pad(lab, (0, 1), value=-100)[:, 1:]
            ce = torch.nn.functional.cross_entropy(
                logits.reshape(-1, logits.shape[-1]), shift.reshape(-1), ignore_index=-100, reduction="sum"
            )
            (ce / n_items).backward()
            total += float(ce.detach())
        norm = torch.nn.utils.clip_grad_norm_(params, run["max_grad_norm"])
        lr = sched.get_last_lr()[0]
        opt.step()
        sched.step()
        opt.zero_grad()
        steps.append({"step": s + 1, "loss": total / n_items, "grad_norm": float(norm), "lr": lr, "targets": n_items})
        print(name, steps[-1])

    save_adapter(model, out / f"{name}_final")
    meta = dict(run, method=name, model=GGUF, steps_log=steps,
                generated_by="scripts/reference/make_train_fixtures.py",
                torch=torch.__version__, transformers=__import__("transformers").__version__,
                peft=__import__("peft").__version__)
    if name == "lora":
        meta.update(targets=TARGETS, layers=LAYERS)
    (out / f"{name}_run.json").write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    main()
