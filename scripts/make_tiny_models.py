#!/usr/bin/env python3
"""Tiny random Llama-family models and their transformers outputs, as test fixtures for `model::Llama`.

Each model is built with transformers from a fixed seed, saved as a Hugging Face checkpoint
(safetensors + config.json, under --hf-dir, not committed), and written as an F32 GGUF file by this
script with gguf-py's GGUFWriter, exactly as llama.cpp's convert_hf_to_gguf.py would write it: for
arch `llama`, the rows of q_proj/k_proj (weights and biases) are permuted for RoPE (FORMATS.md 3.4);
Llama-3 rope scaling becomes a `rope_freqs.weight` tensor; linear rope scaling becomes
`rope.scaling.type/factor`. A byte-level BPE vocabulary without merges (256 tokens) is the tokenizer
metadata.

Fixtures (tests/fixtures/model/<name>/):
  <name>.gguf       the model
  manifest.json     config, token sequences, labels, greedy prompts and their continuations, loss
  logits.npy        f32 [B, T, V] transformers logits for `sequences`
  nll.npy           f32 [B, T-1] per-position NLL of token t+1 given tokens <= t
  grad_embeds.npy   f32 [B, T, D] d(mean CE over `labels`)/d(inputs_embeds)

The models:
  tiny-llama   arch llama: NORM rope (permuted Q/K), GQA 4/2, tied output, no key_length key
  tiny-qwen2   arch qwen2: NEOX rope, QKV bias, GQA 4/2, untied output, linear rope scaling x2
  tiny-llama3  arch llama: Llama-3 rope (rope_freqs), MQA 4/1, head_dim 24 != hidden/heads,
               attention bias (q,k,v,o), untied output

As a check of the conversion itself, tiny-llama's GGUF is loaded back by transformers
(`from_pretrained(gguf_file=...)`, which undoes the permutation on its own) and must give the same
logits as the original model.

Usage: /work/main/.venv/bin/python scripts/make_tiny_models.py [--out tests/fixtures/model] [--hf-dir target/tiny-hf]
"""

import argparse
import json
import math
import os
from pathlib import Path

import numpy as np
import torch
import gguf
from transformers import LlamaConfig, LlamaForCausalLM, Qwen2Config, Qwen2ForCausalLM, AutoModelForCausalLM

VOCAB = 256
SEQ_LEN = 24
N_SEQ = 3
# Larger than transformers' 0.02 so logits and attention are far from uniform (std of logits ~1).
INIT_STD = 0.1
# Greedy continuations are only kept where each step's top-2 logit gap is at least this.
MIN_GREEDY_MARGIN = 1e-2


