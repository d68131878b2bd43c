#!/usr/bin/env python3
"""A well-behaved external scorer: correctness = completion equals the record's answer.

Also reports its pid and how many requests this process has answered (to test that the
process is kept alive across batches), and prints a blank line before each batch's first
response (blank lines must be skipped).
"""
import json
import os
import sys

print("good scorer: ready", file=sys.stderr, flush=True)
answered = 0
for line in sys.stdin:
    req = json.loads(line)
    answer = str((req.get("metadata") or {}).get("answer", "")).strip()
    answered += 1
    if req["index"] == 0:
        print()
    out = {
        "correctness": 1.0 if req["completion"].strip() == answer else 0.0,
        "length": len(req["completion"]),
        "pid": os.getpid(),
        "answered": answered,
        "batch_size": req["batch_size"],
    }
    print(json.dumps(out), flush=True)
