#!/usr/bin/env python3
"""PyTorch + transformers baselines for the three GPT-2 numbers `dapo bench --device cuda` reports.

What: on one GPU, HF `GPT2LMHeadModel(GPT2Config())` (124M: V=50257, n_positions=1024, C=768,
12 layers, 12 heads; random init from a fixed seed, f32 weights, dropout 0, built from the config,
nothing downloaded) is timed on three jobs:
  train   one step: forward, mean cross-entropy over all B*T tokens (random labels), backward,
          torch.optim.AdamW(lr 3e-4, weight_decay 0, fused=False, foreach default), zero_grad.
          Default B=16, T=1024. Reports median ms/step, tokens/s, MFU and peak memory.
  decode  `model.generate`, 256 random 16-token prompts x 256 new tokens, multinomial sampling
          (temperature 1, top_k 0, top_p 1), KV cache, no eos (every row makes exactly `new`
          tokens). Reports median s/call, new tokens/s and peak memory.
  rl      one GRPO/DAPO step as TRL runs it: 64 prompts x 8 completions x 128 new tokens:
          (a) generate the 512 completions, (b) reference log-probs from a frozen deepcopy under
          no_grad, (c) the policy update: forward with grad, logp = log_softmax(logits / temp)
          gathered at the completion tokens, ratio = exp(logp - old) with old = logp.detach()
          (one on-policy iteration), random per-sequence advantages, loss
          -min(r A, clip(r, 1-0.2, 1+0.28) A) + 0.04 (e^d - d - 1), d = ref - logp,
          token-mean over all completion tokens (DAPO), backward, AdamW step. Logits are computed
          for the completion positions only (`logits_to_keep`, as TRL does). Micro-batches
          accumulate gradients with each micro-batch's loss divided by the total token count, so
          the result is the same token mean. Reports s for each phase, the peak memory over the
          whole step, and the micro-batch that ran (an OOM halves it and retries; printed).

Why: the ratios of our trainer to the stack a Python RL trainer gets for free, same GPU and shapes.

Precision (--dtype, matching `dapo bench --dtype`):
  f32   (default) f32 weights and activations with TF32 GEMMs: this script sets
        torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = True, no
        autocast. The counterpart of `dapo bench --dtype f32 --matmul-precision tf32`.
  bf16  mixed precision as a PyTorch trainer runs it: f32 master weights and AdamW state,
        forward passes (model, loss, log-probs, generate) under
        torch.autocast(device_type, dtype=torch.bfloat16), backward outside it (autograd
        follows the forward's dtypes). Ops autocast keeps in f32 (softmax, log_softmax,
        cross_entropy, layer norm) stay f32; the f32 GEMMs left run in TF32. The counterpart of
        `dapo bench --dtype bf16`. With --check on bf16 the log-prob comparisons use
        CHECK_TOL_BF16 (a bf16 GEMM's rounding), the loss checks keep CHECK_TOL.

MFU (llm.c's gpt2_estimate_mfu convention; nanoGPT's 12*L*C*T also counts the masked causal half):
  flops_per_token = 6 * N + 6 * n_layer * T * C
  MFU = flops_per_token * tokens_per_s / (peak_tflops * 1e12)
with N = all parameters counted once (the tied wte / lm_head matrix once, wpe included:
124,439,808 for GPT-2 124M). The default peak follows --dtype: 494.7 TFLOP/s for f32 (H100/H200
SXM dense TF32) and 989.4 for bf16 (their dense BF16; 989 is also the sparse TF32 figure); pass
--peak-tflops for other parts.

Method: CUDA events after warm-up, median of the timed runs; RL phases by synchronize +
perf_counter (generate syncs with the host anyway). Peak memory: torch.cuda.max_memory_allocated
after reset_peak_memory_stats, MiB, reset after warm-up (AdamW state counted). On the CPU
perf_counter replaces the events; memory and MFU print n/a.

`--check` (meant for `--device cpu --small`) asserts: the train loss falls over 5 steps on one
fixed batch; generate returns exactly B x new new tokens and keeps the prompts; the logits_to_keep
log-probs equal ones gathered from full logits; reference log-probs equal the policy's before the
update (same weights); and the clipped DAPO loss equals a float64 token-by-token recomputation on
the same tensors (both the RL step's tensors and synthetic ones where the clip bites) within 1e-5.

Usage:
  python3 bench/torch_gpt2_gpu.py                          # H100/H200: all three sections, TF32
  python3 bench/torch_gpt2_gpu.py --dtype bf16             # the same under bf16 autocast
  python3 bench/torch_gpt2_gpu.py --only rl --json out.json
  python3 bench/torch_gpt2_gpu.py --attn sdpa              # SDPA attention instead of eager
  python3 bench/torch_gpt2_gpu.py --device cpu --small --check
  python3 bench/torch_gpt2_gpu.py --device cpu --small --check --dtype bf16
"""