def bytes_to_unicode():
    """GPT-2's byte -> printable unicode map (FORMATS.md 4.4)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return {b: chr(c) for b, c in zip(bs, cs)}


SPECS = {
    "tiny-llama": dict(
        arch="llama",
        seed=1234,
        config=lambda: LlamaConfig(
            vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
            rms_norm_eps=1e-5, tie_word_embeddings=True,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
            bos_token_id=1, eos_token_id=2, initializer_range=INIT_STD,
        ),
        cls=LlamaForCausalLM,
        write_key_length=False,
        write_vocab_size=False,
        check_gguf_roundtrip=True,
    ),
    "tiny-qwen2": dict(
        arch="qwen2",
        seed=5678,
        config=lambda: Qwen2Config(
            vocab_size=VOCAB, hidden_size=64, intermediate_size=96, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=128,
            rms_norm_eps=1e-6, tie_word_embeddings=False,
            rope_parameters={"rope_type": "linear", "factor": 2.0, "rope_theta": 1000000.0},
            bos_token_id=1, eos_token_id=2, initializer_range=INIT_STD,
        ),
        cls=Qwen2ForCausalLM,
        write_key_length=True,
        write_vocab_size=True,
        check_gguf_roundtrip=False,  # transformers' GGUF loader ignores rope scaling for qwen2
    ),
    "tiny-llama3": dict(
        arch="llama",
        seed=91011,
        config=lambda: LlamaConfig(
            vocab_size=VOCAB, hidden_size=64, intermediate_size=80, num_hidden_layers=2,
            num_attention_heads=4, num_key_value_heads=1, head_dim=24, max_position_embeddings=128,
            rms_norm_eps=1e-5, tie_word_embeddings=False, attention_bias=True,
            rope_parameters={
                "rope_type": "llama3", "rope_theta": 10000.0, "factor": 8.0,
                "low_freq_factor": 1.0, "high_freq_factor": 4.0,
                "original_max_position_embeddings": 64,
            },
            bos_token_id=1, eos_token_id=2, initializer_range=INIT_STD,
        ),
        cls=LlamaForCausalLM,
        write_key_length=True,
        write_vocab_size=True,
        check_gguf_roundtrip=False,  # transformers' GGUF loader ignores rope_freqs
    ),
}


def permute(w: np.ndarray, n_head: int) -> np.ndarray:
    """convert_hf_to_gguf's LlamaModel.permute: HF rotate-half row order -> adjacent pairs (FORMATS.md 3.4)."""
    return w.reshape(n_head, 2, w.shape[0] // n_head // 2, *w.shape[1:]).swapaxes(1, 2).reshape(w.shape)


def llama3_rope_factors(cfg) -> np.ndarray:
    """convert_hf_to_gguf's rope_freqs for rope_type llama3: per-frequency divisors of inv_freq."""
    rp = cfg.rope_parameters
    base = rp["rope_theta"]
    dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
    freqs = 1.0 / (base ** (torch.arange(0, dim, 2, dtype=torch.float32) / dim))
    factor, low, high = rp["factor"], rp["low_freq_factor"], rp["high_freq_factor"]
    old_ctx = rp["original_max_position_embeddings"]
    low_wavelen, high_wavelen = old_ctx / low, old_ctx / high
    out = []
    for f in freqs.tolist():
        wavelen = 2 * math.pi / f
        if wavelen < high_wavelen:
            out.append(1.0)
        elif wavelen > low_wavelen:
            out.append(factor)
        else:
            smooth = (old_ctx / wavelen - low) / (high - low)
            out.append(1.0 / ((1 - smooth) / factor + smooth))
    return np.array(out, dtype=np.float32)


def write_gguf(path: Path, name: str, spec, model) -> None:
    cfg = model.config
    arch = spec["arch"]
    n_head, n_kv = cfg.num_attention_heads, cfg.num_key_value_heads
    head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // n_head
    w = gguf.GGUFWriter(str(path), arch)
    w.add_name(name)
    w.add_file_type(gguf.LlamaFileType.ALL_F32)
    w.add_context_length(cfg.max_position_embeddings)
    w.add_embedding_length(cfg.hidden_size)
    w.add_block_count(cfg.num_hidden_layers)
    w.add_feed_forward_length(cfg.intermediate_size)
    w.add_head_count(n_head)
    w.add_head_count_kv(n_kv)
    w.add_layer_norm_rms_eps(cfg.rms_norm_eps)
    w.add_rope_freq_base(cfg.rope_parameters["rope_theta"])
    w.add_rope_dimension_count(head_dim)
    if spec["write_key_length"]:
        w.add_key_length(head_dim)
        w.add_value_length(head_dim)
    if spec["write_vocab_size"]:
        w.add_vocab_size(cfg.vocab_size)
    rp = cfg.rope_parameters
    if rp["rope_type"] == "linear":
        w.add_rope_scaling_type(gguf.RopeScalingType.LINEAR)
        w.add_rope_scaling_factor(rp["factor"])
    # Minimal tokenizer: byte-level BPE with one token per byte and no merges.
    b2u = bytes_to_unicode()
    w.add_tokenizer_model("gpt2")
    w.add_tokenizer_pre("default")
    w.add_token_list([b2u[b] for b in range(VOCAB)])
    w.add_token_types([gguf.TokenType.NORMAL] * VOCAB)
    w.add_token_merges([])
    w.add_bos_token_id(cfg.bos_token_id)
    w.add_eos_token_id(cfg.eos_token_id)

    sd = {k: v.detach().to(torch.float32).numpy() for k, v in model.state_dict().items()}
    if rp["rope_type"] == "llama3":
        w.add_tensor("rope_freqs.weight", llama3_rope_factors(cfg))
    w.add_tensor("token_embd.weight", sd["model.embed_tokens.weight"])
    hf_to_gguf = {
        "input_layernorm.weight": "attn_norm.weight",
        "self_attn.q_proj.weight": "attn_q.weight",
        "self_attn.q_proj.bias": "attn_q.bias",
        "self_attn.k_proj.weight": "attn_k.weight",
        "self_attn.k_proj.bias": "attn_k.bias",
        "self_attn.v_proj.weight": "attn_v.weight",
        "self_attn.v_proj.bias": "attn_v.bias",
        "self_attn.o_proj.weight": "attn_output.weight",
        "self_attn.o_proj.bias": "attn_output.bias",
        "post_attention_layernorm.weight": "ffn_norm.weight",
        "mlp.gate_proj.weight": "ffn_gate.weight",
        "mlp.up_proj.weight": "ffn_up.weight",
        "mlp.down_proj.weight": "ffn_down.weight",
    }
    for layer in range(cfg.num_hidden_layers):
        prefix = f"model.layers.{layer}."
        for hf, gg in hf_to_gguf.items():
            key = prefix + hf
            if key not in sd:
                continue
            t = sd[key]
            if arch == "llama" and hf.startswith("self_attn.q_proj"):
                t = permute(t, n_head)
            elif arch == "llama" and hf.startswith("self_attn.k_proj"):
                t = permute(t, n_kv)
            w.add_tensor(f"blk.{layer}.{gg}", np.ascontiguousarray(t))
    w.add_tensor("output_norm.weight", sd["model.norm.weight"])
    if not cfg.tie_word_embeddings:
        w.add_tensor("output.weight", sd["lm_head.weight"])
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_tensors_to_file()
    w.close()


def greedy(model, prompt, n):
    """Greedy continuation (full recompute each step) and the smallest top-2 logit gap along it."""
    ids = list(prompt)
    margin = float("inf")
    for _ in range(n):
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1]
        top2 = torch.topk(logits, 2).values
        margin = min(margin, float(top2[0] - top2[1]))
        ids.append(int(torch.argmax(logits)))
    return ids[len(prompt):], margin


