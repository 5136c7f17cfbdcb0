#!/usr/bin/env python3
"""A Llama-shaped GGUF model with random weights, written tensor by tensor (never more than one
tensor in memory), for memory and speed measurements at sizes no bundled model has.

Default shapes are Llama-3.2-1B's (16 blocks, n_embd 2048, n_ff 8192, 32 heads, 8 KV heads,
head_dim 64, rope theta 500000, tied output) except the vocabulary: the tokenizer metadata is
copied from a donor GGUF (SmolLM2's, 49152 tokens), and the embedding must have one row per token
of that tokenizer, so the vocabulary is the donor's. With 49152 rows the model has 1.07 B
parameters (Llama-3.2-1B: 1.24 B, of which 263 M are its 128256-row embedding).

Weights: N(0, 0.02) as F16 (norm weights 1.0 as F32), from a fixed seed. Quantize the result with
`edgetune quantize OUT.gguf -o OUT-nf4.gguf --type nf4`.

Usage: python3 scripts/make_random_model.py --donor models/SmolLM2-135M-Instruct.Q4_1.gguf -o OUT.gguf
       [--layers 16 --embd 2048 --ff 8192 --heads 32 --kv-heads 8 --seed 0]
"""
import argparse
import os

import numpy as np
import gguf


def copy_tokenizer(reader, writer):
    """Copies every tokenizer.* key of the donor."""
    for name, field in reader.fields.items():
        if not name.startswith("tokenizer."):
            continue
        vtype = field.types[0]
        if vtype == gguf.GGUFValueType.ARRAY:
            sub = field.types[1]
            if sub == gguf.GGUFValueType.STRING:
                vals = [bytes(field.parts[i]).decode("utf-8") for i in field.data]
            else:
                vals = [field.parts[i].tolist()[0] for i in field.data]
            writer.add_array(name, vals)
        elif vtype == gguf.GGUFValueType.STRING:
            writer.add_string(name, bytes(field.parts[field.data[0]]).decode("utf-8"))
        else:
            writer.add_key_value(name, field.parts[field.data[0]].tolist()[0], vtype)
    tokens = reader.fields["tokenizer.ggml.tokens"]
    return len(tokens.data)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--donor", required=True, help="GGUF whose tokenizer metadata is copied")
    ap.add_argument("-o", "--out", required=True)
    ap.add_argument("--layers", type=int, default=16)
    ap.add_argument("--embd", type=int, default=2048)
    ap.add_argument("--ff", type=int, default=8192)
    ap.add_argument("--heads", type=int, default=32)
    ap.add_argument("--kv-heads", type=int, default=8)
    ap.add_argument("--ctx", type=int, default=8192)
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()
    head_dim = a.embd // a.heads
    q_dim, kv_dim = a.heads * head_dim, a.kv_heads * head_dim

    donor = gguf.GGUFReader(a.donor)
    tmp = a.out + ".tmp"
    w = gguf.GGUFWriter(tmp, "llama")
    w.add_name("random-llama-1b")
    w.add_block_count(a.layers)
    w.add_context_length(a.ctx)
    w.add_embedding_length(a.embd)
    w.add_feed_forward_length(a.ff)
    w.add_head_count(a.heads)
    w.add_head_count_kv(a.kv_heads)
    w.add_rope_freq_base(500000.0)
    w.add_rope_dimension_count(head_dim)
    w.add_layer_norm_rms_eps(1e-5)
    w.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    vocab = copy_tokenizer(donor, w)
    w.add_vocab_size(vocab)

    # (name, rows, cols) in row-major [out, in]; cols = GGUF ne[0]. None cols: a 1-D vector.
    tensors = [("token_embd.weight", vocab, a.embd), ("output_norm.weight", a.embd, None)]
    for l in range(a.layers):
        p = f"blk.{l}."
        tensors += [
            (p + "attn_norm.weight", a.embd, None),
            (p + "attn_q.weight", q_dim, a.embd),
            (p + "attn_k.weight", kv_dim, a.embd),
            (p + "attn_v.weight", kv_dim, a.embd),
            (p + "attn_output.weight", a.embd, q_dim),
            (p + "ffn_norm.weight", a.embd, None),
            (p + "ffn_gate.weight", a.ff, a.embd),
            (p + "ffn_up.weight", a.ff, a.embd),
            (p + "ffn_down.weight", a.embd, a.ff),
        ]
    for name, rows, cols in tensors:
        if cols is None:
            w.add_tensor_info(name, [rows], np.dtype(np.float32), rows * 4)
        else:
            w.add_tensor_info(name, [rows, cols], np.dtype(np.float16), rows * cols * 2)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    rng = np.random.default_rng(a.seed)
    n_params = 0
    for name, rows, cols in tensors:
        if cols is None:
            w.write_tensor_data(np.ones(rows, dtype=np.float32))
            n_params += rows
            continue
        t = np.empty((rows, cols), dtype=np.float16)
        step = max(1, (1 << 22) // cols)  # generate ~4M values at a time
        for r in range(0, rows, step):
            block = rng.standard_normal((min(step, rows - r), cols), dtype=np.float32)
            t[r:r + step] = block * np.float32(0.02)
        w.write_tensor_data(t)
        n_params += rows * cols
        del t
    w.close()
    os.replace(tmp, a.out)
    print(f"wrote {a.out}: {n_params / 1e9:.3f} B parameters, vocab {vocab}, "
          f"{a.layers} layers, embd {a.embd}, ff {a.ff}, heads {a.heads}/{a.kv_heads}")


if __name__ == "__main__":
    main()
