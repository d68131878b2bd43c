#!/usr/bin/env python3
"""GPT-2's original tokenizer files (vocab.json + merges.txt, no tokenizer.json) and their
reference encodings, for a model directory whose end token is ``</s>``.

What: tests/data/tokenizer/gpt2_files/ holds vocab.json and merges.txt of the byte-level BPE in
tests/data/tokenizer/bytelevel_bpe.json (written by gen_tokenizer.py), with one more token,
``</s>``, appended to the vocabulary, and a tokenizer_config.json naming ``</s>`` as the end
token (``<|endoftext|>`` stays BOS). expected.json there holds the ids transformers' *slow*
``GPT2Tokenizer`` (pure Python, independent of the ``tokenizers`` library the Rust crate
uses) gives for a set of probe strings, the decodes, and the end token's id.

Why: a GPT-2-architecture checkpoint may ship only these two files, and may end its texts with
another token than ``<|endoftext|>``; the Rust loader must build the same tokenizer from them
and take the end token from the configs, not from a literal string.

Run: python3 tools/golden/gen_vocab_merges.py (deterministic; needs transformers + tokenizers).
"""

import json
import os

from tokenizers import Tokenizer
from transformers import GPT2Tokenizer

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
SRC = os.path.join(ROOT, "tests", "data", "tokenizer", "bytelevel_bpe.json")
OUT = os.path.join(ROOT, "tests", "data", "tokenizer", "gpt2_files")

PROBES = [
    "The answer is 46.",
    "  leading spaces and\ttabs\n\nnewlines",
    "naïve café 東京 👍 unseen wörds",
    "def f(x):\n    return x * 2</s>",
    "12+34=46<|endoftext|>",
]


def main():
    os.makedirs(OUT, exist_ok=True)
    tok = Tokenizer.from_file(SRC)
    tok.model.save(OUT)  # vocab.json, merges.txt
    vocab_path = os.path.join(OUT, "vocab.json")
    with open(vocab_path) as f:
        vocab = json.load(f)
    vocab["</s>"] = max(vocab.values()) + 1
    with open(vocab_path, "w") as f:
        json.dump(vocab, f, ensure_ascii=False)
    config = {"tokenizer_class": "GPT2Tokenizer", "eos_token": "</s>", "bos_token": "<|endoftext|>",
              "unk_token": "<|endoftext|>", "model_max_length": 128, "chat_template": "{{ messages }}"}
    with open(os.path.join(OUT, "tokenizer_config.json"), "w") as f:
        json.dump(config, f, indent=1)
    slow = GPT2Tokenizer(vocab_path, os.path.join(OUT, "merges.txt"), eos_token="</s>", bos_token="<|endoftext|>",
                         unk_token="<|endoftext|>")
    probes = []
    for text in PROBES:
        ids = slow.encode(text, add_special_tokens=False)
        probes.append({"text": text, "ids": ids,
                       "decoded": slow.decode(ids, skip_special_tokens=False, clean_up_tokenization_spaces=False)})
    expected = {"vocab_size": len(vocab), "eos_id": slow.eos_token_id, "bos_id": slow.bos_token_id, "probes": probes}
    with open(os.path.join(OUT, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(f"vocab {len(vocab)}, eos {slow.eos_token_id}; wrote {OUT}")


if __name__ == "__main__":
    main()
