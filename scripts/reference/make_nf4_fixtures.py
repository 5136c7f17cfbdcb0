#!/usr/bin/env python3
"""Produce tests/fixtures/nf4/ from bitsandbytes (CPU, torch) for tests/nf4_bitsandbytes.rs.

Run from the repository root with the reference venv:
    .venv/bin/python scripts/reference/make_nf4_fixtures.py
(needs numpy, torch, bitsandbytes 0.50.2, gguf-py and models/SmolLM2-135M-Instruct.Q4_1.gguf).

What it writes: raw little-endian arrays (`<name>.bin`) and `index.json` describing them.
- the NF4 table (`get_4bit_type("nf4")`) and both 8-bit dynamic maps (`create_dynamic_map`);
- for each NF4 case (input tensor, block size): `quantize_4bit(..., quant_type="nf4")` with
  `compress_statistics=False` (packed codes, f32 absmax) and `True` (u8 absmax, nested f32
  absmax, offset), the SHA-256 of `dequantize_4bit` output bytes (f32 LE) for both, and the
  double-quant absmax as bnb's pure-PyTorch reference kernel would quantize it;
- for blockwise 8-bit cases: `quantize_blockwise` (the CPU C++ kernel that runs here) and the
  pure-PyTorch reference kernel (`backends/default/ops.py`) codes and absmax, and the SHA-256 of
  `dequantize_blockwise`.

Which bitsandbytes code paths run on CPU (0.50.2) is checked here, not assumed: the script
asserts that `quantize_4bit` gives exactly what the default (pure-PyTorch) kernel gives, and it
records whether the native CPU library is loaded (it then serves `quantize_blockwise`).
"""

import gc
import hashlib
import inspect
import json
import os
import sys

import numpy as np
import torch

import bitsandbytes
import bitsandbytes.functional as F
from bitsandbytes.cextension import ErrorHandlerMockBNBNativeLibrary, lib
import bitsandbytes.backends.default.ops as default_ops

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "tests", "fixtures", "nf4")
MODEL = os.path.join(ROOT, "models", "SmolLM2-135M-Instruct.Q4_1.gguf")

# torch's CPU mean of more than 32768 elements is split across threads, which changes the
# summation order; the double-quant offset is mean(absmax). One thread gives the order we match.
torch.set_num_threads(1)

arrays = {}


def save(name, arr):
    arr = np.ascontiguousarray(arr)
    dtype = {np.dtype("float32"): "f32", np.dtype("uint8"): "u8"}[arr.dtype]
    fname = name + ".bin"
    arr.astype(arr.dtype.newbyteorder("<")).tofile(os.path.join(OUT, fname))
    arrays[name] = {"file": fname, "dtype": dtype, "len": int(arr.size)}
    return name


def sha256_f32(t):
    return hashlib.sha256(t.detach().to(torch.float32).contiguous().numpy().astype("<f4").tobytes()).hexdigest()


def find_default_kernel(signature):
    """The pure-PyTorch kernel in backends/default/ops.py whose source contains `signature`.
    The kernels are all named `_`, so we find the function object by its source."""
    found = []
    for obj in gc.get_objects():
        if inspect.isfunction(obj) and obj.__module__ == default_ops.__name__ and obj.__name__ == "_":
            try:
                src = inspect.getsource(obj)
            except OSError:
                continue
            if signature in src:
                found.append(obj)
    if len(found) != 1:
        sys.exit(f"expected one default kernel with {signature!r}, found {len(found)}")
    return found[0]


default_quantize_blockwise = find_default_kernel("A: torch.Tensor, code: torch.Tensor, blocksize: int)")
default_quantize_4bit = find_default_kernel(
    "A: torch.Tensor, blocksize: int, quant_type: str, quant_storage: torch.dtype"
)

NF4 = F.get_4bit_type("nf4", device="cpu")
NF4_MID = ((NF4[:-1] + NF4[1:]) / 2).numpy()


# ---------------------------------------------------------------- inputs


def smollm_slice(rows):
    import gguf
    from gguf.quants import dequantize

    reader = gguf.GGUFReader(MODEL)
    t = next(t for t in reader.tensors if t.name == "blk.0.attn_q.weight")
    w = dequantize(t.data, t.tensor_type)  # (576 rows, 576 cols), row-major like ggml
    return np.ascontiguousarray(w[:rows].astype(np.float32))


