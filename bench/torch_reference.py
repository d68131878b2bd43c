#!/usr/bin/env python3
"""PyTorch eager timings of the four ops this crate fuses into hand-written CUDA kernels.

What: for each fused kernel in kernels/ (logprob.cu, advantage.cu, policy_loss.cu, grn.cu) this
script times the plain PyTorch eager code a Python RL trainer (TRL-style) would run for the same
function, on the shapes `dapo bench --device cuda` uses, plus a large device-to-device copy as the
bandwidth floor. Each op gets one line: median time, the minimal bytes the op must move (each
input read once, each output written once; counted next to each op below), the achieved GB/s and
that as a fraction of the copy's GB/s. Our kernels' numbers and these can then be read side by
side: same shapes, same byte counts, same copy yardstick.

Why: a fused kernel is only worth its upkeep if it beats what PyTorch already does; eager is the
baseline an RL trainer gets for free (no torch.compile, no custom kernels).

Semantics reproduced (the CPU oracles are src/backend/cpu/logprob.rs, src/rl/advantage.rs,
src/backend/cpu/policy_loss.rs, src/model/grn.rs):
  logprob      z = x / temperature; logp = log_softmax(z)[target], H = -sum p log p; backward
               d/dx given upstream dlogp, dH (autograd).
  advantage    group-relative: (r - mean_g) / (std_g + eps), unbiased std (a single value has
               std 0), scaling group | batch | none, optional clip; ragged groups by offsets.
  policy_loss  -min(rho A, clip(rho, 1-eps_low, 1+eps_high) A) + beta (e^d - d - 1) - c_H H,
               d = logp_ref - logp, rho token or sequence level, aggregated grpo | bnpo | dapo |
               dr_grpo; gradient w.r.t. logp (and entropy when c_H != 0) by autograd.
  grn          per sequence over real positions: G = ||x[:, c]||, N = G / (mean_c G + eps),
               y = gamma (x N) + beta + x, padding rows pass through; backward by autograd.
Differences, all in eager's favour: eager skips inputs our kernels guard against (non-finite
values under the mask, out-of-range targets) and the 16 policy-loss metrics our kernel also
writes; at temperature 1.0 eager skips the division (TRL always divides).

Method: CUDA events after warm-up, median of the timed runs; inputs are random (never zeros);
inputs under ROTATE_BELOW bytes are rotated among enough copies to span ROTATE_FOOTPRINT, so
the 50 MB L2 of an H100 cannot hold them between runs. Backward passes are timed as fwd+bwd
(autograd needs its forward) and reported as (fwd+bwd) - fwd, medians subtracted. On the CPU
time.perf_counter replaces the events.

`--check` runs the eager code on the small shapes against float64 references written out the
slow, obvious way (row/group/token loops and the analytic gradients of the CPU oracles), and
asserts max |eager - ref| / max(1, max |ref|) < 1e-4 for every output.

Usage:
  python3 bench/torch_reference.py                     # H100: full shapes, CUDA events
  python3 bench/torch_reference.py --json out.json     # same, numbers also as JSON
  python3 bench/torch_reference.py --device cpu --small
  python3 bench/torch_reference.py --device cpu --check
"""

import argparse
import datetime
import json
import math
import statistics
import sys
import time

import torch

from bench_common import device_name

# ---------------------------------------------------------------- shapes (as dapo bench --device cuda)
LOGPROB_N = 16384          # rows (tokens)
LOGPROB_V = 50257          # vocabulary (GPT-2)
ADV_N = 16384              # rewards
ADV_GROUP = 8              # completions per prompt: 2048 equal ("ragged-free") groups
ADV_EPS = 1e-4
POLICY_S = 128             # sequences
POLICY_L = 128             # tokens per sequence: 16384 tokens
EPS_LOW, EPS_HIGH = 0.2, 0.28
KL_BETA = 0.04
ENTROPY_COEFS = (0.0, 0.01)
LOSS_TYPE = "dapo"
GRN_B, GRN_T, GRN_C = 16, 1024, 768
GRN_PAD_FRACTION = 0.10    # mean share of padding positions per sequence
GRN_EPS = 1e-6
COPY_ELEMS = 1 << 28       # 1 GiB of f32

# --small: every shape shrunk so the whole run takes seconds on a CPU (also the --check shapes).
SMALL = dict(LOGPROB_N=64, LOGPROB_V=1000, ADV_N=64, ADV_GROUP=8, POLICY_S=4, POLICY_L=16,
             GRN_B=2, GRN_T=16, GRN_C=32, COPY_ELEMS=1 << 24)

ROTATE_BELOW = 64 << 20       # inputs smaller than this are rotated (H100 L2 is 50 MB; margin
                              # so the 50.3 MB GRN input is rotated too)
