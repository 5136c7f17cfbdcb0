#!/usr/bin/env python3
"""QLoRA reference run for tests/train_peft.rs (qlora_training_on_nf4_matches_peft_with_bitsandbytes): transformers + PEFT LoRA over bitsandbytes NF4.

The base is SmolLM2-135M-Instruct read from its Q4_1 GGUF by transformers (float32, Q/K rows
un-permuted), as in make_train_fixtures.py, with every linear layer of every block (q, k, v, o,
gate, up, down) replaced by `bitsandbytes.nn.Linear4bit` (NF4, double quantization, block size
64, float32 compute) on the CPU: a QLoRA model. PEFT wraps it with the LoRA adapter of
tests/fixtures/train/lora_init (r=2, all 7 targets of layers 0, 1, 15, 29, non-zero B), and the
training loop of make_train_fixtures.py runs the same 6 steps (batch 2 x accumulation 2, AdamW
with weight decay, cosine warmup, clipping) on tests/fixtures/train/sequences.jsonl.

edgetune trains on `edgetune quantize Q4_1.gguf --type nf4` of the same weights. The GGUF stores
attn_q/attn_k rows in RoPE-permuted order, and NF4 double quantization groups 256 consecutive block
scales, so quantizing the HF row order (what a transformers QLoRA user gets) puts different blocks
in a group there: the 4-bit codes agree but the nested 8-bit scales round differently. Hence two
runs (`--qk-order`):
  gguf (default, qlora_run.json, what tests/train_peft.rs (qlora_training_on_nf4_matches_peft_with_bitsandbytes) bounds): q/k are Linear4bit quantized in
       the GGUF row order, their outputs put back in HF order (RowPermutedLinear4bit), so the base
       weights are exactly those of edgetune's file;
  hf   (qlora_hf_order_run.json, reported only): plain Linear4bit on HF rows.
With --ours, every weight's packed codes and dequantized values are compared with the file
(`nf4_vs_edgetune` in the fixture: codes equal for all 210; values equal for all 210 in gguf
order, for the 150 non-q/k ones in hf order).

Writes tests/fixtures/train/<--name> (settings, per-step loss, grad norm, lr, adapter norm, the
comparison, versions). Small: no tensors.

Usage: PYTHONHASHSEED=0 /work/main/.venv/bin/python scripts/reference/make_qlora_fixtures.py \
          --ours /tmp/smollm2-nf4.gguf [--qk-order gguf|hf --name qlora_run.json] [--out tests/fixtures/train]
(--ours: `edgetune quantize models/SmolLM2-135M-Instruct.Q4_1.gguf -o /tmp/smollm2-nf4.gguf --type nf4`)
"""

import argparse
import json
import os
import sys
from pathlib import Path

import numpy as np
import torch
import bitsandbytes as bnb
import bitsandbytes.functional as BF
from transformers import AutoModelForCausalLM, get_cosine_schedule_with_warmup
from peft import PeftModel

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from make_train_fixtures import GGUF, LORA_RUN, batch  # noqa: E402

LINEARS = {"self_attn": ["q_proj", "k_proj", "v_proj", "o_proj"],
           "mlp": ["gate_proj", "up_proj", "down_proj"]}
GGUF_NAME = {"q_proj": "attn_q", "k_proj": "attn_k", "v_proj": "attn_v", "o_proj": "attn_output",
             "gate_proj": "ffn_gate", "up_proj": "ffn_up", "down_proj": "ffn_down"}


class RowPermutedLinear4bit(bnb.nn.Linear4bit):
    """A Linear4bit holding its weight rows in GGUF (RoPE-permuted) order, as edgetune's NF4 file
    stores attn_q/attn_k, and giving its outputs back in HF order. PEFT sees a Linear4bit."""

    def set_order(self, hf_of_gguf):
        self.register_buffer("hf_order", torch.argsort(torch.as_tensor(hf_of_gguf)), persistent=False)

    def forward(self, x):
        return super().forward(x).index_select(-1, self.hf_order)


