#!/usr/bin/env python3
"""bf16 mixed-precision golden references (PyTorch autocast on the CPU), and how far they are
from the float64 references.

What
----
Reuses the committed models and inputs (nothing of ``gen_golden.py``'s or
``gen_objective.py``'s output is regenerated) and writes:

* ``tests/data/golden/<cfg>/golden_bf16.safetensors`` (cfg = a, b): the references of
  ``golden.safetensors`` -- same key names, float32 -- computed with
  ``torch.autocast("cpu", dtype=torch.bfloat16)`` on f32 master weights:
  ``logits`` [B,T,V] (the autocast output, which is bf16, cast to f32), ``loss`` [1],
  ``grad.<name>`` (the f32 master gradients; ``grad.wte.weight`` includes the tied lm_head),
  ``adamw_losses``/``adamw_lrs``/``adamw_grad_norms`` [6] and ``adamw_final.<name>``: the
  6-step AdamW run of ``gen_golden.py`` (same schedule, betas, eps, weight decay groups,
  ``max_grad_norm`` from ``golden.json``), every forward under autocast, backward outside it
  (as PyTorch recommends), ``clip_grad_norm_`` and ``torch.optim.AdamW(foreach=False)`` on
  the f32 master parameters. The inputs stay in ``golden.safetensors`` (``input_ids``,
  ``targets``); they are not repeated.
* ``tests/data/golden/<cfg>/golden_bf16.json``: versions, the autocast settings, which aten
  ops ran in bf16 / f32 in the forward, and the measured distance of every reference above
  from the float64 one in ``golden.safetensors`` (the error metrics of tests/golden_gpt2.rs).
* ``tests/data/objective/cases_bf16.safetensors`` + ``cases_bf16.json``: for the 16 cases of
  ``cases.safetensors`` (inputs read from there), the references ``<name>.logp``,
  ``<name>.entropy``, ``<name>.loss``, ``<name>.grad_hidden``, ``<name>.grad_weight``,
  ``<name>.metrics`` with the bf16 semantics of the Rust mode, and their measured distance
  from the float64 references.

GPT-2 under autocast (what PyTorch does, not what the Rust mode does)
---------------------------------------------------------------------
On the CPU, autocast runs ``addmm`` (every Conv1D, bias included), ``matmul``/``bmm``
(q·kᵀ, p·v) and ``linear`` (the lm_head) with bf16 inputs and a bf16 output (f32
accumulation inside oneDNN); ``softmax``/``log_softmax`` are fp32 ops (the attention
probabilities are computed in f32 and cast back to bf16 by transformers' ``.type(value.dtype)``);
ops without a rule run in their inputs' dtype, so the residual stream and the layer norms
(fed by the f32 residual) are f32 while GELU (tanh, pow, mul, add), the attention scale and
causal mask run on bf16 tensors. The logits are therefore bf16-rounded; the loss
(``cross_entropy``, an fp32 op for CPU autocast, and we cast the logits with ``.float()``
explicitly) is f32. Gradients of the bf16 weight copies are bf16 and are cast into the f32
master ``.grad``. The exact op/dtype list of the forward is recorded in golden_bf16.json
(``forward_ops``). The Rust bf16 mode (src/backend/precision.rs) rounds at fewer places (its
logits, softmax, GELU input/output math are f32), so it should sit *closer* to float64 than
this reference; the measured distances bound what bf16 mixed precision legitimately costs.

Objective (the bf16 semantics of the Rust mode)
------------------------------------------------
``hidden`` and ``weight`` are rounded to bf16 for the product and the product is accumulated
and **kept in f32**: ``logits = hidden.bfloat16().float() @ weight.bfloat16().float().T``.
A bf16×bf16 product is exact in f32, so this equals a bf16 GEMM with f32 accumulation and
an f32 output (up to f32 summation order). Autocast would round these logits to bf16
(``mm`` returns bf16); the Rust mode keeps the lm_head's logits f32 because log-softmax,
the ratios exp(logp - logp_old) and the clip decisions amplify a bf16 rounding of the
logits (~4e-3 relative, i.e. ~1e-2 absolute on logits of a few units) -- the
``autocast_bf16_logits`` diagnostic in cases_bf16.json measures exactly that cost.
Everything after the product (/temperature, log-softmax, entropy, ratios, clipping, KL,
aggregation, metrics) is ``gen_objective.objective`` itself, run on f32 tensors.
Gradients are autograd's to the f32 ``hidden``/``weight`` through the two ``.bfloat16()``
casts: the backward products take the f32 dlogits against the bf16-valued other operand
(f32 accumulation) and the cast's backward rounds each gradient to bf16 -- as autocast
treats the grads of its bf16 copies. Two other placements of the roundings are measured
against this one (``backward_variants`` in the json): bf16 dlogits operand with f32
gradients, and the same with only grad_hidden rounded to bf16 (precision.rs' rule: master
gradients f32, GEMM-facing activation gradients bf16).

Run ``/work/pyenv/bin/python3 tools/golden/gen_golden_bf16.py`` (or any python3 with torch,
transformers, safetensors); deterministic (one thread, fixed seeds), ~10 s.
"""

