#!/usr/bin/env python3
"""Checks that PEFT (0.21.2) loads adapter directories edgetune wrote, for the tiny fixture model.

Usage: check_peft_load.py OURS[=REFERENCE] ...

For each OURS directory: builds the tiny Llama of make_adapter_fixtures.py (same seed, same weights),
loads OURS with PeftModel.from_pretrained, and checks that the adapter state PEFT holds equals the
tensors of OURS/adapter_model.safetensors (same keys, same values), then runs the model on fixed
input ids. With =REFERENCE (a PEFT-written directory of the same adapter), the logits must equal
those of the model with REFERENCE loaded. Prints one JSON object per directory and exits 1 if any
check failed. Needs torch, transformers and peft (not part of the CI environment).
"""
import json
import sys
import warnings
from pathlib import Path

import torch
from peft import PeftModel
from peft.utils import get_peft_model_state_dict
from safetensors.torch import load_file

sys.path.insert(0, str(Path(__file__).resolve().parent))
from make_adapter_fixtures import tiny_model  # noqa: E402

INPUT_IDS = torch.tensor([[1, 17, 42, 99, 5, 63, 120]])


def logits_with(adapter_dir):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        pm = PeftModel.from_pretrained(tiny_model(), adapter_dir).eval()
    with torch.no_grad():
        logits = pm(input_ids=INPUT_IDS).logits
    return pm, logits, [str(w.message) for w in caught if "adapter" in str(w.message).lower()]


def check(spec):
    ours, _, ref = spec.partition("=")
    result = {"dir": ours, "ok": True, "problems": []}
    pm, logits, warns = logits_with(ours)
    result["warnings"] = warns
    if any("missing" in w.lower() or "unexpected" in w.lower() for w in warns):
        result["problems"].append("load warnings: " + "; ".join(warns))
    state = get_peft_model_state_dict(pm)
    file = load_file(str(Path(ours) / "adapter_model.safetensors"))
    if set(state) != set(file):
        result["problems"].append(
            f"keys differ: only PEFT {sorted(set(state) - set(file))[:3]}, only file {sorted(set(file) - set(state))[:3]}")
    else:
        worst = max(float((state[k].float() - file[k].float()).abs().max()) for k in file)
        result["max_state_diff"] = worst
        if worst != 0.0:
            result["problems"].append(f"loaded values differ from the file by {worst}")
    with torch.no_grad():
        base = tiny_model()(input_ids=INPUT_IDS).logits
    # Prompt tuning returns logits for the virtual tokens too: compare the real positions.
    result["logits_vs_base_max_diff"] = float((logits[:, -base.shape[1]:] - base).abs().max())
    if ref:
        _, ref_logits, _ = logits_with(ref)
        d = float((logits - ref_logits).abs().max())
        result["logits_vs_reference_max_diff"] = d
        if d != 0.0:
            result["problems"].append(f"logits differ from the reference adapter's by {d}")
    result["ok"] = not result["problems"]
    return result


def main():
    results = [check(s) for s in sys.argv[1:]]
    for r in results:
        print(json.dumps(r))
    sys.exit(0 if results and all(r["ok"] for r in results) else 1)


if __name__ == "__main__":
    main()
