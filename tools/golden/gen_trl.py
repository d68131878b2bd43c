#!/usr/bin/env python3
"""Golden data from TRL's own GRPOTrainer, for the whole DAPO update (tests/trl_parity.rs).

What
----
A tiny GPT-2 (``tests/data/trl/model``: vocab 97 with the crate's character tokenizer, 2
layers, C = 8) and one fixed batch: 3 prompts of equal length x 4 completions each, with
ragged completion lengths -- some end with ``<|endoftext|>`` (id 0) mid-way, one is only the
end token, some reach ``max_completion_length`` = 6 without it (truncated) -- and two reward
functions (weights 1.0 and 0.5; one group's rewards are all equal). For every case below this
script runs **TRL's GRPOTrainer itself** (``trainer.train()`` with a ``rollout_func`` that
returns the fixed completions and reward functions that return the fixed rewards) and records
what TRL computed:

* ``advantages`` (TRL's ``_generate_and_score_completions``);
* the order in which TRL's shuffled micro-batches visited the sequences;
* per optimizer step: the loss (sum over the accumulated micro-batches), the gradient norm
  before clipping, and TRL's logged metrics (kl, entropy, clip ratios);
* every parameter's gradient before clipping at the first optimizer step;
* every parameter after the last optimizer step (AdamW, constant learning rate, clipping at 1).

The cases cover every ``loss_type`` of the installed TRL (grpo, bnpo, dr_grpo, dapo, cispo,
sapo, luspo, vespo) at both importance-sampling levels, beta 0 and 0.04, ``num_iterations`` 1
and 2, ``scale_rewards`` group/batch/none, ``mask_truncated_completions``, two-sided clipping
``delta``, ``top_entropy_quantile``, the entropy bonus, ``use_bias_correction_kl`` on and off,
gradient accumulation (``gradient_accumulation_steps`` 2) and two optimizer steps per
generation (``steps_per_generation`` 2), and a temperature != 1.

Knobs TRL does not have are written out here in PyTorch autograd from their source, on the same
model and batch, with TRL's advantages:

* verl's dual clip ``clip_ratio_c`` (verl/trainer/ppo/core_algos.py, ``compute_policy_loss``:
  for A < 0 the clipped surrogate is bounded by -A*c);
* verl's KL estimators (core_algos.py ``kl_penalty``): ``kl`` (k1: logp - ref), ``mse`` (k2:
  0.5 (logp - ref)^2) and ``low_var_kl`` (k3, Schulman's estimator, as TRL's),
  added as beta x token-mean, without the importance-ratio correction.

All prompts have the same length because TRL's forward pass left-pads prompts without
position ids: on GPT-2 (absolute positions) a left-padded prompt would be scored at shifted
positions, a TRL/transformers quirk, not a semantics to match.

Run ``python3 tools/golden/gen_trl.py`` (deterministic: fixed seeds, one CPU thread). It needs
the pinned versions in ``tools/golden/requirements-trl.txt``
(``pip install -r tools/golden/requirements-trl.txt``); it checks them and refuses others.
"""

import argparse
import copy
import json
import math
import os
import shutil
import sys
import tempfile

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import torch  # noqa: E402
import transformers  # noqa: E402
import trl  # noqa: E402
from datasets import Dataset  # noqa: E402
from safetensors.torch import save_file  # noqa: E402
from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast  # noqa: E402
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
OUT_DIR = os.path.join(REPO_ROOT, "tests", "data", "trl")
TOKENIZER = os.path.join(REPO_ROOT, "tests", "data", "judge", "tokenizer.json")
PINNED = {"trl": "1.16.0", "transformers": "4.57.6", "torch": "2.15.0"}

