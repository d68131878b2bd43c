#!/usr/bin/env python3
"""Peer of dapo's RL step: TRL's GRPOTrainer on the CPU, timed per optimizer step.

Two workloads (bench/compare_cpu.sh runs both):

* ``--task gpt2`` -- as ``dapo bench --only rl-step``: a random-weight GPT-2 124M (read from the
  directory ``prepare-gpt2`` writes, because TRL builds its reference model from the policy's
  path), 4 prompts x 4 completions x 16 new tokens, prompts of 16 characters of a character
  tokenizer over the whole 50257-token vocabulary, beta 0.04 (so the reference pass runs),
  learning rate 1e-5, a hash of the completion's text as the reward (as dapo's bench does), and
  min_new_tokens = 16 so every completion has 16 tokens (dapo's bench has no stop token).
  Two steps; the second (warm) one is the figure, as dapo's bench times its step after one
  untimed step.
* ``--task tiny`` -- as the built-in ``dapo train`` default: the warm-started tiny GPT-2 that
  dapo saved (``--model-dir``, an HF directory with its character tokenizer), 32 prompts x 8
  completions x at most 5 new tokens, completions end at <|endoftext|>, beta 0 (no reference),
  learning rate 3e-4, a correctness reward (the completion's leading number equals the answer).
  The figure is the median of the warm steps (all but the first).

Both: loss_type "dapo", token-level importance sampling, epsilon 0.2 / epsilon_high 0.28, group
reward scaling, one optimizer step per generation (the whole batch in one micro-batch, as dapo
with micro_batch_size 0), AdamW betas (0.9, 0.999), eps 1e-8, no weight decay, max_grad_norm 1,
constant learning rate, temperature 1, top_k 0, top_p 1, float32, no gradient checkpointing.

A step is timed from the Trainer's on_step_begin to on_step_end callback: generation, reward,
reference and policy passes, backward, clipping and the AdamW step; TRL's logging happens after
on_step_end and is not counted (dapo's JSONL write is not counted either).

Usage:
  python3 bench/peers/trl_step.py prepare-gpt2 --out DIR
  python3 bench/peers/trl_step.py run --task gpt2 --model-dir DIR --threads 2
  python3 bench/peers/trl_step.py run --task tiny --model-dir PREP/final --dataset PREP/train6.jsonl
"""

import argparse
import json
import os
import sys
import tempfile
import time
import warnings

os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import torch  # noqa: E402
from datasets import Dataset  # noqa: E402
from transformers import (  # noqa: E402
    GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast, TrainerCallback, logging as hf_logging)
from trl import GRPOConfig, GRPOTrainer  # noqa: E402

from common import set_threads, upper_median, write_char_tokenizer  # noqa: E402

# dapo bench's RL step (src/cli/bench/model.rs, Workloads::cpu and rl_step_bench).
GPT2_SHAPE = dict(prompts=4, group=4, new=16, prompt_len=16, beta=0.04, lr=1e-5, steps=2)
# The built-in `dapo train` default (src/cli/train.rs, builtin_defaults).
TINY_SHAPE = dict(prompts=32, group=8, new=5, beta=0.0, lr=3e-4, steps=10)


def prepare_gpt2(out):
    """A random-weight GPT-2 124M (GPT2Config() defaults, dropout 0, <|endoftext|> = id 0 as in
    the character tokenizer) with that tokenizer, saved where `run --task gpt2` reads it."""
    torch.manual_seed(1)
    cfg = GPT2Config(resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0, summary_first_dropout=0.0,
                     bos_token_id=0, eos_token_id=0, pad_token_id=0)
    GPT2LMHeadModel(cfg).save_pretrained(out, safe_serialization=True)
    write_char_tokenizer(out, cfg.vocab_size)
    print(f"wrote {out}")


def hash_reward(completions, **_):
    """dapo bench's reward: a polynomial hash of the completion's characters, mod 5, over 4."""
    out = []
    for text in completions:
        h = 0
        for ch in text:
            h = (h * 31 + ord(ch)) & 0xFFFFFFFFFFFFFFFF
        out.append((h % 5) / 4.0)
    return out


def correctness_reward(completions, answer, **_):
    """1 when the completion's leading digits are the answer (as the math scorer's correctness)."""
    out = []
    for text, want in zip(completions, answer):
        digits = ""
        for ch in text.lstrip():
            if not ch.isdigit():
                break
            digits += ch
        out.append(1.0 if digits == str(want) else 0.0)
    return out


class StepTimer(TrainerCallback):
    """Wall seconds of each optimizer step, on_step_begin to on_step_end."""

    def __init__(self):
        self.seconds, self._t0 = [], None

    def on_step_begin(self, args, state, control, **kw):
        self._t0 = time.perf_counter()

    def on_step_end(self, args, state, control, **kw):
        self.seconds.append(time.perf_counter() - self._t0)


