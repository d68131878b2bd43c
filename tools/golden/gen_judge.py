#!/usr/bin/env python3
"""Golden reference data for the judge-model scorer (``src/reward/judge.rs``).

What
----
Writes ``tests/data/judge/``:

* ``config.json`` + ``model.safetensors`` -- a tiny ``GPT2ForSequenceClassification``
  (``num_labels=1``, ``pad_token_id=0``) as ``save_pretrained`` writes it, float32:
  ``transformer.``-prefixed GPT-2 weights plus ``score.weight`` [1, n_embd], no bias.
* ``tokenizer.json`` -- the crate's built-in character-level tokenizer
  (``Tokenizer::default_char()``: ``<|endoftext|>`` = 0, ``\\n`` = 1, then printable ASCII
  32..126 = 2..96), written from the same JSON layout as ``src/tokenizer/char_level.rs``.
* ``expected.json`` -- for each text: its token ids and the score computed by transformers
  in **float64** (a ``.double()`` copy of the float32 weights) in two modes:
  ``score_pad`` with ``config.pad_token_id = 0`` (transformers takes the hidden state at the
  last token that is not the pad id, so trailing ``<|endoftext|>`` are skipped) and
  ``score_nopad`` with ``pad_token_id = None`` (the last position); and ``score_grn``, the
  ``score_pad`` case with a sequence-wide GRN on the score head's input (fixed γ, β recorded
  under ``value_grn``), written out in torch over the scored tokens.

Why
---
The Rust judge reads a transformers checkpoint through the crate's GPT-2 loader and its own
``score.weight`` reader, finds the scored position and applies the head; transformers' own
``GPT2ForSequenceClassification.forward`` is the independent reference for all three.

Each text is scored alone (batch of one) so transformers never needs a pad token to batch.
One text is longer than ``n_positions``: transformers cannot score it, so its reference is
the crate's documented rule, applied here before calling transformers: drop the tokens after
the scored position, then keep the last ``n_positions`` tokens. The script also checks that
a right-padded batch scored by transformers gives the same values as scoring one at a time,
which is what the Rust scorer relies on when it batches.

Run ``python3 tools/golden/gen_judge.py`` (deterministic: fixed seed, one CPU thread).
"""

import argparse
import copy
import json
import os
import shutil

import torch
import transformers
from safetensors.torch import load_file
from transformers import GPT2ForSequenceClassification, PreTrainedTokenizerFast

from gen_golden import make_config  # the same GPT-2 settings as the language-model goldens

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT_DIR = os.path.join(REPO_ROOT, "tests", "data", "judge")

EOS = "<|endoftext|>"
SEED = 4242
MODEL = dict(vocab_size=97, n_positions=32, n_embd=16, n_head=2, n_layer=2)
TEXTS = [
    "12+34=46",
    "12+34=46" + EOS,
    "7+8=15" + EOS + EOS,
    "40+6=46;46",
    "0+0=0",
    "Is 2+2=5? No.\n",
    "x",
    # 45 characters: longer than n_positions (32), exercises left truncation.
    "99+99=198; 90+90=180; 9+9=18; 180+18=198; 198" + EOS,
]


def char_tokenizer_json():
    """The same document as ``char_level_json`` in src/tokenizer/char_level.rs."""
    alphabet = "\n" + "".join(chr(c) for c in range(32, 127))
    vocab = {EOS: 0}
    for ch in alphabet:
        vocab.setdefault(ch, len(vocab))
    return {
        "version": "1.0",
        "truncation": None,
        "padding": None,
        "added_tokens": [{
            "id": 0, "content": EOS, "single_word": False, "lstrip": False,
            "rstrip": False, "normalized": False, "special": True,
        }],
        "normalizer": None,
        "pre_tokenizer": None,
        "post_processor": None,
        "decoder": {"type": "Fuse"},
        "model": {
            "type": "BPE", "dropout": None, "unk_token": None,
            "continuing_subword_prefix": None, "end_of_word_suffix": None,
            "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
            "vocab": vocab, "merges": [],
        },
    }


def build_model():
    """GPT2ForSequenceClassification (float32, eval) with every parameter randomised as in
    gen_golden.py, and a larger scoring head so scores are O(1)."""
    # The same GPT-2 settings as the language-model goldens, plus a one-label head and the
    # pad token that tells transformers where each sequence ends.
    cfg = make_config(MODEL)
    cfg.num_labels = 1
    cfg.pad_token_id = 0
    torch.manual_seed(SEED)
    model = GPT2ForSequenceClassification(cfg).float()
    model.config._attn_implementation = "eager"
    model.eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            parts = name.split(".")
            if name == "score.weight":
                p.copy_(0.5 * torch.randn_like(p))
            elif parts[-2].startswith("ln_") and parts[-1] == "weight":
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif parts[-1] == "bias":
                p.copy_(0.1 * torch.randn_like(p))
            else:
                p.copy_(0.08 * torch.randn_like(p))
    return model


