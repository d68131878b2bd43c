#!/usr/bin/env python3
"""Golden references for the policy-loss op, computed by TRL itself.

What
----
Calls TRL 1.16's ``GRPOTrainer._compute_loss`` (the installed ``trl`` package, unmodified) on
per-token log-probs and entropies that are leaf tensors, through a minimal stand-in for the
trainer object (the attributes ``_compute_loss`` reads: the loss type and its knobs, the
gradient-accumulation steps, a single-process accelerator). The references are TRL's returned
loss, the autograd gradients d loss / d logp and d loss / d entropy, and TRL's logged metrics
(kl, entropy, clip fractions), for every loss type x importance-sampling level and a set of
cases with TRL's other knobs (delta, top_entropy_quantile, use_bias_correction_kl off,
gradient accumulation, a num_items_in_batch that is not the micro-batch's own token count).

Writes ``tests/data/objective/policy_loss_trl.safetensors`` (per case ``<name>.<tensor>``:
``mask``, ``advantages``, ``logp``, ``logp_old``, ``logp_ref``, ``entropy`` as inputs, and
``loss`` [1], ``dlogp``, ``dentropy`` [S, L], ``metrics`` [5] = kl, entropy, clip_low,
clip_high, entropy_threshold (NaN when top_entropy_quantile = 1) as references) and
``policy_loss_trl.json`` (each case's knobs). Inputs are float32 values; TRL runs in float64 on
them; references are rounded to float32.

How the Rust op's normalisers map onto TRL's (``tests/common/objective.rs`` reads them so):
seq_norm = S * accum (grpo/sapo/luspo/dr_grpo divide by the micro-batch's size and by
``current_gradient_accumulation_steps``), token_norm = num_items_in_batch (here
``steps_per_generation`` = accum and one process, so TRL's dapo/cispo/vespo normaliser is
exactly num_items_in_batch), accum = accum.

Log-ratios near a kink of the loss (clip bounds, delta, cispo's cap) are re-drawn, so float32
rounding in the implementation under test cannot flip a branch.

Run ``/work/pyenv/bin/python tools/golden/gen_policy_loss_trl.py`` (deterministic).
"""

import json
import math
import os
from collections import defaultdict
from types import SimpleNamespace

