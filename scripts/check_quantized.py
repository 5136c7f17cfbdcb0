#!/usr/bin/env python3
"""Independent check of a file written by `edgetune quantize`, using only gguf-py and numpy.

usage: check_quantized.py ORIGINAL.gguf QUANTIZED.gguf [--npy-dir DIR]

- Every ggml-typed tensor of the output is compared with gguf-py's own encoding of the original
  tensor: gguf-py dequantizes the original, then quantizes it to the output's type; the bytes must be
  identical (F32 tensors: the dequantized values must be identical). Tensors edgetune copied unchanged
  must equal the original bytes.
- Every NF4 weight (docs/nf4-gguf.md) is decoded here from the documented layout; its values must be
  within the NF4 error bound of the original, and, if --npy-dir holds NAME.npy files written by
  `edgetune inspect --tensor NAME --npy`, equal edgetune's decoding bit for bit.
Exits non-zero with a message on the first mismatch.
"""
import os
import sys

import numpy as np
from gguf import GGUFReader, GGMLQuantizationType as T
from gguf.quants import dequantize, quantize

NF4 = np.array([-1.0, -0.6961928009986877, -0.5250730514526367, -0.39491748809814453,
                -0.28444138169288635, -0.18477343022823334, -0.09105003625154495, 0.0,
                0.07958029955625534, 0.16093020141124725, 0.24611230194568634, 0.33791524171829224,
                0.44070982933044434, 0.5626170039176941, 0.7229568362236023, 1.0], dtype=np.float32)


def fail(msg):
    print(f"check_quantized: FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def meta(reader, key):
    f = reader.fields.get(key)
    if f is None:
        return None
    return f.contents()


def logical(t):
    """Dequantized values of a plain tensor as f32 in row-major order, plus its numpy shape."""
    shape = tuple(int(d) for d in reversed(t.shape))
    return dequantize(t.data, t.tensor_type).astype(np.float32).reshape(-1), shape


def decode_nf4(tensors, name, block, double):
    codes = tensors[name].data.view(np.uint8).reshape(-1)
    idx = np.stack([codes >> 4, codes & 15], axis=1).reshape(-1)
    n = idx.size
    if double:
        q = tensors[name + ".nf4_absmax"].data.view(np.uint8).reshape(-1)
        absmax2 = tensors[name + ".nf4_absmax2"].data.astype(np.float32).reshape(-1)
        offset = np.float32(tensors[name + ".nf4_offset"].data.reshape(-1)[0])
        dyn = np.array(meta_cache["nested_code"], dtype=np.float32)
        blocks2 = np.arange(q.size) // 256
        absmax = (dyn[q] * absmax2[blocks2] + offset).astype(np.float32)
    else:
        absmax = tensors[name + ".nf4_absmax"].data.astype(np.float32).reshape(-1)
    blocks = np.arange(n) // block
    return (NF4[idx] * absmax[blocks]).astype(np.float32), absmax


meta_cache = {}


def main():
    args = sys.argv[1:]
    npy_dir = None
    if "--npy-dir" in args:
        i = args.index("--npy-dir")
        npy_dir = args[i + 1]
        args = args[:i] + args[i + 2:]
    if len(args) != 2:
        fail(__doc__)
    orig = {t.name: t for t in GGUFReader(args[0]).tensors}
    out_reader = GGUFReader(args[1])
    out = {t.name: t for t in out_reader.tensors}
    nf4_names = meta(out_reader, "edgetune.nf4.tensors") or []
    block = meta(out_reader, "edgetune.nf4.block_size")
    double = bool(meta(out_reader, "edgetune.nf4.double_quant"))
    if double:
        meta_cache["nested_code"] = meta(out_reader, "edgetune.nf4.nested_code")
    parts = {n + s for n in nf4_names for s in (".nf4_absmax", ".nf4_absmax2", ".nf4_offset")}
    checked = {"copied": 0, "encoded": 0, "f32": 0, "nf4": 0, "nf4_npy": 0}
    for name, t in out.items():
        if name in parts:
            continue
        if name not in orig:
            fail(f"output tensor {name} is not in the original")
        o = orig[name]
        if name in nf4_names:
            values, absmax = decode_nf4(out, name, block, double)
            ref, shape = logical(o)
            if values.size != ref.size:
                fail(f"{name}: NF4 holds {values.size} values, original {ref.size}")
            # Error bound: half the widest gap between adjacent NF4 codes times the block absmax
            # (rounding to the nearest code), plus the error of the stored absmax itself.
            blocks = np.arange(ref.size) // block
            true_absmax = np.maximum.reduceat(np.abs(ref), np.arange(0, ref.size, block))
            bound = 0.5 * np.max(np.diff(NF4)) * true_absmax[blocks] + np.abs(absmax - true_absmax)[blocks] + 1e-6
            err = np.abs(values - ref)
            if np.any(err > bound):
                k = int(np.argmax(err - bound))
                fail(f"{name}: NF4 value {k} is {values[k]}, original {ref[k]}, beyond the bound {bound[k]}")
            checked["nf4"] += 1
            if npy_dir and os.path.exists(os.path.join(npy_dir, name + ".npy")):
                ours = np.load(os.path.join(npy_dir, name + ".npy"))
                if ours.shape != shape:
                    fail(f"{name}: edgetune npy shape {ours.shape}, expected {shape}")
                if not np.array_equal(ours.reshape(-1).view(np.uint32), values.view(np.uint32)):
                    k = int(np.argmax(ours.reshape(-1) != values))
                    fail(f"{name}: edgetune decodes value {k} as {ours.reshape(-1)[k]}, documented layout gives {values[k]}")
                checked["nf4_npy"] += 1
            continue
        if t.tensor_type == o.tensor_type:
            if not np.array_equal(t.data.view(np.uint8), o.data.view(np.uint8)):
                fail(f"{name}: stored as {t.tensor_type.name} like the original, but the bytes differ")
            checked["copied"] += 1
            continue
        ref, _ = logical(o)
        if t.tensor_type == T.F32:
            if not np.array_equal(t.data.reshape(-1).view(np.uint32), ref.view(np.uint32)):
                fail(f"{name}: F32 values differ from the dequantized original")
            checked["f32"] += 1
            continue
        want = quantize(ref.reshape(tuple(int(d) for d in reversed(o.shape))), t.tensor_type)
        if not np.array_equal(want.view(np.uint8).reshape(-1), t.data.view(np.uint8).reshape(-1)):
            got = t.data.view(np.uint8).reshape(-1)
            k = int(np.argmax(want.view(np.uint8).reshape(-1) != got))
            fail(f"{name}: {t.tensor_type.name} bytes differ from gguf-py's encoding (first at byte {k})")
        checked["encoded"] += 1
    print("check_quantized: ok", checked)


if __name__ == "__main__":
    main()