import argparse
import contextlib
import copy
import datetime
import gc
import json
import math
import statistics
import sys
import time

import torch
import torch.nn.functional as F
import transformers
from transformers import GPT2Config, GPT2LMHeadModel

from bench_common import device_name

EPS_LOW, EPS_HIGH, KL_BETA = 0.2, 0.28, 0.04
PEAK_TF32_H100_SXM = 494.7
PEAK_BF16_H100_SXM = 989.4
CHECK_TOL = 1e-5
CHECK_TOL_BF16 = 1e-1  # log-probs from bf16 GEMMs of different shapes (logits_to_keep vs full)
SMALL_CFG = dict(n_layer=2, n_embd=64, n_head=4, vocab_size=512, n_positions=128)
SMALL_SHAPES = dict(train_b=2, train_t=32, decode_b=4, decode_new=8, prompt_len=4,
                    rl_prompts=2, rl_group=2, rl_new=8)


# ---------------------------------------------------------------- setup

def build_model(a, dev):
    """Random-init GPT-2 from the config (no hub), f32, dropout 0, same weights for every section."""
    torch.manual_seed(a.seed)
    extra = SMALL_CFG if a.small else {}
    cfg = GPT2Config(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, summary_first_dropout=0.0,
                     attn_implementation=a.attn, **extra)
    model = GPT2LMHeadModel(cfg).float().to(dev)
    # No eos and pad 0: no row can stop early, so every generate call does the same work.
    model.generation_config.eos_token_id = None
    model.generation_config.pad_token_id = 0
    return model


def n_params(model):
    # model.parameters() yields the tied wte / lm_head tensor once.
    return sum(p.numel() for p in model.parameters())