EOS = 0
G = 4
MAX_LEN = 6
PROMPTS = ["12+3=", "40+5=", "7+81="]
# Completions as text; "$" is <|endoftext|>. Group 0: ragged, two stop mid-way; group 1: the
# bare end token and a truncated one; group 2: all truncated but one (its rewards are equal).
COMPLETIONS = [
    ["15$", "16;0$", "1+2=3;", "15;15;"],
    ["$", "45$", "4+5=9;", "46$"],
    ["88$", "8+7=15", "88;88;", "81+7=8"],
]
REWARDS = [  # (r1, r2) per completion, weights 1.0 and 0.5
    [(1.0, 0.2), (0.0, 0.9), (0.0, 0.3), (1.0, 0.0)],
    [(0.0, 0.0), (1.0, 0.5), (0.0, 1.0), (0.0, 0.4)],
    [(1.0, 0.0), (1.0, 0.0), (1.0, 0.0), (1.0, 0.0)],
]
WEIGHTS = [1.0, 0.5]
LR = 0.003


def check_versions():
    got = {"trl": trl.__version__, "transformers": transformers.__version__, "torch": torch.__version__.split("+")[0]}
    bad = {k: v for k, v in got.items() if v != PINNED[k]}
    if bad:
        sys.exit(f"gen_trl.py needs {PINNED}, found {got}: pip install -r tools/golden/requirements-trl.txt")
    return got


def tokenizer():
    return PreTrainedTokenizerFast(tokenizer_file=TOKENIZER, eos_token="<|endoftext|>", pad_token="<|endoftext|>")


def encode(tok, text):
    ids = []
    for part in text.split("$"):
        ids.extend(tok.encode(part, add_special_tokens=False))
        ids.append(EOS)
    return ids[:-1]  # the split leaves one end token too many


def build_model(seed=7):
    cfg = GPT2Config(
        vocab_size=97, n_positions=32, n_embd=8, n_head=2, n_layer=2, activation_function="gelu_new",
        resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, bos_token_id=EOS, eos_token_id=EOS, pad_token_id=EOS,
    )
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ln" in name and name.endswith("weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif name.endswith("bias"):
                p.copy_(0.1 * torch.randn_like(p))
            elif "wte" in name:
                # Peaked distributions, so the entropy quantile and the clip bounds both bite.
                p.copy_(0.8 * torch.randn_like(p))
            else:
                p.copy_(0.3 * torch.randn_like(p))
    return model


def short_name(name):
    return name[len("transformer."):] if name.startswith("transformer.") else name


def params_of(model):
    return {short_name(n): p for n, p in model.named_parameters() if n != "lm_head.weight"}


def flat_batch(tok):
    prompts, comps, rewards = [], [], []
    for p, cs, rs in zip(PROMPTS, COMPLETIONS, REWARDS):
        for c, r in zip(cs, rs):
            prompts.append(tok.encode(p, add_special_tokens=False))
            comps.append(encode(tok, c))
            rewards.append(r)
    for c in comps:
        assert 1 <= len(c) <= MAX_LEN, c
    assert len({tuple(p + c) for p, c in zip(prompts, comps)}) == len(comps), "sequences must be distinct"
    return prompts, comps, rewards


