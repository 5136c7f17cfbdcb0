#!/usr/bin/env python3
"""Tokenizer and chat-template fixtures from Hugging Face transformers' GGUF loading.

The reference is `AutoTokenizer.from_pretrained(models_dir, gguf_file=...)` (transformers 5.24): for
each tokenizer below we store the ids of every corpus text (`add_special_tokens=False`), what
`add_special_tokens=True` adds, `decode(ids)` where it differs from the text, and the shape of the
`tokenizers` pipeline transformers built (everything but the vocabulary and merges, which are
hashed). Chat templates are rendered with `apply_chat_template(..., tokenize=False)`.

Variants reuse a real vocabulary with one metadata field changed (the `tokenizer.ggml.pre` value,
or the architecture), to check the pre-tokenizer regexes and the plain SentencePiece path against
transformers without more model files.

The corpus is generated here deterministically (fixed seed) plus the hand-written texts in
scripts/reference/corpus/. Rerun after changing either:

    .venv/bin/python scripts/reference/make_tokenizer_fixtures.py [--models models] [--out tests/fixtures/tokenizer]
"""

import argparse
import hashlib
import json
import random
import struct
import time
from pathlib import Path

import transformers
from transformers import AutoTokenizer
from transformers.integrations import gguf as gguf_integration
from transformers.integrations.gguf.gguf_tokenizer_mapping import GGUF_PRE_TOKENIZER_SPLITS

HERE = Path(__file__).resolve().parent
CORPUS_DIR = HERE / "corpus"
SEED = 20250601

SMOLLM2 = "SmolLM2-135M-Instruct.Q4_1.gguf"
GEMMA3 = "gemma-3-270m-q4_k_m.gguf"

# name -> (gguf file, overrides applied to transformers' view of the metadata, corpus stride)
TOKENIZERS = {
    "smollm2": (SMOLLM2, {}, 1),
    "gemma3": (GEMMA3, {}, 1),
    "smollm2-llama3": (SMOLLM2, {"pre_tokenizer_type": "llama-bpe"}, 2),
    "smollm2-qwen2": (SMOLLM2, {"pre_tokenizer_type": "qwen2"}, 2),
    "gemma3-as-llama": (GEMMA3, {"architecture": "llama"}, 2),
}


# ----------------------------------------------------------------------------------------------
# Corpus


def unescape(line: str) -> str:
    out, i = [], 0
    while i < len(line):
        c = line[i]
        if c == "\\" and i + 1 < len(line):
            n = line[i + 1]
            simple = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}
            if n in simple:
                out.append(simple[n])
                i += 2
                continue
            if n == "u":
                out.append(chr(int(line[i + 2 : i + 6], 16)))
                i += 6
                continue
            if n == "U":
                out.append(chr(int(line[i + 2 : i + 10], 16)))
                i += 10
                continue
        out.append(c)
        i += 1
    return "".join(out)


def hand_written() -> list[str]:
    texts = []
    for name in ("prose.txt", "multilingual.txt", "edge.txt"):
        for line in (CORPUS_DIR / name).read_text(encoding="utf-8").split("\n"):
            if line.startswith("# ") or line == "":
                continue
            texts.append(unescape(line))
    for path in sorted((CORPUS_DIR / "code").iterdir()):
        source = path.read_text(encoding="utf-8")
        texts.append(source)
        texts.extend(line for line in source.split("\n") if line.strip())
    return texts


