#!/usr/bin/env python3
"""Golden reference data for the GPT-2 CPU oracle, produced with HF transformers.

What
----
For two small, deliberately odd-shaped GPT-2 configurations (``a`` and ``b``) this script
writes ``tests/data/golden/<name>/``:

* ``model/``          -- the model as ``save_pretrained`` writes it (float32):
                         ``config.json`` + ``model.safetensors`` (``transformer.``-prefixed
                         names, ``lm_head.weight`` dropped because it is tied to ``wte``).
* ``model_f16/``, ``model_bf16/`` (config ``b`` only) -- the same weights cast to float16 /
                         bfloat16 and saved with ``save_pretrained``.
* ``model_noprefix/`` (config ``b`` only) -- the same float32 weights in one
                         ``model.safetensors`` with the names of the original ``gpt2`` hub
                         checkpoint (no ``transformer.`` prefix) plus an unused causal-mask
                         buffer ``h.0.attn.bias`` [1,1,n_positions,n_positions] that a loader
                         must ignore.
* ``golden.safetensors`` -- inputs and float64-computed references, stored as float32
                         (ids as int64): ``input_ids``, ``targets`` (with ``-100`` = ignored),
                         ``logits``, ``loss``, ``grad.<name>`` for every parameter (HF storage
                         shapes, no ``transformer.`` prefix, ``grad.wte.weight`` includes the
                         tied lm_head's contribution), and a 6-step AdamW run on the same batch
                         (``adamw_losses``, ``adamw_lrs``, ``adamw_grad_norms``,
                         ``adamw_final.<name>``).
* ``golden.json``     -- shapes and the AdamW hyper-parameters, plus torch/transformers versions.

Why
---
The Rust crate's CPU backend is the numerical oracle for the CUDA kernels, so it needs an
independent reference itself: HF transformers' GPT-2 (``gelu_new``, Conv1D [in, out] weights,
tied embeddings) in float64. Every parameter is overwritten with random values (LayerNorm
gains around 1, non-zero biases) so that no term of the forward or backward pass is trivially
zero or one, and the gradient clip really triggers in the AdamW run.

Run ``python3 tools/golden/gen_golden.py`` to regenerate everything (deterministic: fixed
seeds, one CPU thread). ``--check-saved`` instead runs the Rust example
``save_for_transformers`` and checks that transformers loads what Rust saved and reproduces
Rust's logits and tokenizer (see tools/golden/README.md).
"""

import argparse
import copy
import json
import math
import os
import shutil
import subprocess
import sys
import tempfile

import torch
import torch.nn.functional as F
import transformers
from safetensors.torch import load_file, save_file
from transformers import GPT2Config, GPT2LMHeadModel

REPO_ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), "..", ".."))
GOLDEN_DIR = os.path.join(REPO_ROOT, "tests", "data", "golden")

CONFIGS = {
    "a": dict(
        model=dict(vocab_size=97, n_positions=32, n_embd=48, n_head=4, n_layer=2),
        B=3,
        T=13,
        seed=1234,
    ),
    "b": dict(
        model=dict(vocab_size=64, n_positions=20, n_embd=32, n_head=2, n_layer=3),
        B=2,
        T=20,
        seed=5678,
        extra_variants=True,
    ),
}

ADAMW = dict(
    steps=6,
    max_lr=1e-2,
    min_lr=1e-3,
    warmup=2,
    betas=[0.9, 0.95],
    eps=1e-8,
    weight_decay=0.1,
)
IGNORE_INDEX = -100
PREFIX = "transformer."


def make_config(spec):
    return GPT2Config(
        **spec,
        activation_function="gelu_new",
        layer_norm_epsilon=1e-5,
        resid_pdrop=0.0,
        embd_pdrop=0.0,
        attn_pdrop=0.0,
        summary_first_dropout=0.0,
        tie_word_embeddings=True,
    )


