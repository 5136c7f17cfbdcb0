#!/usr/bin/env python3
"""Training-data fixtures: the input_ids and labels Hugging Face TRL's SFTTrainer prepares.

The reference is TRL 1.16's `SFTTrainer._prepare_dataset` (the EOS it appends, how it tokenizes text,
prompt/completion and conversations, the completion and assistant masks, truncation, dropping fully
masked examples, best-fit-decreasing packing) followed by its `DataCollatorForLanguageModeling`
(padding-free for packed rows: position ids restart per document and each document's first label is
-100), run on the SmolLM2 and Gemma 3 tokenizers transformers builds from our GGUF files. Chat masks
come from transformers' `apply_chat_template(..., return_assistant_tokens_mask=True)`.

SmolLM2's chat template has no `{% generation %}` markers, so TRL cannot mask assistant turns with
it. The fixtures use the same template with markers around each assistant message's content and
its `<|im_end|>` (checked here to render identically): that is the rule edgetune applies to
templates without markers, and these cases check that the two agree.

Needs transformers (in .venv) plus trl==1.16.0 and datasets, e.g. installed aside:

    pip install --target /tmp/trl-deps --no-deps trl==1.16.0 datasets==5.2.0 'pyarrow==24.*' pandas \
        dill==0.3.8 multiprocess==0.70.16 xxhash python-dateutil pytz tzdata six
    PYTHONPATH=/tmp/trl-deps .venv/bin/python scripts/reference/make_data_fixtures.py

Writes tests/fixtures/data/inputs/* (the records, also read by the Rust tests) and
tests/fixtures/data/{expected.jsonl,chat_masks.jsonl}. Reruns are byte-identical.
"""

import argparse
import json
import random
import tempfile
from pathlib import Path
from types import SimpleNamespace

import datasets.arrow_dataset
import trl
from datasets import Dataset
from transformers import AutoTokenizer
from trl import SFTConfig
from trl.trainer.sft_trainer import DataCollatorForLanguageModeling, SFTTrainer

SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3 = "gemma-3-270m-q4_k_m.gguf"
SEED = 20250917

# datasets fingerprints every in-memory dataset by pickling it, which fails on some pyarrow
# builds ("Can't pickle <class 'MonthDayNano'>"). Fingerprints only name cache entries, and
# these datasets are never cached, so a counter does.
_fingerprints = iter(range(1 << 62))
datasets.arrow_dataset.generate_fingerprint = lambda _ds: f"{next(_fingerprints):016x}"

# ----------------------------------------------------------------------------------------------
# Records

TEXT = [
    "The quick brown fox jumps over the lazy dog.",
    "Edge devices train small adapters.\nEach line here is part of one record.",
    "Already ends with the end token<|im_end|>",
    "Special tokens inside: <|im_start|>user\nhi<|im_end|> and after.",
    "Unicode: café, naïve, 東京, emoji 🦀🚀, math ∑ x² ≤ ∞.",
    "   leading and trailing spaces   ",
    "Numbers 1234567890 and 3.14159, code `fn main() {}`.",
    "A longer paragraph that will be cut when the sequence length is small: it talks about "
    "learning rates, warmup steps, batch sizes and why the loss goes down slowly at first.",
]

PROMPT_COMPLETION = [
    {"prompt": "Translate to French: cat", "completion": " chat"},
    {"prompt": "Q: What is 2+2?\nA:", "completion": " 4"},
    {"prompt": "Q: What is 2+2?\nA: ", "completion": "4"},
    {"prompt": "Hello wor", "completion": "ld! How are you today?"},
    {"prompt": "Write a haiku about rust.\n", "completion": "Iron sleeps in rain,\nred bloom on a silent gate,\ntime eats what it loves."},
    {"prompt": "Ends with the token already:", "completion": " yes<|im_end|>"},
    {"prompt": "Unicode prompt 東京 →", "completion": " Tōkyō 🗼"},
    {"prompt": "Empty completion follows.", "completion": ""},
]

