#!/usr/bin/env python3
"""Miscounts: never answers the last request of a batch, then waits for more input."""
import json
import sys

for line in sys.stdin:
    req = json.loads(line)
    if req["index"] != req["batch_size"] - 1:
        print(json.dumps({"correctness": 1.0}), flush=True)