def build_model(cfg, seed):
    """GPT2LMHeadModel (float32, eval mode) with every parameter randomised."""
    torch.manual_seed(seed)
    model = GPT2LMHeadModel(cfg).float()
    # Eager attention: the plain math path, identical in float32 and float64.
    model.config._attn_implementation = "eager"
    model.eval()
    with torch.no_grad():
        # named_parameters() de-duplicates the tied lm_head.weight (it *is* wte.weight).
        for name, p in model.named_parameters():
            short = name[len(PREFIX):] if name.startswith(PREFIX) else name
            is_ln = short.split(".")[-2].startswith("ln_")
            if is_ln and short.endswith(".weight"):
                p.copy_(1.0 + 0.1 * torch.randn_like(p))
            elif short.endswith(".bias"):
                p.copy_(0.1 * torch.randn_like(p))
            else:
                p.copy_(0.08 * torch.randn_like(p))
    assert model.lm_head.weight is model.transformer.wte.weight, "lm_head must be tied to wte"
    return model


def short_name(name):
    assert name.startswith(PREFIX), name
    return name[len(PREFIX):]


def named_params(model):
    """(short_name, param) for every trainable parameter, lm_head excluded (tied)."""
    out = []
    for name, p in model.named_parameters():
        if name.startswith("lm_head."):
            continue  # never listed when tied, but be explicit
        out.append((short_name(name), p))
    return out


def lr_at(step, steps, max_lr, min_lr, warmup):
    if step < warmup:
        return max_lr * (step + 1) / warmup
    progress = (step - warmup) / (steps - warmup)
    return min_lr + 0.5 * (max_lr - min_lr) * (1.0 + math.cos(math.pi * progress))


def lm_loss(model, input_ids, targets):
    logits = model(input_ids).logits
    V = logits.shape[-1]
    loss = F.cross_entropy(
        logits.reshape(-1, V), targets.reshape(-1), ignore_index=IGNORE_INDEX
    )
    return logits, loss


def save_hf(model, out_dir, dtype):
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    m = copy.deepcopy(model).to(dtype)
    m.save_pretrained(out_dir, safe_serialization=True)
    gen = os.path.join(out_dir, "generation_config.json")
    if os.path.exists(gen):
        os.remove(gen)
    left = sorted(os.listdir(out_dir))
    assert left == ["config.json", "model.safetensors"], left


def save_noprefix(model, cfg, out_dir, config_src):
    if os.path.isdir(out_dir):
        shutil.rmtree(out_dir)
    os.makedirs(out_dir)
    tensors = {}
    for name, p in named_params(model):
        tensors[name] = p.detach().to(torch.float32).clone().contiguous()
    n = cfg.n_positions
    mask = torch.tril(torch.ones(n, n, dtype=torch.float32)).view(1, 1, n, n)
    tensors["h.0.attn.bias"] = mask.contiguous()
    save_file(tensors, os.path.join(out_dir, "model.safetensors"), metadata={"format": "pt"})
    shutil.copyfile(config_src, os.path.join(out_dir, "config.json"))