def gpt2_data(tok_chars, shape):
    """2 x prompts random 16-character prompts (dapo bench draws 2 x prompts tasks)."""
    g = torch.Generator().manual_seed(5)
    idx = torch.randint(0, len(tok_chars), (2 * shape["prompts"], shape["prompt_len"]), generator=g)
    return Dataset.from_dict({"prompt": ["".join(tok_chars[i] for i in row) for row in idx.tolist()]})


def tiny_data(path):
    rows = [json.loads(line) for line in open(path) if line.strip()]
    return Dataset.from_dict({"prompt": [r["prompt"] for r in rows], "answer": [r["answer"] for r in rows]})


def run(a):
    set_threads(a.threads)
    shape = dict(GPT2_SHAPE if a.task == "gpt2" else TINY_SHAPE)
    if a.steps:
        shape["steps"] = a.steps
    tok = PreTrainedTokenizerFast.from_pretrained(a.model_dir)
    model = GPT2LMHeadModel.from_pretrained(a.model_dir, dtype=torch.float32)
    if a.task == "gpt2":
        # The tokenizer's characters in id order (id 0 is <|endoftext|>).
        vocab = tok.get_vocab()
        chars = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1]) if t != "<|endoftext|>"]
        data, rewards = gpt2_data(chars, shape), [hash_reward]
        # dapo's bench never stops a completion early; here <|endoftext|> may not be sampled
        # before the 16th token.
        gen_kwargs = {"min_new_tokens": shape["new"]}
    else:
        data, rewards, gen_kwargs = tiny_data(a.dataset), [correctness_reward], None
    batch = shape["prompts"] * shape["group"]
    with tempfile.TemporaryDirectory() as work:
        args = GRPOConfig(
            output_dir=work, per_device_train_batch_size=batch, gradient_accumulation_steps=1,
            steps_per_generation=1, num_generations=shape["group"], max_completion_length=shape["new"],
            temperature=1.0, top_k=0, top_p=1.0, generation_kwargs=gen_kwargs,
            loss_type="dapo", importance_sampling_level="token", beta=shape["beta"], epsilon=0.2,
            epsilon_high=0.28, num_iterations=1, scale_rewards="group", mask_truncated_completions=False,
            learning_rate=shape["lr"], lr_scheduler_type="constant", warmup_steps=0, max_grad_norm=1.0,
            weight_decay=0.0, adam_beta1=0.9, adam_beta2=0.999, adam_epsilon=1e-8,
            max_steps=shape["steps"], logging_steps=1, report_to=[], save_strategy="no", bf16=False, fp16=False,
            use_cpu=True, gradient_checkpointing=False, disable_dropout=True, dataloader_num_workers=0,
            log_completions=False, seed=0,
        )
        timer = StepTimer()
        trainer = GRPOTrainer(model=model, reward_funcs=rewards, args=args, train_dataset=data,
                              processing_class=tok, callbacks=[timer])
        trainer.train()
    s = timer.seconds
    assert len(s) == shape["steps"], s
    warm = s[1] if a.task == "gpt2" else upper_median(s[1:])
    logs = [h for h in trainer.state.log_history if "loss" in h]
    lens = [round(h.get("completions/mean_length", float("nan")), 2) for h in logs]
    what = "second step" if a.task == "gpt2" else f"median of steps 2..{len(s)}"
    print(f"peer   rl-step  task={a.task} P={shape['prompts']} G={shape['group']} new={shape['new']} "
          f"beta={shape['beta']}  warm_s={warm:.4f} ({what})  step_s={[round(x, 4) for x in s]}  "
          f"mean_completion_len={lens}  optim={args.optim}  threads={torch.get_num_threads()}", flush=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("prepare-gpt2")
    p.add_argument("--out", required=True)
    r = sub.add_parser("run")
    r.add_argument("--task", choices=["gpt2", "tiny"], required=True)
    r.add_argument("--model-dir", required=True)
    r.add_argument("--dataset", help="tiny: the JSONL task file (prompt, answer)")
    r.add_argument("--threads", type=int, default=2)
    r.add_argument("--steps", type=int, help="optimizer steps (default: 2 for gpt2, 10 for tiny)")
    a = ap.parse_args()
    hf_logging.set_verbosity_error()
    warnings.filterwarnings("ignore")
    if a.cmd == "prepare-gpt2":
        prepare_gpt2(a.out)
    else:
        if a.task == "tiny" and not a.dataset:
            ap.error("--task tiny needs --dataset")
        run(a)


if __name__ == "__main__":
    main()
