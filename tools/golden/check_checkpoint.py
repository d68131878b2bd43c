#!/usr/bin/env python3
"""Checks that a dapo checkpoint is a directory a transformers user can use as is.

Usage: python3 tools/golden/check_checkpoint.py CHECKPOINT_DIR [--prompt TEXT]

1. ``AutoTokenizer.from_pretrained(dir)`` loads and has EOS and PAD set;
2. ``AutoModelForCausalLM.from_pretrained(dir).generate(...)`` with no generation argument
   besides ``max_new_tokens`` stops at the end token (the output ends with it, before the cap),
   for a prompt the model answers (greedy);
3. ``transformers.TrainerState.load_from_json(dir/trainer_state.json)`` reads the state, with
   ``global_step`` and ``log_history``.

Prints one line per check and exits non-zero on the first failure. Needs torch and
transformers (tools/golden/requirements-trl.txt pins the versions used).
"""

import argparse
import os
import sys

import torch
import transformers
from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerState


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("dir")
    ap.add_argument("--prompt", default="12+34=")
    ap.add_argument("--max-new-tokens", type=int, default=16)
    a = ap.parse_args()
    print(f"torch {torch.__version__}, transformers {transformers.__version__}")

    tok = AutoTokenizer.from_pretrained(a.dir)
    assert tok.eos_token is not None and tok.pad_token is not None, (tok.eos_token, tok.pad_token)
    print(f"tokenizer: {type(tok).__name__}, eos {tok.eos_token!r} ({tok.eos_token_id}), "
          f"pad {tok.pad_token!r} ({tok.pad_token_id})")

    model = AutoModelForCausalLM.from_pretrained(a.dir, dtype=torch.float32)
    model.eval()
    ids = tok(a.prompt, return_tensors="pt", add_special_tokens=False)
    with torch.no_grad():
        out = model.generate(**ids, max_new_tokens=a.max_new_tokens, do_sample=False)
    new = out[0, ids["input_ids"].shape[1]:].tolist()
    text = tok.decode(new, skip_special_tokens=False)
    eos = model.generation_config.eos_token_id
    eos = eos if isinstance(eos, list) else [eos]
    stopped = len(new) < a.max_new_tokens and new[-1] in eos
    print(f"generate: {a.prompt!r} -> {text!r} ({len(new)} tokens, stopped at EOS: {stopped})")
    assert stopped, "generate did not stop at the end token"

    state = TrainerState.load_from_json(os.path.join(a.dir, "trainer_state.json"))
    print(f"trainer_state: global_step {state.global_step}, {len(state.log_history)} log_history entries, "
          f"last {state.log_history[-1] if state.log_history else None}")
    assert state.global_step > 0 and state.log_history
    print("check_checkpoint: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())