def generate(name, spec, out_root):
    cfg = make_config(spec["model"])
    B, T, V = spec["B"], spec["T"], cfg.vocab_size
    out_dir = os.path.join(out_root, name)
    os.makedirs(out_dir, exist_ok=True)

    model = build_model(cfg, spec["seed"])

    # 1./2. checkpoints (float32 weights are the exact values the float64 model starts from)
    save_hf(model, os.path.join(out_dir, "model"), torch.float32)
    if spec.get("extra_variants"):
        save_hf(model, os.path.join(out_dir, "model_f16"), torch.float16)
        save_hf(model, os.path.join(out_dir, "model_bf16"), torch.bfloat16)
        save_noprefix(
            model,
            cfg,
            os.path.join(out_dir, "model_noprefix"),
            os.path.join(out_dir, "model", "config.json"),
        )

    # 3. references in float64
    md = copy.deepcopy(model).double()
    md.config._attn_implementation = "eager"
    md.eval()
    assert md.lm_head.weight is md.transformer.wte.weight

    g = torch.Generator().manual_seed(spec["seed"] + 1)
    seq = torch.randint(0, V, (B, T + 1), generator=g, dtype=torch.int64)
    input_ids = seq[:, :T].contiguous()
    targets = seq[:, 1:].contiguous()
    targets[0, 0:3] = IGNORE_INDEX

    params = named_params(md)
    out = {"input_ids": input_ids, "targets": targets}

    md.zero_grad(set_to_none=True)
    logits, loss = lm_loss(md, input_ids, targets)
    loss.backward()
    out["logits"] = logits.detach().float().contiguous()
    out["loss"] = loss.detach().reshape(1).float()
    grad_sq = 0.0
    for n, p in params:
        out["grad." + n] = p.grad.detach().float().contiguous()
        grad_sq += float(p.grad.detach().pow(2).sum())
    init_grad_norm = math.sqrt(grad_sq)
    max_grad_norm = float(f"{0.6 * init_grad_norm:.4g}")

    # AdamW run, same batch every step
    S = ADAMW["steps"]
    decay = [p for _, p in params if p.ndim >= 2]
    no_decay = [p for _, p in params if p.ndim < 2]
    opt = torch.optim.AdamW(
        [
            {"params": decay, "weight_decay": ADAMW["weight_decay"]},
            {"params": no_decay, "weight_decay": 0.0},
        ],
        lr=ADAMW["max_lr"],
        betas=tuple(ADAMW["betas"]),
        eps=ADAMW["eps"],
        foreach=False,
    )
    all_params = [p for _, p in params]
    losses, lrs, norms = [], [], []
    for s in range(S):
        opt.zero_grad(set_to_none=True)
        _, l = lm_loss(md, input_ids, targets)
        l.backward()
        total = torch.nn.utils.clip_grad_norm_(all_params, max_grad_norm)
        lr = lr_at(s, S, ADAMW["max_lr"], ADAMW["min_lr"], ADAMW["warmup"])
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

    save_file(out, os.path.join(out_dir, "golden.safetensors"), metadata={"format": "pt"})

    meta = {
        "config": name,
        "B": B,
        "T": T,
        "adamw": dict(ADAMW, max_grad_norm=max_grad_norm),
        "torch": torch.__version__,
        "transformers": transformers.__version__,
    }
    with open(os.path.join(out_dir, "golden.json"), "w") as f:
        json.dump(meta, f, indent=2)
        f.write("\n")

    clipped = sum(1 for x in norms if x > max_grad_norm)
    print(f"[{name}] V={V} C={cfg.n_embd} L={cfg.n_layer} H={cfg.n_head} B={B} T={T} "
          f"params={sum(p.numel() for _, p in params)}")
    print(f"[{name}] loss={float(loss.detach()):.6f} grad_norm={init_grad_norm:.6f} "
          f"max_grad_norm={max_grad_norm} (clipped {clipped}/{S} steps)")
    print(f"[{name}] adamw_losses=" + " ".join(f"{x:.6f}" for x in losses))
    print(f"[{name}] adamw_grad_norms=" + " ".join(f"{x:.6f}" for x in norms))
    print(f"[{name}] adamw_lrs=" + " ".join(f"{x:.6g}" for x in lrs))
    size = 0
    for root, _, files in os.walk(out_dir):
        size += sum(os.path.getsize(os.path.join(root, fn)) for fn in files)
    print(f"[{name}] wrote {os.path.relpath(out_dir, REPO_ROOT)} ({size / 1024:.1f} KiB)")


# ----------------------------------------------------------------------------------------
# --check-saved: transformers must load what the Rust crate saves
# ----------------------------------------------------------------------------------------

def _ignorable_key(k):
    return k == "lm_head.weight" or k.endswith("attn.bias") or k.endswith("attn.masked_bias")


def causal_grn(x, gamma, beta, eps):
    """The causal GRN of a (B,T,C) hidden state, written out in torch: the statistic of
    position t runs over positions s <= t (DESIGN.md; src/model/grn/causal.rs)."""
    x = x.double()
    g = torch.sqrt(torch.cumsum(x * x, dim=1))
    n = g / (g.mean(dim=-1, keepdim=True) + eps)
    return gamma.double() * (x * n) + beta.double() + x


