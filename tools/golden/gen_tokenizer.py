#!/usr/bin/env python3
"""A small GPT-2-style byte-level BPE tokenizer and its reference encodings.

Trains a byte-level BPE (GPT-2's pre-tokenizer, decoder and <|endoftext|>) on a few
sentences with the Python `tokenizers` library, saves it as
tests/data/tokenizer/bytelevel_bpe.json, and writes the ids that library produces for a set
of probe strings (ASCII, accents, CJK, emoji, spaces, newlines) to
tests/data/tokenizer/expected.json. The Rust side must load the same file through the
`tokenizers` crate and reproduce every id and every decode.

Run: python3 tools/golden/gen_tokenizer.py (deterministic).
"""

import json
import os

from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT = os.path.join(ROOT, "tests", "data", "tokenizer")

CORPUS = [
    "The quick brown fox jumps over the lazy dog.",
    "12+34=46. 7 + 8 = 15, so the answer is 15.",
    "Reinforcement learning from vector-valued rewards: correctness, brevity, format.",
    "def add(a, b):\n    return a + b\n",
    "naïve café déjà vu — 東京 👍",
] * 20

PROBES = [
    "The answer is 46.",
    "  leading spaces and\ttabs\n\nnewlines",
    "naïve café 東京 👍 unseen wörds",
    "def f(x):\n    return x * 2<|endoftext|>",
]


def main():
    os.makedirs(OUT, exist_ok=True)
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=320,
        special_tokens=["<|endoftext|>"],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(CORPUS, trainer=trainer)
    tok.save(os.path.join(OUT, "bytelevel_bpe.json"))
    expected = [{"text": t, "ids": tok.encode(t).ids, "decoded": tok.decode(tok.encode(t).ids, skip_special_tokens=False)} for t in PROBES]
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump({"vocab_size": tok.get_vocab_size(), "probes": expected}, f, indent=1, ensure_ascii=False)
    print(f"vocab {tok.get_vocab_size()}; wrote {OUT}")


if __name__ == "__main__":
    main()
