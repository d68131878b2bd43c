#!/usr/bin/env python3
"""Scores like good.py for the first N batches (argv[2], default 2), then fails in the middle of
the next one the way argv[1] says: `crash` (exit status 4), `hang` (never answers) or
`garbage` (prints a line that is not JSON). A scorer that breaks after training has started,
and after a checkpoint was written."""
import json
import sys
import time

mode = sys.argv[1]
good_batches = int(sys.argv[2]) if len(sys.argv) > 2 else 2
for line in sys.stdin:
    req = json.loads(line)
    # Item 0 opens a batch: one more batch used up.
    if req["index"] == 0:
        good_batches -= 1
    if good_batches < 0:
        if mode == "crash":
            print("fatal: out of credits", file=sys.stderr, flush=True)
            sys.exit(4)
        if mode == "hang":
            time.sleep(3600)
        print("this is not JSON", flush=True)
        continue
    answer = str((req.get("metadata") or {}).get("answer", "")).strip()
    print(json.dumps({"correctness": 1.0 if req["completion"].strip() == answer else 0.0}), flush=True)