def check_saved_grn(grn_dir):
    """transformers loads a dapo checkpoint with a policy GRN (reporting exactly grn.gamma and
    grn.beta as unused), and its last hidden state through a causal GRN written in torch and
    the tied lm_head gives the logits Rust computed."""
    for fn in ["config.json", "model.safetensors", "rust_logits.safetensors"]:
        assert os.path.exists(os.path.join(grn_dir, fn)), f"missing {fn} in {grn_dir}"
    model, info = GPT2LMHeadModel.from_pretrained(
        grn_dir, output_loading_info=True, dtype=torch.float32, attn_implementation="eager")
    model.eval()
    unexpected = sorted(k for k in info.get("unexpected_keys", []) if not _ignorable_key(k))
    missing = [k for k in info.get("missing_keys", []) if not _ignorable_key(k)]
    assert unexpected == ["grn.beta", "grn.gamma"], f"unexpected keys: {unexpected}"
    assert not missing, f"missing keys: {missing}"
    grn_cfg = getattr(model.config, "grn", None)
    assert grn_cfg and grn_cfg["enabled"] and grn_cfg["apply_to_policy"], f"config grn: {grn_cfg}"
    weights = load_file(os.path.join(grn_dir, "model.safetensors"))
    rust = load_file(os.path.join(grn_dir, "rust_logits.safetensors"))
    ids = rust["input_ids"].to(torch.int64)
    with torch.no_grad():
        hidden = model.transformer(ids).last_hidden_state
        y = causal_grn(hidden, weights["grn.gamma"], weights["grn.beta"], grn_cfg["eps"])
        logits = (y @ model.transformer.wte.weight.double().T).float()
    err = float((logits - rust["logits"].float()).abs().max())
    print(f"GRN checkpoint: transformers loads it (unused: {unexpected}); "
          f"causal GRN logits max |torch - Rust| = {err:.3e}")
    assert err < 1e-4, f"GRN logits differ: {err}"
    return {"grn_max_abs_err": err}