import argparse
import json
import math
import os
import sys
from collections import defaultdict

import torch
import torch.nn.functional as F
import transformers
from safetensors.torch import load_file, save_file
from torch.utils._python_dispatch import TorchDispatchMode
from transformers import GPT2LMHeadModel

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import gen_golden as gg  # noqa: E402  (lr_at, named_params, IGNORE_INDEX)
import gen_objective as go  # noqa: E402  (objective, S, L, METRIC_NAMES)

REPO_ROOT = os.path.abspath(os.path.join(HERE, "..", ".."))
GOLDEN_DIR = os.path.join(REPO_ROOT, "tests", "data", "golden")
OBJ_DIR = os.path.join(REPO_ROOT, "tests", "data", "objective")

AUTOCAST = dict(device_type="cpu", dtype="bfloat16", enabled=True, cache_enabled=True)


def autocast():
    return torch.autocast("cpu", dtype=torch.bfloat16)


# ---------------------------------------------------------------------------------------
# the error metrics of tests/golden_gpt2.rs and tests/common/objective.rs
# ---------------------------------------------------------------------------------------

def rel_err(a, b, floor):
    """max |a - b| / max(max |b|, floor), on the stored float32 values (computed in f64)."""
    a, b = a.double().reshape(-1), b.double().reshape(-1)
    assert a.shape == b.shape
    scale = max(float(b.abs().max()) if b.numel() else 0.0, floor)
    return float((a - b).abs().max()) / scale


def max_rel(a, b):
    """max_i |a_i - b_i| / |b_i| (losses, grad norms)."""
    a, b = a.double().reshape(-1), b.double().reshape(-1)
    return float(((a - b) / b).abs().max())


def max_abs(a, b):
    return float((a.double() - b.double()).abs().max())


def r3(x):
    return float(f"{x:.3e}")


# ---------------------------------------------------------------------------------------
# GPT-2
# ---------------------------------------------------------------------------------------

class OpDtypes(TorchDispatchMode):
    """Records, for every aten op, the (input float dtypes -> output dtype) combinations."""

    def __init__(self):
        super().__init__()
        self.seen = defaultdict(set)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        name = str(func.overloadpacket.__name__)
        short = {torch.float32: "f32", torch.bfloat16: "bf16", torch.float64: "f64"}

        def dts(x):
            flat = x if isinstance(x, (list, tuple)) else [x]
            return [short[t.dtype] for t in flat if isinstance(t, torch.Tensor)
                    and t.dtype in short]

        ins = ",".join(dts(list(args) + list((kwargs or {}).values())))
        outs = ",".join(dts(out))
        if ins or outs:
            self.seen[name].add(f"{ins}->{outs}")
        return out


def load_model(cfg):
    m = GPT2LMHeadModel.from_pretrained(
        os.path.join(GOLDEN_DIR, cfg, "model"), dtype=torch.float32, attn_implementation="eager")
    m.eval()
    assert m.lm_head.weight is m.transformer.wte.weight, "lm_head must be tied to wte"
    assert all(p.dtype == torch.float32 for p in m.parameters())
    return m


def lm_loss_bf16(model, input_ids, targets):
    with autocast():
        logits = model(input_ids).logits
        V = logits.shape[-1]
        loss = F.cross_entropy(logits.float().reshape(-1, V), targets.reshape(-1),
                               ignore_index=gg.IGNORE_INDEX)
    return logits, loss


