#!/usr/bin/env python3
"""Writes tests/fixtures/adapters/: PEFT adapter directories and PEFT/torch numerics for the adapter tests.

Reference: peft 0.21.2 + transformers 5.24 + torch (CPU). A tiny random LlamaForCausalLM (vocab 128,
hidden 64, intermediate 160, 2 layers, 4 heads, 2 KV heads -> head_dim 16) is wrapped with each PEFT
method, given non-zero adapter weights, and saved with `save_pretrained` (README.md dropped):

  lora/          r=8, lora_alpha=16, lora_dropout=0.05, target_modules="all-linear" (PEFT expands it
                 to a list of full module paths)
  lora_rslora/   r=4, lora_alpha=6.5, use_rslora, target_modules=["q_proj","k_proj"], layers_to_transform=[1]
  ia3/           PEFT's Llama defaults (k_proj, v_proj; down_proj feedforward)
  prefix/        num_virtual_tokens=5 (GQA: token_dim 32, 2 heads)
  prompt/        num_virtual_tokens=6

numerics.safetensors holds, per case, a random input x [5, n_in], the base weight W (Hugging Face row
order), PEFT's module output y (eval mode: no dropout), an upstream gradient dy and the torch autograd
gradients of sum(y * dy): dx and the adapter's parameter gradients (LoRA: dA, dB; IA3: dl). Cases:
  lora.<layer>.<module>    from lora/ (q_proj: permuted rows in GGUF; v_proj; down_proj)
  rslora.1.q_proj          from lora_rslora/
  ia3.0.<module>           k_proj (output scaling, permuted), down_proj (input scaling)
  prefix.kv                PEFT get_prompt(batch_size=1) as [L, 2, T, H_kv, D] (layer, key/value)

Usage: make_adapter_fixtures.py [OUT_DIR]   (default tests/fixtures/adapters)
"""
import json
import os
import sys
from importlib import metadata
from pathlib import Path

import torch
from peft import IA3Config, LoraConfig, PrefixTuningConfig, PromptTuningConfig, get_peft_model
from safetensors.torch import save_file
from transformers import LlamaConfig, LlamaForCausalLM

GEOMETRY = dict(vocab_size=128, hidden_size=64, intermediate_size=160, num_hidden_layers=2,
                num_attention_heads=4, num_key_value_heads=2, max_position_embeddings=64)
ROWS = 5


def tiny_model():
    """The base model; the same seed gives the same weights in check_peft_load.py."""
    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(**GEOMETRY)).eval()


def randomize(pm, gen, kind):
    """Non-zero adapter weights (PEFT's init makes LoRA B zero and IA3 vectors one)."""
    with torch.no_grad():
        for name, p in pm.named_parameters():
            if not p.requires_grad:
                continue
            noise = torch.randn(p.shape, generator=gen) * 0.1
            if kind == "lora":
                p.copy_(noise)
            elif kind == "ia3":
                p.copy_(1.0 + noise)


def save(pm, out, name):
    d = out / name
    pm.save_pretrained(d)
    readme = d / "README.md"
    if readme.exists():
        readme.unlink()
    return d


def module(pm, layer, hf):
    blk = pm.base_model.model.model.layers[layer]
    group = blk.self_attn if hf in ("q_proj", "k_proj", "v_proj", "o_proj") else blk.mlp
    return getattr(group, hf)


def linear_case(tensors, key, mod, params, gen):
    """x, W, y, dy, dx and parameter grads of one adapted linear module."""
    n_in = mod.base_layer.in_features
    n_out = mod.base_layer.out_features
    x = torch.randn(ROWS, n_in, generator=gen).requires_grad_(True)
    dy = torch.randn(ROWS, n_out, generator=gen)
    for p in params.values():
        p.grad = None
    y = mod(x)
    y.backward(dy)
    tensors[f"{key}.x"] = x.detach()
    tensors[f"{key}.W"] = mod.base_layer.weight.detach()
    tensors[f"{key}.y"] = y.detach()
    tensors[f"{key}.dy"] = dy
    tensors[f"{key}.dx"] = x.grad.detach()
    for name, p in params.items():
        tensors[f"{key}.{name}"] = p.grad.detach().clone()