def trl_cases():
    cases = []

    def add(name, **kw):
        base = dict(loss_type="dapo", importance_sampling_level="token", beta=0.0, num_iterations=1,
                    scale_rewards="group", mask_truncated_completions=False, epsilon=0.2, epsilon_high=0.28,
                    delta=None, top_entropy_quantile=1.0, entropy_coef=0.0, use_bias_correction_kl=True,
                    temperature=1.0, per_device_train_batch_size=12, gradient_accumulation_steps=1,
                    steps_per_generation=1)
        base.update(kw)
        # Single-pass cases train on the batch twice (two generations of the same completions),
        # so the second update sees a policy that differs from the reference: the KL term, the
        # estimator and the importance-sampling level then matter, as they do not at step 1.
        base.setdefault("generations", 1 if base["num_iterations"] > 1 else 2)
        cases.append(dict(name=name, **base))

    for lt in ["grpo", "bnpo", "dr_grpo", "dapo", "cispo", "sapo", "luspo", "vespo"]:
        eh = 5.0 if lt == "cispo" else 0.28
        for level in ["token", "sequence"]:
            for beta in [0.0, 0.04]:
                add(f"{lt}_{level}_beta{beta}", loss_type=lt, importance_sampling_level=level, beta=beta,
                    epsilon_high=eh)
        # Two passes over the batch: the second one sees ratios away from 1.
        # cispo's cap at TRL's recommended 5 is never reached here; 1.2 makes it bite.
        add(f"{lt}_mu2", loss_type=lt, importance_sampling_level="sequence" if lt == "luspo" else "token",
            beta=0.04, num_iterations=2, epsilon_high=1.2 if lt == "cispo" else eh)
    add("dapo_scale_batch", scale_rewards="batch")
    add("dapo_scale_none", scale_rewards="none")
    add("grpo_scale_none_mu2", loss_type="grpo", scale_rewards="none", num_iterations=2)
    add("dapo_mask_truncated", mask_truncated_completions=True, beta=0.04)
    add("grpo_mask_truncated_mu2", loss_type="grpo", mask_truncated_completions=True, num_iterations=2)
    add("dapo_delta_mu2", delta=1.05, num_iterations=2)
    add("dapo_top_entropy", top_entropy_quantile=0.3)
    add("grpo_top_entropy_mu2", loss_type="grpo", top_entropy_quantile=0.5, num_iterations=2)
    add("dapo_entropy_bonus", entropy_coef=0.05)
    add("grpo_entropy_bonus_mu2", loss_type="grpo", entropy_coef=0.05, num_iterations=2, beta=0.04)
    add("dapo_no_kl_correction_mu2", beta=0.04, use_bias_correction_kl=False, num_iterations=2)
    add("grpo_seq_no_kl_correction", loss_type="grpo", importance_sampling_level="sequence", beta=0.04,
        use_bias_correction_kl=False)
    add("dapo_temperature", temperature=0.7, beta=0.04)
    for lt in ["dapo", "bnpo", "grpo", "dr_grpo"]:
        add(f"{lt}_accum2", loss_type=lt, per_device_train_batch_size=6, gradient_accumulation_steps=2,
            steps_per_generation=2, beta=0.04, entropy_coef=0.05)
    for lt in ["dapo", "grpo"]:
        add(f"{lt}_two_steps", loss_type=lt, per_device_train_batch_size=6, gradient_accumulation_steps=1,
            steps_per_generation=2, beta=0.04)
    return cases