def amp(a, dev):
    """The forward passes' precision context: bf16 autocast for --dtype bf16, else nothing."""
    if a.dtype == "bf16":
        return torch.autocast(device_type=dev.type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def sync(dev):
    if dev.type == "cuda":
        torch.cuda.synchronize(dev)


def reset_mem(dev):
    gc.collect()
    if dev.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(dev)


def peak_mib(dev):
    return torch.cuda.max_memory_allocated(dev) / 2**20 if dev.type == "cuda" else None


def fmt_mib(x):
    return "n/a" if x is None else f"{x:.0f}"


def measure(fn, warmup, iters, dev, after_warmup=None):
    """Seconds per call: CUDA events (one pair per call, one sync at the end) or perf_counter."""
    for _ in range(warmup):
        fn()
    sync(dev)
    if after_warmup:
        after_warmup()
    if dev.type == "cuda":
        pairs = []
        for _ in range(iters):
            s, e = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            s.record()
            fn()
            e.record()
            pairs.append((s, e))
        sync(dev)
        return [s.elapsed_time(e) / 1e3 for s, e in pairs]
    out = []
    for _ in range(iters):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    return out


def sample_kwargs(new):
    # top_k=0 and top_p=1.0 switch those warpers off; temperature 1.0 is plain multinomial.
    return dict(do_sample=True, temperature=1.0, top_k=0, top_p=1.0, max_new_tokens=new,
                min_new_tokens=new, eos_token_id=None, pad_token_id=0, use_cache=True)


def generate(model, prompts, new):
    return model.generate(input_ids=prompts, attention_mask=torch.ones_like(prompts), **sample_kwargs(new))


# ---------------------------------------------------------------- train

def bench_train(a, dev):
    model = build_model(a, dev).train()
    cfg, b, t = model.config, a.train_b, a.train_t
    opt = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=0.0, fused=False)
    g = torch.Generator().manual_seed(a.seed + 1)
    ids = torch.randint(0, cfg.vocab_size, (b, t), generator=g).to(dev)
    labels = torch.randint(0, cfg.vocab_size, (b, t), generator=g).to(dev)
    losses = []

    def step():
        with amp(a, dev):
            logits = model(ids, use_cache=False).logits
            # Our own labels (not HF's labels=, which shifts and drops one token per row): all B*T.
            loss = F.cross_entropy(logits.view(-1, cfg.vocab_size), labels.view(-1))
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        losses.append(loss.detach())

    if a.check:  # 5 steps on the fixed batch must lower the loss
        for _ in range(5):
            step()
        ls = [x.item() for x in losses]
        assert ls[-1] < ls[0], f"train loss did not fall: {ls}"
        print(f"check train: loss over 5 steps {ls[0]:.4f} -> {ls[-1]:.4f}  ok")
    times = measure(step, a.warmup, a.iters, dev, after_warmup=lambda: reset_mem(dev))
    med = statistics.median(times)
    n = n_params(model)
    flops_tok = 6 * n + 6 * cfg.n_layer * t * cfg.n_embd
    tok_s = b * t / med
    # The peak is a GPU's; against a CPU the ratio means nothing.
    mfu = flops_tok * tok_s / (a.peak_tflops * 1e12) if dev.type == "cuda" else None
    mem = peak_mib(dev)
    print(f"torch  train    B={b} T={t}  median_ms={med * 1e3:.2f}  tokens/s={tok_s:.0f}  "
          f"MFU={'n/a' if mfu is None else f'{100 * mfu:.2f}%'}  peak_MiB={fmt_mib(mem)}  "
          f"(min_ms={min(times) * 1e3:.2f} max_ms={max(times) * 1e3:.2f} n={len(times)})")
    print(f"#      MFU = (6*N + 6*n_layer*T*C) * tokens/s / peak = (6*{n} + 6*{cfg.n_layer}*{t}*{cfg.n_embd})"
          f" * {tok_s:.0f} / {a.peak_tflops}e12  ({flops_tok / 1e9:.4f} GFLOP/token)")
    return dict(dtype=a.dtype, b=b, t=t, median_ms=med * 1e3, times_ms=[x * 1e3 for x in times], tokens_per_s=tok_s,
                n_params=n, flops_per_token=flops_tok, peak_tflops=a.peak_tflops, mfu=mfu, peak_mib=mem)


# ---------------------------------------------------------------- decode

def bench_decode(a, dev):
    model = build_model(a, dev).eval()
    b, p, new = a.decode_b, a.prompt_len, a.decode_new
    g = torch.Generator().manual_seed(a.seed + 2)
    prompts = torch.randint(0, model.config.vocab_size, (b, p), generator=g).to(dev)
    outs = []

    def call():
        with torch.no_grad(), amp(a, dev):
            outs.append(generate(model, prompts, new))

    times = measure(call, a.decode_warmup, a.decode_iters, dev, after_warmup=lambda: (outs.clear(), reset_mem(dev)))
    mem = peak_mib(dev)
    out = outs[-1]
    if a.check:
        assert out.shape == (b, p + new), f"generate returned {tuple(out.shape)}, want {(b, p + new)}"
        assert torch.equal(out[:, :p], prompts), "generate changed the prompts"
        print(f"check decode: generate returned {b}x{out.shape[1] - p} new tokens  ok")
    med = statistics.median(times)
    tok_s = b * new / med
    print(f"torch  decode   B={b} prompt={p} new={new}  median_s={med:.3f}  tokens/s={tok_s:.0f}  "
          f"peak_MiB={fmt_mib(mem)}  (min_s={min(times):.3f} max_s={max(times):.3f} n={len(times)})")
    return dict(dtype=a.dtype, b=b, prompt_len=p, new=new, median_s=med, times_s=times, tokens_per_s=tok_s, peak_mib=mem)


# ---------------------------------------------------------------- rl

