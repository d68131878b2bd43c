#!/usr/bin/env python3
"""PyTorch CPU baseline for GPT-2 (124M) forward+backward and forward-only.

Same shape as the Rust `dapo bench --device cpu`: GPT2Config() defaults (V=50257,
n_positions=1024, C=768, 12 layers, 12 heads), random init, float32, dropout 0,
B=4, T=256, random input_ids and targets, loss = mean cross-entropy over all B*T tokens.

Usage: python3 bench/torch_cpu_gpt2.py [--threads 2] [--iters 5] [--warmup 2] [--B 4] [--T 256]
"""

import argparse
import statistics
import time

import torch
import torch.nn.functional as F
import transformers
from transformers import GPT2Config, GPT2LMHeadModel

from bench_common import cpu_model


def time_it(fn, warmup, iters):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return times


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--iters", type=int, default=5)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--B", type=int, default=4)
    ap.add_argument("--T", type=int, default=256)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    print(f"# torch {torch.__version__} (transformers {transformers.__version__})  "
          f"threads={torch.get_num_threads()}  cpu={cpu_model()}", flush=True)

    cfg = GPT2Config(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                     summary_first_dropout=0.0)
    model = GPT2LMHeadModel(cfg).float()
    model.train()  # dropout is 0 anyway; train mode as in a training step
    B, T, V = args.B, args.T, cfg.vocab_size
    input_ids = torch.randint(0, V, (B, T))
    targets = torch.randint(0, V, (B, T))

    def fwd_bwd():
        model.zero_grad(set_to_none=True)
        logits = model(input_ids, use_cache=False).logits
        loss = F.cross_entropy(logits.view(-1, V), targets.view(-1))
        loss.backward()

    def fwd():
        with torch.no_grad():
            logits = model(input_ids, use_cache=False).logits
            F.cross_entropy(logits.view(-1, V), targets.view(-1))

    for label, fn in (("fwd+bwd", fwd_bwd), ("fwd    ", fwd)):
        times = time_it(fn, args.warmup, args.iters)
        med = statistics.median(times)
        print(f"torch  {label}  B={B} T={T}  median_s={med:.3f}  tokens/s={B * T / med:.1f}  "
              f"(min_s={min(times):.3f} max_s={max(times):.3f} n={len(times)})", flush=True)


if __name__ == "__main__":
    main()