# A prompt longer than 12 tokens: with --seq-len 12 nothing of the completion is left.
LONG_PROMPT = {
    "prompt": "This prompt is deliberately long so that it fills every position of a short window by itself,",
    "completion": " and the completion is cut away.",
}


def conv(*pairs):
    return [{"role": r, "content": c} for r, c in pairs]


MESSAGES = [
    conv(("user", "Hi!"), ("assistant", "Hello! How can I help?")),
    conv(("system", "You are terse."), ("user", "Capital of France?"), ("assistant", "Paris.")),
    conv(
        ("user", "Count to three."),
        ("assistant", "One, two, three."),
        ("user", "Now backwards."),
        ("assistant", "Three, two, one."),
    ),
    conv(("user", "Leading newlines please."), ("assistant", "\n\nLike this.")),
    conv(("user", "Say nothing."), ("assistant", "")),
    conv(("user", "Quote the token."), ("assistant", "It is written <|im_end|> like that.")),
    conv(("user", "Weather?"), ("assistant", "Let me check."), ("tool", "{\"temp\": 21}"), ("assistant", "It is 21 °C.")),
    conv(("system", "Be kind."), ("assistant", "Welcome! I start the conversation.")),
    conv(("user", "A question with no answer yet."), ("assistant", "First answer."), ("user", "Unanswered follow-up?")),
    conv(("user", "Unicode: 東京 and 🦀"), ("assistant", "Tōkyō, and a crab 🦀!")),
]


def pretokenized(rng: random.Random, n: int, vocab: int, max_len: int, with_labels: float):
    out = []
    for _ in range(n):
        k = rng.randint(2, max_len)
        ids = [rng.randrange(vocab) for _ in range(k)]
        rec = {"input_ids": ids}
        if rng.random() < with_labels:
            rec["labels"] = [t if rng.random() < 0.6 else -100 for t in ids]
            rec["labels"][-1] = ids[-1]  # at least one target
        out.append(rec)
    return out


# ----------------------------------------------------------------------------------------------
# Chat templates with generation markers


def tagged_smollm2(template: str) -> str:
    """SmolLM2's template with markers around each assistant content and its <|im_end|>."""
    # The GGUF's template has real newlines inside its string literals.
    old = "{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}"
    assert old in template, "SmolLM2's chat template changed; update tagged_smollm2"
    new = (
        "{% if message['role'] == 'assistant' %}{{ '<|im_start|>assistant\n' }}"
        "{% generation %}{{ message['content'] + '<|im_end|>' }}{% endgeneration %}{{ '\n' }}"
        "{% else %}" + old + "{% endif %}"
    )
    return template.replace(old, new)


# Whitespace control around the markers, markers on their own lines (trim_blocks/lstrip_blocks),
# a template that trims content and adds bos_token, and markers that leave out the end token.
MARKED_TEMPLATES = {
    "inline": (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n"
        "{% if m.role == 'assistant' %}{% generation %}{{ m.content }}<|im_end|>{% endgeneration %}"
        "{% else %}{{ m.content }}<|im_end|>{% endif %}\n{% endfor %}"
        "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
    ),
    "block_lines": (
        "{% for m in messages %}\n"
        "<|im_start|>{{ m.role }}\n"
        "    {% if m.role == 'assistant' %}\n"
        "    {% generation %}\n"
        "{{ m.content }}<|im_end|>\n"
        "    {% endgeneration %}\n"
        "    {% else %}\n"
        "{{ m.content }}<|im_end|>\n"
        "    {% endif %}\n"
        "{% endfor %}\n"
    ),
    "strip_controls": (
        "{%- for m in messages -%}\n"
        "  <|im_start|>{{ m.role }}{{ '\\n' }}\n"
        "  {%- if m.role == 'assistant' %}\n"
        "    {%- generation -%}\n"
        "      {{ m.content }}<|im_end|>\n"
        "    {%- endgeneration %}\n"
        "  {% else -%}\n"
        "    {{ m.content }}<|im_end|>{{ '\\n' }}\n"
        "  {%- endif %}\n"
        "{%- endfor -%}\n"
    ),
    "one_sided": (
        "{% for m in messages %}<|im_start|>{{ m.role }}\n"
        "{% if m.role == 'assistant' %}  {%- generation %}{{ m.content }}{% endgeneration -%}  <|im_end|>"
        "{% else %}{{ m.content }}<|im_end|>{% endif %}\n{% endfor %}"
    ),
    "trim_bos_no_end": (
        "{{ bos_token }}{% for m in messages %}"
        "{{ '<|im_start|>' + m['role'] + '\\n' }}"
        "{% if m['role'] == 'assistant' %}{% generation %}{{ m['content'] | trim }}{% endgeneration %}"
        "{% else %}{{ m['content'] | trim }}{% endif %}{{ '<|im_end|>\\n' }}{% endfor %}"
    ),
}