SPECIALS = [
    "<|im_start|>", "<|im_end|>", "<|endoftext|>", "<repo_name>", "<file_sep>", "<jupyter_code>",
    "<bos>", "<eos>", "<pad>", "<unk>", "<mask>", "<start_of_turn>", "<end_of_turn>",
    "[multimodal]", "<unused5>", "<start_of_image>", "<|im_start", "im_end|>", "<start_of_turn",
]
WORDS = (
    "the of and to in is you that it he was for on are as with his they at be this have from or one had by word "
    "but not what all were we when your can said there use an each which she do how their if will up other about "
    "out many then them these so some her would make like him into time has look two more write go see number no "
    "way could people my than first water been call who oil its now find long down day did get come made may part "
    "tokenizer gradient adapter quantization embedding attention transformer llama gemma smol"
).split()
SEPARATORS = [" ", " ", " ", "  ", "\t", "\n", "\r\n", "", " \n", "\n\n", "\u00a0", "   ", " \t", "\n "]
WHITESPACE = [" ", "\t", "\n", "\r", "\u00a0", "\u3000", "\u2009", "\x0b", "\x0c", "\u2028", "\u200b", "\u0085"]
EMOJI = [
    "🙂", "😂", "👍", "👍🏽", "👋🏿", "❤️", "❤", "🔥", "✨", "🎉", "🚀", "🤖", "🧠", "💡", "✅", "❌",
    "👨\u200d👩\u200d👧\u200d👦", "👩\u200d💻", "🧑🏾\u200d🚀", "🏳️\u200d🌈", "🏴\u200d☠️", "👁️\u200d🗨️",
    "🇺🇸", "🇯🇵", "🇩🇪", "🇧🇷", "🇮🇳", "🇺", "1️⃣", "#️⃣", "©️", "™", "🫠", "🪿", "🫶🏼",
]
PUNCT = list("“”‘’«»‹›„‚—–…·•‣※†‡§¶¿¡、。「」『』【】〈〉《》・！？，；：（）～¦¬°±×÷‰′″‴⁂⁇⁈⁉")
RANGES = [
    (0x0000, 0x007F), (0x0080, 0x00FF), (0x0100, 0x024F), (0x0300, 0x036F), (0x0370, 0x03FF),
    (0x0400, 0x04FF), (0x0590, 0x05FF), (0x0600, 0x06FF), (0x0900, 0x097F), (0x0E00, 0x0E7F),
    (0x10A0, 0x10FF), (0x1100, 0x11FF), (0x2000, 0x206F), (0x20A0, 0x20CF), (0x2190, 0x21FF),
    (0x2200, 0x22FF), (0x2500, 0x257F), (0x3040, 0x30FF), (0x4E00, 0x9FFF), (0xAC00, 0xD7A3),
    (0xE000, 0xE0FF), (0xFB00, 0xFB4F), (0xFE00, 0xFE0F), (0xFF00, 0xFFEF), (0x1D400, 0x1D7FF),
    (0x1F300, 0x1FAFF), (0x10000, 0x1007F), (0x20000, 0x2A6DF), (0xE0000, 0xE007F),
]


def generated(rng: random.Random, multilingual_words: list[str]) -> list[str]:
    texts = []
    pool = WORDS + multilingual_words
    for _ in range(90):  # word salads across scripts, numbers, emoji and specials
        parts = []
        for _ in range(rng.randint(1, 14)):
            kind = rng.random()
            if kind < 0.55:
                w = rng.choice(pool)
                parts.append(w.capitalize() if rng.random() < 0.15 else (w.upper() if rng.random() < 0.05 else w))
            elif kind < 0.7:
                parts.append(str(rng.randint(0, 10 ** rng.randint(1, 12))))
            elif kind < 0.8:
                parts.append(rng.choice(EMOJI))
            elif kind < 0.9:
                parts.append(rng.choice(PUNCT) + rng.choice(["", rng.choice(pool)]))
            else:
                parts.append(rng.choice(SPECIALS))
        text = parts[0]
        for p in parts[1:]:
            text += rng.choice(SEPARATORS) + p
        texts.append(text)
    for _ in range(45):  # numbers
        digits = "".join(rng.choice("0123456789") for _ in range(rng.randint(1, 40)))
        form = rng.randrange(7)
        if form == 0:
            texts.append(digits)
        elif form == 1:
            texts.append(f"{rng.choice(['', '-', '+', ' '])}{digits}.{rng.randint(0, 99999)}")
        elif form == 2:
            texts.append(f"{int(digits):,}")
        elif form == 3:
            texts.append(" ".join(digits[i : i + 3] for i in range(0, len(digits), 3)))
        elif form == 4:
            texts.append(f"{rng.choice(WORDS)}{digits}{rng.choice(WORDS)} {digits[::-1]}")
        elif form == 5:
            texts.append(f"{rng.choice(['$', '€', '£', '¥'])}{digits[:6]} x{digits[:2]}% @{digits[-4:]}")
        else:
            texts.append(f"v{digits[:1]}.{digits[1:3]}.{digits[3:5]} 0x{int(digits) % 2**64:X} {digits[:8]}e-{len(digits)}")
    for _ in range(35):  # whitespace runs, alone or around words
        ws = "".join(rng.choice(WHITESPACE) for _ in range(rng.randint(1, 20)))
        form = rng.randrange(4)
        w = rng.choice(pool)
        texts.append([ws, ws + w, w + ws, w + ws + w + ws][form])
    for _ in range(30):  # emoji sequences
        texts.append(
            "".join(rng.choice(EMOJI) + rng.choice(["", "", " ", "x", "\n"]) for _ in range(rng.randint(1, 8)))
        )
    for _ in range(45):  # special tokens written in text, glued or spaced
        parts = []
        for _ in range(rng.randint(1, 7)):
            parts.append(rng.choice(SPECIALS) if rng.random() < 0.5 else rng.choice(pool))
        glue = [rng.choice(["", " ", "  ", "\n", " \n"]) for _ in parts]
        texts.append("".join(p + g for p, g in zip(parts, glue)))
    for _ in range(25):  # contractions in mixed case
        cs = ["'s", "'t", "'re", "'ve", "'m", "'ll", "'d", "’s", "'x"]
        words = []
        for _ in range(rng.randint(1, 6)):
            c = rng.choice(cs)
            c = "".join(ch.upper() if rng.random() < 0.5 else ch for ch in c)
            words.append(rng.choice(pool) + c)
        texts.append(" ".join(words))
    for _ in range(45):  # random code points from many blocks (no surrogates)
        lo, hi = rng.choice(RANGES)
        chars = [chr(rng.randint(lo, hi)) for _ in range(rng.randint(1, 30))]
        if rng.random() < 0.5:
            chars.insert(rng.randint(0, len(chars)), " ")
        texts.append("".join(chars))
    for _ in range(25):  # unicode punctuation runs with words
        texts.append(
            "".join(rng.choice(PUNCT) + rng.choice(["", " ", rng.choice(pool)]) for _ in range(rng.randint(1, 10)))
        )
    prose = (CORPUS_DIR / "prose.txt").read_text(encoding="utf-8").split("\n")[1:]
    for n in (40, 120):  # long documents
        texts.append("\n".join(rng.choice(prose) for _ in range(n)))
    return texts