def tie_values(absmax, mode):
    """Values x with x*(1/absmax) == midpoint but x/absmax != midpoint (mode "mul"), or the
    reverse (mode "div"), for every NF4 midpoint where such an x exists near midpoint*absmax.
    They tell the multiply-by-reciprocal rule from division, and test ties -> lower index."""
    a = np.float32(absmax)
    r = np.float32(1) / a
    out = []
    for m in NF4_MID:
        x = np.float32(m * a)
        for _ in range(8):
            x = np.nextafter(x, np.float32(-np.inf))
        for _ in range(17):
            mul = np.float32(x * r) == m
            div = np.float32(x / a) == m
            if (mode == "mul" and mul and not div) or (mode == "div" and div and not mul):
                out.append(x)
                break
            x = np.nextafter(x, np.float32(np.inf))
    return np.array(out, dtype=np.float32)


def ties_tensor():
    """Blocks of 64 whose scaled values land exactly on NF4 midpoints, and a partial last
    block (bnb divides there instead of multiplying by the reciprocal)."""
    blocks = []
    # absmax 1.0: x == midpoint exactly, both signs of every midpoint
    b = np.zeros(64, np.float32)
    b[0] = 1.0
    b[1:16] = NF4_MID
    b[16:31] = -NF4_MID
    blocks.append(b)
    for absmax in (3.0, 0.7, 5.123):
        b = np.zeros(64, np.float32)
        b[0] = -absmax
        m, d = tie_values(absmax, "mul"), tie_values(absmax, "div")
        b[1 : 1 + len(m)] = m
        b[32 : 32 + len(d)] = d
        blocks.append(b)
    tail = np.zeros(40, np.float32)
    tail[0] = 3.0
    m, d = tie_values(3.0, "mul"), tie_values(3.0, "div")
    tail[1 : 1 + len(m)] = m
    tail[20 : 20 + len(d)] = d
    blocks.append(tail)
    return np.concatenate(blocks)


def zeros_tensor():
    """A full all-zero block, a normal block, and an all-zero partial last block."""
    g = torch.Generator().manual_seed(11)
    normal = torch.randn(64, generator=g).numpy()
    return np.concatenate([np.zeros(64, np.float32), normal, np.zeros(10, np.float32)])


def make_inputs():
    g = torch.Generator().manual_seed(1234)
    inputs = {
        "normal": torch.randn(20000, generator=g).numpy(),
        "uniform": (torch.rand(4096, generator=g) * 2 - 1).numpy(),
        "smollm_q16": smollm_slice(16).reshape(-1),
        "ties": ties_tensor(),
        "zeros": zeros_tensor(),
    }
    for n in (1, 7, 63, 65, 1001):
        inputs[f"odd{n}"] = (torch.randn(n, generator=g) * 0.05).numpy()
    return {k: np.ascontiguousarray(v, dtype=np.float32) for k, v in inputs.items()}


# ---------------------------------------------------------------- NF4 cases


def nf4_case(name, x, block_size):
    t = torch.from_numpy(x.copy())
    packed, st = F.quantize_4bit(t, blocksize=block_size, quant_type="nf4", compress_statistics=False)
    ref_packed, ref_absmax = default_quantize_4bit(t, block_size, "nf4", torch.uint8)
    assert torch.equal(packed, ref_packed) and torch.equal(st.absmax, ref_absmax), (
        f"{name}: quantize_4bit on CPU is not the default pure-PyTorch kernel"
    )
    plain = {
        "codes": save(f"{name}_codes", packed.numpy().reshape(-1)),
        "absmax": save(f"{name}_absmax", st.absmax.numpy()),
        "dequant_sha256": sha256_f32(F.dequantize_4bit(packed, st)),
    }

    packed2, st2 = F.quantize_4bit(t, blocksize=block_size, quant_type="nf4", compress_statistics=True)
    assert torch.equal(packed, packed2)
    assert st2.state2.blocksize == 256 and torch.equal(st2.state2.code, F.create_dynamic_map(signed=True))
    offset = st2.offset.reshape(()).to(torch.float32)
    # bnb's pure-PyTorch reference kernel on the same centred absmax, for the nearest-rule test.
    centred = st.absmax - offset
    ref_q, ref_absmax2 = default_quantize_blockwise(centred, st2.state2.code, 256)
    dq = {
        "q": save(f"{name}_dq_q", st2.absmax.numpy()),
        "absmax2": save(f"{name}_dq_absmax2", st2.state2.absmax.numpy()),
        "offset_bits": int(offset.numpy().view(np.uint32)),
        "q_reference_kernel": save(f"{name}_dq_q_ref", ref_q.numpy()),
        "absmax2_reference_kernel": save(f"{name}_dq_absmax2_ref", ref_absmax2.numpy()),
        "dequant_sha256": sha256_f32(F.dequantize_4bit(packed2, st2)),
    }
    return {"name": name, "input": f"input_{name.split('_bs')[0]}", "block_size": block_size,
            "n": int(x.size), "plain": plain, "double_quant": dq}


