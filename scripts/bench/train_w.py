#!/usr/bin/env python3
"""Workload W side by side: PyTorch + PEFT against `edgetune train`, in one run on one machine.

W (issue 4): SmolLM2-135M-Instruct, LoRA r=8 alpha=16 on q,k,v,o (`--targets qkvo`, default) or on
all linear layers (`--targets all-linear`), one 256-token sequence a step, batch 1, 2 threads, f32,
AdamW. Both sides train on the same pre-tokenized sequences (deterministic ids, written to a temp
file), each in its own process, one after the other, and each process's memory is sampled from
/proc/PID/status every 20 ms (peak VmRSS and peak RssAnon; the model file mapped by edgetune counts
in VmRSS as file pages, not in RssAnon).

The two sides alternate `--rounds` times (default 3: PyTorch's own speed varies by 10-15% from
run to run on a shared machine); each round reports each side's median step time after 2 warm-up
steps, and the summary takes the median over rounds (and gives every round's ratio).

Reported per side: median step time after 2 warm-up steps -> tokens/s, peak RSS, peak RssAnon,
GFLOP/s of the step (FLOPs counted from the model's shapes: forward and input-gradient products of
every linear layer and the LM head, attention's products over the causal keys, LoRA's small
products), and that as a fraction of the f32 GEMM ceiling measured in the same run (torch.matmul
at m=256 over the model's linear shapes, the best of 2 threads, in the PyTorch process).

PyTorch reads the same GGUF through transformers (dequantized to f32), as the parity fixtures do.

`--compute bf16` runs PyTorch under `torch.autocast("cpu", dtype=torch.bfloat16)` (its best CPU
configuration) and `edgetune train --compute bf16`; the ceiling is then torch's bf16 matmul.

Usage: .venv/bin/python scripts/bench/train_w.py [--steps 10] [--rounds 3] [--targets qkvo|all-linear] [--compute f32|bf16]
       [--edgetune target/release/edgetune] [--model models/SmolLM2-135M-Instruct.Q4_1.gguf]
       [--edgetune-model models/smollm2-nf4.gguf]
       [--only torch|edgetune] [--json OUT.json]
Needs torch, transformers and peft (scripts/setup-python.sh --reference).
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

SEQ = 256
THREADS = 2
TARGETS = {"qkvo": ["q_proj", "k_proj", "v_proj", "o_proj"],
           "all-linear": ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]}


def write_data(path, n_seq, n_vocab):
    s = 0x2545F491
    with open(path, "w") as f:
        for _ in range(n_seq):
            ids = []
            for _ in range(SEQ):
                s ^= (s << 13) & 0xFFFFFFFF
                s ^= s >> 17
                s ^= (s << 5) & 0xFFFFFFFF
                ids.append(100 + s % (n_vocab - 100))
            f.write(json.dumps({"input_ids": ids}) + "\n")


class Sampler:
    """Peak VmRSS and RssAnon of a process, read every 20 ms."""

    def __init__(self, pid):
        self.pid, self.peak_rss, self.peak_anon, self.done = pid, 0, 0, False
        self.t = threading.Thread(target=self.run, daemon=True)
        self.t.start()

    def run(self):
        while not self.done:
            try:
                with open(f"/proc/{self.pid}/status") as f:
                    for line in f:
                        if line.startswith("VmRSS:"):
                            self.peak_rss = max(self.peak_rss, int(line.split()[1]) * 1024)
                        elif line.startswith("RssAnon:"):
                            self.peak_anon = max(self.peak_anon, int(line.split()[1]) * 1024)
            except (FileNotFoundError, ProcessLookupError):
                return
            time.sleep(0.02)

    def stop(self):
        self.done = True
        self.t.join()


def flops_per_token(cfg, targets, rank):
    """FLOPs of one training step per token (forward + input gradients; LoRA adds weight grads)."""
    d, ff, n_layer, vocab = cfg["d"], cfg["ff"], cfg["n_layer"], cfg["vocab"]
    kv = cfg["kv_dim"]
    shapes = {"q_proj": (d, d), "k_proj": (kv, d), "v_proj": (kv, d), "o_proj": (d, d),
              "gate_proj": (ff, d), "up_proj": (ff, d), "down_proj": (d, ff)}
    linear = sum(n * k for n, k in shapes.values())
    lora = sum(rank * (n + k) for t, (n, k) in shapes.items() if t in targets)
    # forward 2·params, input grads 2·params; LoRA: forward 2, input grad 2, weight grad 2.
    per_layer = 4 * linear + 6 * lora
    # attention over the causal keys (mean SEQ/2 keys): fwd q·kᵀ, p·v; bwd 5 products.
    attn = 7 * 2 * (SEQ + 1) / 2 * d
    head = 4 * d * vocab
    return n_layer * (per_layer + attn) + head


def model_config(model):
    from gguf import GGUFReader
    r = GGUFReader(model)
    f = {k: r.fields[k] for k in r.fields}
    arch = bytes(f["general.architecture"].parts[-1]).decode()

    def val(k):
        return int(f[f"{arch}.{k}"].parts[-1][0])
    d, heads, kv_heads = val("embedding_length"), val("attention.head_count"), val("attention.head_count_kv")
    vocab = len(f["tokenizer.ggml.tokens"].data)
    return {"d": d, "ff": val("feed_forward_length"), "n_layer": val("block_count"), "vocab": vocab,
            "kv_dim": d // heads * kv_heads}


def torch_side(args):
    """Runs inside the child process: PyTorch + PEFT training, prints one JSON line."""
    import torch
    torch.set_num_threads(THREADS)
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM
    model_path = Path(args.model)
    # GEMM ceiling: best torch.matmul GFLOP/s at m=256 over the model's linear shapes.
    cfg = model_config(str(model_path))
    d, ff, kv = cfg["d"], cfg["ff"], cfg["kv_dim"]
    dtype = torch.bfloat16 if args.compute == "bf16" else torch.float32
    best = 0.0
    for n, k in [(d, d), (kv, d), (ff, d), (d, ff)]:
        a, b = torch.randn(SEQ, k, dtype=dtype), torch.randn(k, n, dtype=dtype)
        for _ in range(3):
            a @ b
        reps = 20
        t = time.perf_counter()
        for _ in range(reps):
            a @ b
        best = max(best, 2 * SEQ * n * k * reps / (time.perf_counter() - t) / 1e9)
    base = AutoModelForCausalLM.from_pretrained(str(model_path.parent), gguf_file=model_path.name,
                                                dtype=torch.float32)
    model = get_peft_model(base, LoraConfig(r=8, lora_alpha=16, target_modules=TARGETS[args.targets],
                                            lora_dropout=0.0, task_type="CAUSAL_LM"))
    model.train()
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=2e-4)
    rows = [json.loads(l)["input_ids"] for l in open(args.data)]
    times = []
    for i in range(args.steps + 2):
        ids = torch.tensor([rows[i % len(rows)]])
        t = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=args.compute == "bf16"):
            loss = model(input_ids=ids, labels=ids).loss
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if i >= 2:
            times.append(time.perf_counter() - t)
    print(json.dumps({"step_s": statistics.median(times), "ceiling_gflops": best,
                      "torch": torch.__version__}))


def run_measured(cmd, env=None):
    p = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    s = Sampler(p.pid)
    out, err = p.communicate()
    s.stop()
    if p.returncode != 0:
        sys.exit(f"{cmd[0]} failed:\n{err[-3000:]}")
    return out, s.peak_rss, s.peak_anon


def main():
    root = Path(__file__).resolve().parents[2]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--steps", type=int, default=10)
    ap.add_argument("--rounds", type=int, default=3,
                    help="alternating PyTorch / edgetune runs; medians over rounds are reported")
    ap.add_argument("--targets", choices=sorted(TARGETS), default="qkvo")
    ap.add_argument("--compute", choices=["f32", "bf16"], default="f32")
    ap.add_argument("--model", default=str(root / "models/SmolLM2-135M-Instruct.Q4_1.gguf"))
    ap.add_argument("--edgetune", default=str(root / "target/release/edgetune"))
    ap.add_argument("--edgetune-model",
                    help="the GGUF edgetune trains on (default: --model), e.g. an NF4 file from "
                         "`edgetune quantize --type nf4` (transformers cannot read NF4)")
    ap.add_argument("--only", choices=["torch", "edgetune"])
    ap.add_argument("--json")
    ap.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--data", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return torch_side(args)

    cfg = model_config(args.model)
    flops = flops_per_token(cfg, TARGETS[args.targets], 8)
    results = {"workload": {"model": args.model, "edgetune_model": args.edgetune_model or args.model,
                            "targets": args.targets, "compute": args.compute,
                            "seq": SEQ, "threads": THREADS, "steps": args.steps, "rounds": args.rounds,
                            "gflop_per_token": flops / 1e9}}
    rounds = {"torch_peft": [], "edgetune": []}
    ceilings = []
    with tempfile.TemporaryDirectory() as tmp:
        data = os.path.join(tmp, "w.jsonl")
        write_data(data, 8, cfg["vocab"])
        for rnd in range(args.rounds):
            if args.only != "edgetune":
                out, rss, anon = run_measured([sys.executable, __file__, "--child", "--data", data,
                                               "--model", args.model, "--targets", args.targets,
                                               "--steps", str(args.steps), "--compute", args.compute])
                r = json.loads(out.strip().splitlines()[-1])
                ceilings.append(r["ceiling_gflops"])
                rounds["torch_peft"].append({"tokens_per_s": SEQ / r["step_s"], "peak_rss": rss,
                                             "peak_rss_anon": anon, "torch": r["torch"]})
            if args.only != "torch":
                targets = ",".join(TARGETS[args.targets])
                out_dir = os.path.join(tmp, f"out{rnd}")
                _, rss, anon = run_measured([args.edgetune, "train", args.edgetune_model or args.model,
                                             "--data", data, "-o",
                                             out_dir, "--steps", str(args.steps + 2), "--seq-len",
                                             str(SEQ), "--rank", "8", "--alpha", "16", "--targets",
                                             targets, "--threads", str(THREADS), "--no-shuffle",
                                             "--lr-schedule", "constant", "--compute", args.compute])
                steps = [json.loads(l) for l in open(os.path.join(out_dir, "metrics.jsonl"))]
                tps = statistics.median(m["tokens_per_sec"] for m in steps[2:])
                rounds["edgetune"].append({"tokens_per_s": tps, "peak_rss": rss, "peak_rss_anon": anon})
            print(f"round {rnd + 1}/{args.rounds}: " + ", ".join(
                f"{side} {v[-1]['tokens_per_s']:.1f} tok/s" for side, v in rounds.items() if v),
                file=sys.stderr)
    for side, v in rounds.items():
        if v:
            results[side] = {
                "tokens_per_s": statistics.median(x["tokens_per_s"] for x in v),
                "tokens_per_s_rounds": [round(x["tokens_per_s"], 1) for x in v],
                "peak_rss": max(x["peak_rss"] for x in v),
                "peak_rss_anon": max(x["peak_rss_anon"] for x in v),
            }
            if side == "torch_peft":
                results[side]["torch"] = v[0]["torch"]
    ceiling = statistics.median(ceilings) if ceilings else None
    if "torch_peft" in results and "edgetune" in results:
        # Ratios of the rounds run next to each other, and their median.
        pairs = [e["tokens_per_s"] / t["tokens_per_s"]
                 for t, e in zip(rounds["torch_peft"], rounds["edgetune"])]
        results["speedup_rounds"] = [round(x, 3) for x in pairs]
    if ceiling:
        results["gemm_ceiling_gflops"] = ceiling
    for side in ("torch_peft", "edgetune"):
        if side in results:
            r = results[side]
            r["gflops"] = r["tokens_per_s"] * flops / 1e9
            if ceiling:
                r["fraction_of_ceiling"] = r["gflops"] / ceiling
    if "torch_peft" in results and "edgetune" in results:
        t, e = results["torch_peft"], results["edgetune"]
        results["speedup"] = e["tokens_per_s"] / t["tokens_per_s"]
        results["rss_ratio"] = e["peak_rss"] / t["peak_rss"]
        results["rss_anon_ratio"] = e["peak_rss_anon"] / t["peak_rss_anon"]
    print(json.dumps(results, indent=1))
    if args.json:
        Path(args.json).write_text(json.dumps(results, indent=1) + "\n")


if __name__ == "__main__":
    main()
