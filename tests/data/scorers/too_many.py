#!/usr/bin/env python3
"""Answers the first request of each batch twice."""
import json
import sys

for line in sys.stdin:
    req = json.loads(line)
    print(json.dumps({"correctness": 1.0}), flush=True)
    if req["index"] == 0:
        print(json.dumps({"correctness": 0.0}), flush=True)