def corpus() -> list[str]:
    rng = random.Random(SEED)
    texts = hand_written()
    multilingual = (CORPUS_DIR / "multilingual.txt").read_text(encoding="utf-8").split()
    texts += generated(rng, sorted(set(multilingual)))
    texts = [t for t in dict.fromkeys(texts)]  # drop repeats, keep order
    return texts


# ----------------------------------------------------------------------------------------------
# Tokenizers


def load(models: Path, gguf_file: str, overrides: dict):
    """AutoTokenizer over the GGUF, with `overrides` applied to what transformers reads."""
    real = gguf_integration.get_gguf_tokenizer

    def patched(path):
        architecture, tokenizer_dict, config = real(path)
        architecture = overrides.get("architecture", architecture)
        tokenizer_dict = {**tokenizer_dict, **{k: v for k, v in overrides.items() if k != "architecture"}}
        return architecture, tokenizer_dict, config

    gguf_integration.get_gguf_tokenizer = patched
    try:
        return AutoTokenizer.from_pretrained(str(models), gguf_file=gguf_file)
    finally:
        gguf_integration.get_gguf_tokenizer = real


def sha256_strings(strings) -> str:
    h = hashlib.sha256()
    for s in strings:
        b = s.encode("utf-8")
        h.update(struct.pack("<I", len(b)))
        h.update(b)
    return h.hexdigest()


def runs(pairs):
    """[(id, special)] as [first_id, count, special] runs of consecutive ids with one flag."""
    out = []
    for i, special in pairs:
        if out and out[-1][0] + out[-1][1] == i and out[-1][2] == special:
            out[-1][1] += 1
        else:
            out.append([i, 1, special])
    return out


def structure(tok) -> dict:
    j = json.loads(tok.backend_tokenizer.to_str())
    model = j["model"]
    vocab = sorted(model.pop("vocab").items(), key=lambda kv: kv[1])
    merges = model.pop("merges")
    added = j["added_tokens"]
    flags = {(a["single_word"], a["lstrip"], a["rstrip"], a["normalized"]) for a in added}
    assert flags <= {(False, False, False, False)}, f"unexpected added-token flags {flags}"
    return {
        "pipeline": {k: j[k] for k in ("normalizer", "pre_tokenizer", "decoder")} | {"model": model},
        "vocab_len": len(vocab),
        "vocab_sha256": sha256_strings(s for kv in vocab for s in (kv[0], str(kv[1]))),
        "merges_len": len(merges),
        "merges_sha256": sha256_strings(s for pair in merges for s in pair),
        "added_tokens": runs([(a["id"], a["special"]) for a in added]),
    }


