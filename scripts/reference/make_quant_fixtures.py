#!/usr/bin/env python3
"""Writes tests/fixtures/quant/: gguf-py's decode and encode results for the ggml block formats.

Reference: gguf-py (`gguf.quants.dequantize` / `gguf.quants.quantize`), which mirrors ggml's
dequantize_row_* and quantize_row_*_ref. Needs only numpy and gguf. Deterministic (fixed seeds).

Decode cases per format:
  sane  random blocks, f16 scale fields set to finite values (random sign, exponent 2^-14..2^1),
        everything else random (codes, 6-bit K-quant scales, IQ4_XS scales)
  raw   fully random bytes (NaN / inf / subnormal scales included); compare NaN as NaN
Encode cases per format (Q8_0, Q4_0, BF16, F16): see `encode_cases`.

Files: decode_<T>.bin (input blocks), decode_<T>.f32 (little-endian output), encode_<T>.f32
(input), encode_<T>.bin (expected bytes) and index.json describing the cases (in blocks).
Usage: make_quant_fixtures.py [OUT_DIR]   (default tests/fixtures/quant)
"""
import json
import sys
import warnings
from importlib import metadata
from pathlib import Path

import numpy as np
from gguf import GGMLQuantizationType as T
from gguf import quants
from gguf.constants import GGML_QUANT_SIZES

# Byte offsets of the f16 scale fields per block (FORMATS.md §2.3-2.4).
F16_FIELDS = {
    "F16": [0], "Q4_0": [0], "Q4_1": [0, 2], "Q5_0": [0], "Q5_1": [0, 2], "Q8_0": [0],
    "Q2_K": [80, 82], "Q3_K": [108], "Q4_K": [0, 2], "Q5_K": [0, 2], "Q6_K": [208],
    "IQ4_NL": [0], "IQ4_XS": [0],
}
DECODE_TYPES = ["F32", "F16", "BF16", "Q4_0", "Q4_1", "Q5_0", "Q5_1", "Q8_0",
                "Q2_K", "Q3_K", "Q4_K", "Q5_K", "Q6_K", "IQ4_NL", "IQ4_XS"]


def sane_f16(rng, n):
    exp = rng.integers(1, 17, n, dtype=np.uint16)
    man = rng.integers(0, 1024, n, dtype=np.uint16)
    sign = rng.integers(0, 2, n, dtype=np.uint16) << 15
    return sign | (exp << 10) | man


def decode_blocks(name, rng):
    block, size = GGML_QUANT_SIZES[T[name]]
    n_sane, n_raw = (64, 16) if block == 32 else (12, 4) if block == 256 else (1536, 512)
    sane = rng.integers(0, 256, (n_sane, size), dtype=np.uint8)
    for at in F16_FIELDS.get(name, []):
        sane[:, at:at + 2] = sane_f16(rng, n_sane).view(np.uint8).reshape(n_sane, 2)
    if name == "F32":
        sane = (rng.standard_normal(n_sane).astype(np.float32) * 10).view(np.uint8).reshape(n_sane, 4)
    if name == "BF16":
        bits = (rng.standard_normal(n_sane).astype(np.float32) * 10).view(np.uint32) >> 16
        sane = bits.astype(np.uint16).view(np.uint8).reshape(n_sane, 2)
    raw = rng.integers(0, 256, (n_raw, size), dtype=np.uint8)
    return [("sane", sane), ("raw", raw)]


def f32_from_bits(bits):
    return np.array(bits, dtype=np.uint32).view(np.float32)