def check_saved(args):
    model_dir = os.path.join(GOLDEN_DIR, "a", "model")
    tmp = None
    if args.saved_dir:
        out_dir = os.path.abspath(args.saved_dir)
    else:
        tmp = tempfile.mkdtemp(prefix="gepa_roundtrip_")
        out_dir = os.path.join(tmp, "saved")
        cmd = ["cargo", "run", "--release", "--example", "save_for_transformers", "--",
               model_dir, out_dir]
        print("running:", " ".join(cmd), flush=True)
        subprocess.run(cmd, cwd=REPO_ROOT, check=True)
    try:
        for fn in ["config.json", "model.safetensors", "tokenizer.json",
                   "rust_logits.safetensors", "rust_tokens.json"]:
            assert os.path.exists(os.path.join(out_dir, fn)), f"missing {fn} in {out_dir}"

        # -- model --
        try:
            model, info = GPT2LMHeadModel.from_pretrained(
                out_dir, output_loading_info=True, dtype=torch.float32,
                attn_implementation="eager")
        except TypeError:  # older transformers spell it torch_dtype
            model, info = GPT2LMHeadModel.from_pretrained(
                out_dir, output_loading_info=True, torch_dtype=torch.float32,
                attn_implementation="eager")
        model.eval()
        bad_missing = [k for k in info.get("missing_keys", []) if not _ignorable_key(k)]
        bad_unexpected = [k for k in info.get("unexpected_keys", []) if not _ignorable_key(k)]
        mismatched = list(info.get("mismatched_keys", []))
        errors = list(info.get("error_msgs", []))
        assert not bad_missing, f"missing keys: {bad_missing}"
        assert not bad_unexpected, f"unexpected keys: {bad_unexpected}"
        assert not mismatched, f"mismatched keys: {mismatched}"
        assert not errors, f"load errors: {errors}"
        assert model.lm_head.weight.data_ptr() == model.transformer.wte.weight.data_ptr(), \
            "lm_head not tied to wte after loading"
        assert next(model.parameters()).dtype == torch.float32

        # The Rust example takes one training step, so the weights must differ from the input.
        orig = load_file(os.path.join(model_dir, "model.safetensors"))
        sd = model.state_dict()
        change = max(float((sd[k].float() - v.float()).abs().max()) for k, v in orig.items())
        print(f"max |weight change| vs {os.path.relpath(model_dir, REPO_ROOT)}: {change:.3e}")
        if change == 0.0:
            print("WARNING: saved weights are identical to the input model")

        rust = load_file(os.path.join(out_dir, "rust_logits.safetensors"))
        ids = rust["input_ids"].to(torch.int64)
        rust_logits = rust["logits"].float()
        with torch.no_grad():
            hf_logits = model(ids).logits.float()
        assert hf_logits.shape == rust_logits.shape, (hf_logits.shape, rust_logits.shape)
        max_abs_err = float((hf_logits - rust_logits).abs().max())
        print(f"logits {tuple(hf_logits.shape)}: max |HF - Rust| = {max_abs_err:.3e}")

        # -- tokenizer --
        with open(os.path.join(out_dir, "rust_tokens.json")) as f:
            toks = json.load(f)
        text, rust_ids = toks["text"], [int(i) for i in toks["ids"]]
        tok = transformers.PreTrainedTokenizerFast(
            tokenizer_file=os.path.join(out_dir, "tokenizer.json"))
        hf_ids = tok.encode(text, add_special_tokens=False)
        decoded = tok.decode(rust_ids, skip_special_tokens=False,
                             clean_up_tokenization_spaces=False)
        enc_ok = hf_ids == rust_ids
        dec_ok = decoded == text
        if not enc_ok:
            print(f"tokenizer encode mismatch:\n  rust={rust_ids}\n  hf  ={hf_ids}")
        if not dec_ok:
            print(f"tokenizer decode mismatch:\n  text   ={text!r}\n  decoded={decoded!r}")
        tokenizer_ok = enc_ok and dec_ok
        print(f"tokenizer: {len(rust_ids)} ids, encode_ok={enc_ok} decode_ok={dec_ok}")

        # -- the same model with a causal GRN in front of the lm_head --
        grn_result = check_saved_grn(os.path.join(out_dir, "grn"))

        result = {
            "max_abs_err": max_abs_err,
            **grn_result,
            "tokenizer_ok": tokenizer_ok,
            "torch": torch.__version__,
            "transformers": transformers.__version__,
        }
        path = os.path.join(GOLDEN_DIR, "roundtrip.json")
        with open(path, "w") as f:
            json.dump(result, f, indent=2)
            f.write("\n")
        print(f"wrote {os.path.relpath(path, REPO_ROOT)}")

        assert max_abs_err < args.tol, f"logits differ: {max_abs_err} >= {args.tol}"
        assert tokenizer_ok, "tokenizer round trip failed"
        print("check-saved: OK")
    finally:
        if tmp is not None and not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp is not None:
            print(f"kept {out_dir}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default=GOLDEN_DIR,
                    help="output root (default: tests/data/golden)")
    ap.add_argument("--configs", default=",".join(CONFIGS),
                    help="comma-separated config names to generate (default: all)")
    ap.add_argument("--check-saved", action="store_true",
                    help="run the Rust save_for_transformers example on config a and check "
                         "that transformers loads it and reproduces its logits/tokenizer")
    ap.add_argument("--saved-dir", default=None,
                    help="with --check-saved: check this existing output directory instead "
                         "of running cargo")
    ap.add_argument("--keep", action="store_true",
                    help="with --check-saved: keep the temporary output directory")
    ap.add_argument("--tol", type=float, default=1e-4,
                    help="with --check-saved: max abs logits error allowed (default 1e-4)")
    args = ap.parse_args()

    torch.set_num_threads(1)  # reproducible reductions
    if args.check_saved:
        check_saved(args)
        return
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")
    for name in args.configs.split(","):
        name = name.strip()
        if name not in CONFIGS:
            sys.exit(f"unknown config {name!r}; known: {sorted(CONFIGS)}")
        generate(name, CONFIGS[name], os.path.abspath(args.out))


if __name__ == "__main__":
    main()