def tokenizer_fixture(name: str, models: Path, out: Path, texts: list[str]):
    gguf_file, overrides, stride = TOKENIZERS[name]
    tok = load(models, gguf_file, overrides)
    indices = list(range(0, len(texts), stride))
    t0 = time.perf_counter()
    ids = [tok(texts[i], add_special_tokens=False)["input_ids"] for i in indices]
    seconds = time.perf_counter() - t0
    n_tokens = sum(map(len, ids))
    prefix = suffix = None
    decoded = {}
    for i, row in zip(indices, ids):
        with_special = tok(texts[i], add_special_tokens=True)["input_ids"]
        n = len(row)
        start = next(k for k in range(len(with_special) - n + 1) if with_special[k : k + n] == row)
        p, s = with_special[:start], with_special[start + n :]
        assert (prefix, suffix) in ((None, None), (p, s)), (name, i, p, s)
        prefix, suffix = p, s
        text = tok.decode(row)
        if text != texts[i]:
            decoded[str(i)] = text
    meta = {
        "gguf": gguf_file,
        "overrides": overrides,
        "texts": indices,
        "n_tokens": n_tokens,
        "add_special": {"prefix": prefix, "suffix": suffix},
        "special_tokens": {k: getattr(tok, k) for k in ("bos_token", "eos_token", "unk_token", "pad_token")},
        "decoded": decoded,
        **structure(tok),
    }
    if '"ByteLevel"' in json.dumps(meta["pipeline"]["pre_tokenizer"]):
        # The split regexes checked on their own, over every text: where each piece ends
        # (in characters), so a regex difference shows even when the vocabulary hides it.
        pre = tok.backend_tokenizer.pre_tokenizer
        with open(out / f"{name}.splits.jsonl", "w", encoding="utf-8") as f:
            for t in texts:
                ends = [end for _, (_, end) in pre.pre_tokenize_str(t)]
                f.write(json.dumps(ends, separators=(",", ":")) + "\n")
    (out / f"{name}.json").write_text(json.dumps(meta, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    with open(out / f"{name}.ids.jsonl", "w", encoding="utf-8") as f:
        for row in ids:
            f.write(json.dumps(row, separators=(",", ":")) + "\n")
    print(f"{name}: {len(indices)} texts, {n_tokens} tokens, {len(decoded)} decode != text, "
          f"HF encode {n_tokens / seconds:,.0f} tokens/s")
    return tok


# ----------------------------------------------------------------------------------------------
# Chat templates


def user(c):
    return {"role": "user", "content": c}


def assistant(c):
    return {"role": "assistant", "content": c}


def system(c):
    return {"role": "system", "content": c}


CONVERSATIONS = [
    [user("Hello!")],
    [system("You are terse."), user("What is 2+2?")],
    [user("Hi"), assistant("Hello! How can I help?"), user("Tell me a joke.")],
    [system("Be kind."), user("a"), assistant("b"), user("c"), assistant("d")],
    [user("")],
    [user("  padded with spaces \n\n"), assistant("\tTabbed\nreply  ")],
    [user("Special <|im_start|>tokens<|im_end|> and <start_of_turn>in<end_of_turn> text")],
    [user("Unicode: 日本語, العربية, 👨\u200d👩\u200d👧, ñ\r\nnew line")],
    [system("Only a system prompt.")],
    [],
    [assistant("Assistant speaks first.")],
    [user("Two"), user("users in a row")],
    [user([{"type": "text", "text": " Parts as a list "}, {"type": "text", "text": "second part"}])],
    [system([{"type": "text", "text": "System as parts."}]), user("Hi")],
    [system("sys"), user("q"), {"role": "tool", "content": "tool output"}],
]


def chat_fixture(name: str, tok, template: str, out: Path):
    records = []
    for messages in CONVERSATIONS:
        for add_generation_prompt in (False, True):
            rec = {"messages": messages, "add_generation_prompt": add_generation_prompt}
            try:
                rec["rendered"] = tok.apply_chat_template(
                    messages, chat_template=template, tokenize=False, add_generation_prompt=add_generation_prompt
                )
            except Exception as e:  # the template refuses this conversation
                rec["error"] = f"{type(e).__name__}: {e}"
            records.append(rec)
    with open(out / f"chat_{name}.jsonl", "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    print(f"chat_{name}: {sum('rendered' in r for r in records)} renderings, "
          f"{sum('error' in r for r in records)} errors")


# Templates that exercise the Jinja features real chat templates use, rendered over one
# conversation whose message keys are deliberately not in alphabetical order.
FEATURE_MESSAGES = json.dumps([
    {"role": "system", "content": "Be brief."},
    {"role": "user", "content": "  Hello, world! ", "name": "bob", "extra": None},
    {
        "role": "assistant",
        "content": "Hi <b>there</b> & 'friends' \"x\" \u00e9\u00a0\t",
        "tool_calls": [{"type": "function", "function": {
            "name": "get_weather", "arguments": {"city": "Zürich", "days": 3, "units": None, "ratio": 0.5}}}],
        "reasoning_content": "think...",
    },
    {"role": "user", "content": "Done\n"},
], ensure_ascii=False)

FEATURE_TEMPLATES = {
    "tojson": (
        "{{ messages|tojson }}|{{ messages[0]|tojson(indent=2) }}|"
        "{{ {'b': 1, 'a': [1.5, 0.1 + 0.2, 10 / 4, 10 / 5, 1e-7, 1e16, 123456789.125, true, none, 'q\"', {}]}|tojson }}|"
        "{{ {'b': 1, 'a': 2}|tojson(sort_keys=true) }}|{{ [1, 2]|tojson(separators=(',', ':')) }}|"
        "{{ messages[2].content|tojson(ensure_ascii=true) }}|{{ [[], {}, [1]]|tojson(indent=1) }}|"
        "{{ messages[2].tool_calls[0].function.arguments|tojson }}"
    ),
    "strings": (
        "{% for m in messages %}{{ m.content.strip() }}|{{ m.content.split(' ') }}|{{ m.content.startswith('He') }}|"
        "{{ m.content.upper() }}|{{ m.content.title() }}|{{ m.content.replace('l', 'L') }}|{{ m.content.lstrip() }}|"
        "{{ m.content.rstrip('! ') }}|{{ m.content|trim }}|{{ m.content|length }}|{{ m['role']|capitalize }}\n{% endfor %}"
    ),
    "control": (
        "{% set ns = namespace(found=false, n=0) %}{% for m in messages %}{% if m.role == 'system' %}"
        "{% set ns.found = true %}{% continue %}{% endif %}{% if loop.index > 3 %}{% break %}{% endif %}"
        "{% set ns.n = ns.n + 1 %}{{ loop.index0 }}:{{ m.role }}{{ ',' if not loop.last }}{% endfor %} "
        "found={{ ns.found }} n={{ ns.n }} {{ messages[1:]|length }} {{ messages[-1].role }} "
        "{{ messages|selectattr('role', 'equalto', 'user')|list|length }} {{ messages|map(attribute='role')|join('/') }} "
        "{% if tools is none %}no tools{% endif %} {% if documents is defined %}docs defined{% endif %} "
        "{{ bos_token }}{{ eos_token }}{{ pad_token }}{{ unk_token }} [{{ undefined_var }}] {{ undefined_var is defined }} "
        "{{ add_generation_prompt }} {% if messages[1].name is defined %}{{ messages[1].name }}{% endif %} "
        "{{ 'extra' in messages[1] }} {{ messages[2].thinking }}/{{ messages[2].reasoning_content }}"
    ),
    "values": (
        "{% for m in messages %}{% for k, v in m.items() %}{{ k }}={{ v }};{% endfor %}\n{% endfor %}"
        "{{ [1, 'a', none, true, 2.5, \"it's\"] }} {{ {'k': 'v', 'n': none} }} {{ none }} {{ true }} {{ false }} "
        "{{ 1.0 }} {{ 3 / 2 }} {{ 7 // 2 }} {{ 7 % 3 }} {{ 2 ** 10 }} {{ 'a' ~ 1 }} {{ 'ab' + 'cd' }} {{ -0.0 }} {{ 1e20 }}"
    ),
    "macros_filters": (
        "{% macro fmt(m) %}<{{ m.role }}>{{ m.content|e }}</{{ m.role }}>{% endmacro %}"
        "{% for m in messages %}{{ fmt(m) }}{% endfor %}|{{ messages|length }}|{{ (messages|first).role }}|"
        "{{ (messages|last).content|trim }}|{{ messages|map(attribute='content')|map('length')|list }}|"
        "{{ 'x'|default('d') }}{{ nothing|default('d') }}|{{ [3, 1, 2]|sort }}|{{ 'a,b'.split(',')|join('+') }}|"
        "{{ messages[2].content|escape }}|{{ 3.7|int }}|{{ '5'|int + 1 }}|{{ 42|string ~ '!' }}|{{ [1, 2, 3]|sum }}"
    ),
    "whitespace": (
        "{% for m in messages %}\n    {% if m.role == 'user' %}\nUser: {{ m.content }}\n    {% else %}\n"
        "Other: {{ m.content }}\n    {% endif %}\n{% endfor %}\n{%- if add_generation_prompt %}\nAssistant:\n{% endif %}\n"
    ),
    "raise": "{% if messages|length > 2 %}{{ raise_exception('Too many messages: ' ~ messages|length) }}{% endif %}ok",
}


def feature_fixture(tok, out: Path):
    messages = json.loads(FEATURE_MESSAGES)
    records = []
    for name, template in FEATURE_TEMPLATES.items():
        for add_generation_prompt in (False, True):
            rec = {"name": name, "template": template, "messages_json": FEATURE_MESSAGES,
                   "add_generation_prompt": add_generation_prompt}
            try:
                rec["rendered"] = tok.apply_chat_template(
                    messages, chat_template=template, tokenize=False, add_generation_prompt=add_generation_prompt
                )
            except Exception as e:
                rec["error"] = f"{type(e).__name__}: {e}"
            records.append(rec)
    with open(out / "chat_features.jsonl", "w", encoding="utf-8") as f:
        for rec in records:
            f.write(json.dumps(rec, ensure_ascii=False) + "\n")
    print(f"chat_features: {sum('rendered' in r for r in records)} renderings, "
          f"{sum('error' in r for r in records)} errors")

    from datetime import datetime, timezone

    stamps = [0, 951782400, 1709251199, 4102444800, 1735689600, -86400, 1234567890, 1700000000]
    formats = ["%d %b %Y", "%-d %B %Y", "%A, %B %e %Y", "%Y-%m-%d %H:%M:%S", "%I:%M %p", "%-I:%-M %p",
               "%j %u %w %y", "%F %T %Z %z %%", "%a %h %-m/%-d", "%Y%m%dT%H%M%S"]
    rows = [[t, f, datetime.fromtimestamp(t, timezone.utc).strftime(f)] for t in stamps for f in formats]
    # Python's float repr (used by tojson and when a template prints a float), by bit pattern.
    rng = random.Random(SEED + 1)
    floats = [0.1, 0.5, 1.0, 100.0, 1e15, 1e16, 1.5e16, 123456789012345678.0, 1e-4, 1e-5, 0.00012345,
              2.5e-300, 5e-324, 1.7976931348623157e308, 1 / 3, 2 / 3, 1e22, 9007199254740993.0, -0.0, -2.75]
    floats += [struct.unpack("<d", struct.pack("<Q", rng.getrandbits(64)))[0] for _ in range(200)]
    floats += [rng.uniform(-1e6, 1e6) for _ in range(100)] + [float(rng.randint(-10**20, 10**20)) for _ in range(50)]
    floats = [f for f in floats if f == f and abs(f) != float("inf")]
    reprs = [[struct.pack("<d", f)[::-1].hex(), repr(f)] for f in floats]
    (out / "python_values.json").write_text(
        json.dumps({"strftime": rows, "float_repr": reprs}, ensure_ascii=False) + "\n", encoding="utf-8"
    )


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    root = HERE.parent.parent
    ap.add_argument("--models", type=Path, default=root / "models")
    ap.add_argument("--out", type=Path, default=root / "tests" / "fixtures" / "tokenizer")
    args = ap.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    print(f"transformers {transformers.__version__}")

    texts = corpus()
    with open(args.out / "corpus.jsonl", "w", encoding="utf-8") as f:
        for t in texts:
            f.write(json.dumps({"text": t}, ensure_ascii=False) + "\n")
    print(f"corpus: {len(texts)} texts, {sum(map(len, texts))} characters")
    (args.out / "pre_tokenizer_splits.json").write_text(
        json.dumps(GGUF_PRE_TOKENIZER_SPLITS, indent=1) + "\n", encoding="utf-8"
    )

    loaded = {name: tokenizer_fixture(name, args.models, args.out, texts) for name in TOKENIZERS}

    smollm2 = loaded["smollm2"]
    chat_fixture("smollm2", smollm2, smollm2.chat_template, args.out)
    gemma_template = (args.out / "gemma3_chat_template.jinja").read_text(encoding="utf-8")
    chat_fixture("gemma3", loaded["gemma3"], gemma_template, args.out)
    feature_fixture(smollm2, args.out)


if __name__ == "__main__":
    main()
