#!/usr/bin/env python3
"""Prints {tensor name: sha256 of its dequantized little-endian f32 values} for a GGUF model,
using gguf-py (GGUFReader + gguf.quants.dequantize) as the reference. Values are hashed in
storage order (row-major, ne[0] fastest), in chunks of rows to bound memory.

Usage: dequant_hashes.py MODEL.gguf > tests/fixtures/quant/dequant_sha256_<model>.json
"""
import hashlib
import json
import sys

import numpy as np
from gguf import GGUFReader
from gguf.quants import dequantize

CHUNK_ROWS = 4096


def main():
    reader = GGUFReader(sys.argv[1])
    out = {}
    for t in reader.tensors:
        data = t.data
        rows = data.reshape(-1, data.shape[-1]) if data.ndim > 1 else data.reshape(1, -1)
        h = hashlib.sha256()
        for start in range(0, rows.shape[0], CHUNK_ROWS):
            y = dequantize(rows[start:start + CHUNK_ROWS], t.tensor_type)
            h.update(np.ascontiguousarray(y, dtype="<f4").tobytes())
        out[t.name] = {"type": t.tensor_type.name, "elements": int(t.n_elements), "sha256": h.hexdigest()}
    json.dump(out, sys.stdout, indent=1)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