def check_prefix_key_order():
    """Self-check of the claim src/adapters/prefix.rs relies on: with GGUF's permuted k_proj rows and
    llama.cpp's adjacent-pair RoPE, post-RoPE keys are Hugging Face's post-RoPE keys with each head's
    channels permuted the same way, so prefix keys (post-RoPE, from PEFT) must be permuted per head."""
    from transformers.models.llama.modeling_llama import LlamaRotaryEmbedding, apply_rotary_pos_emb
    cfg = LlamaConfig(**GEOMETRY)
    hd, h_kv, t = 16, GEOMETRY["num_key_value_heads"], 7
    gen = torch.Generator().manual_seed(9)
    x = torch.randn(t, GEOMETRY["hidden_size"], generator=gen, dtype=torch.float64)
    w = torch.randn(h_kv * hd, GEOMETRY["hidden_size"], generator=gen, dtype=torch.float64)
    pos = torch.arange(t)[None]
    cos, sin = LlamaRotaryEmbedding(cfg)(x[None].float(), pos)
    k_hf = (x @ w.T).view(1, t, h_kv, hd).transpose(1, 2)  # [1, H, T, D]
    _, k_hf = apply_rotary_pos_emb(k_hf, k_hf, cos.double(), sin.double())
    # convert_hf_to_gguf.py LlamaModel.permute, then NORM rope (pairs 2i, 2i+1).
    w_g = w.reshape(h_kv, 2, hd // 2, -1).swapaxes(1, 2).reshape(w.shape)
    k_g = (x @ w_g.T).view(t, h_kv, hd // 2, 2)
    theta = pos[0, :, None].double() * cfg.rope_parameters["rope_theta"] ** (-torch.arange(0, hd, 2).double() / hd)
    c, s_ = torch.cos(theta)[:, None], torch.sin(theta)[:, None]
    k_g = torch.stack([k_g[..., 0] * c - k_g[..., 1] * s_, k_g[..., 0] * s_ + k_g[..., 1] * c], -1)
    k_g = k_g.reshape(t, h_kv, hd)
    k_hf_perm = k_hf[0].transpose(0, 1).reshape(t, h_kv, 2, hd // 2).swapaxes(2, 3).reshape(t, h_kv, hd)
    diff = float((k_g - k_hf_perm).abs().max())
    assert diff < 1e-5, f"prefix key order claim fails: {diff}"  # HF cos/sin are f32
    print(f"prefix key order check: max |diff| {diff:.1e}")


def main():
    check_prefix_key_order()
    out = Path(sys.argv[1] if len(sys.argv) > 1 else "tests/fixtures/adapters")
    out.mkdir(parents=True, exist_ok=True)
    gen = torch.Generator().manual_seed(1234)
    tensors = {}

    pm = get_peft_model(tiny_model(), LoraConfig(
        r=8, lora_alpha=16, lora_dropout=0.05, target_modules="all-linear", task_type="CAUSAL_LM"))
    randomize(pm, gen, "lora")
    save(pm, out, "lora")
    pm.eval()
    for layer, hf in [(0, "q_proj"), (0, "v_proj"), (1, "down_proj"), (1, "k_proj")]:
        mod = module(pm, layer, hf)
        linear_case(tensors, f"lora.{layer}.{hf}", mod,
                    {"dA": mod.lora_A["default"].weight, "dB": mod.lora_B["default"].weight}, gen)

    pm = get_peft_model(tiny_model(), LoraConfig(
        r=4, lora_alpha=6.5, use_rslora=True, target_modules=["q_proj", "k_proj"],
        layers_to_transform=[1], task_type="CAUSAL_LM"))
    randomize(pm, gen, "lora")
    save(pm, out, "lora_rslora")
    pm.eval()
    mod = module(pm, 1, "q_proj")
    linear_case(tensors, "rslora.1.q_proj", mod,
                {"dA": mod.lora_A["default"].weight, "dB": mod.lora_B["default"].weight}, gen)

    pm = get_peft_model(tiny_model(), IA3Config(task_type="CAUSAL_LM"))
    randomize(pm, gen, "ia3")
    save(pm, out, "ia3")
    pm.eval()
    for hf in ["k_proj", "down_proj"]:
        mod = module(pm, 0, hf)
        linear_case(tensors, f"ia3.0.{hf}", mod, {"dl": mod.ia3_l["default"]}, gen)

    torch.manual_seed(5)
    pm = get_peft_model(tiny_model(), PrefixTuningConfig(num_virtual_tokens=5, task_type="CAUSAL_LM"))
    save(pm, out, "prefix")
    with torch.no_grad():
        cache = pm.get_prompt(batch_size=1)
        layers = []
        for layer in range(GEOMETRY["num_hidden_layers"]):
            lay = cache.layers[layer]
            k, v = lay.keys[0], lay.values[0]  # [H_kv, T, D]
            layers.append(torch.stack([k.permute(1, 0, 2), v.permute(1, 0, 2)]))  # [2, T, H, D]
        tensors["prefix.kv"] = torch.stack(layers).contiguous()

    torch.manual_seed(6)
    pm = get_peft_model(tiny_model(), PromptTuningConfig(num_virtual_tokens=6, task_type="CAUSAL_LM"))
    save(pm, out, "prompt")

    tensors = {k: v.contiguous().float() for k, v in tensors.items()}
    save_file(tensors, out / "numerics.safetensors")
    versions = {p: metadata.version(p) for p in ["torch", "transformers", "peft", "safetensors"]}
    manifest = {"geometry": GEOMETRY, "rows": ROWS, "versions": versions,
                "cases": sorted({k.rsplit(".", 1)[0] for k in tensors})}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    total = sum(f.stat().st_size for f in out.rglob("*") if f.is_file())
    print(f"wrote {out} ({total} bytes)")


if __name__ == "__main__":
    # PEFT writes target_modules from a Python set: fix the string hash seed so that the order, and
    # hence the committed files, are the same on every run.
    if os.environ.get("PYTHONHASHSEED") != "0":
        os.environ["PYTHONHASHSEED"] = "0"
        os.execv(sys.executable, [sys.executable, *sys.argv])
    main()