def gpt2_case(cfg):
    d = os.path.join(GOLDEN_DIR, cfg)
    ref = load_file(os.path.join(d, "golden.safetensors"))
    with open(os.path.join(d, "golden.json")) as f:
        meta = json.load(f)
    A = meta["adamw"]
    input_ids, targets = ref["input_ids"], ref["targets"]

    # -- logits, loss, gradients --------------------------------------------------------
    model = load_model(cfg)
    params = gg.named_params(model)
    model.zero_grad(set_to_none=True)
    rec = OpDtypes()
    with rec:
        logits, loss = lm_loss_bf16(model, input_ids, targets)
    assert logits.dtype == torch.bfloat16, logits.dtype
    assert loss.dtype == torch.float32, loss.dtype
    loss.backward()
    out = {
        "logits": logits.detach().float().contiguous(),
        "loss": loss.detach().reshape(1).float(),
    }
    for n, p in params:
        assert p.grad.dtype == torch.float32
        out["grad." + n] = p.grad.detach().float().contiguous()
    forward_ops = {k: sorted(v) for k, v in sorted(rec.seen.items())}

    # -- AdamW run (gen_golden.py's loop, autocast forward, f32 master weights) ----------
    model = load_model(cfg)
    params = gg.named_params(model)
    S = A["steps"]
    opt = torch.optim.AdamW(
        [
            {"params": [p for _, p in params if p.ndim >= 2], "weight_decay": A["weight_decay"]},
            {"params": [p for _, p in params if p.ndim < 2], "weight_decay": 0.0},
        ],
        lr=A["max_lr"], betas=tuple(A["betas"]), eps=A["eps"], foreach=False,
    )
    all_params = [p for _, p in params]
    # Coordinates whose gradient was at noise level (non-zero, < 1e-5 of the tensor's max) in
    # some step: tests/golden_gpt2.rs excludes them from the final-parameter comparison.
    noisy = {n: torch.zeros_like(p, dtype=torch.bool) for n, p in params}
    losses, lrs, norms = [], [], []
    for s in range(S):
        opt.zero_grad(set_to_none=True)
        _, l = lm_loss_bf16(model, input_ids, targets)
        l.backward()
        for n, p in params:
            g = p.grad.detach()
            noisy[n] |= (g != 0) & (g.abs() < 1e-5 * g.abs().max())
        total = torch.nn.utils.clip_grad_norm_(all_params, A["max_grad_norm"])
        lr = gg.lr_at(s, S, A["max_lr"], A["min_lr"], A["warmup"])
        for grp in opt.param_groups:
            grp["lr"] = lr
        opt.step()
        losses.append(float(l.detach()))
        lrs.append(lr)
        norms.append(float(total))
    out["adamw_losses"] = torch.tensor(losses, dtype=torch.float32)
    out["adamw_lrs"] = torch.tensor(lrs, dtype=torch.float32)
    out["adamw_grad_norms"] = torch.tensor(norms, dtype=torch.float32)
    for n, p in params:
        out["adamw_final." + n] = p.detach().float().contiguous()

    for k, v in out.items():
        assert v.dtype == torch.float32 and k in ref and v.shape == ref[k].shape, k
        assert torch.isfinite(v).all(), k
    path = os.path.join(d, "golden_bf16.safetensors")
    save_file(out, path, metadata={"format": "pt"})
    os.chmod(path, 0o644)

    # -- distance from the float64 references -------------------------------------------
    grads = {n: r3(rel_err(out["grad." + n], ref["grad." + n], 1e-6)) for n, _ in params}
    # The key bias (the middle third of c_attn.bias) has an exactly zero gradient in exact
    # arithmetic (adding q.b_k to a whole score row leaves the softmax as is): in bf16 its
    # gradient is rounding noise well above the 1e-5 "noisy" threshold, and Adam turns it into
    # +-lr steps of arbitrary sign, so it is reported separately.
    C = model.config.n_embd
    finals, finals_kept, finals_kept_nokb = {}, {}, {}
    for n, _ in params:
        a, b = out["adamw_final." + n], ref["adamw_final." + n]
        finals[n] = r3(rel_err(a, b, 1e-3))
        keep = ~noisy[n]
        finals_kept[n] = r3(rel_err(a[keep], b[keep], 1e-3))
        if n.endswith("attn.c_attn.bias"):
            keep = keep.clone()
            keep[C:2 * C] = False
        finals_kept_nokb[n] = r3(rel_err(a[keep], b[keep], 1e-3))
    kb = [n for n, _ in params if n.endswith("attn.c_attn.bias")]
    kb_ratio = lambda g: float(g[C:2 * C].abs().max()) / float(g.abs().max())
    kb_grad = max(kb_ratio(out["grad." + n]) for n in kb)
    kb_grad_ref = max(kb_ratio(ref["grad." + n]) for n in kb)
    clipped = sum(1 for x in norms if x > A["max_grad_norm"])
    ref_clipped = sum(1 for x in ref["adamw_grad_norms"].tolist() if x > A["max_grad_norm"])
    worst = lambda dct: max(dct.items(), key=lambda kv: kv[1])
    dist = {
        "logits_rel_err": r3(rel_err(out["logits"], ref["logits"], 1.0)),
        "logits_max_abs_err": r3(max_abs(out["logits"], ref["logits"])),
        "loss_rel_err": r3(max_rel(out["loss"], ref["loss"])),
        "grad_rel_err_worst": {"name": worst(grads)[0], "value": worst(grads)[1]},
        "grad_rel_err_median": r3(sorted(grads.values())[len(grads) // 2]),
        "grad_rel_err": grads,
        "adamw_losses_rel_err": r3(max_rel(out["adamw_losses"], ref["adamw_losses"])),
        "adamw_grad_norms_rel_err": r3(max_rel(out["adamw_grad_norms"], ref["adamw_grad_norms"])),
        "adamw_grad_norms_rel_err_per_step": [
            r3(max_rel(out["adamw_grad_norms"][i], ref["adamw_grad_norms"][i])) for i in range(S)],
        "adamw_losses_rel_err_per_step": [
            r3(max_rel(out["adamw_losses"][i], ref["adamw_losses"][i])) for i in range(S)],
        "adamw_lrs_max_abs_err": r3(max_abs(out["adamw_lrs"], ref["adamw_lrs"])),
        "adamw_clipped_steps": [clipped, ref_clipped],
        "adamw_final_rel_err_worst": {"name": worst(finals)[0], "value": worst(finals)[1]},
        "adamw_final_rel_err_worst_excluding_noisy": {
            "name": worst(finals_kept)[0], "value": worst(finals_kept)[1]},
        "adamw_final_rel_err_worst_excluding_noisy_and_key_bias": {
            "name": worst(finals_kept_nokb)[0], "value": worst(finals_kept_nokb)[1]},
        "key_bias_grad_max_over_c_attn_bias_grad_max": {"bf16": r3(kb_grad),
                                                         "f64": r3(kb_grad_ref)},
        "adamw_final_noisy_coordinates": [int(sum(int(v.sum()) for v in noisy.values())),
                                          int(sum(v.numel() for v in noisy.values()))],
        "adamw_final_rel_err": finals,
        "adamw_final_rel_err_excluding_noisy": finals_kept,
        "adamw_final_rel_err_excluding_noisy_and_key_bias": finals_kept_nokb,
    }
    meta_out = {
        "config": cfg,
        "B": int(input_ids.shape[0]),
        "T": int(input_ids.shape[1]),
        "reference": "golden.safetensors (float64 computed, stored f32)",
        "autocast": dict(AUTOCAST, master_weights="float32", attn_implementation="eager",
                         backward="outside autocast",
                         loss="F.cross_entropy(logits.float(), ignore_index=-100)",
                         optimizer="torch.optim.AdamW(foreach=False) on f32 params",
                         num_threads=1),
        "adamw": A,
        "error_metrics": {
            "rel_err": "max|a-b| / max(max|b|, floor)",
            "floors": {"logits": 1.0, "grad": 1e-6, "adamw_final": 1e-3},
            "loss, adamw_losses, adamw_grad_norms": "max |a-b|/|b|",
            "excluding_noisy": "coordinates whose (bf16-run) gradient was non-zero and "
                               "< 1e-5 of its tensor's max in some step are left out, as "
                               "tests/golden_gpt2.rs does",
        },
        "distance_to_f64": dist,
        "values": {
            "loss": float(out["loss"]), "adamw_losses": losses, "adamw_grad_norms": norms,
            "ref_adamw_losses": ref["adamw_losses"].tolist(),
            "ref_adamw_grad_norms": ref["adamw_grad_norms"].tolist(),
        },
        "forward_ops": forward_ops,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    with open(os.path.join(d, "golden_bf16.json"), "w") as f:
        json.dump(meta_out, f, indent=1)
        f.write("\n")

    size = os.path.getsize(path)
    print(f"[{cfg}] loss bf16 {float(out['loss']):.6f} f64 {float(ref['loss']):.6f}; "
          f"clipped {clipped}/{S} (f64 {ref_clipped}/{S}); wrote "
          f"{os.path.relpath(path, REPO_ROOT)} ({size / 1024:.1f} KiB)")
    print(f"[{cfg}] vs f64: logits {dist['logits_rel_err']:.2e} (abs "
          f"{dist['logits_max_abs_err']:.2e}), loss {dist['loss_rel_err']:.2e}, grads worst "
          f"{dist['grad_rel_err_worst']['value']:.2e} ({dist['grad_rel_err_worst']['name']}) "
          f"median {dist['grad_rel_err_median']:.2e}")
    print(f"[{cfg}] vs f64: adamw losses {dist['adamw_losses_rel_err']:.2e}, norms "
          f"{dist['adamw_grad_norms_rel_err']:.2e}, lrs {dist['adamw_lrs_max_abs_err']:.1e}, "
          f"final params worst {dist['adamw_final_rel_err_worst']['value']:.2e} "
          f"({dist['adamw_final_rel_err_worst']['name']}), excluding noisy "
          f"{dist['adamw_final_rel_err_worst_excluding_noisy']['value']:.2e} "
          f"({dist['adamw_final_rel_err_worst_excluding_noisy']['name']}; "
          f"{dist['adamw_final_noisy_coordinates'][0]} of "
          f"{dist['adamw_final_noisy_coordinates'][1]} noisy), also excluding the key "
          f"bias {dist['adamw_final_rel_err_worst_excluding_noisy_and_key_bias']['value']:.2e} "
          f"({dist['adamw_final_rel_err_worst_excluding_noisy_and_key_bias']['name']}); "
          f"key-bias grad {kb_grad:.1e} of its tensor's max (f64 {kb_grad_ref:.1e})")
    print(f"[{cfg}] adamw_losses bf16 " + " ".join(f"{x:.6f}" for x in losses))
    return dist, size


# ---------------------------------------------------------------------------------------
# objective
# ---------------------------------------------------------------------------------------

def bf16(x):
    return x.bfloat16().float()


class Bf16MatmulT(torch.autograd.Function):
    """logits = bf16(h) @ bf16(w).T in f32; backward with a bf16-rounded dlogits operand,
    f32 accumulation and f32 outputs (``round_dh`` additionally rounds dhidden to bf16)."""

    @staticmethod
    def forward(ctx, h, w, round_dh):
        hb, wb = bf16(h), bf16(w)
        ctx.save_for_backward(hb, wb)
        ctx.round_dh = round_dh
        return hb @ wb.T

    @staticmethod
    def backward(ctx, g):
        hb, wb = ctx.saved_tensors
        gb = bf16(g)
        dh = gb @ wb
        if ctx.round_dh:
            dh = bf16(dh)
        return dh, gb.T @ hb, None


def run_objective(case, hp, matmul):
    """gen_objective.objective on f32 tensors with the logits hidden@weight.T produced by
    ``matmul(h, w)``; returns loss, metrics, logp, entropy, grad_h, grad_w, log_w."""
    h = case["hidden"].clone().requires_grad_(True)
    w = case["weight"].clone().requires_grad_(True)
    captured = {}

    class Shim:  # objective() computes `hidden @ weight.T`; hand it our product instead
        def __init__(self, t):
            self.t = t

        def __matmul__(self, other):
            return matmul(h, w)

        @property
        def T(self):
            return self

    loss, metrics, logp, entropy = go.objective(
        Shim(h), Shim(w), case["targets"], case["mask"], case["advantages"],
        case["logp_old"], case["logp_ref"], hp)
    loss.backward()
    captured.update(loss=loss.detach().reshape(1), metrics=torch.tensor(metrics),
                    logp=logp.detach(), entropy=entropy.detach(), grad_hidden=h.grad.detach(),
                    grad_weight=w.grad.detach())
    return captured


def clip_state(logp, case, hp):
    """Per-token log importance weights and which clip branch each token is on."""
    log_ratio = logp.double() - case["logp_old"].double()
    mask = case["mask"].double()
    if hp["level"] == "token":
        log_w = log_ratio
    else:
        log_w = ((log_ratio * mask).sum(-1) / mask.sum(-1).clamp(min=1.0)).unsqueeze(-1)
        log_w = log_w.expand_as(log_ratio)
    lo, hi = math.log(1 - hp["eps_low"]), math.log(1 + hp["eps_high"])
    state = (log_w < lo).int() - (log_w > hi).int()
    on = mask > 0
    margin = float(torch.minimum((log_w - lo).abs(), (log_w - hi).abs())[on].min())
    return state[on], margin


def objective_cases():
    src = load_file(os.path.join(OBJ_DIR, "cases.safetensors"))
    with open(os.path.join(OBJ_DIR, "cases.json")) as f:
        cmeta = json.load(f)
    assert cmeta["metrics"] == go.METRIC_NAMES
    mm_primary = lambda h, w: bf16(h) @ bf16(w).T
    variants = {
        "bf16_dlogits_f32_grads": lambda h, w: Bf16MatmulT.apply(h, w, False),
        "bf16_dlogits_bf16_dhidden_f32_dweight": lambda h, w: Bf16MatmulT.apply(h, w, True),
        "autocast_bf16_logits": lambda h, w: bf16(bf16(h) @ bf16(w).T),
        "f32": lambda h, w: h @ w.T,
    }
    out, per_case, var_runs = {}, [], {vn: [] for vn in variants}
    keys = ["logp", "entropy", "loss", "grad_hidden", "grad_weight", "metrics"]

    def distances(run, ref):
        return {
            "logp_max_abs": r3(max_abs(run["logp"], ref["logp"])),
            "entropy_max_abs": r3(max_abs(run["entropy"], ref["entropy"])),
            "loss_abs": r3(max_abs(run["loss"], ref["loss"])),
            "loss_rel": r3(max_rel(run["loss"], ref["loss"])),
            "metrics_max_abs": r3(max_abs(run["metrics"], ref["metrics"])),
            "grad_hidden_rel_err": r3(rel_err(run["grad_hidden"], ref["grad_hidden"], 1e-6)),
            "grad_weight_rel_err": r3(rel_err(run["grad_weight"], ref["grad_weight"], 1e-6)),
        }

    for m in cmeta["cases"]:
        name = m["name"]
        assert (m["S"], m["L"]) == (go.S, go.L)
        hp = {k: m[k] for k in ["loss_type", "level", "beta", "eps_low", "eps_high",
                                "temperature", "entropy_coef", "max_completion_length"]}
        case = {k: src[f"{name}.{k}"] for k in
                ["hidden", "weight", "targets", "mask", "advantages", "logp_old", "logp_ref"]}
        ref = {k: src[f"{name}.{k}"] for k in keys}
        for k in ["hidden", "weight", "mask", "advantages", "logp_old", "logp_ref"]:
            assert case[k].dtype == torch.float32, k
        run = run_objective(case, hp, mm_primary)
        for k in keys:
            t = run[k].float().contiguous()
            assert t.shape == ref[k].shape and torch.isfinite(t).all(), (name, k)
            out[f"{name}.{k}"] = t
        d = distances(run, ref)
        d["metrics_abs_by_name"] = {
            n: r3(abs(float(a) - float(b)))
            for n, a, b in zip(go.METRIC_NAMES, run["metrics"].tolist(), ref["metrics"].tolist())}
        st_b, margin_b = clip_state(run["logp"], case, hp)
        st_r, margin_r = clip_state(ref["logp"], case, hp)
        d["clip_flips_vs_f64"] = int((st_b != st_r).sum())
        d["min_log_ratio_margin_to_clip_bound"] = r3(margin_b)
        for vn, fn in variants.items():  # only their worst over the cases is written
            vr = run_objective(case, hp, fn)
            var_runs[vn].append((distances(vr, run), distances(vr, ref)))
        per_case.append(dict(name=name, **d))
        print(f"{name:24s} vs f64: logp {d['logp_max_abs']:.1e} H {d['entropy_max_abs']:.1e} "
              f"loss {d['loss_abs']:.1e} metrics {d['metrics_max_abs']:.1e} dh "
              f"{d['grad_hidden_rel_err']:.1e} dW {d['grad_weight_rel_err']:.1e} "
              f"flips {d['clip_flips_vs_f64']} margin {margin_b:.1e}")

    path = os.path.join(OBJ_DIR, "cases_bf16.safetensors")
    save_file(out, path, metadata={"format": "pt"})
    os.chmod(path, 0o644)

    fields = ["logp_max_abs", "entropy_max_abs", "loss_abs", "loss_rel", "metrics_max_abs",
              "grad_hidden_rel_err", "grad_weight_rel_err"]
    worst = {f: max(c[f] for c in per_case) for f in fields}
    worst["clip_flips_vs_f64"] = sum(c["clip_flips_vs_f64"] for c in per_case)
    worst["min_log_ratio_margin_to_clip_bound"] = min(
        c["min_log_ratio_margin_to_clip_bound"] for c in per_case)
    var_worst = {
        vn: {"vs_this": {f: max(r[0][f] for r in runs) for f in fields},
             "vs_f64": {f: max(r[1][f] for r in runs) for f in fields}}
        for vn, runs in var_runs.items()}
    meta = {
        "torch": torch.__version__,
        "inputs": "cases.safetensors (hidden, weight, targets, mask, advantages, logp_old, "
                  "logp_ref); the references here replace logp, entropy, loss, grad_hidden, "
                  "grad_weight, metrics",
        "semantics": {
            "logits": "hidden.bfloat16().float() @ weight.bfloat16().float().T in f32 "
                      "(bf16 operands, f32 accumulation, f32 result; autocast would round "
                      "the result to bf16 -- see variants.autocast_bf16_logits)",
            "after_logits": "gen_objective.objective in f32 (temperature, log_softmax, "
                            "entropy, ratios, clip, KL, aggregation, metrics)",
            "gradients": "autograd to f32 hidden/weight through the .bfloat16() casts: "
                         "backward products f32 dlogits x bf16 operand, f32 accumulation, "
                         "then each gradient rounded to bf16 by the cast's backward",
        },
        "variants": {
            "bf16_dlogits_f32_grads": "dlogits rounded to bf16 as the backward GEMMs' "
                                      "operand, f32 grad_hidden and grad_weight",
            "bf16_dlogits_bf16_dhidden_f32_dweight": "as above, grad_hidden rounded to bf16 "
                                                     "(activation grad), grad_weight f32 "
                                                     "(master grad)",
            "autocast_bf16_logits": "logits rounded to bf16 (what autocast's mm returns)",
            "f32": "plain f32 (no bf16 rounding), for scale",
        },
        "metrics": go.METRIC_NAMES,
        "error_metrics": {
            "*_max_abs, loss_abs": "max |a-b| (tests/common/objective.rs)",
            "grad_*_rel_err": "max|a-b| / max(max|b|, 1e-6)",
        },
        "worst_vs_f64": worst,
        "variants_worst": var_worst,
        "cases": per_case,
    }
    with open(os.path.join(OBJ_DIR, "cases_bf16.json"), "w") as f:
        json.dump(meta, f, indent=1)
        f.write("\n")
    size = os.path.getsize(path)
    print("objective worst vs f64: " + ", ".join(f"{k} {v:.2e}" if isinstance(v, float)
                                                   else f"{k} {v}" for k, v in worst.items()))
    for vn, v in var_worst.items():
        print(f"  variant {vn:38s} vs this: " +
              " ".join(f"{k} {x:.1e}" for k, x in v["vs_this"].items()))
    print(f"wrote {os.path.relpath(path, REPO_ROOT)} ({size / 1024:.1f} KiB)")
    return worst, size


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--configs", default="a,b", help="GPT-2 configs (default a,b; '' = none)")
    ap.add_argument("--no-objective", action="store_true", help="skip the objective cases")
    args = ap.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)  # nothing is random; fixed anyway
    torch.use_deterministic_algorithms(True)
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    total = 0
    for cfg in [c.strip() for c in args.configs.split(",") if c.strip()]:
        _, size = gpt2_case(cfg)
        total += size
    if not args.no_objective:
        _, size = objective_cases()
        total += size
    print(f"safetensors written: {total / 1024:.1f} KiB")


if __name__ == "__main__":
    main()