# ----------------------------------------------------------------------------------------------
# TRL


def trl_prepare(tok, records, seq_len, pack, train_on_prompt, chat_template=None):
    """TRL's dataset preparation (no shuffling), then its collator on each row."""
    first = records[0]
    conversational = "messages" in first
    with tempfile.TemporaryDirectory() as tmp:
        args = SFTConfig(
            output_dir=tmp,
            max_length=seq_len,
            packing=pack,
            shuffle_dataset=False,
            assistant_only_loss=conversational and not train_on_prompt,
            completion_only_loss=False if train_on_prompt else None,
            report_to=[],
            use_cpu=True,
            bf16=False,
        )
    completion_only = args.completion_only_loss
    if completion_only is None:
        completion_only = "prompt" in first and "completion" in first
    # The attributes `_prepare_dataset` reads, as SFTTrainer.__init__ sets them.
    trainer = SimpleNamespace(_tokenizer=tok, completion_only_loss=completion_only, chat_template=chat_template)
    if "input_ids" in first:
        # `Dataset.from_list` takes its columns from the first record only; spell out the
        # default (labels = input_ids) so records without labels keep theirs.
        records = [{"input_ids": r["input_ids"], "labels": r.get("labels", r["input_ids"])} for r in records]
    ds = SFTTrainer._prepare_dataset(trainer, Dataset.from_list(records), tok, args, pack, None, "train")
    collator = DataCollatorForLanguageModeling(pad_token_id=tok.pad_token_id or tok.eos_token_id, padding_free=pack)
    out = []
    for row in ds:
        features = {"input_ids": row["input_ids"], "labels": row["labels"]}
        if pack:
            features["seq_lengths"] = row["seq_lengths"]
        batch = collator([features])
        seq = {"input_ids": batch["input_ids"][0].tolist(), "labels": batch["labels"][0].tolist()}
        if pack:
            seq["seq_lengths"] = list(row["seq_lengths"])
            seq["position_ids"] = batch["position_ids"][0].tolist()
        out.append(seq)
    return out


