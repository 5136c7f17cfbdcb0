#!/usr/bin/env python3
"""Prints gguf-py's view of a GGUF file as JSON, for the Rust tests to compare with our reader's.

Usage: check_gguf_pyread.py FILE [--hash]

Output: {"version", "alignment", "data_offset",
         "metadata": [{"key", "type", "elem_type" (arrays only), "value"}...] in file order,
         "tensors": [{"name", "type", "ne", "offset" (relative), "data_offset" (absolute),
                      "n_bytes", "sha256" (with --hash, else null)}...]}
Types are the numeric GGUF/ggml ids. FLOAT32/FLOAT64 values are printed as their IEEE-754 bit
patterns (integers) so the comparison is exact and NaN-safe; strings are decoded as UTF-8.
"""
import hashlib
import json
import sys

import numpy as np
from gguf import GGUFReader, GGUFValueType


def scalar(value_type, part):
    if value_type == GGUFValueType.FLOAT32:
        return int(part.view(np.uint32)[0])
    if value_type == GGUFValueType.FLOAT64:
        return int(part.view(np.uint64)[0])
    if value_type == GGUFValueType.BOOL:
        return bool(part[0])
    if value_type == GGUFValueType.STRING:
        return part.tobytes().decode("utf-8")
    return int(part[0])


def field_json(field):
    value_type = field.types[0]
    out = {"key": field.name, "type": int(value_type)}
    if value_type == GGUFValueType.ARRAY:
        # parts = [key_len, key, value_type, elem_type, count, elements...]; types lacks the element
        # type for an empty array, so read it from the parts.
        elem_type = GGUFValueType(int(field.parts[3][0]))
        out["elem_type"] = int(elem_type)
        out["value"] = [scalar(elem_type, field.parts[i]) for i in field.data]
    else:
        out["value"] = scalar(value_type, field.parts[field.data[0]])
    return out


def main():
    if len(sys.argv) not in (2, 3) or (len(sys.argv) == 3 and sys.argv[2] != "--hash"):
        sys.exit(__doc__)
    reader = GGUFReader(sys.argv[1])
    want_hash = len(sys.argv) == 3
    metadata = [field_json(f) for name, f in reader.fields.items() if not name.startswith("GGUF.")]
    tensors = []
    for t in reader.tensors:
        tensors.append({
            "name": t.name,
            "type": int(t.tensor_type),
            "ne": [int(d) for d in t.shape],
            "offset": int(t.field.parts[-1][0]),
            "data_offset": int(t.data_offset),
            "n_bytes": int(t.n_bytes),
            "sha256": hashlib.sha256(t.data.tobytes()).hexdigest() if want_hash else None,
        })
    json.dump({
        "version": int(reader.fields["GGUF.version"].parts[0][0]),
        "alignment": int(reader.alignment),
        "data_offset": int(reader.data_offset),
        "metadata": metadata,
        "tensors": tensors,
    }, sys.stdout)


if __name__ == "__main__":
    main()
