#!/usr/bin/env python3
"""Reference outputs of SmolLM2-135M-Instruct (Q4_1 GGUF) from transformers, for tests/model_smollm.rs.

transformers reads the same GGUF file (`from_pretrained(models_dir, gguf_file=...)`): it dequantizes
every tensor with gguf-py and undoes llama.cpp's Q/K permutation, then runs its own Llama in f32.
So these numbers test our whole path (dequantization, permuted NORM rope, GQA, tied output) against
transformers on exactly the same weights.

Writes tests/fixtures/model/smollm2/:
  manifest.json   token sequences (2 from a fixed text tokenized by transformers, 2 random), the vocab
                  subset, greedy prompts (token ids) and their 32-token greedy continuations, the
                  smallest top-2 logit gap along each greedy path
  nll.npy         f32 [S, T-1] NLL of token t+1 given tokens <= t
  argmax.npy      i32 [S, T]   argmax over the vocabulary at every position
  logits.npy      f32 [S, T, K] logits at the K vocab ids of `vocab_subset`, every position

Usage: /work/main/.venv/bin/python scripts/reference/make_model_fixtures.py [--models models] [--out tests/fixtures/model/smollm2]
"""

import argparse
import json
import os
from pathlib import Path

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SEQ_LEN = 256
N_SUBSET = 64
N_NEW = 32
MIN_GREEDY_MARGIN = 1e-3

TEXT = """\
The lighthouse keeper kept a notebook in which he wrote down, every evening, the colour of the sea, the
direction of the wind and the names of the ships that passed. Most days the entries were short: grey,
north-west, two fishing boats and a ferry. But on the night of the great storm he filled eleven pages.
He wrote that the waves climbed higher than the gallery rail, that the lamp shook in its brass frame,
and that at three in the morning he saw a small sailing boat with no lights drifting towards the rocks.
He rang the bell, fired two flares and shouted until his voice failed. Nobody answered. In the morning the
boat was gone, and so were the rocks' usual gulls. The harbour master said there had been no sailing boat,
that the keeper had been alone too long, and that the notebook should be sent to the office in town.
The keeper refused. He copied the eleven pages by hand, sent the copy, and kept the original under a loose
board beneath his bed.

Photosynthesis is the process by which green plants, algae and some bacteria turn light into chemical
energy. In the chloroplasts of a leaf, chlorophyll absorbs mostly red and blue light and reflects green,
which is why leaves look green to us. The absorbed energy splits water molecules, releasing oxygen as a
by-product, and drives the production of two energy carriers, ATP and NADPH. In a second stage, often
called the Calvin cycle, the plant uses these carriers to fix carbon dioxide from the air into sugars.
The sugars feed the plant's growth and, directly or indirectly, almost every other living thing on land.
The rate of photosynthesis depends on the intensity of light, the concentration of carbon dioxide and the
temperature; when any one of these is scarce, it limits the whole process no matter how plentiful the
others are. Farmers in greenhouses raise the carbon dioxide level for exactly this reason, and gardeners
learn quickly that a plant kept in a dark corner grows pale and thin however much it is watered.

To bake a simple loaf of bread you need flour, water, salt and yeast. Mix five hundred grams of flour with
ten grams of salt and seven grams of dried yeast, then add about three hundred and fifty millilitres of
warm water and stir until a rough dough forms. Knead it on a floured table for ten minutes, until it is
smooth and springs back when pressed. Leave it in a covered bowl in a warm place for an hour, or until it
has doubled in size. Shape it into a loaf, put it in a tin, let it rise for another half hour, and bake it
at two hundred and twenty degrees for thirty minutes. The loaf is done when it sounds hollow as you tap
the bottom. Let it cool before slicing, however tempting the smell.
"""

PROMPTS = [
    "The capital of France is",
    "Once upon a time, in a small village by the sea,",
    "def fibonacci(n):\n",
    "Water boils at a temperature of",
    "The three primary colours are",
    "My favourite book is",
    "In 1969, the first humans",
]
CHAT = [{"role": "user", "content": "Write one sentence about the moon."}]