def hf_rows_to_gguf(w, n_head):
    """llama.cpp's Q/K row permutation (convert_hf_to_gguf.py), HF -> GGUF, on axis 0."""
    rows = w.shape[0]
    return w.reshape(n_head, 2, rows // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def to_nf4(model, qk_order):
    """Replaces every block linear with a Linear4bit quantized on the CPU. `qk_order` "gguf":
    q/k are quantized in the GGUF row order (RowPermutedLinear4bit), so the double-quant groups
    are those of edgetune's file; "hf": plain Linear4bit over HF rows (what a transformers QLoRA
    user gets; its nested scales differ from the file's on q/k)."""
    cfg = model.config
    # The double-quant offset is mean(absmax); torch's multi-threaded mean sums in another order.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    for layer in model.model.layers:
        for part, names in LINEARS.items():
            mod = getattr(layer, part)
            for n in names:
                old = getattr(mod, n)
                heads = {"q_proj": cfg.num_attention_heads,
                         "k_proj": cfg.num_key_value_heads}.get(n) if qk_order == "gguf" else None
                cls = RowPermutedLinear4bit if heads else bnb.nn.Linear4bit
                new = cls(old.in_features, old.out_features, bias=old.bias is not None,
                          compute_dtype=torch.float32, compress_statistics=True,
                          quant_type="nf4", quant_storage=torch.uint8)
                w = old.weight.data.clone()
                if heads:
                    w = hf_rows_to_gguf(w, heads).contiguous()
                    new.set_order(hf_rows_to_gguf(np.arange(old.out_features), heads))
                new.weight = bnb.nn.Params4bit(w, requires_grad=False,
                                               compress_statistics=True, quant_type="nf4",
                                               blocksize=64, quant_storage=torch.uint8)
                new = new.to("cpu")
                setattr(mod, n, new)
    torch.set_num_threads(threads)


def gguf_rows_to_hf(w, n_head):
    """Undo llama.cpp's Q/K row permutation (FORMATS.md 3.4) on a [rows, cols] array."""
    rows = w.shape[0]
    return w.reshape(n_head, rows // n_head // 2, 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def compare_with_ours(model, path, cfg):
    """Codes and dequantized weights of our NF4 GGUF against bitsandbytes'."""
    import gguf
    r = gguf.GGUFReader(path)
    tensors = {t.name: t for t in r.tensors}
    out = {"weights": 0, "codes_equal": 0, "dequant_equal": 0, "qk_scale_mismatch": 0,
           "qk_blocks": 0, "max_abs_diff_qk": 0.0}
    for li, layer in enumerate(model.model.layers):
        for part, names in LINEARS.items():
            for n in names:
                lin = getattr(getattr(layer, part), n)
                st = lin.weight.quant_state
                rows, cols = lin.out_features, lin.in_features
                theirs_codes = lin.weight.data.numpy().reshape(rows, cols // 2)
                theirs = BF.dequantize_4bit(lin.weight.data, st).numpy().reshape(rows, cols)
                name = f"blk.{li}.{GGUF_NAME[n]}.weight"
                ours_codes = np.asarray(tensors[name].data).view(np.uint8).reshape(rows, cols // 2)
                heads = None
                if not isinstance(lin, RowPermutedLinear4bit):
                    heads = {"q_proj": cfg.num_attention_heads,
                             "k_proj": cfg.num_key_value_heads}.get(n)
                if heads:
                    ours_codes = gguf_rows_to_hf(ours_codes, heads)
                out["weights"] += 1
                out["codes_equal"] += int(np.array_equal(ours_codes, theirs_codes))
                # Our dequantization, through edgetune's own reader, is what the Rust tests check;
                # here the NF4 math is reproduced from the file's parts (FORMATS.md / docs).
                q = np.asarray(tensors[name + ".nf4_absmax"].data).view(np.uint8).astype(np.int64)
                a2 = np.asarray(tensors[name + ".nf4_absmax2"].data, dtype=np.float32)
                off = np.float32(np.asarray(tensors[name + ".nf4_offset"].data, dtype=np.float32)[0])
                code2 = st.state2.code.numpy().astype(np.float32)
                absmax = (code2[q] * np.repeat(a2, 256)[:len(q)]).astype(np.float32) + off
                nf4 = st.code.numpy().astype(np.float32)
                flat = np.asarray(tensors[name].data).view(np.uint8).reshape(-1)
                idx = np.stack([flat >> 4, flat & 15], axis=1).reshape(-1)
                ours = (nf4[idx] * np.repeat(absmax, 64)[:rows * cols]).astype(np.float32)
                ours = ours.reshape(rows, cols)
                if heads:
                    ours = gguf_rows_to_hf(ours, heads)
                    out["qk_blocks"] += len(q)
                    out["max_abs_diff_qk"] = max(out["max_abs_diff_qk"],
                                                 float(np.abs(ours - theirs).max()))
                    ours_b = ours.reshape(-1, 64)
                    theirs_b = theirs.reshape(-1, 64)
                    out["qk_scale_mismatch"] += int((~np.all(ours_b == theirs_b, axis=1)).sum())
                out["dequant_equal"] += int(np.array_equal(ours, theirs))
    return out


def main():
    root = Path(__file__).resolve().parents[2]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=Path, default=root / "models")
    ap.add_argument("--out", type=Path, default=root / "tests/fixtures/train")
    ap.add_argument("--ours", type=Path, default=None, help="edgetune's NF4 GGUF of the same model")
    ap.add_argument("--qk-order", choices=["gguf", "hf"], default="gguf")
    ap.add_argument("--name", default="qlora_run.json")
    a = ap.parse_args()
    torch.manual_seed(0)
    base = AutoModelForCausalLM.from_pretrained(str(a.models), gguf_file=GGUF, dtype=torch.float32)
    to_nf4(base, a.qk_order)
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    check = compare_with_ours(base, str(a.ours), base.config) if a.ours else None
    print("NF4 vs ours:", check)
    model = PeftModel.from_pretrained(base, str(a.out / "lora_init"), is_trainable=True)
    seqs = [json.loads(l) for l in open(a.out / "sequences.jsonl")]
    pad_id = 2  # SmolLM2's padding token (tokenizer.ggml.padding_token_id)
    run = LORA_RUN
    params = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=run["lr"], betas=(0.9, 0.999), eps=1e-8,
                            weight_decay=run["weight_decay"])
    sched = get_cosine_schedule_with_warmup(opt, run["warmup_steps"], run["steps"])
    model.train()
    steps = []
    per_step = run["batch_size"] * run["grad_accum"]
    for s in range(run["steps"]):
        rows = seqs[s * per_step:(s + 1) * per_step]
        micro = [batch(rows[k:k + run["batch_size"]], pad_id) for k in range(0, per_step, run["batch_size"])]
        n_items = sum(int((lab[:, 1:] != -100).sum()) for _, lab, _ in micro)
        total = 0.0
        for ids, lab, mask in micro:
            logits = model(input_ids=ids, attention_mask=mask).logits.float()
            shift = torch.nn.functional.pad(lab, (0, 1), value=-100)[:, 1:]
            ce = torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]), shift.reshape(-1),
                                                   ignore_index=-100, reduction="sum")
            (ce / n_items).backward()
            total += float(ce.detach())
        norm = torch.nn.utils.clip_grad_norm_(params, run["max_grad_norm"])
        lr = sched.get_last_lr()[0]
        opt.step()
        sched.step()
        opt.zero_grad()
        steps.append({"step": s + 1, "loss": total / n_items, "grad_norm": float(norm), "lr": lr,
                      "targets": n_items})
        print("qlora", steps[-1], flush=True)
    lora_norms = {n: float(p.detach().norm()) for n, p in model.named_parameters() if p.requires_grad}
    meta = dict(run, method="qlora", model=GGUF, base="NF4 (bitsandbytes Linear4bit, double quant, "
                "block 64, f32 compute) of every block linear", steps_log=steps,
                adapter_norm=float(np.sqrt(sum(v * v for v in lora_norms.values()))),
                nf4_vs_edgetune=check, generated_by="scripts/reference/make_qlora_fixtures.py",
                torch=torch.__version__, transformers=__import__("transformers").__version__,
                peft=__import__("peft").__version__, bitsandbytes=bnb.__version__)
    meta["qk_order"] = a.qk_order
    (a.out / a.name).write_text(json.dumps(meta, indent=1) + "\n")


if __name__ == "__main__":
    main()