def run_trl(case, model_dir, tok, prompts, comps, rewards, workdir):
    torch.manual_seed(0)
    model = GPT2LMHeadModel.from_pretrained(model_dir, torch_dtype=torch.float32)
    ga, spg, gens = case["gradient_accumulation_steps"], case["steps_per_generation"], case["generations"]
    mu = case["num_iterations"]
    steps = gens * mu * (spg // ga)
    args = GRPOConfig(
        output_dir=workdir, per_device_train_batch_size=case["per_device_train_batch_size"],
        gradient_accumulation_steps=ga, steps_per_generation=spg, num_generations=G,
        max_completion_length=MAX_LEN, temperature=case["temperature"], loss_type=case["loss_type"],
        importance_sampling_level=case["importance_sampling_level"], beta=case["beta"],
        epsilon=case["epsilon"], epsilon_high=case["epsilon_high"], delta=case["delta"],
        num_iterations=case["num_iterations"], scale_rewards=case["scale_rewards"],
        mask_truncated_completions=case["mask_truncated_completions"],
        top_entropy_quantile=case["top_entropy_quantile"], entropy_coef=case["entropy_coef"],
        use_bias_correction_kl=case["use_bias_correction_kl"], learning_rate=LR, lr_scheduler_type="constant",
        warmup_steps=0, max_grad_norm=1.0, weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8,
        max_steps=steps, logging_steps=1, report_to=[], save_strategy="no", bf16=False, fp16=False, use_cpu=True,
        shuffle_dataset=False, seed=0, gradient_checkpointing=False, disable_dropout=True, reward_weights=WEIGHTS,
        dataloader_num_workers=0, log_completions=False,
    )
    seqs = {}
    for i, (p, c) in enumerate(zip(prompts, comps)):
        seqs.setdefault(tuple(p), []).append(i)

    def rollout(batch_prompts, trainer):
        taken = {}
        pids, cids, idx = [], [], []
        for text in batch_prompts:
            p = tuple(tok.encode(text, add_special_tokens=False))
            k = taken.get(p, 0)
            taken[p] = k + 1
            i = seqs[p][k]
            pids.append(list(p))
            cids.append(comps[i])
            idx.append(i)
        return {"prompt_ids": pids, "completion_ids": cids, "logprobs": [[0.0] * len(c) for c in cids],
                "r1": [rewards[i][0] for i in idx], "r2": [rewards[i][1] for i in idx]}

    def reward_r1(prompts, completions, r1, **kw):
        return r1

    def reward_r2(prompts, completions, r2, **kw):
        return r2

    ds = Dataset.from_dict({"prompt": PROMPTS})
    trainer = GRPOTrainer(model=model, reward_funcs=[reward_r1, reward_r2], args=args, train_dataset=ds,
                          processing_class=tok, rollout_func=rollout)
    rec = {"advantages": [], "micro": [], "grads": None, "norms": []}
    gen = trainer._generate_and_score_completions

    def gen_wrap(inputs):
        out = gen(inputs)
        rec["advantages"].append(out["advantages"].tolist())
        return out

    trainer._generate_and_score_completions = gen_wrap
    compute = trainer.compute_loss

    def compute_wrap(model, inputs, *a, **kw):
        loss = compute(model, inputs, *a, **kw)
        rows = []
        for p, c in zip(inputs["prompt_ids"].tolist(), inputs["completion_ids"].tolist()):
            # Prompts share one length (no left padding); completions are right-padded with
            # the pad token (= EOS): the longest completion that matches is the row's.
            hits = [i for i, (pp, cc) in enumerate(zip(prompts, comps))
                    if pp == p and cc == c[:len(cc)] and all(x == EOS for x in c[len(cc):])]
            assert hits, (p, c)
            rows.append(max(hits, key=lambda i: len(comps[i])))
        rec["micro"].append({"rows": rows, "loss": float(loss.detach())})
        return loss

    trainer.compute_loss = compute_wrap
    clip = trainer.accelerator.clip_grad_norm_

    def clip_wrap(parameters, max_norm, *a, **kw):
        parameters = list(parameters)
        # The last optimizer step's gradients, before clipping.
        rec["grads"] = {short_name(n): p.grad.detach().clone() for n, p in trainer.model.named_parameters()
                        if n != "lm_head.weight"}
        norm = clip(parameters, max_norm, *a, **kw)
        rec["norms"].append(float(norm))
        return norm

    trainer.accelerator.clip_grad_norm_ = clip_wrap
    trainer.train()
    logs = [h for h in trainer.state.log_history if "loss" in h]
    assert len(logs) == steps, (len(logs), steps)
    per_step = [sum(m["loss"] for m in rec["micro"][s * ga:(s + 1) * ga]) for s in range(steps)]
    # Each metric per generation: the mean over its optimizer steps' logged values.
    per_gen = steps // gens
    metrics = {}
    for key in ["kl", "entropy", "clip_ratio/low_mean", "clip_ratio/high_mean", "clip_ratio/region_mean",
                "cispo_clip_ratio"]:
        if key in logs[0]:
            metrics[key] = [sum(h[key] for h in logs[g * per_gen:(g + 1) * per_gen]) / per_gen for g in range(gens)]
    # Per generation: TRL shuffles the generation batch once, then visits its spg micro-batches
    # (μ times); the first spg calls of a generation give its order.
    assert len(rec["advantages"]) == gens and all(a == rec["advantages"][0] for a in rec["advantages"])
    calls = mu * spg
    orders = [[i for m in rec["micro"][g * calls:g * calls + spg] for i in m["rows"]] for g in range(gens)]
    after = {short_name(n): p.detach().clone() for n, p in trainer.model.named_parameters() if n != "lm_head.weight"}
    # TRL's generation metrics (rewards, completion lengths), logged at the first optimizer step
    # of each generation; every case scores the same batch, so they are the same each time.
    gen_keys = [k for k in logs[0] if k in ("reward", "reward_std", "frac_reward_zero_std")
                or k.startswith("rewards/") or k.startswith("completions/")]
    generation_metrics = {k: logs[0][k] for k in sorted(gen_keys)}
    return dict(advantages=rec["advantages"][0], orders=orders, losses=per_step, grad_norms=rec["norms"],
                metrics=metrics, generation_metrics=generation_metrics), rec["grads"], after


# ---- knobs TRL does not have, written out from verl's source -------------------------------


def token_logps(model, prompts, comps, temperature):
    """Per completion token: log softmax(logits / T)[token] of sequences laid out prompt then
    completion (same-length prompts, so no left padding and no position shift)."""
    out = []
    for p, c in zip(prompts, comps):
        ids = torch.tensor([p + c])
        logits = model(ids).logits[0, len(p) - 1:len(p) + len(c) - 1] / temperature
        out.append(torch.log_softmax(logits, -1).gather(-1, torch.tensor(c)[:, None])[:, 0])
    return out


def verl_case(case, model_dir, prompts, comps, advantages):
    """verl's token-mean PPO loss with dual clip and a KL penalty, two AdamW steps on one batch."""
    torch.manual_seed(0)
    model = GPT2LMHeadModel.from_pretrained(model_dir, torch_dtype=torch.float32)
    ref = copy.deepcopy(model)
    opt = torch.optim.AdamW(model.parameters(), lr=LR, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0)
    with torch.no_grad():
        old = token_logps(model, prompts, comps, 1.0)
        ref_lp = token_logps(ref, prompts, comps, 1.0)
    adv = torch.tensor(advantages)
    losses, norms, grads, step_kls, step_dual = [], [], None, [], []
    for _ in range(case["num_iterations"]):
        kls, dual = [], []
        opt.zero_grad()
        lp = token_logps(model, prompts, comps, 1.0)
        total, n = 0.0, 0
        for i, (cur, o, r) in enumerate(zip(lp, old, ref_lp)):
            a = adv[i]
            # core_algos.compute_policy_loss (vanilla): ratio, two clipped losses, dual clip.
            ratio = torch.exp(torch.clamp(cur - o, -20.0, 20.0))
            l1 = -a * ratio
            l2 = -a * torch.clamp(ratio, 1 - case["epsilon"], 1 + case["epsilon_high"])
            clip1 = torch.maximum(l1, l2)
            pg = clip1
            if case["clip_ratio_c"] is not None and a < 0:
                pg = torch.minimum(-a * case["clip_ratio_c"], clip1)
                dual.append((clip1 > -a * case["clip_ratio_c"]).float().detach())
            else:
                dual.append(torch.zeros_like(cur))
            # core_algos.kl_penalty: "kl" = logp - ref, "mse" = 0.5 (logp - ref)^2,
            # "low_var_kl" = exp(ref - logp) - (ref - logp) - 1.
            d = cur - r
            if case["kl_estimator"] == "k1":
                kl = d
            elif case["kl_estimator"] == "k2":
                kl = 0.5 * d * d
            else:
                kl = torch.exp(-d) + d - 1
            kls.append(kl.detach())
            total = total + (pg + case["beta"] * kl).sum()
            n += len(cur)
        loss = total / n  # token-mean over the batch
        loss.backward()
        grads = {short_name(k): p.grad.detach().clone() for k, p in model.named_parameters() if k != "lm_head.weight"}
        norms.append(float(torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)))
        opt.step()
        losses.append(float(loss.detach()))
        step_kls.append(float(torch.cat(kls).mean()))
        step_dual.append(float(torch.cat(dual).mean()))
    after = {short_name(k): p.detach().clone() for k, p in model.named_parameters() if k != "lm_head.weight"}
    kl_mean = sum(step_kls) / len(step_kls)
    metrics = {"kl": [kl_mean]} if case["beta"] else {}
    if case["clip_ratio_c"] is not None:
        metrics["dual_clip_frac"] = [sum(step_dual) / len(step_dual)]
    return dict(advantages=advantages, orders=[list(range(len(prompts)))], losses=losses, grad_norms=norms,
                metrics=metrics), grads, after


