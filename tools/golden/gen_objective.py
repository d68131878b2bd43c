#!/usr/bin/env python3
"""Golden reference data for the chunked DAPO / GRPO objective (src/rl/objective.rs).

What
----
Writes ``tests/data/objective/cases.safetensors`` and ``tests/data/objective/cases.json``:
one small case for every loss_type (grpo, bnpo, dr_grpo, dapo) x importance-sampling level
(token, sequence) x (beta != 0, beta = 0) -- 16 cases. Each case is a fused-linear policy
loss over S=4 sequences of L=7 completion tokens with ragged masks (one case family has an
all-padding sequence), hidden size C=16 and an odd vocabulary V=37. Half the cases use a
sampling temperature != 1 and half an entropy coefficient != 0.

Per case ``<name>`` the safetensors file holds (float32 unless noted; every reference is
computed in float64 from the float32 inputs and rounded to float32):

* inputs: ``<name>.hidden`` [N,C], ``<name>.weight`` [V,C], ``<name>.targets`` [N] int64,
  ``<name>.mask`` [S,L], ``<name>.advantages`` [S], ``<name>.logp_old`` [S,L],
  ``<name>.logp_ref`` [S,L];
* references: ``<name>.logp`` [S,L] and ``<name>.entropy`` [S,L] (the tempered policy's
  log-prob of each target and its entropy), ``<name>.loss`` [1], ``<name>.grad_hidden``
  [N,C], ``<name>.grad_weight`` [V,C] (autograd), ``<name>.metrics`` [10] = loss,
  policy_loss, kl, entropy, clip_frac_low, clip_frac_high, ratio_mean, ratio_min, ratio_max,
  tokens (masked means over completion tokens).

``cases.json`` lists each case's hyper-parameters and shapes, plus the torch version.

Loss definitions (TRL's GRPOTrainer ``_compute_loss``, re-implemented here; TRL itself is
not needed):

    logits   = hidden @ weight.T / temperature
    logp     = log_softmax(logits)[target];  entropy = -(p * log p).sum(-1)
    log_ratio = logp - logp_old
    token:    w = log_ratio;  sequence (GSPO): w = (log_ratio*mask).sum(-1)/mask.sum(-1).clamp(min=1), broadcast
    coef_1 = exp(w);  coef_2 = clamp(coef_1, 1-eps_low, 1+eps_high)
    per_token = -min(coef_1*A, coef_2*A)
              + beta * (exp(ref-logp) - (ref-logp) - 1)      (only if beta != 0; no
                                                              use_bias_correction_kl)
    grpo:        ((per_token*mask).sum(-1) / mask.sum(-1).clamp(min=1)).mean()
    bnpo, dapo:  (per_token*mask).sum() / mask.sum().clamp(min=1)
    dr_grpo:     (per_token*mask).sum() / (S * max_completion_length), max_completion_length = L
    loss = aggregate(per_token) - entropy_coef * (entropy*mask).sum() / mask.sum().clamp(min=1)
                                                 (TRL 1.16: the bonus is a token mean whatever
                                                  the loss type)

Metrics as TRL 1.16 logs them: the clip fractions are masked token means at token level and
means over the S sequences of one flag per sequence at sequence level (``global_masked_mean``
of a (B, 1) tensor).

logp_old is the current log-prob minus N(0, 0.3^2) noise (token level) or minus a
per-sequence shift plus N(0, 0.2^2) noise (sequence level), so ratios cross both clip bounds; draws that put any ratio (token or sequence) within 2e-3 (in log space) of a clip
bound are re-drawn, so float32 rounding in the implementation under test cannot flip a
clipping decision.

Run ``python3 tools/golden/gen_objective.py`` (deterministic: fixed seeds, one thread).
"""

import json
import math
import os

import torch
from safetensors.torch import save_file

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT_DIR = os.path.join(REPO_ROOT, "tests", "data", "objective")