def encode_cases(name, rng):
    """(case name, f32 array whose length is a multiple of the block size)."""
    block = GGML_QUANT_SIZES[T[name]][0]
    cases = []
    if name in ("Q8_0", "Q4_0"):
        scale = (10.0 ** rng.uniform(-3, 3, (64, 1))).astype(np.float32)
        cases.append(("normal", rng.standard_normal((64, 32)).astype(np.float32) * scale))
        cases.append(("uniform", rng.uniform(-1, 1, (32, 32)).astype(np.float32)))
        # Exact ties: with d = 1 (Q8_0: max|x| = 127; Q4_0: max = -8) codes land on .5 exactly;
        # with d = 1/2 on quarter steps.
        ties = []
        for d in (1.0, 0.5):
            for _ in range(8):
                if name == "Q8_0":
                    x = (rng.integers(-127, 127, 32) + 0.5) * d
                    x[rng.integers(0, 32)] = 127 * d * rng.choice([-1, 1])
                else:
                    x = rng.integers(-16, 16, 32) * 0.5 * d
                    x[rng.integers(0, 32)] = -8 * d
                ties.append(x.astype(np.float32))
        cases.append(("ties", np.stack(ties)))
        zeros = np.zeros((3, 32), np.float32)
        zeros[1, 5] = -0.0
        zeros[2, 1:] = -0.0  # first element +0: ggml and gguf-py agree only then (see src/quant/q4_0.rs)
        cases.append(("zeros", zeros))
        # Equal magnitudes of both signs: the first one sets the sign of d.
        cases.append(("sign_tie", np.tile(np.array([3.0, -3.0] * 16, np.float32), (2, 1)) * [[1], [-1]]))
        cases.append(("tiny", rng.standard_normal((4, 32)).astype(np.float32) * np.float32(1e-6)))
        cases.append(("underflow", rng.standard_normal((2, 32)).astype(np.float32) * np.float32(1e-9)))
        cases.append(("overflow", rng.standard_normal((2, 32)).astype(np.float32) * np.float32(1e7)))
    elif name == "BF16":
        cases.append(("normal", rng.standard_normal(1024).astype(np.float32)))
        hi = rng.integers(0, 1 << 16, 256, dtype=np.uint32) << 16
        cases.append(("ties", (hi | 0x8000).view(np.float32)))  # exactly halfway, even and odd
        cases.append(("random_bits", rng.integers(0, 1 << 32, 512, dtype=np.uint64).astype(np.uint32).view(np.float32)))
        cases.append(("specials", f32_from_bits([
            0x7fc00000, 0x7f800001, 0xff800001, 0x7fbfffff, 0xffffffff, 0x7f800000, 0xff800000,
            0x7f7fffff, 0x00000001, 0x807fffff, 0x00000000, 0x80000000, 0x3f808000, 0x3f818000,
            0x3f80ffff, 0x7f7f8000])))
    elif name == "F16":
        cases.append(("normal", rng.standard_normal(1024).astype(np.float32)))
        cases.append(("wide", (rng.standard_normal(512) * 10.0 ** rng.uniform(-9, 6, 512)).astype(np.float32)))
        # Halfway between neighbouring f16 values (normal and subnormal range).
        h = rng.integers(0, 0x7bff, 256, dtype=np.uint16)
        a = h.view(np.float16).astype(np.float64)
        b = (h + 1).view(np.float16).astype(np.float64)
        cases.append(("ties", ((a + b) / 2).astype(np.float32)))
        cases.append(("specials", np.array([
            65504.0, 65519.99, 65520.0, 1e9, -1e9, np.inf, -np.inf, 0.0, -0.0, 2.0 ** -24,
            2.0 ** -25, 2.0 ** -25 * 1.0001, 2.0 ** -26, 6.1e-5, 1.0 + 2.0 ** -11, 1.0 + 3 * 2.0 ** -11],
            np.float32)))
    out = []
    for case, x in cases:
        x = np.asarray(x, np.float32).reshape(-1)
        assert x.size % block == 0, (name, case)
        out.append((case, x))
    return out


def main():
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/quant")
    out.mkdir(parents=True, exist_ok=True)
    index = {"generator": "scripts/reference/make_quant_fixtures.py",
             "reference": f"gguf-py {metadata.version('gguf')}, numpy {np.__version__}",
             "decode": [], "encode": []}
    warnings.simplefilter("ignore")  # overflow / invalid warnings are expected for raw blocks
    for i, name in enumerate(DECODE_TYPES):
        rng = np.random.default_rng(1000 + i)
        cases = decode_blocks(name, rng)
        blocks = np.concatenate([b for _, b in cases])
        with np.errstate(all="ignore"):
            y = quants.dequantize(blocks.reshape(-1), T[name]).astype("<f4", copy=False)
        (out / f"decode_{name}.bin").write_bytes(blocks.tobytes())
        (out / f"decode_{name}.f32").write_bytes(y.tobytes())
        index["decode"].append({"type": name, "input": f"decode_{name}.bin",
                                "output": f"decode_{name}.f32",
                                "cases": [{"name": c, "blocks": len(b)} for c, b in cases]})
    for i, name in enumerate(["Q8_0", "Q4_0", "BF16", "F16"]):
        rng = np.random.default_rng(2000 + i)
        cases = encode_cases(name, rng)
        x = np.concatenate([c for _, c in cases])
        with np.errstate(all="ignore"):
            q = np.asarray(quants.quantize(x, T[name]))
        block = GGML_QUANT_SIZES[T[name]][0]
        (out / f"encode_{name}.f32").write_bytes(x.astype("<f4").tobytes())
        (out / f"encode_{name}.bin").write_bytes(q.tobytes())
        index["encode"].append({"type": name, "input": f"encode_{name}.f32",
                                "output": f"encode_{name}.bin",
                                "cases": [{"name": c, "blocks": len(v) // block} for c, v in cases]})
    (out / "index.json").write_text(json.dumps(index, indent=1) + "\n")
    total = sum(p.stat().st_size for p in out.iterdir() if p.name.startswith(("decode_", "encode_", "index")))
    print(f"wrote {out} ({total} bytes)")


if __name__ == "__main__":
    main()