def completion_logp(model, seqs, new, temperature):
    """log p of the last `new` tokens of seqs: logits of the new positions only (TRL's logits_to_keep)."""
    logits = model(seqs, use_cache=False, logits_to_keep=new + 1).logits[:, :-1]
    return torch.log_softmax(logits / temperature, dim=-1).gather(-1, seqs[:, -new:, None]).squeeze(-1)


def dapo_loss_sum(logp, old, ref, adv):
    """Sum over tokens of the clipped loss + k3 KL; the caller divides by the total token count."""
    ratio = torch.exp(logp - old)
    a = adv[:, None]
    surrogate = torch.min(ratio * a, torch.clamp(ratio, 1 - EPS_LOW, 1 + EPS_HIGH) * a)
    d = ref - logp
    return (-surrogate + KL_BETA * (torch.exp(d) - d - 1)).sum()


def dapo_loss_f64(logp, old, ref, adv):
    """The same token mean written out token by token in float64 (the --check reference)."""
    total, n = 0.0, 0
    for i in range(logp.shape[0]):
        for j in range(logp.shape[1]):
            lp, o, rf, av = float(logp[i, j]), float(old[i, j]), float(ref[i, j]), float(adv[i])
            r = math.exp(lp - o)
            clipped = min(max(r, 1 - EPS_LOW), 1 + EPS_HIGH)
            d = rf - lp
            total += -min(r * av, clipped * av) + KL_BETA * (math.exp(d) - d - 1)
            n += 1
    return total / n


def oom_retry(fn, mb, what, dev, log):
    """fn(mb) with mb halved after each CUDA OOM; returns (result, mb). Cleanup runs outside the
    except block, whose traceback would otherwise keep the failed pass's tensors alive."""
    while True:
        try:
            return fn(mb), mb
        except torch.cuda.OutOfMemoryError:
            if mb <= 1:
                raise
        log.append(f"OOM at micro-batch {mb} ({what})")
        print(f"#      {what}: OOM at micro-batch {mb}, retrying with {mb // 2}", flush=True)
        mb //= 2
        gc.collect()
        torch.cuda.empty_cache()


def rl_step(a, dev, policy, ref, opt, prompts, mb, log, check):
    new, temp, rows = a.rl_new, 1.0, prompts.shape[0]
    t = {}

    sync(dev); t0 = time.perf_counter()
    with torch.no_grad(), amp(a, dev):
        seqs = generate(policy, prompts, new)
    sync(dev); t["generate_s"] = time.perf_counter() - t0

    def reference(m):
        with torch.no_grad(), amp(a, dev):
            return torch.cat([completion_logp(ref, seqs[i:i + m], new, temp) for i in range(0, rows, m)])

    t0 = time.perf_counter()
    ref_logp, mb = oom_retry(reference, mb, "reference", dev, log)
    sync(dev); t["reference_s"] = time.perf_counter() - t0

    adv = torch.randn(rows, device=dev)
    n_tokens = rows * new  # no eos: every completion token counts (the DAPO denominator)
    kept = []

    def update(m):
        opt.zero_grad(set_to_none=True)  # also drops partial gradients of an OOM'd attempt
        kept.clear()
        total = 0.0
        for i in range(0, rows, m):
            with amp(a, dev):
                logp = completion_logp(policy, seqs[i:i + m], new, temp)
                loss = dapo_loss_sum(logp, logp.detach(), ref_logp[i:i + m], adv[i:i + m]) / n_tokens
            loss.backward()
            total += loss.detach()
            if check:
                kept.append(logp.detach())
        opt.step()
        opt.zero_grad(set_to_none=True)
        return total

    t0 = time.perf_counter()
    loss, mb = oom_retry(update, mb, "update", dev, log)
    sync(dev); t["update_s"] = time.perf_counter() - t0
    t["loss"] = float(loss)

    if check:
        p, cfg = prompts.shape[1], policy.config
        assert seqs.shape == (rows, p + new) and torch.equal(seqs[:, :p], prompts), "rl generate shape"
        logp = torch.cat(kept)
        tol = CHECK_TOL_BF16 if a.dtype == "bf16" else CHECK_TOL
        with torch.no_grad(), amp(a, dev):
            full_logits = ref(seqs, use_cache=False).logits
        full = torch.log_softmax(full_logits[:, p - 1:-1].float(), -1).gather(-1, seqs[:, p:, None])[..., 0]
        err_full = (ref_logp - full).abs().max().item()
        err_pol = (ref_logp - logp).abs().max().item()
        assert err_full <= tol, f"logits_to_keep log-probs differ from full logits by {err_full:.3g} > {tol}"
        assert err_pol <= tol, f"reference != policy log-probs before the update ({err_pol:.3g} > {tol})"
        want = dapo_loss_f64(logp, logp, ref_logp, adv)
        assert abs(want - t["loss"]) < CHECK_TOL, f"dapo loss {t['loss']} vs f64 {want}"
        print(f"check rl: {rows}x{new} completions, logits_to_keep == full logits (max diff {err_full:.2g}), "
              f"ref == policy ({err_pol:.2g}), loss {t['loss']:.6f} == f64 {want:.6f}  ok "
              f"(V={cfg.vocab_size}, tol {tol:g})")
    return t, mb


