#!/usr/bin/env python3
"""Produce tests/fixtures/optim/ from torch, transformers and bitsandbytes (CPU) for
tests/optim_reference.rs.

Run from the repository root with the reference venv:
    .venv/bin/python scripts/reference/make_optim_fixtures.py
(needs numpy, torch, transformers and bitsandbytes 0.50.2).

Every run trains the same four flat f32 parameters (1, 7, 4103 and 10000 elements) for a few
steps with gradients from a small counter-based generator that tests/optim_reference.rs
reimplements bit for bit (`values` below: integers times a power of two, so every value is exact
in f32 and both languages produce the same bits). Elements 512..768 of the 10000-element
parameter always get zero gradients (an all-zero 8-bit block for AdamW8bit).

What it writes: raw little-endian arrays (`<name>.bin`) and `index.json` describing them and
each run (optimizer, hyper-parameters, steps, the learning rate of every step as the scheduler
set it, and with clipping the pre-clip total norm and the clip coefficient of every step).

About sqrt: torch's CPU `Tensor.sqrt` goes through MKL's vector math, which on some CPUs (AMD
here) is not correctly rounded (about 18 % of results are 1 ulp off). The rule edgetune matches
is torch's with an IEEE sqrt, so the runs marked `"sqrt": "ieee"` replace `Tensor.sqrt` by
NumPy's correctly rounded f32 sqrt while torch's own kernels do everything else. One AdamW run is
also recorded with torch's sqrt untouched (`"sqrt": "torch"`) to measure the difference.
Whether torch's sqrt is correctly rounded on the machine that made the fixtures is recorded in
`torch_sqrt_ieee`.
"""

import contextlib
import json
import os
import sys

import numpy as np
import torch

import bitsandbytes as bnb
import transformers
from transformers import (
    get_constant_schedule_with_warmup,
    get_cosine_schedule_with_warmup,
    get_linear_schedule_with_warmup,
)
from torch.optim.optimizer import _default_to_fused_or_foreach

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "optim")

# Elementwise kernels do not depend on threading, but keep the reductions single-threaded.
torch.set_num_threads(1)

SIZES = [1, 7, 4103, 10000]
NAMES = ["blk.0.attn_q.lora_a", "blk.0.attn_q.lora_b", "blk.1.ffn_up.lora_a", "blk.1.ffn_up.lora_b"]
ZERO_GRAD = (3, 512, 768)  # (param index, begin, end): always-zero gradient elements

M64 = np.uint64(0xFFFFFFFFFFFFFFFF)


def splitmix(z):
    """SplitMix64 finaliser on a uint64 array (wrapping arithmetic)."""
    with np.errstate(over="ignore"):
        z = z + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))


def values(stream, n, scale_log2):
    """n values of stream `stream`: an Irwin-Hall sum of four 16-bit fields of a hash, centred,
    times 2^(scale_log2 - 16). At most 18 significant bits, so exact in f32."""
    key = splitmix(np.array([stream], dtype=np.uint64))[0]
    h = splitmix(np.arange(n, dtype=np.uint64) ^ key)
    s = np.zeros(n, dtype=np.int64)
    for k in range(4):
        s += ((h >> np.uint64(16 * k)) & np.uint64(0xFFFF)).astype(np.int64)
    s -= 2 * 65535
    return (s.astype(np.float64) * 2.0 ** (scale_log2 - 16)).astype(np.float32)


def init_params():
    return [values(1000 + i, n, -2) for i, n in enumerate(SIZES)]


def grads(step):
    """Gradients of step `step` (0-based). Their scale cycles so that the global norm is about
    2.1, 1.1 and 0.5 (clipping at 1.0 acts on two steps of three)."""
    scale = -5 - (step % 3)
    out = [values((step + 1) * 256 + i, n, scale) for i, n in enumerate(SIZES)]
    p, b, e = ZERO_GRAD
    out[p][b:e] = 0.0
    return out


@contextlib.contextmanager
def ieee_sqrt():
    """Replace Tensor.sqrt by NumPy's correctly rounded sqrt (see the module docs)."""
    original = torch.Tensor.sqrt

    def sqrt(self):
        return torch.from_numpy(np.sqrt(self.detach().cpu().numpy()))

    torch.Tensor.sqrt = sqrt
    try:
        yield
    finally:
        torch.Tensor.sqrt = original


def torch_sqrt_is_ieee():
    x = torch.from_numpy(values(7, 100000, 0)).abs() + 0.01
    return bool(np.array_equal(torch.sqrt(x).numpy(), np.sqrt(x.numpy())))


arrays = {}


def save(name, arr):
    arr = np.ascontiguousarray(arr)
    dtype = {np.dtype(np.float32): "f32", np.dtype(np.uint8): "u8"}[arr.dtype]
    path = os.path.join(OUT, name + ".bin")
    arr.astype(arr.dtype.newbyteorder("<")).tofile(path)
    arrays[name] = {"file": name + ".bin", "dtype": dtype, "len": int(arr.size)}


def f64_bits(x):
    return int(np.array([x], dtype=np.float64).view(np.uint64)[0])


def f32_bits(x):
    return int(np.array([x], dtype=np.float32).view(np.uint32)[0])


def make_schedule(opt, sched):
    if sched is None:
        return None
    kind, warmup, total = sched["kind"], sched["warmup"], sched["total"]
    if kind == "constant":
        return get_constant_schedule_with_warmup(opt, warmup)
    if kind == "linear":
        return get_linear_schedule_with_warmup(opt, warmup, total)
    if kind == "cosine":
        return get_cosine_schedule_with_warmup(opt, warmup, total)
    raise ValueError(kind)


