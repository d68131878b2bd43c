#!/usr/bin/env python3
"""dapo's warm RL-step seconds from a `dapo train` JSONL log (run with --logging-steps 1).

Each step's `timing/step_s` is its rollout + score + reference + update seconds (the JSONL
write and the progress line come after and are not counted, as TRL's logging is not counted on
its side). Prints one line in the peers' format: the upper median of the steps after the first
(the first allocates and warms the caches), and every step's seconds.

Usage: python3 bench/peers/step_seconds.py RUN/dapo_log.jsonl
"""

import json
import sys


def main():
    steps = []
    with open(sys.argv[1]) as f:
        for line in f:
            rec = json.loads(line)
            if "metrics" in rec and "timing/step_s" in rec["metrics"]:
                m = rec["metrics"]
                steps.append((rec["step"], m["timing/step_s"], m.get("completions/mean_length", float("nan"))))
    if len(steps) < 2:
        sys.exit(f"{sys.argv[1]}: {len(steps)} logged steps; need at least 2 (--logging-steps 1, --steps >= 2)")
    steps.sort()
    warm = sorted(s for _, s, _ in steps[1:])
    med = warm[len(warm) // 2]
    print(f"dapo   rl-step  warm_s={med:.4f} (median of steps 2..{len(steps)})  "
          f"step_s={[round(s, 4) for _, s, _ in steps]}  mean_completion_len={[round(n, 2) for _, _, n in steps]}")


if __name__ == "__main__":
    main()