def check_loss_clip(dev):
    """Synthetic tensors where old != logp, so both clip bounds and both advantage signs are hit."""
    g = torch.Generator().manual_seed(7)
    logp = -torch.rand(6, 10, generator=g) * 5
    old = logp + (torch.rand(6, 10, generator=g) - 0.5) * 1.2  # ratios ~0.55..1.8
    ref = logp + torch.randn(6, 10, generator=g) * 0.3
    adv = torch.randn(6, generator=g)
    got = (dapo_loss_sum(logp.to(dev), old.to(dev), ref.to(dev), adv.to(dev)) / logp.numel()).item()
    want = dapo_loss_f64(logp, old, ref, adv)
    r = torch.exp(logp - old)
    assert (r < 1 - EPS_LOW).any() and (r > 1 + EPS_HIGH).any(), "synthetic ratios miss the clip"
    assert abs(got - want) < CHECK_TOL, f"clipped loss {got} vs f64 {want}"
    print(f"check loss: clipped DAPO loss {got:.6f} == f64 {want:.6f} (ratios {r.min():.2f}..{r.max():.2f})  ok")


def bench_rl(a, dev):
    policy = build_model(a, dev).train()
    ref = copy.deepcopy(policy).eval().requires_grad_(False)
    opt = torch.optim.AdamW(policy.parameters(), lr=3e-4, weight_decay=0.0, fused=False)
    rows = a.rl_prompts * a.rl_group
    g = torch.Generator().manual_seed(a.seed + 3)
    base = torch.randint(0, policy.config.vocab_size, (a.rl_prompts, a.prompt_len), generator=g)
    prompts = base.repeat_interleave(a.rl_group, dim=0).to(dev)  # G completions per prompt, as TRL
    mb = a.rl_micro_batch if a.rl_micro_batch > 0 else rows
    log, runs, mems = [], [], []
    if a.check:
        check_loss_clip(dev)
    for i in range(a.rl_warmup + a.rl_iters):
        reset_mem(dev)
        t, mb = rl_step(a, dev, policy, ref, opt, prompts, mb, log, a.check and i == 0)
        if i >= a.rl_warmup:
            runs.append(t)
            mems.append(peak_mib(dev))
    med = {k: statistics.median(r[k] for r in runs) for k in ("generate_s", "reference_s", "update_s")}
    mem = None if mems[0] is None else max(mems)
    total = sum(med.values())
    print(f"torch  rl-step  P={a.rl_prompts} G={a.rl_group} new={a.rl_new} prompt={a.prompt_len} beta={KL_BETA}  "
          f"generate_s={med['generate_s']:.3f} reference_s={med['reference_s']:.3f} update_s={med['update_s']:.3f} "
          f"total_s={total:.3f}  peak_MiB={fmt_mib(mem)}  micro_batch={mb}/{rows}  (n={len(runs)})")
    for line in log:
        print(f"#      {line}")
    return dict(dtype=a.dtype, prompts=a.rl_prompts, group=a.rl_group, new=a.rl_new, prompt_len=a.prompt_len, micro_batch=mb,
                rows=rows, oom_log=log, peak_mib=mem, total_s=total, runs=runs, **med)


# ---------------------------------------------------------------- main

