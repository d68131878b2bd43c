#!/usr/bin/env python3
"""Peer of `dapo bench --only decode [--decode-sample]`: transformers' generate on a random-
weight GPT-2 124M (GPT2Config() defaults, dropout 0, float32, eval mode), 8 random prompts of 16
tokens, exactly 32 new tokens each (min_new_tokens = max_new_tokens, so <|endoftext|> cannot end
a sequence early; dapo's bench has no stop token), KV cache on. Greedy, or sampled at
temperature 1 with top_k 0 and top_p 1 (no filtering), as dapo's SamplingConfig.

As dapo: one untimed run, then `--iters` timed runs of the whole generate (prefill included),
the upper median reported.
"""

import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel  # noqa: E402

from common import set_threads, spread, timed, upper_median  # noqa: E402


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--mode", choices=["greedy", "sample"], default="greedy")
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--new", type=int, default=32)
    ap.add_argument("--iters", type=int, default=2)
    ap.add_argument("--warmup", type=int, default=1)
    a = ap.parse_args()
    set_threads(a.threads)
    torch.manual_seed(0)
    cfg = GPT2Config(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, summary_first_dropout=0.0)
    model = GPT2LMHeadModel(cfg).float().eval()
    prompts = torch.randint(0, cfg.vocab_size, (a.batch, a.prompt_len))
    mask = torch.ones_like(prompts)
    sample = a.mode == "sample"
    kw = dict(max_new_tokens=a.new, min_new_tokens=a.new, use_cache=True, do_sample=sample,
              pad_token_id=cfg.eos_token_id)
    if sample:
        kw.update(temperature=1.0, top_k=0, top_p=1.0)

    def run():
        with torch.inference_mode():
            out = model.generate(input_ids=prompts, attention_mask=mask, **kw)
        assert out.shape == (a.batch, a.prompt_len + a.new), out.shape

    times = timed(run, a.warmup, a.iters)
    med = upper_median(times)
    label = "greedy" if not sample else "T=1"
    print(f"peer   decode   B={a.batch} prompt={a.prompt_len} new={a.new} {label}  median_s={med:.3f}  "
          f"tokens/s={a.batch * a.new / med:.1f}  {spread(times)}  threads={torch.get_num_threads()}", flush=True)


if __name__ == "__main__":
    main()
