#!/usr/bin/env python3
"""Answers like good.py but exits with status 3 on the completion "boom", mid-batch."""
import json
import os
import sys

for line in sys.stdin:
    req = json.loads(line)
    if req["completion"] == "boom":
        print(f"fatal: cannot score item {req['index']}", file=sys.stderr, flush=True)
        sys.exit(3)
    answer = str((req.get("metadata") or {}).get("answer", "")).strip()
    out = {"correctness": 1.0 if req["completion"].strip() == answer else 0.0, "pid": os.getpid()}
    print(json.dumps(out), flush=True)