import torch
from safetensors.torch import save_file
import trl
from trl.trainer.grpo_trainer import GRPOTrainer

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT_DIR = os.path.join(REPO_ROOT, "tests", "data", "objective")
S, L = 4, 7
LOSS_TYPES = ["grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "luspo", "vespo"]


class Accelerator:
    """One process: gathers and reductions are the identity."""

    num_processes = 1
    sync_gradients = True

    def gather(self, x):
        return x

    gather_for_metrics = gather

    def reduce(self, x, reduction="sum"):
        return x

    def pad_across_processes(self, x, dim=0, pad_index=0):
        return x


def trainer(hp, logp, entropy):
    """The attributes of a GRPOTrainer that `_compute_loss` reads."""
    t = SimpleNamespace()
    t.args = SimpleNamespace(
        use_bias_correction_kl=hp["use_bias_correction_kl"],
        delta=hp["delta"],
        sapo_temperature_pos=hp["sapo_temperature_pos"],
        sapo_temperature_neg=hp["sapo_temperature_neg"],
        vespo_k_pos=hp["vespo_k_pos"],
        vespo_lambda_pos=hp["vespo_lambda_pos"],
        vespo_k_neg=hp["vespo_k_neg"],
        vespo_lambda_neg=hp["vespo_lambda_neg"],
        steps_per_generation=hp["accum"],
    )
    t.loss_type = hp["loss_type"]
    t.importance_sampling_level = hp["level"]
    t.epsilon_low, t.epsilon_high = hp["eps_low"], hp["eps_high"]
    t.beta = hp["beta"]
    t.top_entropy_quantile = hp["top_entropy_quantile"]
    t.max_completion_length = hp["max_completion_length"]
    t.current_gradient_accumulation_steps = hp["accum"]
    t.off_policy_mask_threshold = None
    t.use_vllm = False
    t.aux_loss_enabled = False
    t.entropy_coef = hp["entropy_coef"]
    t._entropy_bonus_enabled = hp["entropy_coef"] != 0.0
    t.use_adaptive_entropy = False
    t.model = SimpleNamespace(training=True)
    t.accelerator = Accelerator()
    t._metrics = {"train": defaultdict(list), "eval": defaultdict(list)}
    t.get_gamma_weights = GRPOTrainer.get_gamma_weights
    t.get_high_entropy_mask = GRPOTrainer.get_high_entropy_mask.__get__(t)
    t._get_per_token_logps_and_entropies = lambda *a, **k: (logp, entropy, None)
    return t


def kinks(hp):
    """Ratios where the loss (or a branch TRL takes) changes."""
    k = [1 - hp["eps_low"], 1 + hp["eps_high"]]
    if hp["delta"] is not None:
        k.append(hp["delta"])
    if hp["loss_type"] == "cispo":
        k = [hp["eps_high"]]
    return torch.tensor(k, dtype=torch.float64)


def make_case(idx, hp):
    g = torch.Generator().manual_seed(2000 + idx)
    f32 = lambda t: t.float().double()  # inputs are exactly float32 values
    lengths = [7, 0, 3, 5] if idx % 3 == 2 else [7, 4, 1, 6]
    mask = torch.zeros(S, L, dtype=torch.float64)
    for i, n in enumerate(lengths):
        mask[i, :n] = 1.0
    signs = torch.tensor([1.0, -1.0, -1.0, 1.0], dtype=torch.float64)
    adv = f32(signs * (0.2 + torch.rand(S, generator=g, dtype=torch.float64)))
    logp = f32(-0.3 - 2.0 * torch.rand(S, L, generator=g, dtype=torch.float64))
    entropy = f32(0.5 + 2.0 * torch.rand(S, L, generator=g, dtype=torch.float64))
    noise = hp["noise"]
    for _attempt in range(200):
        # Sequence shifts put sequence ratios past both clips (seq 0: A > 0, ratio high; seq 1:
        # A < 0, ratio low; seq 2: A < 0, ratio high, past delta).
        shift = torch.tensor(hp["shifts"], dtype=torch.float64).unsqueeze(1)
        lr = shift + noise * torch.randn(S, L, generator=g, dtype=torch.float64)
        logp_old = f32(logp - lr)
        lr = logp - logp_old
        vals = lr[mask > 0]
        if hp["level"] == "sequence":
            vals = torch.cat([vals, (lr * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)])
        if (vals.exp().unsqueeze(-1) - kinks(hp)).abs().min() > 5e-3:
            break
    else:
        raise RuntimeError("could not draw log-ratios away from the kinks")
    logp_ref = f32(logp + 0.2 * torch.randn(S, L, generator=g, dtype=torch.float64))
    own_tokens = mask.sum().item()
    num_items = own_tokens * hp["token_factor"]

    lp = logp.clone().requires_grad_(True)
    ent = entropy.clone().requires_grad_(True)
    t = trainer(hp, lp, ent)
    inputs = {
        "prompt_ids": torch.zeros(S, 1, dtype=torch.long),
        "prompt_mask": torch.ones(S, 1, dtype=torch.long),
        "completion_ids": torch.zeros(S, L, dtype=torch.long),
        "completion_mask": mask,
        "advantages": adv,
        "old_per_token_logps": logp_old,
        "ref_per_token_logps": logp_ref,
        "num_items_in_batch": torch.tensor(num_items, dtype=torch.float64),
    }
    loss = GRPOTrainer._compute_loss(t, None, inputs)
    loss.backward()
    m = t._metrics["train"]
    clip_low = m["clip_ratio/low_mean"][0] if "clip_ratio/low_mean" in m else 0.0
    clip_high = m["clip_ratio/high_mean"][0] if "clip_ratio/high_mean" in m else m.get("cispo_clip_ratio", [0.0])[0]
    if hp["top_entropy_quantile"] < 1.0:
        threshold = torch.quantile(entropy.float()[mask.bool()], 1 - hp["top_entropy_quantile"]).item()
    else:
        threshold = float("nan")
    metrics = [m["kl"][0] if hp["beta"] != 0.0 else 0.0, m["entropy"][0], clip_low, clip_high, threshold]
    name = hp["name"]
    tensors = {
        "mask": mask,
        "advantages": adv,
        "logp": logp,
        "logp_old": logp_old,
        "logp_ref": logp_ref,
        "entropy": entropy,
        "loss": loss.detach().reshape(1),
        "dlogp": lp.grad,
        # No entropy bonus: the entropies do not reach the loss.
        "dentropy": ent.grad if ent.grad is not None else torch.zeros_like(entropy),
        "metrics": torch.tensor(metrics, dtype=torch.float64),
    }
    out = {f"{name}.{k}": v.detach().to(torch.float32).contiguous() for k, v in tensors.items()}
    meta = {k: v for k, v in hp.items() if k not in ("noise", "shifts", "token_factor")}
    meta.update(S=S, L=L, num_items_in_batch=num_items)
    print(f"{name:32s} loss {loss.item(): .6f} kl {metrics[0]:.4f} clip {clip_low:.3f}/{clip_high:.3f} "
          f"threshold {threshold:.4f} |dlogp| {lp.grad.abs().max().item():.3e}")
    return meta, out


def cases():
    base = dict(
        beta=0.04,
        use_bias_correction_kl=True,
        eps_low=0.2,
        eps_high=0.28,
        delta=None,
        entropy_coef=0.01,
        top_entropy_quantile=1.0,
        accum=1,
        token_factor=1.0,
        max_completion_length=L + 2,
        sapo_temperature_pos=1.0,
        sapo_temperature_neg=1.05,
        vespo_k_pos=2.0,
        vespo_lambda_pos=3.0,
        vespo_k_neg=3.0,
        vespo_lambda_neg=2.0,
        shifts=[0.4, -0.4, 0.45, 0.0],
        noise=0.25,
    )
    out = []

    def add(name, **kw):
        hp = dict(base, **kw)
        if hp["loss_type"] == "cispo" and "eps_high" not in kw:
            hp["eps_high"] = 1.2  # puts ratios on both sides of cispo's cap
        if hp["loss_type"] == "vespo":
            # Nearly on-policy: the gamma weight of a sum of 7 log-ratios is then O(1).
            hp.update(shifts=[0.05, -0.05, 0.0, 0.0], noise=0.05)
        out.append(dict(hp, name=name))

    for lt in LOSS_TYPES:
        for level in ["token", "sequence"]:
            add(f"{lt}_{level}", loss_type=lt, level=level)
    # TRL's other knobs.
    add("grpo_token_knobs", loss_type="grpo", level="token", delta=1.4, top_entropy_quantile=0.6, accum=2,
        use_bias_correction_kl=False)
    add("dapo_sequence_knobs", loss_type="dapo", level="sequence", delta=1.4, top_entropy_quantile=0.3, accum=3,
        token_factor=2.5)
    add("bnpo_token_knobs", loss_type="bnpo", level="token", top_entropy_quantile=0.5, accum=2, delta=1.3)
    add("luspo_sequence_knobs", loss_type="luspo", level="sequence", accum=2, delta=1.2)
    add("cispo_token_knobs", loss_type="cispo", level="token", top_entropy_quantile=0.5, accum=2, token_factor=3.0)
    add("sapo_sequence_knobs", loss_type="sapo", level="sequence", accum=2, top_entropy_quantile=0.7,
        sapo_temperature_pos=0.8, sapo_temperature_neg=1.3)
    add("vespo_token_knobs", loss_type="vespo", level="token", accum=2, top_entropy_quantile=0.4, token_factor=1.7,
        vespo_k_pos=1.5, vespo_lambda_pos=2.0, vespo_k_neg=2.5, vespo_lambda_neg=1.0)
    add("dr_grpo_sequence_knobs", loss_type="dr_grpo", level="sequence", accum=2, top_entropy_quantile=0.5,
        use_bias_correction_kl=False, beta=0.1)
    add("dapo_token_nokl", loss_type="dapo", level="token", beta=0.0, entropy_coef=0.0)
    return out


def main():
    torch.set_num_threads(1)
    torch.use_deterministic_algorithms(True)
    metas, tensors = [], {}
    for idx, hp in enumerate(cases()):
        meta, t = make_case(idx, hp)
        metas.append(meta)
        tensors.update(t)
    path = os.path.join(OUT_DIR, "policy_loss_trl.safetensors")
    save_file(tensors, path, metadata={"format": "pt"})
    os.chmod(path, 0o644)
    with open(os.path.join(OUT_DIR, "policy_loss_trl.json"), "w") as f:
        json.dump(
            dict(trl=trl.__version__, torch=torch.__version__,
                 metrics=["kl", "entropy", "clip_low", "clip_high", "entropy_threshold"], cases=metas),
            f,
            indent=1,
        )
        f.write("\n")


if __name__ == "__main__":
    main()
