#!/usr/bin/env python3
"""Prints malformed responses chosen by the completion: "text" (a log line on stdout),
"list" (JSON that is not an object), "string" (a metric that is not a number); anything else
gets a valid response."""
import json
import sys

for line in sys.stdin:
    req = json.loads(line)
    c = req["completion"]
    if c == "text":
        print("Loading model weights... done", flush=True)
    elif c == "list":
        print("[1, 2, 3]", flush=True)
    elif c == "string":
        print(json.dumps({"correctness": "yes"}), flush=True)
    else:
        print(json.dumps({"correctness": 1.0, "missing": None}), flush=True)