SECTIONS = dict(train=bench_train, decode=bench_decode, rl=bench_rl)


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    ap.add_argument("--small", action="store_true", help="tiny model and shapes: seconds on a CPU")
    ap.add_argument("--check", action="store_true", help="assert correctness along the way (use with --small)")
    ap.add_argument("--only", choices=list(SECTIONS), help="run one section (default: all)")
    ap.add_argument("--attn", choices=("eager", "sdpa"), default="eager")
    ap.add_argument("--dtype", choices=("f32", "bf16"), default="f32",
                    help="f32: f32 with TF32 GEMMs (default); bf16: forward passes under bf16 autocast")
    ap.add_argument("--peak-tflops", type=float, default=None,
                    help="MFU denominator (default: 494.7 for f32, H100/H200 SXM dense TF32; "
                         "989.4 for bf16, their dense BF16)")
    ap.add_argument("--train-b", type=int, default=16)
    ap.add_argument("--train-t", type=int, default=1024)
    ap.add_argument("--warmup", type=int, default=3, help="train warm-up steps")
    ap.add_argument("--iters", type=int, default=10, help="train timed steps")
    ap.add_argument("--decode-b", type=int, default=256)
    ap.add_argument("--decode-new", type=int, default=256)
    ap.add_argument("--prompt-len", type=int, default=16)
    ap.add_argument("--decode-warmup", type=int, default=1)
    ap.add_argument("--decode-iters", type=int, default=3)
    ap.add_argument("--rl-prompts", type=int, default=64)
    ap.add_argument("--rl-group", type=int, default=8)
    ap.add_argument("--rl-new", type=int, default=128)
    ap.add_argument("--rl-micro-batch", type=int, default=0, help="rows per fwd/bwd pass (0: all at once)")
    ap.add_argument("--rl-warmup", type=int, default=1)
    ap.add_argument("--rl-iters", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (torch default if unset)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", metavar="PATH", help="also write the numbers as JSON")
    a = ap.parse_args()
    if a.peak_tflops is None:
        a.peak_tflops = PEAK_BF16_H100_SXM if a.dtype == "bf16" else PEAK_TF32_H100_SXM
    if a.small:  # tiny shapes replace the defaults (explicit flags are not kept: --small is for smoke runs)
        for k, v in SMALL_SHAPES.items():
            setattr(a, k, v)
        a.warmup, a.iters, a.decode_iters = 1, 3, 2
    return a


def main():
    a = parse_args()
    dev = torch.device(a.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        sys.exit("CUDA is not available here; run with --device cpu --small")
    if a.threads:
        torch.set_num_threads(a.threads)
    # TF32 GEMMs on f32 storage: the precision our kernels run at.
    torch.backends.cuda.matmul.allow_tf32 = True
    torch.backends.cudnn.allow_tf32 = True
    date = datetime.datetime.now().isoformat(timespec="seconds")
    print(f"# torch_gpt2_gpu  {date}")
    print(f"# torch {torch.__version__}  transformers {transformers.__version__}  cuda {torch.version.cuda}  "
          f"device {dev}: {device_name(dev)}")
    prec = "TF32 matmul" if a.dtype == "f32" else "bf16 autocast (f32 master weights, TF32 for f32 GEMMs)"
    print(f"# model {'small ' + str(SMALL_CFG) if a.small else 'gpt2 124M'}  f32 weights, {prec}, dropout 0, "
          f"attn {a.attn}, seed {a.seed}  timer {'CUDA events' if dev.type == 'cuda' else 'time.perf_counter'}, "
          f"median after warm-up")
    results = {}
    for name in ([a.only] if a.only else SECTIONS):
        results[name] = SECTIONS[name](a, dev)
        reset_mem(dev)  # each section builds its own model; free the last one's memory first
    if a.check:
        print("check: all ok")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(date=date, torch=torch.__version__, transformers=transformers.__version__,
                           cuda=torch.version.cuda, device=str(dev), device_name=device_name(dev), attn=a.attn,
                           dtype=a.dtype,
                           small=a.small, args=vars(a), results=results), f, indent=2)
        print(f"# wrote {a.json}")


if __name__ == "__main__":
    main()