ROTATE_FOOTPRINT = 256 << 20  # the rotated copies of one op's inputs span at least this much
ROTATE_FOOTPRINT_SMALL = 32 << 20
MAX_COPIES = 2048
BIG_OP_BYTES = 1 << 30        # ops moving more than this get --runs-big timed runs
F32 = 4                       # bytes per value; targets and offsets count as 4-byte ints (u32/i32)
CHECK_TOL = 1e-4


def shapes(small):
    names = ("LOGPROB_N", "LOGPROB_V", "ADV_N", "ADV_GROUP", "POLICY_S", "POLICY_L",
             "GRN_B", "GRN_T", "GRN_C", "COPY_ELEMS")
    s = {k: globals()[k] for k in names}
    if small:
        s.update(SMALL)
    return s


# ---------------------------------------------------------------- eager forms (what is timed)

def logprob_entropy(x, targets, temperature):
    """Per row: log p[target] and entropy H, TRL-style: log_softmax, gather, -(p log p).sum."""
    z = x if temperature == 1.0 else x / temperature
    logp_all = torch.log_softmax(z, dim=-1)
    logp = logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1)
    return logp, entropy


def logprob_grad(x, targets, dlogp, dentropy, temperature):
    """d/dx of (logp, H) given their upstream gradients, by autograd on the eager forward."""
    x = x.detach().requires_grad_()
    logp, entropy = logprob_entropy(x, targets, temperature)
    (dx,) = torch.autograd.grad((logp, entropy), (x,), (dlogp, dentropy))
    return dx


def advantage_uniform(rewards, group, eps):
    """TRL's GRPO form for equal groups of `group`: view, mean, unbiased std, divide."""
    r = rewards.view(-1, group)
    centred = r - r.mean(dim=1, keepdim=True)
    return (centred / (r.std(dim=1, keepdim=True) + eps)).view(-1)


def advantage_ragged(rewards, offsets, scaling, eps, clip):
    """Ragged groups rewards[offsets[g]:offsets[g+1]] with segment sums (index_add_).

    As the oracle: means are x0 + mean(x - x0) so equal rewards give exactly 0; a single value
    has std 0; a centred value of exactly 0 is not divided; clip <= 0 means no clip.
    """
    n, groups = rewards.numel(), offsets.numel() - 1
    sizes = offsets[1:] - offsets[:-1]
    seg = torch.repeat_interleave(torch.arange(groups, device=rewards.device), sizes, output_size=n)
    x0 = rewards[offsets[:-1]]
    shifted = torch.zeros(groups, dtype=rewards.dtype, device=rewards.device)
    shifted.index_add_(0, seg, rewards - x0[seg])
    mean = x0 + shifted / sizes
    centred = rewards - mean[seg]
    if scaling == "none":
        a = centred
    else:
        if scaling == "group":
            ss = torch.zeros_like(shifted).index_add_(0, seg, centred * centred)
            std = (ss / (sizes - 1).clamp(min=1)).sqrt()[seg]
        else:  # batch
            std = rewards.std() if n > 1 else torch.zeros((), device=rewards.device)
        a = torch.where(centred != 0, centred / (std + eps), centred)
    return a.clamp(-clip, clip) if clip > 0 else a