def run(name, make_opt, steps, sched=None, max_norm=None, sqrt="ieee", save_state=None):
    params = [torch.nn.Parameter(torch.from_numpy(p.copy())) for p in init_params()]
    opt = make_opt(params)
    scheduler = make_schedule(opt, sched)
    lrs, norms, coefs = [], [], []
    ctx = ieee_sqrt() if sqrt == "ieee" else contextlib.nullcontext()
    with ctx:
        for t in range(steps):
            for p, g in zip(params, grads(t)):
                p.grad = torch.from_numpy(g.copy())
            if max_norm is not None:
                norm = torch.nn.utils.clip_grad_norm_(params, max_norm)
                norms.append(float(norm))
                # The coefficient clip_grad_norm_ multiplied by, recomputed the same way.
                coefs.append(float(torch.clamp(max_norm / (norm + 1e-6), max=1.0)))
            lrs.append(float(opt.param_groups[0]["lr"]))
            opt.step()
            if scheduler is not None:
                scheduler.step()
    final = np.concatenate([p.detach().numpy() for p in params])
    save(name + "_params", final)
    # Floats also as bit patterns: JSON readers need not parse decimals correctly rounded.
    entry = {"steps": steps, "lr": lrs, "lr_bits": [f64_bits(x) for x in lrs], "sqrt": sqrt,
             "params": name + "_params"}
    if sched is not None:
        entry["schedule"] = sched
    if max_norm is not None:
        entry["max_norm"] = max_norm
        entry["grad_norm"] = norms
        entry["grad_norm_bits"] = [f32_bits(x) for x in norms]
        entry["clip_coef"] = coefs
        entry["clip_coef_bits"] = [f32_bits(x) for x in coefs]
    if save_state is not None:
        entry["state"] = save_state(name, opt, params)
    return entry


def save_bnb_state(name, opt, params):
    """bitsandbytes' state per parameter: u8 codes + absmax (8-bit) or f32 (small params)."""
    out = {}
    for pname, p in zip(NAMES, params):
        st = opt.state[p]
        keys = {}
        for k in ("state1", "state2", "absmax1", "absmax2"):
            if k in st:
                arr = st[k].detach().numpy().reshape(-1)
                save(f"{name}_{pname}_{k}", arr)
                keys[k] = f"{name}_{pname}_{k}"
        out[pname] = keys
    return out


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        os.remove(os.path.join(OUT, f))

    probe = [torch.zeros(3)]
    fused, foreach = _default_to_fused_or_foreach(probe, differentiable=False, use_fused=False)
    if fused or foreach:
        sys.exit("torch now defaults to a fused/foreach optimizer on CPU; the fixtures assume "
                 "_single_tensor_adam / _single_tensor_sgd")

    adamw = lambda wd: (lambda ps: torch.optim.AdamW(ps, lr=1e-3, weight_decay=wd))
    runs = {
        "adamw_wd0.01": run("adamw_wd0.01", adamw(0.01), 20),
        "adamw_wd0": run("adamw_wd0", adamw(0.0), 20),
        "adamw_linear_clip": run(
            "adamw_linear_clip", adamw(0.01), 20,
            sched={"kind": "linear", "warmup": 5, "total": 20}, max_norm=1.0),
        "adamw_cosine_clip": run(
            "adamw_cosine_clip", adamw(0.0), 20,
            sched={"kind": "cosine", "warmup": 3, "total": 20}, max_norm=1.0),
        "adamw_constant_warmup": run(
            "adamw_constant_warmup", adamw(0.01), 8,
            sched={"kind": "constant", "warmup": 4, "total": 8}),
        "adamw_torch_sqrt": run("adamw_torch_sqrt", adamw(0.01), 20, sqrt="torch"),
        "sgd_momentum": run(
            "sgd_momentum",
            lambda ps: torch.optim.SGD(ps, lr=1e-2, momentum=0.9, weight_decay=0.01), 20),
        "adamw8bit": run(
            "adamw8bit",
            lambda ps: bnb.optim.AdamW8bit(ps, lr=1e-3, weight_decay=0.01), 10,
            save_state=save_bnb_state),
    }
    # torch.linalg.vector_norm of generator vectors of many lengths (every tail length of its
    # 8-lane kernel), as f32 bits; the vectors are regenerated by the test.
    norm_sizes = list(range(1, 41)) + [100, 1000, 4099, 33333]
    norms = {str(n): f32_bits(float(torch.linalg.vector_norm(torch.from_numpy(
        values(5000 + n, n, -3))))) for n in norm_sizes}
    hyper = {
        "adamw": {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8},
        "sgd": {"lr": 1e-2, "momentum": 0.9, "weight_decay": 0.01},
        "adamw8bit": {"lr": 1e-3, "betas": [0.9, 0.999], "eps": 1e-8, "weight_decay": 0.01,
                      "min_8bit_size": 4096, "block_size": 256},
    }
    index = {
        "generator": {
            "sizes": SIZES,
            "names": NAMES,
            "init": "values(1000 + i, n, -2)",
            "grad": "values((step + 1) * 256 + i, n, -5 - step % 3)",
            "zero_grad": list(ZERO_GRAD),
        },
        "versions": {
            "torch": torch.__version__,
            "transformers": transformers.__version__,
            "bitsandbytes": bnb.__version__,
            "numpy": np.__version__,
            "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        },
        "torch_sqrt_ieee": torch_sqrt_is_ieee(),
        "vector_norm_bits": norms,
        "hyper": hyper,
        "runs": runs,
        "arrays": arrays,
    }
    with open(os.path.join(OUT, "index.json"), "w") as f:
        json.dump(index, f, indent=1)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(OUT, n)) for n in os.listdir(OUT))
    print(f"wrote {len(arrays)} arrays, {total} bytes to {OUT}")


if __name__ == "__main__":
    main()
