"""What the peer scripts of bench/compare_cpu.sh share: threads, timing, the median, and the
character-level tokenizer dapo's RL-step bench uses."""

import json
import os
import statistics
import time

import torch


def set_threads(n):
    """n intra-op threads and one inter-op thread, as dapo's `--threads n` worker pool."""
    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(1)
    except RuntimeError:
        pass  # already set (only possible before any parallel work)


def upper_median(xs):
    """The median as dapo bench takes it: of an even count, the upper middle value."""
    xs = sorted(xs)
    return xs[len(xs) // 2]


def timed(fn, warmup, iters):
    """Runs fn `warmup` times untimed, then `iters` times; returns the timed seconds."""
    for _ in range(warmup):
        fn()
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def spread(xs):
    return f"(min_s={min(xs):.3f} max_s={max(xs):.3f} n={len(xs)} mean_s={statistics.fmean(xs):.3f})"


def write_char_tokenizer(out_dir, vocab_size):
    """A tokenizer.json (+ tokenizer_config.json) like dapo bench's RL-step tokenizer: id 0 is
    <|endoftext|>, ids 1..V-1 are the characters U+0100, U+0101, ... one token each (BPE with no
    merges, decoded by concatenation), so every sampled id decodes and a 16-character prompt is
    16 tokens. The layout is the one the crate writes for its character tokenizer."""
    chars = []
    c = 0x100
    while len(chars) < vocab_size - 1:
        # U+0100 + 50256 stays below the surrogates (U+D800), as in src/cli/bench/model.rs.
        chars.append(chr(c))
        c += 1
    vocab = {"<|endoftext|>": 0}
    vocab.update({ch: i + 1 for i, ch in enumerate(chars)})
    tok = {
        "version": "1.0", "truncation": None, "padding": None,
        "added_tokens": [{"id": 0, "content": "<|endoftext|>", "single_word": False, "lstrip": False,
                          "rstrip": False, "normalized": False, "special": True}],
        "normalizer": None, "pre_tokenizer": None, "post_processor": None, "decoder": {"type": "Fuse"},
        "model": {"type": "BPE", "dropout": None, "unk_token": None, "continuing_subword_prefix": None,
                  "end_of_word_suffix": None, "fuse_unk": False, "byte_fallback": False, "ignore_merges": False,
                  "vocab": vocab, "merges": []},
    }
    os.makedirs(out_dir, exist_ok=True)
    with open(os.path.join(out_dir, "tokenizer.json"), "w") as f:
        json.dump(tok, f, ensure_ascii=False)
    with open(os.path.join(out_dir, "tokenizer_config.json"), "w") as f:
        json.dump({"bos_token": "<|endoftext|>", "eos_token": "<|endoftext|>", "pad_token": "<|endoftext|>",
                   "model_max_length": 1024, "tokenizer_class": "PreTrainedTokenizerFast"}, f, indent=1)
    return chars