def policy_loss(logp, logp_old, logp_ref, adv, entropy, mask, p):
    """TRL-style clipped-ratio loss with k3 KL and an entropy bonus, aggregated per p['loss_type']."""
    log_ratio = logp - logp_old
    if p["level"] == "sequence":  # GSPO: one ratio per sequence, the masked mean log-ratio
        log_ratio = ((log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).unsqueeze(-1)
    ratio = torch.exp(log_ratio)
    a = adv.unsqueeze(-1)
    clipped = torch.clamp(ratio, 1 - p["eps_low"], 1 + p["eps_high"])
    per_token = -torch.min(ratio * a, clipped * a)
    if p["beta"] != 0.0:
        d = logp_ref - logp
        per_token = per_token + p["beta"] * (torch.exp(d) - d - 1)
    if p["entropy_coef"] != 0.0:
        per_token = per_token - p["entropy_coef"] * entropy
    lt = p["loss_type"]
    if lt == "grpo":
        return ((per_token * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
    if lt in ("bnpo", "dapo"):
        return (per_token * mask).sum() / mask.sum().clamp(min=1.0)
    if lt == "dr_grpo":
        return (per_token * mask).sum() / (mask.shape[0] * max(p["max_completion_length"], 1))
    raise ValueError(f"unknown loss_type {lt}")


def policy_loss_grad(logp, logp_old, logp_ref, adv, entropy, mask, p):
    """Loss and its gradient w.r.t. logp (and entropy when entropy_coef != 0), by autograd."""
    lp = logp.detach().requires_grad_()
    wrt = [lp]
    if p["entropy_coef"] != 0.0:
        entropy = entropy.detach().requires_grad_()
        wrt.append(entropy)
    loss = policy_loss(lp, logp_old, logp_ref, adv, entropy, mask, p)
    return (loss, *torch.autograd.grad(loss, wrt))


def grn(x, mask, gamma, beta, eps):
    """GRN over the T axis of (B,T,C), norms over real positions only; padding rows are x."""
    real = (mask != 0).unsqueeze(-1)
    g = torch.linalg.vector_norm(x * real, dim=1, keepdim=True)  # (B,1,C)
    n = g / (g.mean(dim=-1, keepdim=True) + eps)
    return torch.where(real, gamma * (x * n) + beta + x, x)


def grn_grad(x, mask, gamma, beta, dy, eps):
    """dx, dgamma, dbeta given dy, by autograd on the eager forward."""
    x, gamma, beta = (t.detach().requires_grad_() for t in (x, gamma, beta))
    y = grn(x, mask, gamma, beta, eps)
    return torch.autograd.grad(y, (x, gamma, beta), dy)


# ---------------------------------------------------------------- random inputs (never zeros)

def logprob_inputs(n, v, dev, gen):
    x = torch.randn(n, v, generator=gen).mul_(3.0).to(dev)
    targets = torch.randint(0, v, (n,), generator=gen).to(dev)
    dlogp = torch.randn(n, generator=gen).to(dev)
    dentropy = torch.randn(n, generator=gen).to(dev)
    return x, targets, dlogp, dentropy


def uniform_offsets(n, group):
    return torch.arange(0, n + 1, group, dtype=torch.int64)


def advantage_inputs(n, group, dev, gen):
    rewards = torch.rand(n, generator=gen).add_(0.1).to(dev)
    return rewards, uniform_offsets(n, group).to(dev)


def completion_mask(s, l, gen):
    """Right-padded 0/1 mask, lengths uniform in [l/4, l]."""
    lengths = torch.randint(max(1, l // 4), l + 1, (s,), generator=gen)
    return (torch.arange(l).unsqueeze(0) < lengths.unsqueeze(1)).float()


def policy_inputs(s, l, dev, gen):
    logp = -torch.rand(s, l, generator=gen).mul_(4.0).add_(0.01)
    logp_old = logp + 0.15 * torch.randn(s, l, generator=gen)  # ratios around 1, some clipped
    logp_ref = logp + 0.1 * torch.randn(s, l, generator=gen)
    adv = torch.randn(s, generator=gen)
    entropy = torch.rand(s, l, generator=gen).mul_(5.0).add_(0.01)
    mask = completion_mask(s, l, gen)
    return tuple(t.to(dev) for t in (logp, logp_old, logp_ref, adv, entropy, mask))


def grn_mask(b, t, gen):
    """Right padding of 0 .. 2*pad_fraction*T positions per sequence (mean pad_fraction)."""
    pads = torch.randint(0, int(2 * GRN_PAD_FRACTION * t) + 1, (b,), generator=gen)
    return (torch.arange(t).unsqueeze(0) < (t - pads).unsqueeze(1)).float()


def grn_inputs(b, t, c, dev, gen):
    x = torch.randn(b, t, c, generator=gen)
    mask = grn_mask(b, t, gen)
    gamma = 0.5 * torch.randn(c, generator=gen)
    beta = 0.5 * torch.randn(c, generator=gen)
    dy = torch.randn(b, t, c, generator=gen)
    return tuple(v.to(dev) for v in (x, mask, gamma, beta, dy))


# ---------------------------------------------------------------- minimal bytes per op

def logprob_fwd_bytes(n, v):
    return n * v * F32 + n * F32 + 2 * n * F32      # read logits, targets; write logp, entropy


def logprob_bwd_bytes(n, v):
    return n * v * F32 + 3 * n * F32 + n * v * F32  # read logits, targets, dlogp, dH; write dlogits


def advantage_bytes(n, groups):
    return n * F32 + (groups + 1) * F32 + n * F32   # read rewards, offsets; write advantages


def policy_loss_bytes(s, l):
    # read logp, logp_old, logp_ref, entropy, mask (S,L) and advantages (S);
    # write dlogp, dentropy (S,L) and the 16 metrics
    return 5 * s * l * F32 + s * F32 + 2 * s * l * F32 + 16 * F32


def grn_fwd_bytes(b, t, c):
    # read x (B,T,C), mask (B,T), gamma, beta (C); write out (B,T,C), g, n (B,C), mean (B)
    return b * t * c * F32 + b * t * F32 + 2 * c * F32 + b * t * c * F32 + 2 * b * c * F32 + b * F32


def grn_bwd_bytes(b, t, c):
    # read dy, x (B,T,C), mask (B,T), gamma (C), g, n (B,C), mean (B), dgamma, dbeta (C, they
    # accumulate); write dx (B,T,C), dgamma, dbeta (C)
    reads = 2 * b * t * c * F32 + b * t * F32 + c * F32 + 2 * b * c * F32 + b * F32 + 2 * c * F32
    return reads + b * t * c * F32 + 2 * c * F32


def copy_bytes(elems):
    return 2 * elems * F32                           # read src, write dst


# ---------------------------------------------------------------- timing

class Timer:
    """Runs fn over rotating input sets: warm-up, then one timed sample per call (ms)."""

    def __init__(self, dev, warmup, small):
        self.dev, self.warmup = dev, warmup
        self.footprint = ROTATE_FOOTPRINT_SMALL if small else ROTATE_FOOTPRINT
        self.cuda = dev.type == "cuda"

    def copies(self, input_bytes):
        if input_bytes >= ROTATE_BELOW:
            return 1
        return min(MAX_COPIES, -(-self.footprint // max(input_bytes, 1)))

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize(self.dev)

    def time(self, fn, sets, runs):
        for i in range(self.warmup):
            fn(*sets[i % len(sets)])
        self.sync()
        if self.cuda:
            events = []
            for i in range(runs):
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                fn(*sets[(self.warmup + i) % len(sets)])
                end.record()
                events.append((start, end))
            self.sync()
            return [s.elapsed_time(e) for s, e in events]
        times = []
        for i in range(runs):
            t0 = time.perf_counter()
            fn(*sets[(self.warmup + i) % len(sets)])
            times.append((time.perf_counter() - t0) * 1e3)
        return times


def nbytes(tensors):
    return sum(t.numel() * t.element_size() for t in tensors if torch.is_tensor(t))


def input_sets(make, timer, gen):
    """One input set, plus more random copies when it is small enough to sit in the cache."""
    first = make(gen)
    k = timer.copies(nbytes(first))
    return [first] + [make(gen) for _ in range(k - 1)]


def rotation(sets):
    return f"{len(sets)} rotating input sets" if len(sets) > 1 else "1 input set"


def row(op, shape, times, moved, note=""):
    med = statistics.median(times)
    return dict(op=op, shape=shape, runs=len(times), median_ms=med, min_ms=min(times),
                max_ms=max(times), bytes=moved, gbs=moved / med / 1e6, note=note)


def derived_row(op, shape, total, part, moved):
    """A backward from medians: (fwd+bwd) - fwd."""
    med = total["median_ms"] - part["median_ms"]
    return dict(op=op, shape=shape, runs=0, median_ms=med, min_ms=None, max_ms=None, bytes=moved,
                gbs=moved / med / 1e6 if med > 0 else float("nan"),
                note=f"= {total['op']} - {part['op']} (medians)" + ("" if med > 0 else "; noise: fwd+bwd <= fwd"))


# ---------------------------------------------------------------- benchmarks, one per kernel

def bench_copy(sh, timer, gen, a):
    elems = sh["COPY_ELEMS"]
    src = torch.randn(elems, generator=gen).to(timer.dev)
    dst = torch.empty_like(src)
    times = timer.time(lambda s, d: d.copy_(s), [(src, dst)], a.runs_big)
    return [row("copy", f"{elems * F32 >> 20} MiB f32", times, copy_bytes(elems),
                "dst.copy_(src); bytes = read + write")]


def bench_logprob(sh, timer, gen, a):
    n, v, temp = sh["LOGPROB_N"], sh["LOGPROB_V"], a.temperature
    sets = input_sets(lambda g: logprob_inputs(n, v, timer.dev, g), timer, gen)
    shape = f"N={n} V={v} T={temp:g}"
    fb, bb = logprob_fwd_bytes(n, v), logprob_bwd_bytes(n, v)
    runs = a.runs_big if fb > BIG_OP_BYTES else a.runs

    def fwd(x, t, _dl, _dh):
        with torch.no_grad():
            return logprob_entropy(x, t, temp)

    f = row("logprob_fwd", shape, timer.time(fwd, sets, runs), fb, "no_grad")
    fwd_bwd = lambda x, t, dl, dh: logprob_grad(x, t, dl, dh, temp)
    both = row("logprob_fwd+bwd", shape, timer.time(fwd_bwd, sets, runs), fb + bb, "autograd.grad")
    return [f, both, derived_row("logprob_bwd", shape, both, f, bb)]


def bench_advantage(sh, timer, gen, a):
    n, group = sh["ADV_N"], sh["ADV_GROUP"]
    groups = n // group
    sets = input_sets(lambda g: advantage_inputs(n, group, timer.dev, g), timer, gen)
    shape = f"N={n} G={groups}x{group}"
    moved = advantage_bytes(n, groups)
    uni = lambda r, _o: advantage_uniform(r, group, ADV_EPS)
    rag = lambda r, o: advantage_ragged(r, o, "group", ADV_EPS, 0.0)
    return [row("advantage", shape, timer.time(uni, sets, a.runs), moved,
                f"{rotation(sets)}; TRL view/mean/std"),
            row("advantage_ragged", shape, timer.time(rag, sets, a.runs), moved,
                f"{rotation(sets)}; offsets + index_add_")]


def bench_policy_loss(sh, timer, gen, a):
    s, l = sh["POLICY_S"], sh["POLICY_L"]
    sets = input_sets(lambda g: policy_inputs(s, l, timer.dev, g), timer, gen)
    out = []
    for coef in ENTROPY_COEFS:
        p = dict(level="token", eps_low=EPS_LOW, eps_high=EPS_HIGH, beta=KL_BETA,
                 entropy_coef=coef, loss_type=LOSS_TYPE, max_completion_length=l)
        fn = lambda *x, p=p: policy_loss_grad(*x, p)
        out.append(row("policy_loss fwd+bwd", f"S={s} L={l} c_H={coef:g}", timer.time(fn, sets, a.runs),
                       policy_loss_bytes(s, l), f"{rotation(sets)}; {LOSS_TYPE}, token"))
    return out


def bench_grn(sh, timer, gen, a):
    b, t, c = sh["GRN_B"], sh["GRN_T"], sh["GRN_C"]
    sets = input_sets(lambda g: grn_inputs(b, t, c, timer.dev, g), timer, gen)
    pad = 1.0 - sets[0][1].mean().item()
    shape = f"B={b} T={t} C={c}"
    fb, bb = grn_fwd_bytes(b, t, c), grn_bwd_bytes(b, t, c)

    def fwd(x, mask, gamma, beta, _dy):
        with torch.no_grad():
            return grn(x, mask, gamma, beta, GRN_EPS)

    note = f"{rotation(sets)}; pad {pad:.0%}"
    f = row("grn_fwd", shape, timer.time(fwd, sets, a.runs), fb, note + "; no_grad")
    fwd_bwd = lambda x, m, g_, b_, dy: grn_grad(x, m, g_, b_, dy, GRN_EPS)
    both = row("grn_fwd+bwd", shape, timer.time(fwd_bwd, sets, a.runs), fb + bb, note + "; autograd.grad")
    return [f, both, derived_row("grn_bwd", shape, both, f, bb)]


BENCHES = {"logprob": bench_logprob, "advantage": bench_advantage,
           "policy_loss": bench_policy_loss, "grn": bench_grn}


# ---------------------------------------------------------------- float64 references for --check

def ref_logprob(x, targets, dlogp, dentropy, temperature):
    """Row by row from the definitions; the backward is the analytic gradient of logprob.rs."""
    n, v = x.shape
    logp, ent, dx = torch.empty(n, dtype=torch.float64), torch.empty(n, dtype=torch.float64), []
    for i in range(n):
        z = x[i].double() / temperature
        m = z.max()
        log_p = z - m - torch.log(torch.exp(z - m).sum())
        p = torch.exp(log_p)
        h = -(p * log_p).sum()
        t = int(targets[i])
        logp[i], ent[i] = log_p[t], h
        onehot = torch.zeros(v, dtype=torch.float64)
        onehot[t] = 1.0
        gl, gh = float(dlogp[i]), float(dentropy[i])
        dx.append((gl * (onehot - p) - gh * p * (log_p + h)) / temperature)
    return logp, ent, torch.stack(dx)


def ref_mean_std(xs):
    n = len(xs)
    mean = sum(xs) / n
    std = math.sqrt(sum((x - mean) ** 2 for x in xs) / (n - 1)) if n > 1 else 0.0
    return mean, std


def ref_advantage(rewards, sizes, scaling, eps, clip):
    r = [float(v) for v in rewards]
    batch_std = ref_mean_std(r)[1]
    out, start = [], 0
    for size in sizes:
        group = r[start:start + size]
        mean, std = ref_mean_std(group)
        denom = {"group": std + eps, "batch": batch_std + eps, "none": None}[scaling]
        for x in group:
            c = x - mean
            a = c / denom if denom is not None and c != 0.0 else c
            out.append(max(-clip, min(clip, a)) if clip > 0 else a)
        start += size
    return torch.tensor(out, dtype=torch.float64)


def ref_policy_loss(logp, logp_old, logp_ref, adv, entropy, mask, p):
    """Token loops with the analytic gradients of policy_loss.rs; returns loss, dlogp, dentropy."""
    s, l = logp.shape
    lp, lpo, lpr, ent, mk = (t.double().tolist() for t in (logp, logp_old, logp_ref, entropy, mask))
    a_all = adv.double().tolist()
    lo, hi = 1 - p["eps_low"], 1 + p["eps_high"]
    counts = [sum(row) for row in mk]
    total = sum(counts)
    dlp = [[0.0] * l for _ in range(s)]
    dh = [[0.0] * l for _ in range(s)]
    loss = 0.0
    for i in range(s):
        c = {"grpo": 1 / (s * max(counts[i], 1.0)), "bnpo": 1 / max(total, 1.0), "dapo": 1 / max(total, 1.0),
             "dr_grpo": 1 / (s * max(p["max_completion_length"], 1))}[p["loss_type"]]
        a = a_all[i]
        on = [t for t in range(l) if mk[i][t] != 0.0]
        seq_ratio = math.exp(sum(mk[i][t] * (lp[i][t] - lpo[i][t]) for t in on) / max(counts[i], 1.0))
        seq_grad = 0.0
        for t in on:
            w = mk[i][t] * c
            rho = seq_ratio if p["level"] == "sequence" else math.exp(lp[i][t] - lpo[i][t])
            loss += w * -min(rho * a, min(max(rho, lo), hi) * a)
            clipped = (a > 0 and rho > hi) or (a < 0 and rho < lo)
            dsurr = 0.0 if clipped else -rho * a
            if p["level"] == "sequence":
                seq_grad += w * dsurr
            else:
                dlp[i][t] += w * dsurr
            if p["beta"] != 0.0:
                d = lpr[i][t] - lp[i][t]
                loss += w * p["beta"] * (math.exp(d) - d - 1)
                dlp[i][t] += w * p["beta"] * (1 - math.exp(d))
            loss -= w * p["entropy_coef"] * ent[i][t]
            dh[i][t] = -w * p["entropy_coef"]
        for t in on:
            dlp[i][t] += seq_grad / max(counts[i], 1.0) * mk[i][t]
    f64 = lambda v: torch.tensor(v, dtype=torch.float64)
    return f64(loss), f64(dlp), f64(dh)


def ref_grn(x, mask, gamma, beta, dy, eps):
    """Per sequence from grn.rs: forward y, then dx, dgamma, dbeta from its backward formulas."""
    x, mask, gamma, beta, dy = (t.double() for t in (x, mask, gamma, beta, dy))
    b, _, c = x.shape
    y, dx = x.clone(), dy.clone()
    dgamma, dbeta = torch.zeros(c, dtype=torch.float64), torch.zeros(c, dtype=torch.float64)
    for i in range(b):
        real = mask[i] != 0
        xr, dyr = x[i][real], dy[i][real]                 # (R, C)
        g = torch.sqrt((xr * xr).sum(0))
        d = g.mean() + eps
        n = g / d
        y[i][real] = gamma * (xr * n) + beta + xr
        s = (dyr * xr).sum(0)
        dbeta += dyr.sum(0)
        dgamma += n * s
        k = (gamma * s * g).sum()
        dg = gamma * s / d - k / (c * d * d)
        coef = torch.where(g > 0, dg / torch.where(g > 0, g, torch.ones_like(g)), torch.zeros_like(g))
        dx[i][real] = (1 + gamma * n) * dyr + coef * xr
    return y, dx, dgamma, dbeta


# ---------------------------------------------------------------- --check

def max_err(out, ref):
    out, ref = out.detach().double().cpu(), ref.double()
    if not torch.isfinite(out).all():
        return float("inf")
    return ((out - ref).abs().max() / max(1.0, ref.abs().max().item())).item()


def check_logprob(sh, dev, gen, a):
    rows = []
    for temp in sorted({a.temperature, 0.7}):
        x, t, dl, dh = logprob_inputs(sh["LOGPROB_N"], sh["LOGPROB_V"], dev, gen)
        with torch.no_grad():
            logp, ent = logprob_entropy(x, t, temp)
        dx = logprob_grad(x, t, dl, dh, temp)
        r_logp, r_ent, r_dx = ref_logprob(x.cpu(), t.cpu(), dl.cpu(), dh.cpu(), temp)
        case = f"T={temp:g}"
        rows += [("logprob", case, "logp", max_err(logp, r_logp)),
                 ("logprob", case, "entropy", max_err(ent, r_ent)),
                 ("logprob", case, "dlogits", max_err(dx, r_dx))]
    return rows


def ragged_case(gen, dev):
    """Ragged sizes including a singleton and a group of equal rewards (must give exactly 0)."""
    sizes = [8, 3, 1, 5, 8, 2, 8, 7]
    rewards = torch.rand(sum(sizes), generator=gen).add_(0.1)
    rewards[sizes[0]:sizes[0] + sizes[1]] = 0.3
    offsets = torch.tensor([0] + sizes, dtype=torch.int64).cumsum(0)
    return rewards.to(dev), offsets.to(dev), sizes


def check_advantage(sh, dev, gen, _a):
    rows = []
    rewards, offsets, sizes = ragged_case(gen, dev)
    for scaling in ("group", "batch", "none"):
        for eps in (ADV_EPS, 0.0):
            for clip in (0.0, 1.5):
                out = advantage_ragged(rewards, offsets, scaling, eps, clip)
                ref = ref_advantage(rewards.cpu(), sizes, scaling, eps, clip)
                equal = out[sizes[0]:sizes[0] + sizes[1]]
                assert bool((equal == 0).all()), f"equal rewards must give exactly 0, got {equal.tolist()}"
                rows.append(("advantage_ragged", f"{scaling} eps={eps:g} clip={clip:g}", "adv", max_err(out, ref)))
    r, _ = advantage_inputs(sh["ADV_N"], sh["ADV_GROUP"], dev, gen)
    ref = ref_advantage(r.cpu(), [sh["ADV_GROUP"]] * (sh["ADV_N"] // sh["ADV_GROUP"]), "group", ADV_EPS, 0.0)
    rows.append(("advantage", f"group x{sh['ADV_GROUP']}", "adv",
                 max_err(advantage_uniform(r, sh["ADV_GROUP"], ADV_EPS), ref)))
    return rows


def check_policy_loss(sh, dev, gen, _a):
    rows = []
    s, l = sh["POLICY_S"], sh["POLICY_L"]
    for loss_type in ("dapo", "bnpo", "grpo", "dr_grpo"):
        for level in ("token", "sequence"):
            for beta, coef in ((KL_BETA, 0.0), (KL_BETA, 0.01), (0.0, 0.01)):
                x = policy_inputs(s, l, dev, gen)
                p = dict(level=level, eps_low=EPS_LOW, eps_high=EPS_HIGH, beta=beta, entropy_coef=coef,
                         loss_type=loss_type, max_completion_length=l)
                loss, dlp, *dh = policy_loss_grad(*x, p)
                r_loss, r_dlp, r_dh = ref_policy_loss(*(t.cpu() for t in x), p)
                case = f"{loss_type} {level} b={beta:g} c_H={coef:g}"
                rows += [("policy_loss", case, "loss", max_err(loss, r_loss)),
                         ("policy_loss", case, "dlogp", max_err(dlp, r_dlp))]
                if dh:
                    rows.append(("policy_loss", case, "dentropy", max_err(dh[0], r_dh)))
    return rows


def check_grn(sh, dev, gen, _a):
    b, t, c = sh["GRN_B"], sh["GRN_T"], sh["GRN_C"]
    x, mask, gamma, beta, dy = grn_inputs(b + 1, t, c, dev, gen)
    mask[0, t // 2:] = 0.0  # certain padding
    mask[-1] = 0.0          # an all-padding sequence: N = 0, no NaN, passes x through
    with torch.no_grad():
        y = grn(x, mask, gamma, beta, GRN_EPS)
    dx, dgamma, dbeta = grn_grad(x, mask, gamma, beta, dy, GRN_EPS)
    ry, rdx, rdg, rdb = ref_grn(*(v.cpu() for v in (x, mask, gamma, beta, dy)), GRN_EPS)
    case = f"B={b + 1} T={t} C={c} pad={1 - mask.mean().item():.0%}"
    return [("grn", case, "y", max_err(y, ry)), ("grn", case, "dx", max_err(dx, rdx)),
            ("grn", case, "dgamma", max_err(dgamma, rdg)), ("grn", case, "dbeta", max_err(dbeta, rdb))]


CHECKS = {"logprob": check_logprob, "advantage": check_advantage,
          "policy_loss": check_policy_loss, "grn": check_grn}


def run_checks(ops, dev, gen, a):
    sh = shapes(small=True)
    rows = [r for op in ops for r in CHECKS[op](sh, dev, gen, a)]
    print(f"{'op':<18} {'case':<32} {'output':<9} {'max err':>10}")
    for op, case, out, err in rows:
        print(f"{op:<18} {case:<32} {out:<9} {err:>10.2e}{'' if err < CHECK_TOL else '  FAIL'}")
    worst = max(r[3] for r in rows)
    print(f"# {len(rows)} comparisons, worst {worst:.2e} (tolerance {CHECK_TOL:g}; "
          f"err = max|eager - f64 ref| / max(1, max|ref|))")
    assert worst < CHECK_TOL, f"eager differs from the float64 reference by {worst:.2e}"


# ---------------------------------------------------------------- output

def header(dev, sh, a, timing=True):
    lines = [f"# torch_reference  {datetime.datetime.now().isoformat(timespec='seconds')}",
             f"# torch {torch.__version__}  cuda {torch.version.cuda}  device {dev}: {device_name(dev)}",
             f"# timer {'CUDA events' if dev.type == 'cuda' else 'time.perf_counter'}  warmup {a.warmup}  "
             f"runs {a.runs} (ops moving > {BIG_OP_BYTES >> 30} GiB: {a.runs_big})  median reported"
             if timing else "# --check: eager vs float64 references on the small shapes",
             "# shapes " + "  ".join(f"{k}={v}" for k, v in sh.items()),
             f"# policy_loss: {LOSS_TYPE}, token ratio, eps_low {EPS_LOW} eps_high {EPS_HIGH} beta {KL_BETA}; "
             f"advantage: group scaling, eps {ADV_EPS:g}, no clip; grn eps {GRN_EPS:g}"]
    return "\n".join(lines)


def print_table(rows, copy_gbs):
    print(f"{'op':<20} {'shape':<24} {'runs':>4} {'median_ms':>10} {'min_ms':>9} {'MB_moved':>10} "
          f"{'GB/s':>8} {'%copy':>6}  note")
    for r in rows:
        r["frac_copy"] = r["gbs"] / copy_gbs if copy_gbs else None
        mn = f"{r['min_ms']:9.4f}" if r["min_ms"] is not None else f"{'-':>9}"
        runs = r["runs"] if r["runs"] else "-"
        print(f"{r['op']:<20} {r['shape']:<24} {runs:>4} {r['median_ms']:10.4f} {mn} {r['bytes'] / 1e6:10.2f} "
              f"{r['gbs']:8.1f} {100 * r['frac_copy']:5.1f}%  {r['note']}")


def parse_args():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--device", default="cuda", help="cuda (default), cuda:N or cpu")
    ap.add_argument("--small", action="store_true", help="tiny shapes: seconds on a CPU")
    ap.add_argument("--check", action="store_true", help="check eager against float64 references, then exit")
    ap.add_argument("--ops", default=",".join(BENCHES), help=f"comma-separated subset of {','.join(BENCHES)}")
    ap.add_argument("--temperature", type=float, default=1.0)
    ap.add_argument("--warmup", type=int, default=5)
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--runs-big", type=int, default=20, help="timed runs for ops moving more than 1 GiB")
    ap.add_argument("--threads", type=int, default=None, help="CPU threads (torch default if unset)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", metavar="PATH", help="also write the numbers as JSON")
    a = ap.parse_args()
    a.ops = [o.strip() for o in a.ops.split(",") if o.strip()]
    unknown = [o for o in a.ops if o not in BENCHES]
    if unknown:
        ap.error(f"unknown op(s) {unknown}; choose from {list(BENCHES)}")
    if a.warmup < 3 or a.runs < 1 or a.runs_big < 1:
        ap.error("need --warmup >= 3 and at least one timed run")
    return a


def main():
    a = parse_args()
    dev = torch.device(a.device)
    if dev.type == "cuda" and not torch.cuda.is_available():
        sys.exit("CUDA is not available here; run with --device cpu (and --small or --check)")
    if a.threads:
        torch.set_num_threads(a.threads)
    gen = torch.Generator().manual_seed(a.seed)
    if a.check:
        print(header(dev, shapes(small=True), a, timing=False))
        run_checks(a.ops, dev, gen, a)
        return
    sh = shapes(a.small)
    print(header(dev, sh, a), flush=True)
    timer = Timer(dev, a.warmup, a.small)
    copy = bench_copy(sh, timer, gen, a)
    rows = copy + [r for op in a.ops for r in BENCHES[op](sh, timer, gen, a)]
    print_table(rows, copy[0]["gbs"])
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(date=datetime.datetime.now().isoformat(timespec="seconds"), torch=torch.__version__,
                           device=str(dev), device_name=device_name(dev), shapes=sh, warmup=a.warmup,
                           temperature=a.temperature, copy_gbs=copy[0]["gbs"], results=rows), f, indent=2)
        print(f"# wrote {a.json}")


if __name__ == "__main__":
    main()