def make(name, spec, out_dir: Path, hf_dir: Path):
    torch.manual_seed(spec["seed"])
    cfg = spec["config"]()
    cfg._attn_implementation = "eager"
    model = spec["cls"](cfg).eval().to(torch.float32)
    # Norm weights start at exactly 1; randomize them so a missing or misplaced norm shows.
    with torch.no_grad():
        for n_, p in model.named_parameters():
            if n_.endswith("norm.weight") or "layernorm" in n_:
                p.uniform_(0.5, 1.5)
            elif n_.endswith(".bias"):
                p.normal_(0.0, 0.1)
    model.save_pretrained(hf_dir / name, safe_serialization=True)

    d = out_dir / name
    d.mkdir(parents=True, exist_ok=True)
    gguf_path = d / f"{name}.gguf"
    write_gguf(gguf_path, name, spec, model)

    gen = torch.Generator().manual_seed(spec["seed"] + 1)
    seqs = torch.randint(0, VOCAB, (N_SEQ, SEQ_LEN), generator=gen)
    labels = seqs.clone()
    labels[0, :5] = -100           # an ignored prompt
    labels[2, SEQ_LEN - 6:] = -100  # right padding
    with torch.no_grad():
        logits = model(seqs).logits.float()
    nll = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, VOCAB), seqs[:, 1:].reshape(-1), reduction="none"
    ).reshape(N_SEQ, SEQ_LEN - 1)

    embeds = model.get_input_embeddings()(seqs).detach().requires_grad_(True)
    loss = model(inputs_embeds=embeds, labels=labels).loss
    loss.backward()

    # Prompts: prefixes of the sequences, keeping the first two whose greedy path has no near-tie.
    prompts, conts = [], []
    for b, n in [(0, 7), (1, 1), (2, 3), (0, 2), (1, 9), (2, 13)]:
        p = seqs[b, :n].tolist()
        c, margin = greedy(model, p, 12)
        if margin >= MIN_GREEDY_MARGIN:
            prompts.append(p)
            conts.append(c)
        if len(prompts) == 2:
            break
    assert len(prompts) == 2, f"{name}: no prompts with a clear greedy path"

    if spec["check_gguf_roundtrip"]:
        m2 = AutoModelForCausalLM.from_pretrained(str(d), gguf_file=gguf_path.name, dtype=torch.float32).eval()
        with torch.no_grad():
            l2 = m2(seqs).logits.float()
        diff = (l2 - logits).abs().max().item()
        assert diff < 1e-4, f"{name}: transformers reading our GGUF differs from the HF model by {diff}"
        print(f"{name}: GGUF read back by transformers matches, max abs diff {diff:.2e}")

    np.save(d / "logits.npy", logits.numpy().astype(np.float32))
    np.save(d / "nll.npy", nll.numpy().astype(np.float32))
    np.save(d / "grad_embeds.npy", embeds.grad.numpy().astype(np.float32))
    manifest = {
        "name": name,
        "architecture": spec["arch"],
        "hf_config": json.loads(cfg.to_json_string()),
        "sequences": seqs.tolist(),
        "labels": labels.tolist(),
        "loss": float(loss.item()),
        "greedy": [{"prompt": p, "continuation": c} for p, c in zip(prompts, conts)],
        "generated_by": "scripts/make_tiny_models.py",
        "transformers": __import__("transformers").__version__,
        "torch": torch.__version__,
    }
    (d / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    print(f"{name}: wrote {gguf_path} ({gguf_path.stat().st_size} bytes), loss {loss.item():.6f}")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    root = Path(__file__).resolve().parent.parent
    ap.add_argument("--out", type=Path, default=root / "tests/fixtures/model")
    ap.add_argument("--hf-dir", type=Path, default=root / "target/tiny-hf")
    ap.add_argument("--only", nargs="*", default=None)
    a = ap.parse_args()
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    for name, spec in SPECS.items():
        if a.only and name not in a.only:
            continue
        make(name, spec, a.out, a.hf_dir)


if __name__ == "__main__":
    main()