def scored_ids(ids, pad, n_ctx):
    """The crate's rule: drop tokens after the scored position, keep the last n_ctx."""
    if pad is None:
        last = len(ids) - 1
    else:
        real = [i for i, t in enumerate(ids) if t != pad]
        last = real[-1] if real else 0
    return ids[: last + 1][-n_ctx:]


def score(model, ids):
    with torch.no_grad():
        out = model(input_ids=torch.tensor([ids], dtype=torch.long)).logits
    assert out.shape == (1, 1), out.shape
    return out[0, 0].item()


def value_grn_params(c):
    """Fixed, non-zero γ, β (C) of the score head's GRN case (written to expected.json)."""
    j = torch.arange(c, dtype=torch.float64)
    return 0.6 * torch.sin(0.5 * j), 0.15 * torch.cos(0.3 * j)


def score_grn(model, ids, gamma, beta, eps):
    """The score with a sequence-wide GRN (ConvNeXt V2 form over the sequence axis) on the
    score head's input, written out in torch: every position of `ids` is real."""
    with torch.no_grad():
        x = model.transformer(input_ids=torch.tensor([ids], dtype=torch.long)).last_hidden_state[0]
        g = torch.sqrt((x * x).sum(dim=0))
        n = g / (g.mean() + eps)
        y = gamma * (x * n) + beta + x
        return float(y[-1] @ model.score.weight[0])


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", default=OUT_DIR, help="output directory (default: tests/data/judge)")
    args = ap.parse_args()
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")

    out = os.path.abspath(args.out)
    if os.path.isdir(out):
        shutil.rmtree(out)
    model = build_model()
    model.save_pretrained(out, safe_serialization=True)
    gen = os.path.join(out, "generation_config.json")
    if os.path.exists(gen):
        os.remove(gen)
    names = sorted(load_file(os.path.join(out, "model.safetensors")))
    assert "score.weight" in names and "score.bias" not in names, names
    assert all(n == "score.weight" or n.startswith("transformer.") for n in names), names

    tok_path = os.path.join(out, "tokenizer.json")
    with open(tok_path, "w") as f:
        json.dump(char_tokenizer_json(), f, indent=2, ensure_ascii=False)
        f.write("\n")
    tok = PreTrainedTokenizerFast(tokenizer_file=tok_path)

    n_ctx = MODEL["n_positions"]
    m64 = copy.deepcopy(model).double()
    nopad = copy.deepcopy(m64)
    nopad.config.pad_token_id = None
    gamma, beta = value_grn_params(model.config.n_embd)
    grn_eps = 1e-6
    items = []
    for text in TEXTS:
        ids = tok.encode(text, add_special_tokens=False)
        assert tok.decode(ids, clean_up_tokenization_spaces=False) == text
        s_pad = score(m64, scored_ids(ids, 0, n_ctx))
        s_nopad = score(nopad, scored_ids(ids, None, n_ctx))
        s_grn = score_grn(m64, scored_ids(ids, 0, n_ctx), gamma, beta, grn_eps)
        items.append({"text": text, "ids": ids, "score_pad": s_pad, "score_nopad": s_nopad, "score_grn": s_grn})
        print(f"{text!r:60} pad {s_pad:+.6f}  nopad {s_nopad:+.6f}")

    # Batching by right-padding with the pad id gives the one-at-a-time values (texts that
    # fit the context).
    short = [it for it in items if len(it["ids"]) <= n_ctx]
    t = max(len(it["ids"]) for it in short)
    batch = torch.tensor([it["ids"] + [0] * (t - len(it["ids"])) for it in short])
    with torch.no_grad():
        batched = m64(input_ids=batch).logits[:, 0].tolist()
    for it, b in zip(short, batched):
        assert abs(it["score_pad"] - b) < 1e-12, (it["text"], it["score_pad"], b)

    expected = {
        "precision": "float64",
        "pad_token_id": 0,
        "n_positions": n_ctx,
        "items": items,
        "value_grn": {"gamma": gamma.tolist(), "beta": beta.tolist(), "eps": grn_eps},
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    with open(os.path.join(out, "expected.json"), "w") as f:
        json.dump(expected, f, indent=1)
        f.write("\n")
    sizes = {n: os.path.getsize(os.path.join(out, n)) for n in sorted(os.listdir(out))}
    print(f"wrote {out}: {sizes}")


if __name__ == "__main__":
    main()
