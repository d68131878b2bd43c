#!/usr/bin/env bash
# The built-in default (`dapo train`, no data arguments) with GRN off and on (`--grn`), seeds
# 0, 1, 2: held-out accuracy before and after RL, and the learned |γ|, |β| of the policy GRN.
# Usage: bench/grn_experiment.sh OUT_ROOT   (release build at target/release/dapo; $PYTHON, default
# python3, with safetensors + numpy for the |γ|, |β| summary; MODES="off on" and SEEDS="0 1 2"
# select runs). Reported under bench/results/, not asserted.
set -euo pipefail
root=${1:?usage: bench/grn_experiment.sh OUT_ROOT}
dapo=${DAPO:-target/release/dapo}
py=${PYTHON:-python3}
mkdir -p "$root"
for grn in ${MODES:-off on}; do
  for seed in ${SEEDS:-0 1 2}; do
    out="$root/grn-$grn/s$seed"
    flag=()
    [[ $grn == on ]] && flag=(--grn)
    echo "## GRN $grn, seed $seed"
    /usr/bin/time -f "wall %e s, peak RSS %M kB" "$dapo" train --seed "$seed" --output-dir "$out" --threads 2 "${flag[@]}" 2>&1 \
      | grep -E "held-out accuracy|steps in|wall|grn|GRN" || true
    if [[ $grn == on ]]; then
      last=$(ls -d "$out"/checkpoint-* | sort -t- -k2 -n | tail -1)
      "$py" - "$last/model.safetensors" <<'PY'
import sys
import numpy as np
from safetensors.numpy import load_file
w = load_file(sys.argv[1])
for name in ("grn.gamma", "grn.beta"):
    v = np.abs(w[name].astype(np.float64))
    print(f"{name}: mean |x| {v.mean():.4f}, max |x| {v.max():.4f} over C={v.size}")
PY
    fi
  done
done