def write_jsonl(path: Path, records):
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as f:
        for r in records:
            f.write(json.dumps(r, ensure_ascii=False) + "\n")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--models", default="models")
    ap.add_argument("--out", default="tests/fixtures/data")
    a = ap.parse_args()
    models, out = Path(a.models), Path(a.out)
    inputs = out / "inputs"

    smol = AutoTokenizer.from_pretrained(str(models), gguf_file=SMOLLM2)
    gemma = AutoTokenizer.from_pretrained(str(models), gguf_file=GEMMA3)
    tagged = tagged_smollm2(smol.chat_template)
    for m in MESSAGES + [MESSAGES[0][:1]]:
        for agp in (False, True):
            plain = smol.apply_chat_template(m, tokenize=False, add_generation_prompt=agp)
            marked = smol.apply_chat_template(m, tokenize=False, add_generation_prompt=agp, chat_template=tagged)
            assert plain == marked, (m, plain, marked)

    rng = random.Random(SEED)
    files = {
        "text.jsonl": [{"text": t} for t in TEXT],
        "prompt_completion.jsonl": PROMPT_COMPLETION,
        "prompt_completion_long.jsonl": PROMPT_COMPLETION[:3] + [LONG_PROMPT] + PROMPT_COMPLETION[3:5],
        "messages.jsonl": [{"messages": m} for m in MESSAGES],
        "pretokenized.jsonl": pretokenized(rng, 12, len(smol), 40, 0.5),
        "pretokenized_many.jsonl": pretokenized(rng, 1203, 1000, 14, 0.3),
    }
    for name, recs in files.items():
        write_jsonl(inputs / name, recs)
    doc = "\n\n".join(TEXT * 3)
    (inputs / "document.txt").write_text(doc, encoding="utf-8")

    # (name, tokenizer model, file, seq_len, pack, train_on_prompt)
    cases = [
        ("text", "smollm2", "text.jsonl", 1024, False, False),
        ("text_truncated", "smollm2", "text.jsonl", 16, False, False),
        ("text_packed", "smollm2", "text.jsonl", 64, True, False),
        ("prompt_completion", "smollm2", "prompt_completion.jsonl", 1024, False, False),
        ("prompt_completion_train_on_prompt", "smollm2", "prompt_completion.jsonl", 1024, False, True),
        ("prompt_completion_short", "smollm2", "prompt_completion_long.jsonl", 12, False, False),
        ("prompt_completion_packed", "smollm2", "prompt_completion.jsonl", 48, True, False),
        ("messages", "smollm2", "messages.jsonl", 1024, False, False),
        ("messages_train_on_prompt", "smollm2", "messages.jsonl", 1024, False, True),
        ("messages_truncated", "smollm2", "messages.jsonl", 40, False, False),
        ("messages_packed", "smollm2", "messages.jsonl", 128, True, False),
        ("pretokenized", "smollm2", "pretokenized.jsonl", 1024, False, False),
        ("pretokenized_truncated", "smollm2", "pretokenized.jsonl", 9, False, False),
        ("pretokenized_packed_groups", "smollm2", "pretokenized_many.jsonl", 32, True, False),
        ("gemma3_text", "gemma3", "text.jsonl", 1024, False, False),
        ("gemma3_prompt_completion", "gemma3", "prompt_completion.jsonl", 1024, False, False),
    ]
    toks = {"smollm2": smol, "gemma3": gemma}
    expected = []
    for name, model, file, seq_len, pack, top in cases:
        tok = toks[model]
        recs = files[file]
        chat_template = tagged if "messages" in recs[0] and not top else None
        seqs = trl_prepare(tok, recs, seq_len, pack, top, chat_template)
        expected.append(
            {"name": name, "model": model, "file": file, "seq_len": seq_len, "pack": pack,
             "train_on_prompt": top, "sequences": seqs}
        )

    # A .txt file: one text record (TRL appends EOS) cut into consecutive windows; the last,
    # shorter window is kept when it has a token to predict.
    ids = smol(text=doc + smol.eos_token)["input_ids"]
    windows = [ids[i : i + 32] for i in range(0, len(ids), 32)]
    windows = [w for w in windows if len(w) >= 2]
    expected.append(
        {"name": "document_txt", "model": "smollm2", "file": "document.txt", "seq_len": 32, "pack": False,
         "train_on_prompt": False, "sequences": [{"input_ids": w, "labels": w} for w in windows]}
    )
    write_jsonl(out / "expected.jsonl", expected)

    # transformers' assistant masks for templates with generation markers, on SmolLM2's tokenizer.
    masks = []
    templates = {"smollm2_tagged": tagged, **MARKED_TEMPLATES}
    for tname, template in templates.items():
        for m in MESSAGES:
            r = smol.apply_chat_template(
                m, chat_template=template, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
            )
            masks.append(
                {"template": tname, "source": template, "messages": m,
                 "rendered": smol.apply_chat_template(m, chat_template=template, tokenize=False),
                 "input_ids": list(r["input_ids"]), "assistant_masks": list(r["assistant_masks"])}
            )
    write_jsonl(out / "chat_masks.jsonl", masks)
    print(f"trl {trl.__version__}: {len(expected)} cases, {len(masks)} chat masks -> {out}")


if __name__ == "__main__":
    main()