# ---------------------------------------------------------------- blockwise 8-bit cases


def blockwise_case(name, x, signed, block_size, count_differences):
    code = F.create_dynamic_map(signed=signed)
    t = torch.from_numpy(x.copy())
    q, st = F.quantize_blockwise(t, code=code, blocksize=block_size)
    ref_q, ref_absmax = default_quantize_blockwise(t, code, block_size)
    deq = F.dequantize_blockwise(q, absmax=st.absmax, code=code, blocksize=block_size)
    return {
        "name": name,
        "input": save(f"bw_{name}_input", x),
        "map": "signed" if signed else "unsigned",
        "block_size": block_size,
        "codes_cpu_kernel": save(f"bw_{name}_codes", q.numpy()),
        "absmax_cpu_kernel": save(f"bw_{name}_absmax", st.absmax.numpy()),
        "codes_reference_kernel": save(f"bw_{name}_codes_ref", ref_q.numpy()),
        "absmax_reference_kernel": save(f"bw_{name}_absmax_ref", ref_absmax.numpy()),
        "dequant_sha256": sha256_f32(deq),
        "count_differences": count_differences,
    }


def blockwise_edge_input():
    """Scaled values exactly on dynamic-map midpoints (absmax 1.0), tiny values near zero (the
    CPU kernel's 65536-bin table is coarse there), a full zero block and a partial last block."""
    code = F.create_dynamic_map(signed=True)
    mid = ((code[:-1] + code[1:]) / 2).numpy()
    ties = np.concatenate([[1.0], mid[::2]]).astype(np.float32)  # 129 values, absmax 1
    ties = np.concatenate([ties, np.zeros(256 - ties.size, np.float32)])
    ties2 = np.concatenate([[-1.0], mid[1::2]]).astype(np.float32)
    ties2 = np.concatenate([ties2, np.zeros(256 - ties2.size, np.float32)])
    g = torch.Generator().manual_seed(5)
    tiny = (torch.randn(256, generator=g) * 1e-5).numpy()
    tiny[0] = 1.0
    zero = np.zeros(256, np.float32)
    tail = (torch.randn(100, generator=g)).numpy()
    return np.concatenate([ties, ties2, tiny, zero, tail]).astype(np.float32)


def main():
    os.makedirs(OUT, exist_ok=True)
    for f in os.listdir(OUT):
        if f.endswith(".bin") or f == "index.json":
            os.remove(os.path.join(OUT, f))

    save("nf4_table", NF4.numpy())
    save("dynamic_signed", F.create_dynamic_map(signed=True).numpy())
    save("dynamic_unsigned", F.create_dynamic_map(signed=False).numpy())

    inputs = make_inputs()
    for k, v in inputs.items():
        save(f"input_{k}", v)

    plan = [("normal", 64), ("normal", 32), ("normal", 128), ("normal", 4096), ("uniform", 64),
            ("smollm_q16", 64), ("ties", 64), ("zeros", 64)]
    plan += [(k, 64) for k in inputs if k.startswith("odd")]
    nf4_cases = [nf4_case(f"{k}_bs{bs}", inputs[k], bs) for k, bs in plan]

    g = torch.Generator().manual_seed(99)
    randn3 = (torch.randn(16384, generator=g) * 3).numpy()
    bw_cases = [
        blockwise_case("randn3_signed_bs256", randn3, True, 256, True),
        blockwise_case("randn3abs_unsigned_bs256", np.abs(randn3), False, 256, True),
        blockwise_case("randn3_signed_bs64", randn3[:4000], True, 64, True),
        blockwise_case("edge_signed_bs256", blockwise_edge_input(), True, 256, False),
        blockwise_case("edge_unsigned_bs256", np.abs(blockwise_edge_input()), False, 256, False),
    ]

    index = {
        "generator": "scripts/reference/make_nf4_fixtures.py",
        "versions": {"torch": torch.__version__, "bitsandbytes": bitsandbytes.__version__,
                     "numpy": np.__version__},
        "torch_cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "torch_threads": torch.get_num_threads(),
        "native_cpu_library_loaded": not isinstance(lib, ErrorHandlerMockBNBNativeLibrary),
        "arrays": arrays,
        "nf4": nf4_cases,
        "blockwise8": bw_cases,
    }
    with open(os.path.join(OUT, "index.json"), "w") as f:
        json.dump(index, f, indent=1, sort_keys=True)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(OUT, f)) for f in os.listdir(OUT))
    print(f"wrote {len(arrays)} arrays, {len(nf4_cases)} NF4 cases, {len(bw_cases)} blockwise cases, "
          f"{total} bytes to {OUT}")


if __name__ == "__main__":
    main()