def verl_cases():
    base = dict(loss_type="dapo", importance_sampling_level="token", num_iterations=2, scale_rewards="group",
                mask_truncated_completions=False, epsilon=0.2, epsilon_high=0.28, delta=None,
                top_entropy_quantile=1.0, entropy_coef=0.0, use_bias_correction_kl=False, temperature=1.0,
                per_device_train_batch_size=12, gradient_accumulation_steps=1, steps_per_generation=1,
                source="verl core_algos.py (written out)", generations=1)
    return [
        dict(base, name="verl_dual_clip_mu2", clip_ratio_c=1.1, beta=0.0, kl_estimator="k3"),
        dict(base, name="verl_kl_k1_mu2", clip_ratio_c=None, beta=0.04, kl_estimator="k1"),
        dict(base, name="verl_kl_k2_mu2", clip_ratio_c=None, beta=0.04, kl_estimator="k2"),
        dict(base, name="verl_kl_k3_mu2", clip_ratio_c=None, beta=0.04, kl_estimator="k3"),
    ]


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", help="run only cases whose name contains this")
    a = ap.parse_args()
    versions = check_versions()
    torch.set_num_threads(1)
    tok = tokenizer()
    model = build_model()
    model_dir = os.path.join(OUT_DIR, "model")
    if os.path.exists(model_dir):
        shutil.rmtree(model_dir)
    model.save_pretrained(model_dir, safe_serialization=True)
    shutil.copy(TOKENIZER, os.path.join(model_dir, "tokenizer.json"))
    prompts, comps, rewards = flat_batch(tok)
    tensors, meta = {}, []
    baseline_adv = None

    def record(case, res, grads, after):
        meta.append(dict(case, **res))
        print(f"{case['name']:32s} loss {res['losses']} norm {[round(x, 4) for x in res['grad_norms']]}")
        for k, v in grads.items():
            tensors[f"{case['name']}.grad.{k}"] = v.contiguous()
        for k, v in after.items():
            tensors[f"{case['name']}.after.{k}"] = v.contiguous()

    with tempfile.TemporaryDirectory() as work:
        for case in trl_cases():
            if a.only and a.only not in case["name"]:
                continue
            res, grads, after = run_trl(case, model_dir, tok, prompts, comps, rewards, work)
            if case["name"] == "dapo_token_beta0.0":
                baseline_adv = res["advantages"]
            record(dict(case, source="trl", clip_ratio_c=None, kl_estimator="k3"), res, grads, after)
        for case in verl_cases():
            if a.only and a.only not in case["name"]:
                continue
            adv = baseline_adv or run_trl(trl_cases()[0], model_dir, tok, prompts, comps, rewards,
                                          tempfile.mkdtemp())[0]["advantages"]
            record(case, *verl_case(case, model_dir, prompts, comps, adv))
    out = dict(versions=versions, lr=LR, group_size=G, max_completion_length=MAX_LEN, reward_weights=WEIGHTS,
               prompts=prompts, completions=comps, rewards=rewards, eos=EOS, cases=meta)
    with open(os.path.join(OUT_DIR, "cases.json"), "w") as f:
        json.dump(out, f, indent=1)
    save_file(tensors, os.path.join(OUT_DIR, "cases.safetensors"), metadata={"format": "pt"})
    print(f"{len(meta)} cases -> {OUT_DIR}")


if __name__ == "__main__":
    main()