S, L, C, V = 4, 7, 16, 37
LOSS_TYPES = ["grpo", "bnpo", "dr_grpo", "dapo"]
LEVELS = ["token", "sequence"]
BETAS = [0.04, 0.0]
METRIC_NAMES = [
    "loss",
    "policy_loss",
    "kl",
    "entropy",
    "clip_frac_low",
    "clip_frac_high",
    "ratio_mean",
    "ratio_min",
    "ratio_max",
    "tokens",
]


def masked_mean(x, mask):
    return (x * mask).sum() / mask.sum().clamp(min=1.0)


def objective(hidden, weight, targets, mask, adv, logp_old, logp_ref, hp):
    """TRL-style loss; returns (loss, metrics list, logp, entropy)."""
    logits = hidden @ weight.T / hp["temperature"]
    logps_all = torch.log_softmax(logits, dim=-1)
    logp = logps_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1).view(S, L)
    entropy = -(logps_all.exp() * logps_all).sum(-1).view(S, L)

    log_ratio = logp - logp_old
    if hp["level"] == "token":
        log_w = log_ratio
    else:
        log_w = ((log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).unsqueeze(-1)
    coef_1 = torch.exp(log_w)
    coef_2 = torch.clamp(coef_1, 1 - hp["eps_low"], 1 + hp["eps_high"])
    a = adv.unsqueeze(1)
    surrogate = -torch.min(coef_1 * a, coef_2 * a)
    per_token = surrogate
    kl = None
    if hp["beta"] != 0.0:
        d = logp_ref - logp
        kl = torch.exp(d) - d - 1
        per_token = per_token + hp["beta"] * kl

    def aggregate(x):
        lt = hp["loss_type"]
        if lt == "grpo":
            return ((x * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).mean()
        if lt in ("bnpo", "dapo"):
            return (x * mask).sum() / mask.sum().clamp(min=1.0)
        if lt == "dr_grpo":
            return (x * mask).sum() / (x.size(0) * hp["max_completion_length"])
        raise ValueError(lt)

    loss = aggregate(per_token) - hp["entropy_coef"] * masked_mean(entropy, mask)
    with torch.no_grad():
        ratio = coef_1.expand(S, L)
        on = mask > 0
        low = ((coef_1 < 1 - hp["eps_low"]) & (a < 0)).double()
        high = ((coef_1 > 1 + hp["eps_high"]) & (a > 0)).double()

        def clip_mean(x):
            # TRL's global_masked_mean: a (B, 1) tensor is averaged over the B sequences.
            return x.mean() if x.shape[1] == 1 else masked_mean(x, mask)

        metrics = [
            loss.item(),
            aggregate(surrogate).item(),
            masked_mean(kl, mask).item() if kl is not None else 0.0,
            masked_mean(entropy, mask).item(),
            clip_mean(low).item(),
            clip_mean(high).item(),
            masked_mean(ratio, mask).item(),
            ratio[on].min().item(),
            ratio[on].max().item(),
            mask.sum().item(),
        ]
    return loss, metrics, logp, entropy


def near_bound(log_r, mask, hp, level):
    bounds = torch.tensor([math.log(1 - hp["eps_low"]), math.log(1 + hp["eps_high"])], dtype=torch.float64)
    if level == "token":
        vals = log_r[mask > 0]
    else:
        vals = (log_r * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)
    return bool(((vals.unsqueeze(-1) - bounds).abs() < 2e-3).any())


def make_case(idx, loss_type, level, beta):
    hp = dict(
        loss_type=loss_type,
        level=level,
        beta=beta,
        eps_low=0.2,
        eps_high=0.2 if loss_type == "grpo" else 0.28,
        temperature=0.7 if idx % 2 == 0 else 1.0,
        entropy_coef=0.01 if idx % 4 in (1, 2) else 0.0,
        max_completion_length=L,
    )
    g = torch.Generator().manual_seed(1000 + idx)
    f32 = lambda t: t.float().double()  # inputs are exactly float32 values
    hidden = f32(torch.randn(S * L, C, generator=g, dtype=torch.float64))
    weight = f32(0.3 * torch.randn(V, C, generator=g, dtype=torch.float64))
    targets = torch.randint(0, V, (S * L,), generator=g)
    lengths = [7, 0, 3, 5] if idx % 4 == 3 else [7, 4, 1, 5]
    mask = torch.zeros(S, L, dtype=torch.float64)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1.0
    signs = torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64)
    adv = f32(signs * (0.2 + torch.rand(S, generator=g, dtype=torch.float64)))
    with torch.no_grad():
        logits = hidden @ weight.T / hp["temperature"]
        logp_now = torch.log_softmax(logits, -1).gather(-1, targets.unsqueeze(-1)).view(S, L)
    for _attempt in range(100):
        # Sequence level: per-sequence shifts so that sequence ratios reach both clip
        # bounds (seq 0 has A > 0 and ratio > 1 + eps_high, seq 1 A < 0 and ratio < 1 - eps_low).
        if level == "token":
            noise = 0.3 * torch.randn(S, L, generator=g, dtype=torch.float64)
        else:
            shift = torch.tensor([0.3, -0.35, 0.0, 0.0], dtype=torch.float64).unsqueeze(1)
            noise = shift + 0.2 * torch.randn(S, L, generator=g, dtype=torch.float64)
        logp_old = f32(logp_now - noise)
        if not near_bound(logp_now - logp_old, mask, hp, level):
            break
    else:
        raise RuntimeError("could not draw logp_old away from the clip bounds")
    logp_ref = f32(logp_now + 0.2 * torch.randn(S, L, generator=g, dtype=torch.float64))

    h = hidden.clone().requires_grad_(True)
    w = weight.clone().requires_grad_(True)
    loss, metrics, logp, entropy = objective(h, w, targets, mask, adv, logp_old, logp_ref, hp)
    loss.backward()
    name = f"{loss_type}_{level}_{'kl' if beta else 'nokl'}"
    tensors = {
        "hidden": hidden,
        "weight": weight,
        "targets": targets.to(torch.int64),
        "mask": mask,
        "advantages": adv,
        "logp_old": logp_old,
        "logp_ref": logp_ref,
        "logp": logp.detach(),
        "entropy": entropy.detach(),
        "loss": loss.detach().reshape(1),
        "grad_hidden": h.grad,
        "grad_weight": w.grad,
        "metrics": torch.tensor(metrics, dtype=torch.float64),
    }
    out = {}
    for k, t in tensors.items():
        t = t.detach()
        out[f"{name}.{k}"] = (t if t.dtype == torch.int64 else t.to(torch.float32)).contiguous()
    meta = dict(name=name, S=S, L=L, C=C, V=V, lengths=lengths, **hp)
    print(
        f"{name:24s} loss {metrics[0]: .6f} clip_low {metrics[4]:.3f} clip_high {metrics[5]:.3f} "
        f"ratio [{metrics[7]:.3f}, {metrics[8]:.3f}] |dW| {w.grad.abs().max().item():.3e}"
    )
    return meta, out


def main():
    torch.set_num_threads(1)
    os.makedirs(OUT_DIR, exist_ok=True)
    metas, tensors = [], {}
    idx = 0
    for loss_type in LOSS_TYPES:
        for level in LEVELS:
            for beta in BETAS:
                meta, t = make_case(idx, loss_type, level, beta)
                metas.append(meta)
                tensors.update(t)
                idx += 1
    path = os.path.join(OUT_DIR, "cases.safetensors")
    save_file(tensors, path, metadata={"format": "pt"})
    os.chmod(path, 0o644)
    with open(os.path.join(OUT_DIR, "cases.json"), "w") as f:
        json.dump(dict(torch=torch.__version__, metrics=METRIC_NAMES, cases=metas), f, indent=1)
        f.write("\n")


if __name__ == "__main__":
    main()