def greedy(model, prompt, n):
    """Greedy continuation (full recompute each step) and the smallest top-2 logit gap along it."""
    ids = list(prompt)
    margin = float("inf")
    for _ in range(n):
        with torch.no_grad():
            logits = model(torch.tensor([ids])).logits[0, -1].float()
        top2 = torch.topk(logits, 2).values
        margin = min(margin, float(top2[0] - top2[1]))
        ids.append(int(torch.argmax(logits)))
    return ids[len(prompt):], margin


def main():
    root = Path(__file__).resolve().parents[2]
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=Path, default=root / "models")
    ap.add_argument("--out", type=Path, default=root / "tests/fixtures/model/smollm2")
    a = ap.parse_args()
    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    torch.manual_seed(0)

    tok = AutoTokenizer.from_pretrained(str(a.models), gguf_file=GGUF)
    model = AutoModelForCausalLM.from_pretrained(str(a.models), gguf_file=GGUF, dtype=torch.float32).eval()
    vocab = model.config.vocab_size

    text_ids = tok(TEXT, add_special_tokens=False)["input_ids"]
    assert len(text_ids) >= 2 * SEQ_LEN, f"text has only {len(text_ids)} tokens"
    rng = np.random.default_rng(20240607)
    seqs = [text_ids[:SEQ_LEN], text_ids[SEQ_LEN:2 * SEQ_LEN]]
    seqs += [rng.integers(0, vocab, SEQ_LEN).tolist() for _ in range(2)]
    ids = torch.tensor(seqs)

    with torch.no_grad():
        logits = model(ids).logits.float()  # [S, T, V]
    nll = torch.nn.functional.cross_entropy(
        logits[:, :-1].reshape(-1, vocab), ids[:, 1:].reshape(-1), reduction="none"
    ).reshape(len(seqs), SEQ_LEN - 1)
    argmax = logits.argmax(-1).to(torch.int32)
    subset = sorted(set(rng.choice(vocab, N_SUBSET - 4, replace=False).tolist()) | {0, 1, 2, vocab - 1})
    subset = subset[:N_SUBSET]
    sub_logits = logits[:, :, subset]

    prompts = [tok(p, add_special_tokens=False)["input_ids"] for p in PROMPTS]
    prompts.insert(0, tok.apply_chat_template(CHAT, add_generation_prompt=True, tokenize=True, return_dict=False))
    greedy_out = []
    for p in prompts:
        cont, margin = greedy(model, p, N_NEW)
        if margin < MIN_GREEDY_MARGIN:
            print(f"skipping prompt {p[:8]}...: top-2 gap {margin:.2e} on its greedy path")
            continue
        greedy_out.append({"prompt": p, "continuation": cont, "min_top2_gap": margin})
        print(f"prompt {len(p)} tokens -> {tok.decode(cont)!r} (min gap {margin:.3f})")
        if len(greedy_out) == 5:
            break
    assert len(greedy_out) == 5, "not enough prompts with a clear greedy path"

    a.out.mkdir(parents=True, exist_ok=True)
    np.save(a.out / "nll.npy", nll.numpy().astype(np.float32))
    np.save(a.out / "argmax.npy", argmax.numpy().astype(np.int32))
    np.save(a.out / "logits.npy", sub_logits.numpy().astype(np.float32))
    manifest = {
        "model": GGUF,
        "sequences": seqs,
        "sequence_sources": ["text[0:256]", "text[256:512]", "random", "random"],
        "vocab_subset": subset,
        "mean_nll": [float(x) for x in nll.mean(-1)],
        "greedy": greedy_out,
        "generated_by": "scripts/reference/make_model_fixtures.py",
        "transformers": __import__("transformers").__version__,
        "torch": torch.__version__,
    }
    (a.out / "manifest.json").write_text(json.dumps(manifest) + "\n")
    print("mean NLL per sequence:", manifest["mean_nll"])


if __name__ == "__main__":
    main()
